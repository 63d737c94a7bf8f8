"""Customer-base models in discrete time: BG/BB and the shifted-beta-geometric (sBG).

Both models count time in *periods* (transaction opportunities or contract periods: years,
months, weeks, annual events) chosen by the caller; every count below is a whole number of
periods, and every parameter is dimensionless.

``BetaGeoBetaBinom`` — BG/BB (Fader, Hardie & Shang 2010, "Customer-base analysis in a
discrete-time noncontractual setting", Marketing Science 29(6)):

- while alive, a customer transacts at each opportunity with probability ``p``;
- before each opportunity a living customer becomes inactive, for good, with probability
  ``theta``;
- across customers ``p ~ Beta(alpha, beta)`` and ``theta ~ Beta(gamma, delta)``.

The data per customer is ``(x, t_x, n)``: ``x`` repeat transactions (``frequency``) in ``n``
opportunities (``n_periods``), the last of them at opportunity ``t_x`` (``recency``; 0 when
``x = 0``). The likelihood is

    L = B(a+x, b+n-x)/B(a,b) * B(g, d+n)/B(g,d)
        + sum_{i=0}^{n-t_x-1} B(a+x, b+t_x-x+i)/B(a,b) * B(g+1, d+t_x+i)/B(g,d)

with ``a, b, g, d = alpha, beta, gamma, delta``.

``ShiftedBetaGeometric`` — sBG (Fader & Hardie 2007, "How to project customer retention",
Journal of Interactive Marketing 21(1)) for contractual settings: at the end of each period a
customer cancels with probability ``theta``, ``theta ~ Beta(alpha, beta)`` across customers, so

    P(T = t) = B(alpha+1, beta+t-1) / B(alpha, beta),   t = 1, 2, ...
    S(t)     = B(alpha, beta+t) / B(alpha, beta)
    r(t)     = S(t) / S(t-1) = (beta+t-1) / (alpha+beta+t-1).

Both are fitted as every customer-base model is (:mod:`custval.models.fitting`): maximum
likelihood over the logarithms of the parameters with analytic, digamma-based gradients, on the
unique patterns with their counts as weights; standard errors come from a finite-difference
Hessian of the analytic gradient in the natural parameters. ``params_`` and ``standard_errors_``
are dicts keyed by parameter name.

Example
-------
>>> import numpy as np
>>> m = ShiftedBetaGeometric().fit([1000, 631, 468, 382, 326, 289, 262, 241])
>>> {k: round(v, 3) for k, v in m.params_.items()}
{'alpha': 0.704, 'beta': 1.182}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import betaln, digamma, gammaln, hyp2f1

from custval.errors import CustvalError, FitError
from custval.models.fitting import LikelihoodModel, compress_rows

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]

# exp() of anything below about -708 underflows to a subnormal, and products of small terms
# underflow too (both raise under np.errstate(all="raise")). A term below exp(-500) relative to
# the largest one cannot move a sum in double precision, so it is set to exactly zero.
_MIN_EXP = -500.0
# Log-parameters are kept in a box wide enough for any real data set (1e-9 .. 1e9) so that a
# degenerate data set cannot drive betaln/digamma into overflow during the search.
_LOG_BOUND = 20.7
# gamma this close to 1 uses the analytic limit of delta/(gamma-1) * [...] in the predictions.
_GAMMA_ONE = 1e-8


def _exp_rel(z: FloatArray) -> FloatArray:
    """exp(z) for z <= 0 (a term relative to the largest), exactly 0 below exp(_MIN_EXP)."""
    return np.where(z < _MIN_EXP, 0.0, np.exp(np.maximum(z, _MIN_EXP)))


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------


def _examples(name: str, values: FloatArray, bad: npt.NDArray[np.bool_]) -> list[dict[str, Any]]:
    return [{"row": int(i), name: values[i]} for i in np.flatnonzero(bad)[:5]]


def _counts(name: str, value: ArrayLike, *, allow_empty: bool = False) -> FloatArray:
    """A 1-D array of whole, non-negative, finite numbers, or a CustvalError naming the rows."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CustvalError(
            f"'{name}' is not numeric ({exc})", column=name, hint="pass whole numbers of periods"
        ) from None
    arr = np.atleast_1d(arr)
    if arr.ndim != 1:
        raise CustvalError(f"'{name}' must be one-dimensional, got shape {arr.shape}", column=name)
    if arr.size == 0 and not allow_empty:
        raise CustvalError(f"'{name}' is empty", column=name, hint="pass at least one customer")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise CustvalError(
            f"{int(bad.sum())} values are missing or infinite",
            column=name,
            count=int(bad.sum()),
            examples=_examples(name, arr, bad),
            hint="drop or fill these rows before fitting",
        )
    bad = arr < 0
    if bad.any():
        raise CustvalError(
            f"{int(bad.sum())} values are negative",
            column=name,
            count=int(bad.sum()),
            examples=_examples(name, arr, bad),
            hint="counts of periods and transactions cannot be negative",
        )
    bad = arr != np.round(arr)
    if bad.any():
        raise CustvalError(
            f"{int(bad.sum())} values are not whole numbers",
            column=name,
            count=int(bad.sum()),
            examples=_examples(name, arr, bad),
            hint="discrete-time models count whole periods",
        )
    return arr


