"""The REST service: JSON in, predictions and reasons out (FastAPI on uvicorn).

Endpoints (OpenAPI at ``/docs`` and ``/openapi.json``):

* ``POST /v1/predict``: ``{"customers": [{"customer_id": ..., <the model's features>}]}`` ->
  ``{"model_version", "predictions": [{"customer_id", "value_probability", "value_class", "clv",
  "reasons": [{"feature", "value", "contribution", "text"}]}]}``;
* ``POST /v1/predict/records``: a customer's raw records, from which the features are computed
  with the same code as training (:mod:`custval.api.records`);
* ``GET /v1/customers/{id}``: the customer's prediction and reasons in the latest stored run;
* ``GET /v1/models``, ``GET /v1/models/{version}``: versions, manifest, metrics, importance;
* ``POST /v1/models/{version}/activate`` (admin): switch the model; requests in flight finish
  on the model they started with;
* ``GET /healthz`` (the process answers), ``GET /readyz`` (a model is loaded).

Every ``/v1`` endpoint needs ``Authorization: Bearer <key>`` (:mod:`custval.api.keys`): 401
without a valid key, 403 when its scope does not allow the endpoint. Bad input is a 4xx with a
JSON body ``{"detail": message, "errors": [...]}``, never a 500: 422 for wrong types, missing or
unknown features (naming the field and the customer's index), 413 beyond the batch limit or
the body size limit. Nothing of a customer is logged: uvicorn's access log (which would log
paths with customer ids) is off, and errors are logged by route and type only.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import pydantic_core
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from custval.api.keys import ApiKey, KeyRing, parse_env
from custval.api.online import OnlineModel, Prediction, as_dicts
from custval.api.prediction_log import PredictionLog
from custval.api.records import RecordsRequest, features_from_records
from custval.columns import SUMMARY_COLUMNS
from custval.errors import CustvalError
from custval.models.btyd_clv import clv_models_from_json, point_clv
from custval.models.clv_serving import ServedClv
from custval.models.segments import assign_nearest
from custval.store import open_store
from custval.store.bundles import latest_model

__all__ = ["ServiceSettings", "create_app"]

log = logging.getLogger("custval.api")

#: the file in the models folder that names the active version, so that every worker follows
ACTIVE_FILE = "ACTIVE"
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}")


class ServiceSettings(BaseModel):
    """What ``custval serve`` passes to the app (also through ``CUSTVAL_SERVE_SETTINGS``)."""

    models_dir: Path
    model: str = "latest"
    store: str | None = None
    batch_limit: int = Field(1000, ge=1)
    max_body_bytes: int = Field(10 * 2**20, ge=1024)
    cors_origins: list[str] = Field(default_factory=list)
    log_predictions: bool = False
    top_k: int = Field(3, ge=1)


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[Prediction]


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors, headers


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        pydantic_core.to_json(data, inf_nan_mode="null"),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _error(status: int, message: str, errors: Any = None, headers: Any = None) -> Response:
    body: dict[str, Any] = {"detail": message}
    if errors:
        body["errors"] = errors
    return _json(body, status, headers)


# ---- the active model -----------------------------------------------------------------------


class Registry:
    """The active model, shared by all requests of a worker and switched atomically: a request
    takes the reference once and finishes on that model. Workers follow the ACTIVE file of the
    models folder (checked at most once a second, the new model loaded off the request path)."""

    def __init__(self, settings: ServiceSettings, *, worker: bool = False) -> None:
        self.settings = settings
        self.dir = settings.models_dir
        stamp = self._marker_stamp()
        if worker and stamp[1]:
            # a worker (re)started by uvicorn serves what is active now, and never decides it:
            # a restart must not undo an activation
            version = stamp[1]
        else:
            version = settings.model
            if version == "latest":
                version = latest_model(self.dir).name
        self._active = self.load(version)
        if not worker:
            self._write_marker(version)
        self._marker_seen = self._marker_stamp()
        self._checked = time.monotonic()
        self._loading = False
        self._lock = threading.Lock()

    def folder(self, version: str) -> Path:
        if not _VERSION.fullmatch(version) or ".." in version:
            raise ApiError(404, f"there is no model version '{version[:100]}'")
        folder = self.dir / version
        if not (folder / "manifest.json").exists():
            raise ApiError(404, f"there is no model version '{version}'")
        return folder

    def load(self, version: str) -> OnlineModel:
        return OnlineModel(self.folder(version), top_k=self.settings.top_k)

    @property
    def active(self) -> OnlineModel:
        now = time.monotonic()
        if now - self._checked > 1.0:
            self._checked = now
            self._follow_marker()
        return self._active

    def activate(self, model: OnlineModel) -> None:
        self._active = model
        self._write_marker(model.version)
        self._marker_seen = self._marker_stamp()

    def _marker_stamp(self) -> tuple[float, str]:
        path = self.dir / ACTIVE_FILE
        try:
            return path.stat().st_mtime, path.read_text().strip()
        except OSError:
            return 0.0, ""

    def _write_marker(self, version: str) -> None:
        tmp = self.dir / f".{ACTIVE_FILE}.{os.getpid()}"
        tmp.write_text(version + "\n")
        tmp.replace(self.dir / ACTIVE_FILE)

    def _follow_marker(self) -> None:
        stamp = self._marker_stamp()
        if stamp == self._marker_seen or not stamp[1] or stamp[1] == self._active.version:
            self._marker_seen = stamp
            return
        with self._lock:
            if self._loading:
                return
            self._loading = True

        def load() -> None:
            try:
                self._active = self.load(stamp[1])
                self._marker_seen = stamp
            except Exception as exc:  # keep serving the model we have
                log.error("cannot switch to model %s: %s", stamp[1], type(exc).__name__)
            finally:
                self._loading = False

        threading.Thread(target=load, daemon=True, name="custval-model-switch").start()


# ---- the app --------------------------------------------------------------------------------


def _with_store(settings: ServiceSettings, read: Callable[[Any], Any], *, migrate: bool) -> Any:
    """``read(store)`` on the settings' store; a DuckDB file locked by another process (a
    scoring run, another worker starting) is retried for a few seconds."""

    for attempt in range(20):
        try:
            with open_store(str(settings.store), read_only=not migrate) as store:
                return read(store)
        except CustvalError as exc:
            if "lock" not in str(exc).lower() or attempt == 19:
                raise
            time.sleep(0.25)
    return None


def _keys(settings: ServiceSettings, *, migrate: bool) -> KeyRing:
    keys: list[ApiKey] = parse_env()
    if settings.store:
        keys += [
            ApiKey(*row) for row in _with_store(settings, lambda s: s.api_keys(), migrate=migrate)
        ]
    if not keys:
        raise CustvalError(
            "the service has no API keys: every /v1 request would be refused",
            hint="Make one with 'custval api-key new --name NAME --scope read' and put its line "
            "in CUSTVAL_API_KEYS, or add --store to keep it in the store",
        )
    return KeyRing(keys)


def _clv_models(
    settings: ServiceSettings, *, migrate: bool, have: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The CLV models of the store's latest scoring run, built to predict: the BTYD models
    (``fitted``) and, when the run chose a machine-learned CLV, that model (``served``, a
    :class:`custval.models.clv_serving.ServedClv`). ``have``: the models already loaded, kept when
    they are the latest run's."""
    if not settings.store:
        return None

    def read(store: Any) -> tuple[dict[str, Any] | None, bytes | None]:
        saved = store.latest_clv_models()
        if saved is None or (have is not None and have.get("run_id") == saved["run_id"]):
            return saved, None
        spend = saved.get("spend_model")
        if not spend:
            return saved, None
        try:
            return saved, store.run_file(saved["run_id"], spend["file"]) or b""
        except CustvalError:  # damaged: refused by its hash below
            return saved, b""

    saved, payload = _with_store(settings, read, migrate=migrate)
    if saved is None:
        return None
    if have is not None and have.get("run_id") == saved["run_id"]:
        return have
    # the models are built once; every request uses them
    out: dict[str, Any] = {**saved, "fitted": None, "served": None}
    if "purchases" in saved:  # not when the run's BTYD model could not be fitted
        out["fitted"] = clv_models_from_json(saved)
    if payload is not None:
        try:
            out["served"] = ServedClv.load(saved["spend_model"], payload)
        except Exception as exc:  # another scikit-learn, a damaged file, a newer LightGBM
            # no CLV rather than the BTYD one or the previous run's; kept for this run, so
            # the file is not read again every refresh; the value predictions go on
            out["served_error"] = str(exc).split("\n", 1)[0]
            log.error("the run's CLV model cannot be loaded: %s", out["served_error"])
    return out


