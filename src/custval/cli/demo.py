"""``custval demo``: the whole path on a generated sample company."""

from __future__ import annotations

import sys
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from custval.cli import value as cli_value
from custval.cli.clv import clv_summary, print_clv
from custval.cli.common import (
    SeedOpt,
    cell,
    friendly,
    load,
    out,
    print_reports,
    print_rules,
    steps,
    write_table,
)
from custval.cli.forecast import print_forecast
from custval.cli.project import print_synth, run_features, synth_company
from custval.cli.segment import print_segments

if TYPE_CHECKING:
    from custval.config import Project
    from custval.data.synth import SynthResult

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.

DemoOutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for everything.")]
CustomersOpt = Annotated[int, typer.Option("--customers", "-n", min=100)]

# what the demo writes into --out, named once: the steps write these files, the end lists them.
# The store and the models go where the generated project file's defaults look (the project's
# `store`, `models/` beside it), so `custval score|serve|export -c <out>/data/custval.toml` work.
FEATURES_FILE = "features.parquet"
CLV_FILE = "clv.parquet"
TRACKING_FILE = "clv_tracking.csv"
MODELS_DIR = "models"


@friendly
def demo(
    out_dir: DemoOutOpt = Path("demo-output"),
    customers: CustomersOpt = 5000,
    seed: SeedOpt = 0,
) -> None:
    """The whole path on a generated sample company: generate, validate, clean, link, features,
    CLV, the high/low value classifier, segments, scoring into the store, a sales forecast.

    Prints rows per source, what cleaning did, the feature table's shape, the CLV models' fits,
    holdout accuracy and comparison, the value classifier's leaderboard and reasons, the
    segments, the scoring run's views, the forecast's leaderboard, and where the files are.
    """
    out.rule("1. a sample company with several sources and the usual dirt")
    company = synth_company(customers, out_dir / "data", seed, "csv")
    print_synth(company)
    out.rule("2. validation against the contracts")
    project = _validate(company.config_path)
    out.rule("3. cleaning, customer 360 and features")
    prepared, meta, cat_path = _features(company.config_path, out_dir / FEATURES_FILE)
    out.rule("4. customer lifetime value: BTYD models fitted, judged on a holdout, compared")
    _clv(prepared, project.as_of, out_dir, project.clv.model)
    out.rule("5. high/low value classifier: candidates compared, reasons for every customer")
    trained = _value_model(project, prepared, project.root / MODELS_DIR)
    out.rule("6. segments: k-means with automatic k, profiled and named, into the store")
    _segments(project, prepared, Path(project.store))
    out.rule("7. scoring into the store: value, CLV, segment, churn, offers, playbook; one run")
    _score(_with_actions(project, customers), prepared)
    out.rule("8. sales forecast: every candidate backtested, the best one forecast ahead")
    _forecast(project, prepared)
    out.rule("9. a month later: a planted shift, scored and caught by monitoring")
    later = _later_month(company)
    out.rule("done")
    _print_files(out_dir, meta, cat_path, trained.folder.name, company, Path(project.store))
    out.rule("next")
    _print_next(out_dir, company, project.as_of, later)


def _validate(config: Path) -> Project:
    """The generated project, once its sources meet their contracts (else exit 1)."""
    from custval import flows
    from custval.data import sources

    project = load(config)
    con = sources.working_connection()
    with steps(2 * len(project.sources)) as advance:
        reports = flows.validate(project, con, flows.open_all(project, con, advance), advance)
    if print_reports(reports):
        raise typer.Exit(1)
    return project


def _features(config: Path, features_path: Path) -> tuple[Any, Any, Path]:
    """The feature table written and a few of its customers shown."""
    import pyarrow.parquet as pq

    prepared, meta, cat_path = run_features(config, features_path, None)
    print_rules(prepared)
    preview = Table(title="a few customers (selected features)")
    cols = [
        c
        for c in ("customer_id", "plan", "frequency", "recency", "T", "monetary_value", "revenue")
        if c in meta.schema.names
    ]
    for c in cols:
        preview.add_column(c, justify="left" if c in ("customer_id", "plan") else "right")
    for row in pq.read_table(features_path, columns=cols).slice(0, 5).to_pylist():
        preview.add_row(*[cell(row[c]) for c in cols])
    out.print(preview)
    return prepared, meta, cat_path


