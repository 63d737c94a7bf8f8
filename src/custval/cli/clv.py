"""``custval clv``: customer lifetime value from one transactions file or a project."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer
from rich.markup import escape
from rich.table import Table

from custval.cli.common import (
    DateFormatOpt,
    DecimalOpt,
    DelimiterOpt,
    EncodingOpt,
    FileOptions,
    JsonSummaryOpt,
    NamesOpt,
    NoHeaderOpt,
    ReportOpt,
    check_output,
    check_report,
    file_options,
    friendly,
    load,
    out,
    parse_date,
    plain,
    print_rules,
    steps,
    write_html_report,
    write_table,
)
from custval.errors import CustvalError

if TYPE_CHECKING:
    from custval.config import Project

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.

TransactionsOpt = Annotated[
    str | None, typer.Option("--transactions", "-t", help="Transactions: a file, glob or URL.")
]
CalibrationEndOpt = Annotated[
    str | None,
    typer.Option(
        help="End of the calibration period, YYYY-MM-DD: fit on what came before "
        "(with --config: default the project's as-of date)."
    ),
]
ProjectOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Or a project: its transactions, and for --method ml, hybrid or auto every "
        "feature of its customers (profile, products, channels, usage).",
    ),
]
CustomerIdOpt = Annotated[str, typer.Option(help="Column with the customer's id.")]
DateColumnOpt = Annotated[str, typer.Option("--date", help="Column with the purchase date.")]
AmountOpt = Annotated[str, typer.Option(help="Column with the purchase amount.")]
OrderIdOpt = Annotated[
    str | None, typer.Option(help="Column with the order id (without: every row is one).")
]
TableOpt = Annotated[str | None, typer.Option(help="Table, for a database URL.")]
HoldoutEndOpt = Annotated[
    str | None,
    typer.Option(help="End of the holdout period, YYYY-MM-DD: judge the model on it."),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        help="Purchase model: auto fits BG/NBD, MBG/NBD and Pareto/NBD and keeps the one with "
        "the lowest holdout MAE (repeat purchases per customer) when there is a --holdout-end, "
        "else the lowest AIC, and says which; bgnbd, mbgnbd or pnbd force one (default: auto, "
        "or the project's [clv] model with --config)."
    ),
]
MethodOpt = Annotated[
    str,
    typer.Option(
        help="btyd: the purchase model and Gamma-Gamma; ml: the best of LightGBM "
        "(Tweedie), random forest and neural network on the customer's features; hybrid: "
        "LightGBM on the features plus the BTYD outputs; auto: all of them side by side "
        "on a time-based holdout (--holdout-end, else the horizon before the calibration "
        "end), the best chosen. Every method but btyd prints the leaderboard."
    ),
]
TimeUnitOpt = Annotated[
    str | None,
    typer.Option(
        help="Unit of recency, T, the horizon and the discount: days, weeks, months "
        "(365.25/12 days) or years (default: the project's, else weeks)."
    ),
]
HorizonOpt = Annotated[
    float | None,
    typer.Option(help="CLV horizon in time units (default: one year: 52 weeks, 365 days...)."),
]
DiscountOpt = Annotated[
    float | None,
    typer.Option(
        help="Discount rate per time unit (default: 10% a year, in weeks 0.00183; with "
        "--config the project's [clv] discount_per_year). The settings printed state it "
        "per year and per time unit."
    ),
]
LevelOpt = Annotated[
    float,
    typer.Option(help="Level of the intervals of expected purchases and CLV (0 = none)."),
]
DrawsOpt = Annotated[int, typer.Option(help="Parameter draws behind the intervals.", min=2)]
CompareOpt = Annotated[
    bool,
    typer.Option(
        "--compare",
        help="Also fit BG/NBD, MBG/NBD and Pareto/NBD and compare them: log-likelihood, "
        "AIC, BIC and holdout error.",
    ),
]
TrackingOpt = Annotated[
    Path | None,
    typer.Option(
        "--tracking",
        help="Write the cumulative repeat transactions per time unit, actual against "
        "predicted, through the calibration (and the holdout with --holdout-end), then "
        "forward over the horizon: the base's expected decay (.csv or .parquet).",
    ),
]
OutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Per-customer predictions (.parquet or .csv).")
]


@dataclass(frozen=True)
class ClvSettings:
    """The periods and units ``custval clv`` settled on, from its flags and the project's."""

    calibration_end: date
    holdout_end: date | None
    time_unit: str
    horizon: float
    discount: float

    @property
    def discount_per_year(self) -> float:
        from custval.flows.customer_base import ONE_YEAR

        return float((1 + self.discount) ** ONE_YEAR[self.time_unit] - 1)

    def describe(self) -> str:
        """The settings in one line: "... discount 10% a year (0.183% a week)"."""
        holdout = f", holdout to {self.holdout_end}" if self.holdout_end else ""
        return (
            f"calibration before {self.calibration_end}{holdout}; horizon {self.horizon:g} "
            f"{self.time_unit}, discount {self.discount_per_year * 100:.3g}% a year "
            f"({self.discount * 100:.3g}% a {self.time_unit.removesuffix('s')})"
        )

    def summary(self) -> dict[str, Any]:
        return {
            "time_unit": self.time_unit,
            "horizon": self.horizon,
            "discount": self.discount,
            "discount_per_year": self.discount_per_year,
            "calibration_end": self.calibration_end.isoformat(),
            "holdout_end": self.holdout_end.isoformat() if self.holdout_end else None,
        }


