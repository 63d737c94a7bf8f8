"""``GET /metrics``: the service's own figures in the Prometheus text format
(``prometheus-client``).

- ``custval_requests_total{endpoint, method, status}``: requests answered;
- ``custval_request_errors_total{endpoint, status}``: those answered 4xx or 5xx;
- ``custval_request_seconds{endpoint}``: a latency histogram;
- ``custval_predictions_total{class}``: customers predicted, by the value class's name;
- ``custval_model_info{version}``: 1 for the model version a worker serves.

``endpoint`` is the route's template (``/v1/customers/{customer_id}``), never the path a
request came with, so that no customer id appears in any label; a path that matches no route
is ``unmatched``. With several workers (``custval serve --workers N``), each writes its figures
to files in ``PROMETHEUS_MULTIPROC_DIR`` (set by ``custval serve`` before they start) and
``/metrics`` adds them up, whichever worker answers (prometheus-client's multiprocess mode).
The middleware is a plain ASGI wrapper: a few microseconds a request (``bench/serve.py``
measures the cost).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = ["CONTENT_TYPE", "MetricsMiddleware", "exposition", "predicted", "serving"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("custval_requests", "Requests answered", ("endpoint", "method", "status"))
ERRORS = Counter(
    "custval_request_errors", "Requests answered with a 4xx or 5xx", ("endpoint", "status")
)
LATENCY = Histogram(
    "custval_request_seconds",
    "Time to answer a request, from its start to its last byte",
    ("endpoint",),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PREDICTIONS = Counter("custval_predictions", "Customers predicted, by value class", ("class",))
MODEL = Gauge(
    "custval_model_info",
    "1 for the model version served (the highest of the live workers)",
    ("version",),
    multiprocess_mode="livemax",
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class MetricsMiddleware:
    """Counts and times every HTTP request by its route's template and its status."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception before any answer

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            code = str(status)
            REQUESTS.labels(endpoint, scope.get("method", ""), code).inc()
            if status >= 400:
                ERRORS.labels(endpoint, code).inc()
            LATENCY.labels(endpoint).observe(time.perf_counter() - start)


def predicted(class_names: Any, classes: Any) -> None:
    """Count the customers of one answer by class (``classes``: 0/1 per customer)."""
    high = int(sum(int(c) for c in classes))
    low = len(classes) - high
    if high:
        PREDICTIONS.labels(str(class_names[1])).inc(high)
    if low:
        PREDICTIONS.labels(str(class_names[0])).inc(low)


_served: list[str] = []


def serving(version: str) -> None:
    """The model version this worker serves now (the previous one set to 0)."""
    for old in _served:
        MODEL.labels(old).set(0)
    _served[:] = [version]
    MODEL.labels(version).set(1)


def exposition() -> bytes:
    """The text a scrape gets: this process's figures, or all workers' in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return bytes(generate_latest(registry))
    return bytes(generate_latest(REGISTRY))
