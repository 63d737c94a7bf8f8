"""Sales forecasts (issue 18): custval's candidates against statsforecast's AutoETS and Prophet
on a generated company with planted seasonality, the customer-based forecast on CDNOW, and the
speed at a million customers.

A. The generated company (``custval.data.synth.generate`` with five years of history, so that
   a year can be held out after a backtest of several origins; weekly revenue, net of refunds).
   The last 52 weeks are the holdout: nothing after their first Monday is seen. custval's flow
   (``custval.flows.forecasting.forecast``: every candidate on a rolling-origin backtest of 8
   origins 13 weeks apart, horizon 52, the lowest mean MASE chosen and refitted, conformal
   intervals from the backtest's errors) forecasts the 52 weeks; every candidate is also refitted
   at the holdout's origin and judged there, beside statsforecast's AutoETS and Prophet, each run
   in its own virtual environment under ``bench/.data`` (``bench/forecast_competitors.py``:
   they cap pandas below 3), on the same weekly series. MASE's scale is the seasonal naive
   method's in-sample error (m = 52) of the history before the holdout, for every method alike.
   Coverage: the share of the 52 holdout weeks inside each method's 80% and 95% intervals.
B. CDNOW (``../shared/data/cdnow/CDNOW_master.txt``, 23,570 customers; the literature's
   conventions: weeks from 1997-01-01, 39 weeks of calibration, 39 of holdout, repeat purchases
   = purchase days after the first). The customer-based forecast of the weekly repeat purchases
   (custval's purchase model choice, and each model alone), the statistical candidates fitted
   on the 39 calibration weeks and the two competitors, side by side: the cumulative holdout
   total against the actual and the weekly MASE (naive scale: no season fits in 39 weeks).
C. Speed at 1M customers (the default generated company, three years): the 52-week
   customer-based forecast (the BTYD summary, the purchase model chosen of three, the spend
   model, acquisitions and the sum), and the flow's whole backtest of weekly revenue (2 origins
   52 weeks apart: three years hold no more), each in a child process with its own peak RSS.

Targets: A. the chosen method's MASE at most 0.9x seasonal naive's and no worse than AutoETS's
and Prophet's; its 80% interval covers 75-85% of the holdout weeks. B. the customer-based
total within 5% of the actual and its weekly MASE below the statistical candidates'. C. under
10 s; under 120 s and 4 GB.

Run: ``.venv/bin/python bench/forecast.py`` (``--customers N`` for A, default 100,000;
``--scale-n N``, 0 to skip C; ``--skip-competitors``). Exits 1 when a target is missed. The
output of the last full run is kept in ``bench/results/forecast.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from custval import flows
from custval.config import load_project
from custval.data.synth import SynthParams, generate
from custval.errors import FitError
from custval.features.holdout import btyd_summary_table, tracking_times
from custval.features.series import sales_series
from custval.flows.customer_forecast import CUSTOMER_BASED, customer_based
from custval.flows.forecasting import candidate_methods, forecast
from custval.models import btyd
from custval.models.btyd_clv import choose_purchase_model
from custval.models.customer_forecast import customer_forecast
from custval.models.evaluation import tracking_table
from custval.models.forecasting import bias, mase, rmsse, wape

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clv_cdnow import cdnow_project
from forecast_competitors import run_competitor

DATA = Path(__file__).resolve().parent / ".data"
CDNOW = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow" / "CDNOW_master.txt"
COMPETITORS = ("statsforecast", "prophet")
#: DuckDB's cap: beyond it the engine spills, so that engine and Python stay under 4 GB
DUCKDB_LIMIT = "2.5GB"


def say(line: str = "") -> None:
    print(line, flush=True)


def scores(actual: np.ndarray, point: np.ndarray, history: np.ndarray, m: int) -> dict:
    return {
        "MASE": mase(actual, point, history, m),
        "RMSSE": rmsse(actual, point, history, m),
        "bias": bias(actual, point),
        "WAPE": wape(actual, point),
    }


def covers(actual: np.ndarray, lo: Any, hi: Any) -> float:
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return float(np.mean((actual >= lo) & (actual <= hi)))


def competitors(
    series: pd.DataFrame, origin: int, horizon: int, season: int, skip: bool
) -> dict[str, pd.DataFrame]:
    """Each competitor's forecasts at ``origin`` (its methods by name)."""
    out: dict[str, pd.DataFrame] = {}
    if skip:
        return out
    for name in COMPETITORS:  # two competitors
        got = run_competitor(name, series, horizon, season, "week", [origin])
        for method, rows in got.groupby("method"):
            frame = rows.sort_values("step").reset_index(drop=True)
            frame.attrs["seconds"] = got.attrs.get("seconds", {}).get(method, float("nan"))
            out[str(method)] = frame
    return out


