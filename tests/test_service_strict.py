"""The service is strict about what it scores and friendly about what it says (issue 16, item 6).

Over real HTTP (uvicorn in a thread, or `custval serve` in a subprocess) on the model and store
of tests/test_api.py's company: wrong types and non-finite or huge numbers are a 422 naming the
field, what was expected and what came (never a 200, never a 500); record errors count the
request's rows and speak to API clients; ids are trimmed and upper-cased; a row of the feature
table scores, its extra columns listed as warnings; /v1/segment computes the CLV it needs;
/docs and /redoc load nothing from the internet; API keys are listed and revoked; `serve` says
"serving" only once the port is bound.
"""

# ruff: noqa: F811  (the fixtures of tests/test_api.py are imported, then named as parameters)
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from custval import flows
from custval.api.app import ServiceSettings
from custval.api.keys import new_key
from custval.config import load_project
from tests.factories import run
from tests.test_api import (  # noqa: F401  (fixtures)
    Service,
    Trained,
    customers,
    free_port,
    service,
    start,
    trained,
)

# ---- helpers --------------------------------------------------------------------------------


def schema(trained: Trained) -> dict[str, Any]:
    manifest = json.loads((trained.models / trained.versions[0] / "manifest.json").read_text())
    return dict(manifest["schema"])


def with_token(row: dict[str, Any], field: str, token: str) -> bytes:
    """A request body with ``token`` (NaN, Infinity: JSON no serializer writes) in ``field``."""
    text = json.dumps({"customers": [dict(row, **{field: "__TOKEN__"})]})
    return text.replace('"__TOKEN__"', token).encode()


