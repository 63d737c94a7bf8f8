"""Sales forecasts for a project's transactions: the series (weekly or monthly, in total or by a
column), every candidate judged on the same rolling-origin backtest, the best one refitted and
forecast past the data with conformal intervals (:mod:`custval.models.forecasting`).

The candidates, per series: the naive, seasonal naive and moving-average baselines; ETS, Theta
and ARIMA; one LightGBM over lags (the M5 recipe); the customer-based forecast, built customer
by customer from the purchase and spend models plus forecast acquisitions
(:mod:`custval.flows.customer_forecast`), for revenue and purchases; and the combination of the
three best. The
one with the lowest mean MASE over the backtest's origins is chosen; the leaderboard keeps every
candidate's MASE, RMSSE, bias, WAPE and interval coverage, so that the choice can be checked.

A series that sold nothing at all has nothing to learn from: its forecast is zeros, said so in
``notes``, and it is not backtested.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import ibis.expr.types as ir
import numpy as np
import pandas as pd

from custval.errors import CustvalError, FitError
from custval.features.series import FREQUENCIES, sales_series, series_rows
from custval.flows.customer_forecast import CUSTOMER_BASED, customer_based
from custval.flows.customer_forecast import MEASURES as CUSTOMER_MEASURES
from custval.flows.forecast_hierarchy import reconcile
from custval.models.forecasting import (
    COMBINATION,
    ETS,
    Arima,
    Backtest,
    GlobalBoosting,
    MovingAverage,
    Naive,
    SeasonalNaive,
    Theta,
    backtest_origins,
    combination_weights,
    forecast_ahead,
    rolling_origin,
)

__all__ = ["ForecastRun", "candidate_methods", "forecast"]

#: what a forecast may be of: a column of :func:`custval.features.series.sales_series`
MEASURES = ("revenue", "purchases", "customers")


@dataclass
class ForecastRun:
    """The forecast of every series: the series themselves (long), the leaderboard of every
    series and candidate (``chosen`` marks the one used), the forecasts past the data with
    their intervals, the candidates that could not be fitted and notes in plain words."""

    freq: str
    horizon: int
    measure: str
    series: pd.DataFrame
    leaderboard: pd.DataFrame
    forecasts: pd.DataFrame
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: the backtest's origins and the periods between them (None: the horizon)
    n_origins: int = 4
    step: int | None = None
    #: each series' backtest (its origins' forecasts and actuals)
    backtests: dict[str, Backtest] = field(default_factory=dict)
    #: the statistical and machine-learned candidates tried (None: all)
    methods: tuple[str, ...] | None = None
    #: the name of the series that is the others' sum (with --by on an additive measure)
    total: str | None = None


def candidate_methods(season: int, horizon: int) -> dict[str, Callable[[], Any]]:
    """The candidates of a series with this season length and horizon, unfitted."""
    return {
        "naive": Naive,
        "seasonal naive": lambda: SeasonalNaive(season),
        "moving average": lambda: MovingAverage(max(season // 4, 2)),
        "ets": lambda: ETS(season),
        "theta": lambda: Theta(season),
        "arima": lambda: Arima(season),
        "lightgbm": lambda: GlobalBoosting(season, max_steps=horizon),
    }


def _checked(freq: str, horizon: int | None, measure: str) -> tuple[int, int]:
    if freq not in FREQUENCIES:
        raise CustvalError(f"unknown frequency '{freq}'", hint="--freq week or --freq month")
    if measure not in MEASURES:
        raise CustvalError(f"cannot forecast '{measure}'", hint=f"one of {', '.join(MEASURES)}")
    season = FREQUENCIES[freq]
    h = season if horizon is None else int(horizon)
    if h < 1:
        raise CustvalError(
            f"the horizon must be at least 1 {freq}, not {h}", hint="e.g. --horizon 52"
        )
    return season, h


def forecast(
    tx: ir.Table,
    end: date,
    *,
    freq: str = "week",
    horizon: int | None = None,
    by: str | None = None,
    measure: str = "revenue",
    n_origins: int = 4,
    step: int | None = None,
    methods: tuple[str, ...] | None = None,
    model: str = "auto",
    one_row_per_order: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ForecastRun:
    """Forecast ``measure`` per ``freq`` for ``horizon`` periods (default: a year) past the
    whole periods before ``end``, in total or ``by`` a column (module docstring). ``model``:
    the customer-based candidate's purchase model (``auto``: as ``custval clv`` chooses).
    The backtest has ``n_origins`` origins ``step`` periods apart (default: the horizon);
    ``methods`` names the candidates of :func:`candidate_methods` to try (default: all; the
    customer-based one and the combination always)."""
    say = progress or (lambda _stage: None)
    season, h = _checked(freq, horizon, measure)
    unknown = set(methods or ()) - set(candidate_methods(season, h))
    if unknown:
        raise CustvalError(
            f"unknown forecasting method '{sorted(unknown)[0]}'",
            hint="one of " + ", ".join(candidate_methods(season, h)),
        )
    say("the sales series")
    series = sales_series(tx, end, freq=freq, by=by)
    total = _total_name(series) if by is not None and measure in ADDITIVE else None
    if total is not None:
        series = pd.concat([_summed(series, total), series], ignore_index=True)
    run = ForecastRun(
        freq,
        h,
        measure,
        series,
        pd.DataFrame(),
        pd.DataFrame(),
        n_origins=n_origins,
        step=step,
        methods=methods,
        total=total,
    )
    boards, ahead = [], []
    for name, rows in series.groupby("series", sort=True):  # a loop over a few series
        say(f"backtesting the candidates of '{name}'")
        y = rows[measure].to_numpy(np.float64)
        periods = pd.DatetimeIndex(rows["period"])
        rows_of = series_rows(tx, None if name == total else by, str(name))
        base = _CustomerBase(rows_of, model, one_row_per_order)
        board, future = _one_series(str(name), y, periods, season, run, base)
        boards.append(board)
        ahead.append(future)
    run.leaderboard = pd.concat(boards, ignore_index=True)
    run.forecasts = pd.concat(ahead, ignore_index=True).assign(reconciliation="base")
    if total is not None:
        say("reconciling the series with their total")
        values = {str(k): g[measure].to_numpy(np.float64) for k, g in series.groupby("series")}
        done = reconcile(
            values, run.backtests, run.leaderboard, run.forecasts, total=total, season=season
        )
        run.leaderboard, run.forecasts = done.leaderboard, done.forecasts
        run.notes.extend(done.notes)
    return run


#: the measures whose series add up to their total (a customer buying in two channels is one
#: buying customer of the total, two of the channels)
ADDITIVE = ("revenue", "purchases")


def _total_name(series: pd.DataFrame) -> str | None:
    """The name of the series' total (None for one series): "total", unless a series has it."""
    names = set(series["series"])
    if len(names) < 2:
        return None
    return "total" if "total" not in names else "total (all series)"


