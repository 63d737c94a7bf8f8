"""The REST service over real HTTP: uvicorn on 127.0.0.1 in a thread, an HTTP client.

One small company is trained and scored into a DuckDB store once; the service serves that
model and store. Covered: keys and scopes, validation (422 naming the field and the customer),
batch and body limits (413), parity with `custval score`, stored customers, models and the
switch of model under load with no failed request.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn

from custval import flows
from custval.api.app import ServiceSettings, create_app
from custval.api.keys import new_key
from custval.config import load_project
from custval.data.synth import generate
from custval.store import open_store
from tests.factories import built_once, wait_ready


@dataclass
class Trained:
    config: Path
    models: Path
    store: Path
    versions: list[str]
    features: Any  # the feature table at as-of (pandas)
    run_id: str


def _train(root: Path) -> None:
    """A company of 1,500 customers, two model versions (LightGBM, then logistic) and a store
    scored with the first; what :func:`trained` reads back, in ``trained.json``."""
    company = generate(1500, root / "co", seed=21, fmt="parquet")
    project = load_project(company.config_path)
    prepared = flows.prepare(project)
    models = root / "models"
    first = flows.train_value(
        project, prepared=prepared, out_dir=models, candidates=("lightgbm",), folds=3
    )
    time.sleep(1.1)  # versions are UTC seconds
    second = flows.train_value(
        project, prepared=prepared, out_dir=models, candidates=("logistic",), folds=3
    )
    result = flows.score(
        project,
        store_url=root / "store.duckdb",
        models_dir=models,
        model_version=first.folder.name,
        prepared=prepared,
    )
    flows.features(project, prepared).to_pyarrow().to_pandas().to_parquet(root / "features.parquet")
    meta = {"versions": [first.folder.name, second.folder.name], "run_id": result.run_id}
    (root / "trained.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def trained(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The trained company, made once per test run (tests/test_service_strict.py uses it too)
    and copied for this module: its services write into their store."""
    root = tmp_path_factory.mktemp("api")
    shutil.copytree(built_once(shared_dir, "api-trained", _train), root, dirs_exist_ok=True)
    meta = json.loads((root / "trained.json").read_text())
    return Trained(
        root / "co" / "custval.toml",
        root / "models",
        root / "store.duckdb",
        meta["versions"],
        pd.read_parquet(root / "features.parquet"),
        meta["run_id"],
    )


@dataclass
class Service:
    url: str
    read: str
    admin: str
    settings: ServiceSettings

    def client(self, key: str | None = "read") -> httpx.Client:
        headers = {}
        if key is not None:
            headers["Authorization"] = (
                f"Bearer {getattr(self, key) if key in ('read', 'admin') else key}"
            )
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def start(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []
    read, read_key = new_key("tests", "read")
    admin, admin_key = new_key("ops", "admin")
    monkeypatch.setenv("CUSTVAL_API_KEYS", f"{read_key.entry},{admin_key.entry}")

    def run(settings: ServiceSettings) -> Service:
        app = create_app(settings)
        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.02)
        servers.append((server, thread))
        return Service(f"http://127.0.0.1:{port}", read, admin, settings)

    yield run
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def service(trained: Trained, start: Any) -> Service:
    return start(
        ServiceSettings(
            models_dir=trained.models,
            model=trained.versions[0],
            store=str(trained.store),
            batch_limit=50,
            max_body_bytes=200_000,
        )
    )


def customers(trained: Trained, n: int, start: int = 0) -> list[dict[str, Any]]:
    """Feature rows as a client sends them: NaN as null."""
    model = json.loads((trained.models / trained.versions[0] / "manifest.json").read_text())
    cols = model["schema"]["numeric"] + list(model["schema"]["categorical"])
    rows = trained.features.iloc[start : start + n]
    out = []
    for _, row in rows.iterrows():
        item: dict[str, Any] = {"customer_id": str(row["customer_id"])}
        for c in cols:
            v = row[c]
            item[c] = (
                None
                if v is None or (isinstance(v, float) and np.isnan(v))
                else (v if isinstance(v, str) else float(v))
            )
        out.append(item)
    return out


# ---- security ------------------------------------------------------------------------------