def post_raw(c: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return c.post(path, content=body, headers={"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def records(trained: Trained) -> dict[str, Any]:
    """Raw records of a few customers, as /v1/predict/records takes them, and the as-of date."""
    project = load_project(trained.config)
    prepared = flows.prepare(project)
    buyers = trained.features[trained.features["T"].notna()]
    ids = [str(i) for i in buyers["customer_id"].iloc[[0, 5]]]
    payload: list[dict[str, Any]] = [{"customer_id": i} for i in ids]
    kinds = (
        "transactions",
        "web_sessions",
        "product_usage",
        "interactions",
        "subscriptions",
        "treatments",
    )
    for kind, field in {"customers": "profile", **{k: k for k in kinds}}.items():
        t = prepared.tables[kind]
        rows = t.filter(t.customer_id.isin(ids)).to_pandas()
        for item in payload:
            mine = rows[rows["customer_id"].astype(str) == item["customer_id"]]
            got = json.loads(
                mine.drop(columns=["customer_id"]).to_json(orient="records", date_format="iso")
            )
            item[field] = (got[0] if got else None) if field == "profile" else got
    return {"as_of": project.as_of.isoformat(), "customers": payload}


# ---- 1. strict types ------------------------------------------------------------------------


def test_a_boolean_for_a_number_or_a_number_for_a_category_is_a_422_naming_all(
    service: Service, trained: Trained
) -> None:
    good = customers(trained, 1)[0]
    numeric = next(c for c in schema(trained)["numeric"] if good[c] is not None)
    category = next(iter(schema(trained)["categorical"]))
    with service.client() as c:
        assert c.post("/v1/predict", json={"customers": [good]}).status_code == 200
        for value in (True, False):
            r = c.post("/v1/predict", json={"customers": [dict(good, **{numeric: value})]})
            assert r.status_code == 422, r.text  # the old service scored true as 1.0
            error = r.json()["errors"][0]
            assert error["field"] == f"customers[0].{numeric}"
            assert error["customer_index"] == 0
            assert error["expected"] == "a number or null"
            assert error["got"] == f"the boolean {str(value).lower()}"
            assert r.json()["detail"] == (
                f"customers[0].{numeric}: a number or null is needed, "
                f"not the boolean {str(value).lower()}"
            )
        r = c.post("/v1/predict", json={"customers": [dict(good, **{category: 42})]})
        assert r.status_code == 422, r.text  # the old service took 42 as the category "42"
        error = r.json()["errors"][0]
        assert (error["field"], error["expected"], error["got"]) == (
            f"customers[0].{category}",
            "text or null",
            "the number 42",
        )
        # text where a number goes is refused, and not echoed (it may be a name)
        r = c.post("/v1/predict", json={"customers": [dict(good, **{numeric: "Ann Smith"})]})
        assert r.status_code == 422 and r.json()["errors"][0]["got"] == "text"
        assert "Ann Smith" not in r.text


@pytest.mark.parametrize(
    ("token", "got"),
    [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e300", "1e+300")],
)
def test_non_finite_and_huge_numbers_are_a_422(
    service: Service, trained: Trained, token: str, got: str
) -> None:
    good = customers(trained, 1)[0]
    numeric = next(c for c in schema(trained)["numeric"] if good[c] is not None)
    with service.client() as c:
        r = post_raw(c, "/v1/predict", with_token(good, numeric, token))
    assert r.status_code == 422, r.text
    error = r.json()["errors"][0]
    assert error["field"] == f"customers[0].{numeric}"
    assert got in error["got"]


@pytest.mark.parametrize(
    ("token", "got"),
    [
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("1e300", "the number 1e+300"),
        ("2e12", "the number 2e+12"),
        ("true", "the boolean true"),
    ],
)
def test_records_refuse_amounts_that_are_not_finite_bounded_numbers(
    service: Service, records: dict[str, Any], token: str, got: str
) -> None:
    """The old service scored these (a reason read "Spend ...: inf"); the bound is 1e12."""
    body = json.loads(json.dumps(records))
    body["customers"][1]["transactions"][0]["amount"] = "__TOKEN__"
    text = json.dumps(body).replace('"__TOKEN__"', token).encode()
    with service.client() as c:
        r = post_raw(c, "/v1/predict/records", text)
    assert r.status_code == 422, r.text[:500]
    error = r.json()["errors"][0]
    assert error["field"] == "customers[1].transactions[0].amount"
    assert error["customer_index"] == 1
    assert error["got"] == got
    assert error["expected"] == "a finite number within ±1e+12"


# ---- 3. record errors for API clients -------------------------------------------------------


def test_a_record_error_counts_the_request_rows_and_names_the_field(
    service: Service, records: dict[str, Any]
) -> None:
    body = json.loads(json.dumps(records))
    customer = body["customers"][0]
    customer["transactions"] = [dict(customer["transactions"][0], timestamp="not a date")]
    with service.client() as c:
        r = c.post("/v1/predict/records", json=body)
    assert r.status_code == 422, r.text[:500]
    detail = r.json()["detail"]
    error = r.json()["errors"][0]
    assert error["field"] == "customers[0].transactions[0].timestamp"
    assert error["customer_index"] == 0
    # one row sent, one row counted (the old message said "1 of 2 rows", counting a
    # placeholder of the service's own)
    assert "row 1 of 1 has" in detail, detail
    assert "custval.toml" not in r.text and "ISO 8601" in detail
    # a row without a required column was dropped by the cleaning, and the customer scored
    # as if it did not exist: now it is named
    customer["transactions"] = [{"amount": 12.5, "order_id": "A1"}]
    with service.client() as c:
        r = c.post("/v1/predict/records", json=body)
    assert r.status_code == 422, r.text[:500]
    assert r.json()["detail"] == "customers[0].transactions[0].timestamp: Field required"


# ---- 4. ids as the cleaning keeps them ------------------------------------------------------


def test_ids_are_trimmed_and_upper_cased_as_the_cleaning_does(
    service: Service, trained: Trained, records: dict[str, Any]
) -> None:
    row = customers(trained, 1, start=3)[0]
    cid = row["customer_id"]
    assert cid == cid.strip().upper() and cid.lower() != cid
    with service.client() as c:
        stored = c.get(f"/v1/customers/{cid}")
        assert stored.status_code == 200
        r = c.get(f"/v1/customers/%20{cid.lower()}%20")
        assert r.status_code == 200, r.text  # the old service answered 404
        assert r.json() == stored.json()
        exact = c.post("/v1/predict", json={"customers": [row]}).json()["predictions"][0]
        loose = c.post(
            "/v1/predict", json={"customers": [dict(row, customer_id=f"  {cid.lower()} ")]}
        ).json()["predictions"][0]
        assert loose == exact and loose["customer_id"] == cid
        body = json.loads(json.dumps(records))
        wanted = [x["customer_id"] for x in body["customers"]]
        for x in body["customers"]:
            x["customer_id"] = f" {x['customer_id'].lower()}"
        r = c.post("/v1/predict/records", json=body)
        assert r.status_code == 200, r.text[:500]
        assert [p["customer_id"] for p in r.json()["predictions"]] == wanted


# ---- 5. a row of the feature table scores ---------------------------------------------------


def _json_row(row: pd.Series) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT:
            out[str(k)] = None
        elif isinstance(v, np.generic):
            out[str(k)] = v.item()
        elif isinstance(v, pd.Timestamp):
            out[str(k)] = v.isoformat()
        else:
            out[str(k)] = v if isinstance(v, bool | int | float | str) else str(v)
    return out


def test_a_feature_table_row_scores_with_warnings_for_what_the_model_dropped(
    service: Service, trained: Trained
) -> None:
    full = _json_row(trained.features.iloc[3])
    taken = set(schema(trained)["numeric"]) | set(schema(trained)["categorical"])
    dropped = sorted(set(full) - taken - {"customer_id"})
    assert dropped, "the feature table has columns the model does not take"
    with service.client() as c:
        clean = c.post("/v1/predict", json={"customers": customers(trained, 1, start=3)}).json()
        r = c.post("/v1/predict", json={"customers": [full, dict(full, tenure_dayz=3)]})
    assert r.status_code == 200, r.text[:800]  # the old service refused the extra columns
    body = r.json()
    got, want = body["predictions"][0], clean["predictions"][0]
    assert {k: v for k, v in got.items() if k != "clv"} == {
        k: v for k, v in want.items() if k != "clv"
    }
    assert got["clv"] == pytest.approx(want["clv"], rel=1e-12)  # a batch of two, not one
    assert clean["warnings"] == []
    warned = {w["field"]: w for w in body["warnings"]}
    assert sorted(set(warned) - {"tenure_dayz"}) == dropped
    first = warned[dropped[0]]
    assert first["customers"] == 2 and "does not use" in first["message"]
    assert warned["tenure_dayz"]["customers"] == 1
    assert "check its spelling" in warned["tenure_dayz"]["message"]


# ---- 6. /v1/segment computes its CLV --------------------------------------------------------


def test_segment_computes_the_clv_from_the_features_given(trained: Trained, start: Any) -> None:
    from custval.columns import SUMMARY_COLUMNS
    from custval.flows.segmentation import store_segments

    project = load_project(trained.config)
    table = flows.segment_features(project, flows.prepare(project))
    result = flows.segment_table(table, k=3, seed=0)
    store_segments(result, str(trained.store), project.as_of)
    svc = start(
        ServiceSettings(
            models_dir=trained.models, model=trained.versions[0], store=str(trained.store)
        )
    )
    with svc.client() as c:
        features = c.get("/v1/segments").json()["features"]
        assert "clv" in features
        rows = table.iloc[:40]
        sent = [f for f in features if f != "clv"] + [
            f for f in SUMMARY_COLUMNS if f not in features
        ]
        body = {
            "customers": [
                {
                    "customer_id": str(r["customer_id"]),
                    **{f: _json_row(pd.Series(r))[f] for f in sent},
                }
                for r in rows.to_dict("records")
            ]
        }
        r = c.post("/v1/segment", json=body)
        assert r.status_code == 200, r.text[:800]  # the old service required clv
        got = [s["segment"] for s in r.json()["segments"]]
        assert got == result.customers["segment"].iloc[:40].tolist()
        assert r.json()["warnings"] == []
        # without the summary the CLV is computed from, the fields to send are named
        lacking = [{k: v for k, v in x.items() if k != "frequency"} for x in body["customers"]]
        r = c.post("/v1/segment", json={"customers": lacking})
        assert r.status_code == 422
        error = r.json()["errors"][0]
        assert error["field"] == "customers[0].clv" and error["missing"] == "frequency"
        assert "send clv, or frequency" in r.json()["detail"]
        # and a boolean is no number here either
        wrong = [dict(body["customers"][0], frequency=True)]
        r = c.post("/v1/segment", json={"customers": wrong})
        assert r.status_code == 422 and r.json()["errors"][0]["got"] == "the boolean true"


# ---- 7. documentation offline ---------------------------------------------------------------


def test_docs_and_redoc_load_only_local_assets(service: Service) -> None:
    with service.client(None) as c:
        for page in ("/docs", "/redoc"):
            html = c.get(page)
            assert html.status_code == 200 and "text/html" in html.headers["content-type"]
            urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html.text)
            urls += re.findall(r"""url\s*:\s*["']([^"']+)["']""", html.text)
            assert urls, html.text
            assert not [u for u in urls if "//" in u], urls  # the old /docs loaded a CDN
            scripts = [u for u in urls if u.endswith(".js")]
            assert scripts
            for url in scripts:
                asset = c.get(url)
                assert asset.status_code == 200, url
                assert "javascript" in asset.headers["content-type"]
                assert len(asset.content) > 500_000  # the bundle itself, not a stub
        assert c.get("/openapi.json").status_code == 200


# ---- 8. API keys listed and revoked ---------------------------------------------------------


def test_api_keys_are_listed_and_a_revoked_key_is_refused_at_once(
    trained: Trained, start: Any, tmp_path: Path
) -> None:
    store = trained.store
    made = run("api-key", "new", "--name", "crm-screen", "--store", str(store), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    key = re.search(r"(cv_\S+)", made.stdout).group(1)  # type: ignore[union-attr]
    listed = run("api-key", "list", "--store", str(store), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"crm-screen\s+read\s+\d{4}-\d\d-\d\d \d\d:\d\d", listed.stdout)
    assert key not in listed.stdout and "cv_" not in listed.stdout
    assert re.search(r"[0-9a-f]{64}", listed.stdout) is None  # nor its hash
    svc = start(
        ServiceSettings(models_dir=trained.models, model=trained.versions[0], store=str(store))
    )
    with svc.client(key) as c:
        assert c.get("/v1/models").status_code == 200
        revoked = run("api-key", "revoke", "crm-screen", "--store", str(store), cwd=tmp_path)
        assert revoked.returncode == 0, revoked.stderr
        assert "revoked the API key 'crm-screen'" in revoked.stdout
        r = c.get("/v1/models")  # at once: no wait for a refresh
        assert r.status_code == 401 and r.json()["detail"] == "the API key is not valid"
    with svc.client("read") as c:  # the other keys go on
        assert c.get("/v1/models").status_code == 200
    listed = run("api-key", "list", "--store", str(store), cwd=tmp_path)
    assert re.search(r"crm-screen\s+read\s+\S+ \S+\s+\d{4}-\d\d-\d\d", listed.stdout)
    assert "1 key, 0 active" in listed.stdout
    again = run("api-key", "revoke", "crm-screen", "--store", str(store), cwd=tmp_path)
    assert again.returncode == 2 and "no active API key named 'crm-screen'" in again.stderr
    assert "Traceback" not in again.stderr


# ---- 9. serve binds, then says so -----------------------------------------------------------


def _serve(trained: Trained, port: int) -> subprocess.Popen[str]:
    _, entry = new_key("tests", "read")
    env = {**os.environ, "CUSTVAL_API_KEYS": entry.entry, "PYTHONUNBUFFERED": "1"}
    env.pop("CUSTVAL_DEBUG", None)
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "custval", "serve", "--models", str(trained.models)),
            *("--model", trained.versions[0], "--port", str(port)),
        ],
        env={**env, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serve_on_a_taken_port_exits_2_without_saying_serving(trained: Trained) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = _serve(trained, port)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stdout + stderr
    assert "serving" not in stdout  # the old command said "serving" and then failed
    assert f"cannot listen on 127.0.0.1:{port}: the port is taken" in " ".join(stderr.split())
    assert "--port" in stderr and "Traceback" not in stderr


def test_serve_says_serving_only_once_it_answers(trained: Trained) -> None:
    port = free_port()
    proc = _serve(trained, port)
    try:
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and "serving" not in line:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line and proc.poll() is not None:
                break
        assert "serving model" in line and f":{port}" in line, proc.stderr.read()  # type: ignore[union-attr]
        # the port is bound when it is said: the first connection is taken (queued until
        # the server loop starts), no retry needed
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