def _clv(prepared: Any, as_of: date, out_dir: Path, project_model: str) -> None:
    """The purchase model chosen as everywhere (auto: the lowest holdout MAE), calibrated to
    half a year before the as-of date and judged on that half year."""
    import pyarrow as pa

    from custval import flows
    from custval.flows.customer_base import discount_per_unit

    holdout_end = as_of
    calibration_end = holdout_end - timedelta(weeks=26)
    with steps(1) as advance:
        advance("fitting and comparing the purchase models")
        clv_result = flows.clv(
            prepared,
            calibration_end=calibration_end,
            holdout_end=holdout_end,
            model=project_model,
            horizon=52,
            discount=discount_per_unit(0.10, "weeks"),
            compare=True,
        )
    clv_path = out_dir / CLV_FILE
    tracking_path = out_dir / TRACKING_FILE
    write_table(clv_result.predictions, clv_path)
    write_table(pa.Table.from_pandas(clv_result.tracking, preserve_index=False), tracking_path)
    out.print(
        f"calibration to {calibration_end}, holdout {calibration_end} to {holdout_end}; "
        "CLV over the next 52 weeks at 10% a year"
    )
    summary = clv_summary(clv_result, project_model, clv_path)
    print_clv(clv_result, summary, project_model, 52, "weeks", tracking_path)


def _value_model(project: Project, prepared: Any, models_dir: Path) -> Any:
    """The high/low value classifier trained, its leaderboard and what drives it printed."""
    from custval import flows

    with steps(3) as advance:
        trained = flows.train_value(
            project, prepared=prepared, out_dir=models_dir, progress=advance
        )
    clf = trained.clf
    out.print(
        f"label: top 20% of spend in the 52 weeks after {trained.cutoff} "
        f"({trained.y.sum():,.0f} of {trained.y.size:,} customers); transaction and usage "
        "features from before it, the CRM profile as it is now"
    )
    cli_value.print_leaderboard(clf.leaderboard_, clf.chosen_, "5-fold cross-validation")
    cli_value.print_insights(trained.importance, trained.profile, trained.catalogue)
    return trained


def _segments(project: Project, prepared: Any, store_path: Path) -> None:
    from custval import flows

    with steps(3) as advance:
        advance("the customers' features and CLV")
        table = flows.segment_features(project, prepared)
        advance("clustering, profiling and naming")
        segmented = flows.segment_table(table, seed=0)
        advance("storing the segmentation")
        flows.store_segments(segmented, str(store_path), project.as_of)
    print_segments(segmented)


#: what the demo's scoring run acts on (the project file's [actions] does the same); the
#: retention budget is this much per customer of the company (1,000 for 5,000 customers)
DEMO_ACTIONS = {"churn": True, "propensity": True, "next_best_offers": 5, "playbooks": True}
DEMO_BUDGET_PER_CUSTOMER = 0.2


def _with_actions(project: Project, customers: int) -> Project:
    budget = {"targeting_budget": DEMO_BUDGET_PER_CUSTOMER * customers}
    actions = project.actions.model_copy(update={**DEMO_ACTIONS, **budget})
    return project.model_copy(update={"actions": actions})


def _score(project: Project, prepared: Any) -> None:
    """One scoring run into the store, shown as BI tools would read it: from its views."""
    from custval import flows
    from custval.flows.actions import planned_stages

    store_path = Path(project.store)
    with steps(6 + planned_stages(project)) as advance:
        scored_run = flows.score(
            project,
            store_url=store_path,
            models_dir=project.root / MODELS_DIR,
            prepared=prepared,
            progress=advance,
        )
    print_scored_run(store_path, scored_run)
    if scored_run.actions is not None:
        print_playbooks(store_path)
        for line in scored_run.actions.notes:
            out.print(escape(line))


