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
import pyarrow.compute as pc

from custval.columns import SCORED_CLV, SUMMARY_COLUMNS
from custval.config import Project
from custval.errors import CustvalError, FitError
from custval.features._util import cutoff
from custval.features.holdout import btyd_summary_table, tracking_times
from custval.features.transactions import UNIT_DAYS
from custval.flows.preparation import Prepared
from custval.models.btyd_clv import (
    PURCHASE_MODEL_CHOICES,
    PurchaseChoice,
    btyd_predictions,
    clv_models_json,
)
from custval.models.customer_forecast import customer_forecast
from custval.models.evaluation import compare_models, holdout_errors, tracking_table

#: one year in each time unit: the default CLV horizon (whole weeks, days...)
ONE_YEAR = {"days": 365.0, "weeks": 52.0, "months": 12.0, "years": 1.0}
#: the Gamma-Gamma spend model needs at least this many repeat buyers with a spend: with fewer
#: its three parameters are not determined (the likelihood is flat)
MIN_SPEND_BUYERS = 10


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
    #: which purchase model and why (:func:`custval.models.btyd_clv.choose_purchase_model`)
    choice: PurchaseChoice | None = None
    #: customers with rows before the calibration end that are all refunds: no purchase, so
    #: not in the predictions
    refund_only: int = 0

    def notes(self) -> list[str]:
        """What a reader of the predictions should know: the customers left out, and those
        BG/NBD calls alive whatever their silence (:func:`p_alive_note`)."""
        found = []
        if self.refund_only:
            found.append(f"{self.refund_only:,} customers with only refunds are left out")
        note = p_alive_note(self.choice, self.predictions.column("frequency").to_numpy())
        if note:
            found.append(note)
        return found


def p_alive_note(choice: PurchaseChoice | None, frequency: Any) -> str | None:
    """BG/NBD's known blind spot, counted: a customer with no repeat purchase cannot have
    "died" after a purchase in that model, so their P(alive) is 1 however long ago they
    bought. None for the other models."""
    if choice is None or choice.name != "bgnbd":
        return None
    once = int((np.asarray(frequency) == 0).sum())
    return (
        f"{once:,} of {np.size(frequency):,} customers have no repeat purchase: BG/NBD gives "
        "them P(alive) = 1 by construction; MBG/NBD or Pareto/NBD do not"
    )


def discount_per_unit(per_year: float, time_unit: str) -> float:
    """The discount rate per time unit equivalent to ``per_year`` (10% a year is 0.183% a
    week): compounded over :data:`ONE_YEAR` units, the year of the default horizon, so that a
    year's horizon is discounted by exactly ``per_year`` at its end."""
    return float((1 + per_year) ** (1 / ONE_YEAR[time_unit]) - 1)


def clv(
    prepared: Prepared,
    *,
    calibration_end: date,
    holdout_end: date | None = None,
    model: str = "auto",
    horizon: float = 52.0,
    discount: float = 0.0,
    time_unit: str = "weeks",
    level: float | None = 0.9,
    n_draws: int = 200,
    compare: bool = False,
    tracking: bool = False,
) -> ClvResult:
    """Fit a purchase model (BG/NBD, MBG/NBD or Pareto/NBD) and Gamma-Gamma on the customers'
    BTYD summary at ``calibration_end``; predict P(alive), purchases and discounted CLV over
    ``horizon`` time units; judge the purchase model on the holdout when ``holdout_end`` is given.
    With a ``level`` the expected purchases and the CLV get central intervals from ``n_draws``
    draws of the models' parameters (:mod:`custval.models.clv`). With a holdout (or ``tracking``)
    the result has a tracking table, actual against predicted and then ahead (:func:`_tracking`);
    with ``compare`` every purchase model is fitted and compared (log-likelihood, AIC, BIC,
    holdout error). ``model`` auto keeps the best of the three (``choose_purchase_model``).
    Data the models cannot learn from is refused first, in plain words (:func:`check_summary`).

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
    # the ids stay in Arrow (a million Python strings cost a tenth of a second for nothing)
    col = {c: _numbers(table.column(c)) for c in table.column_names if c != "customer_id"}
    x, tx_, t, m = (col[c].astype(float) for c in SUMMARY_COLUMNS)
    facts = check_summary(tx, calibration_end, table.column("customer_id"), x, m)
    fitted = btyd_predictions(
        x,
        tx_,
        t,
        m,
        model=model,
        horizon=horizon,
        discount=discount,
        level=level,
        n_draws=n_draws,
        holdout_frequency=col.get("frequency_holdout"),
        holdout_duration=col.get("duration_holdout"),
    )
    purchases = fitted.purchases
    out = {"customer_id": table.column("customer_id"), **fitted.columns}
    holdout, track = None, None
    if holdout_end is not None:
        predicted = purchases.conditional_expected_purchases(col["duration_holdout"], x, tx_, t)
        out["frequency_holdout"] = col["frequency_holdout"]
        out["predicted_holdout"] = predicted
        holdout = holdout_errors(predicted, col["frequency_holdout"])
    if holdout_end is not None or tracking:
        period = (calibration_end, holdout_end or calibration_end)
        track = tracking_rows(tx, purchases, period, time_unit, horizon, prepared.one_row_per_order)
    return ClvResult(
        purchases,
        fitted.spend,
        pa.table(out, metadata=_metadata(fitted.choice)),
        holdout,
        fitted.spend_excluded,
        fitted.interval,
        track,
        _comparison(fitted.choice, x, tx_, t, col) if compare else None,
        fitted.choice,
        _refund_only(tx, calibration_end, facts, table.column("customer_id")),
    )


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    return column.to_numpy(zero_copy_only=False)


def _comparison(choice: PurchaseChoice | None, x: Any, tx_: Any, t: Any, col: dict) -> Any:
    """Every purchase model's fit and holdout error: auto has fitted all three already."""
    if choice is not None and choice.comparison is not None:
        return choice.comparison
    return compare_models(
        x,
        tx_,
        t,
        holdout_frequency=col.get("frequency_holdout"),
        holdout_duration=col.get("duration_holdout"),
    )


