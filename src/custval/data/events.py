"""Events: a purchase, a refund, a web session or a day's product use, one at a time.

An event carries the columns of its kind's batch source (:data:`custval.data.contracts.CONTRACTS`:
transactions, web_sessions, product_usage) under the same names, and goes through the same
rules as a row of that source (:mod:`custval.data.clean`): ids trimmed and upper-cased,
categories trimmed and lower-cased with ``unknown`` for a missing one, measures never
negative, no date after now. What the batch cleaning would drop (a blank id, a future
timestamp) is refused instead, with the field named: a client can fix it and send it again.

A refund's ``amount`` is the money given back (positive); the event table keeps it negative,
as a transactions source does. An event without an ``order_id`` is an order of its own.

Each event has the client's ``event_id``: sending it again changes nothing (its
:func:`fingerprint` tells a retry from another event under a used id).

Example
-------
>>> batch = EventBatch.model_validate({"events": [{"event_id": "e1", "type": "purchase",
...     "customer_id": " c1 ", "timestamp": "2026-01-05T10:00:00", "amount": 12.5}]})
>>> event_rows(batch.events)["customer_id"]
['C1']
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from custval.data.values import AMOUNT_BOUND, CustomerId, Number, got_text, normalise_id

__all__ = [
    "EVENT_COLUMNS",
    "EVENT_KINDS",
    "MAX_CLOCK_SKEW",
    "Event",
    "EventBatch",
    "event_columns",
    "event_row",
    "event_rows",
    "fingerprint",
]

#: how far ahead of the service's clock an event may be dated (clients' clocks differ)
MAX_CLOCK_SKEW = timedelta(minutes=5)
#: each event type and the batch source whose rows it is
EVENT_KINDS = {
    "purchase": "transactions",
    "refund": "transactions",
    "web_session": "web_sessions",
    "product_usage": "product_usage",
}
UNKNOWN = "unknown"

#: the event table's columns (store ``events``), in order; types as both engines spell them
EVENT_COLUMNS = {
    "event_id": "TEXT",
    "customer_id": "TEXT",
    "type": "TEXT",
    "timestamp": "TIMESTAMP",
    "amount": "DOUBLE PRECISION",
    "order_id": "TEXT",
    "category": "TEXT",
    "channel": "TEXT",
    "product_id": "TEXT",
    "session_id": "TEXT",
    "page_views": "DOUBLE PRECISION",
    "duration_sec": "DOUBLE PRECISION",
    "blogs_viewed": "DOUBLE PRECISION",
    "videos_viewed": "DOUBLE PRECISION",
    "whitepapers_viewed": "DOUBLE PRECISION",
    "converted": "INTEGER",
    "features_used": "DOUBLE PRECISION",
    "sessions": "DOUBLE PRECISION",
    "time_sec": "DOUBLE PRECISION",
    "fingerprint": "TEXT",
    "received_at": "TIMESTAMP",
}

Measure = Annotated[Number, Field(description="a count or a duration: 0 or more, or null")]
OptionalId = Annotated[str | int | None, Field(description="an id (trimmed, upper-cased)")]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: Annotated[str, Field(min_length=1, max_length=200, description="your id of it")]
    customer_id: CustomerId
    timestamp: datetime = Field(description="when it happened (ISO 8601; UTC if no offset)")

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # sources hold naive local timestamps; an offset is turned into UTC
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        if value > datetime.now(UTC).replace(tzinfo=None) + MAX_CLOCK_SKEW:
            raise PydanticCustomError(
                "future_timestamp",
                "{when} is in the future (the clock says {now} UTC): send events that have "
                "happened",
                {
                    "when": f"{value:%Y-%m-%d %H:%M:%S}",
                    "now": f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S}",
                },
            )
        return value

    @field_validator("event_id")
    @classmethod
    def _trimmed(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("id_empty", "an event_id is needed, not empty text", {})
        return value.strip()


def _positive_amount(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError(
            "number_type", "a number is needed, not {got}", {"got": got_text(value)}
        )
    number = float(value)
    if not number == number or abs(number) > AMOUNT_BOUND:
        raise PydanticCustomError(
            "finite_number",
            "a finite number within ±{bound:g} is needed, not {got}",
            {"bound": AMOUNT_BOUND, "got": got_text(value)},
        )
    if number < 0:
        raise PydanticCustomError(
            "negative_amount",
            "a positive amount is needed: money given back is an event of type 'refund'",
            {},
        )
    return number


class _Money(_Event):
    amount: float = Field(description="the money, in the currency of the sources (positive)")
    order_id: OptionalId = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> float:
        return _positive_amount(value)

    @field_validator("order_id", mode="before")
    @classmethod
    def _order(cls, value: Any) -> str | None:
        return (
            None
            if value is None or (isinstance(value, str) and not value.strip())
            else (normalise_id(value))
        )


class Purchase(_Money):
    """A purchase: a row of the transactions source."""

    type: Literal["purchase"]
    category: str | None = Field(None, description="product category")
    channel: str | None = Field(None, description="sales channel")
    product_id: OptionalId = None


class Refund(_Money):
    """Money given back: a transactions row with a negative amount."""

    type: Literal["refund"]


class WebSession(_Event):
    """A website session: a row of the web_sessions source."""

    type: Literal["web_session"]
    session_id: OptionalId = None
    page_views: Measure = None
    duration_sec: Measure = None
    blogs_viewed: Measure = None
    videos_viewed: Measure = None
    whitepapers_viewed: Measure = None
    converted: StrictBool | None = None


class ProductUsage(_Event):
    """A day's product use (the day of ``timestamp``): a row of the product_usage source."""

    type: Literal["product_usage"]
    features_used: Measure = None
    sessions: Measure = None
    time_sec: Measure = None


