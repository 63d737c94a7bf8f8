"""The project's commands: ``custval init``, ``synth``, ``validate`` and ``features``."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

from custval.cli.common import (
    ConfigOpt,
    EngineOpt,
    SeedOpt,
    check_output,
    err,
    friendly,
    load,
    out,
    parse_date,
    print_reports,
    print_rules,
    steps,
)
from custval.errors import CustvalError

if TYPE_CHECKING:
    from custval.data.synth import SynthResult

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.


@friendly
def init(
    path: Annotated[Path, typer.Option("--out", "-o", help="Where to write it.")] = Path(
        "custval.toml"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example project file (custval.toml) to adapt to your data."""
    from custval.cli.template import TEMPLATE

    if path.exists() and not force:
        raise CustvalError(f"'{path}' exists already", hint="pass --force to overwrite it")
    path.write_text(TEMPLATE, encoding="utf-8")
    out.print(f"wrote {path}: edit the sources, then run 'custval validate --config {path}'")


@friendly
def synth(
    customers: Annotated[int, typer.Option("--customers", "-n", min=1, help="Customers.")] = 5000,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder to write into.")] = Path(
        "sample-company"
    ),
    seed: SeedOpt = 0,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="csv, parquet or duckdb (one database file).")
    ] = "csv",
) -> None:
    """Generate a realistic sample company with deliberate dirt and known truth.

    Writes CRM profiles, transactions (with products from a catalogue), web sessions, product
    usage, service tickets, subscriptions with cancellations, a retention campaign's log (a
    randomised control group, planted uplift) and an id map, each with its own key and the usual
    dirt; the true parameters, dirt counts, churn, uplift and next purchases in truth/; and a
    ready custval.toml. About 10 transactions per customer; 1M customers take
    under a minute.
    """
    if fmt not in ("csv", "parquet", "duckdb"):
        raise CustvalError(f"--format must be csv, parquet or duckdb, not '{fmt}'")
    result = synth_company(customers, out_dir, seed, fmt)  # type: ignore[arg-type]
    print_synth(result)


def synth_company(
    customers: int, out_dir: Path, seed: int, fmt: Literal["csv", "parquet", "duckdb"]
) -> SynthResult:
    from custval.data.synth import generate

    with steps(8) as advance:
        last = {"step": ""}

        def progress(step: str, _fraction: float) -> None:
            if step != last["step"]:
                last["step"] = step
                advance(step)

        return generate(customers, out_dir, seed=seed, fmt=fmt, progress=progress)


def print_synth(result: Any) -> None:
    table = Table(title=f"sample company in {result.out}")
    table.add_column("source")
    table.add_column("rows", justify="right")
    table.add_column("file")
    for name, rows in result.rows.items():
        table.add_row(name, f"{rows:,}", escape(str(result.files.get(name, ""))))
    out.print(table)
    out.print(f"project file: {result.config_path}")


@friendly
def validate(config: ConfigOpt = Path("custval.toml"), engine: EngineOpt = None) -> None:
    """Check every source against its contract; exit 1 on errors.

    Checks required columns, parseable dates, amounts and numbers, ranges, and ids linked to two
    customers in the id map. Prints one line per source and a paragraph per problem with example
    rows; warnings (such as rows without an id, which cleaning drops) do not fail.
    """
    from custval import flows
    from custval.data.engine import connect

    project = load(config, engine)
    con = connect(project.engine)
    with steps(2 * len(project.sources)) as advance:
        raw = flows.open_all(project, con, advance)
        reports = flows.validate(project, con, raw, advance)
    n_errors = print_reports(reports)
    if n_errors:
        err.print(f"[bold red]{n_errors} error(s)[/]: fix the data or the column mapping.")
        raise typer.Exit(1)
    out.print("[green]all sources meet their contracts[/]")


def run_features(
    config: Path,
    out_path: Path,
    as_of: date | None,
    quiet: bool = False,
    groups: list[str] | None = None,
    engine: str | None = None,
    auto: bool = False,
) -> tuple[Any, Any, Path]:
    """Shared by `features` and `demo`: prepare the project and write the feature table.

    Returns the prepared project, the written file's Parquet metadata and the catalogue path.
    """
    import pyarrow.parquet as pq

    from custval import flows

    project = load(config, engine)
    check_output(out_path)
    with steps(3 * len(project.sources) + 1, quiet) as advance:
        prepared = flows.prepare(project, progress=advance)
        advance("computing and writing features")
        ft = flows.features(project, prepared, as_of, groups)
        if auto:
            ft = flows.auto_features(project, prepared, ft)
        flows.write_features(ft, out_path)
    return prepared, pq.ParquetFile(out_path).metadata, out_path.with_suffix(".catalogue.json")


@friendly
def features(
    config: ConfigOpt = Path("custval.toml"),
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="Parquet file for the feature table.")
    ] = Path("features.parquet"),
    as_of: Annotated[
        str | None,
        typer.Option(
            help="As-of date YYYY-MM-DD (default: the project's). Only data strictly "
            "before it is used."
        ),
    ] = None,
    groups: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated feature groups (default: the project's, all): rfm, rhythm, "
            "trend, mix, profile, web, product, service. rhythm and trend need rfm."
        ),
    ] = None,
    engine: EngineOpt = None,
    auto: Annotated[
        bool,
        typer.Option(
            "--auto",
            help="Add the generated features: every related table aggregated in windows of "
            "days before the as-of date (\\[features.auto]; docs/features.md), each named and "
            "described in the catalogue.",
        ),
    ] = False,
) -> None:
    """Build the customer 360 and the feature table (one row per customer) at the as-of date.

    Validates first (and stops on contract errors), cleans and links every source, prints what
    each cleaning rule changed or dropped, and writes the features to Parquet with a JSON
    catalogue of their meanings beside it.
    """
    from custval.features.build import GROUPS

    day = parse_date(as_of) if as_of else None
    chosen = [g.strip() for g in groups.split(",") if g.strip()] if groups else None
    unknown = sorted(set(chosen or []) - set(GROUPS))
    if unknown:
        raise CustvalError(
            f"--groups names unknown feature groups {', '.join(unknown)}",
            hint="Known groups: " + ", ".join(GROUPS),
        )
    prepared, meta, cat_path = run_features(
        config, out_path, day, groups=chosen, engine=engine, auto=auto
    )
    print_rules(prepared)
    out.print(
        f"features: {meta.num_rows:,} customers x {meta.num_columns - 1} features -> "
        f"{out_path} (catalogue: {cat_path})"
    )