def _segment_model(settings: ServiceSettings) -> tuple[str, dict[str, Any]] | None:
    if not settings.store:
        return None
    return _with_store(settings, lambda s: s.latest_segment_model(), migrate=False)  # type: ignore[no-any-return]


class SegmentRequest(BaseModel):
    """Customers to place in segments: ``customer_id`` and the segmentation's features
    (``GET /v1/segments`` lists them; null for a missing value)."""

    model_config = ConfigDict(extra="forbid")

    customers: Annotated[
        list[dict[str, Annotated[float, Field(allow_inf_nan=False)] | str | int | None]],
        Field(min_length=1),
    ]


class StoreState:
    """The keys and the CLV models a worker uses, read again from the store every
    ``interval`` seconds in a thread: a revoked key stops working and a new scoring run's
    models are used without a restart."""

    def __init__(self, settings: ServiceSettings, *, worker: bool, interval: float = 30.0) -> None:
        self.settings, self.interval = settings, interval
        self.ring = _keys(settings, migrate=not worker)
        self.clv = _clv_models(settings, migrate=False)
        self.segments = _segment_model(settings)
        self._stop = threading.Event()
        if settings.store:
            threading.Thread(target=self._refresh, daemon=True, name="custval-store").start()

    def _refresh(self) -> None:
        while not self._stop.wait(self.interval):
            # each on its own: a failure of one leaves the others refreshed
            for what, step in (
                ("keys", lambda: setattr(self, "ring", _keys(self.settings, migrate=False))),
                (
                    "CLV models",
                    lambda: setattr(
                        self, "clv", _clv_models(self.settings, migrate=False, have=self.clv)
                    ),
                ),
                ("segments", lambda: setattr(self, "segments", _segment_model(self.settings))),
            ):
                try:
                    step()
                except Exception as exc:  # keep what we have; say why without details
                    log.error("%s not refreshed: %s", what, type(exc).__name__)

    def close(self) -> None:
        self._stop.set()