Event = Annotated[Purchase | Refund | WebSession | ProductUsage, Field(discriminator="type")]


class EventBatch(BaseModel):
    """One event or a batch: ``{"events": [...]}``."""

    model_config = ConfigDict(extra="forbid")

    events: Annotated[list[Event], Field(min_length=1)]

    @field_validator("events")
    @classmethod
    def _measures(cls, events: list[Any]) -> list[Any]:
        for i, event in enumerate(events):
            for name in _MEASURES:
                value = getattr(event, name, None)
                if value is not None and value < 0:
                    raise PydanticCustomError(
                        "negative_measure",
                        "events[{i}].{name}: 0 or more is needed, not {value:g}",
                        {"i": i, "name": name, "value": value},
                    )
        return events


_MEASURES = (
    "page_views",
    "duration_sec",
    "blogs_viewed",
    "videos_viewed",
    "whitepapers_viewed",
    "features_used",
    "sessions",
    "time_sec",
)


def _category(value: str | None) -> str:
    text = (value or "").strip().lower()
    return text or UNKNOWN


def fingerprint(event: Any) -> str:
    """What the event says, as a digest: the same event sent again has the same one."""
    payload = event.model_dump(mode="json", exclude_none=True)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def event_row(event: Any, received_at: datetime | None = None) -> dict[str, Any]:
    """The event as a row of the event table (:data:`EVENT_COLUMNS`), cleaned as its
    source's rows are: a refund's amount negative, categories lower-cased (``unknown`` when
    missing), ids upper-cased, an order id for every purchase and refund; its
    :func:`fingerprint`."""
    row = event.model_dump()
    row["fingerprint"] = fingerprint(event)
    row["received_at"] = received_at
    if event.type in ("purchase", "refund"):
        row["order_id"] = row["order_id"] or f"EVENT:{event.event_id}"
        if event.type == "refund":
            row["amount"] = -row["amount"]
        else:
            row["category"] = _category(row["category"])
            row["channel"] = _category(row["channel"])
    for name in ("product_id", "session_id"):
        if row.get(name) is not None:
            row[name] = normalise_id(row[name])
    if row.get("converted") is not None:
        row["converted"] = int(row["converted"])
    return {c: row.get(c) for c in EVENT_COLUMNS}


def event_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows of :func:`event_row` as the event table's columns."""
    return {c: [row[c] for row in rows] for c in EVENT_COLUMNS}


def event_rows(events: list[Any], received_at: datetime | None = None) -> dict[str, list[Any]]:
    """The events as the event table's columns (:func:`event_row`), received at
    ``received_at`` (default: now)."""
    now = received_at or datetime.now(UTC).replace(tzinfo=None)
    return event_columns([event_row(event, now) for event in events])
