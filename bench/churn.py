"""Churn risk (issue 17, deliverable 2): the churn classifier on telco, and against 1 - P(alive)
on the generated company.

(a) Telco (``../shared/data/telco/telco_churn.csv``, 7,043 customers, label ``churn`` = Yes):
    :class:`custval.models.churn.ChurnClassifier` (the value classifier's four candidates, 5
    stratified folds, seed 0) on the table as a user gives it (read by
    :func:`custval.data.tables.read_customer_table`, the id column left out by
    :func:`custval.flows.value.labelled_table`). Target: the chosen model's 5-fold ROC AUC
    >= 0.845 (``bench/value_telco.py``, the same candidates as a value model: 0.8456).

(b) The generated company (``custval synth -n 20000 --format parquet --seed 1``), lapse label:
    features at the cutoff c = as-of - 13 weeks (:func:`custval.flows.preparation.features`),
    BG/NBD fitted on the BTYD summary at c, the label a lapse in the 13 weeks after c
    (:func:`custval.models.churn.lapse_label`, k = ln 20), for every customer with a purchase
    before c. The same customers are scored by

    - the churn classifier forward in time: trained at c - 13 weeks on the lapses in
      [c - 13 w, c), scored at c (the candidates chosen by this time split, ``earlier=``), on
      the feature table alone ("plain") and with the BTYD columns added ("+ BTYD columns",
      :func:`custval.models.churn.btyd_churn_features`: P(alive), the expected gap, the gap
      ratio, P(no purchase in 13 weeks), all from data before the cutoff); and out of fold
      (5-fold CV at c);
    - 1 - P(alive) at c by BG/NBD, the baseline of the issue;
    - P(lapse) by BG/NBD itself (:func:`custval.models.churn.lapse_probability`), the best a
      purchase-history-only model can say about this label.

    ROC AUC, PR AUC and lift in the top 10%, with paired bootstrap 95% intervals (200
    resamples) of the ROC AUC gain over 1 - P(alive) and over P(lapse); also among repeat
    buyers only (1 - P(alive) is 0 for every one-time buyer under BG/NBD), and against the
    planted truth (the customer had left by the horizon's end, ``truth/customers.parquet``
    death_time). Target: the supervised model (+ BTYD columns, forward in time) beats
    1 - P(alive) on ROC AUC in the same run, the interval's lower end above 0.

(c) When the generated company has ``subscriptions`` (cancellations), the same with the
    cancellation label (:func:`custval.models.churn.cancellation_label`, cancelled within 13
    weeks of c among the subscribers active at c; 1 - P(alive) and P(no purchase in 13 weeks)
    as the purchase-history scores); then, deployed: the model trained at c scores the
    subscribers active at the as-of date, judged on the planted truth
    (``truth/subscriptions.parquet``: the cancellations of the 13 weeks after the data end, and
    the planted chance ``p_cancel_13w``, the ceiling).

Run: ``.venv/bin/python bench/churn.py [--company /tmp/churn-co] [--skip-telco]
[--skip-synth] [--results FILE]``; writes ``bench/results/churn.txt``. Exits 1 when a target
is missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TELCO = ROOT.parent / "shared" / "data" / "telco" / "telco_churn.csv"
RESULTS = ROOT / "bench" / "results" / "churn.txt"
TELCO_TARGET = 0.845
HORIZON_WEEKS = 13

_lines: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    _lines.append(text)


def board_table(clf: Any) -> None:
    """The leaderboard: each candidate's cross-validated figures (and forward in time)."""
    b = clf.leaderboard_
    forward = "time_split_roc_auc" in b
    head = f"{'model':<24}{'ROC AUC':>16}{'PR AUC':>16}{'lift top 10%':>16}"
    say(head + (f"{'forward AUC':>13}" if forward else "") + f"{'seconds':>9}")
    for row in b.itertuples():
        mark = " (chosen)" if row.model == clf.chosen_ else ""
        line = (
            f"{row.model + mark:<24}"
            f"{row.roc_auc_mean:>9.4f} ± {row.roc_auc_std:.3f}"
            f"{row.pr_auc_mean:>9.4f} ± {row.pr_auc_std:.3f}"
            f"{row.lift_top_decile_mean:>9.3f} ± {row.lift_top_decile_std:.2f}"
        )
        if forward:
            line += f"{row.time_split_roc_auc:>13.4f}"
        say(line + f"{row.seconds:>9.1f}")


# ---- (a) telco ------------------------------------------------------------------------------


