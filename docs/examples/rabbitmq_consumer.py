"""A queue consumer that feeds custval's real-time state: RabbitMQ (pika) here; a Kafka consumer
has the same shape (poll a batch, ingest it, commit the offsets).

Each message is one event or ``{"events": [...]}``, as ``POST /v1/events`` takes it. The
consumer takes up to ``prefetch`` messages, applies them in one transaction with
:func:`custval.flows.realtime.ingest` (the function behind the HTTP route), and only then
acknowledges them: a crash before the commit redelivers them, and a redelivered event is a no-op
(its ``event_id`` is applied already). A message the state refuses (a refund larger than the
customer's spend, an event id reused) or that is no event at all goes to the dead-letter queue
with the reason, and is acknowledged: retrying it would fail the same way.

Run: python docs/examples/rabbitmq_consumer.py STORE_URL [AMQP_URL] [QUEUE]
(tests/test_realtime.py runs it against the local broker).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pika
from pydantic import ValidationError

from custval.data.events import EventBatch
from custval.flows.realtime import IngestError, ingest
from custval.store import open_store


def batch_of(body: bytes) -> EventBatch:
    """A message's events: one event, or {"events": [...]}."""
    data = json.loads(body)
    return EventBatch.model_validate(data if "events" in data else {"events": [data]})


def consume(
    store_url: str,
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F",
    queue: str = "custval-events",
    *,
    prefetch: int = 200,
    idle_seconds: float | None = None,
) -> dict[str, int]:
    """Consume ``queue`` into the store until stopped (or, with ``idle_seconds``, until the
    queue has been empty that long); returns the counts of messages applied, duplicated and
    dead-lettered."""
    counts = {"applied": 0, "duplicates": 0, "dead": 0}
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)
    channel.queue_declare(queue=f"{queue}.dead", durable=True)
    channel.basic_qos(prefetch_count=prefetch)
    with open_store(store_url) as store:
        messages = channel.consume(queue, inactivity_timeout=0.2)
        idle = 0.0
        while True:
            pending: list[tuple[Any, bytes]] = []
            for method, _props, body in messages:
                if method is None:  # nothing for 0.2 s: apply what we have
                    break
                pending.append((method, body))
                if len(pending) >= prefetch:
                    break
            if not pending:
                idle += 0.2
                if idle_seconds is not None and idle >= idle_seconds:
                    break
                continue
            idle = 0.0
            _apply(store, channel, queue, pending, counts)
        channel.cancel()
    connection.close()
    return counts


def _apply(
    store: Any, channel: Any, queue: str, pending: list[tuple[Any, bytes]], counts: dict
) -> None:
    """The pending messages in one transaction; acknowledged after it commits."""
    batches, kept = [], []
    for method, body in pending:
        try:
            batches.append(batch_of(body))
            kept.append((method, body))
        except (ValueError, ValidationError) as exc:  # not an event: no retry will make it one
            what = "not an event" if isinstance(exc, ValidationError) else "not JSON"
            _dead(channel, queue, body, f"{what}: {str(exc).splitlines()[0]}")
            counts["dead"] += 1
    outcomes = ingest(store, batches) if batches else []
    for (_method, body), outcome in zip(kept, outcomes, strict=True):
        if isinstance(outcome, IngestError):
            _dead(channel, queue, body, str(outcome))
            counts["dead"] += 1
        else:
            counts["applied"] += outcome.applied
            counts["duplicates"] += outcome.duplicates
    # one acknowledgement for everything up to the last message: all of it is in the store
    channel.basic_ack(delivery_tag=pending[-1][0].delivery_tag, multiple=True)


def _dead(channel: Any, queue: str, body: bytes, reason: str) -> None:
    channel.basic_publish(
        exchange="",
        routing_key=f"{queue}.dead",
        body=body,
        properties=pika.BasicProperties(headers={"reason": reason[:500]}, delivery_mode=2),
    )


if __name__ == "__main__":
    print(consume(*sys.argv[1:4]))
