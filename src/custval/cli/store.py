"""The store's commands: ``custval score`` and ``custval export``.

They register on the main Typer app of :mod:`custval.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from custval.cli.common import (
    ConfigOpt,
    EngineOpt,
    TopKOpt,
    friendly,
    load,
    out,
    steps,
    write_table,
)
from custval.errors import CustvalError

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.


@friendly
def score(
    config: ConfigOpt = Path("custval.toml"),
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Model version under models/, or 'challenger' or 'latest' (default: the "
            "champion; see 'custval models list').",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="Where runs are kept: a DuckDB file or a postgresql:// URL (default: the "
            "project's store setting, custval.duckdb beside the project file)."
        ),
    ] = None,
    top_k: TopKOpt = 3,
    no_clv: Annotated[bool, typer.Option("--no-clv", help="Skip the CLV models.")] = False,
    clv_method: Annotated[
        str | None,
        typer.Option(
            help="btyd, ml, hybrid or auto: overrides the project's \\[clv] method (see "
            "'custval clv --help'); every method but btyd runs the leaderboard first."
        ),
    ] = None,
    engine: EngineOpt = None,
) -> None:
    """Score every customer at the project's as-of date and store the run.

    Features as of the date; the value model's probability, class and top reasons; CLV over
    the project's horizon (a year by default) with its 90% interval, by the project's \\[clv]
    method (BG/NBD and Gamma-Gamma unless --clv-method says otherwise), P(alive) and expected
    purchases from BG/NBD; each customer's segment by the store's latest segmentation
    ('custval segment -c').
    Written as one run, all or nothing: on any failure the run is marked failed with its error
    and none of its rows is visible; earlier runs stay intact. BI tools read the views
    latest_predictions, customer_value_summary and reason_summary (docs/bi.md).
    """
    from custval import flows

    project = load(config, engine)
    if clv_method is not None:
        from custval.config import check_clv_method

        project = project.model_copy(
            update={"clv": project.clv.model_copy(update={"method": check_clv_method(clv_method)})}
        )
    target = store or project.store
    from custval.flows.actions import planned_stages

    planned = 3 * len(project.sources) + (6 if no_clv else 7) + planned_stages(project)
    run = flows.score_on_spark if project.engine.kind == "spark" else flows.score
    with steps(planned) as advance:
        result = run(
            project,
            store_url=target,
            model_version=model,
            top_k=top_k,
            with_clv=not no_clv,
            progress=advance,
        )
    _print_scored(result)


def _print_scored(result: Any) -> None:
    """The top customers, the run, and what else it stored."""
    top = result.predictions.sort_values("probability", ascending=False).head(10)
    table = Table(title=f"top 10 high-value customers (model {result.model_version})")
    for c in ("customer", "probability", "first reason"):
        table.add_column(c, justify="right" if c == "probability" else "left")
    for row in top.to_dict("records"):
        table.add_row(str(row["customer_id"]), f"{row['probability']:.2f}", row["reason_1"])
    out.print(table)
    from custval.config import mask_url

    out.print(
        f"run {result.run_id}: {result.customers:,} customers, {result.high:,} high; "
        f"store: {mask_url(result.store_url)}"
    )
    if result.clv_method is not None:
        out.print(f"CLV by {result.clv_method}")
    if result.segment_run is not None:
        out.print(f"segments by segmentation run {result.segment_run}")
    elif result.segment_note is not None:
        out.print(f"[yellow]{result.segment_note}[/yellow]")
    if result.actions is not None:
        stored = ", ".join(sorted(result.actions.tables))
        out.print(f"actions stored: {stored} (views v1_latest_*, docs/bi.md)")
        for line in result.actions.notes:
            out.print(line)


#: the flags of the commands that read a store (export, report)
StoreConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="The project file, for its store setting.")
]
StoreUrlOpt = Annotated[
    str | None,
    typer.Option(help="The store: a DuckDB file or a postgresql:// URL (default: the project's)."),
]


def _existing_store(store: str | None, config: Path) -> str:
    """The store named, else the project's; a DuckDB file that is not there is an error."""
    if store is None:
        store = load(config).store
    if not Path(store).exists() and not store.startswith(("postgresql://", "postgres://")):
        raise CustvalError(f"there is no store at '{store}'", hint="Run 'custval score' first")
    return store


@friendly
def export(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the files.")],
    config: StoreConfigOpt = Path("custval.toml"),
    store: StoreUrlOpt = None,
    run: Annotated[str, typer.Option(help="A run id, or 'latest'.")] = "latest",
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
) -> None:
    """Write a run's predictions and reasons as files (predictions.parquet and
    reasons.parquet, or .csv), for tools that read files."""
    from custval.store import open_store

    if fmt not in ("parquet", "csv"):
        raise CustvalError(f"unknown format '{fmt}'", hint="Use parquet or csv")
    store = _existing_store(store, config)
    with open_store(store) as s:
        run_id = s.latest_run() if run == "latest" else run
        found = s.query("SELECT status FROM runs WHERE run_id = ?", (run_id,)) if run_id else []
        if not found:
            raise CustvalError(f"the store has no run '{run}'")
        if found[0][0] != "succeeded":
            raise CustvalError(f"run {run_id} {found[0][0]}: it has nothing to export")
        written = []
        for name in ("predictions", "reasons"):
            data = s.run_rows(name, run_id)
            path = out_dir / f"{name}.{fmt}"
            write_table(data, path)
            written.append(f"{path} ({data.num_rows:,} rows)")
    out.print(f"run {run_id}: " + "; ".join(written))


@friendly
def report(
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="The report to write.", metavar="FILE.html")
    ],
    config: StoreConfigOpt = Path("custval.toml"),
    store: StoreUrlOpt = None,
) -> None:
    """Write the dashboard's pages of the store as one HTML file: the latest run's overview,
    value drivers, segments, the CLV model, the forecast and monitoring, whichever the store
    has. The scripts are inside and the file asks for nothing: send it, open it offline."""
    from custval.cli.common import check_report, write_html_report
    from custval.flows import dashboard as pages
    from custval.store import open_store

    check_report(out_path, "--out")
    store = _existing_store(store, config)
    with open_store(store, read_only=True) as s:
        built = [
            build(s)
            for build in (
                pages.overview_page,
                pages.drivers_page,
                pages.segments_page,
                pages.clv_page,
                pages.forecast_page,
                pages.monitoring_page,
            )
        ]
    if built[0].empty:
        raise CustvalError(built[0].empty)
    shown = [p for p in built if not p.empty]
    write_html_report(out_path, "Customer value", shown, built[0].subtitle)