class BodyLimit:
    """Refuses bodies over ``limit`` bytes with 413 before the app reads them (pure ASGI)."""

    def __init__(self, app: Any, limit: int, keys: Callable[[], KeyRing] | None = None) -> None:
        self.app, self.limit, self.keys = app, limit, keys

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.keys is not None and scope["path"].startswith("/v1/"):
            auth = headers.get(b"authorization", b"").decode("latin-1")
            if auth[:7].lower() != "bearer " or self.keys().find(auth[7:].strip()) is None:
                # no valid key: answered before any of the body is read (the handler says why)
                await self.app(scope, _no_body(receive), send)
                return
        value = headers.get(b"content-length", b"")
        if value.isdigit() and int(value) > self.limit:
            await self._too_large(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        body = json.dumps({"detail": f"the request body is over {self.limit:,} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _parse(validate: Callable[[bytes], Any], body: bytes) -> Any:
    """The body validated, or a 422 naming each wrong field (and the customer's index)."""
    try:
        return validate(body)
    except ValidationError as exc:
        message, errors = _validation_errors(exc)
        raise ApiError(422, message, errors) from None


def _customer_error(i: int, field: str, message: str, kind: str, detail: str = "") -> ApiError:
    """A 422 about one field of customer ``i`` of the request, in the shape of
    :func:`_validation_errors`."""
    where = f"customers[{i}].{field}"
    item = {"field": where, "message": message, "type": kind, "customer_index": i}
    return ApiError(422, detail or f"{where}: {message}", [item])


def _no_body(receive: Any) -> Any:
    """A receive that gives the app an empty body and leaves the client's unread."""
    sent = False

    async def empty() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return dict(await receive())

    return empty


def _validation_errors(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    """Pydantic's errors as the service reports them: where (customers[3].tenure_days), what;
    the offending values are not echoed."""
    errors = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = err["loc"]
        if len(loc) > 3 and loc[0] == "customers":
            loc = loc[:3]  # customers[i].field, without the union member pydantic tried
        where = ""
        for part in loc:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else part)
        item = {"field": where or "(body)", "message": err["msg"], "type": err["type"]}
        if len(loc) >= 2 and loc[0] == "customers" and isinstance(loc[1], int):
            item["customer_index"] = loc[1]
        if all(e["field"] != item["field"] for e in errors):  # one error per field
            errors.append(item)
    first = errors[0]
    message = f"{first['field']}: {first['message']}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return message, errors[:100]


def guarded(handler: Any) -> Any:
    """Unexpected errors become a 500 with a JSON body here, logged by type only: Starlette's
    outer error handler would log the exception's text, which may hold a customer's values."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except (ApiError, StarletteHTTPException):
            raise
        except CustvalError as exc:
            raise ApiError(422, str(exc)) from None
        except Exception as exc:
            log.error("error in %s: %s", handler.__name__, type(exc).__name__)
            raise ApiError(500, "internal error") from None

    return wrapper


def create_app(settings: ServiceSettings, *, worker: bool = False) -> FastAPI:
    """The service for ``settings``: loads the model and the keys now (a clear error if it
    cannot), so that a started service is ready. ``worker``: one of several uvicorn workers,
    which serves the active model and opens the store read-only."""
    registry = Registry(settings, worker=worker)
    state = StoreState(settings, worker=worker)
    logger = None
    if settings.log_predictions:
        if not settings.store:
            raise CustvalError("--log-predictions needs --store: the predictions go there")

        logger = PredictionLog(settings.store)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()
        if logger is not None:
            logger.close()

    app = FastAPI(
        lifespan=lifespan,
        title="custval",
        summary="Customer value: predictions with reasons, CLV, stored runs",
        version="1",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.registry = registry
    app.state.store_state = state

    def authorize(request: Request, scope: str) -> ApiKey:
        header = request.headers.get("authorization", "")
        if not header[:7].lower() == "bearer " or not header[7:].strip():
            raise ApiError(
                401,
                "an API key is needed: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = state.ring.find(header[7:].strip())
        if key is None:
            raise ApiError(401, "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
        if not key.allows(scope):
            raise ApiError(403, f"the key '{key.name}' has scope '{key.scope}', not '{scope}'")
        return key

    def answer(
        model: OnlineModel, predictions: list[dict[str, Any]], customers: list[dict[str, Any]]
    ) -> Response:
        """The predictions with their CLV, logged when asked, as the response."""
        if state.clv is not None:
            _add_clv(predictions, customers, state.clv)
        if logger is not None:
            logger.add(model.version, predictions)
        return _json({"model_version": model.version, "predictions": predictions})

    def check_batch(n: int) -> None:
        if n > settings.batch_limit:
            raise ApiError(
                413, f"{n:,} customers in one request; the limit is {settings.batch_limit:,}"
            )

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return _error(exc.status, exc.message, exc.errors, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_: Request, exc: RequestValidationError) -> Response:
        message, errors = _request_errors(exc)
        return _error(422, message, errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        route = request.scope.get("route")
        log.error("error in %s: %s", getattr(route, "path", "?"), type(exc).__name__)
        return _error(500, "internal error")

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> Response:
        """A model is loaded and requests can be scored."""
        return _json({"status": "ready", "model_version": registry.active.version})

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        tags=["predictions"],
        responses={401: {}, 403: {}, 413: {}, 422: {}},
    )
    @guarded
    async def predict(request: Request) -> Response:
        """Value probability, class, CLV and the top reasons of each customer, from the
        features of the active model (``GET /v1/models/{version}`` lists them; null for a
        missing value). At most the batch limit (default 1,000) customers per request."""
        authorize(request, "read")
        model = registry.active
        parsed = _parse(model.adapter.validate_json, await request.body())
        customers = as_dicts(parsed)
        check_batch(len(customers))
        if len(customers) > 32:  # keep the event loop free for other requests
            predictions = await run_in_threadpool(model.score, customers)
        else:
            predictions = model.score(customers)
        return answer(model, predictions, customers)

    @app.post(
        "/v1/predict/records",
        response_model=PredictResponse,
        tags=["predictions"],
        responses={401: {}, 403: {}, 413: {}, 422: {}},
    )
    @guarded
    async def predict_records(request: Request) -> Response:
        """Predictions from customers' raw records (profile, transactions, web sessions,
        product usage, interactions), with features computed by the same code as training."""
        authorize(request, "read")
        model = registry.active
        parsed = _parse(RecordsRequest.model_validate_json, await request.body())
        check_batch(len(parsed.customers))
        try:
            rows = await run_in_threadpool(features_from_records, parsed, model)
        except CustvalError as exc:
            raise ApiError(422, str(exc)) from None
        predictions = await run_in_threadpool(model.score, rows)
        return answer(model, predictions, rows)

    @app.get("/v1/segments", tags=["segments"], responses={404: {}})
    @guarded
    async def segments(request: Request) -> Response:
        """The segmentation that places customers: its run, features and segment names."""
        authorize(request, "read")
        found = state.segments
        if found is None:
            raise ApiError(404, NO_SEGMENTS)
        run_id, model = found
        return _json(
            {
                "run_id": run_id,
                "algorithm": model["algorithm"],
                "features": model["preparation"]["features"],
                "segments": model["names"],
            }
        )

    @app.post(
        "/v1/segment",
        tags=["segments"],
        responses={401: {}, 403: {}, 404: {}, 413: {}, 422: {}},
    )
    @guarded
    async def segment(request: Request) -> Response:
        """The segment of each customer: the nearest segment centre of the latest
        segmentation run in the store (``custval segment -c custval.toml``), from the
        customer's segmentation features (null: the base's median)."""
        authorize(request, "read")
        found = state.segments
        if found is None:
            raise ApiError(404, NO_SEGMENTS)
        run_id, model = found
        parsed = _parse(SegmentRequest.model_validate_json, await request.body())
        check_batch(len(parsed.customers))
        rows = _segment_rows(parsed.customers, model["preparation"]["features"])
        labels = assign_nearest(model, rows)
        names = model["names"]
        return _json(
            {
                "run_id": run_id,
                "segments": [
                    {"customer_id": cid, "segment": int(k), "name": names.get(str(int(k)))}
                    for cid, k in zip(rows["customer_id"], labels, strict=True)
                ],
            }
        )

    @app.get("/v1/customers/{customer_id}", tags=["stored runs"], responses={404: {}})
    @guarded
    async def customer(customer_id: str, request: Request) -> Response:
        """The customer's prediction and reasons in the latest stored scoring run."""
        authorize(request, "read")
        if not settings.store:
            raise ApiError(404, "the service has no store (start it with --store)")
        found = await run_in_threadpool(_lookup, settings.store, customer_id)
        if found is None:
            raise ApiError(404, "the latest stored run has no such customer")
        return _json(found)

    @app.get("/v1/models", tags=["models"])
    @guarded
    async def models(request: Request) -> Response:
        """The model versions in the models folder, newest first, and which one is active."""
        authorize(request, "read")
        active = registry.active.version
        out = []
        for folder in sorted(settings.models_dir.iterdir(), reverse=True):
            manifest = _manifest(folder)
            if manifest is not None:
                out.append({**_summary(manifest, folder.name), "active": folder.name == active})
        return _json({"active": active, "models": out})

    @app.get("/v1/models/{version}", tags=["models"], responses={404: {}})
    @guarded
    async def model_detail(version: str, request: Request) -> Response:
        """A version's manifest: metrics, threshold, features, leaderboard, global
        importance."""
        authorize(request, "read")
        manifest = _manifest(registry.folder(version))
        if manifest is None:
            raise ApiError(404, f"there is no model version '{version}'")
        schema = manifest.get("schema", {})
        detail = {
            **_summary(manifest, version),
            "active": version == registry.active.version,
            "threshold": manifest.get("threshold"),
            "threshold_rule": manifest.get("threshold_rule"),
            "label": manifest.get("label"),
            "features": {
                "numeric": schema.get("numeric", []),
                "categorical": schema.get("categorical", {}),
            },
            "leaderboard": manifest.get("leaderboard"),
            "importance": manifest.get("importance"),
            "libraries": manifest.get("libraries"),
        }
        return _json(detail)

    @app.post("/v1/models/{version}/activate", tags=["models"], responses={404: {}, 422: {}})
    @guarded
    async def activate(version: str, request: Request) -> Response:
        """Make ``version`` the active model (admin scope). Requests in flight finish on the
        model they started with; other workers follow within a second or so."""
        authorize(request, "admin")
        registry.folder(version)
        try:
            model = await run_in_threadpool(registry.load, version)
        except CustvalError as exc:
            raise ApiError(422, f"model {version} cannot be loaded: {exc}") from None
        previous = registry.active.version
        registry.activate(model)
        log.info("model switched from %s to %s", previous, version)
        return _json({"active": version, "previous": previous})

    def openapi() -> dict[str, Any]:
        # the request body of /v1/predict is the active model's features
        spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
        request_schema = registry.active.request_type.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        defs = request_schema.pop("$defs", {})
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs)
        components["PredictRequest"] = request_schema
        records_schema = RecordsRequest.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components.update(records_schema.pop("$defs", {}))
        components["RecordsRequest"] = records_schema
        for path, name in (
            ("/v1/predict", "PredictRequest"),
            ("/v1/predict/records", "RecordsRequest"),
        ):
            spec["paths"][path]["post"]["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                },
            }
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, methods in spec["paths"].items():
            if path.startswith("/v1/"):
                for op in methods.values():
                    op["security"] = [{"bearer": []}]
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # the key is checked before a body is read: without one, nothing is buffered
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, keys=lambda: state.ring)
    return app