# a Typer command takes one parameter per flag: the argument-count rules (PLR0913, PLR0917) do
# not fit it, and its flags are checked by the helpers below
@friendly
def clv(
    transactions: TransactionsOpt = None,
    calibration_end: CalibrationEndOpt = None,
    config: ProjectOpt = None,
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
    holdout_end: HoldoutEndOpt = None,
    model: ModelOpt = None,
    method: MethodOpt = "btyd",
    time_unit: TimeUnitOpt = None,
    horizon: HorizonOpt = None,
    discount: DiscountOpt = None,
    level: LevelOpt = 0.9,
    draws: DrawsOpt = 200,
    compare: CompareOpt = False,
    tracking_path: TrackingOpt = None,
    out_path: OutOpt = Path("clv.parquet"),
    as_json: JsonSummaryOpt = False,
    report: ReportOpt = None,
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
    from custval.config import PurchaseModel, check_clv_method

    if (transactions is None) == (config is None):
        raise CustvalError("give either --transactions (a file, glob or URL) or --config")
    loaded = load(config) if config is not None else None
    cal_end, hold_end = _check_periods(calibration_end, holdout_end, loaded, out_path, level)
    settings = _settings(loaded, cal_end, hold_end, time_unit, horizon, discount)
    if tracking_path is not None:
        check_output(tracking_path, "--tracking")
    check_report(report)
    reading = file_options(delimiter, decimal, encoding, no_header, names, date_format)
    source = transactions_source(
        transactions, customer_id, date_col, amount, order_id, table, reading
    )
    model = model or (loaded.clv.model if loaded is not None else "auto")
    if model not in get_args(PurchaseModel):
        raise CustvalError(
            f"unknown model '{model}'", hint="Use one of " + ", ".join(get_args(PurchaseModel))
        )
    project = _project(loaded, source, settings, model)
    if check_clv_method(method) != "btyd":
        _refuse_btyd_flags(draws, compare, tracking_path, level)
        _leaderboard(project, settings, method, level or 0.9, out_path, as_json, report)
        return
    _btyd(
        project,
        settings,
        model=model,
        level=level or None,
        draws=draws,
        compare=compare,
        tracking_path=tracking_path,
        out_path=out_path,
        as_json=as_json,
        report=report,
    )


def _check_periods(
    calibration_end: str | None,
    holdout_end: str | None,
    loaded: Project | None,
    out_path: Path,
    level: float,
) -> tuple[date, date | None]:
    """The calibration and holdout ends, once the flags that need no data are found sound."""
    if calibration_end is None and loaded is None:
        raise CustvalError("--calibration-end is needed with --transactions")
    if calibration_end:
        cal_end = parse_date(calibration_end, flag="--calibration-end")
    else:
        cal_end = loaded.as_of  # type: ignore[union-attr]
    hold_end = parse_date(holdout_end, flag="--holdout-end") if holdout_end else None
    check_output(out_path)
    if not 0 <= level < 1:
        raise CustvalError(f"--level must be 0 (no intervals) or between 0 and 1, not {level}")
    if hold_end is not None and hold_end <= cal_end:
        raise CustvalError(f"--holdout-end {hold_end} must come after --calibration-end {cal_end}")
    return cal_end, hold_end


def _load_engine() -> None:
    """Import the CLV flow (the engine, the data frames, the models) with the cyclic garbage
    collector paused: the imports make a few hundred thousand objects and no garbage, and the
    collector's passes over them cost a quarter of a second of every run. The objects are then
    frozen, so that the collections during the run skip them too."""
    import gc

    gc.disable()
    try:
        import custval.flows.customer_base  # noqa: F401
    finally:
        gc.enable()
    gc.freeze()


def _settings(
    loaded: Project | None,
    cal_end: date,
    hold_end: date | None,
    time_unit: str | None,
    horizon: float | None,
    discount: float | None,
) -> ClvSettings:
    from custval.config import ClvOptions

    _load_engine()
    from custval.flows.customer_base import ONE_YEAR, clv_settings, discount_per_unit

    # with a project, what is not given on the command line is the project's, so that the
    # leaderboard shown is judged as 'custval score' will then predict
    time_unit = time_unit or (loaded.time_unit if loaded is not None else "weeks")
    if time_unit not in ONE_YEAR:
        raise CustvalError(
            f"unknown time unit '{time_unit}'", hint="Use one of " + ", ".join(ONE_YEAR)
        )
    if loaded is not None:
        own_horizon, own_discount = clv_settings(loaded.model_copy(update={"time_unit": time_unit}))
        horizon = own_horizon if horizon is None else horizon
        discount = own_discount if discount is None else discount
    return ClvSettings(
        calibration_end=cal_end,
        holdout_end=hold_end,
        time_unit=time_unit,
        horizon=ONE_YEAR[time_unit] if horizon is None else horizon,
        # 10% a year, as a project's [clv] discount_per_year: one customer, one CLV
        discount=discount_per_unit(ClvOptions().discount_per_year, time_unit)
        if discount is None
        else discount,
    )


def transactions_source(
    transactions: str | None,
    customer_id: str,
    date_col: str,
    amount: str,
    order_id: str | None,
    table: str | None,
    reading: FileOptions,
) -> dict[str, Any]:
    """The transactions source the flags describe, as a project file would give it, with the
    flags' names for its hints."""
    columns = {"customer_id": customer_id, "timestamp": date_col, "amount": amount}
    if order_id:
        columns["order_id"] = order_id
    source: dict[str, Any] = {"kind": "transactions", "uri": transactions, "columns": columns}
    if table:
        source["table"] = table
    source["csv"] = reading.csv().model_dump(exclude_none=True)
    if reading.date_format:
        source["date_formats"] = [reading.date_format]
    source["flags"] = {
        "customer_id": "--customer-id",
        "timestamp": "--date",
        "amount": "--amount",
        "order_id": "--order-id",
        "decimal": "--decimal",
        "date_formats": "--date-format",
    }
    return source


def _project(
    loaded: Project | None, source: dict[str, Any], settings: ClvSettings, model: str
) -> Project:
    from custval.config import project_from_dict

    if loaded is not None:
        clv = loaded.clv.model_copy(update={"model": model})
        return loaded.model_copy(
            update={"as_of": settings.calibration_end, "time_unit": settings.time_unit, "clv": clv}
        )
    return project_from_dict(
        {
            "as_of": settings.calibration_end.isoformat(),
            "sources": {"transactions": source},
            "clv": {"model": model},
        },
        root=Path.cwd(),
        origin="the command line",
    )


def _refuse_btyd_flags(draws: int, compare: bool, tracking_path: Path | None, level: float) -> None:
    """The leaderboard would silently drop these flags: say so instead."""
    ignored = [
        flag
        for flag, given in (
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
            hint="The leaderboard judges the methods on its own holdout and draws its own "
            "intervals at the --level",
        )


def _leaderboard(
    project: Project,
    settings: ClvSettings,
    method: str,
    level: float,
    out_path: Path,
    as_json: bool,
    report: Path | None = None,
) -> None:
    """--method ml, hybrid or auto: the methods judged side by side, the best one's predictions."""
    from custval import flows
    from custval.cli import clv_board

    with steps(3, as_json) as advance:
        prepared = flows.prepare(project, progress=advance)
        advance("fitting and judging the CLV models")
        board = clv_board.run(
            project,
            prepared,
            method=method,
            holdout_end=settings.holdout_end,
            horizon=settings.horizon,
            discount=settings.discount,
            level=level,
            out_path=out_path,
            as_json=as_json,
            advance=lambda _msg: None,
        )
    if report is not None:
        from custval.flows.report import clv_board_sections

        write_html_report(report, "CLV methods compared", clv_board_sections(board))
    if as_json:
        out.print_json(data=board)
    else:
        clv_board.print_board(board, settings.time_unit)


def _btyd(
    project: Project,
    settings: ClvSettings,
    *,
    model: str,
    level: float | None,
    draws: int,
    compare: bool,
    tracking_path: Path | None,
    out_path: Path,
    as_json: bool,
    report: Path | None = None,
) -> None:
    """--method btyd: the purchase model and Gamma-Gamma, their predictions and fit printed."""
    from custval import flows

    with steps(3, as_json) as advance:
        prepared = flows.prepare(project, progress=advance)
        advance("fitting")
        result = flows.clv(
            prepared,
            calibration_end=settings.calibration_end,
            holdout_end=settings.holdout_end,
            model=model,
            horizon=settings.horizon,
            discount=settings.discount,
            time_unit=settings.time_unit,
            level=level,
            n_draws=draws,
            compare=compare,
            tracking=tracking_path is not None or report is not None,
        )
    write_table(result.predictions, out_path)
    if tracking_path is not None and result.tracking is not None:
        import pyarrow as pa

        write_table(pa.Table.from_pandas(result.tracking, preserve_index=False), tracking_path)
    summary = clv_summary(result, model, out_path)
    summary["settings"] = settings.summary()
    if report is not None:
        from custval.flows.report import clv_sections

        sections = clv_sections(
            result,
            horizon=settings.horizon,
            discount=settings.discount,
            time_unit=settings.time_unit,
        )
        write_html_report(report, "Customer lifetime value", sections, settings.describe())
    if as_json:
        out.print_json(data=summary)
        return
    print_rules(prepared)
    out.print(f"settings: {settings.describe()}")
    print_clv(result, summary, model, settings.horizon, settings.time_unit, tracking_path)
    out.print(f"predictions: {out_path}")


def print_clv(
    result: Any,
    summary: dict[str, Any],
    model: str,
    horizon: float,
    time_unit: str,
    tracking_path: Path | None,
) -> None:
    """The purchase model chosen and why, the fitted models, what the predictions leave out
    or say by construction, holdout figures, totals with intervals, tracking and comparison."""
    choice = summary.get("purchase_model")
    if choice:
        out.print(f"purchase model: {choice['label']} ({choice['reason']})")
    _print_fit(summary, choice["label"] if choice else model)
    for note in summary.get("notes", []):
        out.print(f"note: {note}")
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
        _print_tracking(summary["tracking"], result.holdout is not None, time_unit, tracking_path)
    if result.comparison is not None:
        _print_comparison(summary["comparison"], "holdout_mae" in result.comparison.columns)


def _print_fit(summary: dict[str, Any], model: str) -> None:
    """Both models' parameters with their standard errors, and how the fit went."""
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


def _print_comparison(rows: list[dict[str, Any]], has_holdout: bool) -> None:
    cmp = Table(title="purchase models compared (best AIC first)")
    cols = ["model", "log-lik.", "AIC", "BIC", "conv."]
    if has_holdout:
        cols += ["holdout MAE", "holdout total"]
    for c in cols:
        cmp.add_column(c, justify="left" if c == "model" else "right")
    for row in rows:
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


def clv_summary(result: Any, model: str, path: Path) -> dict[str, Any]:
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

    choice = getattr(result, "choice", None)
    frequency = result.predictions.column("frequency").to_numpy()
    return {
        "model": choice.name if choice is not None else model,
        "purchase_model": choice.summary() if choice is not None else None,
        "customers": result.predictions.num_rows,
        "no_repeat_customers": int((frequency == 0).sum()),
        "refund_only_customers": getattr(result, "refund_only", 0),
        "notes": result.notes() if hasattr(result, "notes") else [],
        "purchases": fitted(result.purchases),
        "spend": fitted(result.spend),
        "spend_excluded": result.spend_excluded,
        "holdout": result.holdout,
        "interval": result.interval,
        "tracking": None if result.tracking is None else tracking_summary(result.tracking),
        "comparison": None
        if result.comparison is None
        else [plain(r) for r in result.comparison.to_dict("records")],
        "out": str(path),
    }


def tracking_summary(tracking: Any) -> dict[str, Any]:
    """Cumulative repeat purchases, actual and predicted, at the calibration end and the end of
    the data (the holdout's, or the calibration's without one), and the forecast rows' total,
    first and last period: the base's expected decay."""
    cal = tracking[tracking.period == "calibration"].iloc[-1]
    end = tracking[tracking.period != "forecast"].iloc[-1]
    ahead = tracking[tracking.period == "forecast"]
    keys = ("period_end", "cumulative_actual", "cumulative_predicted")
    return {
        "calibration_end": {k: float(cal[k]) for k in keys},
        "holdout_end": {k: float(end[k]) for k in keys},
        "cumulative_actual": float(end.cumulative_actual),
        "cumulative_predicted": float(end.cumulative_predicted),
        "forecast": None
        if ahead.empty
        else {
            "periods": len(ahead),
            "expected": float(ahead.predicted.sum()),
            "first_period": float(ahead.predicted.iloc[0]),
            "last_period": float(ahead.predicted.iloc[-1]),
        },
    }


def _print_tracking(
    tr: dict[str, Any], holdout: bool, time_unit: str, tracking_path: Path | None
) -> None:
    """The tracking's totals: actual against predicted at the end of the data, then the base's
    expected repeat purchases ahead, first period to last."""
    where = "the holdout end" if holdout else "the calibration end"
    out.print(
        f"tracking: cumulative repeat purchases {tr['cumulative_actual']:,.0f} actual, "
        f"{tr['cumulative_predicted']:,.0f} predicted by {where}"
        + (f" ({tracking_path})" if tracking_path else "")
    )
    ahead = tr["forecast"]
    if ahead:
        unit = time_unit.removesuffix("s")
        out.print(
            f"  the base ahead: {ahead['expected']:,.0f} repeat purchases over the next "
            f"{ahead['periods']} {time_unit}, {ahead['first_period']:,.1f} in the first {unit} "
            f"falling to {ahead['last_period']:,.1f} in the last (no new customers)"
        )