def _weights(weights: ArrayLike | None, size: int) -> FloatArray:
    if weights is None:
        return np.ones(size)
    w = np.atleast_1d(np.asarray(weights, dtype=np.float64))
    if w.shape != (size,):
        raise CustvalError(
            f"'weights' has {w.size} values for {size} rows", column="weights", hint="one per row"
        )
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        raise CustvalError(
            f"{int(bad.sum())} weights are negative, missing or infinite",
            column="weights",
            count=int(bad.sum()),
            examples=_examples("weights", w, bad),
            hint="weights are numbers of customers per row",
        )
    if w.sum() <= 0:
        raise CustvalError("all weights are zero", column="weights", hint="no customer to fit")
    return w


def _broadcast(*arrays: FloatArray) -> list[FloatArray]:
    try:
        return [np.ascontiguousarray(a) for a in np.broadcast_arrays(*arrays)]
    except ValueError:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise CustvalError(f"inputs have different lengths ({shapes})") from None


def _positive_params(params: ArrayLike, k: int) -> FloatArray:
    p = np.asarray(params, dtype=np.float64).ravel()
    if p.shape != (k,) or not np.all(np.isfinite(p)) or np.any(p <= 0):
        raise CustvalError(f"parameters must be {k} positive finite numbers, got {p.tolist()}")
    return p


# ---------------------------------------------------------------------------------------------
# BG/BB
# ---------------------------------------------------------------------------------------------


def _bgbb_terms(
    params: FloatArray, x: FloatArray, tx: FloatArray, n: FloatArray, *, grad: bool
) -> tuple[FloatArray, FloatArray | None]:
    """Per-row log-likelihood and (optionally) its gradient in natural parameters.

    The sum over i = 0 .. n-t_x-1 is evaluated on a rows x max(n-t_x) grid with a mask, in log
    space, shifted by each row's largest term so that nothing overflows or underflows.
    """
    a, b, g, d = params
    k = int((n - tx).max()) if x.size else 0
    i = np.arange(k, dtype=np.float64)[None, :]
    mask = i < (n - tx)[:, None]
    xc, txc = x[:, None], tx[:, None]

    base = -betaln(a, b) - betaln(g, d)
    l0 = betaln(a + x, b + n - x) + betaln(g, d + n) + base
    li = betaln(a + xc, b + txc - xc + i) + betaln(g + 1, d + txc + i) + base
    li_masked = np.where(mask, li, l0[:, None])
    m = np.maximum(l0, li_masked.max(axis=1)) if k else l0
    e0 = _exp_rel(l0 - m)
    ei = np.where(mask, _exp_rel(li_masked - m[:, None]), 0.0)
    total = e0 + ei.sum(axis=1)
    ll = m + np.log(total)
    if not grad:
        return ll, None

    # d log L = sum_k w_k d l_k with w_k = exp(l_k - log L); the -log B(a,b) - log B(g,d) part
    # is common to every term and its derivative is added once.
    w0 = e0 / total
    wi = ei / total[:, None]
    dab = digamma(a + b)
    dgd = digamma(g + d)
    ga = (
        w0 * (digamma(a + x) - digamma(a + b + n))
        + (wi * (digamma(a + xc) - digamma(a + b + txc + i))).sum(axis=1)
        - digamma(a)
        + dab
    )
    gb = (
        w0 * (digamma(b + n - x) - digamma(a + b + n))
        + (wi * (digamma(b + txc - xc + i) - digamma(a + b + txc + i))).sum(axis=1)
        - digamma(b)
        + dab
    )
    gg = (
        w0 * (digamma(g) - digamma(g + d + n))
        + (wi * (digamma(g + 1) - digamma(g + d + 1 + txc + i))).sum(axis=1)
        - digamma(g)
        + dgd
    )
    gd = (
        w0 * (digamma(d + n) - digamma(g + d + n))
        + (wi * (digamma(d + txc + i) - digamma(g + d + 1 + txc + i))).sum(axis=1)
        - digamma(d)
        + dgd
    )
    return ll, np.stack([ga, gb, gg, gd], axis=1)


