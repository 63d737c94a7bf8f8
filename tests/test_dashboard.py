"""The dashboard as a person sees it: Debian's Chromium, driven by Playwright, against a running
`custval serve` over a scored, segmented, forecast and monitored project. Every page loads with
no console error and no request to another host, and draws its charts; the customer page shows
the numbers `GET /v1/customers/{id}` answers; a wrong key is refused, a missing, tampered or
expired session leads to the sign-in; HTML in the data is shown, never run. The empty store, a
store with no scoring run and an unknown customer are answered in words."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from tools import screenshots
from tools.vendor_js import VENDOR

from custval.api.keys import new_key
from custval.store import open_store
from tests.factories import Companies, built_once, run, serving
from tests.test_monitor_cli import plant_plan_shift

SECRET = "tests-session-secret"
EVIL = '<img src=x onerror="window.pwned=1"></script><script>window.pwned=2</script>'


def _chromium_or_skip() -> None:
    try:
        screenshots.chromium_path()
    except RuntimeError as exc:
        if os.environ.get("CI"):
            raise  # CI installs it (.ci/run): a missing browser there is a failure
        pytest.skip(str(exc))


def _build(folder: Path, companies: Companies) -> None:
    """A project with everything the pages show: a model, a segmentation, two scoring runs
    (the second a month with a planted shift), a forecast and a monitor check."""
    company = companies.copy(folder / "co", 600, seed=21, fmt="csv")
    config = str(company.config_path)
    steps = [
        (
            "train",
            "-c",
            config,
            "--models",
            "logistic",
            "--folds",
            "3",
            "--report",
            str(folder / "train.html"),
        ),
        ("segment", "-c", config, "--report", str(folder / "segment.html")),
        ("score", "-c", config),
        ("forecast", "-c", config, "--horizon", "8", "--origins", "2"),
    ]
    for step in steps:
        done = run(*step, cwd=folder)
        assert done.returncode == 0, (step, done.stderr)
    plant_plan_shift(company.config_path)
    done = run("score", "-c", config, cwd=folder)
    assert done.returncode == 0, done.stderr
    done = run("monitor", "-c", config, cwd=folder)
    assert done.returncode in (0, 1), done.stderr


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, companies: Companies, shared_dir: Path
) -> Path:
    built = built_once(shared_dir, "dashboard-project", lambda f: _build(f, companies))
    root = tmp_path_factory.mktemp("dashboard")
    shutil.copytree(built, root, dirs_exist_ok=True)
    return root / "co" / "custval.toml"


@pytest.fixture(scope="module")
def served(project: Path) -> Iterator[dict]:
    """`custval serve` on the project, with a read key in its store."""
    key, entry = new_key("browser", "read")
    with open_store(project.parent / "custval.duckdb") as store:
        store.add_api_key(entry.name, entry.scope, entry.sha256)
        customer = store.query(
            "SELECT customer_id FROM latest_predictions WHERE clv_expected IS NOT NULL "
            "ORDER BY value_probability DESC LIMIT 1"
        )[0][0]
    with serving(project, {"CUSTVAL_SESSION_SECRET": SECRET}) as url:
        yield {"url": url, "key": key, "customer": customer, "project": project}


@pytest.fixture(scope="module")
def chrome() -> Iterator[object]:
    _chromium_or_skip()
    with screenshots.browser() as found:
        yield found


@pytest.fixture(scope="module")
def page(served: dict, chrome: object) -> object:
    """A page signed in with the read key."""
    p = screenshots.new_page(chrome)
    assert screenshots.sign_in(p, served["url"], served["key"]) == 200
    return p


# ---- every page, as a person sees it -----------------------------------------------------


def test_every_page_draws_its_charts_with_no_error_and_no_other_host(
    served: dict, page: object, tmp_path: Path
) -> None:
    host = served["url"].removeprefix("http://")
    for name, path in screenshots.PAGES.items():
        shot = tmp_path / f"dashboard-{name}.png"
        seen = screenshots.visit(
            page, served["url"] + path.format(customer=served["customer"]), shot
        )
        assert seen.status == 200, (name, seen)
        assert seen.errors == [], (name, seen.errors)
        assert seen.hosts == {host}, (name, seen.hosts)
        assert not seen.empty, name  # the project has every kind of run
        assert seen.charts >= 1 and seen.drawn == seen.charts, (name, seen)
        assert seen.marks >= 3 * seen.charts, (name, seen)
        # a screenshot for the README: a real picture, not a blank page
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_the_customer_page_shows_the_numbers_of_the_api(served: dict, page: object) -> None:
    answer = httpx.get(
        f"{served['url']}/v1/customers/{served['customer']}",
        headers={"Authorization": f"Bearer {served['key']}"},
    ).json()
    seen = screenshots.visit(page, f"{served['url']}/dashboard/customer?id={served['customer']}")
    assert seen.errors == []
    cards = {
        c.locator(".label").inner_text().lower(): c.locator(".value").inner_text()
        for c in page.locator(".card").all()  # type: ignore[attr-defined]
    }
    assert cards["value probability"] == f"{answer['value_probability']:.1%}"
    assert cards["clv"] == f"{answer['clv_expected']:,.1f}"
    assert cards["p(alive)"] == f"{answer['p_alive']:.2f}"
    assert cards["segment"] == answer["segment"]
    reasons = page.locator("section.table").first.inner_text()  # type: ignore[attr-defined]
    for reason in answer["reasons"]:
        assert reason["text"] in reasons
    # the ids as people type them: trimmed and upper-cased, as the cleaning keeps them
    lower = served["customer"].lower()
    seen = screenshots.visit(page, f"{served['url']}/dashboard/customer?id=%20{lower}%20")
    assert seen.status == 200 and not seen.empty


def test_html_in_the_data_is_shown_never_run(served: dict, page: object) -> None:
    store_path = served["project"].parent / "custval.duckdb"
    with open_store(store_path, wait=15) as store:
        run_id = store.latest_run()
        store.query(
            "UPDATE reasons SET feature_value = ?, text = ? WHERE run_id = ? AND "
            "customer_id = ? AND rank = 1",
            (EVIL, f"Plan: {EVIL} raises the chance", run_id, served["customer"]),
        )
    seen = screenshots.visit(page, f"{served['url']}/dashboard/customer?id={served['customer']}")
    assert seen.errors == [] and seen.drawn == seen.charts
    assert page.evaluate("() => window.pwned === undefined")  # type: ignore[attr-defined]
    assert EVIL in page.locator("body").inner_text()  # type: ignore[attr-defined]
    # and in the search box: the id is a string, the page says it has no such customer
    seen = screenshots.visit(page, f"{served['url']}/dashboard/customer?id={quote(EVIL)}")
    assert seen.status == 404 and seen.empty
    assert page.evaluate("() => window.pwned === undefined")  # type: ignore[attr-defined]
    assert seen.hosts == {served["url"].removeprefix("http://")}  # no image was asked for


def test_the_summaries_add_up_to_the_runs_rows(project: Path) -> None:
    """What the pages read (the run's summaries) equals the aggregates of its predictions."""
    from custval.store.dashboard import run_summaries

    with open_store(project.parent / "custval.duckdb", read_only=True) as store:
        run_id = store.latest_run()
        found = run_summaries(store, [run_id])[run_id]
        n, high, total = store.query(
            "SELECT COUNT(*), SUM(value_class), SUM(clv_expected) FROM predictions "
            "WHERE run_id = ?",
            (run_id,),
        )[0]
        by_segment = dict(
            store.query(
                "SELECT segment, COUNT(*) FROM predictions WHERE run_id = ? GROUP BY segment",
                (run_id,),
            )
        )
    totals = found["totals"]
    assert (totals["customers"], totals["high"]) == (n, high)
    assert totals["clv_total"] == pytest.approx(total, rel=1e-9)
    assert {c["value_class"]: c["customers"] for c in found["classes"]} == {
        "high": high,
        "low": n - high,
    }
    assert {s["segment"]: s["customers"] for s in found["segments"]} == by_segment
    assert sum(b["customers"] for b in found["probability"]) == n
    assert sum(b["customers"] for b in found["clv_histogram"]) == totals["with_clv"]
    rows = found["tracking"]["rows"]
    assert {r["period"] for r in rows} == {"calibration", "forecast"}
    # the scoring run's shortcut (the features' BTYD summary) gives the table read afresh
    from custval import flows
    from custval.config import load_project
    from custval.flows.preparation import features
    from custval.flows.summaries import _summary, _tracking

    with open_store(project.parent / "custval.duckdb", read_only=True) as store:
        models = json.loads(
            store.query("SELECT clv_models FROM runs WHERE run_id = ?", (run_id,))[0][0]
        )
    loaded = load_project(project)
    prepared = flows.prepare(loaded)
    table = features(loaded, prepared).to_pyarrow().to_pandas()
    fresh = _tracking(loaded, prepared, models)["rows"]
    assert fresh == rows == _tracking(loaded, prepared, models, _summary(table))["rows"]


# ---- signing in ----------------------------------------------------------------------------


def _cookie(expires: float, key: str) -> str:
    body = f"{int(expires)}.{hashlib.sha256(key.encode()).hexdigest()}"
    return f"{body}.{hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()}"


def test_a_wrong_key_is_refused(served: dict, chrome: object) -> None:
    p = screenshots.new_page(chrome)
    assert screenshots.sign_in(p, served["url"], "cv_not-a-key") == 401
    assert "That key is not valid" in p.locator(".error").inner_text()
    p.goto(f"{served['url']}/dashboard")
    assert "/dashboard/login" in p.url  # still signed out


def test_a_missing_tampered_or_expired_session_leads_to_the_sign_in(served: dict) -> None:
    url, key = served["url"], served["key"]
    for cookie in (
        None,
        "garbage",
        _cookie(time.time() - 60, key),
        _cookie(time.time() + 600, key)[:-2] + "00",
    ):
        cookies = {"custval_session": cookie} if cookie else None
        answer = httpx.get(f"{url}/dashboard/clv", cookies=cookies, follow_redirects=False)
        assert answer.status_code == 303, cookie
        assert answer.headers["location"].startswith("/dashboard/login?next=%2Fdashboard%2Fclv")
    fine = httpx.get(
        f"{url}/dashboard/clv", cookies={"custval_session": _cookie(time.time() + 600, key)}
    )
    assert fine.status_code == 200 and "CLV model" in fine.text
    # the pages say what they allow: scripts from the server only, no frames
    policy = fine.headers["content-security-policy"]
    assert "script-src 'self' 'unsafe-eval'" in policy and "frame-ancestors 'none'" in policy
    # the sign-in sets an HTTP-only, same-site cookie holding no key
    signed = httpx.post(f"{url}/dashboard/login", data={"key": key, "next": "//evil.example"})
    assert signed.status_code == 303 and signed.headers["location"] == "/dashboard"
    set_cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie and key not in set_cookie


def test_a_sign_in_holds_on_every_worker(project: Path) -> None:
    """Several workers share the session secret `custval serve` made at its start (none is
    set here), so a sign-in on one is good on the others."""
    key, entry = new_key("workers", "read")
    env = {"CUSTVAL_API_KEYS": entry.entry, "CUSTVAL_SESSION_SECRET": ""}
    with serving(project, env, "--workers", "2") as url:
        signed = httpx.post(f"{url}/dashboard/login", data={"key": key})
        assert signed.status_code == 303
        # a new connection each time, so the kernel deals them to both workers; a worker with
        # another secret would send the request to the sign-in (303)
        pages = [
            httpx.get(f"{url}/dashboard/drivers", cookies=signed.cookies).status_code
            for _ in range(24)
        ]
        assert pages == [200] * 24


# ---- nothing to show -----------------------------------------------------------------------


def _dashboard(store: Path) -> object:
    from fastapi.testclient import TestClient

    from custval.api.app import ServiceSettings, create_dashboard_app

    key, entry = new_key("t", "read")
    with open_store(store) as s:
        s.add_api_key(entry.name, entry.scope, entry.sha256)
    client = TestClient(
        create_dashboard_app(ServiceSettings(models_dir=store.parent, store=str(store)))
    )
    assert (
        client.post("/dashboard/login", data={"key": key}, follow_redirects=False).status_code
        == 303
    )
    return client


def test_an_empty_store_says_what_to_run(tmp_path: Path) -> None:
    client = _dashboard(tmp_path / "empty.duckdb")
    for path in screenshots.PAGES.values():
        answer = client.get(path.format(customer="C1"))  # type: ignore[attr-defined]
        assert answer.status_code in (200, 404), path
        assert "data-empty" in answer.text, path
        assert re.search(
            r"custval (score|segment|forecast|monitor)|Type a customer id|no customer", answer.text
        ), path
    assert "custval score -c PROJECT" in client.get("/dashboard").text  # type: ignore[attr-defined]


def test_an_unknown_customer_is_a_404_in_words(project: Path, tmp_path: Path) -> None:
    store = tmp_path / "copy.duckdb"
    shutil.copy(project.parent / "custval.duckdb", store)
    client = _dashboard(store)
    answer = client.get("/dashboard/customer", params={"id": "NOBODY-42"})  # type: ignore[attr-defined]
    assert answer.status_code == 404
    assert "The latest scoring run has no customer" in answer.text and "NOBODY-42" in answer.text
    missing = client.get("/dashboard/nothing-here")  # type: ignore[attr-defined]
    assert missing.status_code == 404 and "There is no page" in missing.text


def test_the_dashboard_command_refuses_a_store_that_does_not_exist(tmp_path: Path) -> None:
    done = run("dashboard", "--store", str(tmp_path / "none.duckdb"), cwd=tmp_path)
    assert done.returncode == 2
    assert "there is no store" in done.stderr and "custval score" in done.stderr


# ---- the reports ---------------------------------------------------------------------------


def assert_report(path: Path, chrome: object | None = None) -> screenshots.Visit:
    """A report as a person opens it: one file under 2 MB that asks for nothing, its charts
    drawn with no console error (in ``chrome``, else a browser of its own: Playwright's sync
    API runs one at a time in a process)."""
    _chromium_or_skip()
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size < 2 * 2**20
    assert "default-src 'none'" in text  # the browser refuses any request it would make
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    if chrome is None:
        with screenshots.browser() as own:
            seen = screenshots.visit(screenshots.new_page(own), path.resolve().as_uri())
    else:
        seen = screenshots.visit(screenshots.new_page(chrome), path.resolve().as_uri())
    assert seen.errors == [] and seen.hosts == {"file"}, seen
    assert seen.charts >= 1 and seen.drawn == seen.charts and seen.marks >= 2 * seen.charts
    return seen


def test_the_reports_of_train_segment_and_clv(
    project: Path, chrome: object, tmp_path: Path
) -> None:
    seen = assert_report(project.parent.parent / "train.html", chrome)
    assert seen.charts == 3  # the candidates, the calibration, the importance
    seen = assert_report(project.parent.parent / "segment.html", chrome)
    assert seen.charts == 2  # customers and CLV share by segment
    company = project.parent
    done = run(
        "clv",
        "-t",
        str(company / "transactions.csv"),
        "--customer-id",
        "account_id",
        "--date",
        "ts",
        "--calibration-end",
        "2025-07-01",
        "--holdout-end",
        "2026-01-01",
        "-o",
        str(tmp_path / "clv.parquet"),
        "--report",
        str(tmp_path / "clv.html"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "report: " in done.stdout
    seen = assert_report(tmp_path / "clv.html", chrome)
    assert seen.charts == 2  # the tracking plot and the P(alive) matrix


def test_the_report_command_writes_the_stores_pages(
    project: Path, chrome: object, tmp_path: Path
) -> None:
    done = run("report", "-c", str(project), "-o", str(tmp_path / "all.html"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    seen = assert_report(tmp_path / "all.html", chrome)
    text = (tmp_path / "all.html").read_text()
    for title in ("Overview", "Value drivers", "Segments", "CLV model", "Forecast", "Monitoring"):
        assert f'<h2 class="section">{title}</h2>' in text, title
    assert seen.charts >= 12
    empty = tmp_path / "empty.duckdb"
    open_store(empty).close()
    done = run("report", "--store", str(empty), "-o", str(tmp_path / "none.html"), cwd=tmp_path)
    assert done.returncode == 2 and "No scoring run yet" in done.stderr
    assert not (tmp_path / "none.html").exists()


@pytest.mark.parametrize(
    ("name", "why"),
    [("report.pdf", "a report is an HTML file"), ("nowhere/report.html", "does not exist")],
)
def test_a_report_that_cannot_be_written_is_refused_before_any_work(
    project: Path, tmp_path: Path, name: str, why: str
) -> None:
    done = run("segment", "-c", str(project), "--report", str(tmp_path / name), cwd=tmp_path)
    assert done.returncode == 2 and why in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


# ---- the vendored scripts ----------------------------------------------------------------


def test_the_vendored_scripts_are_the_pinned_ones_and_small() -> None:
    versions = json.loads((VENDOR / "VERSIONS.json").read_text())
    total = 0
    for name, pin in versions.items():
        data = (VENDOR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == pin["sha256"], name
        assert (VENDOR / f"{pin['package']}.LICENSE").exists()
        total += len(data)
    assert set(versions) == {"vega.min.js", "vega-lite.min.js", "vega-embed.min.js"}
    assert total < 1.5 * 2**20
