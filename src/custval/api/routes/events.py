"""``POST /v1/events``: purchases, refunds, web sessions and product use, one or a batch.

Each request is all or nothing; an event id already applied is a retry and changes nothing.
The answer says what the request did: the events applied, the retries, the customers changed
and those recomputed because an event fell before their latest record.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from custval.api.deps import ServiceDep, require
from custval.api.http import ApiError, guarded, json_response, parse_body
from custval.data.events import EventBatch
from custval.flows.realtime import IngestError

__all__ = ["EventsResponse", "router"]

router = APIRouter(tags=["real time"])


class EventsResponse(BaseModel):
    applied: int = Field(description="events applied now")
    duplicates: int = Field(description="events whose event_id was applied before (retries)")
    customers: list[str] = Field(description="the customers whose state changed")
    recomputed: list[str] = Field(
        description="customers recomputed from their buckets: an event fell before their "
        "latest record, or within the batch data"
    )


@router.post(
    "/v1/events",
    response_model=EventsResponse,
    responses={401: {}, 403: {}, 409: {}, 413: {}, 422: {}, 503: {}},
    dependencies=[Depends(require("events"))],
)
@guarded
async def events(request: Request, service: ServiceDep) -> Response:
    """Events for known or new customers: ``{"events": [...]}``, or one event alone. Each
    has ``event_id`` (yours; sending it again changes nothing), ``type`` (purchase, refund,
    web_session, product_usage), ``customer_id``, ``timestamp`` and its type's fields, named
    as in the batch sources (a purchase: ``amount``, ``order_id``, ``category``,
    ``channel``...). The customer's numbers then change at once (``GET
    /v1/customers/{id}``). At most the batch limit (default 1,000) events per request."""
    realtime = service.realtime
    if realtime is None:
        raise ApiError(404, "this service takes no events: start it with --realtime")
    body = await request.body()
    batch = parse_body(lambda b: EventBatch.model_validate(_wrapped(b)), body)
    service.check_batch(len(batch.events), "events")
    try:
        done = await realtime.ingest(batch)
    except IngestError as exc:
        raise ApiError(exc.status, str(exc)) from None
    return json_response(done.as_dict())


def _wrapped(body: bytes) -> Any:
    """The body as a batch: one event alone becomes a batch of one."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise ApiError(422, "the body is not JSON") from None
    if isinstance(data, dict) and "events" not in data:
        return {"events": [data]}
    return data
