"""The customer-base CLV of a prepared project: the BTYD summary at a date, the purchase model and
Gamma-Gamma fitted on it, predictions with intervals, the holdout, tracking and comparison; and
the same for the rows of a feature table (:func:`btyd_columns`), which scoring and the
leaderboard use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from custval.columns import SCORED_CLV, SUMMARY_COLUMNS
from custval.config import Project
from custval.errors import CustvalError, FitError
from custval.features.holdout import btyd_summary_table, tracking_times
from custval.features.transactions import UNIT_DAYS
from custval.flows.preparation import Prepared
from custval.models.btyd_clv import PURCHASE_MODELS, btyd_predictions, clv_models_json
from custval.models.evaluation import compare_models, holdout_errors, tracking_table

#: one year in each time unit: the default CLV horizon
ONE_YEAR = {"days": 365.0, "weeks": 52.0, "months": 12.0, "years": 1.0}


@dataclass
class ClvResult:
    """A fitted purchase and spend model, per-customer predictions and holdout figures."""

    purchases: object
    spend: object
    predictions: pa.Table
    holdout: dict[str, float] | None
    spend_excluded: int
    interval: dict[str, Any] | None = None
    #: cumulative repeat transactions by period, actual vs predicted (with a holdout)
    tracking: Any = None
    #: every purchase model's fit, AIC/BIC and holdout error (with ``compare``)
    comparison: Any = None


def clv(
    prepared: Prepared,
    *,
    calibration_end: date,
    holdout_end: date | None = None,
    model: str = "bgnbd",
    horizon: float = 52.0,
    discount: float = 0.0,
    time_unit: str = "weeks",
    level: float | None = 0.9,
    n_draws: int = 200,
    compare: bool = False,
) -> ClvResult:
    """Fit a purchase model (BG/NBD, MBG/NBD or Pareto/NBD) and Gamma-Gamma on the customers'
    BTYD summary at ``calibration_end``; predict P(alive), purchases and discounted CLV over
    ``horizon`` time units; judge the purchase model on the holdout when ``holdout_end`` is given.
    With a ``level`` the expected purchases and the CLV get central intervals from ``n_draws``
    draws of the models' parameters (:mod:`custval.models.clv`). With a holdout the result has a
    tracking table of cumulative repeat transactions per time unit, actual against predicted;
    with ``compare`` every purchase model is fitted and compared (log-likelihood, AIC, BIC,
    holdout error).

    Repeat buyers whose mean repeat spend is zero cannot inform the spend model and are left out
    of its fit (``spend_excluded``); they, like one-time buyers, get the population's mean spend.
    """

    _check_names(model, time_unit)
    tx = prepared.tables.get("transactions")
    if tx is None:
        raise CustvalError("CLV needs a source of kind 'transactions'")
    summary = btyd_summary_table(
        tx,
        calibration_end,
        holdout_end=holdout_end,
        time_unit=time_unit,
        one_row_per_order=prepared.one_row_per_order,
    )
    table = summary.order_by("customer_id").to_pyarrow()
    if table.num_rows == 0:
        raise FitError(f"no customer bought before the calibration end {calibration_end}")
    col = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    x, tx_, t, m = (col[c].astype(float) for c in SUMMARY_COLUMNS)
    fitted = btyd_predictions(
        x, tx_, t, m, model=model, horizon=horizon, discount=discount, level=level, n_draws=n_draws
    )
    purchases = fitted.purchases
    out = {"customer_id": table.column("customer_id"), **fitted.columns}
    holdout, tracking = None, None
    if holdout_end is not None:
        predicted = purchases.conditional_expected_purchases(col["duration_holdout"], x, tx_, t)
        out["frequency_holdout"] = col["frequency_holdout"]
        out["predicted_holdout"] = predicted
        holdout = holdout_errors(predicted, col["frequency_holdout"])
        tracking = _tracking(tx, purchases, calibration_end, holdout_end, time_unit)
    comparison = None
    if compare:
        comparison = compare_models(
            x,
            tx_,
            t,
            holdout_frequency=col.get("frequency_holdout"),
            holdout_duration=col.get("duration_holdout"),
        )
    return ClvResult(
        purchases,
        fitted.spend,
        pa.table(out),
        holdout,
        fitted.spend_excluded,
        fitted.interval,
        tracking,
        comparison,
    )


def _check_names(model: str, time_unit: str) -> None:
    if model not in PURCHASE_MODELS:
        raise CustvalError(
            f"unknown model '{model}'", hint="Use one of " + ", ".join(PURCHASE_MODELS)
        )
    if time_unit not in UNIT_DAYS:
        raise CustvalError(
            f"unknown time unit '{time_unit}'", hint="Use one of " + ", ".join(UNIT_DAYS)
        )


def _tracking(
    tx: Any, purchases: Any, calibration_end: date, holdout_end: date, time_unit: str
) -> pd.DataFrame:
    """Cumulative repeat transactions, actual against predicted, at every time unit from the
    first purchase, the calibration end and the holdout end."""
    origin, births, repeats = tracking_times(tx, calibration_end, holdout_end, time_unit=time_unit)
    unit = UNIT_DAYS[time_unit]
    end = (holdout_end - origin).days / unit
    cal = (calibration_end - origin).days / unit
    ends = np.unique(np.append(np.arange(1.0, np.floor(end) + 1), [cal, end]))
    tracking = tracking_table(purchases, births, repeats, ends[ends > 0])
    tracking.insert(1, "period", np.where(tracking.period_end <= cal, "calibration", "holdout"))
    return tracking


def clv_settings(project: Project) -> tuple[float, float]:
    """The project's CLV horizon (``[clv] horizon``, default a year) and its discount rate per
    time unit (from ``[clv] discount_per_year``), both in the project's time unit."""
    per_year = ONE_YEAR[project.time_unit]
    return (
        project.clv.horizon or per_year,
        (1 + project.clv.discount_per_year) ** (1 / per_year) - 1,
    )


