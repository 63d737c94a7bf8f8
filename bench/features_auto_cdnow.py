"""Generated features against hand-built ones on real customers, CDNOW (issue 23): do custval's
generated features raise a classifier's cross-validated ROC AUC over its hand-built ones?

Data: the CDNOW master file (23,570 customers, 69,659 purchases,
``../shared/data/cdnow/CDNOW_master.txt``), loaded by ``bench/value_cdnow.py`` (``load``: the
cleaned transactions customer_id, order_id (empty), timestamp, amount, is_refund; the number of
CDs is not kept, so the generated features aggregate the amount and the rows alone). Every
feature is computed at 1997-10-01 from weeks 1-39 only. Two labels over weeks 40-78
(1997-10-01 to 1998-06-30), for every customer:

- **value**: high when the spend is in the top 20% (customers who spend nothing are never
  high), as ``bench/value_cdnow.py`` labels it;
- **alive**: at least one purchase (a repeat one: every customer first bought in Q1 1997).

The feature sets: the hand-built features (:func:`custval.features.transactions.rfm_features`,
``one_row_per_order``, as ``bench/value_cdnow.py``: RFM, rhythm, trend); custval's generated
features (:func:`custval.features.generated.generate` on the transactions, the relation
declared here: ``Relation("transactions", "timestamp", numeric=("amount",),
money=("amount",))``), for each set of windows: the default (30, 90, 365 days) and (28, 91,
182) (4, 13 and 26 weeks, within the 39-week calibration), each with the whole history.

How compared: ``bench/features_auto_accuracy.py``'s one evaluator (custval's LightGBM candidate,
seed 0, 1 thread, ``infer_schema`` on the training rows, the same 5 stratified folds, seed 0)
and its ``measure``: (a) hand-built only; (b) + the generated features
:class:`custval.models.selection.FeatureSelector` (defaults, seed 0) chose when fitted on ALL
the rows (the selection saw the held-out folds: optimistic); (b') the selector fitted again in
each training fold (nested: honest); (c) + every generated feature. Per set: features, seconds
(hand-built; + generation; + selection), ROC AUC mean ± sd over the folds, and the paired
fold-wise difference to (a) (mean ± sd, folds up and down, t with 4 degrees of freedom). A
measurement, not a gate: exits 0.

Usage: ``.venv/bin/python bench/features_auto_cdnow.py [--labels value,alive]
[--windows "30,90,365;28,91,182"] [--no-nested] [--results FILE]``; writes
``bench/results/features_auto_cdnow.txt``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import features_auto_accuracy as faa  # noqa: E402
import value_cdnow  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "features_auto_cdnow.txt"
TOP_SHARE = 0.2
WINDOWS = "30,90,365;28,91,182"
say = faa.say


def hand_built(tx: Any) -> tuple[pd.DataFrame, list[str], float]:
    """The hand-built features at CAL_END (customer_id first), their names and seconds."""
    from custval.features.transactions import rfm_features

    start = time.perf_counter()
    feats = rfm_features(tx, value_cdnow.CAL_END, one_row_per_order=True).to_pandas()
    feats = feats.sort_values("customer_id").reset_index(drop=True)
    return feats, [c for c in feats.columns if c != "customer_id"], time.perf_counter() - start


def generated(tx: Any, spine: Any, windows: tuple[int, ...]) -> tuple[pd.DataFrame, float]:
    """custval's generated features of the spine's customers at CAL_END, and their seconds."""
    from custval.features.generated import Relation, check_relation, generate

    rel = Relation("transactions", "timestamp", numeric=("amount",), money=("amount",))
    tables = {"transactions": tx}
    check_relation(rel, tables, "CDNOW")
    start = time.perf_counter()
    table = generate(tables, spine, value_cdnow.CAL_END, [rel], windows).table.to_pandas()
    return table, time.perf_counter() - start


def labels(tx_df: pd.DataFrame, ids: pd.Series) -> dict[str, tuple[np.ndarray, str]]:
    """Each label's 0/1 values in the order of ``ids`` and what it is."""
    from custval.models.value import derive_value_label

    after = value_cdnow.holdout(tx_df, ids)
    value = derive_value_label(after.spend.to_numpy(), TOP_SHARE)
    cut = after.spend.to_numpy()[value == 1].min()
    return {
        "value": (value, f"spend in weeks 40-78 in the top {TOP_SHARE:.0%}, at least ${cut:.2f}"),
        "alive": ((after.days.to_numpy() > 0).astype(int), "a purchase in weeks 40-78"),
    }


