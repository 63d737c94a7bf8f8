"""Fitting speed of custval's BG/NBD and Pareto/NBD, side by side with lifetimes 0.11.3.

lifetimes is a benchmark-only dependency. On first use the script creates its own virtual
environment in ``bench/.data/venv-lifetimes`` (``python3 -m venv``, then ``pip install -r
bench/requirements-lifetimes.txt``: lifetimes 0.11.3 with the NumPy < 2, pandas < 2 and
SciPy < 1.12 it needs under Python 3.11) and reuses it afterwards. lifetimes runs in that
environment through a subprocess; custval runs in a subprocess of the interpreter running this
script, so that each library's fit is timed alone (imports and data loading excluded) and
custval's peak memory (``resource.getrusage``, data included) is that of a fresh process.

Data: BTYD summaries (frequency, recency, T in weeks) simulated from a BG/NBD model with
r=0.25, alpha=4, a=0.8, b=2.5 (vectorised: purchases are Poisson(lambda T), the dropout is
geometric in the repeat purchases, the last purchase time is an order statistic of uniforms).
T is uniform in whole days from 1 to 78 weeks and the recency is rounded up to whole days, as in
a daily transaction log. Both libraries fit the same arrays, written once to ``bench/.data``.
Pareto/NBD is fitted to data from the same simulator.

Cases and targets (issue 3): BG/NBD on 1M customers at least 20x faster than lifetimes'
BetaGeoFitter and under 2 s; BG/NBD on 10M customers (custval only) under 10 s and under 4 GB
peak memory; Pareto/NBD on 100k customers at least 20x faster than lifetimes' ParetoNBDFitter;
12-month CLV (BG/NBD and Gamma-Gamma, weekly steps, 10% a year) with 90% intervals from 200
parameter draws for 1M customers under 10 s (models fitted beforehand, not timed). lifetimes
has no CLV intervals; its point-estimate CLV (12 monthly steps) is timed alongside for scale.
Spend is simulated from a Gamma-Gamma model (p=6, q=4, gamma=15).
A lifetimes fit that runs longer than ``--timeout`` seconds (default 120) is stopped and shown
as "> 120", the ratio then being a lower bound. Where lifetimes finishes, the fitted parameters
of the two libraries are compared (relative difference; 3 significant digits = 5e-3). Both use
their default settings (lifetimes' Pareto/NBD default is Nelder-Mead with tol=1e-4).

Whole process (issue 16): ``custval clv`` on the transactions of 1M customers, as a user runs
it, against lifetimes doing the same job, each a fresh process timed from start to exit: read
the Parquet file (about 2.2M rows: customer_id, date, amount), build the summary (same-day
purchases merged, time in weeks), fit BG/NBD and Gamma-Gamma, predict P(alive), the expected
purchases over 52 weeks, the expected spend and the point CLV (10% a year), write one Parquet
row per customer. custval: ``custval clv -t FILE --calibration-end END --model bgnbd --level 0
--discount D -o OUT``; lifetimes: ``summary_data_from_transaction_data`` (daily periods,
``freq_multiplier=7``), ``BetaGeoFitter``, ``GammaGammaFitter``, ``conditional_probability_alive``,
``conditional_expected_number_of_purchases_up_to_time``, ``customer_lifetime_value`` (12
monthly steps) and ``to_parquet``. The transactions are simulated from the same BG/NBD and
Gamma-Gamma models (purchase days, amounts per purchase). Wall and CPU seconds (user + system,
of the child) are printed; the target is a wall ratio of at least 8x. The two summaries are
checked to be equal customer by customer and the CLV totals compared. ``--repeat`` runs each
process several times and keeps the fastest (both sides alike).

Run: ``.venv/bin/python bench/btyd_scale.py`` (``-n``/``--quick``: 100k/1M/10k customers;
``--process-only``: the whole-process case alone).
Exits 1 when a target is missed. The output of the last full run is kept in
``bench/results/btyd_scale.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from competitor_env import venv_python

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"

R, ALPHA, A, B = 0.25, 4.0, 0.8, 2.5
MAX_DAYS = 78 * 7
PROCESS_END = "2026-01-01"
AGREE_RTOL = 5e-3

CLV_CHILD = r"""
import json, resource, sys, time
import numpy as np
from custval.models.btyd import BetaGeo, GammaGamma
from custval.models.clv import clv_interval
d = np.load(sys.argv[1])
f, r, t, m = d["frequency"], d["recency"], d["T"], d["monetary_value"]
bg = BetaGeo().fit(f, r, t)
gg = GammaGamma().fit(f, m)
t0 = time.perf_counter()
# 12 months in weeks, 10% a year, 90% intervals from 200 draws of both models' parameters
iv = clv_interval(bg, gg, f, r, t, m, horizon=52, discount=1.1 ** (1 / 52) - 1, level=0.9,
                  n_draws=200)
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
est, lo, hi = iv.total
inside = float(np.mean((iv.lower <= iv.estimate) & (iv.estimate <= iv.upper)))
print(json.dumps({"wall": wall, "peak_bytes": peak, "total": [est, lo, hi],
                  "method": iv.method, "surrogate_error": iv.surrogate_error,
                  "median_rel_width": float(np.median((iv.upper - iv.lower) / iv.estimate)),
                  "estimate_inside": inside}))
