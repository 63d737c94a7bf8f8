"""Generated features against hand-built ones and Featuretools' DFS (issue 23): does the
selection of custval's generated features raise a classifier's cross-validated ROC AUC, and is
it at least as high as with Featuretools' Deep Feature Synthesis on the same tables?

Data: the generated company (``custval synth -n 20000 --format parquet --seed 1``), every
source. Two labels, each at its own cutoff, features computed at the cutoff from earlier rows:

- **value**: high when a customer's spend in the 52 weeks after the cutoff c = as-of - 52
  weeks is in the top 20% (:func:`custval.flows.preparation.future_spend` and
  :func:`custval.models.value.derive_value_label`, as ``custval train`` labels it), for every
  customer of the feature table at c (:func:`custval.flows.preparation.training_rows`);
- **lapse**: bench/churn.py part (b): c = as-of - 13 weeks, BG/NBD fitted on the BTYD
  summary at c, a lapse in the 13 weeks after c (:func:`custval.models.churn.lapse_label`,
  k = ln 20), for every customer with a purchase before c;
- **cancellation**, the churn label ``custval churn`` uses for this company (it has
  subscriptions): c = as-of - 91 days, the subscribers active at c, 1 when they cancel in the
  91 days after (:func:`custval.features.subscriptions.cancelled_between`). Its hand-built set
  has the BTYD columns ``custval churn`` adds (P(alive), the expected gap...). The planted
  hazard moves with time (tenure, a stop in purchases, complaints in the last 8 weeks:
  ``custval.data.synth_actions``), so a customer's recent weeks say more than her totals.

The feature sets, at the cutoff: the hand-built features
(:func:`custval.flows.preparation.features`, the key columns left out); custval's generated
features (:func:`custval.flows.generation.auto_features`, the names with ``__``); Featuretools'
DFS features (``bench/featuretools_dfs.py``: the same cleaned tables exported by custval, DFS at
depth 2 in its own virtual environment with pandas 2, the same cutoff, joined to the hand-built
features by customer_id). :class:`custval.models.selection.FeatureSelector` (default settings,
seed 0) chooses among the generated, or the DFS, features with the hand-built ones as base.

How compared: ONE evaluator for every set: custval's LightGBM candidate
(:class:`custval.models.candidates.LightGBM`, seed 0: the value model's settings and its early
stopping on a tenth of the training rows; 1 thread, as the selector's, see ``THREADS``), the
columns encoded by
:func:`custval.models.encoding.infer_schema` learned on the training rows (text columns, such as
DFS's MODE features, as categories), the same 5 stratified folds (seed 0). Per set: the ROC AUC
on each held-out fold, its mean ± sd, and the paired fold-wise differences. The sets:

(a) hand-built only; (b) hand-built + the generated features the selector chose when fitted on
ALL the rows (as ``custval train --auto-features`` does before cross-validating: the selection
saw the held-out folds, so (b) is optimistic); (b') the same, the selector fitted again inside
each training fold and the held-out fold scored with its choice (nested: an honest estimate);
(c) hand-built + every generated feature; (d) hand-built + every DFS feature; (e) hand-built +
the DFS features the selector chose on all rows, and (e') nested, as (b'). For the
cancellation label also (p): hand-built + the complaints of the last 56 days, the one windowed
quantity the planted hazard reads (an oracle: what the best generated feature could add).

Seconds: the hand-built features (:func:`features` and the table to pandas); the generated ones
(:func:`auto_features` and the table to pandas: it materialises the hand-built table it joins
to); DFS (the child's wall time: interpreter start, reading the Parquet, the EntitySet, DFS;
custval's export of the tables, with its own preparation of the project, is shown apart); the
selector's fit on all rows, and the nested fits in total.

``--usage-fade-weeks W`` measures a company whose related tables carry a sign of leaving that
purchases do not show: a leaver's product use fades in a straight line over her last W weeks
(``SynthParams.usage_fade_weeks``; the default company keeps it steady to the end, and then
its counts and days since the last row, which the hand-built features hold, say all there is
to say). ``--use-days-per-week D`` makes the use denser (``product_active_day_prob`` = D / 7;
0.35 days a week by default, too sparse for a fade to show). A positive control: with
``--use-days-per-week 3 --usage-fade-weeks 12`` the selection should keep generated features,
and with ``--use-days-per-week 3`` alone, none (on all rows).

Targets (issue 23), per label: (1) (b) above (a); (2) (b) at least as high as (d). Judged on
the mean over the folds; the verdicts are also given for the nested (b'), and the paired
differences' spread says whether a gap is beyond the folds' noise. A measurement, not a gate:
exits 0 whatever the verdicts.

Usage: ``.venv/bin/python bench/features_auto_accuracy.py [-n 20000] [--seed 1]
[--company DIR] [--dfs-windows all] [--results FILE] [--labels value,lapse,cancellation]
[--no-nested] [--skip-dfs] [--threads 1] [--usage-fade-weeks 12] [--use-days-per-week 3]``; writes
``bench/results/features_auto_accuracy.txt``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
RESULTS = ROOT / "bench" / "results" / "features_auto_accuracy.txt"
VALUE_WEEKS = 52
TOP_SHARE = 0.2
LAPSE_WEEKS = 13
#: ``custval churn``'s horizon (``horizon_days``): its label and cutoff for cancellations
CANCEL_DAYS = 91
FOLDS = 5
SEED = 0
#: LightGBM's threads (``--threads``): on this 2-core machine shared with other work, 2
#: OpenMP threads ran 40x slower than 1 (busy-waiting), with the same AUCs to the last digit
THREADS = 1

Array = npt.NDArray[np.float64]
Splits = list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]

_lines: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    _lines.append(text)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


@dataclass
class Sets:
    """One label's customers, labels, feature table and the names of each feature set."""

    label: str
    cut: date
    y: Array
    frame: pd.DataFrame
    hand: list[str]
    generated: list[str]
    dfs: list[str] = field(default_factory=list)
    planted: list[str] = field(default_factory=list)  # the planted mechanism's own features
    seconds: dict[str, float] = field(default_factory=dict)
    dfs_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    """A feature set's line of the table: its features, seconds and held-out fold AUCs."""

    key: str
    name: str
    features: int
    seconds: float
    aucs: Array
    note: str = ""


