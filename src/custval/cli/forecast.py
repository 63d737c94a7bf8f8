"""``custval forecast``: sales forecasts of a project, every candidate backtested.

It registers on the main Typer app of :mod:`custval.cli`.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from custval.cli.clv import (
    AmountOpt,
    CustomerIdOpt,
    DateColumnOpt,
    OrderIdOpt,
    TableOpt,
    TransactionsOpt,
    transactions_source,
)
from custval.cli.common import (
    DateFormatOpt,
    DecimalOpt,
    DelimiterOpt,
    EncodingOpt,
    EngineOpt,
    JsonSummaryOpt,
    NamesOpt,
    NoHeaderOpt,
    check_output,
    file_options,
    friendly,
    load,
    out,
    parse_date,
    steps,
    write_table,
)
from custval.errors import CustvalError

# custval's own modules are imported inside the commands: `custval --help` stays fast

#: the periods of each series the printed forecast shows (the file has them all)
SHOWN = 8


FreqOpt = Annotated[str, typer.Option(help="week or month.")]
HorizonOpt = Annotated[
    int | None,
    typer.Option(help="Periods to forecast (default: a year: 52 weeks or 12 months)."),
]
ByOpt = Annotated[
    str | None,
    typer.Option(help="A column of the transactions: one forecast per value (e.g. channel)."),
]
MeasureOpt = Annotated[str, typer.Option(help="What to forecast: revenue, purchases or customers.")]
OriginsOpt = Annotated[
    int,
    typer.Option(help="Backtest origins, a horizon apart, the last one a horizon back.", min=2),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Also write the forecasts to this .csv or .parquet file."),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        help="Where runs are kept: a DuckDB file or a postgresql:// URL (default: the "
        "project's store setting)."
    ),
]


AsOfOpt = Annotated[
    str | None,
    typer.Option(
        help="Forecast the periods from this date on, YYYY-MM-DD (default: the project's as-of "
        "date; with --transactions, the day after the last purchase)."
    ),
]
ConfigOrFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="The project file (default: custval.toml; or --transactions)."
    ),
]


@friendly
def forecast(
    config: ConfigOrFileOpt = None,
    transactions: TransactionsOpt = None,
    freq: FreqOpt = "week",
    horizon: HorizonOpt = None,
    by: ByOpt = None,
    measure: MeasureOpt = "revenue",
    origins: OriginsOpt = 4,
    as_of: AsOfOpt = None,
    customer_id: CustomerIdOpt = "customer_id",
    date_col: DateColumnOpt = "date",
    amount: AmountOpt = "amount",
    order_id: OrderIdOpt = None,
    table: TableOpt = None,
    delimiter: DelimiterOpt = None,
    decimal: DecimalOpt = None,
    encoding: EncodingOpt = None,
    no_header: NoHeaderOpt = False,
    names: NamesOpt = None,
    date_format: DateFormatOpt = None,
    out_path: OutOpt = None,
    store: StoreOpt = None,
    engine: EngineOpt = None,
    as_json: JsonSummaryOpt = False,
) -> None:
    """Forecast the project's sales per week or month, past its as-of date.

    Every candidate is judged on the same rolling-origin backtest: the naive, seasonal naive and
    moving-average baselines, ETS, Theta, ARIMA, one LightGBM over lags, and the combination of
    the three best. The one with the lowest MASE is refitted on the whole history and forecast
    with 80% and 95% conformal intervals (from its backtest errors). The leaderboard shows each
    candidate's MASE, RMSSE, bias, WAPE and interval coverage. The customer-based candidate
    builds revenue and purchases customer by customer: the known customers' expected purchases
    (BTYD, conditional on their history) plus forecast acquisitions, in money by their expected
    spend, with the series' seasonal index. With --by, the series and their total are also
    reconciled (bottom-up and MinT) and both judged on the backtest.

    From a project (-c) or one transactions file (-t, with the column flags of custval clv).
    The run is stored (tables forecasts, forecast_backtest, forecast_series; BI views
    v1_latest_forecasts...) and served at GET /v1/forecasts.
    """
    from custval.flows.forecast_store import store_forecast

    if out_path is not None:
        check_output(out_path)
    if transactions is not None and config is not None:
        raise CustvalError("give either --transactions (a file, glob or URL) or --config")
    reading = file_options(delimiter, decimal, encoding, no_header, names, date_format)
    file = (
        None
        if transactions is None
        else transactions_source(
            transactions, customer_id, date_col, amount, order_id, table, reading
        )
    )
    project = _project(config, file, engine)
    with steps(3 * len(project.sources) + 3) as advance:
        run, end = _run(
            project, file is not None, as_of, advance, freq, horizon, by, measure, origins
        )
        advance("storing the run")
        run_id = store_forecast(run, store or project.store, end)
    if out_path is not None:
        import pyarrow as pa

        write_table(pa.Table.from_pandas(run.forecasts, preserve_index=False), out_path)
    if as_json:
        out.print_json(data={"run_id": run_id, "as_of": str(end), **_summary(run)})
        return
    first = run.forecasts["period"].min().date()
    out.print(f"history: the whole {freq}s before {end}; the forecast starts on {first}")
    print_forecast(run)
    out.print(f"run {run_id} stored (view v1_latest_forecasts; GET /v1/forecasts)")


def _project(config: Path | None, file: dict[str, Any] | None, engine: str | None) -> Any:
    """The project of -c, or one made of the -t file's source (its as-of date set later), on
    the engine of --engine when given."""
    if file is None:
        return load(config or Path("custval.toml"), engine)
    from custval.config import project_from_dict, with_engine

    project = project_from_dict(
        {"as_of": date.today().isoformat(), "sources": {"transactions": file}},
        root=Path.cwd(),
        origin="the command line",
    )
    return project if engine is None else with_engine(project, engine, flag="--engine")


def _run(
    project: Any,
    from_file: bool,
    as_of: str | None,
    advance: Any,
    freq: str,
    horizon: int | None,
    by: str | None,
    measure: str,
    origins: int,
) -> tuple[Any, date]:
    """The forecast run, from the date given, the project's or after the last purchase."""
    from custval import flows
    from custval.flows.forecasting import forecast as run_forecast

    prepared = flows.prepare(project, progress=advance)
    tx = prepared.tables.get("transactions")
    if tx is None:
        raise CustvalError(
            "a forecast needs the project's transactions, and it has none",
            hint="Add a source of kind transactions to the project file",
        )
    end = parse_date(as_of) if as_of else (_after_last(tx) if from_file else project.as_of)
    run = run_forecast(
        tx,
        end,
        freq=freq,
        horizon=horizon,
        by=by,
        measure=measure,
        n_origins=origins,
        one_row_per_order=prepared.one_row_per_order,
        progress=advance,
    )
    return run, end


