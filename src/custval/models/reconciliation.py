"""Coherent forecasts of a hierarchy: the total equals the sum of its parts (segments, channels
or categories) after reconciliation.

Notation (Hyndman & Athanasopoulos, *Forecasting: Principles and Practice*, 3rd ed., §11; the
series are rows, the periods columns): n bottom series b_t, a aggregates above them, m = a + n
series in all, y_t = S b_t with the summing matrix

    S = [ C   ]     (m x n; C: a x n, which bottoms each aggregate adds up)
        [ I_n ]

The two-level hierarchy (the total over n segments) has a = 1, C = 1' and the total as row 0
(:func:`summing_matrix`). Base forecasts ŷ (m x h), made for every series on its own, are
incoherent: U'ŷ ≠ 0, with U' = [I_a | -C] (the total minus the sum of the bottoms).

- :func:`bottom_up`: ỹ = S b̂, the bottoms' forecasts summed; the aggregates' own forecasts are
  ignored.
- :func:`mint_shrink`: MinT (Wickramasuriya, Athanasopoulos & Hyndman 2019, "Optimal forecast
  reconciliation for hierarchical and grouped time series through trace minimization", JASA
  114(526), 804-819): ỹ = S G ŷ with G = (S'W⁻¹S)⁻¹ S'W⁻¹, the generalised least squares
  projection onto the coherent subspace, W the covariance of the base forecasts' one-step
  errors. Among the unbiased coherent linear reconciliations it has the smallest total error
  variance (trace). It is computed in the paper's equivalent form through U,

      ỹ = ŷ − W U (U'WU)⁻¹ U'ŷ,

  one a x a positive-definite solve (a 1 x 1 one here) instead of inverting W: it needs no W⁻¹,
  and a coherent ŷ (U'ŷ = 0) comes back exactly unchanged. The reconciled bottoms are summed
  through S, so the aggregates equal the sums of the bottoms to the last rounding.
- :func:`shrinkage`: W as the paper's MinT(Shrink): the sample second-moment matrix of the
  errors e_t (one per period t = 1..T), shrunk toward its diagonal (Schäfer & Strimmer 2005,
  "A shrinkage approach to large-scale covariance matrix estimation...", Stat. Appl. Genet. Mol.
  Biol. 4(1), target D), which keeps W well conditioned when T is short beside m:

      Ŵ    = (1/T) Σ_t e_t e_t'                 D = diag(Ŵ)
      W    = λ D + (1 − λ) Ŵ
      λ    = Σ_{i≠j} Var̂(r_ij) / Σ_{i≠j} r_ij²   clipped to [0, 1]

  with r_ij = Ŵ_ij / √(Ŵ_ii Ŵ_jj), the standardised errors z_ti = e_ti / √Ŵ_ii, their products
  w_tij = z_ti z_tj and Var̂(r_ij) = 1/(T(T−1)) Σ_t (w_tij − w̄_ij)² (the paper's λ_D, as R's
  hts/fable compute it). λ is 1 when no pair is correlated in sample (the target is then the
  sample matrix itself).

Choices, each a known variant:
- Ŵ is uncentred and divided by T, as in the paper and R's hts and fable: it is the errors'
  mean square, so a series forecast with a steady bias counts as noisier and is adjusted more.
  hierarchicalforecast's ``MinTrace(method="mint_shrink")`` centres the errors and divides by
  T − 1; on residuals of mean zero both give the same λ and the same ỹ (scaling W leaves G
  unchanged).
- Missing residuals (NaN, a series without a backtest origin) drop their whole period: only the
  periods where every series has an error are used (fable's ``na.omit``). Pairwise-complete
  moments (hierarchicalforecast's choice) mix different periods per pair and can give a matrix
  that is not positive semi-definite, a negative "variance" for some combination of series, and
  so no Cholesky factor for U'WU; the price of complete periods is that one short series
  shortens every series' history. Two complete periods are needed at least.
- A series whose errors are all zero (a segment without sales, forecast as zero) has no
  correlation (0/0: taken as 0) and a zero variance, which leaves W singular: S'W⁻¹S does not
  exist, and the GLS would hold that series fixed with infinite weight. Its variance is raised
  to a tiny ridge, :data:`RIDGE` times the largest variance, so that W stays positive definite
  and every solve is defined; series with real errors are left exactly as they are, and such a
  series is still all but fixed, which is what the in-sample evidence says. A real variance
  below the ridge is raised to it too, which only a ratio above 1e12 between two series'
  variances (10^6 between their standard deviations) would meet. With every error zero there
  is nothing to weigh the series by: W = I (the OLS reconciliation).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import linalg

from custval.errors import CustvalError, FitError

__all__ = ["RIDGE", "Shrunk", "bottom_up", "mint_shrink", "shrinkage", "summing_matrix"]

Array = npt.NDArray[np.float64]

#: the smallest variance of a series in W, relative to the largest (module docstring)
RIDGE = 1e-12


class Shrunk(NamedTuple):
    """The shrunk covariance W (m x m) and its shrinkage intensity λ in [0, 1]."""

    covariance: Array
    lam: float


def summing_matrix(n_bottom: int) -> Array:
    """S of a total over ``n_bottom`` series: (n+1) x n, the total's row of ones first, then the
    identity. Every function here also takes a larger S = [C; I_n] (several aggregates on top,
    the bottom series in the same order below), such as a caller builds for segments x
    channels."""
    if isinstance(n_bottom, bool) or not isinstance(n_bottom, int | np.integer) or n_bottom < 1:
        raise CustvalError(
            f"a hierarchy needs 1 bottom series at least; n_bottom is {n_bottom!r}",
            hint="Pass the number of segments, channels or categories that add up to the total",
        )
    return np.vstack([np.ones((1, n_bottom)), np.eye(n_bottom)])


def bottom_up(bottom: Any, S: Any = None) -> Array:
    """Coherent forecasts from the bottom series' alone: ``bottom`` (n x h) → S·bottom, the
    total first ((n+1) x h with the default S), each aggregate the column sums of its bottoms."""
    b = _matrix(bottom, "the bottom forecasts", "series x horizon")
    s = summing_matrix(b.shape[0]) if S is None else _summing(S)
    if s.shape[1] != b.shape[0]:
        raise CustvalError(
            f"the bottom forecasts have {b.shape[0]} series (shape {b.shape}); S {s.shape} "
            f"sums {s.shape[1]}",
            hint="S has one column per bottom series, in the order of the forecasts' rows",
        )
    return s @ b


def shrinkage(residuals: Any) -> Shrunk:
    """W and λ of MinT(Shrink) (module docstring) from one-step errors (m x T, the series as
    rows); periods where any series has no error (NaN) are left out. A FitError when fewer
    than two complete periods remain."""
    x = _complete(_matrix(residuals, "the residuals", "series x periods", allow_nan=True))
    t = x.shape[1]
    second = x @ x.T / t
    var = np.diag(second).copy()
    sd = np.sqrt(var)[:, None]
    # a series without error gets z = 0: no correlation, instead of 0/0 (module docstring)
    z = np.divide(x, sd, out=np.zeros_like(x), where=sd > 0)
    w_sum = z @ z.T
    r = w_sum / t
    var_r = ((z * z) @ (z * z).T - w_sum * w_sum / t) / (t * (t - 1))
    off = ~np.eye(x.shape[0], dtype=bool)
    num, den = float(var_r[off].sum()), float((r[off] ** 2).sum())
    lam = 1.0 if den <= 0 else float(np.clip(num / den, 0.0, 1.0))
    w = (1.0 - lam) * second
    floor = RIDGE * var.max() if var.max() > 0 else 1.0
    np.fill_diagonal(w, np.maximum(var, floor))
    return Shrunk(w, lam)


def mint_shrink(base: Any, residuals: Any, S: Any = None) -> Array:
    """MinT with the shrunk covariance (module docstring): ``base`` forecasts of every series
    (m x h, the total first) and their one-step ``residuals`` (m x T, in-sample or backtest
    errors, actual − forecast; NaN where a series has no error that period) → the reconciled
    forecasts (m x h), ỹ = S (S'W⁻¹S)⁻¹ S'W⁻¹ ŷ. The default S is the total over the m − 1
    other rows; :func:`shrinkage` gives W and λ. A FitError when the residuals do not
    determine W (too few complete periods, or errors that already add up exactly and are
    perfectly correlated)."""
    y = _matrix(base, "the base forecasts", "series x horizon")
    m = y.shape[0]
    if S is None and m < 2:
        raise CustvalError(
            f"the base forecasts have {m} series (shape {y.shape}); a total and 1 bottom "
            "series at least are needed"
        )
    s = summing_matrix(m - 1) if S is None else _summing(S)
    if s.shape[0] != m:
        raise CustvalError(
            f"the base forecasts have {m} series (shape {y.shape}); S {s.shape} has {s.shape[0]}",
            hint="Forecast every series of the hierarchy, aggregates first, in S's row order",
        )
    e = _matrix(residuals, "the residuals", "series x periods", allow_nan=True)
    if e.shape[0] != m:
        raise CustvalError(
            f"the residuals have {e.shape[0]} series (shape {e.shape}); the base forecasts "
            f"have {m} (shape {y.shape})",
            hint="Give one row of errors per series, in the base forecasts' row order",
        )
    w = shrinkage(e).covariance
    a = m - s.shape[1]
    ut = np.hstack([np.eye(a), -s[:a]])  # U': each aggregate minus the sum of its bottoms
    wu = w @ ut.T
    try:
        step = linalg.solve(ut @ wu, ut @ y, assume_a="pos")
    except np.linalg.LinAlgError as exc:
        raise FitError(
            "the residuals do not determine MinT's weights: U'WU is singular (the errors "
            "already add up exactly and are perfectly correlated)",
            hint="Reconcile bottom-up instead",
        ) from exc
    return s @ (y[a:] - wu[a:] @ step)


# ---- checks ------------------------------------------------------------------------------


def _matrix(x: Any, what: str, layout: str, *, allow_nan: bool = False) -> Array:
    """``x`` as a non-empty 2-D float array, finite (NaN allowed with ``allow_nan``)."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CustvalError(f"{what} are not numbers ({type(x).__name__})") from exc
    if a.ndim != 2 or 0 in a.shape:
        raise CustvalError(
            f"{what} must be a non-empty 2-D array ({layout}); the shape is {a.shape}",
            hint="One series per row; a single column is x[:, None]",
        )
    bad = np.isinf(a) if allow_nan else ~np.isfinite(a)
    if bad.any():
        kind = "infinite" if allow_nan else "missing or infinite"
        where = np.argwhere(bad)[:5]
        raise CustvalError(
            f"{what} have {int(bad.sum())} {kind} values",
            count=int(bad.sum()),
            examples=[{"series": int(i), "column": int(j)} for i, j in where],
        )
    return a


def _summing(S: Any) -> Array:
    """A caller's S, checked to be [C; I_n]: aggregates on top, the bottoms below."""
    s = _matrix(S, "the summing matrix S", "series x bottom series")
    m, n = s.shape
    if m <= n or not np.array_equal(s[m - n :], np.eye(n)):
        raise CustvalError(
            f"S {s.shape} must be [C; I]: the aggregates' rows on top and the identity of the "
            "bottom series below",
            hint="summing_matrix(n) builds S of a total over n series",
        )
    return s


def _complete(e: Array) -> Array:
    """The periods (columns) where every series has an error; two at least."""
    keep = ~np.isnan(e).any(axis=0)
    if keep.sum() < 2:
        have = (~np.isnan(e)).sum(axis=1)
        shortest = int(np.argmin(have))
        raise FitError(
            f"the residuals have {int(keep.sum())} periods where every series has an error; "
            "the shrunk covariance needs 2 at least",
            hint=f"series {shortest} has errors in {int(have[shortest])} of {e.shape[1]} periods",
        )
    return e[:, keep]