# ---- the company and its features -----------------------------------------------------------


def company(
    folder: Path, customers: int, seed: int, fade_weeks: float = 0.0, use_days: float = 0.0
) -> Any:
    """The generated company's project, generated first when ``folder`` has no custval.toml;
    with ``fade_weeks``, a leaver's product use fades over her last weeks
    (:attr:`custval.data.synth.SynthParams.usage_fade_weeks`); with ``use_days``, customers use
    the product on that many days a week on average (default 0.35)."""
    from custval.config import load_project
    from custval.data import synth

    if not (folder / "custval.toml").exists():
        params = synth.SynthParams(usage_fade_weeks=fade_weeks)
        if use_days:
            params = replace(params, product_active_day_prob=use_days / 7)
        synth.generate(customers, folder, seed=seed, fmt="parquet", params=params)
    return load_project(folder / "custval.toml")


def custval_features(project: Any, prepared: Any, cut: date) -> tuple[pd.DataFrame, Any]:
    """The hand-built and generated features at ``cut`` (customer_id first, sorted by it),
    the hand-built names, the generated names and the seconds of each."""
    from custval.features.generated import is_generated
    from custval.flows.generation import auto_features
    from custval.flows.preparation import features, training_rows

    start = time.perf_counter()
    ft = features(project, prepared, as_of=cut)
    hand_table, _ = training_rows(project, ft)
    hand_seconds = time.perf_counter() - start
    start = time.perf_counter()
    full, _ = training_rows(project, auto_features(project, prepared, ft))
    gen_seconds = time.perf_counter() - start
    keys = {f.name for f in ft.catalogue if f.role != "feature"}
    hand = [c for c in hand_table.columns if c not in keys]
    generated = [c for c in full.columns if is_generated(c)]
    table = hand_table[["customer_id", *hand]].merge(
        full[["customer_id", *generated]], on="customer_id", how="left", validate="1:1"
    )
    return table, (hand, generated, hand_seconds, gen_seconds)