def _request_errors(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        errors.append({"field": ".".join(loc) or "(request)", "message": err.get("msg", "")})
    if not errors:
        return "the request is not valid", []
    return f"{errors[0]['field']}: {errors[0]['message']}", errors


NO_SEGMENTS = (
    "the store has no segmentation run that places customers: run 'custval segment -c "
    "custval.toml' (k-means, hierarchical or HDBSCAN) and start the service with its store"
)


def _segment_rows(customers: list[dict[str, Any]], features: list[str]) -> Any:
    """The customers as a table of the segmentation's features; a missing id or feature, or
    text where a number goes, is a 422 naming the customer and the field."""

    for i, c in enumerate(customers):  # a request's customers: the validation itself
        for f in ("customer_id", *features):
            if f not in c:
                raise _customer_error(i, f, "Field required", "missing")
            if f != "customer_id" and isinstance(c[f], str):
                raise _customer_error(i, f, "a number or null is needed", "float_type")
            if f != "customer_id" and c[f] is not None and abs(float(c[f])) > 1e15:
                raise _customer_error(i, f, "beyond 1e15", "less_than_equal")
    data = {"customer_id": [str(c["customer_id"]) for c in customers]}
    for f in features:
        data[f] = [float("nan") if c[f] is None else float(c[f]) for c in customers]
    return pd.DataFrame(data)


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((folder / "manifest.json").read_text()))
    except (OSError, ValueError):
        return None


