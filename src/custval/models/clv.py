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

For every model here ``E[Y_i(t)] = P(alive | x, t_x, T) * E[Y(t) | alive, x, T]``, and the second
factor does not depend on t_x: the sum over the steps is evaluated once per distinct (x, T) pair
(a million customers with daily times have about 12,000) and P(alive) once per distinct
(x, t_x, T) row.

Intervals come from the models' own uncertainty: parameters are drawn from their asymptotic
normal distribution (on the log scale, so that they stay positive: the delta method turns the
covariance of the parameters into that of their logarithms), every draw's CLV is computed for
every customer, and the quantiles of the draws bound each customer's value. With
``method="exact"`` each draw is evaluated with the full formulas. With ``method="quadratic"``
the log of each distinct row's P(alive) and discounted purchases is a quadratic function of the
whitened log-parameters fitted through 1 + 2k + k(k - 1) exact evaluations placed 1.6 standard
deviations out along every axis and pair of axes (k parameters): the draws then cost one small
matrix product per block of customers. The quadratic is then checked against exact evaluations
at the six outermost draws; its error there is reported as a share of each row's standard
deviation over the draws (``Interval.surrogate_error``). ``method="auto"`` uses exact draws up
to 20,000 distinct rows, the quadratic beyond when its error there is below 0.25 standard
deviation (the error shrinks fast towards the centre: on a fitted BG/NBD with 10,000 customers
and parameter correlations above 0.9, an error of 0.15 there moved the 90% bounds by a median
0.01% and at most 1.5% of the interval's width, tests/test_clv.py; with a million customers the
parameters are known so well that it is far smaller), and exact draws otherwise. The spend
model is always evaluated exactly per draw. Customers are processed in chunks, so memory stays
bounded.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from custval.errors import CustvalError, FitError
from custval.models.fitting import map_chunks, row_chunks, unique_rows

Array = npt.NDArray[np.float64]


class PurchaseModel(Protocol):
    """What the CLV needs of a purchase model (BG/NBD, MBG/NBD, Pareto/NBD)."""

    params_: dict[str, float]
    covariance_: Array

    def conditional_expected_purchases(
        self, t: Any, frequency: Any, recency: Any, T: Any
    ) -> Array: ...

    def probability_alive(self, frequency: Any, recency: Any, T: Any) -> Array: ...

    def _purchases_if_alive(self, t: float | Array, x: Array, tt: Array) -> Array: ...


class AverageSpendModel(Protocol):
    """What the CLV needs of a spend model: the expected average spend per purchase of each
    customer (Gamma-Gamma). Not :class:`custval.models.clv_ml.SpendRegressor`, which learns the
    spend over a window from features."""

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


_TINY = float(np.exp(-700.0))