"""

CUSTVAL_CHILD = r"""
import json, resource, sys, time
import numpy as np
from custval.models.btyd import BetaGeo, ParetoNBD
d = np.load(sys.argv[2])
f, r, t = d["frequency"], d["recency"], d["T"]
model = {"bgnbd": BetaGeo, "pnbd": ParetoNBD}[sys.argv[1]]()
t0 = time.perf_counter()
model.fit(f, r, t)
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"wall": wall, "params": model.params_, "peak_bytes": peak,
                  "converged": bool(model.converged_), "n_iter": int(model.n_iter_),
                  "loglik": float(model.log_likelihood_)}))
"""

LIFETIMES_CHILD = r"""
import json, signal, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
import pandas as pd
from lifetimes import BetaGeoFitter, ParetoNBDFitter
d = np.load(sys.argv[2])
f, r, t = (pd.Series(d[k]) for k in ("frequency", "recency", "T"))
model = {"bgnbd": BetaGeoFitter, "pnbd": ParetoNBDFitter}[sys.argv[1]]()
limit = float(sys.argv[3])

class Timeout(Exception):
    pass

def _alarm(signum, frame):
    raise Timeout

signal.signal(signal.SIGALRM, _alarm)
signal.setitimer(signal.ITIMER_REAL, limit)
t0 = time.perf_counter()
try:
    model.fit(f, r, t)
except Timeout:
    print(json.dumps({"timeout": True, "wall": time.perf_counter() - t0}))
    sys.exit(0)
except Exception as exc:
    signal.setitimer(signal.ITIMER_REAL, 0)
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300],
                      "wall": time.perf_counter() - t0}))
    sys.exit(0)
wall = time.perf_counter() - t0
signal.setitimer(signal.ITIMER_REAL, 0)
print(json.dumps({"wall": wall, "params": {k: float(v) for k, v in model.params_.items()}}))
"""

LIFETIMES_CLV_CHILD = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
d = np.load(sys.argv[1])
f, r, t, m = (pd.Series(d[k]) for k in ("frequency", "recency", "T", "monetary_value"))
bgf = BetaGeoFitter().fit(f, r, t)
rep = f > 0
ggf = GammaGammaFitter().fit(f[rep], m[rep])
t0 = time.perf_counter()
# lifetimes: 12 monthly steps (time in months, data in weeks), point estimates only
clv = ggf.customer_lifetime_value(bgf, f, r, t, m, time=12, discount_rate=0.0080, freq="W")
print(json.dumps({"wall": time.perf_counter() - t0, "total": float(clv.sum())}))
"""