def telco() -> bool:
    from custval.data.tables import read_customer_table
    from custval.flows.value import labelled_table
    from custval.models.churn import ChurnClassifier

    if not TELCO.exists():
        say(f"{TELCO} is absent: telco not measured")
        return True
    table = labelled_table(read_customer_table(TELCO), "churn", positive="Yes", source="telco")
    y = table.y
    say(
        f"(a) telco churn: {len(y):,} customers, {y.mean():.1%} churned, "
        f"{table.features.shape[1]} columns; id columns left out: {', '.join(table.ids)}"
    )
    start = time.perf_counter()
    clf = ChurnClassifier(
        folds=5, seed=0, top_share=float(y.mean()), class_names=tuple(table.label["classes"])
    ).fit(table.features, y)
    seconds = time.perf_counter() - start
    board_table(clf)
    auc = float(clf.leaderboard_.set_index("model").loc[clf.chosen_, "roc_auc_mean"])
    say(
        f"chosen {clf.chosen_} (one-standard-error rule): 5-fold ROC AUC {auc:.4f}; "
        f"out-of-fold ROC AUC {clf.oof_metrics_['roc_auc']:.4f}; calibration error (ECE) "
        f"{clf.calibration_error_:.4f}; threshold {clf.threshold_:.3f} (top {y.mean():.1%})"
    )
    ok = auc >= TELCO_TARGET
    say(
        f"fit (4 candidates x 5 folds + refit): {seconds:.1f} s; target ROC AUC >= "
        f"{TELCO_TARGET}: {'met' if ok else 'NOT MET'}"
    )
    return ok


# ---- (b) the generated company, lapse -------------------------------------------------------


def company(folder: Path, customers: int, seed: int) -> Any:
    """The generated company's project (generated first when absent), with only the sources
    whose kind this custval reads."""
    from custval.config import load_project
    from custval.data.contracts import CONTRACTS

    if not (folder / "custval.toml").exists():
        subprocess.run(
            [
                *(sys.executable, "-m", "custval", "synth", "-n", str(customers)),
                *("-o", str(folder), "--format", "parquet", "--seed", str(seed), "--quiet"),
            ],
            check=True,
        )
    project = load_project(folder / "custval.toml")
    known = {k: v for k, v in project.sources.items() if v.kind in CONTRACTS or v.kind == "id_map"}
    skipped = sorted(set(project.sources) - set(known))
    if skipped:
        say(f"sources of kinds this custval does not read yet, left out: {', '.join(skipped)}")
    return project.model_copy(update={"sources": known})


def table_at(project: Any, prepared: Any, at: Any) -> tuple[pd.DataFrame, list[str], Any]:
    """The feature table at ``at``, its key and label columns, and BG/NBD fitted on the BTYD
    summary of every customer with a purchase before ``at`` (the feature table's rfm columns,
    the same query as :func:`custval.features.holdout.btyd_summary_table`)."""
    from custval.flows.preparation import features
    from custval.models.btyd import BetaGeo

    ft = features(project, prepared, as_of=at)
    table = ft.to_pyarrow().to_pandas()
    keys = [f.name for f in ft.catalogue if f.role != "feature" and f.name in table.columns]
    rft = table[["frequency", "recency", "T"]].dropna()
    bg = BetaGeo().fit(rft.frequency, rft.recency, rft["T"])
    return table, keys, bg


def with_btyd(rows: pd.DataFrame, keys: list[str], bg: Any) -> dict[str, pd.DataFrame]:
    """The features of ``rows``: as they are, and with the BTYD columns added (hybrid)."""
    from custval.models.churn import btyd_churn_features

    plain = rows.drop(columns=keys).reset_index(drop=True)
    summary = rows[["frequency", "recency", "T"]].reset_index(drop=True)
    extra = btyd_churn_features(bg, summary, HORIZON_WEEKS)
    return {"plain": plain, "hybrid": pd.concat([plain, extra], axis=1)}


