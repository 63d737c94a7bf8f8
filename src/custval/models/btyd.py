"""Continuous-time "buy till you die" (BTYD) models: BG/NBD, MBG/NBD, Pareto/NBD and Gamma-Gamma.

Every model takes the BTYD summary of each customer in a calibration period:

* ``frequency`` (x): number of *repeat* purchase periods (same-day purchases are one transaction,
  the first purchase is not a repeat purchase); a non-negative integer.
* ``recency`` (t_x): time from the first purchase to the last repeat purchase (0 when x = 0).
* ``T``: time from the first purchase to the end of the calibration period.

Time is in whatever unit the data uses (custval's default is weeks); the rate parameters
(``alpha``, ``beta``, ``gamma``) are in that unit and predictions for a horizon ``t`` use it too.

Models
------
``BetaGeo`` -- BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way", Marketing
    Science 24(2)). While active a customer buys at Poisson rate lambda ~ Gamma(r, alpha) (shape r,
    rate alpha); after each purchase she drops out with probability p ~ Beta(a, b).
``ModifiedBetaGeo`` -- MBG/NBD (Batislam, Denizel & Filiztekin 2007, IJRM 24). As BG/NBD, but a
    customer may also drop out at time 0 (right after the first purchase), so customers with no
    repeat purchase can be inactive.
``ParetoNBD`` -- Pareto/NBD (Schmittlein, Morrison & Colombo 1987, Management Science 33).
    Purchases at Poisson rate lambda ~ Gamma(r, alpha); lifetime exponential with rate
    mu ~ Gamma(s, beta). The likelihood follows Fader & Hardie (2005), "A note on deriving the
    Pareto/NBD model and related expressions", written as an integral over the dropout time which is
    evaluated in log space by quadrature, so it never overflows (the Gaussian hypergeometric form
    overflows, and scipy's hyp2f1 returns NaN, for customers with many purchases).
``GammaGamma`` -- spend per transaction (Fader, Hardie & Lee 2005, "RFM and CLV: using iso-value
    curves for customer base analysis", JMR 42; the model of Colombo & Jiang 1999). A transaction's
    value is Gamma(p, nu), nu ~ Gamma(q, gamma). Fit on repeat buyers' frequency and mean spend.

Fitting (:mod:`custval.models.fitting`) is maximum likelihood over log-parameters (L-BFGS-B) on the
compressed sufficient statistics: unique (x, t_x, T) rows with their counts as weights, so the
cost grows with the number of distinct rows, not customers (10M customers with times in whole days
give about 2M distinct rows). BG/NBD, MBG/NBD and Gamma-Gamma use
analytic gradients; Pareto/NBD's gradient differentiates its integral under the integral sign,
evaluated with the same quadrature as the likelihood.
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

from custval.errors import CustvalError, FitError
from custval.models import pnbd_likelihood
from custval.models.fitting import LikelihoodModel, compress_rows, map_chunks, row_chunks
from custval.models.pnbd_likelihood import log_tail_integral_direct
from custval.models.purchase_counts import (
    bgnbd_probability_of_purchases,
    pnbd_probability_of_purchases,
)

__all__ = ["BetaGeo", "GammaGamma", "ModifiedBetaGeo", "ParetoNBD"]

ArrayLike = npt.ArrayLike
Array = npt.NDArray[np.float64]


def _dot(a: Array, b: Array) -> float:
    """Sum of a * b without BLAS: a dot product over rows is too small for BLAS's threads to
    pay, and on a busy machine their waiting costs more than the sum."""
    return float(np.add.reduce(a * b))


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


def _as_array(values: ArrayLike, name: str) -> Array:
    if getattr(values, "ndim", 1) > 1:
        raise CustvalError(
            f"{name} must be one column, not a table of shape {getattr(values, 'shape', '?')}",
            column=name,
            hint="With a pandas DataFrame pass df['T']: df.T is the transposed table",
        )
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CustvalError(f"{name} must be numeric ({exc})", column=name) from exc
    return np.atleast_1d(arr).ravel()


def _bad_rows(mask: npt.NDArray[np.bool_], **cols: Array) -> list[dict[str, Any]]:
    idx = np.flatnonzero(mask)[:5]
    return [{"row": int(i), **{k: float(v[i]) for k, v in cols.items()}} for i in idx]


def _check(
    mask: npt.NDArray[np.bool_], problem: str, column: str, hint: str, **cols: Array
) -> None:
    if mask.any():
        n = int(mask.sum())
        raise CustvalError(
            f"{n} customer{'s have' if n != 1 else ' has'} {problem}",
            column=column,
            count=n,
            examples=_bad_rows(mask, **cols),
            hint=hint[:1].upper() + hint[1:],
        )


def _validate_rft(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None
) -> tuple[Array, Array, Array, Array]:
    """Check a BTYD summary and return float arrays (x, t_x, T, weights)."""
    x = _as_array(frequency, "frequency")
    tx = _as_array(recency, "recency")
    t = _as_array(T, "T")
    if not (x.size == tx.size == t.size):
        raise CustvalError(
            f"frequency, recency and T have different lengths ({x.size}, {tx.size}, {t.size})"
        )
    if x.size == 0:
        raise CustvalError("the customer summary is empty", hint="Pass at least one customer")
    w = np.ones_like(x) if weights is None else _as_array(weights, "weights")
    if w.size != x.size:
        raise CustvalError(f"weights has length {w.size}, expected {x.size}", column="weights")
    cols = {"frequency": x, "recency": tx, "T": t}
    for name, arr in (*cols.items(), ("weights", w)):
        _check(~np.isfinite(arr), "a missing or infinite value", name, "fill or drop them", **cols)
        _check(arr < 0, "a negative value", name, "values are counts and durations", **cols)
    _check(
        x != np.round(x),
        "a non-integer frequency",
        "frequency",
        "frequency counts repeat purchase periods",
        **cols,
    )
    # A relative tolerance absorbs rounding in the caller's time arithmetic.
    _check(
        tx > t * (1 + 1e-12) + 1e-12,
        "recency greater than T",
        "recency",
        "recency is the age at the last purchase and cannot exceed the age T",
        **cols,
    )
    _check(
        (x == 0) & (tx > 0),
        "no repeat purchase but a positive recency",
        "recency",
        "in the BTYD convention recency is 0 when frequency is 0",
        **cols,
    )
    return x, np.minimum(tx, t), t, w


class _CountModel(LikelihoodModel):
    """Shared input handling of the purchase-count models."""

    def fit(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        weights: ArrayLike | None = None,
    ) -> Self:
        """Fit by maximum likelihood.

        Parameters
        ----------
        frequency, recency, T:
            The BTYD summary per customer (arrays or pandas Series); recency and T in the model's
            time unit (e.g. weeks).
        weights:
            Optional number of customers each row stands for (e.g. counts of identical rows).

        Returns
        -------
        self, with ``params_``, ``log_likelihood_``, ``aic_``, ``bic_``, ``converged_``,
        ``n_iter_``, ``grad_norm_``, ``covariance_`` and ``standard_errors_``.
        """
        x, tx, t, w = _validate_rft(frequency, recency, T, weights)
        if not np.any((t > 0) & (w > 0)):
            raise FitError(
                "every customer has T = 0, so there is no observation time to fit on",
                column="T",
                hint="Use a calibration period that ends after the first purchases",
            )
        (x, tx, t), w = compress_rows(x, tx, t, weights=w)
        return self._fit((x, tx, t), w)

    def _init_theta(self, data: tuple[Array, ...], w: Array) -> Array:
        # scale the rate parameters with the data's time unit
        t = data[2]
        scale = max(float(w @ t / w.sum()), 1e-6)
        theta = np.ones(len(self._param_names))
        theta[1] = scale
        if "beta" in self._param_names:
            theta[3] = scale
        return theta

    def log_likelihood(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Array:
        """Per-customer log-likelihood at the fitted parameters."""
        x, tx, t, _ = _validate_rft(frequency, recency, T)
        return self._loglik_rows(self._theta(), (x, tx, t))


# --------------------------------------------------------------------------------------------
# BG/NBD and MBG/NBD
# --------------------------------------------------------------------------------------------


_SERIES_TERMS = 4000
# Rows per block of the BG/NBD likelihood: small enough for the CPU cache, large enough that
# NumPy's per-call overhead does not show.
_CHUNK_ROWS = 32_768


def _hyp2f1(a: float, b: float, c: Array, z: Array) -> Array:
    """Gauss hypergeometric 2F1(a, b; c; z) for 0 <= z < 1 and c > 0, elementwise.

    scipy's hyp2f1 returns NaN for large c (a customer with ~1,000 purchases) and z near 1. There
    the power series converges within a few terms, because (a)_n / (c)_n is tiny, so the failing
    entries are summed directly (vectorised over those entries, a fixed number of terms).
    """
    c, z = np.broadcast_arrays(np.asarray(c, dtype=np.float64), np.asarray(z, dtype=np.float64))
    with np.errstate(all="ignore"):
        out = np.asarray(hyp2f1(a, b, c, z), dtype=np.float64).copy()
    bad = ~np.isfinite(out)
    if bad.any():
        cb, zb = c[bad], z[bad]
        n = np.arange(_SERIES_TERMS, dtype=np.float64)[:, None]
        ratios = (a + n) * (b + n) / ((cb + n) * (n + 1.0)) * zb
        terms = np.cumprod(ratios, axis=0)
        total = 1.0 + terms.sum(axis=0)
        converged = np.abs(terms[-1]) <= 1e-15 * np.abs(total)
        out[bad] = np.where(converged, total, np.nan)
        if not converged.all():
            raise CustvalError(
                "the expected-purchases formula could not be evaluated for "
                f"{int((~converged).sum())} customers (hypergeometric series did not converge)",
                hint="Check that the horizon and the time unit are sensible",
            )
    return out


def _dot(u: Array, v: Array) -> float:
    # not BLAS: a threaded BLAS inside likelihood threads oversubscribes the cores
    return float(np.multiply(u, v).sum())


class BetaGeo(_CountModel):
    """BG/NBD model (Fader, Hardie & Lee 2005).

    Parameters learned: ``r`` and ``alpha`` (gamma shape and rate of the purchase rate; alpha in
    the time unit of the data), ``a`` and ``b`` (beta distribution of the dropout probability).

    Example
    -------
    >>> m = BetaGeo().fit([0, 2, 5], [0.0, 10.0, 30.0], [38.0, 38.0, 38.0])  # doctest: +SKIP
    >>> m.conditional_expected_purchases(39, 2, 10.0, 38.0)  # doctest: +SKIP
    """

    _param_names = ("r", "alpha", "a", "b")
    _x0 = 0.0  # the MBG/NBD shifts b + x by one

    def _pieces(self, theta: Array, data: tuple[Array, ...]) -> tuple[Array, ...]:
        r, alpha, a, b = theta
        x, tx, t = data
        s = self._x0
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = betaln(a, b + x + s) - betaln(a, b)
        a3 = -(r + x) * np.log(alpha + t)
        # the "died right after the last purchase" term; only for x > 0 in the BG/NBD
        has4 = (x > 0) if s == 0 else np.ones(x.shape, dtype=bool)
        denom = np.where(has4, b + x - 1 + s, 1.0)
        a4 = np.where(has4, np.log(a) - np.log(denom) - (r + x) * np.log(alpha + tx), -np.inf)
        return a1, a2, a3, a4, has4, denom

    def _loglik_rows(self, theta: Array, data: tuple[Array, ...]) -> Array:
        a1, a2, a3, a4, _, _ = self._pieces(theta, data)
        return a1 + a2 + np.logaddexp(a3, a4)

    def _grad_rows(self, theta: Array, data: tuple[Array, ...]) -> Array:
        r, alpha, a, b = theta
        x, tx, t = data
        s = self._x0
        _, _, a3, a4, has4, denom = self._pieces(theta, data)
        lse = np.logaddexp(a3, a4)
        w3 = np.exp(a3 - lse)  # posterior weight of "still alive at T"
        w4 = np.where(has4, np.exp(a4 - lse), 0.0)
        psi_ab = digamma(a + b)
        psi_abx = digamma(a + b + x + s)
        d_r = (
            digamma(r + x)
            - digamma(r)
            + np.log(alpha)
            - w3 * np.log(alpha + t)
            - w4 * np.log(alpha + tx)
        )
        d_alpha = r / alpha - (r + x) * (w3 / (alpha + t) + w4 / (alpha + tx))
        d_a = psi_ab - psi_abx + w4 / a
        d_b = psi_ab + digamma(b + x + s) - digamma(b) - psi_abx - w4 / denom
        return np.vstack([d_r, d_alpha, d_a, d_b])

    def _prepare(self, data: tuple[Array, ...], w: Array) -> dict[str, Any]:
        # Functions of x, t_x and T are evaluated once per distinct value and gathered, and the
        # terms that depend on x only are summed with the weights per distinct x; this makes an
        # evaluation on a million distinct rows cost a few gathers and one logaddexp per row.
        x, tx, t = data
        ix, ux = pd.factorize(x, sort=False)
        itx, utx = pd.factorize(tx, sort=False)
        it, ut = pd.factorize(t, sort=False)
        ux = np.asarray(ux, dtype=np.float64)
        ut = np.asarray(ut, dtype=np.float64)
        return {
            "ux": ux,
            "wx": np.bincount(ix, weights=w, minlength=ux.size),
            "utx": np.asarray(utx, dtype=np.float64),
            "ut": ut,
            # the "alive at T" term's sums over rows are sums over distinct T with these weights
            "wt": np.bincount(it, weights=w, minlength=ut.size),
            "wxt": np.bincount(it, weights=w * x, minlength=ut.size),
            "chunks": [(ix[c], itx[c], it[c], w[c]) for c in row_chunks(x.size, _CHUNK_ROWS)],
        }

    def _value_and_grad(self, theta: Array, state: Any, w: Array) -> tuple[float, Array]:
        if not isinstance(state, dict):  # raw data (tests, direct calls)
            return super()._value_and_grad(theta, state, w)
        r, alpha, a, b = (float(v) for v in theta)
        s = self._x0
        ux, wx = state["ux"], state["wx"]
        has4 = (ux > 0) if s == 0 else np.ones(ux.shape, dtype=bool)
        denom = np.where(has4, b + ux - 1 + s, 1.0)
        head = (
            gammaln(r + ux)
            - gammaln(r)
            + r * math.log(alpha)
            + betaln(a, b + ux + s)
            - betaln(a, b)
        )
        c4 = np.where(has4, math.log(a) - np.log(denom), -np.inf)
        at, atx = alpha + state["ut"], alpha + state["utx"]
        log_at, log_atx = np.log(at), np.log(atx)
        inv_at, inv_atx = 1 / at, 1 / atx
        rux = r + ux

        def rows(chunk: tuple[Any, ...]) -> tuple[float, float, float, float, Array]:
            ix, itx, it, wc = chunk
            log_t = log_at[it]
            dlog = log_atx[itx] - log_t
            rx = rux[ix]
            # log-odds of "dropped out after the last purchase" vs "alive at T": a4 - a3; the
            # row's log-likelihood is a3 + log(1 + e^d), and expit(d) is the posterior weight
            # of the dropout term
            d = c4[ix] - rx * dlog
            softplus = np.logaddexp(0.0, d)
            w4 = wc * np.exp(d - softplus)
            return (
                _dot(wc, softplus),
                _dot(w4, dlog),
                _dot(w4 * rx, inv_atx[itx] - inv_at[it]),
                float(w4.sum()),
                np.bincount(ix, weights=w4, minlength=ux.size),
            )

        parts = map_chunks(rows, state["chunks"])
        wt, wxt = state["wt"], state["wxt"]
        n = float(wx.sum())
        ll = float(wx @ head) - (r * wt + wxt) @ log_at + sum(p[0] for p in parts)
        w4_by_x = np.sum([p[4] for p in parts], axis=0)
        psi_ab = digamma(a + b)
        psi_abx = digamma(a + b + ux + s)
        grad = np.array(
            [
                wx @ (digamma(rux) - digamma(r) + math.log(alpha))
                - wt @ log_at
                - sum(p[1] for p in parts),
                n * r / alpha - (r * wt + wxt) @ inv_at - sum(p[2] for p in parts),
                wx @ (psi_ab - psi_abx) + sum(p[3] for p in parts) / a,
                wx @ (psi_ab + digamma(b + ux + s) - digamma(b) - psi_abx)
                - w4_by_x @ np.where(has4, 1 / denom, 0.0),
            ]
        )
        return ll, grad

    # ---- predictions -----------------------------------------------------------------------

    def _log_odds_dead(self, x: Array, tx: Array, t: Array) -> Array:
        r, alpha, a, b = self._theta()
        s = self._x0
        has4 = (x > 0) if s == 0 else np.ones(x.shape, dtype=bool)
        denom = np.where(has4, b + x - 1 + s, 1.0)
        lo = np.log(a) - np.log(denom) + (r + x) * (np.log(alpha + t) - np.log(alpha + tx))
        return np.where(has4, lo, -np.inf)

    def probability_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Array:
        """P(customer still active at T | x, t_x, T).

        BG/NBD: 1 / (1 + [x > 0] a / (b + x - 1) ((alpha + T) / (alpha + t_x))**(r + x))
        (Fader, Hardie & Lee 2005, eq. 13); MBG/NBD: the same with b + x and no [x > 0]
        (Batislam et al. 2007). Computed as a logistic of the log-odds, so never overflows.
        """
        x, tx, t, _ = _validate_rft(frequency, recency, T)
        return expit(-self._log_odds_dead(x, tx, t))

    def _bracket(self, t_new: Array, x: Array, t: Array) -> Array:
        """(c / (a-1)) [1 - ((alpha+T)/(alpha+T+t))**(r+x) F], F = 2F1(r+x, b+x+s; c; z).

        With c = a + b + x - 1 + s and z = t / (alpha + T + t). Euler's transformation
        2F1(A,B;C;z) = (1-z)**(C-A-B)
        2F1(C-A, C-B; C; z) turns the product into (1 - z)**(a-1) 2F1(a+b-1+s-r, a-1; c; z), whose
        factors stay bounded for any x, so it does not overflow for heavy buyers.
        """
        r, alpha, a, b = self._theta()
        s = self._x0
        c = a + b + x - 1 + s
        z = t_new / (alpha + t + t_new)
        scaled = np.exp((a - 1) * np.log1p(-z)) * _hyp2f1(a + b - 1 + s - r, a - 1, c, z)
        return c / (a - 1) * (1 - scaled)

    def conditional_expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Array:
        """Expected repeat purchases in the next ``t`` time units given (x, t_x, T).

        BG/NBD: E[Y(t) | x, t_x, T] = P(alive) (a + b + x - 1) / (a - 1)
        [1 - ((alpha + T) / (alpha + T + t))**(r + x) 2F1(r + x, b + x; a + b + x - 1;
        t / (alpha + T + t))] (Fader, Hardie & Lee 2005, eq. 10); MBG/NBD: b + x + 1 and
        a + b + x in place of b + x and a + b + x - 1 (Batislam et al. 2007). ``t`` is in the
        data's time unit and may be a scalar or one value per customer.
        """
        x, tx, tt, _ = _validate_rft(frequency, recency, T)
        horizon = np.broadcast_to(_as_array(t, "t"), x.shape).astype(np.float64)
        if np.any(horizon < 0) or not np.all(np.isfinite(horizon)):
            raise CustvalError("the horizon t must be finite and non-negative", column="t")
        return expit(-self._log_odds_dead(x, tx, tt)) * self._bracket(horizon, x, tt)

    def _purchases_if_alive(self, t: float | Array, x: Array, tt: Array) -> Array:
        """E[Y(t) | alive at T, x, T]: the conditional expectation without P(alive); ``t`` a
        scalar or one horizon per row.

        It does not depend on t_x, so CLV evaluates it once per distinct (x, T).
        """
        return self._bracket(np.broadcast_to(np.asarray(t, dtype=np.float64), x.shape), x, tt)

    def expected_purchases_new_customer(self, t: ArrayLike) -> Array:
        """Expected repeat purchases of a new customer in ``t`` time units after the first.

        BG/NBD: E[X(t)] = (a + b - 1) / (a - 1) [1 - (alpha / (alpha + t))**r
        2F1(r, b; a + b - 1; t / (alpha + t))] (Fader, Hardie & Lee 2005, eq. 9); MBG/NBD:
        b / (a - 1) [1 - (alpha / (alpha + t))**r 2F1(r, b + 1; a + b; t / (alpha + t))].
        """
        horizon = _as_array(t, "t")
        if np.any(horizon < 0) or not np.all(np.isfinite(horizon)):
            raise CustvalError("the horizon t must be finite and non-negative", column="t")
        zero = np.zeros_like(horizon)
        out = self._bracket(horizon, zero, zero)
        if self._x0:
            # MBG/NBD: the new customer may have left at time 0: factor b / (a + b)
            _, _, a, b = self._theta()
            out = out * b / (a + b)
        return out

    def probability_of_purchases(self, t: ArrayLike, n: ArrayLike) -> Array:
        """P(X(t) = n): a new customer makes n repeat purchases in ``t`` time units.

        BG/NBD: Fader, Hardie & Lee (2005), eq. 8; MBG/NBD: the same with the dropout at time 0
        (Batislam et al. 2007). Broadcasts over ``t`` and ``n``; see
        :mod:`custval.models.purchase_counts`.
        """
        self._theta()  # a clear error when not fitted
        return bgnbd_probability_of_purchases(self.params_, t, n, modified=bool(self._x0))


class ModifiedBetaGeo(BetaGeo):
    """MBG/NBD model (Batislam, Denizel & Filiztekin 2007).

    Same parameters as :class:`BetaGeo`; the dropout chance also applies at time 0, so a customer
    with no repeat purchase may already be inactive.
    """

    _x0 = 1.0


# --------------------------------------------------------------------------------------------
# Pareto/NBD
# --------------------------------------------------------------------------------------------


class ParetoNBD(_CountModel):
    """Pareto/NBD model (Schmittlein, Morrison & Colombo 1987; Fader & Hardie 2005 note).

    Parameters learned: ``r`` and ``alpha`` (gamma shape and rate of the purchase rate),
    ``s`` and ``beta`` (gamma shape and rate of the dropout rate); alpha and beta are in the data's
    time unit. The gradient differentiates the likelihood's integral under the integral sign.

    Fitting and P(alive) use :mod:`custval.models.pnbd_likelihood`, which evaluates the
    integral as a difference of tails per distinct (x, t) pair (about 100 times faster, to
    rounding); the per-row formulas here are the reference it is tested against.
    """

    _param_names = ("r", "alpha", "s", "beta")

    def _prepare(self, data: tuple[Array, ...], w: Array) -> Any:
        return pnbd_likelihood.prepare(*data, w)

    def _value_and_grad(self, theta: Array, state: Any, w: Array) -> tuple[float, Array]:
        if not isinstance(state, pnbd_likelihood.PNBDState):  # raw data (tests, direct calls)
            return super()._value_and_grad(theta, state, w)
        return pnbd_likelihood.value_and_grad(theta, state, w)

    def _log_terms(self, theta: Array, data: tuple[Array, ...]) -> tuple[Array, Array, Array]:
        r, alpha, s, beta = (float(v) for v in theta)
        x, tx, t = data
        head = gammaln(r + x) - gammaln(r) + r * math.log(alpha) + s * math.log(beta)
        alive = -(r + x) * np.log(alpha + t) - s * np.log(beta + t)
        died = math.log(s) + log_tail_integral_direct(r, alpha, s, beta, x, tx, t)[0]
        return head, alive, died

    def _loglik_rows(self, theta: Array, data: tuple[Array, ...]) -> Array:
        # L = Gamma(r+x) alpha^r beta^s / Gamma(r) [(alpha+T)^-(r+x) (beta+T)^-s + s D]
        head, alive, died = self._log_terms(theta, data)
        return head + np.logaddexp(alive, died)

    def _grad_rows(self, theta: Array, data: tuple[Array, ...]) -> Array:
        r, alpha, s, beta = (float(v) for v in theta)
        x, tx, t = data
        log_d, d_log_d = log_tail_integral_direct(r, alpha, s, beta, x, tx, t, grad=True)
        assert d_log_d is not None
        alive = -(r + x) * np.log(alpha + t) - s * np.log(beta + t)
        died = math.log(s) + log_d
        lse = np.logaddexp(alive, died)
        wa = np.exp(alive - lse)  # posterior weight of "alive at T"
        wd = np.exp(died - lse)  # of "died between t_x and T"
        return np.vstack(
            [
                digamma(r + x)
                - digamma(r)
                + math.log(alpha)
                - wa * np.log(alpha + t)
                + wd * d_log_d[0],
                r / alpha - wa * (r + x) / (alpha + t) + wd * d_log_d[1],
                math.log(beta) - wa * np.log(beta + t) + wd * (1 / s + d_log_d[2]),
                s / beta - wa * s / (beta + t) + wd * d_log_d[3],
            ]
        )

    def probability_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Array:
        """P(alive at T | x, t_x, T) = 1 / (1 + s D (alpha+T)^(r+x) (beta+T)^s).

        D is the integral from t_x to T of (alpha+u)^-(r+x) (beta+u)^-(s+1) du (Fader & Hardie
        2005, eq. 18 with their A0 written as s D), evaluated by
        :mod:`custval.models.pnbd_likelihood`.
        """
        x, tx, t, _ = _validate_rft(frequency, recency, T)
        alive, died = pnbd_likelihood.log_terms(self._theta(), x, tx, t)
        return expit(alive - died)

    def conditional_expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Array:
        """E[Y(t) | x, t_x, T] = P(alive) (r + x)(beta + T) / ((alpha + T)(s - 1))
        [1 - ((beta + T) / (beta + T + t))**(s - 1)] (Fader & Hardie 2005 note, eq. 22).

        ``t`` is in the data's time unit. At s = 1 the bracket's limit (beta + T) log(1 + t /
        (beta + T)) is used.
        """
        x, tx, tt, _ = _validate_rft(frequency, recency, T)
        horizon = np.broadcast_to(_as_array(t, "t"), x.shape).astype(np.float64)
        if np.any(horizon < 0) or not np.all(np.isfinite(horizon)):
            raise CustvalError("the horizon t must be finite and non-negative", column="t")
        return self.probability_alive(x, tx, tt) * self._purchases_if_alive(horizon, x, tt)

    def _purchases_if_alive(self, t: float | Array, x: Array, tt: Array) -> Array:
        """E[Y(t) | alive at T, x, T] (no t_x: CLV evaluates it once per distinct (x, T));
        ``t`` a scalar or one horizon per row."""
        r, alpha, s, beta = self._theta()
        log_ratio = np.log1p(t / (beta + tt))
        sm1 = s - 1
        if abs(sm1) < 1e-10:
            bracket = (beta + tt) * log_ratio
        else:
            bracket = (beta + tt) * -np.expm1(-sm1 * log_ratio) / sm1
        return (r + x) / (alpha + tt) * bracket

    def expected_purchases_new_customer(self, t: ArrayLike) -> Array:
        """E[X(t)] = r beta / (alpha (s - 1)) [1 - (beta / (beta + t))**(s - 1)]
        (Fader & Hardie 2005 note, eq. 17); ``t`` in the data's time unit."""
        horizon = _as_array(t, "t")
        if np.any(horizon < 0) or not np.all(np.isfinite(horizon)):
            raise CustvalError("the horizon t must be finite and non-negative", column="t")
        r, alpha, s, beta = self._theta()
        log_ratio = np.log1p(horizon / beta)
        if abs(s - 1) < 1e-10:
            return r * beta / alpha * log_ratio
        return r * beta / (alpha * (s - 1)) * -np.expm1(-(s - 1) * log_ratio)

    def probability_of_purchases(self, t: ArrayLike, n: ArrayLike) -> Array:
        """P(X(t) = n): a new customer makes n repeat purchases in ``t`` time units.

        Pareto/NBD (Fader, Hardie & Lee 2005 note on P(X(t) = x)), by an integral over the
        dropout time; broadcasts over ``t`` and ``n`` (:mod:`custval.models.purchase_counts`).
        """
        self._theta()  # a clear error when not fitted
        return pnbd_probability_of_purchases(self.params_, t, n)