def _summary(manifest: dict[str, Any], version: str) -> dict[str, Any]:
    return {
        "version": version,
        "created_at": manifest.get("created_at"),
        "model": manifest.get("model"),
        "metrics": manifest.get("metrics"),
    }


def _lookup(store_url: str, customer_id: str) -> dict[str, Any] | None:

    try:
        with open_store(store_url, read_only=True) as store:
            return store.customer(customer_id)
    except Exception as exc:  # e.g. a DuckDB file being written by a scoring run is locked
        # the details (paths, process ids) stay in the log, by type only
        log.error("store lookup failed: %s", type(exc).__name__)
        raise ApiError(503, "the store cannot be read now; try again shortly") from None


#: the runs whose CLV model was said to need features the requests lack (said once each)
_SAID_MISSING: set[Any] = set()


def _add_clv(
    predictions: list[dict[str, Any]], customers: list[dict[str, Any]], saved: dict[str, Any]
) -> None:
    """CLV over the stored horizon by the method of the latest scoring run: its
    machine-learned model, for customers with that model's features; else the customer-base
    models, for customers whose features include the BTYD summary (null for those who never
    bought)."""

    if not customers:
        return
    if saved.get("spend_model") is not None:  # the run's CLV is machine-learned
        served = saved.get("served")
        if served is None:  # it could not be loaded (logged): no CLV, not another one
            return
        missing = [c for c in served.columns if c not in customers[0]]
        if missing and saved.get("run_id") not in _SAID_MISSING:
            _SAID_MISSING.add(saved.get("run_id"))
            log.warning(
                "no CLV: the run's CLV model needs features the requests do not have: %s",
                ", ".join(missing[:10]),
            )
        if not missing:
            _check_summary(customers)
            clv, _, _ = served.predict(pd.DataFrame(customers))
            for row, value in zip(predictions, clv, strict=True):
                row["clv"] = float(value)
        # without the model's features (a value model trained on others) no CLV is given:
        # the BTYD one would not be the CLV the run stored
        return
    if saved.get("fitted") is None or any(c not in customers[0] for c in SUMMARY_COLUMNS):
        return
    x, tx, t, m, buyers = _check_summary(customers)
    if not buyers.any():
        return
    purchases, spend = saved["fitted"]
    m = np.nan_to_num(m, nan=0.0)
    _, clv = point_clv(
        purchases,
        spend,
        x[buyers],
        tx[buyers],
        t[buyers],
        m[buyers],
        horizon=float(saved["horizon"]),
        discount=float(saved["discount"]),
    )
    for i, value in zip(np.flatnonzero(buyers), clv, strict=True):
        predictions[i]["clv"] = float(value)