def _after_last(tx: Any) -> date:
    """The day after the file's last purchase: its whole periods are the history."""
    last = tx.timestamp.max().execute()
    if last is None:
        raise CustvalError("the transactions hold no purchase with a date", source="transactions")
    return last.date() + timedelta(days=1)  # type: ignore[no-any-return]


def _summary(run: Any) -> dict[str, Any]:
    chosen = run.leaderboard[run.leaderboard.chosen]
    return {
        "freq": run.freq,
        "horizon": run.horizon,
        "measure": run.measure,
        "series": {
            str(r.series): {"method": str(r.method), "mase": _num(getattr(r, "mase", None))}
            for r in chosen.itertuples()
        },
        "total": _grand_total(run),
        "reconciled": {
            kind: {str(k): float(v) for k, v in rows.groupby("series")["point"].sum().items()}
            for kind, rows in run.forecasts.groupby("reconciliation")
            if kind != "base"
        },
        "notes": run.notes,
        "left_out": run.errors,
    }


def _base(run: Any) -> Any:
    """The forecasts of each series on its own (not reconciled)."""
    fc = run.forecasts
    return fc[fc.reconciliation == "base"] if "reconciliation" in fc else fc


def _grand_total(run: Any) -> float:
    """The forecast total: the total series' when the run has one, else the sum of all."""
    base = _base(run)
    if run.total is not None:
        return float(base.loc[base.series == run.total, "point"].sum())
    return float(base.point.sum())


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v == v else None


def print_forecast(run: Any) -> None:
    for name, board in run.leaderboard.groupby("series", sort=True):  # a loop over the series
        _print_board(str(name), board, run)
        _print_ahead(str(name), _base(run)[_base(run).series == name], run)
        _print_reconciled(str(name), run)
    for line in run.notes:
        out.print(escape(line))
    for name, left in run.errors.items():
        for method, why in left.items():
            out.print(escape(f"'{name}': {method} left out: {why}"))


def _print_board(name: str, board: Any, run: Any) -> None:
    table = Table(title=f"'{name}': the candidates on the backtest ({run.measure} per {run.freq})")
    cols = ("method", "MASE", "RMSSE", "bias", "WAPE", "80% covers", "95% covers")
    for c in cols:
        table.add_column(c, justify="left" if c == "method" else "right")
    for r in board.itertuples():
        mark = " (chosen)" if r.chosen else ""
        table.add_row(
            f"{r.method}{mark}",
            _fmt(getattr(r, "mase", None), ".3f"),
            _fmt(getattr(r, "rmsse", None), ".3f"),
            _fmt(getattr(r, "bias", None), "+.1%"),
            _fmt(getattr(r, "wape", None), ".1%"),
            _fmt(getattr(r, "coverage_80", None), ".0%"),
            _fmt(getattr(r, "coverage_95", None), ".0%"),
        )
    out.print(table)


def _print_ahead(name: str, rows: Any, run: Any) -> None:
    method = rows.method.iloc[0]
    shown = min(SHOWN, len(rows))
    table = Table(title=f"'{name}': the forecast by {method}, first {shown} of {len(rows)}")
    for c in ("period", run.measure, "80% interval", "95% interval"):
        table.add_column(c, justify="left" if c == "period" else "right")
    for r in rows.head(SHOWN).itertuples():
        table.add_row(
            str(r.period.date()),
            f"{r.point:,.0f}",
            _interval(r.lo_80, r.hi_80),
            _interval(r.lo_95, r.hi_95),
        )
    out.print(table)
    for level, col in (("80%", "hi_80"), ("95%", "hi_95")):
        if not all(math.isfinite(float(v)) for v in rows[col]):  # a few periods
            out.print(
                f"no {level} interval: the backtest's errors are too few for it; "
                "more --origins give it"
            )
    out.print(f"total over the {len(rows)} {run.freq}s: {rows.point.sum():,.0f}")


def _print_reconciled(name: str, run: Any) -> None:
    """The series' total over the horizon after each reconciliation, when there are."""
    fc = run.forecasts
    if "reconciliation" not in fc:
        return
    mine = fc[(fc.series == name) & (fc.reconciliation != "base")]
    for kind, rows in mine.groupby("reconciliation", sort=True):  # two reconciliations
        label = "bottom-up" if kind == "bottom_up" else "MinT (shrunk covariance)"
        out.print(f"  reconciled {label}: {rows.point.sum():,.0f}")


def _interval(lo: float, hi: float) -> str:
    """An interval, or a dash when the backtest had too few errors for it (infinite)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    return f"{lo:,.0f} to {hi:,.0f}"


def _fmt(value: Any, spec: str) -> str:
    v = _num(value)
    return "-" if v is None or abs(v) == float("inf") else format(v, spec)
