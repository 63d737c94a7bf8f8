"""The ``custval`` command line.

Every command exits 0 on success, 1 when validation finds errors in the data, and 2 on bad input
(missing file, unreachable database, invalid project file...), with a one-paragraph message and
no traceback. Set CUSTVAL_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from custval import __version__
from custval.errors import CustvalError

app = typer.Typer(
    name="custval",
    help=(
        "custval turns raw customer data (files, databases, HTTP APIs) into a clean customer "
        "360 table and features for customer value.\n\n"
        "Start with 'custval demo' to see the whole path on generated data, or 'custval init' "
        "to write a project file for your own data, then 'custval validate' and "
        "'custval features'. 'custval clv' gives customer lifetime values from one "
        "transactions file."
    ),
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
)
out = Console()
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"custval {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """custval: customer value from raw customer data."""


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn custval's errors into a one-paragraph message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CustvalError as exc:
            if os.environ.get("CUSTVAL_DEBUG"):
                raise
            # messages quote the user's data, which may hold rich markup such as "[/b]"
            err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; nothing was written")
            raise typer.Exit(130) from None

    return wrapper


@contextmanager
def steps(total: int, quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """A rich progress bar advanced by calling the yielded function with a step's name."""
    if quiet or (not err.is_terminal and not os.environ.get("CUSTVAL_PROGRESS")):
        yield lambda _step: None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<40}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=total)

        def advance(step: str) -> None:
            bar.update(task, description=step, advance=1)

        yield advance
        bar.update(task, completed=total)


ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="The project file.", show_default=True)
]


