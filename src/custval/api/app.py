"""The REST service: JSON in, predictions and reasons out (FastAPI on uvicorn).

Endpoints (OpenAPI at ``/openapi.json``, read in Swagger UI at ``/docs`` and ReDoc at
``/redoc``, whose assets are served from the package: they work offline):

* ``POST /v1/predict``: ``{"customers": [{"customer_id": ..., <the model's features>}]}`` ->
  ``{"model_version", "predictions": [{"customer_id", "value_probability", "value_class", "clv",
  "reasons": [{"feature", "value", "contribution", "text"}]}]}``;
* ``POST /v1/predict/records``: a customer's raw records, from which the features are computed
  with the same code as training (:mod:`custval.api.records`);
* ``GET /v1/segments``, ``POST /v1/segment``: the store's latest segmentation, and the segment
  of each customer of the request;
* ``GET /v1/customers/{id}``: the customer's prediction and reasons in the latest stored run;
  ``GET /v1/customers/{id}/recommendations``: what the latest runs recommend for them (next
  best offers, propensities, churn risk, playbook, targeting);
* ``GET /v1/forecasts``: the latest stored forecast run (``custval forecast``), per series the
  chosen method, its backtest leaderboard and the forecast with intervals (``?series=``);
* ``POST /v1/recommend``: next best offers with reasons from customers' features and purchases,
  by the latest scoring run's ranker (``GET /v1/recommend`` describes it;
  :mod:`custval.api.routes.recommend`);
* ``GET /v1/models``, ``GET /v1/models/{version}``: versions, manifest, metrics, importance;
* ``POST /v1/models/{version}/activate`` (admin): switch the model; requests in flight finish
  on the model they started with;
* ``GET /healthz`` (the process answers), ``GET /readyz`` (a model is loaded), ``GET /metrics``
  (Prometheus text: requests, errors, latency, predictions by class, the model version;
  :mod:`custval.api.metrics`).

Every ``/v1`` endpoint needs ``Authorization: Bearer <key>`` (:mod:`custval.api.keys`): 401
without a valid key, 403 when its scope does not allow the endpoint. Bad input is a 4xx with a
JSON body ``{"detail": message, "errors": [...]}``, never a 500: 422 for wrong types (strict:
:mod:`custval.data.values`), non-finite or huge numbers and missing features (naming the field,
the customer's index, what was expected and what came), 413 beyond the batch limit or the body
size limit. Fields a model does not take are ignored and listed in the answer's ``warnings``.
Nothing of a customer is logged: uvicorn's access log (which would log paths with customer
ids) is off, and errors are logged by route and type only.

Where things are: the endpoints in :mod:`custval.api.routes` (one router per resource), the
key check and the shared service as dependencies in :mod:`custval.api.deps`, what the requests
share in :mod:`custval.api.state`, errors, bodies and the body limit in :mod:`custval.api.http`,
the CLV of a request in :mod:`custval.api.clv`. This module puts them together, and completes
the OpenAPI document with what FastAPI cannot see.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, RedirectResponse

from custval.api import dashboard
from custval.api.http import ERROR_HANDLERS, BodyLimit
from custval.api.metrics import MetricsMiddleware
from custval.api.records import RecordsRequest
from custval.api.routes import ROUTERS
from custval.api.routes.recommend import RecommendRequest
from custval.api.state import Service, ServiceSettings, StoreState
from custval.data.events import EventBatch

__all__ = ["ServiceSettings", "app_from_env", "create_app", "create_dashboard_app"]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # at shutdown: stop the store's refresh, write the predictions still waiting
    service: Service = app.state.service
    service.close()


def create_app(settings: ServiceSettings, *, worker: bool = False) -> FastAPI:
    """The service for ``settings``: loads the model and the keys now (a clear error if it
    cannot), so that a started service is ready. ``worker``: one of several uvicorn workers,
    which serves the active model and opens the store read-only."""
    service = Service(settings, worker=worker)
    app = FastAPI(
        lifespan=_lifespan,
        title="custval",
        summary="Customer value: predictions with reasons, CLV, stored runs",
        version="1",
        docs_url=None,  # served below from the package's assets, not a CDN
        redoc_url=None,
        exception_handlers=ERROR_HANDLERS,
    )
    _add_docs(app)
    # the handlers reach the service here (custval.api.deps); ``custval serve`` reads the
    # active model and stops the store's refresh through the two others
    app.state.service = service
    app.state.registry = service.registry
    app.state.store_state = service.store_state
    for router in ROUTERS:
        app.include_router(router)
    if settings.dashboard:
        dashboard.mount(app)
    app.openapi = functools.partial(_openapi_document, app)  # type: ignore[method-assign]
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # the key is checked before a body is read: without one, nothing is buffered
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, keys=service.store_state.key_ring)
    if settings.metrics:  # outermost: it times and counts what the others answer too
        app.add_middleware(MetricsMiddleware)
    return app


def create_dashboard_app(settings: ServiceSettings) -> FastAPI:
    """The dashboard alone (``custval dashboard``): the store's pages and the sign-in, no
    model and no API; the keys are the store's and ``CUSTVAL_API_KEYS``'."""
    state = StoreState(settings, worker=True)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store_state = state

    async def home() -> RedirectResponse:
        return RedirectResponse(dashboard.ROOT)

    app.add_api_route("/", home, methods=["GET"], include_in_schema=False)
    dashboard.mount(app)
    return app


#: where /docs and /redoc load Swagger UI and ReDoc from: the files the fastapi-offline wheel
#: ships (MIT; Swagger UI Apache-2.0, ReDoc MIT), so that the pages work without the internet
ASSETS_URL = "/docs-assets"


def _add_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), both from local assets."""
    app.mount(
        ASSETS_URL,
        StaticFiles(directory=str(resources.files("fastapi_offline") / "static")),
        name="docs-assets",
    )

    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )

    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    app.add_api_route("/docs", swagger, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)


def _openapi_document(app: FastAPI) -> dict[str, Any]:
    """The document of ``app`` (``/openapi.json``, ``/docs``) with what FastAPI cannot see: the
    request bodies the handlers validate themselves (``PredictRequest``, the active model's
    features; ``RecordsRequest``, the raw records; ``RecommendRequest``; ``EventBatch``, the
    events) and the bearer key of the ``/v1`` endpoints. Built on each request for it, never
    cached: after an activation it describes the new model."""
    service: Service = app.state.service
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
    request_schema = service.registry.active.request_type.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    defs = request_schema.pop("$defs", {})
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    components.update(defs)
    components["PredictRequest"] = request_schema
    for model in (RecordsRequest, RecommendRequest, EventBatch):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    for path, name in (
        ("/v1/predict", "PredictRequest"),
        ("/v1/predict/records", "RecordsRequest"),
        ("/v1/recommend", "RecommendRequest"),
        ("/v1/events", "EventBatch"),
    ):
        spec["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, methods in spec["paths"].items():
        if path.startswith("/v1/"):
            for op in methods.values():
                op["security"] = [{"bearer": []}]
    return spec


def app_from_env() -> FastAPI:
    """The app of ``CUSTVAL_SERVE_SETTINGS`` (JSON): how uvicorn workers build it."""
    settings = ServiceSettings.model_validate_json(os.environ["CUSTVAL_SERVE_SETTINGS"])
    return create_app(settings, worker=True)
