"""The whole CLV leaderboard on a million customers: every method trained and judged.

Data: a generated company of ``--customers`` (default 1,000,000; about 10M transactions, with
profiles, products, web and product usage) in Parquet under ``bench/.data/clv`` (made once and
reused; not timed). Timed: ``custval.flows.leaderboard.clv_leaderboard`` with the holdout the
last year of the data, as ``custval clv -c custval.toml --method auto --calibration-end ...
--holdout-end ...`` runs it: reading, checking and cleaning the sources, features at the four
training cutoffs and at the evaluation date, the BTYD fits (one per cutoff for the hybrid's
inputs, one for the BTYD candidate with its intervals), LightGBM, random forest, MLP and the
hybrid on at most 400,000 training rows, conformal intervals, predictions for every customer,
the metrics and decile tables, and the reasons of the chosen model for every customer.

Target (issue 8): under 10 minutes on 2 cores. Prints the leaderboard, the seconds and the peak
memory; exits 1 when the target is missed.

Run: ``.venv/bin/python bench/clv_scale.py [--customers N]``
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIMIT_S = 600.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    args = ap.parse_args()

    import pandas as pd

    from custval import flows
    from custval.config import load_project
    from custval.data.synth import generate
    from custval.flows.leaderboard import clv_leaderboard

    folder = HERE / ".data" / "clv" / str(args.customers)
    config = folder / "custval.toml"
    if not config.exists():
        print(f"generating {args.customers:,} customers into {folder} (once)", flush=True)
        generate(args.customers, folder, seed=11, fmt="parquet")
    project = load_project(config)
    holdout_end = project.as_of
    calibration = project.model_copy(update={"as_of": holdout_end - timedelta(weeks=52)})
    steps: list[tuple[float, str]] = []
    start = time.perf_counter()

    def note(msg: str) -> None:
        steps.append((time.perf_counter() - start, msg))
        print(f"{steps[-1][0]:7.1f} s  {msg}", flush=True)

    prepared = flows.prepare(calibration)
    note("prepared")
    board = clv_leaderboard(calibration, prepared, holdout_end=holdout_end, progress=note)
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    ev = board.evaluation
    print(
        f"\n{args.customers:,} customers generated, {ev['customers']:,} at the evaluation date "
        f"{ev['from']}; holdout to {ev['to']}, actual spend {ev['actual_total']:,.0f}; "
        f"{ev['training_rows']:,} training rows from {', '.join(ev['cutoffs'])}"
    )
    with pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format):
        print(board.leaderboard.to_string(index=False))
    explained = 0 if board.reasons is None else len(board.reasons)
    print(f"chosen: {board.chosen}; reasons for {explained:,} customers")
    met = seconds < LIMIT_S
    print(
        f"whole leaderboard: {seconds:.0f} s (target < {LIMIT_S:.0f} s: "
        f"{'met' if met else 'MISSED'}); peak memory {peak_gb:.2f} GB"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
