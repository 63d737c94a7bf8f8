"""How well customer-base models fit and predict.

* :func:`holdout_errors` -- per-customer and aggregate errors of a holdout forecast;
* :func:`tracking_table` -- cumulative repeat transactions, actual against predicted, per period
  (the tracking plot of Fader, Hardie & Lee 2005);
* :func:`compare_models` -- fit BG/NBD, MBG/NBD and Pareto/NBD (or given models) on one summary and
  tabulate log-likelihood, AIC, BIC and holdout errors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from custval.errors import CustvalError
from custval.models.btyd import BetaGeo, ModifiedBetaGeo, ParetoNBD

__all__ = ["compare_models", "holdout_errors", "tracking_table"]


def holdout_errors(predicted: Any, actual: Any) -> dict[str, float]:
    """Per-customer and aggregate errors of predicted against actual holdout purchases.

    Returns ``mae`` and ``rmse`` (purchases per customer), ``predicted_total``,
    ``actual_total`` and ``aggregate_error`` ((predicted - actual) / actual, a share).

    Example
    -------
    >>> holdout_errors([1.0, 0.5], [1, 0])["mae"]
    0.25
    """
    p = np.asarray(predicted, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    diff = p - a
    total_a = float(a.sum())
    return {
        "customers": float(p.size),
        "mae": float(np.abs(diff).mean()),
        "rmse": float(np.sqrt((diff**2).mean())),
        "predicted_total": float(p.sum()),
        "actual_total": total_a,
        "aggregate_error": float(p.sum() / total_a - 1) if total_a else float("nan"),
    }


# --------------------------------------------------------------------------------------------
# tracking of cumulative repeat transactions
# --------------------------------------------------------------------------------------------


def _numbers(values: Any, name: str, hint: str | None = None) -> npt.NDArray[np.float64]:
    """A finite float array (1-D) or a CustvalError naming the argument."""
    try:
        arr = np.atleast_1d(np.asarray(values, dtype=np.float64)).ravel()
    except (TypeError, ValueError) as exc:
        raise CustvalError(f"{name} must be numeric ({exc})", column=name, hint=hint) from exc
    bad = ~np.isfinite(arr)
    if bad.any():
        raise CustvalError(
            f"{int(bad.sum())} values of {name} are missing or infinite",
            column=name,
            count=int(bad.sum()),
            hint=hint,
        )
    return arr


def tracking_table(
    model: Any, first_purchase: Any, repeat_times: Any, period_ends: Any
) -> pd.DataFrame:
    """Actual against predicted repeat transactions per period, and cumulated.

    The tracking plot of Fader, Hardie & Lee (2005, "Counting your customers the easy way",
    Figure 2 for CDNOW): a cohort's customer i makes her first purchase at s_i, and the model
    predicts her repeat transactions by time e as E[X(e - s_i)]
    (``model.expected_purchases_new_customer``, 0 for e <= s_i). For each period ending at e_k:

        cumulative_predicted_k = sum_i E[X(max(e_k - s_i, 0))],
        predicted_k = cumulative_predicted_k - cumulative_predicted_{k-1},

    and ``actual`` counts the repeat transactions at times e_{k-1} <= time < e_k; the first
    period takes everything before e_1 (so ``cumulative_actual`` is the count before e_k). Times
    are those of purchase days, and a day's purchases happen after its midnight, so a purchase
    dated on a period's end day belongs to the next period, as it belongs to the holdout when that
    day is the calibration end. The calibration period
    is where the model was fitted; periods after it are a holdout test of the aggregate forecast.

    Customers are grouped by distinct first-purchase time, so the work is one evaluation per
    (period, distinct first-purchase time) pair, not per customer.

    Parameters
    ----------
    model:
        A fitted model with ``expected_purchases_new_customer(t)`` (BG/NBD, MBG/NBD, Pareto/NBD).
    first_purchase:
        Each customer's first purchase time (in the model's time unit since an origin).
    repeat_times:
        The time of every repeat transaction of these customers (same unit and origin).
    period_ends:
        Strictly increasing times at which to report.

    Returns
    -------
    DataFrame with one row per period: ``period_end``, ``actual``, ``predicted``,
    ``cumulative_actual``, ``cumulative_predicted``.
    """
    hint = "Times are in the model's time unit since a common origin"
    births = _numbers(first_purchase, "first_purchase", hint)
    repeats = _numbers(repeat_times, "repeat_times", hint)
    ends = _numbers(period_ends, "period_ends", hint)
    if births.size == 0:
        raise CustvalError("there are no customers (first_purchase is empty)")
    if ends.size == 0 or np.any(np.diff(ends) <= 0):
        raise CustvalError(
            "period_ends must be a non-empty, strictly increasing sequence of times",
            column="period_ends",
        )
    birth_values, birth_counts = np.unique(births, return_counts=True)
    horizon = np.maximum(ends[:, None] - birth_values[None, :], 0.0)
    # distinct horizons only: with times on a day grid most (period, birth) pairs share one
    uniq, inverse = np.unique(horizon, return_inverse=True)
    expected = np.asarray(model.expected_purchases_new_customer(uniq), dtype=np.float64)
    cumulative_predicted = expected[inverse.reshape(horizon.shape)] @ birth_counts
    period = np.searchsorted(ends, repeats, side="right")  # e_{k-1} <= time < e_k -> k
    actual = np.bincount(period, minlength=ends.size + 1)[: ends.size]
    return pd.DataFrame(
        {
            "period_end": ends,
            "actual": actual,
            "predicted": np.diff(cumulative_predicted, prepend=0.0),
            "cumulative_actual": np.cumsum(actual),
            "cumulative_predicted": cumulative_predicted,
        }
    )


# --------------------------------------------------------------------------------------------
# model comparison
# --------------------------------------------------------------------------------------------


def _default_models() -> dict[str, Any]:
    return {"bgnbd": BetaGeo(), "mbgnbd": ModifiedBetaGeo(), "pnbd": ParetoNBD()}


def compare_models(
    frequency: Any,
    recency: Any,
    T: Any,
    *,
    holdout_frequency: Any = None,
    holdout_duration: Any = None,
    models: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Fit several customer-base models on one BTYD summary and compare them.

    Every model is fitted by maximum likelihood on (frequency, recency, T); the table reports
    its log-likelihood, number of parameters k, AIC = 2k - 2 log L and BIC = k log n - 2 log L
    (n customers; lower is better, Akaike 1974, Schwarz 1978), whether the fit converged and how
    long it took. With holdout data it also compares each model's conditional expectation
    E[Y(t) | x, t_x, T] for the holdout duration t with the holdout purchases
    (:func:`holdout_errors`: ``holdout_mae``, ``holdout_rmse``, ``holdout_aggregate_error``).

    A model that cannot be fitted (a :class:`~custval.errors.CustvalError`, e.g. the data do
    not determine its parameters) gets a row with the ``error`` text and NaN figures; it does not
    stop the comparison. If only its holdout prediction fails, the fit figures stay and ``error``
    says why the holdout figures are NaN.

    Parameters
    ----------
    frequency, recency, T:
        The calibration-period BTYD summary, one entry per customer.
    holdout_frequency:
        Repeat purchases of each customer in the holdout period (optional).
    holdout_duration:
        Length of the holdout period, a scalar or one value per customer (in the data's time
        unit); required with ``holdout_frequency``.
    models:
        Name -> unfitted estimator with ``fit(frequency, recency, T)`` (it is fitted in place).
        Default: ``bgnbd`` (BG/NBD), ``mbgnbd`` (MBG/NBD) and ``pnbd`` (Pareto/NBD).

    Returns
    -------
    DataFrame, one row per model sorted by AIC (failed fits last): ``model``,
    ``log_likelihood``, ``n_params``, ``aic``, ``bic``, ``converged``, ``fit_seconds``, the
    holdout columns when holdout data are given, ``params`` (dict of the estimates) and
    ``error`` (None when the fit worked).
    """
    if (holdout_frequency is None) != (holdout_duration is None):
        raise CustvalError(
            "holdout_frequency and holdout_duration must be given together",
            hint="Pass both to score the holdout period, or neither",
        )
    candidates = dict(_default_models() if models is None else models)
    if not candidates:
        raise CustvalError("no models to compare", hint="Pass at least one model, or none")
    actual = None
    if holdout_frequency is not None:
        actual = _numbers(holdout_frequency, "holdout_frequency")
        n_cal = np.atleast_1d(np.asarray(frequency)).size
        if actual.size != n_cal:
            raise CustvalError(
                f"holdout_frequency has {actual.size} entries but the calibration summary has "
                f"{n_cal}",
                column="holdout_frequency",
            )
    rows = [
        _compare_one(name, model, frequency, recency, T, holdout_duration, actual)
        for name, model in candidates.items()  # a handful of models
    ]
    table = pd.DataFrame(rows)
    table["n_params"] = table["n_params"].astype("Int64")
    # None, not NaN, where a fit worked (pandas would infer a string column with NaN)
    table["error"] = pd.Series([row["error"] for row in rows], dtype=object)
    return table.sort_values("aic", na_position="last", kind="stable").reset_index(drop=True)


