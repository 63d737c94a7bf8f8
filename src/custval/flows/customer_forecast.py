"""The customer-based candidate of a sales forecast (:mod:`custval.models.customer_forecast`)
for one series of a project's transactions, at any origin: the BTYD summary of the series'
customers at the origin, the purchase model chosen as ``custval clv`` chooses it (lowest AIC of
BG/NBD, MBG/NBD and Pareto/NBD, or the one named), Gamma-Gamma for the spend, and the
acquisitions series forecast by exponential smoothing (ETS, or a moving average when the
history is shorter than two seasons). The customer models have no calendar: when the series'
history holds two seasons, its multiplicative seasonal index is put back on the forecast
(:func:`custval.models.customer_forecast.seasonal_index`).

The models are population models: past ``fit_sample`` customers (100,000) they are fitted on a
sample of that many, the customers whose ids hash lowest (the same sample whatever order the
engine returns the rows in, so a forecast repeats exactly), which moves a forecast's total by a
fraction of a percent, and predict for everyone; a million customers' weekly forecast then
takes seconds, not minutes.

Each series learns from its own transactions only: by channel, a customer's purchases in that
channel are a purchase process of their own. The customer-based forecast counts purchases
(purchase days of a customer, as the series do) and revenue; it has no view of the number of
buying customers, so that measure has no customer-based candidate.
"""

from __future__ import annotations

from datetime import date

import ibis.expr.types as ir
import numpy as np
import pandas as pd

from custval.columns import SUMMARY_COLUMNS
from custval.errors import FitError
from custval.features.series import acquisitions, forecast_summary, net_share
from custval.flows.customer_base import MIN_SPEND_BUYERS
from custval.models.btyd import GammaGamma
from custval.models.btyd_clv import choose_purchase_model
from custval.models.customer_forecast import customer_forecast, seasonal_index
from custval.models.forecasting import ETS, MovingAverage

__all__ = ["CUSTOMER_BASED", "MEASURES", "customer_based"]

#: the candidate's name in the leaderboard
CUSTOMER_BASED = "customer-based"
#: the measures it can forecast
MEASURES = ("revenue", "purchases")


def customer_based(
    tx: ir.Table,
    origin: date,
    *,
    horizon: int,
    freq: str,
    season: int,
    measure: str = "revenue",
    model: str = "auto",
    one_row_per_order: bool = False,
    history: np.ndarray | None = None,
    fit_sample: int = 100_000,
) -> np.ndarray:
    """The ``horizon`` periods after ``origin`` (a period start; the data before it only) of
    ``measure``, built customer by customer (module docstring). ``history``: the series'
    values before ``origin``, for its seasonal index."""
    summary = forecast_summary(tx, origin, one_row_per_order=one_row_per_order).to_pyarrow()
    if summary.num_rows == 0:
        raise FitError(f"no customer bought before {origin}")
    x, tx_, t, m = (summary.column(c).to_numpy().astype(np.float64) for c in SUMMARY_COLUMNS)
    fit = _sample(summary.column("sample_key").to_numpy(), fit_sample)
    purchases = choose_purchase_model(x[fit], tx_[fit], t[fit], model=model).purchases
    ends = _period_ends(origin, horizon, freq)
    acquired = acquisitions(
        summary.column("days_since_first_purchase").to_numpy(), origin, freq=freq
    )
    arrivals = _acquisitions_ahead(acquired["customers"], season, horizon)
    calendar = _calendar(history, season, horizon)
    if measure == "purchases":
        parts = customer_forecast(purchases, x, tx_, t, ends, arrivals=arrivals)
        return parts["purchases"] * calendar
    spend, new_spend = _spend(x, m, fit)
    first_spend = float(np.mean(summary.column("first_spend").to_numpy()))
    parts = customer_forecast(
        purchases,
        x,
        tx_,
        t,
        ends,
        arrivals=arrivals,
        spend=spend,
        first_spend=first_spend,
        new_spend=new_spend,
        net_share=net_share(tx, origin),
    )
    return parts["revenue"] * calendar


def _sample(keys: np.ndarray, size: int) -> np.ndarray:
    """The customers the models learn from: everyone, or the ``size`` with the lowest ``keys``
    (hashes of their ids), in the order of their keys."""
    if keys.size <= size:
        return np.argsort(keys, kind="stable")
    chosen = np.argpartition(keys, size)[:size]
    return chosen[np.argsort(keys[chosen], kind="stable")]


def _calendar(history: np.ndarray | None, season: int, horizon: int) -> np.ndarray:
    """The seasonal index of the ``horizon`` periods after ``history`` (1 without one)."""
    index = None if history is None else seasonal_index(history, season)
    if index is None:
        return np.ones(horizon)
    return index[(np.asarray(history).size + np.arange(horizon)) % season]


def _period_ends(origin: date, horizon: int, freq: str) -> np.ndarray:
    """The ends of the ``horizon`` periods after ``origin`` (a period start), in weeks after it."""
    if freq == "week":
        return np.arange(1, horizon + 1, dtype=np.float64)
    starts = pd.date_range(pd.Timestamp(origin), periods=horizon + 1, freq="MS")
    return ((starts[1:] - pd.Timestamp(origin)).days / 7.0).to_numpy(np.float64)


def _acquisitions_ahead(acquired: pd.Series, season: int, horizon: int) -> np.ndarray:
    """The new customers of each of the ``horizon`` periods: the ``acquired`` series (new
    customers per period), by ETS when it has two seasons, else by the mean of its last
    quarter-season."""
    counts = acquired.to_numpy(np.float64)
    try:
        ahead = ETS(season).fit(counts).predict(horizon)
    except FitError:
        window = int(min(max(season // 4, 2), counts.size))
        ahead = MovingAverage(window).fit(counts).predict(horizon)
    return np.maximum(ahead, 0.0)


def _spend(x: np.ndarray, m: np.ndarray, fit: np.ndarray) -> tuple[np.ndarray, float]:
    """Each customer's expected spend per purchase and a new customer's (the population mean):
    Gamma-Gamma (fitted on the customers ``fit``) when enough repeat buyers have a spend, else
    their plain mean spend."""
    informative = (x > 0) & (m > 0)
    learn = fit[informative[fit]]
    if learn.size >= MIN_SPEND_BUYERS:
        try:
            gg = GammaGamma().fit(x[learn], m[learn])
            xs, ms = np.where(informative, x, 0.0), np.where(informative, m, 0.0)
            return gg.conditional_expected_average_spend(xs, ms), float(
                gg.conditional_expected_average_spend([0.0], [0.0])[0]
            )
        except FitError:  # q <= 1: no finite mean; the plain mean is the honest fallback
            pass
    mean = float(m[informative].mean()) if informative.any() else 0.0
    return np.full(x.shape, mean), mean