def lapses(
    project: Any, prepared: Any, table: pd.DataFrame, bg: Any, at: Any, weeks: int = HORIZON_WEEKS
) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of ``table`` (the customers at ``at``) have a purchase before ``at``, and
    their lapse in the ``weeks`` after (:func:`custval.models.churn.lapse_label`, BG/NBD
    ``bg`` fitted on the BTYD summary at ``at``)."""
    from custval.features.holdout import calibration_holdout
    from custval.models.churn import lapse_label

    after = (
        calibration_holdout(
            prepared.tables["transactions"],
            at,
            at + timedelta(weeks=weeks),
            time_unit=project.time_unit,
            one_row_per_order=prepared.one_row_per_order,
        )
        .to_pandas()
        .set_index("customer_id")
        .frequency_holdout
    )
    keep = table.customer_id.isin(after.index).to_numpy()
    summary = table.loc[keep, ["frequency", "recency", "T"]]
    purchases = after.reindex(table.customer_id[keep]).to_numpy()
    observed = (project.as_of - at).days / 7
    return keep, lapse_label(bg, summary, purchases, weeks, observed_after=observed)


def lapse_at(project: Any, prepared: Any, at: Any) -> dict[str, Any]:
    """Features at ``at``, BG/NBD on the summary at ``at``, and the lapse label in the 13 weeks
    after, for every customer with a purchase before ``at``."""
    table, keys, bg = table_at(project, prepared, at)
    keep, y = lapses(project, prepared, table, bg, at)
    table = table[keep].reset_index(drop=True)
    summary = table[["frequency", "recency", "T"]]
    return {
        "at": at,
        "ids": table.customer_id.to_numpy(),
        "X": with_btyd(table, keys, bg),
        "y": y,
        "summary": summary,
        "bg": bg,
    }


def fit_forward(kind: str, early: dict[str, Any], now: dict[str, Any]) -> tuple[Any, Any]:
    """The churn classifier on the ``kind`` features at this cutoff (candidates chosen by
    the time split from the earlier one), and the chosen candidate trained at the earlier
    cutoff and scored at this one: the classifier's own time split, kept as predictions."""
    from custval.models.candidates import make_candidate
    from custval.models.churn import ChurnClassifier

    x_now, x_old = now["X"][kind], early["X"][kind].reindex(columns=now["X"][kind].columns)
    start = time.perf_counter()
    clf = ChurnClassifier(folds=5, seed=0, top_share=float(now["y"].mean())).fit(
        x_now, now["y"], earlier=(x_old, early["y"])
    )
    say(
        f"churn classifier, {kind} features ({x_now.shape[1]}): 4 candidates x 5 folds, then "
        f"forward: {time.perf_counter() - start:.1f} s"
    )
    board_table(clf)
    say(
        f"chosen {clf.chosen_} (best forward ROC AUC, one-standard-error rule); calibration "
        f"error (ECE, out of fold) {clf.calibration_error_:.4f}"
    )
    schema = clf.schema_.relearn(x_old)
    model = make_candidate(clf.chosen_, clf.seed, clf.threads).fit(schema, x_old, early["y"])
    return clf, model.predict_proba(schema, x_now)


def side_by_side(title: str, y: np.ndarray, scores: dict[str, np.ndarray], n_boot: int) -> Any:
    """The scores' ROC AUC, PR AUC and lift, and each one's ROC AUC gain over 1 - P(alive)
    and over P(lapse) by BG/NBD (when scored), with paired bootstrap 95% intervals."""
    from custval.models.churn import compare_with_baseline

    bases = [b for b in ("1 - P(alive)", "P(lapse) by BG/NBD") if b in scores]
    tables = [compare_with_baseline(y, scores, b, n_boot=n_boot).set_index("score") for b in bases]
    say(f"{title}: {y.size:,} customers, {y.mean():.1%} positive")
    head = f"{'score':<44}{'ROC AUC':>8}{'PR AUC':>8}{'lift@10%':>9}"
    say(head + "".join(f"   gain over {b:<30}" for b in bases).rstrip())
    for name in scores:
        r = tables[0].loc[name]
        line = f"{name:<44}{r.roc_auc:>8.4f}{r.pr_auc:>8.4f}{r.lift_top_decile:>9.3f}"
        for t in tables:
            g = t.loc[name]
            cell = "" if np.isnan(g.roc_auc_gain) else f"{g.roc_auc_gain:+.4f}"
            if not np.isnan(g.gain_lower):
                cell += f" [{g.gain_lower:+.4f}, {g.gain_upper:+.4f}]"
            line += f"   {cell:<41}"
        say(line.rstrip())
    return tables[0]


