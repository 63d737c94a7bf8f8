"""``GET /v1/segments`` and ``POST /v1/segment``: the latest segmentation run of the store, and
customers placed in its segments."""

from __future__ import annotations

from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError
from starlette.responses import Response

from custval.api.clv import add_clv, clv_inputs
from custval.api.deps import ServiceDep, require
from custval.api.http import ApiError, customer_error, guarded, json_response, parse_body
from custval.api.state import Service
from custval.data.values import check_number, normalise_id
from custval.models.segments import assign_nearest

__all__ = ["NO_SEGMENTS", "SegmentRequest", "router"]

router = APIRouter(tags=["segments"])

NO_SEGMENTS = (
    "the store has no segmentation run that places customers: run 'custval segment -c "
    "custval.toml' (k-means, hierarchical or HDBSCAN) and start the service with its store"
)


class SegmentRequest(BaseModel):
    """Customers to place in segments: ``customer_id`` and the segmentation's features
    (``GET /v1/segments`` lists them; null for a missing value). ``clv`` may be left out when
    the features it is computed from are given (the BTYD summary: ``frequency``, ``recency``,
    ``T``, ``monetary_value``); other fields are ignored, with a warning."""

    model_config = ConfigDict(extra="forbid")

    customers: Annotated[list[dict[str, Any]], Field(min_length=1)]


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
    features = model["preparation"]["features"]
    customers = _with_clv(parsed.customers, features, service.store_state.clv)
    rows = _segment_rows(customers, features)
    labels = assign_nearest(model, rows)
    names = model["names"]
    return json_response(
        {
            "run_id": run_id,
            "segments": [
                {"customer_id": cid, "segment": int(k), "name": names.get(str(int(k)))}
                for cid, k in zip(rows["customer_id"], labels, strict=True)
            ],
            "warnings": _ignored(
                parsed.customers, [*features, *(clv_inputs(service.store_state.clv) or [])]
            ),
        }
    )


def _segmentation(service: Service) -> tuple[str, dict[str, Any]]:
    """The run id and model of the store's latest segmentation, or a 404 saying how to make
    one."""
    found = service.store_state.segments
    if found is None:
        raise ApiError(404, NO_SEGMENTS)
    return found


def _with_clv(
    customers: list[dict[str, Any]], features: list[str], saved: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The customers with ``clv`` computed by the store's CLV model from their features, for
    those who did not send it, when the segmentation uses it; a 422 naming the fields to send
    when it cannot be computed."""
    lacking = [i for i, c in enumerate(customers) if "clv" not in c]
    if "clv" not in features or not lacking:
        return customers
    needs = clv_inputs(saved)
    i = lacking[0]
    if needs is None:
        raise customer_error(
            i,
            "clv",
            "Field required: the store has no scoring run whose CLV models could compute it",
            "missing",
        )
    for i in lacking:
        missing = [f for f in needs if f not in customers[i]]
        if missing:
            raise customer_error(
                i,
                "clv",
                f"Field required: send clv, or {', '.join(missing)} to compute it from",
                "missing",
                missing=", ".join(missing),
            )
    rows = [dict(customers[i]) for i in lacking]
    for i, row in zip(lacking, rows, strict=True):  # the CLV model reads numbers: checked
        for f in needs:
            row[f] = _number(i, f, row[f])
    predictions: list[dict[str, Any]] = [{"clv": None} for _ in rows]
    add_clv(predictions, rows, saved)  # type: ignore[arg-type]
    out = [dict(c) for c in customers]
    for i, p in zip(lacking, predictions, strict=True):
        out[i]["clv"] = p["clv"]  # null for who never bought: the base's median, as stored
    return out


def _number(i: int, field: str, value: Any) -> float | None:
    """A feature's value, strictly a number or null (no booleans, no text, finite)."""
    try:
        return check_number(value)
    except PydanticCustomError as exc:
        ctx = exc.context or {}
        raise customer_error(
            i,
            field,
            exc.message(),
            exc.type,
            expected=str(ctx.get("expected", "")),
            got=str(ctx.get("got", "")),
        ) from None


def _segment_rows(customers: list[dict[str, Any]], features: list[str]) -> Any:
    """The customers as a table of the segmentation's features; a missing id or feature, or
    a value that is not a number, is a 422 naming the customer and the field."""

    ids = []
    for i, c in enumerate(customers):  # a request's customers: the validation itself
        for f in ("customer_id", *features):
            if f not in c:
                raise customer_error(i, f, "Field required", "missing")
        try:
            ids.append(normalise_id(c["customer_id"]))
        except PydanticCustomError as exc:
            raise customer_error(i, "customer_id", exc.message(), exc.type) from None
    data: dict[str, list[Any]] = {"customer_id": ids}
    for f in features:
        values = [_number(i, f, c[f]) for i, c in enumerate(customers)]
        data[f] = [float("nan") if v is None else v for v in values]
    return pd.DataFrame(data)


def _ignored(customers: list[dict[str, Any]], features: list[str]) -> list[dict[str, Any]]:
    """A warning per field of the request that neither the segmentation nor the CLV it
    computes uses."""
    used = {"customer_id", *features}
    seen: dict[str, int] = {}
    for c in customers:
        for name in c.keys() - used:
            seen[name] = seen.get(name, 0) + 1
    return [
        {"field": name, "customers": n, "message": "not a feature of the segmentation: ignored"}
        for name, n in sorted(seen.items())
    ]