def _metadata(choice: PurchaseChoice | None) -> dict[str, str] | None:
    """The predictions file says which purchase model made it, and why."""
    if choice is None:
        return None
    return {
        "custval.purchase_model": choice.name,
        "custval.purchase_model_reason": choice.reason(),
    }


@dataclass(frozen=True)
class _Facts:
    """The transactions before a date, counted in one query."""

    rows: int
    refunds: int
    first_purchase: date | None
    last_purchase: date | None


def _facts(tx: Any, calibration_end: date) -> _Facts:
    # no distinct count of customers here: over millions of rows it costs as much as the
    # summary itself, and only the refund-only customers need one (:func:`_refund_only`)
    before = tx.filter(tx.timestamp < cutoff(calibration_end))
    bought = ~before.is_refund
    row = (
        before.aggregate(
            rows=before.count(),
            refunds=before.is_refund.cast("int64").sum(),
            first=before.timestamp.min(where=bought),
            last=before.timestamp.max(where=bought),
        )
        .to_pyarrow()
        .to_pylist()[0]
    )

    def day(value: Any) -> date | None:
        return None if value is None else value.date()

    return _Facts(
        int(row["rows"] or 0), int(row["refunds"] or 0), day(row["first"]), day(row["last"])
    )


def _refund_only(tx: Any, calibration_end: date, facts: _Facts, buyers: pa.Array) -> int:
    """The customers whose rows before ``calibration_end`` are all refunds: those with a
    refund there who are not among the ``buyers`` (the summary's ids). Only the refund rows
    are grouped, and none when there is no refund."""
    if facts.refunds == 0:
        return 0
    before = tx.filter((tx.timestamp < cutoff(calibration_end)) & tx.is_refund)
    refunders = before.select("customer_id").distinct().to_pyarrow().column("customer_id")
    # the small set of refunders is hashed, the buyers only probe it
    known = pc.sum(pc.is_in(buyers, value_set=refunders.combine_chunks())).as_py() or 0
    return len(refunders) - int(known)


def check_summary(tx: Any, calibration_end: date, ids: Any, x: Any, m: Any) -> _Facts:
    """Refuse, in words about customers and dates, a summary (ids, repeat purchases ``x``,
    mean repeat spend ``m``) that the purchase and spend models cannot learn from; returns the
    transactions' counts before ``calibration_end`` (one query, ``tx`` the cleaned
    transactions). Vectorised: counts over arrays, no loop over customers."""
    facts = _facts(tx, calibration_end)
    n, before = len(x), f"before {calibration_end}"
    hint = "Use a later --calibration-end, or more of the history"
    if n == 0:
        if facts.rows and facts.refunds == facts.rows:
            raise FitError(
                f"all {facts.rows:,} amounts {before} are refunds (negative): there is no "
                "purchase to learn from",
                count=facts.rows,
                hint="Check that --amount names the purchase amount and its sign",
            )
        raise FitError(
            f"no customer bought anything {before}: there is nothing to learn from", hint=hint
        )
    if n == 1:
        raise FitError(
            f"only one customer ({ids[0]}) bought {before}: the purchase models learn from "
            "many customers",
            count=1,
            hint=hint,
        )
    purchases = facts.rows - facts.refunds
    if facts.first_purchase is not None and facts.first_purchase == facts.last_purchase:
        raise FitError(
            f"all {purchases:,} purchases of the {n:,} customers {before} were made on one "
            f"day, {facts.first_purchase}: the purchase models need purchases on different days",
            count=purchases,
            hint=hint,
        )
    repeat = int((x > 0).sum())
    if repeat == 0:
        raise FitError(
            f"none of the {n:,} customers bought twice {before} (purchases on one day count "
            "once): the purchase models need repeat buyers",
            count=n,
            hint=hint,
        )
    spenders = int(((x > 0) & (m > 0)).sum())
    if spenders < MIN_SPEND_BUYERS:
        raise FitError(
            f"only {spenders} of the {n:,} customers made a repeat purchase with a positive "
            f"amount {before}: the Gamma-Gamma spend model needs at least {MIN_SPEND_BUYERS}",
            count=spenders,
            hint=hint,
        )
    return facts


