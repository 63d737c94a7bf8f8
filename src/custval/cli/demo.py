"""``custval demo``: the whole path on a generated sample company."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from custval.cli import value as cli_value
from custval.cli.clv import clv_summary, print_clv
from custval.cli.common import cell, friendly, load, out, print_reports, print_rules, write_table
from custval.cli.project import print_synth, run_features, synth_company
from custval.cli.segment import print_segments

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.


@friendly
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything.")] = Path(
        "demo-output"
    ),
    customers: Annotated[int, typer.Option("--customers", "-n", min=100)] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """The whole path on a generated sample company: generate, validate, clean, link, features,
    CLV, the high/low value classifier, scoring into the store.

    Prints rows per source, what cleaning did, the feature table's shape, the CLV models' fits,
    holdout accuracy and comparison, the value classifier's leaderboard and reasons, and where
    the files are.
    """
    from custval import flows
    from custval.data import sources

    out.rule("1. a sample company with several sources and the usual dirt")
    result = synth_company(customers, out_dir / "data", seed, "csv")
    print_synth(result)
    config = result.config_path
    out.rule("2. validation against the contracts")
    project = load(config)
    con = sources.working_connection()
    reports = flows.validate(project, con, flows.open_all(project, con))
    if print_reports(reports):
        raise typer.Exit(1)
    out.rule("3. cleaning, customer 360 and features")
    features_path = out_dir / "features.parquet"
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
    import pyarrow.parquet as pq

    for row in pq.read_table(features_path, columns=cols).slice(0, 5).to_pylist():
        preview.add_row(*[cell(row[c]) for c in cols])
    out.print(preview)
    out.rule("4. customer lifetime value: BTYD models fitted, judged on a holdout, compared")

    holdout_end = project.as_of
    calibration_end = holdout_end - timedelta(weeks=26)
    clv_result = flows.clv(
        prepared,
        calibration_end=calibration_end,
        holdout_end=holdout_end,
        model="mbgnbd",
        horizon=52,
        discount=1.1 ** (1 / 52) - 1,
        compare=True,
    )
    clv_path = out_dir / "clv.parquet"
    tracking_path = out_dir / "clv_tracking.csv"
    write_table(clv_result.predictions, clv_path)
    import pyarrow as pa

    write_table(pa.Table.from_pandas(clv_result.tracking, preserve_index=False), tracking_path)
    out.print(
        f"calibration to {calibration_end}, holdout {calibration_end} to {holdout_end}; "
        "CLV over the next 52 weeks at 10% a year"
    )
    summary = clv_summary(clv_result, "mbgnbd", clv_path)
    print_clv(clv_result, summary, "mbgnbd", 52, "weeks", tracking_path)
    out.rule("5. high/low value classifier: candidates compared, reasons for every customer")

    trained = flows.train_value(project, prepared=prepared, out_dir=out_dir / "models")
    clf = trained.clf
    out.print(
        f"label: top 20% of spend in the 52 weeks after {trained.cutoff} "
        f"({trained.y.sum():,.0f} of {trained.y.size:,} customers); transaction and usage "
        "features from before it, the CRM profile as it is now"
    )
    cli_value.print_leaderboard(clf.leaderboard_, clf.chosen_, "5-fold cross-validation")
    cli_value.print_insights(trained.importance, trained.profile, trained.catalogue)
    out.rule("6. segments: k-means with automatic k, profiled and named, into the store")

    store_path = out_dir / "custval.duckdb"
    segmented = flows.segment_table(flows.segment_features(project, prepared), seed=0)
    print_segments(segmented)
    flows.store_segments(segmented, str(store_path), project.as_of)
    out.rule("7. scoring today's customers into the store: value, reasons, CLV, segment, one run")
    scored_run = flows.score(
        project, store_url=store_path, models_dir=out_dir / "models", prepared=prepared
    )
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
    table = Table(title="top 10 high-value customers today (from the store's latest run)")
    for col in ("customer", "probability", "CLV, next year", "first reason"):
        table.add_column(col, justify="left" if col in ("customer", "first reason") else "right")
    for cid, prob, value, text in top10:
        table.add_row(
            str(cid), f"{prob:.2f}", "-" if value is None else f"{value:,.0f}", escape(text)
        )
    out.print(table)
    table = Table(title="value by segment (view segment_value_summary)")
    for col in ("segment", "customers", "high value", "CLV, next year"):
        table.add_column(col, justify="left" if col == "segment" else "right")
    clv_sum = sum(v for *_, v in by_segment if v is not None) or 1.0
    for name, n, high, value in by_segment:
        table.add_row(
            name,
            f"{n:,}",
            f"{high:,} ({high / n:.0%})",
            "-" if value is None else f"{value:,.0f} ({value / clv_sum:.0%})",
        )
    out.print(table)
    out.print(
        f"run {scored_run.run_id}: {scored_run.customers:,} customers, {scored_run.high:,} "
        "high; BI tools read the views latest_predictions, customer_value_summary, "
        "reason_summary, latest_segment_profiles, segment_value_summary"
    )
    out.rule("done")
    out.print(
        f"feature table : {features_path}  ({meta.num_rows:,} customers x "
        f"{meta.num_columns - 1} features)"
    )
    out.print(f"catalogue     : {cat_path}")
    out.print(f"CLV           : {clv_path}  (P(alive), purchases and CLV with 90% intervals)")
    out.print(f"tracking      : {tracking_path}")
    out.print(f"value model   : {trained.folder}")
    out.print(
        f"store         : {store_path}  (DuckDB: runs, predictions, reasons, segments, BI views)"
    )
    out.print(f"raw data      : {result.out}  (project file {config})")
    out.print(f"true params   : {result.out / 'truth'}")
