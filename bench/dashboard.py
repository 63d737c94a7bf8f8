"""The dashboard on the store of a million-customer scoring run: every page's server time.

Data: the generated company of ``bench/score.py`` (``--customers``, default 1,000,000, in
``bench/.data/score/N``, made once and reused), its value model (trained once), a segmentation
and two scoring runs into a DuckDB store under ``bench/.data/dashboard/`` (made once; ``--fresh``
remakes it), and a forecast run. Then each page is asked for through the app in this process
(``create_dashboard_app`` behind Starlette's test client, signed in), ``--repeats`` times: the
time from request to the whole HTML, which is the server's share of a page load (the browser
then draws the charts from the inline data). Also: what the summaries cost the scoring run, the
size of the vendored scripts, and of a report holding the overview, value drivers, segments and
CLV pages of that store.

Targets (issue 20): every page under 1 s; vendored JavaScript under 1.5 MB; reports under 2 MB.
Exits 1 when one is missed. Run: ``.venv/bin/python bench/dashboard.py [--customers N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tools/screenshots.py: the pages' paths
from tools.screenshots import PAGES  # noqa: E402


def _company(n: int) -> Path:
    from custval import flows
    from custval.config import load_project
    from custval.data.synth import generate

    folder = HERE / ".data" / "score" / str(n)
    config = folder / "custval.toml"
    if not config.exists():
        t0 = time.perf_counter()
        generate(n, folder, seed=1, fmt="parquet")
        print(f"generated {n:,} customers in {time.perf_counter() - t0:.0f} s", flush=True)
    models = folder / "models"
    if not any(models.glob("*/manifest.json")):
        t0 = time.perf_counter()
        project = load_project(config)
        flows.train_value(project, out_dir=models, candidates=("logistic", "lightgbm"))
        print(f"trained the value model in {time.perf_counter() - t0:.0f} s", flush=True)
    return config


def _store(config: Path, fresh: bool) -> tuple[str, dict[str, float]]:
    """The store with a segmentation, two scoring runs and a forecast; the second scoring
    run's stage times."""
    from custval import flows
    from custval.config import load_project

    folder = HERE / ".data" / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    store = str(folder / f"store-{config.parent.name}.duckdb")
    laps_file = Path(store).with_suffix(".laps.json")
    if Path(store).exists() and laps_file.exists() and not fresh:
        return store, json.loads(laps_file.read_text())
    Path(store).unlink(missing_ok=True)
    project = load_project(config)
    t0 = time.perf_counter()
    prepared = flows.prepare(project)
    models = config.parent / "models"
    flows.score(project, store_url=store, models_dir=models, prepared=prepared)
    table = flows.segment_features(project, prepared)
    flows.store_segments(flows.segment_table(table, seed=0), str(store), project.as_of)
    run = flows.score(project, store_url=store, models_dir=models, prepared=prepared)
    # the forecast and the monitor check as their commands make them, into the same store
    forecast = ("forecast", "--horizon", "13", "--origins", "3", "--quiet")
    for command, ok in ((forecast, (0,)), (("monitor", "--quiet"), (0, 1))):
        cli = [sys.executable, "-m", "custval", *command, "-c", str(config), "--store", store]
        done = subprocess.run(cli, capture_output=True, text=True, check=False)
        if done.returncode not in ok:
            raise RuntimeError(done.stderr)
    took = time.perf_counter() - t0
    print(f"made the store (2 scoring runs, segments, a forecast, a check) in {took:.0f} s")
    laps_file.write_text(json.dumps(run.seconds))
    return store, run.seconds


def _client(store: str) -> object:
    from fastapi.testclient import TestClient

    from custval.api.app import ServiceSettings, create_dashboard_app
    from custval.api.keys import new_key
    from custval.store import open_store

    key, entry = new_key("bench", "read")
    with open_store(store) as s:
        s.add_api_key(f"bench-{time.time_ns()}", entry.scope, entry.sha256)
    app = create_dashboard_app(ServiceSettings(models_dir=Path(store).parent, store=store))
    client = TestClient(app)
    assert (
        client.post("/dashboard/login", data={"key": key}, follow_redirects=False).status_code
        == 303
    )
    return client


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--fresh", action="store_true", help="Remake the store.")
    args = ap.parse_args()

    from custval.flows import dashboard as pages
    from custval.flows.html import VENDOR_SCRIPTS, render_report, web_folder
    from custval.store import open_store

    store, laps = _store(_company(args.customers), args.fresh)
    with open_store(store, read_only=True) as s:
        customers = s.query(
            "SELECT n_customers FROM v1_runs WHERE kind = 'score' ORDER BY finished_at DESC LIMIT 1"
        )[0][0]
        customer = s.query("SELECT customer_id FROM latest_predictions LIMIT 1")[0][0]
    client = _client(store)
    size = Path(store).stat().st_size / 2**20
    print(f"\nthe dashboard on a store of {customers:,} customers per run ({size:,.0f} MiB)")
    print(f"{'page':<12} {'median ms':>10} {'max ms':>8} {'HTML KiB':>9}")
    worst = 0.0
    for name, path in PAGES.items():
        url = path.format(customer=customer)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            answer = client.get(url)  # type: ignore[attr-defined]
            times.append(time.perf_counter() - t0)
            assert answer.status_code == 200, (name, answer.status_code)
        assert "data-empty" not in answer.text, name
        worst = max(worst, max(times))
        median, most = statistics.median(times) * 1000, max(times) * 1000
        print(f"{name:<12} {median:>10.0f} {most:>8.0f} {len(answer.content) / 1024:>9.0f}")

    vendor = sum((web_folder() / "static" / n).stat().st_size for n in VENDOR_SCRIPTS)
    with open_store(store, read_only=True) as s:
        sections = [
            pages.overview_page(s),
            pages.drivers_page(s),
            pages.segments_page(s),
            pages.clv_page(s),
        ]
    report = len(render_report("bench", sections).encode())
    summaries = laps.get("summaries", float("nan"))
    total = sum(laps.values())
    share = summaries / total
    print(f"\nthe scoring run's summaries: {summaries:.1f} s of {total:.0f} s ({share:.1%})")
    print(f"vendored JavaScript: {vendor / 2**20:.2f} MB (vega, vega-lite, vega-embed)")
    print(f"a report of four pages of this store: {report / 2**20:.2f} MB")
    ok = worst < 1.0 and vendor < 1.5 * 2**20 and report < 2 * 2**20
    verdict = "met" if ok else "MISSED"
    print(
        f"\ntargets: every page under 1 s (slowest {worst * 1000:.0f} ms), scripts under "
        f"1.5 MB, reports under 2 MB: {verdict}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