# --------------------------------------------------------------------------------------------
# Gamma-Gamma
# --------------------------------------------------------------------------------------------


class GammaGamma(LikelihoodModel):
    """Gamma-Gamma spend model (Fader, Hardie & Lee 2005, JMR; Colombo & Jiang 1999).

    Parameters learned: ``p`` (shape of a transaction's value), ``q`` and ``gamma`` (shape and
    rate of the customer's scale nu; gamma in currency). Fit on repeat buyers only: ``frequency``
    (x > 0, number of repeat transactions) and ``monetary_value`` (their mean value, currency).
    The spend model assumes spend is independent of the purchase process.

    Example
    -------
    >>> gg = GammaGamma().fit([1, 3, 2], [20.0, 35.5, 12.0])  # doctest: +SKIP
    >>> gg.conditional_expected_average_spend([0, 3], [0.0, 35.5])  # doctest: +SKIP
    """

    _param_names = ("p", "q", "gamma")

    def fit(
        self, frequency: ArrayLike, monetary_value: ArrayLike, weights: ArrayLike | None = None
    ) -> Self:
        """Fit on customers with frequency > 0 (others are ignored).

        Parameters
        ----------
        frequency:
            Number of repeat transactions per customer.
        monetary_value:
            Mean value of those transactions (currency); must be positive where frequency > 0.
        weights:
            Optional number of customers each row stands for.
        """
        x, m, w = self._validate(frequency, monetary_value, weights)
        keep = (x > 0) & (w > 0)
        if not keep.any():
            raise FitError(
                "there are no repeat buyers (frequency > 0) to fit the Gamma-Gamma model on",
                column="frequency",
                hint="The spend model needs customers with at least one repeat purchase",
            )
        bad = keep & (m <= 0)
        _check(
            bad,
            "repeat purchases but a non-positive monetary value",
            "monetary_value",
            "drop returns-only customers or use gross spend",
            frequency=x,
            monetary_value=m,
        )
        (x, m), w = compress_rows(x[keep], m[keep], weights=w[keep])
        return self._fit((x, m), w)

    @staticmethod
    def _validate(
        frequency: ArrayLike, monetary_value: ArrayLike, weights: ArrayLike | None = None
    ) -> tuple[Array, Array, Array]:
        x = _as_array(frequency, "frequency")
        m = _as_array(monetary_value, "monetary_value")
        if x.size != m.size:
            raise CustvalError(
                f"frequency and monetary_value have different lengths ({x.size}, {m.size})"
            )
        if x.size == 0:
            raise CustvalError("the customer summary is empty", hint="Pass at least one customer")
        w = np.ones_like(x) if weights is None else _as_array(weights, "weights")
        if w.size != x.size:
            raise CustvalError(f"weights has length {w.size}, expected {x.size}", column="weights")
        cols = {"frequency": x, "monetary_value": m}
        for name, arr in (*cols.items(), ("weights", w)):
            _check(~np.isfinite(arr), "a missing or infinite value", name, "fill or drop", **cols)
            _check(arr < 0, "a negative value", name, "values are counts and amounts", **cols)
        _check(x != np.round(x), "a non-integer frequency", "frequency", "use counts", **cols)
        return x, m, w

    def _init_theta(self, data: tuple[Array, ...], w: Array) -> Array:
        m = data[1]
        return np.array([1.0, 2.0, max(float(w @ m / w.sum()), 1e-6)])

    def _prepare(self, data: tuple[Array, ...], w: Array) -> dict[str, Any]:
        """What the likelihood needs that does not change with the parameters: the few
        distinct frequencies, and the weighted sums of log m and log x. Only log(gamma + m x)
        and 1 / (gamma + m x) are left to compute per row and evaluation (rows are rarely
        alike: m is an amount)."""
        x, m = data
        ux, inv = np.unique(x, return_inverse=True)
        wx = w * x
        return {
            "w": w,
            "wx": wx,
            "mx": m * x,
            "ux": ux,
            "w_u": np.bincount(inv, weights=w, minlength=ux.size),
            "wx_u": np.bincount(inv, weights=wx, minlength=ux.size),
            "w_log_m": _dot(w, np.log(m)),
            "wx_log_m": _dot(wx, np.log(m)),
            "wx_log_x": _dot(wx, np.log(x)),
        }

    def _value_and_grad(self, theta: Array, state: Any, w: Array) -> tuple[float, Array]:
        """The sums of :meth:`_loglik_rows` and :meth:`_grad_rows`, the terms in x alone
        evaluated once per distinct frequency."""
        p, q, g = theta
        s = state
        pu = p * s["ux"]
        log_gmx = np.log(g + s["mx"])
        inv_gmx = 1.0 / (g + s["mx"])
        w_total = float(s["w_u"].sum())
        sum_l, sum_xl = _dot(s["w"], log_gmx), _dot(s["wx"], log_gmx)
        ll = (
            _dot(gammaln(pu + q) - gammaln(pu), s["w_u"])
            + w_total * (q * math.log(g) - gammaln(q))
            + p * (s["wx_log_m"] + s["wx_log_x"] - sum_xl)
            - s["w_log_m"]
            - q * sum_l
        )
        psi_u = digamma(pu + q)
        d_p = _dot(psi_u - digamma(pu), s["wx_u"]) + s["wx_log_m"] + s["wx_log_x"] - sum_xl
        d_q = _dot(psi_u, s["w_u"]) - w_total * (digamma(q) - math.log(g)) - sum_l
        d_g = w_total * q / g - p * _dot(s["wx"], inv_gmx) - q * _dot(s["w"], inv_gmx)
        return float(ll), np.array([d_p, d_q, d_g])

    def _loglik_rows(self, theta: Array, data: tuple[Array, ...]) -> Array:
        # mean of x Gamma(p, nu) values is Gamma(p x, nu x); nu ~ Gamma(q, gamma)
        p, q, g = theta
        x, m = data
        px = p * x
        return (
            gammaln(px + q)
            - gammaln(px)
            - gammaln(q)
            + q * np.log(g)
            + (px - 1) * np.log(m)
            + px * np.log(x)
            - (px + q) * np.log(g + m * x)
        )

    def _grad_rows(self, theta: Array, data: tuple[Array, ...]) -> Array:
        p, q, g = theta
        x, m = data
        px = p * x
        log_gmx = np.log(g + m * x)
        psi = digamma(px + q)
        d_p = x * (psi - digamma(px) + np.log(m) + np.log(x) - log_gmx)
        d_q = psi - digamma(q) + np.log(g) - log_gmx
        d_g = q / g - (px + q) / (g + m * x)
        return np.vstack([d_p, d_q, d_g])

    def conditional_expected_average_spend(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> Array:
        """E[M | x, m_x] = (p (gamma + x m_x)) / (p x + q - 1), currency per transaction.

        Fader, Hardie & Lee (2005, JMR, eq. 5): a weighted mean of the population mean
        p gamma / (q - 1) and the customer's own mean m_x. For x = 0 it is the population mean.
        Requires q > 1 (the population mean spend is finite).
        """
        x, m, _ = self._validate(frequency, monetary_value)
        p, q, g = self._theta()
        if q <= 1:
            # the data do not bound the mean spend: no finite prediction to give
            raise FitError(
                f"the fitted q = {q:.4g} <= 1, so the mean spend is infinite",
                hint="The spend data are too heavy-tailed for the Gamma-Gamma model",
            )
        return p * (g + x * m) / (p * x + q - 1)