def _compare_one(
    name: str,
    model: Any,
    frequency: Any,
    recency: Any,
    T: Any,
    holdout_duration: Any,
    actual: npt.NDArray[np.float64] | None,
) -> dict[str, Any]:
    """One row of :func:`compare_models`: the model fitted and, when ``actual`` holds the
    holdout purchases, scored; a CustvalError becomes the row's ``error``."""
    holdout = actual is not None
    row: dict[str, Any] = {
        "model": name,
        "log_likelihood": math.nan,
        "n_params": math.nan,
        "aic": math.nan,
        "bic": math.nan,
        "converged": False,
        "fit_seconds": math.nan,
    }
    if holdout:
        row |= {
            "holdout_mae": math.nan,
            "holdout_rmse": math.nan,
            "holdout_aggregate_error": math.nan,
        }
    row |= {"params": None, "error": None}
    start = time.perf_counter()
    try:
        model.fit(frequency, recency, T)
        row["fit_seconds"] = time.perf_counter() - start
        row |= {
            "log_likelihood": float(model.log_likelihood_),
            "n_params": len(model.params_),
            "aic": float(model.aic_),
            "bic": float(model.bic_),
            "converged": bool(model.converged_),
            "params": dict(model.params_),
        }
        if holdout:
            predicted = model.conditional_expected_purchases(
                holdout_duration, frequency, recency, T
            )
            errors = holdout_errors(predicted, actual)
            row |= {
                "holdout_mae": errors["mae"],
                "holdout_rmse": errors["rmse"],
                "holdout_aggregate_error": errors["aggregate_error"],
            }
    except CustvalError as exc:
        if math.isnan(row["fit_seconds"]):
            row["fit_seconds"] = time.perf_counter() - start
        row["error"] = str(exc)
    return row