def _summed(series: pd.DataFrame, total: str) -> pd.DataFrame:
    """The total of the series per period (zeros where a series had not started)."""
    summed = series.groupby("period", as_index=False)[["revenue", "purchases", "customers"]].sum()
    return summed.assign(series=total)[series.columns]


def _one_series(
    name: str,
    y: np.ndarray,
    periods: pd.DatetimeIndex,
    season: int,
    run: ForecastRun,
    base: _CustomerBase,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The leaderboard and the chosen forecast of one series."""
    h, n_origins, step = run.horizon, run.n_origins, run.step
    future_periods = _after(periods, h, run.freq)
    if not np.any(y):
        run.notes.append(f"'{name}' sold nothing in {y.size} {run.freq}s: its forecast is 0")
        zeros = pd.DataFrame({"step": np.arange(1, h + 1), "point": 0.0})
        for col in ("lo_80", "hi_80", "lo_95", "hi_95"):
            zeros[col] = 0.0
        board = pd.DataFrame({"series": [name], "method": ["zero"], "chosen": [True]})
        return board, zeros.assign(series=name, period=future_periods, method="zero")
    methods = {k: v for k, v in candidate_methods(season, h).items() if k in (run.methods or (k,))}
    origins = backtest_origins(
        y.size, horizon=h, n_origins=n_origins, step=step, min_train=season + 1
    )
    external, failed = base.backtest(y, periods, origins, run, season)
    backtest = rolling_origin(
        y,
        methods,
        horizon=h,
        n_origins=n_origins,
        step=step,
        season_length=season,
        min_train=season + 1,
        external=external,
    )
    if backtest.errors or failed:
        run.errors[name] = {**backtest.errors, **failed}
    run.backtests[name] = backtest
    chosen = str(backtest.leaderboard.iloc[0]["method"])
    futures = _futures(y, methods, backtest, chosen, h)
    if CUSTOMER_BASED in _needed(y, backtest, chosen):
        futures[CUSTOMER_BASED] = base.at(future_periods[0], y, run, season)
    future = forecast_ahead(y, backtest, chosen, futures)
    board = backtest.leaderboard.assign(series=name, chosen=lambda b: b["method"] == chosen)
    return board, future.assign(series=name, period=future_periods, method=chosen)


def _futures(
    y: np.ndarray,
    methods: dict[str, Callable[[], Any]],
    backtest: Backtest,
    chosen: str,
    h: int,
) -> dict[str, np.ndarray]:
    """The refitted forecasts the chosen method needs: its own, or those of the methods the
    combination weighs (the three best, not every candidate)."""
    return {m: methods[m]().fit(y).predict(h) for m in _needed(y, backtest, chosen) if m in methods}


def _needed(y: np.ndarray, backtest: Backtest, chosen: str) -> list[str]:
    """The methods whose forecasts the chosen one is made of."""
    return list(combination_weights(y, backtest)) if chosen == COMBINATION else [chosen]


@dataclass
class _CustomerBase:
    """The customer-based candidate of one series: its transactions and settings."""

    tx: ir.Table
    model: str
    one_row_per_order: bool

    def at(
        self, origin: pd.Timestamp, history: np.ndarray, run: ForecastRun, season: int
    ) -> np.ndarray:
        """Its forecast of the periods from ``origin``, fitted on everything before it."""
        return customer_based(
            self.tx,
            origin.date(),
            history=history,
            horizon=run.horizon,
            freq=run.freq,
            season=season,
            measure=run.measure,
            model=self.model,
            one_row_per_order=self.one_row_per_order,
        )

    def backtest(
        self,
        y: np.ndarray,
        periods: pd.DatetimeIndex,
        origins: np.ndarray,
        run: ForecastRun,
        season: int,
    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Its forecasts at the backtest's origins (the indices of ``periods`` whose
        forecasts start there), or why it has none."""
        if run.measure not in CUSTOMER_MEASURES:
            return {}, {CUSTOMER_BASED: f"it forecasts {' and '.join(CUSTOMER_MEASURES)} only"}
        try:
            made = [self.at(periods[i], y[:i], run, season) for i in origins]
            return {CUSTOMER_BASED: np.stack(made)}, {}
        except FitError as exc:
            return {}, {CUSTOMER_BASED: exc.problem}


def _after(periods: pd.DatetimeIndex, h: int, freq: str) -> pd.DatetimeIndex:
    """The ``h`` periods after the last of ``periods``."""
    step = pd.DateOffset(weeks=1) if freq == "week" else pd.DateOffset(months=1)
    return pd.date_range(periods[-1] + step, periods=h, freq="W-MON" if freq == "week" else "MS")