def _forecast(project: Project, prepared: Any) -> None:
    """Weekly revenue: the candidates' leaderboard and the chosen forecast, into the store."""
    from custval.flows.forecast_store import store_forecast
    from custval.flows.forecasting import forecast

    with steps(3) as advance:
        # half a year of weekly revenue, judged on 3 origins half a year apart
        run = forecast(
            prepared.tables["transactions"],
            project.as_of,
            freq="week",
            horizon=26,
            n_origins=3,
            one_row_per_order=prepared.one_row_per_order,
            progress=advance,
        )
        advance("storing the run")
        run_id = store_forecast(run, str(project.store), project.as_of)
    print_forecast(run)
    out.print(f"run {run_id} stored (view v1_latest_forecasts; GET /v1/forecasts)")


#: the share of free-plan customers the demo's later month moves to premium
PLANTED_SHARE = 0.4
LATER_FILE = "custval_later.toml"


def _later_month(company: SynthResult) -> Path:
    """The CRM's next snapshot with a planted shift (a campaign moved 40% of the free-plan
    customers to premium), as a project file beside the first (same store, same models):
    scored with the champion, then checked by ``custval monitor``; returns its file."""
    import csv

    from custval import flows
    from custval.cli.monitoring import print_report
    from custval.flows.monitor import check_run

    crm = Path(company.files["crm_customers"])
    later_crm = crm.with_name("crm_customers_later.csv")
    with crm.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    plan = rows[0].index("plan")
    free = [r for r in rows[1:] if r[plan] == "free"]
    for r in free[:: round(1 / PLANTED_SHARE)][: int(len(free) * PLANTED_SHARE)]:
        r[plan] = "premium"
    with later_crm.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows)
    text = company.config_path.read_text(encoding="utf-8")
    config = company.config_path.with_name(LATER_FILE)
    config.write_text(
        text.replace(f'uri = "{crm.name}"', f'uri = "{later_crm.name}"', 1), encoding="utf-8"
    )
    later = load(config)
    out.print(
        f"{later_crm.name}: {int(len(free) * PLANTED_SHARE):,} of {len(free):,} free-plan "
        f"customers moved to premium (planted); project file {config.name}"
    )
    with steps(3 * len(later.sources) + 6) as advance:
        flows.score(later, store_url=later.store, progress=advance)
    print_report(check_run(later))
    return config


def print_playbooks(store_path: Path) -> None:
    """The latest run's playbook: per segment, the offer, channel, timing and retention."""
    from custval.store import open_store

    with open_store(store_path) as store:
        rows = store.query(
            "SELECT segment, customers, aspect, recommendation FROM v1_latest_playbooks "
            "ORDER BY customers DESC, segment, CASE aspect WHEN 'offer' THEN 1 "
            "WHEN 'channel' THEN 2 WHEN 'timing' THEN 3 ELSE 4 END"
        )
    table = Table(title="the playbook per segment (view v1_latest_playbooks, with each rule)")
    table.add_column("segment (customers)")
    table.add_column("aspect")
    table.add_column("recommendation", overflow="fold")
    last = None
    for segment, n, aspect, text in rows:
        first = segment != last
        if first and last is not None:
            table.add_section()
        table.add_row(f"{segment} ({n:,})" if first else "", aspect, escape(text))
        last = segment
    out.print(table)


def print_scored_run(store_path: Path, scored_run: Any) -> None:
    """A scoring run as BI tools would read it: the top customers and value by segment, from
    the store's views."""
    from custval.store import open_store

    with open_store(store_path) as store:
        top10 = store.query(
            "SELECT p.customer_id, p.value_probability, p.clv_expected, r.text "
            "FROM latest_predictions p JOIN reasons r "
            "ON r.run_id = p.run_id AND r.customer_id = p.customer_id AND r.rank = 1 "
            "ORDER BY p.value_probability DESC, p.clv_expected DESC LIMIT 10"
        )
        by_segment = store.query(
            "SELECT segment, customers, high_value_customers, clv_total FROM "
            "segment_value_summary WHERE run_id = ? ORDER BY clv_total DESC",
            (scored_run.run_id,),
        )
    _print_top10(top10)
    _print_by_segment(by_segment)
    out.print(
        f"run {scored_run.run_id}: {scored_run.customers:,} customers, {scored_run.high:,} "
        "high; BI tools read the views latest_predictions, customer_value_summary, "
        "reason_summary, latest_segment_profiles, segment_value_summary"
    )


