"""``POST /v1/predict`` and ``POST /v1/predict/records``: predictions, reasons and CLV.

The request bodies are read and validated here rather than declared as parameters: the body of
``/v1/predict`` is the active model's features, which change with an activation
(the OpenAPI document of :mod:`custval.api.app` describes both bodies).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from custval.api.clv import add_clv
from custval.api.deps import ServiceDep, require
from custval.api.http import ApiError, guarded, json_response, parse_body
from custval.api.metrics import predicted
from custval.api.online import OnlineModel, Prediction, as_dicts, ignored_fields
from custval.api.records import RecordsRequest, features_from_records
from custval.api.state import Service
from custval.errors import CustvalError

__all__ = ["PredictResponse", "router"]

router = APIRouter(tags=["predictions"])


class FieldWarning(BaseModel):
    """A field of the request that was not scored, and why."""

    field: str
    customers: int = Field(description="how many of the request's customers had it")
    message: str


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[Prediction]
    warnings: list[FieldWarning] = Field(
        default_factory=list,
        description="fields of the request the model does not use (ignored), one per field",
    )


@router.post(
    "/v1/predict",
    response_model=PredictResponse,
    responses={401: {}, 403: {}, 413: {}, 422: {}},
    dependencies=[Depends(require("read"))],
)
@guarded
async def predict(request: Request, service: ServiceDep) -> Response:
    """Value probability, class, CLV and the top reasons of each customer, from the
    features of the active model (``GET /v1/models/{version}`` lists them; null for a
    missing value). At most the batch limit (default 1,000) customers per request."""
    model = service.registry.active
    parsed = parse_body(model.adapter.validate_json, await request.body())
    customers = as_dicts(parsed)
    service.check_batch(len(customers))
    if len(customers) > 32:  # keep the event loop free for other requests
        predictions = await run_in_threadpool(model.score, customers)
    else:
        predictions = model.score(customers)
    return _answer(service, model, predictions, customers, ignored_fields(parsed, model))


@router.post(
    "/v1/predict/records",
    response_model=PredictResponse,
    responses={401: {}, 403: {}, 413: {}, 422: {}},
    dependencies=[Depends(require("read"))],
)
@guarded
async def predict_records(request: Request, service: ServiceDep) -> Response:
    """Predictions from customers' raw records (profile, transactions, web sessions,
    product usage, interactions), with features computed by the same code as training."""
    model = service.registry.active
    parsed = parse_body(RecordsRequest.model_validate_json, await request.body())
    service.check_batch(len(parsed.customers))
    try:
        rows = await run_in_threadpool(features_from_records, parsed, model)
    except CustvalError as exc:
        raise ApiError(422, str(exc)) from None
    predictions = await run_in_threadpool(model.score, rows)
    return _answer(service, model, predictions, rows)


def _answer(
    service: Service,
    model: OnlineModel,
    predictions: list[dict[str, Any]],
    customers: list[dict[str, Any]],
    warnings: list[dict[str, Any]] | None = None,
) -> Response:
    """The predictions with their CLV, logged when asked, as the response."""
    clv = service.store_state.clv  # once: the store's refresh may replace it meanwhile
    if clv is not None:
        add_clv(predictions, customers, clv)
    if service.prediction_log is not None:
        service.prediction_log.add(model.version, predictions)
    if service.settings.metrics:
        predicted(model.clf.class_names_, [p["value_class"] for p in predictions])
    return json_response(
        {"model_version": model.version, "predictions": predictions, "warnings": warnings or []}
    )
