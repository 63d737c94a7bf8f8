"""``GET /v1/segments`` and ``POST /v1/segment``: the latest segmentation run of the store, and
customers placed in its segments."""

from __future__ import annotations

from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from custval.api.deps import ServiceDep, require
from custval.api.http import ApiError, customer_error, guarded, json_response, parse_body
from custval.api.state import Service
from custval.models.segments import assign_nearest

__all__ = ["NO_SEGMENTS", "SegmentRequest", "router"]

router = APIRouter(tags=["segments"])

NO_SEGMENTS = (
    "the store has no segmentation run that places customers: run 'custval segment -c "
    "custval.toml' (k-means, hierarchical or HDBSCAN) and start the service with its store"
)


class SegmentRequest(BaseModel):
    """Customers to place in segments: ``customer_id`` and the segmentation's features
    (``GET /v1/segments`` lists them; null for a missing value)."""

    model_config = ConfigDict(extra="forbid")

    customers: Annotated[
        list[dict[str, Annotated[float, Field(allow_inf_nan=False)] | str | int | None]],
        Field(min_length=1),
    ]


@router.get("/v1/segments", responses={404: {}}, dependencies=[Depends(require("read"))])
@guarded
async def segments(service: ServiceDep) -> Response:
    """The segmentation that places customers: its run, features and segment names."""
    run_id, model = _segmentation(service)
    return json_response(
        {
            "run_id": run_id,
            "algorithm": model["algorithm"],
            "features": model["preparation"]["features"],
            "segments": model["names"],
        }
    )


@router.post(
    "/v1/segment",
    responses={401: {}, 403: {}, 404: {}, 413: {}, 422: {}},
    dependencies=[Depends(require("read"))],
)
@guarded
async def segment(request: Request, service: ServiceDep) -> Response:
    """The segment of each customer: the nearest segment centre of the latest
    segmentation run in the store (``custval segment -c custval.toml``), from the
    customer's segmentation features (null: the base's median)."""
    run_id, model = _segmentation(service)
    parsed = parse_body(SegmentRequest.model_validate_json, await request.body())
    service.check_batch(len(parsed.customers))
    rows = _segment_rows(parsed.customers, model["preparation"]["features"])
    labels = assign_nearest(model, rows)
    names = model["names"]
    return json_response(
        {
            "run_id": run_id,
            "segments": [
                {"customer_id": cid, "segment": int(k), "name": names.get(str(int(k)))}
                for cid, k in zip(rows["customer_id"], labels, strict=True)
            ],
        }
    )


def _segmentation(service: Service) -> tuple[str, dict[str, Any]]:
    """The run id and model of the store's latest segmentation, or a 404 saying how to make
    one."""
    found = service.store_state.segments
    if found is None:
        raise ApiError(404, NO_SEGMENTS)
    return found


def _segment_rows(customers: list[dict[str, Any]], features: list[str]) -> Any:
    """The customers as a table of the segmentation's features; a missing id or feature, or
    text where a number goes, is a 422 naming the customer and the field."""

    for i, c in enumerate(customers):  # a request's customers: the validation itself
        for f in ("customer_id", *features):
            if f not in c:
                raise customer_error(i, f, "Field required", "missing")
            if f != "customer_id" and isinstance(c[f], str):
                raise customer_error(i, f, "a number or null is needed", "float_type")
            if f != "customer_id" and c[f] is not None and abs(float(c[f])) > 1e15:
                raise customer_error(i, f, "beyond 1e15", "less_than_equal")
    data: dict[str, list[Any]] = {"customer_id": [str(c["customer_id"]) for c in customers]}
    for f in features:
        data[f] = [float("nan") if c[f] is None else float(c[f]) for c in customers]
    return pd.DataFrame(data)