def value_label(prepared: Any, table: pd.DataFrame, cut: date) -> tuple[Array, Array]:
    """Every customer of the table, high when the spend in the 52 weeks after ``cut`` is in
    the top 20% (``custval.flows.value._future_value_label``)."""
    from custval.flows.preparation import future_spend
    from custval.models.value import derive_value_label

    end = cut + timedelta(weeks=VALUE_WEEKS)
    spend = future_spend(prepared, table["customer_id"], cut, end)
    return np.ones(len(table), dtype=bool), derive_value_label(spend, TOP_SHARE)


def churn_label(project: Any, prepared: Any, table: pd.DataFrame, cut: date) -> Any:
    """The customers with a purchase before ``cut`` and their lapse in the 13 weeks after
    (bench/churn.py ``lapses``: BG/NBD on the BTYD summary at the cutoff)."""
    from churn import lapses
    from custval.models.btyd import BetaGeo

    rft = table[["frequency", "recency", "T"]].dropna()
    bg = BetaGeo().fit(rft.frequency, rft.recency, rft["T"])
    return lapses(project, prepared, table, bg, cut, LAPSE_WEEKS)


def with_dfs(sets: Sets, toml: Path, windows: str, work: Path) -> None:
    """Featuretools' DFS at the label's cutoff on the tables custval exports, its features
    joined to the label's customers by customer_id (a column renamed ``dfs:`` + name where a
    hand-built or generated one has its name)."""
    import featuretools_dfs

    tables = work / f"tables-{sets.label}"
    start = time.perf_counter()
    exported = featuretools_dfs.export(toml, tables, sets.cut)
    sets.seconds["export"] = time.perf_counter() - start
    out = work / f"dfs-{sets.label}.parquet"
    info = featuretools_dfs.run(tables, out, depth=2, windows=windows)
    sets.seconds["dfs"] = float(info["child_seconds"])
    dfs = pd.read_parquet(out).set_index("customer_id")
    taken = set(sets.frame.columns)
    dfs.columns = [f"dfs:{c}" if c in taken else str(c) for c in dfs.columns]
    ids = sets.frame["customer_id"]
    missing = int((~ids.isin(dfs.index)).sum())
    joined = dfs.reindex(ids.to_numpy()).reset_index(drop=True)
    sets.frame = pd.concat([sets.frame.reset_index(drop=True), joined], axis=1)
    sets.dfs = list(dfs.columns)
    sets.dfs_info = {**info, "missing_customers": missing, "exported_rows": exported["rows"]}


def cancellation_label(prepared: Any, table: pd.DataFrame, cut: date) -> Any:
    """The subscribers active at ``cut`` and whether they cancel in the 91 days after
    (:func:`custval.features.subscriptions.cancelled_between`, as ``custval churn`` labels a
    company with subscriptions)."""
    from custval.features.subscriptions import cancelled_between

    end = cut + timedelta(days=CANCEL_DAYS)
    got = cancelled_between(prepared.tables["subscriptions"], cut, end).to_pandas()
    y = pd.Series(got.cancelled.to_numpy(np.float64), index=got.customer_id.astype(str))
    ids = table["customer_id"].astype(str)
    keep = ids.isin(y.index).to_numpy()
    return keep, y.reindex(ids[keep]).to_numpy()


