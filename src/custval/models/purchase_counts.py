"""The distribution of the number of repeat purchases of a new customer, P(X(t) = n).

X(t) is the number of repeat purchases a randomly chosen customer makes in the ``t`` time units
after her first purchase. The functions take a parameter dict (a fitted model's ``params_``), so
they work on any fitted :class:`~custval.models.btyd.BetaGeo`,
:class:`~custval.models.btyd.ModifiedBetaGeo` or :class:`~custval.models.btyd.ParetoNBD`, and
broadcast over arrays of ``t`` and ``n``. Everything is evaluated in log space, so ``n`` in the
thousands neither overflows nor warns (probabilities below about 1e-308 are returned as 0).

Both models build on the NBD: with lambda ~ Gamma(r, alpha) and Poisson purchases while active,

    NBD_t(j) = Gamma(r + j) / (Gamma(r) j!) (alpha / (alpha + t))**r (t / (alpha + t))**j,

the probability of j purchases in a window of length t, and its tail
P(N(t) >= x) = 1 - sum_{j<x} NBD_t(j) = I_q(x, r), the regularised incomplete beta function at
q = t / (alpha + t), which is evaluated directly (no difference of nearly equal numbers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from scipy.special import betainc, betaln, gammaln, logsumexp, xlogy

from custval.errors import CustvalError

__all__ = ["bgnbd_probability_of_purchases", "pnbd_probability_of_purchases"]

Array = npt.NDArray[np.float64]


def _params(params: Mapping[str, float], names: tuple[str, ...]) -> tuple[float, ...]:
    missing = [k for k in names if k not in params]
    if missing:
        raise CustvalError(
            f"the parameters lack {', '.join(missing)} (got {', '.join(map(str, params))})",
            hint=f"Pass a fitted model's params_ with {', '.join(names)}",
        )
    values = tuple(float(params[k]) for k in names)
    bad = [k for k, v in zip(names, values, strict=True) if not (math.isfinite(v) and v > 0)]
    if bad:
        raise CustvalError(
            f"the parameters {', '.join(bad)} must be positive and finite",
            hint="Use the params_ of a fitted model",
        )
    return values


def _t_and_n(t: npt.ArrayLike, n: npt.ArrayLike) -> tuple[Array, Array]:
    """Broadcast and check the horizon t (>= 0) and the purchase count n (integer >= 0)."""
    try:
        tt = np.asarray(t, dtype=np.float64)
        nn = np.asarray(n, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CustvalError(f"t and n must be numeric ({exc})") from exc
    if not np.all(np.isfinite(tt)) or np.any(tt < 0):
        raise CustvalError("the horizon t must be finite and non-negative", column="t")
    if not np.all(np.isfinite(nn)) or np.any(nn < 0) or np.any(nn != np.round(nn)):
        raise CustvalError("the number of purchases n must be a non-negative integer", column="n")
    try:
        tt, nn = np.broadcast_arrays(tt, nn)
    except ValueError as exc:
        raise CustvalError(f"t and n cannot be broadcast together ({exc})") from exc
    return tt.astype(np.float64), nn.astype(np.float64)


def _log_nbd(r: float, alpha: float, t: Array, x: Array) -> Array:
    """log NBD_t(x); t = 0 gives log 1 for x = 0 and -inf otherwise."""
    with np.errstate(divide="ignore"):
        return (
            gammaln(r + x)
            - gammaln(r)
            - gammaln(x + 1)
            + r * (math.log(alpha) - np.log(alpha + t))
            + xlogy(x, t)
            - x * np.log(alpha + t)
        )


def _log_nbd_tail(r: float, alpha: float, t: Array, x: Array) -> Array:
    """log P(N(t) >= x) = log I_q(x, r), q = t / (alpha + t); 0 for x = 0."""
    q = t / (alpha + t)
    with np.errstate(divide="ignore"):
        tail = np.log(betainc(np.maximum(x, 1.0), r, q))
    return np.where(x > 0, tail, 0.0)


def bgnbd_probability_of_purchases(
    params: Mapping[str, float],
    t: npt.ArrayLike,
    n: npt.ArrayLike,
    *,
    modified: bool = False,
) -> Array:
    """P(X(t) = n) under the BG/NBD (or, with ``modified``, the MBG/NBD) model.

    With K the number of repeat purchases after which the customer drops out (independent of the
    purchase times) and N(t) ~ NBD the purchases she would make if she stayed,
    X(t) = min(N(t), K), so P(X(t) = x) = NBD_t(x) P(K > x) + P(N(t) >= x) P(K = x).

    BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way", eq. 8): dropout
    after each repeat purchase with probability p ~ Beta(a, b), so K is geometric on 1, 2, ... and

        P(X(t) = x) = B(a, b + x) / B(a, b) NBD_t(x)
                      + [x > 0] B(a + 1, b + x - 1) / B(a, b) [1 - sum_{j<x} NBD_t(j)].

    MBG/NBD (Batislam, Denizel & Filiztekin 2007): the customer may also drop out at time 0, so K
    is geometric on 0, 1, ... and

        P(X(t) = x) = B(a, b + x + 1) / B(a, b) NBD_t(x)
                      + B(a + 1, b + x) / B(a, b) [1 - sum_{j<x} NBD_t(j)].

    Parameters
    ----------
    params:
        ``r``, ``alpha``, ``a``, ``b`` (e.g. a fitted ``BetaGeo().params_``).
    t:
        Time since the first purchase, in the unit ``alpha`` was fitted in; array or scalar.
    n:
        Number of repeat purchases (non-negative integers); broadcast against ``t``.
    modified:
        Use the MBG/NBD instead of the BG/NBD.

    Returns
    -------
    Array of probabilities with the broadcast shape of ``t`` and ``n``.

    Example
    -------
    >>> p = {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.4}
    >>> probs = bgnbd_probability_of_purchases(p, 39.0, np.arange(200))
    >>> round(float(probs.sum()), 10)
    1.0
    """
    r, alpha, a, b = _params(params, ("r", "alpha", "a", "b"))
    t_arr, x = _t_and_n(t, n)
    s = 1.0 if modified else 0.0
    log_b = betaln(a, b)
    stay = betaln(a, b + x + s) - log_b + _log_nbd(r, alpha, t_arr, x)
    has_drop = (x + s) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        drop = np.where(
            has_drop,
            betaln(a + 1, np.where(has_drop, b + x + s - 1, b)) - log_b,
            -np.inf,
        ) + _log_nbd_tail(r, alpha, t_arr, x)
    return np.exp(np.logaddexp(stay, drop))


# --------------------------------------------------------------------------------------------
# Pareto/NBD
# --------------------------------------------------------------------------------------------

# The integral over the dropout time uses Gauss-Legendre panels: one near the end of the window,
# geometrically graded panels (uniform in log distance) and then uniform panels.
_NODES = 10
_GL_X, _GL_W = np.polynomial.legendre.leggauss(_NODES)
_GEOMETRIC_PANELS = 20
# uniform panels span at most this many multiples of 1 / (x + 1), the decay length of e**-(x+1)u
_LINEAR_WIDTH = 3.0
_MIN_LINEAR_PANELS = 16
_CHUNK = 2048


def _panel_nodes(lo: Array, hi: Array, panels: int, geometric: bool) -> tuple[Array, Array]:
    """Nodes (points x nodes) and log weights of ``panels`` GL panels on [lo, hi] per point.

    With ``geometric`` the panels are uniform in log u (lo > 0), the weights include du/dv = u.
    """
    a, b = (np.log(lo), np.log(hi)) if geometric else (lo, hi)
    width = (b - a) / panels
    k = np.arange(panels)[None, :, None]
    v = a[:, None, None] + width[:, None, None] * (k + 0.5 * (_GL_X[None, None, :] + 1.0))
    v = v.reshape(lo.size, -1)
    with np.errstate(divide="ignore"):
        log_w = np.log(np.tile(_GL_W, panels) / 2)[None, :] + np.log(width)[:, None]
    if geometric:
        return np.exp(v), log_w + v
    return v, log_w


def _log_dropout_integral(
    r: float, alpha: float, s: float, beta: float, t: Array, x: Array
) -> Array:
    """log I = log integral_0^t tau**x (alpha + tau)**-(r + x) (beta + tau)**-(s + 1) dtau.

    In the variable y = log(tau / (alpha + tau)) the integrand is exp(g(y)) with
    g(y) = (x + 1) y + (1 - r) log alpha + (r + s - 1) log(1 - e**y)
    - (s + 1) log(beta (1 - e**y) + alpha e**y), on y < y_t = log(t / (alpha + t)). It decays like
    e**((x + 1) y) times a factor whose logarithm varies by at most
    C = |r + s - 1| log(1 + t / alpha) + (s + 1) |log(alpha / beta)|, so the distance u = y_t - y
    is cut at (50 + C) / (x + 1). The only singularity near the range is y = 0, at distance
    delta = log(1 + alpha / t) beyond its end: one panel covers u in [0, min(delta, 1 / (x + 1))],
    panels uniform in log u reach 4 / (x + 1), and panels of width at most 3 / (x + 1) the rest.
    """
    y_t = np.log(t) - np.log(alpha + t)
    delta = np.log1p(alpha / t)
    spread = abs(r + s - 1) * np.log1p(t / alpha) + (s + 1) * abs(math.log(alpha / beta))
    u_max = (50.0 + spread) / (x + 1)
    u_a = np.minimum(np.minimum(delta, 1.0 / (x + 1)), u_max)
    u_b = np.maximum(u_a, np.minimum(4.0 / (x + 1), u_max))
    linear_panels = max(
        _MIN_LINEAR_PANELS, math.ceil(float(np.max((50.0 + spread) / _LINEAR_WIDTH)))
    )
    zero = np.zeros_like(u_a)
    parts = [
        _panel_nodes(zero, u_a, 1, geometric=False),
        _panel_nodes(u_a, u_b, _GEOMETRIC_PANELS, geometric=True),
        _panel_nodes(u_b, u_max, linear_panels, geometric=False),
    ]
    u = np.concatenate([p[0] for p in parts], axis=1)
    log_w = np.concatenate([p[1] for p in parts], axis=1)
    y = y_t[:, None] - u
    log_1m = np.log(-np.expm1(y))  # log(1 - e**y), accurate for y near 0
    g = (
        (x + 1)[:, None] * y
        + (1 - r) * math.log(alpha)
        + (r + s - 1) * log_1m
        - (s + 1) * np.logaddexp(math.log(beta) + log_1m, math.log(alpha) + y)
    )
    return logsumexp(g + log_w, axis=1)


def pnbd_probability_of_purchases(
    params: Mapping[str, float], t: npt.ArrayLike, n: npt.ArrayLike
) -> Array:
    """P(X(t) = n) under the Pareto/NBD model.

    Fader, Hardie & Lee (2005), "Deriving an expression for P(X(t) = x) under the Pareto/NBD
    model": conditioning on the exponential dropout time tau (rate mu) and averaging over
    lambda ~ Gamma(r, alpha) and mu ~ Gamma(s, beta),

        P(X(t) = x) = (beta / (beta + t))**s NBD_t(x)
                      + integral_0^t s beta**s / (beta + tau)**(s + 1) NBD_tau(x) dtau
                    = (beta / (beta + t))**s NBD_t(x)
                      + s beta**s alpha**r Gamma(r + x) / (Gamma(r) x!) I,

    I = integral_0^t tau**x (alpha + tau)**-(r + x) (beta + tau)**-(s + 1) dtau. The note writes
    I with Gaussian hypergeometric functions, whose difference loses all digits for large x;
    here I is evaluated in log space by Gauss-Legendre quadrature (relative accuracy ~1e-12).

    Parameters
    ----------
    params:
        ``r``, ``alpha``, ``s``, ``beta`` (e.g. a fitted ``ParetoNBD().params_``).
    t, n:
        Horizon (in the unit of ``alpha`` and ``beta``) and number of repeat purchases; they are
        broadcast together.

    Returns
    -------
    Array of probabilities with the broadcast shape of ``t`` and ``n``.

    Example
    -------
    >>> p = {"r": 0.55, "alpha": 10.6, "s": 0.61, "beta": 11.7}
    >>> round(float(pnbd_probability_of_purchases(p, 39.0, np.arange(300)).sum()), 10)
    1.0
    """
    r, alpha, s, beta = _params(params, ("r", "alpha", "s", "beta"))
    t_arr, x = _t_and_n(t, n)
    shape = t_arr.shape
    tf, xf = t_arr.ravel(), x.ravel()
    with np.errstate(divide="ignore"):
        alive = s * (math.log(beta) - np.log(beta + tf)) + _log_nbd(r, alpha, tf, xf)
    died = np.full(tf.shape, -np.inf)
    pos = np.flatnonzero(tf > 0)
    head = math.log(s) + s * math.log(beta) + r * math.log(alpha) - gammaln(r)
    for start in range(0, pos.size, _CHUNK):  # blocks bound the memory of the node arrays
        idx = pos[start : start + _CHUNK]
        xi = xf[idx]
        died[idx] = (
            head
            + gammaln(r + xi)
            - gammaln(xi + 1)
            + _log_dropout_integral(r, alpha, s, beta, tf[idx], xi)
        )
    return np.exp(np.logaddexp(alive, died)).reshape(shape)