def _check_summary(customers: list[dict[str, Any]]) -> tuple[Any, Any, Any, Any, Any]:
    """The customers' BTYD summary (x, recency, T, monetary value, who bought), refused with
    a 422 when it cannot be one; all missing when the features do not include it."""

    if any(c not in customers[0] for c in SUMMARY_COLUMNS):
        nothing = np.full(len(customers), np.nan)
        return nothing, nothing, nothing, nothing, np.zeros(len(customers), dtype=bool)
    x, tx, t, m = (
        np.array([np.nan if r[c] is None else r[c] for r in customers], dtype=np.float64)
        for c in SUMMARY_COLUMNS
    )
    buyers = ~np.isnan(t) & ~np.isnan(x) & ~np.isnan(tx)
    # a BTYD summary the models can read: whole repeat counts, 0 <= recency <= T
    with np.errstate(invalid="ignore"):
        bad = buyers & (
            (x < 0)
            | (x != np.round(x))
            | (tx < 0)
            | (t < 0)
            | (tx > t * (1 + 1e-12) + 1e-12)
            | (m < 0)
        )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _customer_error(
            i,
            "recency",
            "not a BTYD summary",
            "value_error",
            f"customers[{i}]: frequency, recency, T and monetary_value are not a customer "
            "summary (frequency a whole number >= 0, 0 <= recency <= T, monetary_value >= 0)",
        )
    return x, tx, t, m, buyers


def app_from_env() -> FastAPI:
    """The app of ``CUSTVAL_SERVE_SETTINGS`` (JSON): how uvicorn workers build it."""
    settings = ServiceSettings.model_validate_json(os.environ["CUSTVAL_SERVE_SETTINGS"])
    return create_app(settings, worker=True)