def table(rows: list[faa.Row]) -> None:
    """The sets' line each: features, seconds, CV ROC AUC ± sd, paired difference to (a)."""
    base = rows[0]
    say(f"{'':5}{'feature set':<30}{'features':>9}{'seconds':>9}{'CV ROC AUC':>18}   paired vs (a)")
    for r in rows:
        diff = "" if r is base else faa.paired(r, base)
        say(
            f"({r.key}){'':<{3 - len(r.key)}}{r.name:<30}{r.features:>9}{r.seconds:>9.1f}"
            f"{np.mean(r.aucs):>11.4f} ± {np.std(r.aucs, ddof=1):.4f}   {diff}"
        )
    say(
        "  held-out ROC AUC per fold: "
        + "; ".join(f"({r.key}) " + " ".join(f"{v:.4f}" for v in r.aucs) for r in rows)
    )
    notes = [f"({r.key}) {r.note}" for r in rows if r.note]
    if notes:
        say("  " + "; ".join(notes))


def one_label(name: str, y: np.ndarray, what: str, frames: dict[str, Any], args: Any) -> None:
    """The label's table for each set of windows, and what the selector on all rows chose."""
    say(
        f"== {name} label: {y.size:,} customers, {int(y.sum()):,} positive ({y.mean():.1%}; {what})"
    )
    for windows, (frame, hand, gen, seconds) in frames.items():
        default = " (custval's default)" if windows == "30,90,365" else ""
        say(f"-- windows {windows} days + the whole history{default}: {len(gen)} generated")
        sets = faa.Sets(name, value_cdnow.CAL_END, y.astype(np.float64), frame, hand, gen)
        sets.seconds = dict(seconds)
        start = time.perf_counter()
        rows, selectors = faa.measure(sets, not args.no_nested)
        faa.seconds_line(sets)
        table(rows)
        sel = selectors["generated"]
        faa.selector_report("generated", sel, len(gen))
        if len(sel.chosen_) > 12:
            say("  all chosen: " + ", ".join(sel.chosen_))
        say(f"  (evaluation and selection: {time.perf_counter() - start:.1f} s)")
    say()


def feature_frames(con: Any, tx: Any, windows: list[str]) -> tuple[pd.Series, dict[str, Any]]:
    """The customers, and for each set of windows: the hand-built and generated features
    (customer_id first, sorted by it), the names of each and their seconds."""
    feats, hand, hand_seconds = hand_built(tx)
    spine = con.create_table("spine", feats[["customer_id"]])
    frames = {}
    for spec in windows:
        gen, seconds = generated(tx, spine, tuple(int(d) for d in spec.split(",")))
        names = [c for c in gen.columns if c != "customer_id"]
        frame = feats.merge(gen, on="customer_id", how="left", validate="1:1")
        frames[spec] = (frame, hand, names, {"hand": hand_seconds, "generated": seconds})
    return feats.customer_id, frames


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--labels", default="value,alive", help="value, alive or both")
    ap.add_argument("--windows", default=WINDOWS, help="sets of days, ';' between sets")
    ap.add_argument("--no-nested", action="store_true", help="skip (b')")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where to write the figures")
    return ap.parse_args()


def header() -> None:
    command = " ".join([".venv/bin/python", "bench/features_auto_cdnow.py", *sys.argv[1:]])
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "src"], capture_output=True, text=True, cwd=ROOT
    ).stdout.split()[1::2]
    say(f"# {command}   ({head or 'no git'})")
    say(
        f"# {datetime.now():%Y-%m-%d %H:%M}; load average at the start "
        f"{os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)"
        + (f"; uncommitted changes in {', '.join(dirty)}" if dirty else "")
    )


def main() -> int:
    args = arguments()
    header()
    if not value_cdnow.DATA.exists():
        say(f"{value_cdnow.DATA} is absent: nothing to measure")
        return 0
    import ibis

    tx_df = value_cdnow.load()
    con = ibis.duckdb.connect()
    tx = con.create_table("tx", tx_df)
    ids, frames = feature_frames(con, tx, args.windows.split(";"))
    say(
        f"CDNOW master: {ids.size:,} customers, {len(tx_df):,} purchases; features at "
        f"{value_cdnow.CAL_END} from weeks 1-39; {len(next(iter(frames.values()))[1])} hand-built"
    )
    say(
        f"evaluator: custval's LightGBM candidate (seed {faa.SEED}, {faa.THREADS} thread, early "
        f"stopping on a tenth of the training rows), {faa.FOLDS} stratified folds (seed "
        f"{faa.SEED}); selector: FeatureSelector() defaults, {faa.THREADS} thread"
    )
    say()
    found = labels(tx_df, ids)
    for name in args.labels.split(","):
        y, what = found[name.strip()]
        one_label(name.strip(), y, what, frames, args)
    say(f"# load average at the end {os.getloadavg()[0]:.2f}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(faa._lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
