"""``custval monitor``: a scoring run's drift and estimated performance, with an exit code a
scheduler can act on (``custval monitor -c P || custval retrain -c P``); ``custval retrain``:
a challenger trained and promoted only if better.

It registers on the main Typer app of :mod:`custval.cli`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from custval.cli.common import (
    ConfigOpt,
    JsonSummaryOpt,
    ModelsFolderOpt,
    friendly,
    load,
    out,
    steps,
)

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.

StoreOpt = Annotated[
    str | None,
    typer.Option(help="The store: a DuckDB file or a postgresql:// URL (default: the project's)."),
]
#: rows of the drift table printed besides the alarming ones
SHOWN = 8


@friendly
def monitor(
    config: ConfigOpt = Path("custval.toml"),
    run: Annotated[
        str | None, typer.Option(help="The scoring run to check (default: the latest).")
    ] = None,
    reference: Annotated[
        str,
        typer.Option(
            help="What the run is compared with: 'first' (the model's first run, its first "
            "customers in production; for that run, the training data), 'training' (the "
            "model's training data), 'previous' (the model's previous run) or a run id."
        ),
    ] = "first",
    store: StoreOpt = None,
    models_dir: ModelsFolderOpt = None,
    realised: Annotated[
        bool,
        typer.Option(
            "--realised",
            help="Require the realised performance: an error when the run's labels have not "
            "matured by the project's as-of date (without it they are judged when they have).",
        ),
    ] = False,
    as_json: JsonSummaryOpt = False,
) -> None:
    """Check a scoring run for drift and for a fall in the value model's performance.

    Every feature and output of the run (value probability, CLV, P(alive), segment, churn
    risk) is compared with the reference by PSI, Jensen-Shannon distance and a test that
    knows the sample sizes (PSI / (1/N + 1/M) is chi-squared under no drift; Yurdakul &
    Naranjo 2020), so that a thousand customers do not alarm by chance and a million do not
    hide a real shift. A column alarms when its p-value is under the project's \\[monitor]
    alpha and its PSI at least min_psi. The value model's ROC AUC, top-decile precision and
    lift are estimated from its calibrated probabilities before any label exists (CBPE); once
    the labels have matured (the project's as-of date a label horizon past the run's), the
    realised ROC AUC and lift, CLV against spend by decile with the total error, P(alive) and
    purchases by decile. Against a run with segments: the segment migration matrix. Earlier
    forecast runs against the actual values of the latest one's history: WAPE, bias, interval
    coverage. All are kept in the store per run (views v1_drift_by_run,
    v1_performance_by_run).

    Exit codes: 0 no alarm; 1 an alarm (more alarming columns than \\[monitor] max_alarms,
    or the estimated ROC AUC more than auc_drop below training's); 2 the check could not be
    made (no run, no reference, different features).
    """
    from custval.flows.monitor import check_run

    project = load(config)
    report = check_run(
        project,
        store_url=store,
        run=run,
        reference=reference,
        models_dir=models_dir or config.parent / "models",
        realised=realised,
    )
    if as_json:
        out.print_json(json.dumps(report.to_json(), default=float))
    else:
        print_report(report)
    if report.alarm:
        raise typer.Exit(1)


def print_report(report: Any) -> None:
    """The report as a person reads it: the run, the drift table, the performance, a verdict."""
    out.print(
        f"run {report.run_id} (as of {report.as_of}, model {report.model_version}) against "
        f"{report.reference}"
    )
    drift = report.drift
    shown = drift[drift["alarm"] | (drift.index < SHOWN)]
    table = Table(title=f"drift: {len(drift)} columns, largest PSI first")
    for c in ("column", "PSI", "chance PSI*", "JS distance", "p-value", "customers", ""):
        table.add_column(c, justify="left" if c in ("column", "") else "right")
    for row in shown.to_dict("records"):
        table.add_row(
            f"{row['feature']}" + (" (output)" if row["source"] == "outputs" else ""),
            f"{row['psi']:.4f}",
            f"{row['critical_psi']:.4f}",
            f"{row['js_distance']:.3f}",
            f"{row['p_value']:.2g}",
            f"{row['n_current']:,}",
            "[red]ALARM[/red]" if row["alarm"] else "",
        )
    out.print(table)
    t = report.thresholds
    out.print(
        f"* the PSI chance alone exceeds with probability {t.alpha:g} at these sample sizes; "
        f"a column alarms above it when its PSI is at least {t.min_psi:g}"
    )
    _print_performance(report)
    _print_outcomes(report)
    for note in report.notes:
        out.print(f"note: {note}")
    _print_verdict(report)


def _print_performance(report: Any) -> None:
    est = report.estimate
    line = (
        f"value model, estimated before labels (CBPE): ROC AUC {est.roc_auc:.3f}, "
        f"top-10% precision {est.precision_top:.1%}, lift {est.lift_top:.2f}"
    )
    if report.training_auc is not None:
        line += f"; at training {report.training_auc:.3f}"
    out.print(line)
    out.print(f"  assumption: {est.assumption}")


def _print_outcomes(report: Any) -> None:
    """The realised figures and the segment migration, when there are any."""
    found = report.outcomes
    if found is not None and found.value is not None:
        v = found.value
        out.print(
            f"realised ({found.window[0]} to {found.window[1]}): ROC AUC {v.roc_auc:.3f}, "
            f"top-10% precision {v.precision_top:.1%}, lift {v.lift_top:.2f}"
        )
    if found is not None and found.clv is not None:
        table = Table(title="CLV by decile of predicted CLV against spend in the horizon")
        for c in ("decile", "customers", "predicted CLV", "realised spend"):
            table.add_column(c, justify="right")
        for r in found.clv.to_dict("records"):
            table.add_row(
                str(r["decile"]),
                f"{r['customers']:,}",
                f"{r['predicted']:,.2f}",
                f"{r['actual']:,.2f}",
            )
        out.print(table)
        if found.clv_total_error is not None:
            out.print(f"total CLV against total spend: {found.clv_total_error:+.1%}")
    _print_forecasts(report.forecasts)
    if report.migration is not None:
        m = report.migration
        table = Table(title="customers by segment: reference run (rows) to this run (columns)")
        table.add_column("")
        for c in m.columns:
            table.add_column(str(c), justify="right")
        for name, row in m.iterrows():
            table.add_row(str(name), *(f"{int(x):,}" for x in row))
        out.print(table)


def _print_forecasts(found: Any) -> None:
    """Earlier forecast runs against the actual values of the latest one's history."""
    if found is None or found.empty:
        return
    table = Table(title="earlier forecasts against actual (the latest forecast run's history)")
    for c in ("forecast run", "series", "periods", "WAPE", "bias", "in 80%", "in 95%"):
        table.add_column(c, justify="left" if c in ("forecast run", "series") else "right")
    for r in found.to_dict("records"):
        table.add_row(
            str(r["run_id"])[:12],
            str(r["series"]),
            f"{int(r['periods'])} ({r['first']} to {r['last']})",
            f"{r['wape']:.1%}",
            f"{r['bias']:+.1%}",
            f"{r['coverage_80']:.0%}",
            f"{r['coverage_95']:.0%}",
        )
    out.print(table)


def _print_verdict(report: Any) -> None:
    alarms = report.drift_alarms
    t = report.thresholds
    if not report.alarm:
        out.print(
            f"[green]no alarm[/green]: {len(alarms)} of {len(report.drift)} columns drifted "
            f"({t.max_alarms} allowed)"
        )
        return
    why = []
    if len(alarms) > t.max_alarms:
        names = ", ".join(alarms["feature"].head(5))
        why.append(f"{len(alarms)} columns drifted ({t.max_alarms} allowed): {names}")
    if report.performance_alarm:
        why.append(
            f"estimated ROC AUC {report.estimate.roc_auc:.3f} is more than {t.auc_drop:g} "
            f"below training's {report.training_auc:.3f}"
        )
    out.print("[red]ALARM[/red]: " + "; ".join(why))
    out.print("next: custval retrain -c PROJECT trains a challenger and promotes it if better")


@friendly
def retrain(
    config: ConfigOpt = Path("custval.toml"),
    force: Annotated[
        bool,
        typer.Option("--force", help="Promote the challenger whatever the comparison says."),
    ] = False,
    margin: Annotated[
        float | None,
        typer.Option(
            help="ROC AUC the challenger must gain over the champion (default: the project's "
            "\\[monitor] promote_margin, 0.005).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    folds: Annotated[
        int | None, typer.Option(help="Cross-validation folds (default: the champion's).", min=2)
    ] = None,
    models_dir: ModelsFolderOpt = None,
    as_json: JsonSummaryOpt = False,
) -> None:
    """Train a challenger on the freshest labelled data and promote it only if it beats the
    champion on the same time-based holdout; run by a scheduler after 'custval monitor'.

    The holdout is the latest period whose labels are known (features a label horizon before
    the as-of date, spend in the horizon after). The champion predicts it as it stands; the
    challenger's figure is what its kind of model earned there when trained one horizon
    earlier, on data it had not seen. It is promoted when its ROC AUC is better by the margin
    (or with --force); a running service switches to it between requests. The decision and
    its figures are logged (registry.json, the store's model_decisions). When the store has a
    segmentation, the customers are segmented again and the new segmentation is stored only
    if it keeps at least \\[monitor] segment_stability of them together, with the mapping from
    old to new segments.
    """
    from custval.flows.retraining import retrain as run_retrain

    project = load(config)
    with steps(3 * len(project.sources) + 6) as advance:
        result = run_retrain(
            project,
            models_dir=models_dir or config.parent / "models",
            force=force,
            margin=margin,
            folds=folds,
            progress=advance,
        )
    if as_json:
        out.print_json(json.dumps(result.to_json(), default=str))
        return
    _print_retrain(result)


def _print_retrain(result: Any) -> None:
    h = result.holdout
    table = Table(
        title=f"holdout: {h['customers']:,} customers' features at {h['features_as_of']}, "
        f"{h['positives']:,} high"
    )
    for c in ("model", "version", "ROC AUC", "lift top 10%"):
        table.add_column(c, justify="right" if c not in ("model", "version") else "left")
    rows = [("challenger", result.challenger, result.challenger_metrics)]
    if result.champion_metrics is not None:
        rows.insert(0, ("champion", result.champion, result.champion_metrics))
    for name, version, m in rows:
        table.add_row(name, version, f"{m['roc_auc']:.4f}", f"{m['lift_top_decile']:.2f}")
    out.print(table)
    for note in result.notes:
        out.print(f"note: {note}")
    verdict = "[green]promoted[/green]" if result.promoted else "[yellow]kept out[/yellow]"
    out.print(f"{result.challenger} {verdict}: {result.reason}")
    seg = result.segmentation
    if seg is not None:
        kept = "stored" if seg.kept_new else "not stored"
        out.print(
            f"segmentation: the new one keeps {seg.stability:.1%} of customers together "
            f"(needed {seg.threshold:.0%}): {kept}"
        )
        for old, new in seg.mapping.items():
            out.print(f"  {old} -> {new}")