def _print_top10(rows: list[tuple[Any, ...]]) -> None:
    table = Table(title="top 10 high-value customers today (from the store's latest run)")
    for col in ("customer", "probability", "CLV, next year", "first reason"):
        table.add_column(col, justify="left" if col in ("customer", "first reason") else "right")
    for cid, prob, value, text in rows:
        table.add_row(
            str(cid), f"{prob:.2f}", "-" if value is None else f"{value:,.0f}", escape(text)
        )
    out.print(table)


def _print_by_segment(rows: list[tuple[Any, ...]]) -> None:
    table = Table(title="value by segment (view segment_value_summary)")
    for col in ("segment", "customers", "high value", "CLV, next year"):
        table.add_column(col, justify="left" if col == "segment" else "right")
    clv_sum = sum(v for *_, v in rows if v is not None) or 1.0
    for name, n, high, value in rows:
        table.add_row(
            name,
            f"{n:,}",
            f"{high:,} ({high / n:.0%})",
            "-" if value is None else f"{value:,.0f} ({value / clv_sum:.0%})",
        )
    out.print(table)


def _print_files(
    out_dir: Path,
    meta: Any,
    cat_path: Path,
    model_version: str,
    company: SynthResult,
    store_path: Path,
) -> None:
    out.print(
        f"feature table : {out_dir / FEATURES_FILE}  ({meta.num_rows:,} customers x "
        f"{meta.num_columns - 1} features)"
    )
    out.print(f"catalogue     : {cat_path}")
    out.print(
        f"CLV           : {out_dir / CLV_FILE}  (P(alive), purchases and CLV with 90% intervals)"
    )
    out.print(f"tracking      : {out_dir / TRACKING_FILE}")
    out.print(f"value model   : {company.out / MODELS_DIR / model_version}")
    out.print(
        f"store         : {company.out / store_path.name}  (DuckDB: runs, predictions, "
        "reasons, segments, BI views)"
    )
    out.print(f"raw data      : {company.out}  (project file {company.config_path})")
    out.print(f"true params   : {company.out / 'truth'}")


def _print_next(out_dir: Path, company: SynthResult, as_of: date, later: Path) -> None:
    """The commands to try next, each working as printed from the folder the demo ran in."""
    exe = invoked_as()
    project = company.config_path
    tries = [
        (
            f"{exe} monitor -c {later} || {exe} retrain -c {project}",
            "what a scheduler runs: the check, and on an alarm a challenger, promoted if better",
        ),
        (f"{exe} models list -c {project}", "the model versions, the champion and challenger"),
        (f"{exe} score -c {project}", "score today's customers again: a new run in the store"),
        (
            f"{exe} api-key new --name me -c {project}",
            "a key for the service, kept (as a hash) in the project's store",
        ),
        (
            f"{exe} serve -c {project}",
            "the same predictions over HTTP (http://127.0.0.1:8000/docs) and the dashboard at "
            "http://127.0.0.1:8000/dashboard: sign in with the key",
        ),
        (f"{exe} export -c {project} -o {out_dir / 'exports'}", "the latest run as files"),
        (
            f"{exe} target -c {project} --budget 500",
            "whom a retention offer would change most, within a budget (uplift x CLV - cost)",
        ),
        (f"{exe} segment -d {out_dir / CLV_FILE}", "segments from the CLV output alone"),
        (
            f"{exe} clv -t {company.files['transactions']} --customer-id account_id --date ts "
            f"--calibration-end {as_of}",
            "CLV from the transactions file alone",
        ),
    ]
    for command, what in tries:
        # unwrapped: a command broken over two lines would not paste
        out.print(f"{escape(command)}\n    [dim]# {what}[/dim]", soft_wrap=True)


def invoked_as() -> str:
    """custval as it was called: `make demo` runs .venv/bin/custval, which works from where
    it ran; a bare `custval` (on the PATH, or `python -m custval`) otherwise."""
    exe = Path(sys.argv[0])
    return str(exe) if exe.name == "custval" and not exe.is_absolute() else "custval"
