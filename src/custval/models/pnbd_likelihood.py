"""Fast exact Pareto/NBD log-likelihood and gradient on compressed (x, t_x, T) rows.

The Pareto/NBD likelihood of a customer with x repeat purchases, the last at t_x, observed
until T (Fader & Hardie 2005, "A note on deriving the Pareto/NBD model and related
expressions", written as an integral over the dropout time u) is

    L = Gamma(r + x) alpha^r beta^s / Gamma(r) [(alpha + T)^-(r+x) (beta + T)^-s + s D],
    D = integral from t_x to T of f_x(u) du,  f_x(u) = (alpha + u)^-(r+x) (beta + u)^-(s+1),

evaluated as head + logaddexp(alive, log s + log D).  ``ParetoNBD`` in
:mod:`custval.models.btyd` evaluates D for every distinct (x, t_x, T) row with a 256-node rule
(~55 us per row and evaluation).  This module gives the same numbers, with the same analytic
gradient, about 100 times faster; ``prepare`` and ``value_and_grad`` plug into
``LikelihoodModel._prepare`` / ``_value_and_grad``.

Tails.  D is the difference of two tails,

    D = I(x, t_x) - I(x, T),   I(x, u) = integral from u to infinity of f_x(v) dv,

and I depends on pairs (x, u) only, of which there are far fewer than rows (100k simulated
customers: 39k distinct rows, 8k distinct pairs; 1M: 277k rows, 15k pairs), because u takes
few values (whole days) and x is small.  Then

    log D = log I(t_x) + log(-expm1(log I(T) - log I(t_x))),
    d log D = (d log I(t_x) - rho d log I(T)) / (1 - rho),   rho = I(T) / I(t_x).

Cancellation.  When 1 - rho < ``CANCEL_THRESHOLD`` (1e-4: T - t_x short against the
integrand's scale) the difference would lose digits (I is accurate to ~1e-15, so D keeps
~1e-11 at the threshold).  Those rows are integrated directly over [t_x, T]: by 8-node
Gauss-Legendre (:func:`_log_d_short`) when T - t_x is below ``SHORT_GAP`` of both factors'
scales, where that is exact to rounding; otherwise (only at extreme parameters) by
:func:`log_tail_integral_direct`, ~55 us per row.  Rows with T = t_x have
D = 0 (log D = -inf: only the "alive" term); T = 0 rows are such rows.

Quadrature of a tail.  With a = alpha + u, b = beta + u, p = r + x, q = s + 1,
m = p + q - 1 = r + s + x > 0 and w = v - u,

    I = integral_0^inf (a + w)^-p (b + w)^-q dw,

a smooth function of w that is flat below l = min(a / max(p, 1), b / q) (where the first
factor starts to fall) and falls like w^-(m+1) above max(a, b).  The exp-sinh substitution
w = l exp((pi/2) sinh t) makes the integrand in t fall double exponentially both ways, and the
trapezoid rule with step ``STEP`` = 0.11 integrates it to ~1e-15 relative accuracy (checked
against a grid with step 0.04 over a wider range for random parameters and x up to 5,000, u
up to 500).  The range in t is [``T_LO``, t_hi] with t_hi from
log(w / l) >= log(max(a, b) / l) + (``TAIL_LOG`` + log(max(a, b) / l)) / m (the neglected
tail is below e^-36 of the integral).  Two refinements keep that accuracy everywhere: when the
other factor's scale lies far above l (alpha and beta far apart) the step shrinks by the grid's
stretch there; and for p > 50, whose integrand is analytic only in a strip that narrows away
from its peak, the step is 0.75 times smaller.  Everything is in log space: log I is
top + log(sum exp(log integrand - top)), so thousands of purchases or u in the hundreds
neither overflow nor underflow, and log(a + w) = log a + log1p(w / a).

Speed.  The pairs are sorted by the step and range they need and processed in chunks of
``CHUNK`` pairs on a grid per chunk (large-x pairs need a short range; chunks keep the
temporaries in cache: together three times as fast as one grid for all).  On each pair one of w / a,
w / b is a function of x only (w / a = exp((pi/2) sinh t) / max(p, 1)) or the same for all
(w / b = exp(...) / q), so its log1p is computed once per distinct value: one log, one exp and
a few multiplications per node.  Inner products avoid BLAS (see :func:`_dot`).

Gradient.  The limits do not depend on the parameters, so (differentiating under the integral
sign) d log I = E[d log f] under the normalised integrand on the same nodes:
d/dr = -E[log(a + w)], d/dalpha = -p E[1/(a + w)], d/ds = -E[log(b + w)],
d/dbeta = -q E[1/(b + w)].  The row weights times d log D are summed per pair before they meet
the 4 x pairs gradients.  The rest of the likelihood is differentiated in closed form with the
posterior weights of the "alive" and "died" terms, as in ``ParetoNBD._grad_rows``; functions of
x alone (gammaln, digamma) are evaluated once per distinct x, functions of T once per distinct
T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import digamma, gammaln

__all__ = ["PNBDState", "log_likelihood_rows", "prepare", "value_and_grad"]

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

# trapezoid step in the exp-sinh variable t; lower end of the t grid
STEP = 0.11
T_LO = -3.8
# the step shrinks by STEP_STRETCH / cosh(t*) when a second scale sits at t* (see _log_tails)
STEP_STRETCH = 1.5
# pairs per chunk of the quadrature
CHUNK = 1024
# log of the neglected tail fraction at the upper end of the t grid
TAIL_LOG = 36.0
# rows whose D = I(t_x) - I(T) keeps less than this fraction of I(t_x) use direct quadrature
CANCEL_THRESHOLD = 1e-4
# ... by 8-node Gauss-Legendre on [t_x, T] when T - t_x is below this fraction of both scales
SHORT_GAP = 0.1
# largest (pi/2) sinh t for which (l/a) exp(...) cannot overflow; beyond it use logaddexp
_S_MAX = 700.0
_HALF_PI = 0.5 * math.pi


@dataclass(frozen=True)
class PNBDState:
    """Parameter-free precomputation for :func:`value_and_grad` (see :func:`prepare`)."""

    x: Array  # rows
    tx: Array
    t: Array
    ux: Array  # distinct x and the total weight of each
    wx: Array
    ut: Array  # distinct T and row -> distinct T
    it: IntArray
    pair_x: Array  # distinct (x, u) pairs needed by the tails
    pair_u: Array
    pos: IntArray  # rows with T > t_x (D > 0)
    p_tx: IntArray  # for those rows: pair index of (x, t_x) and of (x, T)
    p_t: IntArray


def prepare(x: Array, tx: Array, T: Array, w: Array) -> PNBDState:
    """Indices that do not depend on the parameters: distinct x, distinct T, (x, u) pairs.

    ``x, tx, T`` are the distinct rows (float arrays), ``w`` their weights (not stored; pass it
    again to :func:`value_and_grad`).
    """
    x = np.asarray(x, dtype=np.float64)
    tx = np.asarray(tx, dtype=np.float64)
    t = np.asarray(T, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    ux, ix = np.unique(x, return_inverse=True)
    ut, it = np.unique(t, return_inverse=True)
    pos = np.flatnonzero(t > tx)
    n_pos = pos.size
    xs = np.concatenate([x[pos], x[pos]])
    us = np.concatenate([tx[pos], t[pos]])
    uu, iu = np.unique(us, return_inverse=True)
    jx = np.searchsorted(ux, xs)
    key = jx.astype(np.int64) * uu.size + iu
    ukey, inv = np.unique(key, return_inverse=True)
    return PNBDState(
        x=x,
        tx=tx,
        t=t,
        ux=ux,
        wx=np.bincount(ix, weights=w, minlength=ux.size).astype(np.float64),
        ut=ut,
        it=it.astype(np.intp),
        pair_x=ux[ukey // uu.size],
        pair_u=uu[ukey % uu.size],
        pos=pos.astype(np.intp),
        p_tx=inv[:n_pos].astype(np.intp),
        p_t=inv[n_pos:].astype(np.intp),
    )


def _log1p_recip(z: Array) -> tuple[Array, Array]:
    """log1p(z) and 1 / (1 + z) for z >= 0, overwriting z.

    np.log1p is three times as slow as np.log; log(y) with y = 1 + z, corrected by the rounding
    of y (log1p(z) = log(y) - ((y - 1) - z) / y to first order), is as accurate and we need
    1 / y anyway.
    """
    y = z + 1.0
    err = y - 1.0
    err -= z  # rounding error of y
    inv = np.reciprocal(y, out=z)
    log_y = np.log(y, out=y)
    err *= inv
    log_y -= err
    return log_y, inv


def _integrate(
    la: Array, inv_a: Array, lb: Array, inv_b: Array, p: Array, q: float, log_jac: Array
) -> tuple[Array, Array]:
    """log of sum_j exp(log_jac_j - p la_j - q lb_j) per pair, and the four moments
    E[la], E[a/(a+w)], E[lb], E[b/(b+w)] under the normalised summand."""
    lf = np.multiply(la, -p[:, None])
    lf -= q * lb
    lf += log_jac[None, :]
    top = lf.max(axis=1)
    lf -= top[:, None]
    e = np.exp(lf, out=lf)
    tot = e.sum(axis=1)
    moments = np.vstack(
        [
            np.einsum("ij,ij->i", e, la),
            np.einsum("ij,ij->i", e, inv_a),
            np.einsum("ij,ij->i", e, lb),
            np.einsum("ij,ij->i", e, inv_b),
        ]
    )
    return top + np.log(tot), moments / tot


def _tail_chunk(
    log_a: Array,
    log_b: Array,
    p: Array,
    q: float,
    log_l: Array,
    first_a: npt.NDArray[np.bool_],
    t_hi: float,
    h: float,
) -> tuple[Array, Array]:
    """log I and the four gradient expectations for one chunk of pairs on one t grid.

    On a pair whose scale l is a's (``first_a``), w / a = exp((pi/2) sinh t) / max(p, 1) on
    the grid depends on x only; on the others w / b = exp((pi/2) sinh t) / q is the same for all.
    That factor's log1p and reciprocal are computed once per distinct value and gathered, which
    halves the logarithms per node.
    """
    n_nodes = math.ceil((t_hi - T_LO) / h) + 1
    tt = np.linspace(T_LO, t_hi, n_nodes)
    h = (t_hi - T_LO) / (n_nodes - 1)
    sv = _HALF_PI * np.sinh(tt)  # log(w / l) at the nodes
    log_jac = sv + np.log(_HALF_PI * np.cosh(tt)) + math.log(h)  # log(dw/dt / l) + log h
    shift = log_l - p * log_a - q * log_b
    if sv[-1] > _S_MAX:  # extreme parameters (r + s tiny): w / a may overflow, stay in logs
        log_w = log_l[:, None] + sv[None, :]
        la = np.logaddexp(0.0, log_w - log_a[:, None])
        lb = np.logaddexp(0.0, log_w - log_b[:, None])
        log_sum, moments = _integrate(la, np.exp(-la), lb, np.exp(-lb), p, q, log_jac)
        return log_sum + shift, moments
    ev = np.exp(sv)[None, :]
    log_i = np.empty(p.size)
    moments = np.empty((4, p.size))
    for group_a in (True, False):  # the two kinds of pairs
        idx = np.flatnonzero(first_a == group_a)
        if idx.size == 0:
            continue
        if group_a:  # l / a = 1 / max(p, 1); l / b per pair
            key = np.maximum(p[idx], 1.0)
            free = np.exp(log_l[idx] - log_b[idx])
        else:  # l / b = 1 / q; l / a per pair
            key = np.full(idx.size, q)
            free = np.exp(log_l[idx] - log_a[idx])
        uniq, inv = np.unique(key, return_inverse=True)
        l_tab, i_tab = _log1p_recip(ev / uniq[:, None])
        l_shared, i_shared = l_tab[inv], i_tab[inv]
        l_free, i_free = _log1p_recip(free[:, None] * ev)
        if group_a:
            parts = (l_shared, i_shared, l_free, i_free)
        else:
            parts = (l_free, i_free, l_shared, i_shared)
        log_i[idx], moments[:, idx] = _integrate(*parts, p[idx], q, log_jac)
    return log_i + shift, moments


def _log_tails(
    r: float, alpha: float, s: float, beta: float, x: Array, u: Array
) -> tuple[Array, Array]:
    """log I(x, u) and d log I / d(r, alpha, s, beta) (shape 4 x n) for pairs (x, u).

    I(x, u) = integral_u^inf (alpha + v)^-(r+x) (beta + v)^-(s+1) dv by the exp-sinh trapezoid
    rule (module docstring). The pairs are sorted by the t range they need and processed in
    chunks of ``CHUNK`` pairs, each on its own grid: pairs with many purchases need a short
    range, and chunks keep the temporaries in cache.
    """
    a = alpha + u
    b = beta + u
    p = r + x
    q = s + 1.0
    m = p + q - 1.0
    log_a = np.log(a)
    log_b = np.log(b)
    # the scales where each factor starts to fall; l is the smaller one
    log_sa = log_a - np.log(np.maximum(p, 1.0))
    log_sb = log_b - math.log(q)
    first_a = log_sa <= log_sb
    log_l = np.where(first_a, log_sa, log_sb)
    log_span = np.maximum(log_a, log_b) - log_l  # log(max(a, b) / l) >= 0
    need = np.maximum(log_span + (TAIL_LOG + log_span) / m, math.log(45.0))
    t_need = np.arcsinh(need / _HALF_PI) + 0.15
    # a second scale far above l (alpha and beta far apart) sits where the grid is coarse in
    # log w: shrink the step by the grid's stretch there, cosh t* with (pi/2) sinh t* = span
    e1 = np.where(first_a, p, q) - 1.0  # decay of (integrand * w) between the scales
    span2 = np.abs(log_sa - log_sb)
    span2 = np.where(e1 > 0, np.minimum(span2, TAIL_LOG / np.maximum(e1, 1e-300)), span2)
    stretch = np.sqrt(1.0 + (span2 / _HALF_PI) ** 2)
    h_need = STEP * np.minimum(1.0, STEP_STRETCH / stretch)
    # with many purchases the integrand (1 + w/a)^-p is analytic only in a narrowing strip away
    # from its peak; those pairs need a short t range, so a finer step there is cheap
    h_need = np.where(p > 50.0, 0.75 * h_need, h_need)
    order = np.lexsort((t_need, h_need))  # chunks of similar step and range
    log_i = np.empty(x.size)
    mom = np.empty((4, x.size))
    for lo in range(0, x.size, CHUNK):  # a handful of chunks, each vectorised
        idx = order[lo : lo + CHUNK]
        log_i[idx], mom[:, idx] = _tail_chunk(
            log_a[idx],
            log_b[idx],
            p[idx],
            q,
            log_l[idx],
            first_a[idx],
            float(t_need[idx].max()),
            float(h_need[idx].min()),
        )
    grad = np.vstack(
        [
            -(log_a + mom[0]),
            -p * mom[1] / a,
            -(log_b + mom[2]),
            -q * mom[3] / b,
        ]
    )
    return log_i, grad


_GL8_X, _GL8_W = np.polynomial.legendre.leggauss(8)


def _log_d_short(
    r: float, alpha: float, s: float, beta: float, x: Array, tx: Array, t: Array
) -> tuple[Array, Array]:
    """log D and d log D / d(r, alpha, s, beta) by 8-node Gauss-Legendre on [t_x, T] directly.

    Used where T - t_x is short against both factors' scales ((T - t_x) max(r + x, 1) /
    (alpha + t_x) and (T - t_x) (s + 1) / (beta + t_x) below ``SHORT_GAP``): log f is then
    nearly linear on the interval and its singularities (u = -alpha, -beta) lie at least 10
    interval lengths away, so the rule is exact to rounding.
    """
    half = 0.5 * (t - tx)
    v = tx[:, None] + half[:, None] * (1.0 + _GL8_X[None, :])
    log_av = np.log(alpha + v)
    log_bv = np.log(beta + v)
    p = (r + x)[:, None]
    q = s + 1.0
    lf = np.log(_GL8_W)[None, :] - p * log_av - q * log_bv
    top = lf.max(axis=1)
    e = np.exp(lf - top[:, None])
    tot = e.sum(axis=1)
    e /= tot[:, None]
    log_d = top + np.log(tot) + np.log(half)
    grad = np.vstack(
        [
            -np.einsum("ij,ij->i", e, log_av),
            -(r + x) * np.einsum("ij,ij->i", e, np.exp(-log_av)),
            -np.einsum("ij,ij->i", e, log_bv),
            -q * np.einsum("ij,ij->i", e, np.exp(-log_bv)),
        ]
    )
    return log_d, grad


@dataclass(frozen=True)
class _DParts:
    """log D on the rows with T > t_x and what its gradient is made of.

    On rows ``ok``: d log D = c_tx d log I(x, t_x) + c_t d log I(x, T) with c_tx = 1/(1 - rho),
    c_t = -rho/(1 - rho) (zero elsewhere); on rows ``bad`` the gradient ``g_bad`` comes from
    the short-interval rule or the direct quadrature.
    """

    log_d: Array
    g_pairs: Array  # 4 x pairs: d log I
    c_tx: Array
    c_t: Array
    bad: IntArray
    g_bad: Array  # 4 x bad
    n_short: int
    n_direct: int


def _d_parts(theta: Array, state: PNBDState) -> _DParts:
    r, alpha, s, beta = (float(v) for v in theta)
    log_i, g_i = _log_tails(r, alpha, s, beta, state.pair_x, state.pair_u)
    lt, l_t = log_i[state.p_tx], log_i[state.p_t]
    d = l_t - lt  # log rho <= 0
    one_m_rho = -np.expm1(d)
    ok = one_m_rho >= CANCEL_THRESHOLD
    c_tx = np.where(ok, 1.0 / np.where(ok, one_m_rho, 1.0), 0.0)
    log_d = lt - np.log(np.where(ok, c_tx, 1.0))
    c_t = -np.exp(np.minimum(d, 0.0)) * c_tx
    bad = np.flatnonzero(~ok)
    g_bad = np.empty((4, bad.size))
    n_short = n_direct = 0
    if bad.size:
        rows = state.pos[bad]
        x, tx, t = state.x[rows], state.tx[rows], state.t[rows]
        gap = t - tx
        short = (gap * np.maximum(r + x, 1.0) <= SHORT_GAP * (alpha + tx)) & (
            gap * (s + 1.0) <= SHORT_GAP * (beta + tx)
        )
        n_short = int(short.sum())
        n_direct = bad.size - n_short
        if n_short:
            ld, g_bad[:, short] = _log_d_short(r, alpha, s, beta, x[short], tx[short], t[short])
            log_d[bad[short]] = ld
        if n_direct:
            long = ~short
            ld, gd = log_tail_integral_direct(
                r, alpha, s, beta, x[long], tx[long], t[long], grad=True
            )
            assert gd is not None
            log_d[bad[long]] = ld
            g_bad[:, long] = gd
    return _DParts(log_d, g_i, c_tx, c_t, bad, g_bad, n_short, n_direct)


def _log_d(theta: Array, state: PNBDState) -> tuple[Array, Array, int, int]:
    """log D and d log D / d(r, alpha, s, beta) on the rows with T > t_x (state.pos order).

    Also returns how many rows needed the short-interval rule and how many the full direct
    quadrature (``log_tail_integral_direct``) because I(t_x) - I(T) cancelled.
    """
    parts = _d_parts(theta, state)
    g_d = parts.c_tx * np.take(parts.g_pairs, state.p_tx, axis=1)
    g_d += parts.c_t * np.take(parts.g_pairs, state.p_t, axis=1)
    g_d[:, parts.bad] = parts.g_bad
    return parts.log_d, g_d, parts.n_short, parts.n_direct


def _dot(a: Array, b: Array) -> float:
    """Inner product without BLAS.

    ``a @ b`` calls OpenBLAS, whose worker threads keep spinning after the call and, on a
    machine with few cores, slow down the element-wise work that follows by up to 2x.
    """
    return float(np.einsum("i,i->", a, b))


def value_and_grad(theta: Array, state: PNBDState, w: Array) -> tuple[float, Array]:
    """Total weighted log-likelihood and its gradient w.r.t. (r, alpha, s, beta).

    ``theta`` = [r, alpha, s, beta]; ``state`` from :func:`prepare`; ``w`` the row weights.
    """
    # exp of very negative numbers underflowing to 0 (negligible quadrature nodes, posterior
    # weights) is intended; nothing else may warn
    with np.errstate(under="ignore"):
        return _value_and_grad(theta, state, np.asarray(w, dtype=np.float64))


def _value_and_grad(theta: Array, state: PNBDState, w: Array) -> tuple[float, Array]:
    r, alpha, s, beta = (float(v) for v in theta)
    ux, wx = state.ux, state.wx
    rx = r + state.x
    log_at = np.log(alpha + state.ut)[state.it]
    log_bt = np.log(beta + state.ut)[state.it]
    alive = -rx * log_at - s * log_bt
    parts = _d_parts(theta, state)
    pos = state.pos
    died_pos = math.log(s) + parts.log_d
    lse = alive.copy()
    lse[pos] = np.logaddexp(alive[pos], died_pos)
    n = float(wx.sum())
    head = _dot(wx, gammaln(r + ux)) + n * (-gammaln(r) + r * math.log(alpha) + s * math.log(beta))
    ll = float(head + _dot(w, lse))
    # posterior weights of "alive at T" (wa) and "died in (t_x, T]" (wd), times the row weights
    wd_pos = w[pos] * np.exp(died_pos - lse[pos])
    wa = w * np.exp(alive - lse)
    inv_at = 1.0 / (alpha + state.ut)[state.it]
    inv_bt = 1.0 / (beta + state.ut)[state.it]
    grad = np.array(
        [
            _dot(wx, digamma(r + ux)) + n * (math.log(alpha) - digamma(r)) - _dot(wa, log_at),
            n * r / alpha - _dot(wa * rx, inv_at),
            n * math.log(beta) - _dot(wa, log_bt) + float(wd_pos.sum()) / s,
            n * s / beta - s * _dot(wa, inv_bt),
        ]
    )
    # sum over rows of wd d log D, gathered per (x, u) pair first: 4 x pairs instead of 4 x rows
    n_pairs = parts.g_pairs.shape[1]
    coef = np.bincount(state.p_tx, weights=wd_pos * parts.c_tx, minlength=n_pairs)
    coef += np.bincount(state.p_t, weights=wd_pos * parts.c_t, minlength=n_pairs)
    grad += np.einsum("ij,j->i", parts.g_pairs, coef)
    grad += np.einsum("ij,j->i", parts.g_bad, wd_pos[parts.bad])
    return ll, grad


def log_likelihood_rows(theta: Array, x: Array, tx: Array, T: Array) -> Array:
    """Per-row log-likelihood (same formulas; builds a state on the fly)."""
    x = np.asarray(x, dtype=np.float64)
    tx = np.asarray(tx, dtype=np.float64)
    t = np.asarray(T, dtype=np.float64)
    state = prepare(x, tx, t, np.ones_like(x))
    r, alpha, s, beta = (float(v) for v in theta)
    alive = -(r + x) * np.log(alpha + t) - s * np.log(beta + t)
    out = alive.copy()
    with np.errstate(under="ignore"):
        log_d, _, _, _ = _log_d(theta, state)
        out[state.pos] = np.logaddexp(alive[state.pos], math.log(s) + log_d)
    return out + gammaln(r + x) - gammaln(r) + r * math.log(alpha) + s * math.log(beta)


# Composite Gauss-Legendre rule: 32 panels of 8 nodes over the integration range.
_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)
_PANELS = 32


def log_tail_integral_direct(
    r: float,
    alpha: float,
    s: float,
    beta: float,
    x: Array,
    tx: Array,
    t: Array,
    grad: bool = False,
) -> tuple[Array, Array | None]:
    """log of D = integral from t_x to T of (alpha + u)**-(r + x) (beta + u)**-(s + 1) du.

    With kappa = max(alpha, beta) and v = (kappa + t_x) / (kappa + u), w = 1 - v:
    D = (kappa + t_x)**-m  integral_0^w_max (1 - w)**(m - 1) (eps + z w)**-c dw, where
    m = r + s + x, z = |alpha - beta| / (kappa + t_x), eps = 1 - z = (min + t_x) / (kappa + t_x),
    c = s + 1 if alpha >= beta else r + x, and w_max = (T - t_x) / (kappa + T). This is Fader &
    Hardie's A0 (their 2F1 terms are the two tails of the same integral) without the difference of
    two large numbers. The integral is evaluated in log space in the variable y = logit(w), where
    all singularities of the integrand lie at distance pi from the real axis, with a composite
    Gauss-Legendre rule; its relative accuracy is about 1e-12.

    With ``grad`` it also returns d log D / d(r, alpha, s, beta) (shape 4 x n), by differentiating
    under the integral sign (the limits t_x and T do not depend on the parameters) on the same
    nodes: d log D = E[d log f], the expectation under the normalised integrand, where
    log f = -(r + x) log(alpha + u) - (s + 1) log(beta + u).
    """
    kappa = max(alpha, beta)
    m = r + s + x
    if alpha >= beta:
        c = np.full(x.shape, s + 1.0)
        lo_rate = beta
    else:
        c = r + x
        lo_rate = alpha
    log_eps = np.log(lo_rate + tx) - np.log(kappa + tx)
    z = abs(alpha - beta) / (kappa + tx)
    pos = t > tx
    w_max = np.where(pos, (t - tx) / (kappa + t), 0.5)
    y_hi = np.log(w_max) - np.log1p(-w_max)
    # below w ~ min(eps, 1/m, w_max) the integrand falls like w; e**-38 makes the rest negligible
    y_lo = np.minimum(np.minimum(log_eps, -np.log(np.maximum(m, 1.0))), y_hi) - 38.0
    width = (y_hi - y_lo) / _PANELS
    # node positions: rows x panels x nodes
    k = np.arange(_PANELS)[None, :, None]
    y = y_lo[:, None, None] + width[:, None, None] * (k + 0.5 * (_GL_X[None, None, :] + 1.0))
    log_w = -np.logaddexp(0.0, -y)  # log expit(y)
    log_1mw = -np.logaddexp(0.0, y)
    # log(eps + z w) in log space for tiny eps; z = 0 (alpha == beta) gives log z = -inf, harmless
    with np.errstate(divide="ignore"):
        log_z = np.log(z)
    log_lin = np.logaddexp(log_eps[:, None, None], log_z[:, None, None] + log_w)
    with np.errstate(divide="ignore"):
        log_f = log_w + log_1mw + (m - 1)[:, None, None] * log_1mw - c[:, None, None] * log_lin
    log_f = log_f.reshape(x.size, -1)
    log_wts = np.log(np.tile(_GL_W, _PANELS) / 2)[None, :] + np.log(width)[:, None]
    top = log_f.max(axis=1)
    terms = np.exp(log_f + log_wts - top[:, None])
    total = terms.sum(axis=1)
    log_int = top + np.log(total)
    out = np.where(pos, -m * np.log(kappa + tx) + log_int, -np.inf)
    if not grad:
        return out, None
    # the integrand's u at each node: kappa + u = (kappa + t_x) / (1 - w) and
    # other + u = (kappa + t_x) (eps + z w) / (1 - w)
    prob = terms / total[:, None]
    log_big = (np.log(kappa + tx)[:, None, None] - log_1mw).reshape(x.size, -1)
    log_small = log_big + log_lin.reshape(x.size, -1)
    log_a, log_b = (log_big, log_small) if alpha >= beta else (log_small, log_big)
    g = np.vstack(
        [
            -(prob * log_a).sum(axis=1),
            -(r + x) * (prob * np.exp(-log_a)).sum(axis=1),
            -(prob * log_b).sum(axis=1),
            -(s + 1) * (prob * np.exp(-log_b)).sum(axis=1),
        ]
    )
    return out, np.where(pos, g, 0.0)


def log_terms(theta: Array, x: Array, tx: Array, T: Array) -> tuple[Array, Array]:
    """Per row, log of the "alive at T" and the "died in (t_x, T]" parts of the likelihood.

    alive = -(r + x) log(alpha + T) - s log(beta + T) and died = log s + log D (-inf where
    T = t_x), both without the common head; P(alive) = expit(alive - died).
    """
    x = np.asarray(x, dtype=np.float64)
    tx = np.asarray(tx, dtype=np.float64)
    t = np.asarray(T, dtype=np.float64)
    r, alpha, s, beta = (float(v) for v in theta)
    alive = -(r + x) * np.log(alpha + t) - s * np.log(beta + t)
    died = np.full(x.shape, -np.inf)
    state = prepare(x, tx, t, np.ones_like(x))
    with np.errstate(under="ignore"):
        log_d, _, _, _ = _log_d(theta, state)
    died[state.pos] = math.log(s) + log_d
    return alive, died