def _bgbb_data(
    frequency: ArrayLike, recency: ArrayLike, n_periods: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    x = _counts("frequency", frequency)
    tx = _counts("recency", recency)
    n = _counts("n_periods", n_periods)
    x, tx, n = _broadcast(x, tx, n)
    checks = [
        (tx > n, "recency is after the last period (recency > n_periods)", "recency"),
        (x > tx, "frequency exceeds recency (more transactions than opportunities)", "frequency"),
        ((x == 0) & (tx > 0), "recency is positive for customers with no transaction", "recency"),
    ]
    for bad, problem, col in checks:
        if bad.any():
            rows = [
                {"row": int(j), "frequency": x[j], "recency": tx[j], "n_periods": n[j]}
                for j in np.flatnonzero(bad)[:5]
            ]
            raise CustvalError(
                f"{int(bad.sum())} rows have {problem}",
                column=col,
                count=int(bad.sum()),
                examples=rows,
                hint="BG/BB needs 0 <= frequency <= recency <= n_periods, recency = 0 when "
                "frequency = 0",
            )
    return x, tx, n


def _compress(
    x: FloatArray, tx: FloatArray, n: FloatArray, w: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Unique (x, t_x, n) patterns with summed weights: the BG/BB sufficient statistics.

    The continuous models' compression (hashing, rows with zero weight dropped) serves here too.
    """
    (ux, utx, un), counts = compress_rows(x, tx, n, weights=w)
    return ux, utx, un, counts


def bgbb_log_likelihood(
    params: ArrayLike,
    frequency: ArrayLike,
    recency: ArrayLike,
    n_periods: ArrayLike,
    weights: ArrayLike | None = None,
) -> tuple[float, FloatArray]:
    """Total BG/BB log-likelihood and its analytic gradient in (alpha, beta, gamma, delta).

    Example
    -------
    >>> ll, grad = bgbb_log_likelihood([1.2, 0.75, 0.66, 2.8], [1, 0], [3, 0], [6, 6])
    """
    theta = _positive_params(params, 4)
    x, tx, n = _bgbb_data(frequency, recency, n_periods)
    w = _weights(weights, x.size)
    x, tx, n, w = _compress(x, tx, n, w)
    ll, g = _bgbb_terms(theta, x, tx, n, grad=True)
    assert g is not None
    return float(w @ ll), w @ g


class BetaGeoBetaBinom(LikelihoodModel):
    """BG/BB model for discrete transaction opportunities (Fader, Hardie & Shang 2010).

    Parameters
    ----------
    tol:
        Gradient tolerance of the L-BFGS-B search on the mean log-likelihood per customer.
    max_iter:
        Iteration limit of the search over log-parameters.

    Attributes
    ----------
    params_:
        ``{"alpha", "beta", "gamma", "delta"}``: ``p ~ Beta(alpha, beta)`` is the per-opportunity
        transaction probability, ``theta ~ Beta(gamma, delta)`` the per-opportunity dropout
        probability.
    log_likelihood_, aic_, bic_, converged_, n_iter_, grad_norm_, covariance_,
    standard_errors_:
        See :mod:`custval.models.fitting`; ``bic_`` uses the number of customers (sum of
        weights).

    Example
    -------
    >>> m = BetaGeoBetaBinom().fit([0, 1, 2, 6], [0, 1, 5, 6], 6, weights=[3464, 1091, 173, 1203])
    >>> p_alive = m.probability_alive([2], [5], [6])
    """

    _param_names = ("alpha", "beta", "gamma", "delta")
    _log_bound = _LOG_BOUND

    def fit(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        n_periods: ArrayLike,
        weights: ArrayLike | None = None,
    ) -> BetaGeoBetaBinom:
        """Fit by maximum likelihood.

        Parameters
        ----------
        frequency:
            Repeat transactions ``x`` per customer (or per pattern).
        recency:
            Opportunity of the last transaction ``t_x`` (0 when ``x = 0``).
        n_periods:
            Transaction opportunities ``n`` observed; a scalar applies to every row.
        weights:
            Number of customers per row (for data already compressed to patterns).
        """
        x, tx, n = _bgbb_data(frequency, recency, n_periods)
        w = _weights(weights, x.size)
        x, tx, n, w = _compress(x, tx, n, w)
        if not np.any(x > 0):
            raise FitError(
                "no customer has a transaction, so the transaction probability cannot be estimated",
                column="frequency",
                hint="BG/BB needs some customers with frequency > 0",
            )
        if not np.any(n > 0):
            raise FitError(
                "every customer has n_periods = 0", column="n_periods", hint="nothing observed"
            )

        return self._fit((x, tx, n), w)

    def _value_and_grad(
        self, theta: FloatArray, state: tuple[FloatArray, ...], w: FloatArray
    ) -> tuple[float, FloatArray]:
        ll, g = _bgbb_terms(theta, *state, grad=True)
        assert g is not None
        return float(w @ ll), w @ g

    # -- predictions ----------------------------------------------------------------------

    def _posterior_inputs(
        self, frequency: ArrayLike, recency: ArrayLike, n_periods: ArrayLike
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        theta = self._theta()
        x, tx, n = _bgbb_data(frequency, recency, n_periods)
        # evaluate the likelihood once per distinct pattern, then map back to the rows
        keys = np.stack([x, tx, n], axis=1)
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        ll_u, _ = _bgbb_terms(theta, uniq[:, 0], uniq[:, 1], uniq[:, 2], grad=False)
        return theta, x, tx, n, ll_u[inverse.ravel()]

    def probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, n_periods: ArrayLike
    ) -> FloatArray:
        """P(alive at opportunity n+1 | x, t_x, n) (FHS 2010, eq. 11).

        B(a+x, b+n-x)/B(a,b) * B(g, d+n+1)/B(g,d) / L(a, b, g, d | x, t_x, n)
        """
        # t_x enters P(alive) only through the likelihood L
        (a, b, g, d), x, _, n, ll = self._posterior_inputs(frequency, recency, n_periods)
        log_p = betaln(a + x, b + n - x) - betaln(a, b) + betaln(g, d + n + 1) - betaln(g, d)
        return np.exp(np.maximum(log_p - ll, _MIN_EXP))

    @staticmethod
    def _survival_sum(g: float, d: float, n: FloatArray, n_future: FloatArray) -> FloatArray:
        """sum_{t=n+1}^{n+n*} B(g, d+t)/B(g, d) in closed form.

        Equals d/(g-1) * Gamma(g+d)/Gamma(1+d) * [Gamma(1+d+n)/Gamma(g+d+n)
        - Gamma(1+d+n+n*)/Gamma(g+d+n+n*)], written as exp(f(n)) * -expm1(D)/(g-1) so that
        the difference does not cancel, with the analytic limit at g = 1.
        """
        f_n = gammaln(g + d) - gammaln(1 + d) + gammaln(1 + d + n) - gammaln(g + d + n)
        big_d = (gammaln(1 + d + n + n_future) - gammaln(1 + d + n)) - (
            gammaln(g + d + n + n_future) - gammaln(g + d + n)
        )
        if abs(g - 1.0) < _GAMMA_ONE:
            ratio = digamma(g + d + n + n_future) - digamma(g + d + n)
        else:
            ratio = -np.expm1(big_d) / (g - 1.0)
        return d * np.exp(f_n) * ratio

    def conditional_expected_transactions(
        self,
        n_future: ArrayLike,
        frequency: ArrayLike,
        recency: ArrayLike,
        n_periods: ArrayLike,
    ) -> FloatArray:
        """Expected transactions in the next ``n_future`` opportunities (FHS 2010, eq. 13).

            E[X(n, n+n*) | x, t_x, n] = 1/L * B(a+x+1, b+n-x)/B(a,b)
                * sum_{t=n+1}^{n+n*} B(g, d+t)/B(g,d)

        Example
        -------
        >>> # m.conditional_expected_transactions(5, [3], [6], [6])
        """
        fut = _counts("n_future", n_future)
        (a, b, g, d), x, tx, n, ll = self._posterior_inputs(frequency, recency, n_periods)
        x, tx, n, ll, fut = _broadcast(x, tx, n, ll, fut)
        log_p = betaln(a + x + 1, b + n - x) - betaln(a, b) - ll
        return np.exp(np.maximum(log_p, _MIN_EXP)) * self._survival_sum(g, d, n, fut)

    def expected_transactions_new_customer(self, n: ArrayLike) -> FloatArray:
        """Expected transactions of a new customer in ``n`` opportunities (FHS 2010, eq. 8).

        E[X(n)] = a/(a+b) * d/(g-1) * [1 - Gamma(g+d)/Gamma(g+d+n)
                  * Gamma(1+d+n)/Gamma(1+d)]
        """
        a, b, g, d = self._theta()
        nn = _counts("n", n)
        return a / (a + b) * self._survival_sum(g, d, np.zeros_like(nn), nn)


# ---------------------------------------------------------------------------------------------
# shifted-beta-geometric
# ---------------------------------------------------------------------------------------------


def _sbg_terms(
    params: FloatArray, t: FloatArray, observed: npt.NDArray[np.bool_], *, grad: bool
) -> tuple[FloatArray, FloatArray | None]:
    """Per-row log-likelihood: log P(T = t) for churners, log S(t) for the censored."""
    a, b = params
    # censored rows may have t = 0; keep the (unused) churn branch away from B(., b - 1)
    t1 = np.maximum(t, 1.0)
    lp_churn = betaln(a + 1, b + t1 - 1) - betaln(a, b)
    lp_surv = betaln(a, b + t) - betaln(a, b)
    ll = np.where(observed, lp_churn, lp_surv)
    if not grad:
        return ll, None
    dab = digamma(a + b)
    dabt = digamma(a + b + t)
    ga = np.where(observed, digamma(a + 1) - digamma(a), 0.0) - dabt + dab
    gb = np.where(observed, digamma(b + t1 - 1), digamma(b + t)) - dabt - digamma(b) + dab
    return ll, np.stack([ga, gb], axis=1)


def sbg_log_likelihood(
    params: ArrayLike,
    periods: ArrayLike,
    observed: ArrayLike,
    weights: ArrayLike | None = None,
) -> tuple[float, FloatArray]:
    """Total sBG log-likelihood and its analytic gradient in (alpha, beta).

    ``periods`` is the period of cancellation for ``observed`` rows (t >= 1) and the number of
    periods survived for censored rows.
    """
    theta = _positive_params(params, 2)
    t, obs, w = _sbg_lifetimes(periods, observed, weights)
    ll, g = _sbg_terms(theta, t, obs, grad=True)
    assert g is not None
    return float(w @ ll), w @ g


def _sbg_lifetimes(
    periods: ArrayLike, observed: ArrayLike, weights: ArrayLike | None
) -> tuple[FloatArray, npt.NDArray[np.bool_], FloatArray]:
    t = _counts("periods", periods)
    obs_raw = np.atleast_1d(np.asarray(observed))
    if obs_raw.dtype != bool:
        vals = np.asarray(obs_raw, dtype=np.float64)
        if not np.all(np.isin(vals, [0.0, 1.0])):
            raise CustvalError(
                "'observed' must be true (cancelled) or false (still active)", column="observed"
            )
        obs_raw = vals == 1.0
    t, obs_f = _broadcast(t, obs_raw.astype(np.float64))
    obs = obs_f == 1.0
    w = _weights(weights, t.size)
    bad = obs & (t < 1)
    if bad.any():
        raise CustvalError(
            f"{int(bad.sum())} cancellations are in period 0",
            column="periods",
            count=int(bad.sum()),
            examples=_examples("periods", t, bad),
            hint="the first possible cancellation is at the end of period 1",
        )
    keep = w > 0
    return t[keep], obs[keep], w[keep]


def _survivors_to_lifetimes(
    alive_counts: ArrayLike,
) -> tuple[FloatArray, npt.NDArray[np.bool_], FloatArray]:
    s = _counts("alive_counts", alive_counts)
    if s.size < 2:
        raise CustvalError(
            "'alive_counts' needs the cohort size and at least one later count",
            column="alive_counts",
            hint="e.g. [1000, 631, 468]",
        )
    if s[0] <= 0:
        raise FitError("the cohort is empty (alive_counts[0] = 0)", column="alive_counts")
    bad = np.diff(s) > 0
    if bad.any():
        rows = [
            {"period": int(j + 1), "before": s[j], "after": s[j + 1]}
            for j in np.flatnonzero(bad)[:5]
        ]
        raise CustvalError(
            f"survivor counts increase in {int(bad.sum())} periods",
            column="alive_counts",
            count=int(bad.sum()),
            examples=rows,
            hint="a cohort can only shrink; pass the customers still active at each period",
        )
    lost = -np.diff(s)
    periods = np.arange(1, s.size, dtype=np.float64)
    t = np.append(periods, float(s.size - 1))
    obs = np.append(np.ones(s.size - 1, dtype=bool), False)
    w = np.append(lost, s[-1])
    keep = w > 0
    return t[keep], obs[keep], w[keep]


class ShiftedBetaGeometric(LikelihoodModel):
    """sBG model of contractual retention (Fader & Hardie 2007).

    Parameters
    ----------
    tol, max_iter:
        As for ``BetaGeoBetaBinom``.

    Attributes
    ----------
    params_:
        ``{"alpha", "beta"}`` of the Beta distribution of the per-period cancellation probability.

    Example
    -------
    >>> import numpy as np
    >>> m = ShiftedBetaGeometric().fit([1000, 631, 468, 382, 326, 289, 262, 241])
    >>> np.round(m.survival([8, 12]), 3).tolist()  # projected share of the cohort still active
    [0.22, 0.17]
    """

    _param_names = ("alpha", "beta")
    _log_bound = _LOG_BOUND

    def fit(
        self,
        alive_counts: ArrayLike | None = None,
        *,
        periods: ArrayLike | None = None,
        observed: ArrayLike | None = None,
        weights: ArrayLike | None = None,
    ) -> ShiftedBetaGeometric:
        """Fit on a cohort's survivors, or on per-customer lifetimes.

        Parameters
        ----------
        alive_counts:
            Customers still active at the start (index 0: cohort size) and at the end of each
            period 1, 2, ... ; must not increase.
        periods, observed, weights:
            Instead of ``alive_counts``: per customer (or row of ``weights`` customers) the
            period of cancellation (``observed`` true, t >= 1) or the number of periods
            survived so far (``observed`` false, censored).
        """
        if alive_counts is not None:
            if periods is not None or observed is not None or weights is not None:
                raise CustvalError("pass either alive_counts or periods/observed, not both")
            t, obs, w = _survivors_to_lifetimes(alive_counts)
        elif periods is not None and observed is not None:
            t, obs, w = _sbg_lifetimes(periods, observed, weights)
        else:
            raise CustvalError("no data to fit", hint="pass alive_counts, or periods and observed")
        if not np.any(obs):
            raise FitError(
                "no customer has cancelled, so the churn rate cannot be estimated",
                hint="observe the cohort for longer",
            )
        if not np.any(obs & (t > 1)) and not np.any(~obs & (t >= 1)):
            raise FitError(
                "every customer cancelled in period 1, so heterogeneity cannot be estimated",
                hint="the sBG needs customers at risk beyond period 1",
            )

        return self._fit((t, obs.astype(np.float64)), w)

    def _value_and_grad(
        self, theta: FloatArray, state: tuple[FloatArray, ...], w: FloatArray
    ) -> tuple[float, FloatArray]:
        t, obs = state
        ll, g = _sbg_terms(theta, t, obs == 1.0, grad=True)
        assert g is not None
        return float(w @ ll), w @ g

    def survival(self, t: ArrayLike) -> FloatArray:
        """S(t) = B(alpha, beta+t)/B(alpha, beta): share of the cohort active after t periods."""
        a, b = self._theta()
        tt = _counts("t", t)
        return np.exp(np.maximum(betaln(a, b + tt) - betaln(a, b), _MIN_EXP))

    def retention_rate(self, t: ArrayLike) -> FloatArray:
        """r(t) = S(t)/S(t-1) = (beta+t-1)/(alpha+beta+t-1), for t >= 1."""
        a, b = self._theta()
        tt = _counts("t", t)
        if np.any(tt < 1):
            raise CustvalError("retention rates are defined from period 1", column="t")
        return (b + tt - 1) / (a + b + tt - 1)

    def discounted_expected_residual_lifetime(
        self, discount: float, renewals: ArrayLike = 0
    ) -> FloatArray:
        """DERL (Fader & Hardie 2010, "Customer-base valuation in a contractual setting").

        For a customer who has made ``renewals = n-1`` renewals and is about to make the n-th
        (a new customer who has paid once has ``renewals = 0``), the expected number of future
        payments, each discounted by ``discount`` per period, the next one undiscounted:

            DERL(d | a, b, n-1) = sum_{t=n}^inf S(t)/S(n-1) / (1+d)^(t-n)
                                = (b+n-1)/(a+b+n-1) * 2F1(1, b+n; a+b+n; 1/(1+d))

        Multiply by the payment per period for the residual value of the customer.

        Example
        -------
        >>> # m.discounted_expected_residual_lifetime(0.1, renewals=[0, 4])
        """
        a, b = self._theta()
        if not np.isfinite(discount) or discount <= 0:
            raise CustvalError(
                f"discount must be a positive rate per period, got {discount}",
                hint="e.g. 0.1 for 10% per period",
            )
        n = _counts("renewals", renewals) + 1
        out = (b + n - 1) / (a + b + n - 1) * hyp2f1(1.0, b + n, a + b + n, 1.0 / (1.0 + discount))
        # scipy's hyp2f1 returns NaN for large beta + n with z near 1 (tiny discount, long-lived
        # customers); there the defining series is summed directly instead.
        for j in np.flatnonzero(~np.isfinite(out)):
            out[j] = _derl_series(float(a), float(b), float(n[j]), float(discount))
        return out


def _derl_series(a: float, b: float, n: float, d: float) -> float:
    """sum_{k>=0} S(n+k)/S(n-1) (1+d)^-k by blocks in log space, to double precision.

    Term k+1 / term k = (b+n-1+k+1)/(a+b+n-1+k+1) / (1+d) < 1/(1+d), so the series converges
    at least geometrically; about 37/d terms are needed, summed a million at a time.
    """
    log_z = -np.log1p(d)
    block = int(min(1_000_000, 50.0 / -log_z + 100))
    log_t = np.log(b + n - 1) - np.log(a + b + n - 1)  # k = 0: S(n)/S(n-1)
    total = 0.0
    start = 1.0
    while True:
        k = start + np.arange(block, dtype=np.float64)
        steps = np.log(b + n - 1 + k) - np.log(a + b + n - 1 + k) + log_z
        logs = np.concatenate([[log_t], log_t + np.cumsum(steps)])
        # the first block holds the largest term; later blocks are scaled by it too
        ref = logs[0] if total == 0.0 else np.log(total)
        total += float(np.exp(ref) * _exp_rel(logs[:-1] - ref).sum())
        log_t = float(logs[-1])
        start += block
        if log_t - np.log(total) < -40.0:
            return total


__all__: Sequence[str] = [
    "BetaGeoBetaBinom",
    "ShiftedBetaGeometric",
    "bgbb_log_likelihood",
    "sbg_log_likelihood",
]
