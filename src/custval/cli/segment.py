"""``custval segment``: customer segments with profiles and names.

It registers on the main Typer app of :mod:`custval.cli`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from custval.cli.common import (
    DateFormatOpt,
    DecimalOpt,
    DelimiterOpt,
    EncodingOpt,
    NamesOpt,
    NoHeaderOpt,
    ReportOpt,
    SeedOpt,
    check_output,
    check_report,
    file_options,
    friendly,
    load,
    out,
    steps,
    write_html_report,
    write_table,
)
from custval.errors import CustvalError

if TYPE_CHECKING:
    from custval.cli.common import FileOptions
    from custval.config import Project

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.

ProjectOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="A project: segments its customers at the as-of date."),
]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        "-d",
        help="Or any customer table (CSV, Parquet, Excel, JSON lines), one row per customer; "
        "custval's own outputs (custval clv, score, export, predict) are segmented on their "
        "meaningful columns.",
    ),
]
IdOpt = Annotated[str, typer.Option("--id", help="The customer id column of --data.")]
FeaturesOpt = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated columns to segment on (default: RFM, predicted CLV, tenure "
        "and behaviour, those the table has; on custval clv's output frequency, recency, "
        "monetary_value, p_alive and clv)."
    ),
]
AlgorithmOpt = Annotated[
    str,
    typer.Option(
        help="kmeans, hierarchical, hdbscan, gmm or rfm (RFM quintiles from recency_days, "
        "orders and revenue, or from custval clv's frequency, recency, T and monetary_value)."
    ),
]
KOpt = Annotated[
    str, typer.Option(help="Number of segments: 2 up to the customers' number, or auto (2 to 8).")
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Write customer_id, segment, segment_name here."),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the summary as JSON (k, scores, profiles).")
]
StoreOpt = Annotated[
    str | None,
    typer.Option(help="With --config: the store for the run (default: the project's)."),
]
LabelsOpt = Annotated[
    str | None,
    typer.Option(
        help="With --data: a column of segments the company already has (blank where "
        "unknown): learn them and place the other customers, with reasons."
    ),
]


# a Typer command takes one parameter per flag: the argument-count rules (PLR0913, PLR0917) do
# not fit it
@friendly
def segment(
    config: ProjectOpt = None,
    data: DataOpt = None,
    id_column: IdOpt = "customer_id",
    features: FeaturesOpt = None,
    algorithm: AlgorithmOpt = "kmeans",
    k: KOpt = "auto",
    seed: SeedOpt = 0,
    out_path: OutOpt = None,
    as_json: JsonOpt = False,
    store: StoreOpt = None,
    labels: LabelsOpt = None,
    delimiter: DelimiterOpt = None,
    decimal: DecimalOpt = None,
    encoding: EncodingOpt = None,
    no_header: NoHeaderOpt = False,
    names: NamesOpt = None,
    date_format: DateFormatOpt = None,
    report: ReportOpt = None,
) -> None:
    """Segment customers: cluster them (k-means by default; k chosen by silhouette with its
    stability reported), profile each segment against the whole base (size, share of revenue
    and CLV, medians and lifts, what sets it apart) and name it from its profile, with the rule.

    With --config the project's customers are segmented on their features at the as-of date
    plus their predicted CLV, and the run goes into the store (tables segments and
    segment_profiles). With --data any customer table is segmented; custval's own outputs
    (custval clv, score, export, predict) on their meaningful columns, which are printed, and
    --algorithm rfm takes recency, frequency and monetary value from custval clv's BTYD
    summary. With --labels COLUMN its
    known segments (a CRM column, blank where unknown) are learnt instead, judged on a fifth
    of them held out, and every unlabelled customer is placed, with the reasons.
    """
    if (config is None) == (data is None):
        raise CustvalError("give either --config (a project) or --data (a customer table)")
    chosen = [c.strip() for c in features.split(",") if c.strip()] if features else None
    k_value: str | int = k if k == "auto" else _k(k)
    opts = file_options(delimiter, decimal, encoding, no_header, names, date_format)
    table, project = _customers(config, data, opts)
    if project is not None:
        id_column = "customer_id"
    if out_path is not None:
        check_output(out_path)
    check_report(report)
    if labels is not None:
        if data is None:
            raise CustvalError("--labels goes with --data: a table with the label column")
        _learn_labels(table, id_column, labels, out_path, as_json)
        return
    _cluster(
        table,
        project,
        id_column=id_column,
        features=chosen,
        algorithm=algorithm,
        k=k_value,
        seed=seed,
        out_path=out_path,
        store=store,
        as_json=as_json,
        report=report,
    )


def _k(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CustvalError(f"--k must be auto or a whole number, not '{text}'") from None


def _customers(
    config: Path | None, data: Path | None, opts: FileOptions
) -> tuple[Any, Project | None]:
    """The table to segment, and the project when it comes from one."""
    if data is not None:
        from custval.data.tables import read_customer_table

        return read_customer_table(data, csv=opts.csv(), date_format=opts.date_format), None
    from custval import flows

    project = load(config)  # type: ignore[arg-type]
    with steps(3 * len(project.sources) + 1) as advance:
        prepared = flows.prepare(project, progress=advance)
        advance("the customers' features and CLV")
        return flows.segment_features(project, prepared), project


def _write_customers(customers: Any, path: Path) -> None:
    import pyarrow as pa

    write_table(pa.Table.from_pandas(customers, preserve_index=False), path)


def _learn_labels(
    table: Any, id_column: str, labels: str, out_path: Path | None, as_json: bool
) -> None:
    """--labels: the known segments learnt, judged on a held-out share, the others placed."""
    from custval import flows

    learnt = flows.assign_labelled_segments(table, id_column=id_column, labels=labels)
    if out_path is not None:
        _write_customers(learnt.customers, out_path)
    placed = learnt.customers[learnt.customers["source"] == "model"]
    summary = {
        "labels": labels,
        "held_out_accuracy": learnt.accuracy,
        "held_out_customers": learnt.held_out,
        "placed": len(placed),
        "segments": learnt.customers["segment"].value_counts().to_dict(),
    }
    if as_json:
        out.print_json(json.dumps(summary, default=str))
        return
    out.print(
        f"learnt the segments of '{labels}': accuracy {learnt.accuracy:.3f} on "
        f"{learnt.held_out:,} labelled customers held out; placed {len(placed):,} "
        "unlabelled customers",
        highlight=False,
    )
    for row in placed.head(5).to_dict("records"):
        out.print(f"  {row['customer_id']}: {row.get('reason_1', '')}", highlight=False)
    if out_path is not None:
        out.print(f"segments of {len(learnt.customers):,} customers: {out_path}")


def _cluster(
    table: Any,
    project: Project | None,
    *,
    id_column: str,
    features: list[str] | None,
    algorithm: str,
    k: str | int,
    seed: int,
    out_path: Path | None,
    store: str | None,
    as_json: bool,
    report: Path | None = None,
) -> None:
    """The customers clustered, profiled and named; with a project, the run stored."""
    from custval import flows

    with steps(1) as advance:
        advance(f"{algorithm}: clustering, profiling and naming the segments")
        result = flows.segment_table(
            table, id_column=id_column, features=features, algorithm=algorithm, k=k, seed=seed
        )
    if out_path is not None:
        _write_customers(result.customers, out_path)
    run_id = None
    if project is not None:
        run_id = flows.store_segments(result, store or project.store, project.as_of)
    if report is not None:
        from custval.flows.report import segment_sections

        write_html_report(report, "Segments", segment_sections(result.profiles))
    if as_json:
        summary = result.summary()
        summary["run_id"] = run_id
        out.print_json(json.dumps(summary, default=str))
        return
    if result.note:
        out.print(result.note, highlight=False)
    print_segments(result)
    if out_path is not None:
        out.print(f"segments of {len(result.customers):,} customers: {out_path}")
    if run_id is not None:
        out.print(f"run {run_id} stored (tables segments, segment_profiles)")


def print_segments(result: Any) -> None:
    seg = result.segmenter
    if seg is not None:
        out.print(
            f"{result.algorithm}: {seg.k_} segments; silhouette {seg.silhouette_:.3f}, "
            f"stability (ARI over bootstrap resamples) {seg.stability_:.3f}; features "
            f"{', '.join(seg.prep_.features_)} (log: {', '.join(seg.prep_.logged_) or 'none'})",
            highlight=False,
        )
    table = Table(title="segments")
    for col in ("segment", "name", "customers", "share", "revenue", "CLV", "sets it apart"):
        table.add_column(col, justify="right" if col in ("customers", "share") else "left")
    for row in result.profiles.to_dict("records"):
        table.add_row(
            str(row["segment"]),
            row["name"],
            f"{row['customers']:,}",
            f"{row['share']:.1%}",
            f"{row['revenue_share']:.1%}" if "revenue_share" in row else "-",
            f"{row['clv_share']:.1%}" if "clv_share" in row else "-",
            ", ".join(row["distinctive"]),
        )
    out.print(table)
    for row in result.profiles.to_dict("records"):
        out.print(f"  {row['name']}: {row['rule']}", highlight=False)
