"""Customer lifetime value from a purchase model and a spend model, with intervals.

The probabilistic CLV of a customer is the discounted value of the purchases the purchase model
(BG/NBD, MBG/NBD or Pareto/NBD from :mod:`custval.models.btyd`) expects over a horizon, each at
the spend the Gamma-Gamma model expects of that customer:

    CLV_i = E[M_i] * sum_{k=1..K} (E[Y_i(k s)] - E[Y_i((k - 1) s)]) / (1 + d) ** (k s)

where ``E[Y_i(t)]`` is the customer's expected repeat purchases in the next ``t`` time units given
(frequency, recency, T), ``s = horizon / K`` is the step (one time unit by default), the purchases
of each step are discounted to the step's end, ``d`` is the discount rate per time unit (for
weekly data and 10% a year, ``d = 1.1 ** (1 / 52) - 1``) and ``E[M_i]`` is the expected average
spend per purchase. Money is in the data's currency; time in the data's unit (custval's default
is weeks).

Intervals come from the models' own uncertainty: parameters are drawn from their asymptotic
normal distribution (on the log scale, so that they stay positive: the delta method turns the
covariance of the parameters into that of their logarithms), every draw's CLV is computed for
every customer, and the quantiles of the draws bound each customer's value. Customers are
processed in chunks, so memory stays bounded whatever their number.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from custval.errors import CustvalError

Array = npt.NDArray[np.float64]


class PurchaseModel(Protocol):
    params_: dict[str, float]
    covariance_: Array

    def conditional_expected_purchases(
        self, t: Any, frequency: Any, recency: Any, T: Any
    ) -> Array: ...


class SpendModel(Protocol):
    params_: dict[str, float]
    covariance_: Array

    def conditional_expected_average_spend(self, frequency: Any, monetary_value: Any) -> Array: ...


def _steps(horizon: float, step: float) -> Array:
    if not np.isfinite(horizon) or horizon <= 0:
        raise CustvalError(f"the horizon must be a positive number of time units, not {horizon}")
    if not np.isfinite(step) or step <= 0:
        raise CustvalError(f"the step must be a positive number of time units, not {step}")
    k = max(1, round(horizon / step))
    return np.linspace(horizon / k, horizon, k)


def discounted_expected_purchases(
    model: PurchaseModel,
    frequency: Any,
    recency: Any,
    T: Any,
    *,
    horizon: float,
    discount: float = 0.0,
    step: float = 1.0,
) -> Array:
    """Each customer's expected repeat purchases over ``horizon``, discounted per step.

    Unique (frequency, recency, T) rows are evaluated once: customers who look alike to the
    model cost one evaluation.

    Example
    -------
    >>> det = discounted_expected_purchases(bgnbd, x, t_x, T, horizon=52, discount=0.002)
    ... # doctest: +SKIP
    """
    if discount < 0 or not np.isfinite(discount):
        raise CustvalError(f"the discount rate must be zero or positive, not {discount}")
    rows = np.column_stack(
        [np.asarray(v, dtype=np.float64).ravel() for v in (frequency, recency, T)]
    )
    unique, inverse = np.unique(rows, axis=0, return_inverse=True)
    det = _det_unique(model, unique, _steps(horizon, step), discount)
    return det[inverse.ravel()]


def _det_unique(model: PurchaseModel, unique: Array, ts: Array, discount: float) -> Array:
    x, tx, tt = unique.T
    total = np.zeros(len(unique))
    previous = np.zeros(len(unique))
    for t in ts:  # a loop over the horizon's steps; each step is vectorised over customers
        cumulative = model.conditional_expected_purchases(t, x, tx, tt)
        total += (cumulative - previous) / (1.0 + discount) ** t
        previous = cumulative
    return total


def customer_lifetime_value(
    purchases: PurchaseModel,
    spend: SpendModel,
    frequency: Any,
    recency: Any,
    T: Any,
    monetary_value: Any,
    *,
    horizon: float,
    discount: float = 0.0,
    step: float = 1.0,
) -> Array:
    """Discounted CLV of each customer over ``horizon`` time units (formula: module docstring).

    Example
    -------
    >>> clv = customer_lifetime_value(bgnbd, gg, x, t_x, T, m, horizon=52, discount=0.0018)
    ... # doctest: +SKIP
    """
    det = discounted_expected_purchases(
        purchases, frequency, recency, T, horizon=horizon, discount=discount, step=step
    )
    return det * spend.conditional_expected_average_spend(frequency, monetary_value)


@dataclass(frozen=True)
class Interval:
    """Point estimates and the bounds of a central interval, one value per customer."""

    estimate: Array
    lower: Array
    upper: Array
    level: float


def _parameter_draws(model: Any, n_draws: int, rng: np.random.Generator) -> list[Any]:
    """Copies of ``model`` with parameters drawn from their asymptotic normal distribution."""
    names = list(model.params_)
    theta = np.array([model.params_[k] for k in names])
    cov = np.asarray(model.covariance_, dtype=np.float64)
    if cov.shape != (theta.size, theta.size) or not np.all(np.isfinite(cov)):
        raise CustvalError(
            f"{type(model).__name__} has no finite covariance of its parameters, so intervals "
            "cannot be drawn",
            hint="Fit on more customers, or check converged_ and standard_errors_",
        )
    # delta method: log(theta) ~ N(log(theta_hat), D cov D), D = diag(1 / theta_hat)
    log_cov = cov / np.outer(theta, theta)
    draws = rng.multivariate_normal(np.log(theta), log_cov, size=n_draws, method="eigh")
    models = []
    for row in np.exp(draws):  # a loop over draws, not customers
        clone = copy.copy(model)
        clone.params_ = dict(zip(names, map(float, row), strict=True))
        models.append(clone)
    return models


def clv_interval(
    purchases: PurchaseModel,
    spend: SpendModel,
    frequency: Any,
    recency: Any,
    T: Any,
    monetary_value: Any,
    *,
    horizon: float,
    discount: float = 0.0,
    step: float = 1.0,
    level: float = 0.9,
    n_draws: int = 200,
    seed: int = 0,
    chunk_size: int = 100_000,
) -> Interval:
    """CLV with a central ``level`` interval per customer from ``n_draws`` parameter draws.

    The draws of both models are independent (the two are fitted separately). Memory holds
    ``n_draws x chunk_size`` values at a time.

    Example
    -------
    >>> iv = clv_interval(bgnbd, gg, x, t_x, T, m, horizon=52, level=0.9)  # doctest: +SKIP
    >>> (iv.lower <= iv.estimate).all()  # doctest: +SKIP
    True
    """
    if not 0 < level < 1:
        raise CustvalError(f"the interval level must lie between 0 and 1, not {level}")
    if n_draws < 2:
        raise CustvalError("at least two parameter draws are needed for an interval")
    rng = np.random.default_rng(seed)
    purchase_draws = _parameter_draws(purchases, n_draws, rng)
    spend_draws = _parameter_draws(spend, n_draws, rng)
    x = np.asarray(frequency, dtype=np.float64).ravel()
    tx = np.asarray(recency, dtype=np.float64).ravel()
    tt = np.asarray(T, dtype=np.float64).ravel()
    m = np.asarray(monetary_value, dtype=np.float64).ravel()
    estimate = customer_lifetime_value(
        purchases, spend, x, tx, tt, m, horizon=horizon, discount=discount, step=step
    )
    ts = _steps(horizon, step)
    lower = np.empty_like(estimate)
    upper = np.empty_like(estimate)
    q = [(1 - level) / 2, (1 + level) / 2]
    for start in range(0, x.size, chunk_size):  # chunks of customers bound the memory
        part = slice(start, start + chunk_size)
        rows = np.column_stack([x[part], tx[part], tt[part]])
        unique, inverse = np.unique(rows, axis=0, return_inverse=True)
        values = np.empty((n_draws, rows.shape[0]))
        for d, (pm, sm) in enumerate(zip(purchase_draws, spend_draws, strict=True)):
            det = _det_unique(pm, unique, ts, discount)[inverse.ravel()]
            values[d] = det * sm.conditional_expected_average_spend(x[part], m[part])
        lower[part], upper[part] = np.quantile(values, q, axis=0)
    return Interval(estimate, lower, upper, level)