def btyd_columns(
    project: Project,
    prepared: Prepared,
    table: Any,
    *,
    horizon: float,
    discount: float = 0.0,
    level: float | None = 0.9,
    as_of: date | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """BG/NBD and Gamma-Gamma fitted at ``as_of`` (default: the project's): for each row of
    the feature ``table`` (computed at that date) its ``clv_expected`` over ``horizon`` time
    units at ``discount`` per unit, with its central ``level`` interval (``clv_lower``,
    ``clv_upper``; NaN without a level), ``p_alive``, ``expected_purchases`` and
    ``expected_spend`` (per purchase); NaN for customers without a purchase. Returns the
    columns and the fitted models (:func:`clv_models_json`).

    The BTYD summary comes from the feature table when it has the rfm columns (they are the
    same ``rfm_features`` at the same date and time unit), else from the transactions."""
    settings = {"horizon": horizon, "discount": discount}
    n = len(table)
    if all(c in table.columns for c in SUMMARY_COLUMNS):
        buyers = table["T"].notna().to_numpy()
        x, tx_, t, m = (
            table[c].to_numpy(dtype=np.float64, na_value=np.nan)[buyers] for c in SUMMARY_COLUMNS
        )
        fit = btyd_predictions(x, tx_, t, m, purchases_interval=False, level=level, **settings)
        cols, models = fit.columns, clv_models_json(fit.purchases, fit.spend, **settings)
        where = np.flatnonzero(buyers)
    else:
        result = clv(
            prepared,
            calibration_end=as_of or project.as_of,
            time_unit=project.time_unit,
            level=level,
            **settings,
        )
        models = clv_models_json(result.purchases, result.spend, **settings)
        c = result.predictions
        found = pd.Series(
            np.arange(c.num_rows), index=c.column("customer_id").to_numpy(zero_copy_only=False)
        )
        at = found.reindex(table["customer_id"].to_numpy()).to_numpy()
        where = np.flatnonzero(~np.isnan(at))
        cols = {k: c.column(k).to_numpy() for k in c.column_names}
        cols = {k: v[at[where].astype(np.int64)] for k, v in cols.items()}
    out = {}
    for src, dst in SCORED_CLV.items():
        full = np.full(n, np.nan)
        if src in cols:
            full[where] = cols[src]
        out[dst] = full
    return out, models
