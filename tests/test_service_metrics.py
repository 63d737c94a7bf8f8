"""GET /metrics (custval.api.metrics): requests and errors by route template and status, the
latency histogram, predictions by class, the served version; no customer id in any label;
off with --no-metrics."""

# ruff: noqa: F811  (the fixtures of tests/test_api.py are imported, then named as parameters)
from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from custval.api.app import ServiceSettings
from tests.test_api import (  # noqa: F401  (fixtures)
    Service,
    Trained,
    customers,
    service,
    start,
    trained,
)


def samples(svc: Service) -> list[Any]:
    with svc.client(None) as anonymous:
        r = anonymous.get("/metrics")
    assert r.status_code == 200, r.text
    return [s for f in text_string_to_metric_families(r.text) for s in f.samples]


def value(found: list[Any], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in found
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_count_by_route_and_class_without_customer_ids(
    service: Service, trained: Trained
) -> None:
    before = samples(service)
    batch = customers(trained, 7)
    with service.client("read") as reader:
        answer = reader.post("/v1/predict", json={"customers": batch}).json()
        known = batch[0]["customer_id"]
        assert reader.get(f"/v1/customers/{known}").status_code == 200
        assert reader.get("/v1/customers/no-such-customer-4711").status_code == 404
        assert reader.get("/v1/nothing-here/4712").status_code == 404
    with service.client(None) as anonymous:
        assert anonymous.post("/v1/predict", json={"customers": batch}).status_code == 401
    after = samples(service)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"endpoint": "/v1/predict", "method": "POST", "status": "200"}
    assert delta("custval_requests_total", **ok) == 1
    assert delta("custval_request_errors_total", endpoint="/v1/predict", status="401") == 1
    route = "/v1/customers/{customer_id}"
    assert delta("custval_requests_total", endpoint=route, status="200") == 1
    assert delta("custval_request_errors_total", endpoint=route, status="404") == 1
    assert delta("custval_request_errors_total", endpoint="unmatched", status="404") == 1
    # predictions by class: the answer's classes, under the model's words
    high = sum(p["value_class"] for p in answer["predictions"])
    assert delta("custval_predictions_total", **{"class": "high value"}) == high
    assert delta("custval_predictions_total", **{"class": "low value"}) == 7 - high
    assert delta("custval_request_seconds_count", endpoint="/v1/predict") == 2
    assert value(after, "custval_model_info", version=trained.versions[0]) == 1
    # no customer id (nor any path a client sent) in any label
    labels = {v for s in after for v in s.labels.values()}
    ids = {c["customer_id"] for c in batch} | {"no-such-customer-4711", "4712"}
    assert not any(i in label for i in ids for label in labels)


def test_metrics_can_be_turned_off(trained: Trained, start: Any) -> None:
    svc = start(
        ServiceSettings(models_dir=trained.models, model=trained.versions[0], metrics=False)
    )
    with svc.client(None) as anonymous:
        r = anonymous.get("/metrics")
    assert r.status_code == 404 and "no-metrics" in r.json()["detail"]