def test_keys_and_scopes(service: Service, trained: Trained) -> None:
    with service.client(None) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert anonymous.get("/readyz").json()["model_version"] == trained.versions[0]
        r = anonymous.post("/v1/predict", json={"customers": customers(trained, 1)})
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/v1/models").status_code == 401
    with service.client("cv_not-a-real-key") as wrong:
        assert wrong.get("/v1/models").status_code == 401
    with service.client("read") as reader:
        assert reader.get("/v1/models").status_code == 200
        r = reader.post(f"/v1/models/{trained.versions[1]}/activate")
        assert r.status_code == 403 and "scope 'read'" in r.json()["detail"]
    # CORS is off unless configured: no CORS header for a browser origin
    with service.client("read") as reader:
        r = reader.get("/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_a_service_without_keys_refuses_to_start(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    from custval.errors import CustvalError

    monkeypatch.setenv("CUSTVAL_API_KEYS", "")
    with pytest.raises(CustvalError, match="no API keys"):
        create_app(ServiceSettings(models_dir=trained.models))


# ---- validation -----------------------------------------------------------------------------


def test_bad_input_is_a_4xx_naming_the_field_and_the_customer(
    service: Service, trained: Trained
) -> None:
    good = customers(trained, 3)
    feature = next(k for k, v in good[2].items() if k != "customer_id" and isinstance(v, float))
    with service.client() as c:
        missing = [good[0], good[1], {k: v for k, v in good[2].items() if k != feature}]
        r = c.post("/v1/predict", json={"customers": missing})
        assert r.status_code == 422
        body = r.json()
        assert body["errors"][0]["customer_index"] == 2
        assert body["errors"][0]["field"] == f"customers[2].{feature}"
        assert f"customers[2].{feature}" in body["detail"]
        wrong_type = [dict(good[0], **{feature: "lots"})]
        r = c.post("/v1/predict", json={"customers": wrong_type})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == f"customers[0].{feature}"
        assert "lots" not in r.text  # values are not echoed
        # a field the model does not take is ignored and named in the answer's warnings; a
        # misspelt feature fails as the feature it stands for is then missing
        unknown = [dict(good[0], tenure_dayz=3)]
        r = c.post("/v1/predict", json={"customers": unknown})
        assert r.status_code == 200 and r.json()["warnings"][0]["field"] == "tenure_dayz"
        misspelt = [{("tenure_dayz" if k == feature else k): v for k, v in good[0].items()}]
        r = c.post("/v1/predict", json={"customers": misspelt})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == f"customers[0].{feature}"
        for body_text in (b"{not json", b"", b"[]", b'{"customers": []}', b'{"customers": 5}'):
            r = c.post(
                "/v1/predict", content=body_text, headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 422, body_text
            assert "detail" in r.json()
        # numbers no customer has (and that would overflow a linear model) are refused
        r = c.post("/v1/predict", json={"customers": [dict(good[0], **{feature: 1e300})]})
        assert r.status_code == 422 and r.json()["errors"][0]["customer_index"] == 0
        # a BTYD summary that cannot be (recency after T) is named, not a 500 or a NaN
        buyer = next(x for x in customers(trained, 200) if x["T"] is not None and x["T"] > 1)
        broken = dict(buyer, recency=buyer["T"] + 5)
        r = c.post("/v1/predict", json={"customers": [good[0], broken]})
        assert r.status_code == 422 and r.json()["errors"][0]["customer_index"] == 1
        assert str(buyer["T"] + 5) not in r.text
        # a categorical value of the wrong type: one error for the field, not one per type tried
        r = c.post("/v1/predict", json={"customers": [dict(good[0], region=[1, 2])]})
        assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == [
            "customers[0].region"
        ]
        too_many = customers(trained, 51)
        r = c.post("/v1/predict", json={"customers": too_many})
        assert r.status_code == 413 and "limit is 50" in r.json()["detail"]
        huge = b'{"customers": [' + b" " * 300_000 + b"]}"
        r = c.post("/v1/predict", content=huge, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "200,000 bytes" in r.json()["detail"]
        assert c.get("/v1/models/..%2F..%2Fetc").status_code == 404
        assert c.get("/v1/models/19990101T000000Z").status_code == 404
        assert c.get("/v1/nothing-here").status_code == 404
    with service.client(None) as anonymous:
        # without a key nothing of a body is read or buffered: 401 before the size check
        r = anonymous.post(
            "/v1/predict", content=huge, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 401


# ---- parity and content ---------------------------------------------------------------------


def test_predictions_equal_the_stored_run(service: Service, trained: Trained) -> None:
    batch = customers(trained, 40, start=100)
    with service.client() as c:
        r = c.post("/v1/predict", json={"customers": batch})
        assert r.status_code == 200, r.text
        answer = r.json()
        single = c.post("/v1/predict", json={"customers": batch[:1]}).json()
    assert answer["model_version"] == trained.versions[0]
    with open_store(str(trained.store), read_only=True) as s:
        stored = {
            row[0]: row[1:]
            for row in s.query(
                "SELECT customer_id, value_probability, value_class, clv_expected "
                "FROM predictions WHERE run_id = ?",
                (trained.run_id,),
            )
        }
        reasons = s.query(
            "SELECT customer_id, rank, feature, feature_value, contribution, text FROM reasons "
            "WHERE run_id = ? ORDER BY customer_id, rank",
            (trained.run_id,),
        )
    by_customer: dict[str, list[tuple[Any, ...]]] = {}
    for row in reasons:
        by_customer.setdefault(row[0], []).append(row[2:])
    with_clv = 0
    for p in answer["predictions"]:
        prob, cls, clv = stored[p["customer_id"]]
        assert abs(p["value_probability"] - prob) <= 1e-9
        assert p["value_class"] == cls
        got = [(r["feature"], r["value"], r["text"]) for r in p["reasons"]]
        want = [(f, v, t) for f, v, _, t in by_customer[p["customer_id"]]]
        assert got == want
        for r, (_, _, contribution, _) in zip(
            p["reasons"], by_customer[p["customer_id"]], strict=True
        ):
            assert abs(r["contribution"] - contribution) <= 1e-9
        if clv is None:
            assert p["clv"] is None
        else:
            with_clv += 1
            assert p["clv"] == pytest.approx(clv, rel=1e-9)
    assert with_clv > 10
    assert single["predictions"][0] == answer["predictions"][0]


def test_stored_customer_and_models(service: Service, trained: Trained) -> None:
    cid = str(trained.features["customer_id"].iloc[7])
    with service.client() as c:
        r = c.get(f"/v1/customers/{cid}")
        assert r.status_code == 200
        body = r.json()
        assert body["customer_id"] == cid and len(body["reasons"]) == 3
        assert "segment" in body  # null: the store had no segmentation when it was scored
        assert [x["rank"] for x in body["reasons"]] == [1, 2, 3]
        assert c.get("/v1/customers/no-such-customer").status_code == 404
        listing = c.get("/v1/models").json()
        assert [m["version"] for m in listing["models"]] == sorted(trained.versions, reverse=True)
        assert listing["active"] == trained.versions[0]
        detail = c.get(f"/v1/models/{trained.versions[0]}").json()
        assert detail["model"] == "lightgbm" and detail["metrics"]["roc_auc"] > 0.6
        assert len(detail["importance"]) > 5 and "numeric" in detail["features"]


def test_model_switch_under_load_drops_no_request(service: Service, trained: Trained) -> None:
    batch = customers(trained, 5)
    failures: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with service.client() as c:
            while not stop.is_set():
                r = c.post("/v1/predict", json={"customers": batch})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    versions.append(r.json()["model_version"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    with service.client("admin") as admin:
        r = admin.post(f"/v1/models/{trained.versions[1]}/activate")
        assert r.status_code == 200, r.text
        assert r.json() == {"active": trained.versions[1], "previous": trained.versions[0]}
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not failures
    assert versions[0] == trained.versions[0] and versions[-1] == trained.versions[1]
    assert len(versions) > 20
    # the logistic model answers through the generic path, with the same reasons' shape
    with service.client() as c:
        p = c.post("/v1/predict", json={"customers": batch}).json()["predictions"][0]
        assert len(p["reasons"]) == 3 and 0 <= p["value_probability"] <= 1
        r = c.get("/readyz").json()
        assert r["model_version"] == trained.versions[1]
    # a worker that uvicorn starts again serves the active model; it does not reset it
    from custval.api.state import Registry

    assert Registry(service.settings, worker=True).active.version == trained.versions[1]
    # back, so that other tests see the first model
    with service.client("admin") as admin:
        assert admin.post(f"/v1/models/{trained.versions[0]}/activate").status_code == 200


def test_records_give_the_same_prediction_as_the_stored_run(
    service: Service, trained: Trained
) -> None:
    """The cleaned rows of a few customers, sent as raw records, score as `custval score` did."""
    project = load_project(trained.config)
    prepared = flows.prepare(project)
    buyers = trained.features[trained.features["T"].notna()]
    ids = [str(i) for i in buyers["customer_id"].iloc[[0, 5, 9]]] + [
        str(trained.features[trained.features["T"].isna()]["customer_id"].iloc[0])
    ]
    fields = {
        "transactions": "transactions",
        "web_sessions": "web_sessions",
        "product_usage": "product_usage",
        "interactions": "interactions",
        "subscriptions": "subscriptions",
        "treatments": "treatments",
    }
    payload: list[dict[str, Any]] = [{"customer_id": i} for i in ids]
    for kind, field in {"customers": "profile", **fields}.items():
        t = prepared.tables[kind]
        rows = t.filter(t.customer_id.isin(ids)).to_pandas()
        for item in payload:
            mine = rows[rows["customer_id"].astype(str) == item["customer_id"]].drop(
                columns=["customer_id"]
            )
            records = json.loads(mine.to_json(orient="records", date_format="iso"))
            item[field] = (
                records[0]
                if field == "profile" and records
                else (None if field == "profile" else records)
            )
    with service.client() as c:
        r = c.post(
            "/v1/predict/records",
            json={"as_of": project.as_of.isoformat(), "customers": payload},
        )
    assert r.status_code == 200, r.text
    with open_store(str(trained.store), read_only=True) as s:
        stored = dict(
            s.query(
                "SELECT customer_id, value_probability FROM predictions WHERE run_id = ?",
                (trained.run_id,),
            )
        )
    got = {p["customer_id"]: p["value_probability"] for p in r.json()["predictions"]}
    assert list(got) == ids
    for cid in ids:
        assert abs(got[cid] - stored[cid]) <= 1e-9, cid


def test_schemathesis_finds_no_server_error(
    service: Service, trained: Trained, tmp_path: Path
) -> None:
    """A bounded property-based run over every operation of the OpenAPI spec: valid and invalid
    bodies, paths and headers; no answer may be a 5xx."""
    import subprocess
    import sys

    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{service.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--generation-deterministic",
            "--request-timeout",
            "30",
            "--header",
            f"Authorization: Bearer {service.admin}",
            # the activate operation would switch the model; it is tested on its own
            "--exclude-path-regex",
            "activate",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=tmp_path,  # its example cache goes there, not into the working tree
        env={**__import__("os").environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # every operation but the excluded one was exercised (the recommend ones, which answer 404
    # without offers in the store, with offers in tests/test_actions.py; GET /v1/forecasts,
    # 404 without a forecast run, with one in tests/test_forecast_store.py; GET /metrics)
    assert "Tested: 15" in done.stdout, done.stdout[-3000:]


def test_keys_kept_in_the_store_and_logged_predictions(
    trained: Trained, start: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL: a key kept (hashed) in the store's api_keys opens the service, and
    --log-predictions writes what was served to the store as runs of kind 'online'."""
    import uuid

    import psycopg

    schema = f"custval_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}"
    try:
        key, stored = new_key("crm-screen", "read")
        with open_store(url) as s:
            s.add_api_key(stored.name, stored.scope, stored.sha256)
            assert s.query("SELECT sha256 FROM api_keys") == [(stored.sha256,)]  # no key text
        monkeypatch.setenv("CUSTVAL_API_KEYS", "")  # the store's key only
        svc = start(
            ServiceSettings(
                models_dir=trained.models,
                model=trained.versions[0],
                store=url,
                log_predictions=True,
            )
        )
        answers = {}
        with svc.client(key) as c:
            assert c.get("/v1/customers/anyone").status_code == 404  # no scoring run yet
            for i in range(3):
                r = c.post("/v1/predict", json={"customers": customers(trained, 5, start=5 * i)})
                assert r.status_code == 200, r.text
                answers.update({p["customer_id"]: p for p in r.json()["predictions"]})
        with svc.client("cv_wrong") as c:
            assert c.get("/v1/models").status_code == 401
        deadline = time.monotonic() + 20
        rows: list[tuple[Any, ...]] = []
        while time.monotonic() < deadline and len(rows) < 15:
            time.sleep(0.5)
            with open_store(url) as s:
                rows = s.query(
                    "SELECT p.customer_id, p.value_probability, r.model_version FROM predictions p "
                    "JOIN runs r ON r.run_id = p.run_id WHERE r.kind = 'online' "
                    "AND r.status = 'succeeded'"
                )
        assert len(rows) == 15
        for cid, prob, version in rows:
            assert prob == answers[cid]["value_probability"] and version == trained.versions[0]
        with open_store(url) as s:
            texts = dict(s.query("SELECT customer_id, text FROM reasons WHERE rank = 1", ()))
        assert all(texts[c] == a["reasons"][0]["text"] for c, a in answers.items())
    finally:
        with psycopg.connect(pg_url, autocommit=True) as con:
            con.execute(f"DROP SCHEMA {schema} CASCADE")


def scrape(url: str) -> dict[tuple[str, str | None, str | None], float]:
    """GET /metrics, as (sample, endpoint or version, status): value; predictions summed over
    their classes under (name, None, None)."""
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(f"{url}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    found: dict[tuple[str, str | None, str | None], float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name == "custval_predictions_total":
                key: tuple[str, str | None, str | None] = (s.name, None, None)
                found[key] = found.get(key, 0.0) + s.value
            elif s.name == "custval_model_info":
                found[(s.name, s.labels["version"], None)] = s.value
            elif s.name == "custval_requests_total":
                key = (s.name, s.labels["endpoint"], s.labels["status"])
                found[key] = found.get(key, 0.0) + s.value
    return found


def test_every_worker_follows_a_model_switch(trained: Trained) -> None:
    """`custval serve --workers 2`: one worker takes the activation, the other follows the
    models folder's ACTIVE file within seconds; no request fails on the way; /metrics counts
    both workers' requests and names the version they serve."""
    import os
    import subprocess
    import sys

    read, read_key = new_key("tests", "read")
    admin, admin_key = new_key("ops", "admin")
    port = free_port()
    env = {**os.environ, "CUSTVAL_API_KEYS": f"{read_key.entry},{admin_key.entry}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "custval",
            "serve",
            "--models",
            str(trained.models),
            "--model",
            trained.versions[0],
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    batch = {"customers": customers(trained, 2)}

    def versions(n: int) -> list[str]:
        # a new connection per request: the kernel spreads them over both workers
        out = []
        for _ in range(n):
            r = httpx.post(
                f"{url}/v1/predict",
                json=batch,
                headers={"Authorization": f"Bearer {read}"},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            out.append(r.json()["model_version"])
        return out

    try:
        wait_ready(url)
        assert set(versions(20)) == {trained.versions[0]}
        # /metrics adds up both workers' counts, whichever answers the scrape (a request is
        # counted as its answer leaves: a moment for the last one)
        deadline = time.monotonic() + 5
        while scrape(url)[("custval_requests_total", "/v1/predict", "200")] < 20:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for _ in range(4):
            counts = scrape(url)
            assert counts[("custval_requests_total", "/v1/predict", "200")] == 20
            assert counts[("custval_predictions_total", None, None)] == 40
        r = httpx.post(
            f"{url}/v1/models/{trained.versions[1]}/activate",
            headers={"Authorization": f"Bearer {admin}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 15
        seen = versions(10)
        while time.monotonic() < deadline and set(seen[-20:]) != {trained.versions[1]}:
            seen += versions(10)
        assert set(seen[-20:]) == {trained.versions[1]}
        served = scrape(url)
        assert served[("custval_model_info", trained.versions[1], None)] == 1
        assert served[("custval_model_info", trained.versions[0], None)] == 0
        # put the first model back for the other tests
        r = httpx.post(
            f"{url}/v1/models/{trained.versions[0]}/activate",
            headers={"Authorization": f"Bearer {admin}"},
            timeout=30,
        )
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_segment_endpoint_places_customers_as_the_stored_run(trained: Trained, start: Any) -> None:
    from custval.flows.segmentation import store_segments

    project = load_project(trained.config)
    table = flows.segment_features(project, flows.prepare(project))
    result = flows.segment_table(table, k=3, seed=0)
    run_id = store_segments(result, str(trained.store), project.as_of)
    svc = start(
        ServiceSettings(
            models_dir=trained.models, model=trained.versions[0], store=str(trained.store)
        )
    )
    with svc.client() as c:
        info = c.get("/v1/segments").json()
        assert info["run_id"] == run_id and len(info["segments"]) == 3
        features = info["features"]
        rows = table.iloc[:30]
        body = {
            "customers": [
                {
                    "customer_id": str(r["customer_id"]),
                    **{f: None if r[f] != r[f] else float(r[f]) for f in features},
                }
                for r in rows.to_dict("records")
            ]
        }
        r = c.post("/v1/segment", json=body)
        assert r.status_code == 200, r.text
        got = [s["segment"] for s in r.json()["segments"]]
        assert got == result.customers["segment"].iloc[:30].tolist()
        names = {s["name"] for s in r.json()["segments"]}
        assert names <= set(result.profiles["name"])
        broken = [dict(body["customers"][0]), dict(body["customers"][1])]
        del broken[1][features[0]]
        r = c.post("/v1/segment", json={"customers": broken})
        assert r.status_code == 422 and r.json()["errors"][0]["customer_index"] == 1
        r = c.post("/v1/segment", json={"customers": [dict(broken[0], **{features[0]: "x"})]})
        assert r.status_code == 422


def test_a_machine_learned_clv_is_served_as_the_run_stored_it(trained: Trained, start: Any) -> None:
    """A run scored with [clv] method = hybrid keeps its spend model; the service loads it and
    answers the CLV the run stored (not the BTYD one), and the run keeps the CLV's reasons."""
    from custval.config import ClvOptions

    project = load_project(trained.config)
    project = project.model_copy(update={"clv": ClvOptions(method="hybrid")})
    store = trained.store.with_name("hybrid.duckdb")
    result = flows.score(
        project, store_url=store, models_dir=trained.models, model_version=trained.versions[0]
    )
    assert result.clv_method == "hybrid"
    with open_store(str(store), read_only=True) as s:
        stored = dict(
            s.query(
                "SELECT customer_id, clv_expected FROM predictions WHERE run_id = ?",
                (result.run_id,),
            )
        )
        saved = s.latest_clv_models()
        assert saved is not None and saved["method"] == "hybrid"
        assert saved["spend_model"]["serving"]["carry"] is None  # today's window is the horizon
        assert s.run_file(result.run_id, saved["spend_model"]["file"])
        reasons = s.query(
            "SELECT COUNT(DISTINCT customer_id), MIN(rank), MAX(rank) FROM clv_reasons "
            "WHERE run_id = ?",
            (result.run_id,),
        )[0]
    assert reasons == (len(stored), 1, 3)
    svc = start(
        ServiceSettings(models_dir=trained.models, model=trained.versions[0], store=str(store))
    )
    batch = customers(trained, 40, start=200)
    with svc.client() as c:
        r = c.post("/v1/predict", json={"customers": batch})
    assert r.status_code == 200, r.text
    got = {p["customer_id"]: p["clv"] for p in r.json()["predictions"]}
    # every customer has a machine-learned CLV, those who never bought too
    assert all(v is not None for v in got.values())
    assert [got[k] for k in got] == pytest.approx([stored[k] for k in got], rel=1e-9)
    # a model file that cannot be loaded: the service starts and answers, without a CLV
    with open_store(str(store)) as s:
        s._execute("UPDATE run_files SET sha256 = 'damaged' WHERE run_id = ?", (result.run_id,))
    broken = start(
        ServiceSettings(models_dir=trained.models, model=trained.versions[0], store=str(store))
    )
    with broken.client() as c:
        r = c.post("/v1/predict", json={"customers": batch})
    assert r.status_code == 200, r.text
    assert all(p["clv"] is None and p["value_probability"] >= 0 for p in r.json()["predictions"])