def synth_lapse(project: Any, prepared: Any, folder: Path) -> bool:
    from custval.models.churn import lapse_probability, palive_baseline

    cut = project.as_of - timedelta(weeks=HORIZON_WEEKS)
    now = lapse_at(project, prepared, cut)
    early = lapse_at(project, prepared, cut - timedelta(weeks=HORIZON_WEEKS))
    y = now["y"]
    p = now["bg"].params_
    say(
        f"(b) generated company, lapse label: cutoff {cut}, horizon {HORIZON_WEEKS} weeks; "
        f"{y.size:,} customers with a purchase before it; {y.mean():.1%} lapsed (k = ln 20); "
        f"BG/NBD at the cutoff r={p['r']:.3f} alpha={p['alpha']:.3f} a={p['a']:.3f} "
        f"b={p['b']:.3f}"
    )
    say(
        f"earlier period (training forward in time): cutoff {early['at']}, "
        f"{early['y'].size:,} customers, {early['y'].mean():.1%} lapsed"
    )
    hybrid, p_hybrid = fit_forward("hybrid", early, now)
    plain, p_plain = fit_forward("plain", early, now)
    main = f"churn model + BTYD columns, forward ({hybrid.chosen_})"
    scores = {
        main: p_hybrid,
        f"churn model, forward ({plain.chosen_})": p_plain,
        f"churn model + BTYD columns, out of fold ({hybrid.chosen_})": hybrid.oof_proba_,
        "P(lapse) by BG/NBD": lapse_probability(now["bg"], now["summary"], HORIZON_WEEKS),
        "1 - P(alive)": palive_baseline(now["bg"], now["summary"]),
    }
    say()
    table = side_by_side("all customers", y, scores, 200)
    repeat = now["summary"].frequency.to_numpy() > 0
    say()
    side_by_side("repeat buyers only", y[repeat], {k: v[repeat] for k, v in scores.items()}, 200)
    truth = folder / "truth" / "customers.parquet"
    if truth.exists():
        death = pd.read_parquet(truth, columns=["crm_id", "death_time"]).set_index("crm_id")
        end = pd.Timestamp(cut + timedelta(weeks=HORIZON_WEEKS))
        left = (death.death_time.reindex(now["ids"]) < end).to_numpy(dtype=np.float64)
        say()
        side_by_side("planted truth: had left by the horizon's end", left, scores, 200)
    return target(table, [main, f"churn model, forward ({plain.chosen_})"], "lapses")


def target(table: Any, models: list[str], what: str) -> bool:
    """The issue's target: each supervised model, forward in time, beats 1 - P(alive) on ROC
    AUC in the same run (the bootstrap interval of the gain above 0)."""
    ok = True
    for name in models:
        row = table.loc[name]
        met = bool(row.gain_lower > 0)
        ok &= met
        say(
            f"target on {what}: {name} beats 1 - P(alive) on ROC AUC: {row.roc_auc:.4f} vs "
            f"{table.loc['1 - P(alive)', 'roc_auc']:.4f} (gain {row.roc_auc_gain:+.4f}, 95% "
            f"[{row.gain_lower:+.4f}, {row.gain_upper:+.4f}]): {'met' if met else 'NOT MET'}"
        )
    return ok


# ---- (c) the generated company, cancellations -----------------------------------------------


def synth_cancellation(project: Any, prepared: Any, folder: Path) -> bool:
    """The cancellation label among the subscribers active at the cutoff: the churn
    classifier out of fold and forward in time, against 1 - P(alive)."""
    from custval.models.churn import cancellation_label

    subs = prepared.tables.get("subscriptions")
    if subs is None:
        say("(c) cancellations: the generated company has no subscriptions source")
        return True
    per = (
        subs.to_pandas()
        .groupby("customer_id")
        .agg(started_at=("started_at", "min"), cancelled_at=("cancelled_at", "max"))
    )
    cut = project.as_of - timedelta(weeks=HORIZON_WEEKS)
    h = timedelta(weeks=HORIZON_WEEKS)
    data = {}
    for at in (cut - h, cut):
        y = cancellation_label(
            per.cancelled_at, at, h, started_at=per.started_at, data_end=pd.Timestamp(project.as_of)
        )
        data[at] = subscribers_at(project, prepared, at, pd.Series(y, index=per.index).dropna())
    ok, clf = cancellation_models(data[cut - h], data[cut])
    truth = folder / "truth" / "subscriptions.parquet"
    if truth.exists():
        say()
        cancellation_truth(project, prepared, clf, per, truth)
    return ok


def subscribers_at(project: Any, prepared: Any, at: Any, y: pd.Series) -> dict[str, Any]:
    """Features at ``at`` of the subscribers labelled then (plain and with the BTYD columns
    of BG/NBD fitted on the whole base), their label and BTYD summary."""
    table, keys, bg = table_at(project, prepared, at)
    table = table[table.customer_id.isin(y.index)].reset_index(drop=True)
    return {
        "at": at,
        "ids": table.customer_id.to_numpy(),
        "X": with_btyd(table, keys, bg),
        "y": y.reindex(table.customer_id).to_numpy(),
        "summary": table[["frequency", "recency", "T"]],
        "bg": bg,
    }