@app.command()
@friendly
def init(
    path: Annotated[Path, typer.Option("--out", "-o", help="Where to write it.")] = Path(
        "custval.toml"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example project file (custval.toml) to adapt to your data."""
    from custval.project_template import TEMPLATE

    if path.exists() and not force:
        raise CustvalError(f"'{path}' exists already", hint="pass --force to overwrite it")
    path.write_text(TEMPLATE, encoding="utf-8")
    out.print(f"wrote {path}: edit the sources, then run 'custval validate --config {path}'")


@app.command()
@friendly
def synth(
    customers: Annotated[int, typer.Option("--customers", "-n", min=1, help="Customers.")] = 5000,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder to write into.")] = Path(
        "sample-company"
    ),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="csv, parquet or duckdb (one database file).")
    ] = "csv",
) -> None:
    """Generate a realistic sample company with deliberate dirt and known truth.

    Writes CRM profiles, transactions, web sessions, product usage, service tickets and an id
    map, each with its own key and the usual dirt, the true model parameters and dirt counts in
    truth/, and a ready custval.toml. About 10 transactions per customer; 1M customers take
    under a minute.
    """
    if fmt not in ("csv", "parquet", "duckdb"):
        raise CustvalError(f"--format must be csv, parquet or duckdb, not '{fmt}'")
    result = _synth(customers, out_dir, seed, fmt)  # type: ignore[arg-type]
    _print_synth(result)


def _synth(customers: int, out_dir: Path, seed: int, fmt: Literal["csv", "parquet", "duckdb"]):
    from custval.data.synth import generate

    with steps(8) as advance:
        last = {"step": ""}

        def progress(step: str, _fraction: float) -> None:
            if step != last["step"]:
                last["step"] = step
                advance(step)

        return generate(customers, out_dir, seed=seed, fmt=fmt, progress=progress)


def _print_synth(result: Any) -> None:
    table = Table(title=f"sample company in {result.out}")
    table.add_column("source")
    table.add_column("rows", justify="right")
    table.add_column("file")
    for name, rows in result.rows.items():
        table.add_row(name, f"{rows:,}", escape(str(result.files.get(name, ""))))
    out.print(table)
    out.print(f"project file: {result.config_path}")


def _load(config: Path):
    from custval.config import load_project

    return load_project(config)


def _print_reports(reports: list) -> int:
    """One line per source, then one indented paragraph per finding; returns the error count."""
    n_errors = 0
    for rep in reports:
        errors = sum(f.severity == "error" for f in rep.findings)
        n_errors += errors
        mark = "[red]x[/]" if errors else ("[yellow]![/]" if rep.findings else "[green]ok[/]")
        out.print(f"{mark} {escape(rep.source)} ({rep.kind}): {rep.rows:,} rows", highlight=False)
        for f in rep.findings:
            style = "red" if f.severity == "error" else "yellow"
            text = f"{f.column}: {f.problem}" if f.column else f.problem
            if f.examples:
                text += f". Examples: {_examples(f.examples)}"
            if f.hint:
                text += f". {f.hint}"
            out.print(
                f"    [{style}]{f.severity}[/] {escape(text)}", highlight=False, soft_wrap=True
            )
    return n_errors


def _examples(rows: list[dict]) -> str:
    from custval.errors import format_examples

    return format_examples(rows)


@app.command()
@friendly
def validate(config: ConfigOpt = Path("custval.toml")) -> None:
    """Check every source against its contract; exit 1 on errors.

    Checks required columns, parseable dates, amounts and numbers, ranges, and ids linked to two
    customers in the id map. Prints one line per source and a paragraph per problem with example
    rows; warnings (such as rows without an id, which cleaning drops) do not fail.
    """
    from custval import pipeline
    from custval.data import sources

    project = _load(config)
    con = sources.working_connection()
    with steps(2 * len(project.sources)) as advance:
        raw = pipeline.open_all(project, con, advance)
        reports = pipeline.validate(project, con, raw, advance)
    n_errors = _print_reports(reports)
    if n_errors:
        err.print(f"[bold red]{n_errors} error(s)[/]: fix the data or the column mapping.")
        raise typer.Exit(1)
    out.print("[green]all sources meet their contracts[/]")


def _print_rules(prepared: Any) -> None:
    table = Table(title="cleaning and identity (rows changed / dropped)")
    table.add_column("source")
    table.add_column("rule")
    table.add_column("changed", justify="right")
    table.add_column("dropped", justify="right")
    for r in prepared.rules:
        if r.changed or r.dropped:
            table.add_row(escape(r.source), escape(r.rule), f"{r.changed:,}", f"{r.dropped:,}")
    out.print(table)


def run_features(
    config: Path,
    out_path: Path,
    as_of: date | None,
    quiet: bool = False,
    groups: list[str] | None = None,
) -> tuple[Any, Any, Path]:
    """Shared by `features` and `demo`: prepare the project and write the feature table.

    Returns the prepared project, the written file's Parquet metadata and the catalogue path.
    """
    import pyarrow.parquet as pq

    from custval import pipeline

    project = _load(config)
    _check_output(out_path)
    with steps(2 * len(project.sources) + 2, quiet) as advance:
        prepared = pipeline.prepare(project, progress=advance)
        advance("computing and writing features")
        ft = pipeline.features(project, prepared, as_of, groups)
        pipeline.write_features(ft, out_path)
    return prepared, pq.ParquetFile(out_path).metadata, out_path.with_suffix(".catalogue.json")


@app.command()
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
) -> None:
    """Build the customer 360 and the feature table (one row per customer) at the as-of date.

    Validates first (and stops on contract errors), cleans and links every source, prints what
    each cleaning rule changed or dropped, and writes the features to Parquet with a JSON
    catalogue of their meanings beside it.
    """
    from custval.features.build import GROUPS

    day = _parse_date(as_of) if as_of else None
    chosen = [g.strip() for g in groups.split(",") if g.strip()] if groups else None
    unknown = sorted(set(chosen or []) - set(GROUPS))
    if unknown:
        raise CustvalError(
            f"--groups names unknown feature groups {', '.join(unknown)}",
            hint="Known groups: " + ", ".join(GROUPS),
        )
    prepared, meta, cat_path = run_features(config, out_path, day, groups=chosen)
    _print_rules(prepared)
    out.print(
        f"features: {meta.num_rows:,} customers x {meta.num_columns - 1} features -> "
        f"{out_path} (catalogue: {cat_path})"
    )


def _check_output(path: Path) -> None:
    """Refuse an output path that cannot be written before any work is done."""
    if path.is_dir():
        raise CustvalError(
            f"--out '{path}' is a folder", hint="Name a file such as features.parquet"
        )
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CustvalError(f"--out '{path}': '{parent}' is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise CustvalError(f"--out '{path}': '{parent}' is not writable")


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CustvalError(f"--as-of '{text}' is not a date like 2025-06-30") from None


@app.command()
@friendly
def clv(
    transactions: Annotated[
        str | None,
        typer.Option("--transactions", "-t", help="Transactions: a file, glob or URL."),
    ] = None,
    calibration_end: Annotated[
        str | None,
        typer.Option(
            help="End of the calibration period, YYYY-MM-DD: fit on what came before "
            "(with --config: default the project's as-of date)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Or a project: its transactions, and for --method ml, hybrid or auto every "
            "feature of its customers (profile, products, channels, usage).",
        ),
    ] = None,
    customer_id: Annotated[str, typer.Option(help="Column with the customer's id.")] = (
        "customer_id"
    ),
    date_col: Annotated[str, typer.Option("--date", help="Column with the purchase date.")] = (
        "date"
    ),
    amount: Annotated[str, typer.Option(help="Column with the purchase amount.")] = "amount",
    order_id: Annotated[
        str | None, typer.Option(help="Column with the order id (without: every row is one).")
    ] = None,
    table: Annotated[str | None, typer.Option(help="Table, for a database URL.")] = None,
    delimiter: Annotated[
        str | None, typer.Option(help="Field separator of a text file (default: detected).")
    ] = None,
    holdout_end: Annotated[
        str | None,
        typer.Option(help="End of the holdout period, YYYY-MM-DD: judge the model on it."),
    ] = None,
    model: Annotated[str, typer.Option(help="bgnbd, mbgnbd or pnbd.")] = "bgnbd",
    method: Annotated[
        str,
        typer.Option(
            help="btyd: the purchase model and Gamma-Gamma; ml: the best of LightGBM "
            "(Tweedie), random forest and neural network on the customer's features; hybrid: "
            "LightGBM on the features plus the BTYD outputs; auto: all of them side by side "
            "on a time-based holdout (--holdout-end, else the horizon before the calibration "
            "end), the best chosen. Every method but btyd prints the leaderboard."
        ),
    ] = "btyd",
    time_unit: Annotated[
        str | None,
        typer.Option(
            help="Unit of recency, T, the horizon and the discount: days, weeks, months "
            "(365.25/12 days) or years (default: the project's, else weeks)."
        ),
    ] = None,
    horizon: Annotated[
        float | None,
        typer.Option(help="CLV horizon in time units (default: one year: 52 weeks, 365 days...)."),
    ] = None,
    discount: Annotated[
        float | None,
        typer.Option(
            help="Discount rate per time unit (10% a year in weeks: 0.00183; default: the "
            "project's [clv] discount_per_year with --config, else 0)."
        ),
    ] = None,
    level: Annotated[
        float,
        typer.Option(help="Level of the intervals of expected purchases and CLV (0 = none)."),
    ] = 0.9,
    draws: Annotated[int, typer.Option(help="Parameter draws behind the intervals.", min=2)] = 200,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Also fit BG/NBD, MBG/NBD and Pareto/NBD and compare them: log-likelihood, "
            "AIC, BIC and holdout error.",
        ),
    ] = False,
    tracking_path: Annotated[
        Path | None,
        typer.Option(
            "--tracking",
            help="With --holdout-end: write the cumulative repeat transactions per time unit, "
            "actual against predicted (.csv or .parquet).",
        ),
    ] = None,
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="Per-customer predictions (.parquet or .csv).")
    ] = Path("clv.parquet"),
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Customer lifetime value from one transactions file, in one command.

    Merges same-day purchases, builds each customer's frequency, recency and T (in the time
    unit) at the calibration end, fits the purchase model and the Gamma-Gamma spend model by
    maximum likelihood, and writes per customer: P(alive), expected purchases and discounted
    CLV over the horizon with their intervals (and, with --holdout-end, actual against
    predicted holdout purchases). Prints the parameters with standard errors and the holdout
    errors.

    CLV = expected spend x sum over the horizon's steps (one time unit each) of the expected
    purchases in the step / (1 + discount) ^ (step's end). The intervals are the central
    --level quantiles over --draws draws of both models' parameters from their estimated
    sampling distribution.
    """
    from custval import pipeline
    from custval.config import project_from_dict

    if (transactions is None) == (config is None):
        raise CustvalError("give either --transactions (a file, glob or URL) or --config")
    loaded = _load(config) if config is not None else None
    if calibration_end is None and loaded is None:
        raise CustvalError("--calibration-end is needed with --transactions")
    cal_end = _parse_date(calibration_end) if calibration_end else loaded.as_of  # type: ignore[union-attr]
    hold_end = _parse_date(holdout_end) if holdout_end else None
    _check_output(out_path)
    if not 0 <= level < 1:
        raise CustvalError(f"--level must be 0 (no intervals) or between 0 and 1, not {level}")
    if hold_end is not None and hold_end <= cal_end:
        raise CustvalError(f"--holdout-end {hold_end} must come after --calibration-end {cal_end}")
    one_year = pipeline.ONE_YEAR
    # with a project, what is not given on the command line is the project's, so that the
    # leaderboard shown is judged as 'custval score' will then predict
    time_unit = time_unit or (loaded.time_unit if loaded is not None else "weeks")
    if time_unit not in one_year:
        raise CustvalError(
            f"unknown time unit '{time_unit}'", hint="Use one of " + ", ".join(one_year)
        )
    if loaded is not None:
        own_horizon, own_discount = pipeline.clv_settings(
            loaded.model_copy(update={"time_unit": time_unit})
        )
        horizon = own_horizon if horizon is None else horizon
        discount = own_discount if discount is None else discount
    horizon = one_year[time_unit] if horizon is None else horizon
    discount = 0.0 if discount is None else discount
    if tracking_path is not None:
        if hold_end is None:
            raise CustvalError("--tracking needs --holdout-end: it tracks through the holdout")
        _check_output(tracking_path)
    columns = {"customer_id": customer_id, "timestamp": date_col, "amount": amount}
    if order_id:
        columns["order_id"] = order_id
    source: dict[str, Any] = {"kind": "transactions", "uri": transactions, "columns": columns}
    if table:
        source["table"] = table
    if delimiter:
        source["csv"] = {"delimiter": delimiter}
    if loaded is not None:
        project = loaded.model_copy(update={"as_of": cal_end, "time_unit": time_unit})
    else:
        project = project_from_dict(
            {"as_of": cal_end.isoformat(), "sources": {"transactions": source}},
            root=Path.cwd(),
            origin="the command line",
        )
    from custval.config import check_clv_method

    if check_clv_method(method) != "btyd":
        ignored = [
            flag
            for flag, given in (
                ("--model", model != "bgnbd"),
                ("--draws", draws != 200),
                ("--compare", compare),
                ("--tracking", tracking_path is not None),
                ("--level 0", level == 0),
            )
            if given
        ]
        if ignored:
            raise CustvalError(
                f"{', '.join(ignored)} belong to --method btyd",
                hint="The leaderboard fits BG/NBD and its own intervals at the --level",
            )
        from custval import cli_clv_ml

        with steps(3, as_json) as advance:
            prepared = pipeline.prepare(project, progress=advance)
            advance("fitting and judging the CLV models")
            board = cli_clv_ml.run(
                project,
                prepared,
                method=method,
                holdout_end=hold_end,
                horizon=horizon,
                discount=discount,
                level=level or 0.9,
                out_path=out_path,
                as_json=as_json,
                advance=lambda _msg: None,
            )
        if as_json:
            out.print_json(data=board)
        else:
            cli_clv_ml.print_board(board, time_unit)
        return
    with steps(3, as_json) as advance:
        prepared = pipeline.prepare(project, progress=advance)
        advance("fitting")
        result = pipeline.clv(
            prepared,
            calibration_end=cal_end,
            holdout_end=hold_end,
            model=model,
            horizon=horizon,
            discount=discount,
            time_unit=time_unit,
            level=level or None,
            n_draws=draws,
            compare=compare,
        )
    _write_table(result.predictions, out_path)
    if tracking_path is not None and result.tracking is not None:
        import pyarrow as pa

        _write_table(pa.Table.from_pandas(result.tracking, preserve_index=False), tracking_path)
    summary = _clv_summary(result, model, out_path)
    summary["settings"] = {
        "time_unit": time_unit,
        "horizon": horizon,
        "discount": discount,
        "calibration_end": cal_end.isoformat(),
        "holdout_end": hold_end.isoformat() if hold_end else None,
    }
    if as_json:
        out.print_json(data=summary)
        return
    _print_rules(prepared)
    _print_clv(result, summary, model, horizon, time_unit, tracking_path)
    out.print(f"predictions: {out_path}")


def _print_clv(
    result: Any,
    summary: dict[str, Any],
    model: str,
    horizon: float,
    time_unit: str,
    tracking_path: Path | None,
) -> None:
    """The fitted models, holdout figures, totals with intervals, tracking and comparison."""
    params = Table(title=f"{model} and Gamma-Gamma (maximum likelihood)")
    for c in ("model", "parameter", "estimate", "std. error"):
        params.add_column(c, justify="left" if c in ("model", "parameter") else "right")
    for name in ("purchases", "spend"):
        for k, v in summary[name]["params"].items():
            se = summary[name]["standard_errors"][k]
            params.add_row(name, k, f"{v:.4g}", f"{se:.3g}")
    out.print(params)
    p = summary["purchases"]
    out.print(
        f"log-likelihood {p['log_likelihood']:.2f}, converged: {p['converged']}; "
        f"{summary['customers']:,} customers"
    )
    if result.holdout:
        h = result.holdout
        out.print(
            f"holdout: predicted {h['predicted_total']:,.0f} repeat purchases against "
            f"{h['actual_total']:,.0f} actual ({h['aggregate_error']:+.1%}); per customer "
            f"MAE {h['mae']:.3f}, RMSE {h['rmse']:.3f}"
        )
    if result.interval:
        iv = result.interval
        for name, label in (("expected_purchases_total", "repeat purchases"), ("clv_total", "CLV")):
            t = iv[name]
            out.print(
                f"total {label} over {horizon:g} {time_unit}: {t['estimate']:,.0f} "
                f"({iv['level']:.0%} interval {t['lower']:,.0f} to {t['upper']:,.0f})"
            )
    if result.tracking is not None:
        tr = summary["tracking"]
        out.print(
            f"tracking: cumulative repeat purchases {tr['cumulative_actual']:,.0f} actual, "
            f"{tr['cumulative_predicted']:,.0f} predicted by the holdout end"
            + (f" ({tracking_path})" if tracking_path else "")
        )
    if result.comparison is not None:
        cmp = Table(title="purchase models compared (best AIC first)")
        cols = ["model", "log-lik.", "AIC", "BIC", "conv."]
        has_holdout = "holdout_mae" in result.comparison.columns
        if has_holdout:
            cols += ["holdout MAE", "holdout total"]
        for c in cols:
            cmp.add_column(c, justify="left" if c == "model" else "right")
        for row in summary["comparison"]:
            if row.get("error"):
                cmp.add_row(row["model"], escape(str(row["error"]))[:60], "", "", "no")
                continue
            cells = [
                row["model"],
                f"{row['log_likelihood']:,.1f}",
                f"{row['aic']:,.1f}",
                f"{row['bic']:,.1f}",
                "yes" if row["converged"] else "no",
            ]
            if has_holdout:
                cells += [f"{row['holdout_mae']:.3f}", f"{row['holdout_aggregate_error']:+.1%}"]
            cmp.add_row(*cells)
        out.print(cmp)


def _clv_summary(result: Any, model: str, path: Path) -> dict[str, Any]:
    def fitted(m: Any) -> dict[str, Any]:
        return {
            "params": m.params_,
            "standard_errors": m.standard_errors_,
            "log_likelihood": m.log_likelihood_,
            "aic": m.aic_,
            "bic": m.bic_,
            "converged": m.converged_,
            "n_iter": m.n_iter_,
        }

    return {
        "model": model,
        "customers": result.predictions.num_rows,
        "purchases": fitted(result.purchases),
        "spend": fitted(result.spend),
        "spend_excluded": result.spend_excluded,
        "holdout": result.holdout,
        "interval": result.interval,
        "tracking": None if result.tracking is None else _tracking_summary(result.tracking),
        "comparison": None
        if result.comparison is None
        else [_plain(r) for r in result.comparison.to_dict("records")],
        "out": str(path),
    }


def _tracking_summary(tracking: Any) -> dict[str, Any]:
    """Cumulative repeat purchases, actual and predicted, at the calibration and holdout ends."""
    cal = tracking[tracking.period == "calibration"].iloc[-1]
    end = tracking.iloc[-1]
    return {
        "calibration_end": {
            k: float(cal[k]) for k in ("period_end", "cumulative_actual", "cumulative_predicted")
        },
        "holdout_end": {
            k: float(end[k]) for k in ("period_end", "cumulative_actual", "cumulative_predicted")
        },
        "cumulative_actual": float(end.cumulative_actual),
        "cumulative_predicted": float(end.cumulative_predicted),
    }


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """A record with NumPy scalars and NaN made JSON-friendly."""
    import math

    out: dict[str, Any] = {}
    for k, v in record.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def _write_table(table: Any, path: Path) -> None:
    """Parquet or CSV by the file's extension; readers see the whole file or none."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if path.suffix.lower() == ".csv":
            pacsv.write_csv(table, tmp)
        else:
            pq.write_table(table, tmp)
        tmp.replace(path)
    except OSError as exc:
        raise CustvalError(f"cannot write '{path}': {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


@app.command()
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
    from custval import pipeline
    from custval.data import sources

    out.rule("1. a sample company with several sources and the usual dirt")
    result = _synth(customers, out_dir / "data", seed, "csv")
    _print_synth(result)
    config = result.config_path
    out.rule("2. validation against the contracts")
    project = _load(config)
    con = sources.working_connection()
    reports = pipeline.validate(project, con, pipeline.open_all(project, con))
    if _print_reports(reports):
        raise typer.Exit(1)
    out.rule("3. cleaning, customer 360 and features")
    features_path = out_dir / "features.parquet"
    prepared, meta, cat_path = run_features(config, features_path, None)
    _print_rules(prepared)
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
        preview.add_row(*[_cell(row[c]) for c in cols])
    out.print(preview)
    out.rule("4. customer lifetime value: BTYD models fitted, judged on a holdout, compared")
    from datetime import timedelta

    holdout_end = project.as_of
    calibration_end = holdout_end - timedelta(weeks=26)
    clv_result = pipeline.clv(
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
    _write_table(clv_result.predictions, clv_path)
    import pyarrow as pa

    _write_table(pa.Table.from_pandas(clv_result.tracking, preserve_index=False), tracking_path)
    out.print(
        f"calibration to {calibration_end}, holdout {calibration_end} to {holdout_end}; "
        "CLV over the next 52 weeks at 10% a year"
    )
    summary = _clv_summary(clv_result, "mbgnbd", clv_path)
    _print_clv(clv_result, summary, "mbgnbd", 52, "weeks", tracking_path)
    out.rule("5. high/low value classifier: candidates compared, reasons for every customer")

    trained = pipeline.train_value(project, prepared=prepared, out_dir=out_dir / "models")
    clf = trained.clf
    out.print(
        f"label: top 20% of spend in the 52 weeks after {trained.cutoff} "
        f"({trained.y.sum():,.0f} of {trained.y.size:,} customers); transaction and usage "
        "features from before it, the CRM profile as it is now"
    )
    cli_value.print_leaderboard(clf.leaderboard_, clf.chosen_, "5-fold cross-validation")
    cli_value.print_insights(trained.importance, trained.profile, trained.catalogue)
    out.rule("6. segments: k-means with automatic k, profiled and named, into the store")
    from custval.cli_segment import print_segments, store_segments

    store_path = out_dir / "custval.duckdb"
    segmented = pipeline.segment_table(pipeline.segment_features(project, prepared), seed=0)
    print_segments(segmented)
    store_segments(segmented, str(store_path), project.as_of)
    out.rule("7. scoring today's customers into the store: value, reasons, CLV, segment, one run")
    scored_run = pipeline.score(
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


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return escape(str(value))


def main() -> None:
    """Entry point of ``python -m custval``."""
    app(prog_name="custval")
    sys.exit(0)


# the value classifier's and the store's commands register on the same app
from custval import cli_segment, cli_serve, cli_store, cli_value  # noqa: E402, F401