class _Layout:
    """Customers mapped to their distinct (x, t_x, T) rows and distinct (x, T) pairs."""

    def __init__(self, frequency: Any, recency: Any, T: Any) -> None:
        self.x, self.tx, self.t = (
            np.asarray(v, dtype=np.float64).ravel() for v in (frequency, recency, T)
        )
        if not (self.x.size == self.tx.size == self.t.size):
            raise CustvalError(
                f"frequency, recency and T have different lengths "
                f"({self.x.size}, {self.tx.size}, {self.t.size})"
            )
        if self.x.size <= 64:
            # a handful of customers (an online request): hashing them costs more than it saves
            identity = np.arange(self.x.size)
            self.rx, self.rtx, self.rt, self.row_of = self.x, self.tx, self.t, identity
            self.px, self.pt, self.pair_of_row = self.x, self.t, identity
            return
        (self.rx, self.rtx, self.rt), self.row_of = unique_rows(self.x, self.tx, self.t)
        (self.px, self.pt), self.pair_of_row = unique_rows(self.rx, self.rt)

    def log_parts(self, model: PurchaseModel, ts: Array, discount: float) -> tuple[Array, Array]:
        """log P(alive) per distinct row and log discounted purchases-if-alive per pair."""
        # a floor for customers whose P(alive) or purchases underflow: exp(-700) is zero for
        # every sum, and it keeps -inf (and -inf * 0 = NaN) out of the matrix products
        log_alive = np.log(np.maximum(model.probability_alive(self.rx, self.rtx, self.rt), _TINY))
        total = np.zeros(self.px.size)
        # all steps of a block of pairs in one call (a step-by-step loop costs a model call per
        # step, which dominates for the few customers of an online request); the sum over
        # steps runs in the same order as such a loop would
        size = max(1, 2**20 // ts.size)
        for block in row_chunks(self.px.size, size):  # blocks bound the memory
            n = block.stop - block.start
            cumulative = model._purchases_if_alive(
                np.repeat(ts, n),
                np.tile(self.px[block], ts.size),
                np.tile(self.pt[block], ts.size),
            ).reshape(ts.size, n)
            increments = np.diff(cumulative, axis=0, prepend=0.0)
            total[block] = (increments / (1.0 + discount) ** ts[:, None]).sum(axis=0)
        return log_alive, np.log(np.maximum(total, _TINY))

    def per_row(self, log_alive: Array, log_future: Array) -> Array:
        """log discounted expected purchases per distinct row (last axis: rows)."""
        return log_alive + log_future[..., self.pair_of_row]


def purchase_predictions(
    model: PurchaseModel,
    frequency: Any,
    recency: Any,
    T: Any,
    *,
    horizon: float,
    discount: float = 0.0,
    step: float = 1.0,
) -> tuple[Array, Array, Array]:
    """Each customer's P(alive), expected repeat purchases over ``horizon`` and the same
    purchases discounted per step (:func:`discounted_expected_purchases`), from one mapping of
    the customers to their distinct (frequency, recency, T) rows: the same numbers as the
    model's own methods, each evaluated once per distinct row."""
    _check_discount(discount)
    layout = _Layout(frequency, recency, T)
    rows = (layout.rx, layout.rtx, layout.rt)
    alive = model.probability_alive(*rows)
    expected = model.conditional_expected_purchases(horizon, *rows)
    log_alive, log_future = layout.log_parts(model, _steps(horizon, step), discount)
    discounted = np.exp(layout.per_row(log_alive, log_future))
    return alive[layout.row_of], expected[layout.row_of], discounted[layout.row_of]


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

    Distinct (frequency, recency, T) rows and distinct (frequency, T) pairs are evaluated once:
    customers who look alike to the model cost one evaluation.

    Example
    -------
    >>> det = discounted_expected_purchases(bgnbd, x, t_x, T, horizon=52, discount=0.002)
    ... # doctest: +SKIP
    """
    _check_discount(discount)
    layout = _Layout(frequency, recency, T)
    log_alive, log_future = layout.log_parts(model, _steps(horizon, step), discount)
    return np.exp(layout.per_row(log_alive, log_future))[layout.row_of]


def _check_discount(discount: float) -> None:
    if discount < 0 or not np.isfinite(discount):
        raise CustvalError(f"the discount rate must be zero or positive, not {discount}")


def customer_lifetime_value(
    purchases: PurchaseModel,
    spend: AverageSpendModel,
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
    #: the draws of the sum over all customers (its quantiles bound the total)
    total_draws: Array
    #: how the draws were evaluated: "exact" or "quadratic"
    method: str = "exact"
    #: for "quadratic": the largest error of the surrogate at the checked draws, as a share of
    #: the row's standard deviation over the draws (log scale); 0 for "exact"
    surrogate_error: float = 0.0

    @property
    def total(self) -> tuple[float, float, float]:
        """(estimate, lower, upper) of the sum over all customers at the same level."""
        lo, hi = np.quantile(self.total_draws, [(1 - self.level) / 2, (1 + self.level) / 2])
        return float(self.estimate.sum()), float(lo), float(hi)


def _log_parameter_draws(
    model: Any, n_draws: int, rng: np.random.Generator
) -> tuple[Array, Array, Array]:
    """(log-parameters at the estimate, their covariance, draws of them (n_draws x k))."""
    if not hasattr(model, "params_"):
        raise CustvalError(f"{type(model).__name__} is not fitted yet", hint="Call fit first")
    names = list(model.params_)
    theta = np.array([model.params_[k] for k in names])
    cov = np.asarray(getattr(model, "covariance_", np.nan), dtype=np.float64)
    if cov.shape != (theta.size, theta.size) or not np.all(np.isfinite(cov)):
        raise CustvalError(
            f"{type(model).__name__} has no finite covariance of its parameters, so intervals "
            "cannot be drawn",
            hint="Fit on more customers, or check converged_ and standard_errors_",
        )
    # delta method: log(theta) ~ N(log(theta_hat), D cov D), D = diag(1 / theta_hat)
    log_cov = cov / np.outer(theta, theta)
    draws = rng.multivariate_normal(np.log(theta), log_cov, n_draws, method="eigh")
    return np.log(theta), log_cov, draws


def _with_log_params(model: Any, log_theta: Array) -> Any:
    clone = copy.copy(model)
    clone.params_ = dict(zip(model.params_, map(float, np.exp(log_theta)), strict=True))
    return clone


def _quadratic_features(delta: Array) -> Array:
    """[1, d_j, d_j^2, d_i d_j (i < j)] for each row of offsets ``delta`` (m x k)."""
    k = delta.shape[1]
    i, j = np.triu_indices(k, 1)
    return np.hstack([np.ones((delta.shape[0], 1)), delta, delta**2, delta[:, i] * delta[:, j]])


def _purchase_log_draws(
    model: PurchaseModel,
    layout: _Layout,
    ts: Array,
    discount: float,
    centre: Array,
    log_cov: Array,
    draws: Array,
    method: str,
) -> tuple[Array, Array | None]:
    """log discounted expected purchases per distinct row, as coefficients and features.

    Returns ``(coef, features)`` with ``features @ coef`` the draws' values (n_draws x rows):
    for the exact method ``coef`` holds the values themselves and ``features`` is None.
    The quadratic is fitted in whitened coordinates z (log-parameters = centre + L z with
    L L' = log_cov), where the draws are standard normal: its design points lie 1.6 standard
    deviations out along each axis and each pair of axes, inside the cloud of the draws however
    strongly the parameters are correlated.
    """

    def at(log_theta: Array) -> Array:
        return layout.per_row(*layout.log_parts(_with_log_params(model, log_theta), ts, discount))

    if method == "exact":
        # one evaluation per draw, vectorised over rows; the draws run in threads
        return np.vstack(map_chunks(at, list(draws))), None
    eigval, eigvec = np.linalg.eigh(log_cov)
    root = np.sqrt(np.clip(eigval, 1e-300, None))
    k = centre.size
    i, j = np.triu_indices(k, 1)
    eye = np.eye(k)
    pairs = (eye[i] + eye[j]) / np.sqrt(2.0)
    z_design = 1.6 * np.vstack([np.zeros(k), eye, -eye, pairs, -pairs])
    points = centre + (z_design * root) @ eigvec.T
    values = np.vstack(map_chunks(at, list(points)))  # 1 + 2k + k(k-1) evaluations
    coef = np.linalg.pinv(_quadratic_features(z_design)) @ values
    z_draws = ((draws - centre) @ eigvec) / root
    return coef, _quadratic_features(z_draws)


#: up to this many distinct (x, t_x, T) rows, "auto" draws exactly
EXACT_ROWS = 20_000
#: the quadratic is kept when its error at the checked draws is below this share of each
#: row's standard deviation over the draws
SURROGATE_TOLERANCE = 0.25
_CHECKED_DRAWS = 6


def _check_surrogate(
    model: PurchaseModel,
    layout: _Layout,
    ts: Array,
    discount: float,
    coef: Array,
    features: Array,
    draws: Array,
) -> float:
    """The surrogate's largest error at the outermost draws, in row standard deviations.

    The bounds of an interval are set by the draws far from the estimate, where a quadratic is
    least accurate, so the draws with the largest surrogate spread from the centre are checked.
    """
    # checked on at most 20,000 rows spread over the table, to bound the memory
    cols = np.unique(np.linspace(0, coef.shape[1] - 1, min(coef.shape[1], 20_000)).astype(int))
    spread = features @ coef[:, cols]  # draws x rows, the surrogate's log values
    sd = spread.std(axis=0)
    sd = np.where(sd > 0, sd, np.inf)
    far = np.argsort(np.abs((spread - spread.mean(axis=0)) / sd).max(axis=1))[-_CHECKED_DRAWS:]
    exact = map_chunks(
        lambda d: layout.per_row(
            *layout.log_parts(_with_log_params(model, draws[d]), ts, discount)
        ),
        list(far),
    )
    return max(
        float(np.max(np.abs(spread[d] - e[cols]) / sd)) for d, e in zip(far, exact, strict=True)
    )


def _spend_draws(spend: AverageSpendModel, theta: Array, x: Array, m: Array) -> Array:
    """Expected average spend for every customer (rows) and parameter draw (columns)."""
    if list(spend.params_) == ["p", "q", "gamma"]:
        p, q, g = theta.T
        if np.any(q <= 1):
            raise FitError(
                f"{int((q <= 1).sum())} of {q.size} draws of the Gamma-Gamma q are <= 1, where "
                "the mean spend is infinite, so the spend has no upper bound",
                hint="Fit the spend model on more repeat buyers",
            )
        xc, mc = x[:, None], m[:, None]
        return p * (g + xc * mc) / (p * xc + (q - 1))
    return np.column_stack(
        [
            _with_log_params(spend, np.log(d)).conditional_expected_average_spend(x, m)
            for d in theta  # a loop over draws for spend models without a formula here
        ]
    )


def _matmul(a: Array, b: Array) -> Array:
    """a @ b without BLAS: a threaded BLAS inside our threads would oversubscribe the cores.

    ``a`` has few columns (the quadratic's 15 features), so the product is a short sum of
    scaled rows of ``b``.
    """
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    for j in range(a.shape[1]):  # a loop over features, not customers
        out += a[:, j : j + 1] * b[j]
    return out


def _quantiles(values: Array, level: float) -> tuple[Array, Array]:
    """Lower and upper central-``level`` quantiles of each row (linear interpolation).

    The same as ``np.quantile(values, [(1 - level) / 2, (1 + level) / 2], axis=1)`` with a
    partition on the four order statistics needed instead of a full sort.
    """
    n = values.shape[1]
    out = []
    positions = [(1 - level) / 2 * (n - 1), (1 + level) / 2 * (n - 1)]
    ks = sorted({min(int(np.floor(pos)) + d, n - 1) for pos in positions for d in (0, 1)})
    part = np.partition(values, ks, axis=1)
    for pos in positions:
        lo = int(np.floor(pos))
        hi = min(lo + 1, n - 1)
        frac = pos - lo
        out.append(part[:, lo] + (part[:, hi] - part[:, lo]) * frac)
    return out[0], out[1]


def clv_interval(
    purchases: PurchaseModel,
    spend: AverageSpendModel,
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
    chunk_size: int = 50_000,
    method: str = "auto",
    spend_frequency: Any = None,
) -> Interval:
    """CLV with a central ``level`` interval per customer from ``n_draws`` parameter draws.

    The draws of both models are independent (the two are fitted separately). Memory holds
    ``n_draws x chunk_size`` values at a time. ``method`` is ``"exact"``, ``"quadratic"`` or
    ``"auto"`` (see the module docstring). ``spend_frequency``, when given, is the frequency
    the spend model sees (e.g. 0 for repeat buyers without spend data, who then get the
    population's mean spend), the purchase model still seeing ``frequency``.

    Example
    -------
    >>> iv = clv_interval(bgnbd, gg, x, t_x, T, m, horizon=52, level=0.9)  # doctest: +SKIP
    >>> (iv.lower <= iv.estimate).all()  # doctest: +SKIP
    True
    """
    return _interval(
        purchases,
        spend,
        frequency,
        recency,
        T,
        monetary_value,
        ts=_steps(horizon, step),
        discount=discount,
        level=level,
        n_draws=n_draws,
        seed=seed,
        chunk_size=chunk_size,
        method=method,
        spend_frequency=spend_frequency,
    )


def expected_purchases_interval(
    model: PurchaseModel,
    frequency: Any,
    recency: Any,
    T: Any,
    *,
    horizon: float,
    level: float = 0.9,
    n_draws: int = 200,
    seed: int = 0,
    chunk_size: int = 50_000,
    method: str = "auto",
) -> Interval:
    """Expected repeat purchases in the next ``horizon`` time units, with a central interval.

    The estimate is ``model.conditional_expected_purchases(horizon, ...)``; the bounds are the
    quantiles over ``n_draws`` parameter draws (see the module docstring).

    Example
    -------
    >>> iv = expected_purchases_interval(bgnbd, x, t_x, T, horizon=39)  # doctest: +SKIP
    """
    if not np.isfinite(horizon) or horizon <= 0:
        raise CustvalError(f"the horizon must be a positive number of time units, not {horizon}")
    return _interval(
        model,
        None,
        frequency,
        recency,
        T,
        None,
        ts=np.array([float(horizon)]),
        discount=0.0,
        level=level,
        n_draws=n_draws,
        seed=seed,
        chunk_size=chunk_size,
        method=method,
    )


def _interval(
    purchases: PurchaseModel,
    spend: AverageSpendModel | None,
    frequency: Any,
    recency: Any,
    T: Any,
    monetary_value: Any,
    *,
    ts: Array,
    discount: float,
    level: float,
    n_draws: int,
    seed: int,
    chunk_size: int,
    method: str,
    spend_frequency: Any = None,
) -> Interval:
    _check_interval_settings(level, n_draws, method, discount)
    rng = np.random.default_rng(seed)
    centre, log_cov, purchase_draws = _log_parameter_draws(purchases, n_draws, rng)
    layout = _Layout(frequency, recency, T)
    spend_t = None
    if spend is not None:
        _, _, spend_draws = _log_parameter_draws(spend, n_draws, rng)
        spend_t = np.exp(spend_draws)
        m = np.asarray(monetary_value, dtype=np.float64).ravel()
        if m.size != layout.x.size:
            raise CustvalError(f"monetary_value has {m.size} values for {layout.x.size} customers")
    else:
        m = np.zeros(layout.x.size)
    estimate = np.exp(layout.per_row(*layout.log_parts(purchases, ts, discount)))[layout.row_of]
    if spend is not None:
        estimate = estimate * spend.conditional_expected_average_spend(
            layout.x if spend_frequency is None else np.asarray(spend_frequency, np.float64),
            m,
        )
    chosen, coef, features, surrogate_error = _purchase_draws_by_method(
        purchases, layout, ts, discount, centre, log_cov, purchase_draws, method
    )
    xs = layout.x if spend_frequency is None else np.asarray(spend_frequency, np.float64).ravel()
    lower, upper, totals = _draw_bounds(
        layout, coef, features, spend, spend_t, xs=xs, m=m, level=level, chunk_size=chunk_size
    )
    return Interval(
        estimate,
        lower,
        upper,
        level,
        totals,
        chosen,
        surrogate_error if chosen == "quadratic" else 0.0,
    )


def _check_interval_settings(level: float, n_draws: int, method: str, discount: float) -> None:
    if not 0 < level < 1:
        raise CustvalError(f"the interval level must lie between 0 and 1, not {level}")
    if n_draws * (1 - level) / 2 < 2:
        raise CustvalError(
            f"{n_draws} draws are too few for a {level:.1%} interval: each bound needs at least "
            "two draws beyond it",
            hint=f"Use at least {int(np.ceil(4 / (1 - level)))} draws, or a lower level",
        )
    if method not in ("auto", "exact", "quadratic"):
        raise CustvalError(f"method must be auto, exact or quadratic, not {method!r}")
    _check_discount(discount)


def _purchase_draws_by_method(
    purchases: PurchaseModel,
    layout: _Layout,
    ts: Array,
    discount: float,
    centre: Array,
    log_cov: Array,
    purchase_draws: Array,
    method: str,
) -> tuple[str, Array, Array | None, float]:
    """(the method used, then :func:`_purchase_log_draws`' coefficients and features, and the
    surrogate's error): ``"auto"`` is exact up to 20,000 distinct rows, the quadratic beyond
    unless its error at the checked draws exceeds the tolerance."""
    chosen = method
    if method == "auto":
        chosen = "exact" if layout.rx.size <= EXACT_ROWS else "quadratic"
    surrogate_error = 0.0
    coef, features = _purchase_log_draws(
        purchases, layout, ts, discount, centre, log_cov, purchase_draws, chosen
    )
    if chosen == "quadratic":
        surrogate_error = _check_surrogate(
            purchases, layout, ts, discount, coef, features, purchase_draws
        )
        if method == "auto" and surrogate_error > SURROGATE_TOLERANCE:
            chosen = "exact"
            coef, features = _purchase_log_draws(
                purchases, layout, ts, discount, centre, log_cov, purchase_draws, chosen
            )
    return chosen, coef, features, surrogate_error


def _draw_bounds(
    layout: _Layout,
    coef: Array,
    features: Array | None,
    spend: AverageSpendModel | None,
    spend_t: Array | None,
    *,
    xs: Array,
    m: Array,
    level: float,
    chunk_size: int,
) -> tuple[Array, Array, Array]:
    """Each customer's lower and upper bound over the draws, and the draws of the total.

    ``xs`` is the frequency the spend model sees, ``spend_t`` its parameter draws."""
    # customers alike in (row, spend) share their interval: a non-buyer's spend is m-free
    (row_u, xs_u, m_u), customer_of = unique_rows(
        layout.row_of.astype(np.float64), xs, np.where(xs > 0, m, 0.0)
    )
    rows_u = row_u.astype(np.int64)
    x_u = xs_u
    lower_u = np.empty(rows_u.size)
    upper_u = np.empty(rows_u.size)
    customers_u = np.bincount(customer_of, minlength=rows_u.size).astype(np.float64)

    # single precision for the draws: 7 significant digits are plenty for quantiles, and it
    # halves the memory traffic of the element-wise work
    coef32 = coef.astype(np.float32)
    features32 = None if features is None else np.ascontiguousarray(features.T, np.float32)
    spend32 = None if spend_t is None else spend_t.astype(np.float32)

    def bounds(part: slice) -> Array:
        # customers x draws, so that each customer's draws are contiguous for the partition
        log_values = (
            coef32[:, rows_u[part]].T
            if features32 is None
            else _matmul(coef32[:, rows_u[part]].T, features32)
        )
        values = np.exp(log_values)
        if spend is not None:
            values *= _spend_draws(
                spend, spend32, x_u[part].astype(np.float32), m_u[part].astype(np.float32)
            )
        lower_u[part], upper_u[part] = _quantiles(values, level)
        return np.einsum("i,ij->j", customers_u[part], values, dtype=np.float64)

    totals = np.sum(map_chunks(bounds, row_chunks(rows_u.size, chunk_size)), axis=0)
    return lower_u[customer_of], upper_u[customer_of], totals