def btyd_scores(bg: Any, summary: pd.DataFrame) -> dict[str, np.ndarray]:
    """The purchase-history scores of subscribers; one without a purchase before the cutoff is
    one BG/NBD knows nothing of, and gets the others' mean score (neither high nor low)."""
    from custval.models.churn import palive_baseline, quiet_probability

    scores = {
        "P(no purchase in 13 w) by BG/NBD": quiet_probability(bg, summary, HORIZON_WEEKS),
        "1 - P(alive)": palive_baseline(bg, summary),
    }
    return {k: np.where(np.isnan(v), np.nanmean(v), v) for k, v in scores.items()}


def cancellation_models(early: dict[str, Any], now: dict[str, Any]) -> tuple[bool, Any]:
    y = now["y"]
    say(
        f"(c) generated company, cancellation label: cutoff {now['at']}, {y.size:,} "
        f"subscribers active then, {y.mean():.1%} cancelled within {HORIZON_WEEKS} weeks; "
        f"earlier period {early['at']}: {early['y'].size:,}, {early['y'].mean():.1%} cancelled"
    )
    hybrid, p_hybrid = fit_forward("hybrid", early, now)
    plain, p_plain = fit_forward("plain", early, now)
    main = f"churn model + BTYD columns, forward ({hybrid.chosen_})"
    scores = {
        main: p_hybrid,
        f"churn model, forward ({plain.chosen_})": p_plain,
        f"churn model + BTYD columns, out of fold ({hybrid.chosen_})": hybrid.oof_proba_,
        **btyd_scores(now["bg"], now["summary"]),
    }
    say()
    result = side_by_side("active subscribers", y, scores, 200)
    return target(
        result, [main, f"churn model, forward ({plain.chosen_})"], "cancellations"
    ), hybrid


def cancellation_truth(
    project: Any, prepared: Any, clf: Any, per: pd.DataFrame, truth_path: Path
) -> None:
    """Deployed as a flow would: the classifier trained at the cutoff scores the subscribers
    active at the as-of date, judged on the planted truth: their true cancellations in the 13
    weeks after the data end, and the planted chance of it (p_cancel_13w, the ceiling)."""
    end = pd.Timestamp(project.as_of)
    active = per[(per.started_at < end) & ~(per.cancelled_at < end)]
    now = subscribers_at(project, prepared, project.as_of, pd.Series(0.0, index=active.index))
    truth = (
        pd.read_parquet(truth_path)
        .groupby("crm_id")
        .agg(cancelled_at=("cancelled_at", "min"), p_cancel_13w=("p_cancel_13w", "max"))
    )
    t = truth.reindex(now["ids"])
    horizon_end = end + pd.Timedelta(weeks=HORIZON_WEEKS)
    y = ((t.cancelled_at >= end) & (t.cancelled_at < horizon_end)).to_numpy(np.float64)
    scores = {
        f"churn model + BTYD ({clf.chosen_}, trained at cutoff)": clf.predict_proba(
            now["X"]["hybrid"]
        ),
        "planted p_cancel_13w (the ceiling)": t.p_cancel_13w.fillna(0.0).to_numpy(),
        **btyd_scores(now["bg"], now["summary"]),
    }
    say(
        f"deployed at the as-of date {project.as_of}: {len(t):,} active subscribers scored; "
        f"truth: {y.mean():.1%} cancel in the next {HORIZON_WEEKS} weeks "
        f"({int(t.p_cancel_13w.isna().sum()):,} without a planted chance)"
    )
    side_by_side("true cancellations after the data end", y, scores, 200)
    planted = t.p_cancel_13w.to_numpy()
    known = ~np.isnan(planted)
    for name, score in scores.items():
        rho = pd.Series(score[known]).corr(pd.Series(planted[known]), method="spearman")
        say(f"Spearman correlation with the planted p_cancel_13w: {name}: {rho:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--company", type=Path, default=Path("/tmp/churn-co"))
    ap.add_argument("-n", "--customers", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-telco", action="store_true")
    ap.add_argument("--skip-synth", action="store_true")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where to write the figures")
    args = ap.parse_args()

    say(f"# bench/churn.py; load average at the start {os.getloadavg()[0]:.2f} (2 cores)")
    ok = True
    if not args.skip_telco:
        ok &= telco()
        say()
    if not args.skip_synth:
        from custval.flows.preparation import prepare

        project = company(args.company, args.customers, args.seed)
        prepared = prepare(project)
        say(f"generated company: {args.company} (custval synth; {project.as_of} as-of date)")
        ok &= synth_lapse(project, prepared, args.company)
        say()
        ok &= synth_cancellation(project, prepared, args.company)
    say(f"# load average at the end {os.getloadavg()[0]:.2f}")
    args.results.write_text("\n".join(_lines) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