def with_btyd(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``table`` with the BTYD columns ``custval churn`` adds to its features (BG/NBD fitted on
    the customers who bought; :func:`custval.models.churn.btyd_churn_features`), and their
    names."""
    from custval.models.btyd import BetaGeo
    from custval.models.churn import btyd_churn_features

    buyers = table[["frequency", "recency", "T"]].notna().all(axis=1).to_numpy()
    summary = table.loc[buyers, ["frequency", "recency", "T"]]
    bg = BetaGeo().fit(summary.frequency, summary.recency, summary["T"])
    extra = btyd_churn_features(bg, summary.reset_index(drop=True), CANCEL_DAYS / 7)
    extra.index = table.index[buyers]
    return table.join(extra), list(extra.columns)


def label_sets(project: Any, prepared: Any, label: str) -> Sets:
    """The label's cutoff, its customers, their labels and custval's features at the cutoff."""
    days = {"value": VALUE_WEEKS * 7, "lapse": LAPSE_WEEKS * 7, "cancellation": CANCEL_DAYS}
    cut = project.as_of - timedelta(days=days[label])
    table, (hand, generated, hand_seconds, gen_seconds) = custval_features(project, prepared, cut)
    if label == "value":
        keep, y = value_label(prepared, table, cut)
    elif label == "lapse":
        keep, y = churn_label(project, prepared, table, cut)
    else:
        keep, y = cancellation_label(prepared, table, cut)
        table, btyd = with_btyd(table)
        hand = [*hand, *btyd]
        table = table.copy()  # one block: the column below is added to a joined frame
        table["planted_complaints_56d"] = recent_complaints(prepared, table, cut, 56)
    known = np.isfinite(y)
    rows = table[keep].reset_index(drop=True)[known].reset_index(drop=True)
    seconds = {"hand": hand_seconds, "generated": gen_seconds}
    planted = [c for c in rows.columns if c.startswith("planted_")]
    return Sets(
        label,
        cut,
        y[known].astype(np.float64),
        rows,
        hand,
        generated,
        planted=planted,
        seconds=seconds,
    )


def recent_complaints(prepared: Any, table: pd.DataFrame, cut: date, days: int) -> Array:
    """Each customer's complaint tickets in the ``days`` before ``cut``: the planted
    cancellation hazard doubles with each of the last 8 weeks' (``custval.data.synth_actions``),
    so this is the one windowed feature the planted mechanism reads."""
    import ibis

    t = prepared.tables["interactions"]
    start = ibis.timestamp(pd.Timestamp(cut - timedelta(days=days)).to_pydatetime())
    end = ibis.timestamp(pd.Timestamp(cut).to_pydatetime())
    recent = t.filter((t.kind == "complaint") & (t.timestamp >= start) & (t.timestamp < end))
    counts = recent.group_by("customer_id").aggregate(n=recent.count()).to_pandas()
    found = table["customer_id"].map(counts.set_index("customer_id").n)
    return found.fillna(0).to_numpy(np.float64)


# ---- the one evaluator ----------------------------------------------------------------------


def folds(y: Array) -> Splits:
    """The 5 stratified folds (seed 0) every feature set is judged on."""
    from sklearn.model_selection import StratifiedKFold

    split = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)
    return list(split.split(np.zeros(y.size), y))


def fold_auc(data: pd.DataFrame, y: Array, columns: list[str], train: Any, test: Any) -> float:
    """Held-out ROC AUC of custval's LightGBM candidate trained on ``train`` with ``columns``
    (encoded by the schema learned on the training rows)."""
    from sklearn.metrics import roc_auc_score

    from custval.models.candidates import LightGBM
    from custval.models.encoding import infer_schema

    fit_rows = data.iloc[train]
    schema = infer_schema(fit_rows[columns])
    model = LightGBM(SEED, THREADS).fit(schema, fit_rows, y[train])
    return float(roc_auc_score(y[test], model.raw_score(schema, data.iloc[test])))


def cv_aucs(data: pd.DataFrame, y: Array, columns: list[str], splits: Splits) -> Array:
    return np.array([fold_auc(data, y, columns, train, test) for train, test in splits])


def select(data: pd.DataFrame, y: Array, base: list[str], candidates: list[str]) -> Any:
    """custval's FeatureSelector (default settings, seed 0) fitted on these rows."""
    from custval.models.selection import FeatureSelector

    return FeatureSelector(seed=SEED, threads=THREADS).fit(data, y, base, candidates)


def nested(
    data: pd.DataFrame, y: Array, base: list[str], candidates: list[str], splits: Splits
) -> tuple[Array, list[int], float]:
    """Per fold: the selector fitted on the training rows only, the held-out fold scored with
    its choice; the fold AUCs, the features chosen in each fold and the selectors' seconds."""
    aucs, chosen, seconds = [], [], 0.0
    for train, test in splits:
        start = time.perf_counter()
        sel = select(data.iloc[train].reset_index(drop=True), y[train], base, candidates)
        seconds += time.perf_counter() - start
        chosen.append(len(sel.chosen_))
        aucs.append(fold_auc(data, y, sel.kept_, train, test))
    return np.array(aucs), chosen, seconds


# ---- measuring one label --------------------------------------------------------------------


def measure(sets: Sets, with_nested: bool) -> tuple[list[Row], dict[str, Any]]:
    """Every feature set's fold AUCs, with the same folds and model; the selectors fitted on
    all rows (by the candidates they chose among)."""
    data, y, hand, s = sets.frame, sets.y, sets.hand, sets.seconds
    splits = folds(y)
    rows = [Row("a", "hand-built only", len(hand), s["hand"], cv_aucs(data, y, hand, splits))]
    selectors: dict[str, Any] = {}
    pools = [("generated", sets.generated, "b", "c"), ("DFS", sets.dfs, "e", "d")]
    for what, pool, chosen_key, all_key in pools:
        if not pool:
            continue
        made = s["generated"] if what == "generated" else s["dfs"]
        aucs = cv_aucs(data, y, [*hand, *pool], splits)
        every = Row(all_key, f"+ all {what}", len(hand) + len(pool), s["hand"] + made, aucs)
        start = time.perf_counter()
        sel = selectors[what] = select(data, y, hand, pool)
        s[f"select {what}"] = time.perf_counter() - start
        picked = Row(
            chosen_key,
            f"+ {what} chosen on all rows",
            len(sel.kept_),
            s["hand"] + made + s[f"select {what}"],
            cv_aucs(data, y, sel.kept_, splits),
            "selection saw the held-out folds",
        )
        rows += [picked, every] if what == "generated" else [every, picked]
        if with_nested:
            aucs, counts, seconds = nested(data, y, hand, pool, splits)
            s[f"nested {what}"] = seconds
            note = "chosen per fold: " + ", ".join(map(str, counts))
            size = len(hand) + round(float(np.mean(counts)))
            total = s["hand"] + made + seconds
            name = f"+ {what} chosen in each fold"
            rows.append(Row(chosen_key + "'", name, size, total, aucs, note))
    if sets.planted:
        aucs = cv_aucs(data, y, [*hand, *sets.planted], splits)
        name = "+ the planted hazard's feature"
        rows.append(Row("p", name, len(hand) + len(sets.planted), s["hand"], aucs, "an oracle"))
    order = ["a", "p", "b", "b'", "c", "d", "e", "e'"]
    return sorted(rows, key=lambda r: order.index(r.key)), selectors


def paired(first: Row, second: Row) -> str:
    """The fold-wise differences first - second: mean ± sd, the folds where first is higher,
    and the paired t statistic (4 degrees of freedom: |t| > 2.78 at the 5% level)."""
    d = first.aucs - second.aucs
    sd = float(np.std(d, ddof=1))
    up, down = int((d > 0).sum()), int((d < 0).sum())
    t = f"t = {float(np.mean(d)) / (sd / np.sqrt(d.size)):+.2f}" if sd > 0 else "identical"
    return f"{np.mean(d):+.4f} ± {sd:.4f} ({plural(up, 'fold')} up, {down} down of {d.size}; {t})"


def table(sets: Sets, rows: list[Row]) -> None:
    """The label's table: features, seconds, CV ROC AUC ± sd, the difference to (a)."""
    base = rows[0]
    say(f"{'':4}{'feature set':<32}{'features':>9}{'seconds':>9}{'CV ROC AUC':>18}   vs (a)")
    for r in rows:
        diff = "" if r is base else f"{np.mean(r.aucs) - np.mean(base.aucs):+.4f}"
        say(
            f"({r.key}){'':<{3 - len(r.key)}}{r.name:<32}{r.features:>9}{r.seconds:>9.1f}"
            f"{np.mean(r.aucs):>11.4f} ± {np.std(r.aucs, ddof=1):.4f}   {diff:<8}"
            + (f"  [{r.note}]" if r.note else "")
        )
    say("held-out ROC AUC per fold:")
    for r in rows:
        say(f"  ({r.key}) " + "  ".join(f"{v:.4f}" for v in r.aucs))
    by = {r.key: r for r in rows}
    say("paired fold-wise differences:")
    pairs = (("p", "a"), ("b", "a"), ("b", "d"), ("b'", "a"), ("b'", "d"), ("b", "e"))
    for first, second in pairs:
        if first in by and second in by:
            say(f"  ({first}) - ({second}): {paired(by[first], by[second])}")


def selector_report(what: str, sel: Any, pool: int) -> None:
    """What the selector fitted on all rows did: its reasons for dropping, each block tried,
    the features it chose."""
    reasons: dict[str, int] = {}
    for reason in sel.dropped_.values():
        head = reason.split(":")[0].split(" (")[0]
        head = "correlated with a better-ranked one" if head.startswith("correlated") else head
        reasons[head] = reasons.get(head, 0) + 1
    say(
        f"selector on {what} ({pool} candidates): chose {len(sel.chosen_)}; base ROC AUC "
        f"(3 folds) {sel.base_auc_:.4f} -> {sel.auc_:.4f}; dropped: "
        + "; ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    )
    for k, step in enumerate(sel.steps_):
        mark = "kept" if step.kept else "not kept (selection stops)"
        size = plural(len(step.features), "feature")
        say(f"  block {k + 1} ({size}): ROC AUC {step.auc:.4f}, {mark}")
    if sel.chosen_:
        shown = ", ".join(sel.chosen_[:12]) + (", ..." if len(sel.chosen_) > 12 else "")
        say(f"  chosen: {shown}")


def seconds_line(sets: Sets) -> None:
    s, info = sets.seconds, sets.dfs_info
    line = (
        f"seconds: hand-built features {s['hand']:.1f}; generated ({len(sets.generated)}) "
        f"{s['generated']:.1f}"
    )
    if info:
        line += (
            f"; DFS ({len(sets.dfs)}, windows {info['windows']}) {s['dfs']:.1f} in the child "
            f"(EntitySet {info['seconds_entityset']:.1f}, DFS {info['seconds_dfs']:.1f}, peak "
            f"{info['peak_rss_mib']:.0f} MiB; Featuretools {info['featuretools']}, pandas "
            f"{info['pandas']}), custval's export of the tables {s['export']:.1f}"
        )
    picked = [f"{k} {v:.1f}" for k, v in s.items() if k.startswith(("select", "nested"))]
    say(line + ("; selector fits: " + ", ".join(picked) if picked else ""))
    if info.get("missing_customers"):
        say(f"DFS lacked {info['missing_customers']:,} of the label's customers (left missing)")


def verdicts(sets: Sets, rows: list[Row]) -> list[str]:
    """The issue's two targets on the label, by the mean over the folds."""
    by = {r.key: r for r in rows}
    found = []
    checks = [("b", "a", ">", "above hand-built only"), ("b", "d", ">=", "at least all DFS")]
    checks += [("b'", "a", ">", "above hand-built only"), ("b'", "d", ">=", "at least all DFS")]
    checks += [("b", "e", ">=", "at least DFS chosen by the same selector")]
    for first, second, op, words in checks:
        if first not in by or second not in by:
            continue
        a, b = float(np.mean(by[first].aucs)), float(np.mean(by[second].aucs))
        met = a > b if op == ">" else a >= b
        target = "target" if first == "b" and second in {"a", "d"} else "also"
        found.append(
            f"{sets.label}: {target}: ({first}) {a:.4f} {op} ({second}) {b:.4f} ({words}): "
            f"{'met' if met else 'NOT MET'}; paired {paired(by[first], by[second])}"
        )
    return found


# ---- the run --------------------------------------------------------------------------------


def one_label(project: Any, prepared: Any, label: str, args: Any, work: Path) -> list[str]:
    """Features, DFS, the evaluator and the table of one label; returns its verdicts."""
    sets = label_sets(project, prepared, label)
    what = {
        "value": "high value: spend in the 52 weeks after the cutoff in the top 20%",
        "lapse": "lapse in the 13 weeks after the cutoff (BG/NBD, k = ln 20)",
        "cancellation": "subscribers active at the cutoff who cancel in the 91 days after; "
        "hand-built features with custval churn's BTYD columns",
    }[label]
    say(
        f"== {label} label: cutoff {sets.cut}; {sets.y.size:,} customers, "
        f"{sets.y.mean():.1%} positive ({what})"
    )
    if not args.skip_dfs:
        with_dfs(sets, args.company / "custval.toml", args.dfs_windows, work)
    start = time.perf_counter()
    rows, selectors = measure(sets, not args.no_nested)
    seconds_line(sets)
    table(sets, rows)
    pools = {"generated": len(sets.generated), "DFS": len(sets.dfs)}
    for name, sel in selectors.items():
        selector_report(name, sel, pools[name])
    say(f"(evaluation and selection: {time.perf_counter() - start:.1f} s)")
    found = verdicts(sets, rows)
    say()
    return found


def default_use_days() -> float:
    """The days a week the default company's customers use the product on average."""
    from custval.data.synth import SynthParams

    return SynthParams().product_active_day_prob * 7


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("-n", "--customers", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--company", type=Path, help="default /tmp/features-auto-co-N-sSEED")
    ap.add_argument("--dfs-windows", default="all", help="all, or days such as 30,90,365,all")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where to write the figures")
    ap.add_argument(
        "--labels",
        default="value,lapse,cancellation",
        help="some of value, lapse, cancellation (comma-separated)",
    )
    ap.add_argument("--no-nested", action="store_true", help="skip (b') and (e')")
    ap.add_argument("--skip-dfs", action="store_true", help="no Featuretools (d), (e)")
    ap.add_argument("--threads", type=int, default=THREADS, help="LightGBM's threads (1)")
    ap.add_argument(
        "--usage-fade-weeks",
        type=float,
        default=0.0,
        help="a company whose leavers' product use fades over their last weeks (0: none)",
    )
    ap.add_argument(
        "--use-days-per-week",
        type=float,
        default=0.0,
        help="the days a week customers use the product on average (0: the default 0.35)",
    )
    args = ap.parse_args()
    unknown = set(args.labels.split(",")) - {"value", "lapse", "cancellation"}
    if unknown:
        ap.error(f"--labels: {', '.join(sorted(unknown))} unknown (value, lapse, cancellation)")
    if args.company is None:
        fade = f"-fade{args.usage_fade_weeks:g}" if args.usage_fade_weeks else ""
        fade += f"-use{args.use_days_per_week:g}" if args.use_days_per_week else ""
        args.company = Path(f"/tmp/features-auto-co-{args.customers}-s{args.seed}{fade}")
    return args


def main() -> int:
    from custval.flows.preparation import prepare

    global THREADS
    args = arguments()
    THREADS = args.threads
    command = " ".join([".venv/bin/python", "bench/features_auto_accuracy.py", *sys.argv[1:]])
    say(f"# {command}; load average at the start {os.getloadavg()[0]:.2f} (2 cores)")
    project = company(
        args.company, args.customers, args.seed, args.usage_fade_weeks, args.use_days_per_week
    )
    start = time.perf_counter()
    prepared = prepare(project)
    say(
        f"generated company: {args.company} (custval synth -n {args.customers} --seed "
        f"{args.seed}; usage_fade_weeks {args.usage_fade_weeks:g}; use days a week "
        f"{args.use_days_per_week or default_use_days():g}; as-of {project.as_of}); "
        f"prepared in {time.perf_counter() - start:.1f} s"
    )
    say(
        f"evaluator: custval's LightGBM candidate (seed {SEED}, {plural(THREADS, 'thread')}, early "
        f"stopping on a tenth of the training rows), infer_schema on the training rows, "
        f"{FOLDS} stratified folds (seed {SEED}); selector: FeatureSelector() defaults"
    )
    say()
    found: list[str] = []
    with tempfile.TemporaryDirectory(prefix="features-auto-") as work:
        for label in args.labels.split(","):
            found += one_label(project, prepared, label.strip(), args, Path(work))
    say("verdicts (issue 23; judged on the mean over the 5 folds; (b) is custval's own flow,")
    say("selection on all rows; (b') is nested, the honest one):")
    for line in found:
        say("  " + line)
    say(f"# load average at the end {os.getloadavg()[0]:.2f}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(_lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