# ---- A. the generated company ----------------------------------------------------------------


def generated(n: int, seed: int, skip: bool) -> bool:
    folder = DATA / f"forecast-company-{n}-{seed}"
    start = time.perf_counter()
    company = generate(
        n, folder, seed=seed, fmt="parquet", params=replace(SynthParams(), history_years=5)
    )
    say(
        f"A. generated company: {n:,} customers, 5 years, seed {seed} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    project = load_project(company.config_path)
    tx = flows.prepare(project).tables["transactions"]
    weekly = sales_series(tx, project.as_of, freq="week")
    y = weekly["revenue"].to_numpy(np.float64)
    periods = pd.DatetimeIndex(weekly["period"])
    h, m = 52, 52
    cut = y.size - h
    history, actual = y[:cut], y[cut:]
    origin = periods[cut].date()
    say(
        f"   weekly revenue, {y.size} weeks; holdout {origin} to {periods[-1].date()} "
        f"(52 weeks, actual {actual.sum():,.0f})"
    )
    start = time.perf_counter()
    run = forecast(tx, origin, freq="week", horizon=h, n_origins=8, step=13)
    flow_s = time.perf_counter() - start
    board = run.leaderboard
    chosen = str(board.loc[board["chosen"], "method"].iloc[0])
    say(f"   custval's backtest (8 origins 13 weeks apart, horizon 52; {flow_s:.1f} s):")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        say(board.drop(columns=["series"]).to_string(index=False))
    rows = []
    fc = run.forecasts
    rows.append(
        {
            "method": f"custval (chosen: {chosen})",
            **scores(actual, fc["point"].to_numpy(), history, m),
            "80%": covers(actual, fc["lo_80"], fc["hi_80"]),
            "95%": covers(actual, fc["lo_95"], fc["hi_95"]),
            "s": flow_s,
        }
    )
    for name, make in candidate_methods(m, h).items():  # each candidate refitted at the origin
        t = time.perf_counter()
        try:
            point = make().fit(history).predict(h)
        except FitError as exc:
            say(f"   {name}: {exc.problem}")
            continue
        rows.append(
            {"method": name, **scores(actual, point, history, m), "s": time.perf_counter() - t}
        )
    t = time.perf_counter()
    point = customer_based(
        tx, origin, horizon=h, freq="week", season=m, measure="revenue", history=history
    )
    rows.append(
        {
            "method": CUSTOMER_BASED,
            **scores(actual, point, history, m),
            "s": time.perf_counter() - t,
        }
    )
    series = weekly.assign(y=weekly["revenue"])[["series", "period", "y"]]
    for name, frame in competitors(series, cut, h, m, skip).items():
        rows.append(
            {
                "method": name,
                **scores(actual, frame["point"].to_numpy(), history, m),
                "80%": covers(actual, frame["lo_80"], frame["hi_80"]),
                "95%": covers(actual, frame["lo_95"], frame["hi_95"]),
                "s": frame.attrs["seconds"],
            }
        )
    table = pd.DataFrame(rows)
    say("   the 52 holdout weeks (MASE scale: seasonal naive in sample, m = 52):")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        say(table.to_string(index=False))
    return _verdict_a(table)


def _verdict_a(table: pd.DataFrame) -> bool:
    by = table.set_index("method")
    ours = table.iloc[0]
    snaive = by.loc["seasonal naive", "MASE"]
    ok = ours["MASE"] <= 0.9 * snaive
    say(
        f"   chosen MASE {ours['MASE']:.3f} vs seasonal naive {snaive:.3f}"
        f" = {ours['MASE'] / snaive:.2f}x (target <= 0.9x: "
        f"{'met' if ok else 'missed'})"
    )
    for name in by.index:
        if name.startswith(("statsforecast", "Prophet")):
            theirs = by.loc[name, "MASE"]
            beat = ours["MASE"] <= theirs
            ok &= beat
            say(
                f"   against {name}: {ours['MASE']:.3f} vs {theirs:.3f} = "
                f"{ours['MASE'] / theirs:.2f}x (no worse: {'met' if beat else 'missed'})"
            )
    cover = 0.75 <= ours["80%"] <= 0.85
    say(
        f"   80% interval covers {ours['80%']:.0%} of the holdout weeks (target 75-85%: "
        f"{'met' if cover else 'missed'}); 95% covers {ours['95%']:.0%}"
    )
    return bool(ok and cover)


# ---- B. CDNOW --------------------------------------------------------------------------------


def cdnow(path: Path, skip: bool) -> bool:
    project = cdnow_project(path, "1998-07-01", "bench/forecast.py")
    tx = flows.prepare(project).tables["transactions"]
    start, cal = date(1997, 1, 1), date(1997, 10, 1)
    days = tx.group_by("customer_id", day=tx.timestamp.date()).aggregate().to_pandas()
    days["day"] = (pd.to_datetime(days["day"]) - pd.Timestamp(start)).dt.days
    first = days.groupby("customer_id")["day"].transform("min")
    weeks = (days.loc[days["day"] > first, "day"] // 7).value_counts()
    y = weeks.reindex(range(78), fill_value=0).to_numpy(np.float64)
    history, actual = y[:39], y[39:]
    say(
        f"B. CDNOW: {days['customer_id'].nunique():,} customers; repeat purchases: "
        f"{history.sum():,.0f} in the 39 calibration weeks, {actual.sum():,.0f} in the 39 "
        "holdout weeks"
    )
    rows = []
    summary = btyd_summary_table(tx, cal, time_unit="weeks").to_pyarrow()
    x, rec, age = (
        summary.column(c).to_numpy().astype(np.float64) for c in ("frequency", "recency", "T")
    )
    ends = np.arange(1, 40, dtype=np.float64)
    fitted, points = {}, {}
    for label, cls in (
        ("BG/NBD", "BetaGeo"),
        ("MBG/NBD", "ModifiedBetaGeo"),
        ("Pareto/NBD", "ParetoNBD"),
    ):
        model = fitted[label] = getattr(btyd, cls)().fit(x, rec, age)
        point = points[label] = customer_forecast(model, x, rec, age, ends)["existing"]
        rows.append(
            {"method": f"{CUSTOMER_BASED}, {label} alone", **scores(actual, point, history, 1)}
        )
    t = time.perf_counter()
    # the product's candidate: its purchases count the newcomers' first purchases (none here:
    # the cohort's acquisitions ended in week 12, and the acquisitions forecast says so)
    point = customer_based(tx, cal, horizon=39, freq="week", season=52, measure="purchases")
    product = {
        "method": f"{CUSTOMER_BASED} (custval's choice)",
        **scores(actual, point, history, 1),
        "s": time.perf_counter() - t,
    }
    rows.insert(0, product)
    base = point
    for name, make in candidate_methods(52, 39).items():
        try:
            p = make().fit(history).predict(39)
        except FitError as exc:
            say(f"   {name}: {exc.problem}")
            continue
        rows.append({"method": name, **scores(actual, p, history, 1)})
        if name == "moving average":
            mixed = (base + p) / 2
    weekly = pd.DataFrame(
        {"series": "cdnow", "period": pd.date_range("1996-12-30", periods=78, freq="W-MON"), "y": y}
    )
    # 39 weeks hold no season: the competitors are asked for none (AutoETS with a 52-week
    # season on 39 weeks and Prophet's yearly cycle would extrapolate what they never saw)
    for name, frame in competitors(weekly, 39, 39, 1, skip).items():
        rows.append({"method": name, **scores(actual, frame["point"].to_numpy(), history, 1)})
    rows.append(
        {
            "method": "customer-based + moving average, equal weights",
            **scores(actual, mixed, history, 1),
        }
    )
    inside = _inside_calibration(tx, y)
    rows.append(
        {
            "method": f"customer-based x (1 / (1 + {inside:+.3f})), its bias inside calibration",
            **scores(actual, base / (1 + inside), history, 1),
        }
    )
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        say(table.to_string(index=False))
    _gap(tx, fitted["BG/NBD"], points["BG/NBD"], y)
    by = table.set_index("method")
    ours = by.iloc[0]
    total_ok = abs(ours["bias"]) <= 0.05
    stats = by.loc[
        [m for m in by.index if not m.startswith(CUSTOMER_BASED) and "+" not in m], "MASE"
    ]
    mase_ok = ours["MASE"] < stats.min()
    say(
        f"   customer-based total {ours['bias']:+.1%} (target within 5%: "
        f"{'met' if total_ok else 'missed'}); weekly MASE {ours['MASE']:.3f} against the best "
        f"other {stats.min():.3f} ({stats.idxmin()}) "
        f"(target lower: {'met' if mase_ok else 'missed'})"
    )
    return bool(total_ok and mase_ok)


def _gap(tx: Any, model: Any, point: np.ndarray, y: np.ndarray) -> None:
    """Where BG/NBD's shortfall on CDNOW's holdout comes from, measured three ways.

    Bursts: the holdout weeks' repeat purchases above their 9-week running median (the
    promotions of November-December 1997, March and June 1998), which a model of 39 weeks of
    one cohort cannot foresee. Decay: the model's weekly expectation in the holdout's last 13
    weeks against its first 13, beside the actual's (bursts taken out), and the step between
    them at the holdout's start. Level: the cohort's
    expected repeat purchases in the last 13 calibration weeks (the tracking table of ``custval
    clv``, unconditional) against what happened, the correction a level anchor would make."""
    actual = y[39:]
    running = pd.Series(y).rolling(9, center=True, min_periods=1).median().to_numpy()
    burst = np.clip(y - running, 0, None)[39:]
    calm = actual - burst
    origin, births, repeats = tracking_times(tx, date(1997, 10, 1), date(1998, 7, 1))
    start = (date(1997, 1, 1) - origin).days / 7
    track = tracking_table(model, births - start, repeats - start, np.arange(1, 40.0))
    expected, seen = track.predicted.to_numpy()[26:], y[26:39]
    model_decay = point[26:].sum() / point[:13].sum() - 1
    actual_decay = calm[26:].sum() / calm[:13].sum() - 1
    step = calm[:13].sum() / point[:13].sum() - 1
    say(
        f"   why BG/NBD alone falls short ({point.sum() / actual.sum() - 1:+.1%}):\n"
        f"     bursts: the holdout weeks above their 9-week running median hold {burst.sum():,.0f}"
        f" repeat purchases, {burst.sum() / actual.sum():.1%} of the holdout; without them the "
        f"gap is {point.sum() / calm.sum() - 1:+.1%}\n"
        f"     decay: from the holdout's first 13 weeks to its last 13 the model falls "
        f"{model_decay:+.1%} and the actual, bursts out, {actual_decay:+.1%}: the decay is "
        f"right; the level is not: the actual, bursts out, runs {step:+.1%} above the model in "
        "the first 13 weeks (October to December 1997: a fourth quarter, which 39 weeks from "
        "January to September have not seen)\n"
        f"     level: in the last 13 calibration weeks the model expected {expected.sum():,.0f} "
        f"and {seen.sum():,.0f} happened ({seen.sum() / expected.sum() - 1:+.1%}): anchoring "
        "the forecast to the calibration's level would widen the gap, not close it"
    )


def _inside_calibration(tx: Any, y: np.ndarray) -> float:
    """The customer-based forecast's mean total error inside the calibration period: from
    origins at weeks 20, 24, 28 and 32 to week 39, the data after each origin unseen (the
    purchase model chosen as custval chooses it). Says whether the model's decay is too fast
    before the holdout is seen."""
    errors = []
    for week in (20, 24, 28, 32):  # four origins
        origin = date(1997, 1, 1) + timedelta(weeks=week)
        summary = btyd_summary_table(tx, origin, time_unit="weeks").to_pyarrow()
        x, rec, age = (
            summary.column(c).to_numpy().astype(np.float64) for c in ("frequency", "recency", "T")
        )
        model = choose_purchase_model(x, rec, age).purchases
        ends = np.arange(1, 40 - week, dtype=np.float64)
        point = customer_forecast(model, x, rec, age, ends)["existing"]
        errors.append(point.sum() / y[week:39].sum() - 1)
        say(f"   inside calibration, origin week {week}: customer-based total {errors[-1]:+.1%}")
    return float(np.mean(errors))


# ---- C. speed ---------------------------------------------------------------------------------


def child(kind: str, config: str) -> None:
    """One timed job in this process; prints its JSON report."""
    project = load_project(Path(config))
    tx = flows.prepare(project).tables["transactions"]
    start = time.perf_counter()
    if kind == "bottom-up":
        origin = project.as_of - timedelta(days=project.as_of.weekday())
        point = customer_based(tx, origin, horizon=52, freq="week", season=52)
        # the first call pays for imports (statsmodels, scipy's special functions): the
        # second is what a running process pays per forecast
        cold = time.perf_counter() - start
        start = time.perf_counter()
        point = customer_based(tx, origin, horizon=52, freq="week", season=52)
        out = {"total": float(point.sum()), "cold_seconds": cold}
    else:
        run = forecast(tx, project.as_of, freq="week", horizon=52, n_origins=2)
        out = {"chosen": str(run.leaderboard.loc[run.leaderboard["chosen"], "method"].iloc[0])}
    out["seconds"] = time.perf_counter() - start
    print(json.dumps(out))


def timed(kind: str, config: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(config)]
    env = {**os.environ, "CUSTVAL_MEMORY_LIMIT": DUCKDB_LIMIT}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out}\n{err}")
    report = json.loads(out.strip().splitlines()[-1])
    return {**report, "wall_s": wall, "peak_mib": usage.ru_maxrss / 1024}


def speed(n: int) -> bool:
    folder = DATA / f"forecast-scale-{n}"
    start = time.perf_counter()
    company = generate(n, folder, seed=0, fmt="parquet")
    say(f"C. {n:,} customers generated in {time.perf_counter() - start:.1f} s (3 years)")
    up = timed("bottom-up", company.config_path)
    say(
        f"   52-week customer-based forecast: {up['seconds']:.1f} s (the first, with the "
        f"imports: {up['cold_seconds']:.1f} s; wall with preparation {up['wall_s']:.1f} s, peak "
        f"{up['peak_mib']:,.0f} MiB); total {up['total']:,.0f}"
    )
    bt = timed("backtest", company.config_path)
    say(
        f"   the whole backtest (every candidate, customer-based included, 2 origins, horizon 52)"
        f": {bt['seconds']:.1f} s (wall {bt['wall_s']:.1f} s), peak {bt['peak_mib']:,.0f} MiB; "
        f"chosen {bt['chosen']}"
    )
    ok_up = up["seconds"] < 10
    ok_bt = bt["wall_s"] < 120 and bt["peak_mib"] < 4096
    say(
        f"   targets: under 10 s {'met' if ok_up else 'missed'}; under 120 s and 4 GB "
        f"{'met' if ok_bt else 'missed'}"
    )
    return ok_up and ok_bt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale-n", type=int, default=1_000_000)
    parser.add_argument("--skip-competitors", action="store_true")
    parser.add_argument("--cdnow", type=Path, default=CDNOW)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    DATA.mkdir(parents=True, exist_ok=True)
    say(f"# bench/forecast.py; load average at the start {os.getloadavg()[0]:.2f} (2 cores)")
    ok = generated(args.customers, args.seed, args.skip_competitors)
    say()
    ok &= cdnow(args.cdnow, args.skip_competitors)
    if args.scale_n:
        say()
        ok &= speed(args.scale_n)
    say(f"# load average at the end {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