LIFETIMES_PROCESS_CHILD = r"""
import sys, warnings
warnings.filterwarnings("ignore")
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import summary_data_from_transaction_data
path, out, end, per_month = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
tx = pd.read_parquet(path)
s = summary_data_from_transaction_data(tx, "customer_id", "date", monetary_value_col="amount",
                                       observation_period_end=end, freq="D", freq_multiplier=7)
f, r, t, m = s["frequency"], s["recency"], s["T"], s["monetary_value"]
bgf = BetaGeoFitter().fit(f, r, t)
rep = (f > 0) & (m > 0)
ggf = GammaGammaFitter().fit(f[rep], m[rep])
s["p_alive"] = bgf.conditional_probability_alive(f, r, t)
s["expected_purchases"] = bgf.conditional_expected_number_of_purchases_up_to_time(52, f, r, t)
s["expected_spend"] = ggf.conditional_expected_average_profit(f, m)
s["clv"] = ggf.customer_lifetime_value(bgf, f, r, t, m, time=12, discount_rate=per_month,
                                       freq="W").to_numpy()
s.reset_index().to_parquet(out, index=False)
"""

VERSIONS_CHILD = r"""
import json, sys, autograd, lifetimes, numpy, pandas, scipy
from importlib.metadata import version
print(json.dumps({"python": sys.version.split()[0], "lifetimes": lifetimes.__version__,
                  "numpy": numpy.__version__, "pandas": pandas.__version__,
                  "scipy": scipy.__version__, "autograd": version("autograd")}))
"""


def lifetimes_python() -> Path:
    """The lifetimes environment's interpreter (made on first use)."""
    return venv_python("lifetimes", "lifetimes 0.11.3")