def _check_names(model: str, time_unit: str) -> None:
    if model not in PURCHASE_MODEL_CHOICES:
        raise CustvalError(
            f"unknown model '{model}'", hint="Use one of " + ", ".join(PURCHASE_MODEL_CHOICES)
        )
    if time_unit not in UNIT_DAYS:
        raise CustvalError(
            f"unknown time unit '{time_unit}'", hint="Use one of " + ", ".join(UNIT_DAYS)
        )


def tracking_rows(
    tx: Any,
    purchases: Any,
    period: tuple[date, date],
    time_unit: str,
    horizon: float,
    one_row_per_order: bool,
    summary: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Cumulative repeat transactions of the customers who bought before the calibration end,
    actual against predicted, at every time unit from the first purchase, the calibration end
    and the end of the data (``period``: calibration end, data end), then extended forward.

    The calibration and holdout rows are the fit's check (:func:`tracking_table`: the model's
    expectation from each customer's first purchase, blind to her history). The ``forecast``
    rows, one per time unit over ``horizon``, are the base's expected decay: each customer's
    expected repeat purchases conditional on her history at the end of the data (the existing
    customers of the customer-based sales forecast), ``actual`` empty and
    ``cumulative_predicted`` continued from the actual count, where the base stands.
    ``summary``: the buyers' (frequency, recency, T) at the end, when the caller has them and
    the period has no holdout (saves reading the transactions again)."""
    calibration_end, end_date = period
    origin, births, repeats = tracking_times(tx, calibration_end, end_date, time_unit=time_unit)
    unit = UNIT_DAYS[time_unit]
    end = (end_date - origin).days / unit
    cal = (calibration_end - origin).days / unit
    ends = np.unique(np.append(np.arange(1.0, np.floor(end) + 1), [cal, end]))
    past = tracking_table(purchases, births, repeats, ends[ends > 0])
    past.insert(1, "period", np.where(past.period_end <= cal, "calibration", "holdout"))
    steps = np.arange(1.0, np.floor(horizon) + 1)
    if steps.size == 0:
        return past
    if summary is not None and calibration_end == end_date:
        # the caller's BTYD summary at the end (the features have it): every buyer is tracked
        x, rec, age = summary
    else:
        base = btyd_summary_table(
            tx, end_date, time_unit=time_unit, one_row_per_order=one_row_per_order
        )
        # the tracked cohort only, a first purchase before the calibration end: T there >= 0
        # (a first purchase on its eve has T = 0), so T here >= the days between the two ends
        base = base.filter(base.T * unit > (end_date - calibration_end).days - 0.5).to_pyarrow()
        x, rec, age = (_numbers(base.column(c)).astype(float) for c in SUMMARY_COLUMNS[:3])
    ahead = customer_forecast(purchases, x, rec, age, steps)["existing"]
    forward = pd.DataFrame(
        {
            "period_end": end + steps,
            "period": "forecast",
            "actual": np.nan,
            "predicted": ahead,
            "cumulative_actual": np.nan,
            "cumulative_predicted": past.cumulative_actual.iloc[-1] + np.cumsum(ahead),
        }
    )
    return pd.concat([past, forward], ignore_index=True)


def clv_settings(project: Project) -> tuple[float, float]:
    """The project's CLV horizon (``[clv] horizon``, default a year) and its discount rate per
    time unit (from ``[clv] discount_per_year``), both in the project's time unit."""
    return (
        project.clv.horizon or ONE_YEAR[project.time_unit],
        discount_per_unit(project.clv.discount_per_year, project.time_unit),
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
    same ``rfm_features`` at the same date and time unit), else from the transactions. The
    purchase model is the project's ``[clv] model`` (``auto``: the lowest AIC)."""
    settings = {"horizon": horizon, "discount": discount}
    n, model, when = len(table), project.clv.model, as_of or project.as_of
    if all(c in table.columns for c in SUMMARY_COLUMNS):
        buyers = table["T"].notna().to_numpy()
        x, tx_, t, m = (
            table[c].to_numpy(dtype=np.float64, na_value=np.nan)[buyers] for c in SUMMARY_COLUMNS
        )
        if "transactions" in prepared.tables:
            ids = table["customer_id"].to_numpy()[buyers]
            check_summary(prepared.tables["transactions"], when, ids, x, m)
        fit = btyd_predictions(
            x, tx_, t, m, model=model, purchases_interval=False, level=level, **settings
        )
        cols = fit.columns
        models = clv_models_json(fit.purchases, fit.spend, **settings, choice=fit.choice)
        where = np.flatnonzero(buyers)
    else:
        result = clv(
            prepared,
            calibration_end=when,
            time_unit=project.time_unit,
            model=model,
            level=level,
            **settings,
        )
        models = clv_models_json(result.purchases, result.spend, **settings, choice=result.choice)
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