def simulate_bgnbd(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """BTYD summaries of ``n`` BG/NBD customers (weeks), vectorised."""
    lam = rng.gamma(R, 1.0 / ALPHA, n)  # purchase rate per week
    p = rng.beta(A, B, n)  # dropout probability after each repeat purchase
    t_days = rng.integers(1, MAX_DAYS + 1, n)
    t_weeks = t_days / 7.0
    n_events = rng.poisson(lam * t_weeks)  # repeat purchases in (0, T] had the customer stayed
    last = rng.geometric(p)  # index of the repeat purchase after which the customer drops out
    x = np.minimum(n_events, last)
    rec_days = np.zeros(n)
    buy = x > 0
    # the x-th of n_events uniform order statistics on (0, T] is T * Beta(x, n_events - x + 1)
    u = rng.beta(x[buy], n_events[buy] - x[buy] + 1)
    rec_days[buy] = np.clip(np.ceil(u * t_days[buy]), 1, t_days[buy])
    return {"frequency": x.astype(np.int64), "recency": rec_days / 7.0, "T": t_weeks}


def add_spend(data: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """Mean repeat spend per customer from a Gamma-Gamma model (p=6, q=4, gamma=15)."""
    x = data["frequency"]
    nu = rng.gamma(4.0, 1 / 15.0, x.size)
    mean = rng.gamma(6.0 * np.maximum(x, 1), 1.0) / (nu * np.maximum(x, 1))
    data["monetary_value"] = np.where(x > 0, mean.round(2), 0.0)


def simulate_transactions(n: int, rng: np.random.Generator) -> pa.Table:
    """The purchases of ``n`` BG/NBD customers over 78 weeks up to ``PROCESS_END`` (exclusive),
    one row each (customer_id, date, amount), with Gamma-Gamma amounts; vectorised."""
    lam = rng.gamma(R, 1.0 / ALPHA, n)
    p = rng.beta(A, B, n)
    t_days = rng.integers(1, MAX_DAYS + 1, n)  # days from the first purchase to the end
    n_events = rng.poisson(lam * t_days / 7.0)
    x = np.minimum(n_events, rng.geometric(p))  # repeat purchases before dropping out
    cust = np.repeat(np.arange(n), x + 1)
    first = np.r_[0, np.cumsum(x + 1)[:-1]]
    last = np.r_[first[1:], cust.size] - 1
    # the last repeat purchase is the x-th of n_events uniform times on (0, T], the others
    # uniform before it
    buy = x > 0
    v = np.zeros(n)
    v[buy] = t_days[buy] * rng.beta(x[buy], n_events[buy] - x[buy] + 1)
    u = rng.random(cust.size) * v[cust]
    u[last] = v[cust[last]]
    days = np.clip(np.ceil(u), 1, t_days[cust] - 1)
    days[first] = 0
    start = np.datetime64(PROCESS_END, "D") - MAX_DAYS
    when = start + (MAX_DAYS - t_days[cust] + days).astype("timedelta64[D]")
    nu = rng.gamma(4.0, 1 / 15.0, n)
    amount = np.round(rng.gamma(6.0, 1.0, cust.size) / nu[cust], 2)
    return pa.table({"customer_id": cust, "date": when, "amount": amount})


def timed(cmd: list[str], timeout: float, repeat: int) -> dict:
    """The fastest of ``repeat`` runs of ``cmd``: wall and CPU seconds (user + system).

    The child runs with Python's bytecode cache on, as an installed package has it (pip writes
    it at install time): a session that sets PYTHONDONTWRITEBYTECODE would otherwise compile
    every module of the project from source in every run, which no user pays."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    best: dict = {}
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"timeout": True}
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return {"error": f"exit {done.returncode}: " + " | ".join(tail)}
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if not best or wall < best["wall"]:
            best = {"wall": wall, "cpu": cpu}
    return best


def whole_process(n: int, rng: np.random.Generator, lt_py: Path | None, repeat: int) -> Case:
    """custval clv and lifetimes, each a whole process on the same transactions file."""
    import pyarrow.parquet as pq

    case = Case(f"clv process {fmt_n(n)}", "process", n, lt_py is not None, ">=8x (wall)")
    folder = DATA / "btyd_scale"
    path = folder / f"transactions_{n}.parquet"
    t0 = time.perf_counter()
    tx = simulate_transactions(n, rng)
    pq.write_table(tx, path)
    print(
        f"{case.name}: simulated {tx.num_rows:,} purchases of {n:,} customers in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    del tx
    per_week = 1.1 ** (1 / 52) - 1
    cv_out, lt_out = folder / "clv_custval.parquet", folder / "clv_lifetimes.parquet"
    custval = [str(Path(sys.executable).with_name("custval")), "clv", "-t", str(path)]
    custval += ["--calibration-end", PROCESS_END, "--model", "bgnbd", "--level", "0"]
    custval += ["--discount", repr(per_week), "-o", str(cv_out)]
    case.custval = timed(custval, 600, repeat)
    print(f"  custval: {json.dumps(case.custval)}", flush=True)
    if lt_py is not None:
        per_month = 1.1 ** (1 / 12) - 1
        lifetimes = [str(lt_py), "-c", LIFETIMES_PROCESS_CHILD, str(path), str(lt_out)]
        # custval's T runs to the last day observed, the day before the calibration end (as in
        # the literature); lifetimes' to its observation_period_end
        last_day = str(np.datetime64(PROCESS_END, "D") - 1)
        case.lifetimes = timed([*lifetimes, last_day, repr(per_month)], 900, repeat)
        print(f"  lifetimes: {json.dumps(case.lifetimes)}", flush=True)
    if "wall" in case.custval and "wall" in case.lifetimes:
        case.notes.append(same_job(pq.read_table(cv_out), pq.read_table(lt_out)))
    return case


def same_job(cv: pa.Table, lt: pa.Table) -> str:
    """Whether the two outputs hold the same customers and summaries, and their CLV totals."""
    # custval's cleaning keeps ids as text
    a, b = cv.to_pandas(), lt.to_pandas()
    a = a.set_index(a.customer_id.astype(str)).sort_index()
    b = b.set_index(b.customer_id.astype(str)).sort_index()
    same = a.index.equals(b.index) and all(
        np.allclose(a[c], b[c], rtol=0, atol=1e-9) for c in ("frequency", "recency", "T")
    )
    spend = np.allclose(a.monetary_value, b.monetary_value, rtol=1e-9, atol=1e-9)
    return (
        f"{len(a):,} customers; summaries (frequency, recency, T) "
        f"{'identical' if same else 'DIFFER'}, mean repeat spend "
        f"{'identical' if spend else 'DIFFERS'}; P(alive) max abs diff "
        f"{np.abs(a.p_alive - b.p_alive).max():.1e}; total CLV custval {a.clv.sum():,.0f} "
        f"(weekly steps), lifetimes {b.clv.sum():,.0f} (monthly steps)"
    )


def run_child(cmd: list[str], timeout: float) -> dict:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timeout": True}
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {out.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


@dataclass
class Case:
    name: str
    model: str  # "bgnbd" or "pnbd"
    n: int
    with_lifetimes: bool
    target: str
    custval: dict = field(default_factory=dict)
    lifetimes: dict = field(default_factory=dict)
    met: str = ""
    notes: list[str] = field(default_factory=list)


def fmt_n(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def fmt_ratio(ratio: float) -> str:
    """lifetimes time / custval time, e.g. 12x or 0.71x."""
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def judge(case: Case, timeout: float) -> None:
    cv, lt = case.custval, case.lifetimes
    if "wall" not in cv:
        case.met = "no"
        case.notes.append(f"custval failed: {cv.get('error', 'timeout')}")
        return
    wall = cv["wall"]
    if case.model == "clv":
        case.met = "yes" if wall < 10 else "no"
        est, lo, hi = cv["total"]
        lt_total = case.lifetimes.get("total")
        case.notes.append(
            f"total CLV {est:,.0f} (90% interval {lo:,.0f} to {hi:,.0f}); median interval width "
            f"{cv['median_rel_width']:.1%} of the estimate; draws evaluated by the "
            f"{cv['method']} method (surrogate error {cv['surrogate_error']:.3f} sd); lifetimes "
            "computes no interval"
            + (f" (its point total, monthly steps: {lt_total:,.0f})" if lt_total else "")
        )
        return
    if case.model == "process":
        lt_wall = case.lifetimes.get("wall")
        case.met = "yes" if lt_wall and lt_wall / wall >= 8 else ("no" if lt_wall else "unknown")
        if lt_wall:
            case.notes.insert(
                0,
                f"wall {wall:.2f} s against {lt_wall:.2f} s ({lt_wall / wall:.1f}x); CPU "
                f"{cv['cpu']:.2f} s against {case.lifetimes['cpu']:.2f} s "
                f"({case.lifetimes['cpu'] / cv['cpu']:.1f}x)",
            )
        return
    if case.model == "bgnbd" and not case.with_lifetimes:
        peak_gb = cv["peak_bytes"] / 1e9
        case.met = "yes" if wall < 10 and peak_gb < 4 else "no"
        return
    ok_abs = wall < 2 if case.model == "bgnbd" else True
    if lt.get("timeout"):
        bound = timeout / wall
        case.met = "yes" if bound >= 20 and ok_abs else ("no" if not ok_abs else "unknown")
    elif "params" in lt:
        case.met = "yes" if lt["wall"] / wall >= 20 and ok_abs else "no"
        rel = {k: abs(cv["params"][k] - v) / abs(v) for k, v in lt["params"].items() if v != 0}
        worst = max(rel, key=rel.get)
        agree = "agree" if rel[worst] <= AGREE_RTOL else "DISAGREE"
        case.notes.append(
            f"parameters {agree} to max rel diff {rel[worst]:.1e} ({worst}); "
            + "custval "
            + ", ".join(f"{k}={v:.5g}" for k, v in cv["params"].items())
            + "; lifetimes "
            + ", ".join(f"{k}={v:.5g}" for k, v in lt["params"].items())
        )
    else:
        case.met = "unknown"
        case.notes.append(f"lifetimes failed: {lt['error']}" if lt else "lifetimes not run")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--quick", action="store_true", help="100k / 1M / 10k customers")
    ap.add_argument("--timeout", type=float, default=120.0, help="lifetimes limit per fit, s")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--no-lifetimes", action="store_true", help="custval columns only")
    ap.add_argument("--process-only", action="store_true", help="the whole-process case alone")
    ap.add_argument("--repeat", type=int, default=1, help="whole process: keep the fastest run")
    args = ap.parse_args()

    n_bg, n_big, n_pn = (
        (100_000, 1_000_000, 10_000)
        if args.quick
        else (
            1_000_000,
            10_000_000,
            100_000,
        )
    )
    cases = [
        Case(f"BG/NBD {fmt_n(n_bg)}", "bgnbd", n_bg, True, ">=20x and < 2 s"),
        Case(f"BG/NBD {fmt_n(n_big)}", "bgnbd", n_big, False, "< 10 s and < 4 GB"),
        Case(f"Pareto/NBD {fmt_n(n_pn)}", "pnbd", n_pn, True, ">=20x"),
        Case(f"CLV 90% int. {fmt_n(n_bg)}", "clv", n_bg, True, "< 10 s"),
    ]

    lt_py = None
    if not args.no_lifetimes:
        lt_py = lifetimes_python()
        versions = run_child([str(lt_py), "-c", VERSIONS_CHILD], 120)
        print("lifetimes environment:", ", ".join(f"{k} {v}" for k, v in versions.items()))

    out_dir = DATA / "btyd_scale"
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    if args.process_only:
        cases = []
    for case in cases:
        t0 = time.perf_counter()
        data = simulate_bgnbd(case.n, rng)
        if case.model == "clv":
            add_spend(data, rng)
        path = out_dir / f"{case.model}_{case.n}.npz"
        np.savez(path, **data)
        rep = (data["frequency"] > 0).mean()
        print(
            f"{case.name}: simulated {case.n:,} customers in {time.perf_counter() - t0:.1f} s "
            f"({rep:.1%} repeat buyers, mean frequency {data['frequency'].mean():.2f})",
            flush=True,
        )
        del data
        if case.model == "clv":
            case.custval = run_child([sys.executable, "-c", CLV_CHILD, str(path)], 600)
            print(f"  custval: {json.dumps(case.custval)}", flush=True)
            if lt_py is not None:
                case.lifetimes = run_child([str(lt_py), "-c", LIFETIMES_CLV_CHILD, str(path)], 900)
                print(f"  lifetimes (point estimates only): {json.dumps(case.lifetimes)}")
            judge(case, args.timeout)
            continue
        case.custval = run_child([sys.executable, "-c", CUSTVAL_CHILD, case.model, str(path)], 600)
        print(f"  custval: {json.dumps(case.custval)}", flush=True)
        if case.with_lifetimes and lt_py is not None:
            case.lifetimes = run_child(
                [str(lt_py), "-c", LIFETIMES_CHILD, case.model, str(path), str(args.timeout)],
                args.timeout + 120,
            )
            print(f"  lifetimes: {json.dumps(case.lifetimes)}", flush=True)
        judge(case, args.timeout)

    process = whole_process(n_bg, rng, lt_py, args.repeat)
    judge(process, args.timeout)
    cases.append(process)

    header = (
        f"{'case':<16} {'custval s':>9} {'peak GB':>7} {'lifetimes s':>11} {'ratio':>8}  "
        f"{'target':<18} met"
    )
    print()
    print(header)
    print("-" * len(header))
    for c in cases:
        cv, lt = c.custval, c.lifetimes
        cv_s = f"{cv['wall']:.2f}" if "wall" in cv else "failed"
        peak = f"{cv['peak_bytes'] / 1e9:.2f}" if "peak_bytes" in cv else "-"
        if not c.with_lifetimes or lt_py is None:
            lt_s, ratio = "-", "-"
        elif lt.get("timeout"):
            lt_s = f"> {args.timeout:.0f}"
            ratio = f"> {fmt_ratio(args.timeout / cv['wall'])}" if "wall" in cv else "-"
        elif "params" in lt or "total" in lt or "cpu" in lt:
            lt_s = f"{lt['wall']:.1f}"
            ratio = fmt_ratio(lt["wall"] / cv["wall"]) if "wall" in cv else "-"
        else:
            lt_s, ratio = "failed", "-"
        print(f"{c.name:<16} {cv_s:>9} {peak:>7} {lt_s:>11} {ratio:>8}  {c.target:<18} {c.met}")
    for c in cases:
        for note in c.notes:
            print(f"{c.name}: {note}")
    if args.quick:
        print("quick run: sizes reduced; the targets are stated for 1M / 10M / 100k customers")
    return 0 if all(c.met == "yes" for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
