"""Maximum likelihood machinery shared by every customer-base model.

Every model of :mod:`custval.models.btyd` and :mod:`custval.models.btyd_discrete` is fitted the
same way:

* the data are compressed to their sufficient statistics (:func:`compress_rows`: unique rows with
  the number of customers each stands for as a weight), so the cost grows with the number of
  distinct rows, not with the number of customers;
* the *mean* negative log-likelihood per customer is minimised over the logarithms of the
  parameters with L-BFGS-B and an analytic gradient, so the parameters stay positive and the
  tolerances mean the same for 100 and for 10 million customers;
* the covariance of the estimates is the inverse of the observed information (the Hessian of the
  negative log-likelihood in the natural parameters, by central differences of the analytic
  gradient, symmetrised).

A fitted model has ``params_`` and ``standard_errors_`` (dicts keyed by parameter name),
``covariance_`` (array in the order of ``params_``), ``log_likelihood_``, ``aic_``, ``bic_``
(``k log n`` with n the number of customers), ``converged_``, ``n_iter_``, ``grad_norm_`` (norm of
the gradient of the mean per-customer log-likelihood with respect to the log-parameters at the
optimum) and ``n_customers_``.

When the data do not determine the parameters (the likelihood keeps rising towards a parameter of
0 or infinity, or its Hessian is not negative definite) ``fit`` raises a
:class:`~custval.errors.FitError` saying so: no estimate, and never a NaN, is reported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import optimize
from threadpoolctl import threadpool_limits

from custval.errors import CustvalError, FitError
from custval.models.base import Estimator

__all__ = ["LikelihoodModel", "compress_rows", "map_chunks", "row_chunks", "unique_rows"]

Array = npt.NDArray[np.float64]

# A fit counts as converged when the gradient of the mean per-customer log-likelihood with respect
# to the log-parameters is this small (scipy's own message is unreliable at tight tolerances).
GRADIENT_TOLERANCE = 1e-5


T = TypeVar("T")
R = TypeVar("R")

# NumPy's element-wise loops release the GIL, so blocks of rows evaluated in threads use every
# core; more than four threads gain little on likelihoods this cheap. CUSTVAL_THREADS=1 turns
# the threads off.
_pool: ThreadPoolExecutor | None = None


def threads() -> int:
    """The likelihood threads: CUSTVAL_THREADS, else up to four, one per core. Read when first
    needed, so that a bad value is a clear error from the command rather than a traceback at
    import."""
    text = os.environ.get("CUSTVAL_THREADS", "").strip()
    if not text:
        return min(4, os.cpu_count() or 1)
    if not text.isdigit() or int(text) < 1:
        raise CustvalError(
            f"CUSTVAL_THREADS={text!r} is not a whole number of threads",
            hint="Set it to 1 (no threads) or more, or unset it",
        )
    return int(text)


def row_chunks(n: int, size: int) -> list[slice]:
    """Slices cutting ``n`` rows into blocks of at most ``size``."""
    return [slice(i, min(i + size, n)) for i in range(0, max(n, 1), size)]


def map_chunks(func: Callable[[T], R], chunks: Sequence[T]) -> list[R]:
    """``[func(c) for c in chunks]``, in threads when there is more than one chunk."""
    global _pool
    n_threads = threads()
    if len(chunks) < 2 or n_threads == 1:
        return [func(c) for c in chunks]
    if _pool is None:
        _pool = ThreadPoolExecutor(n_threads, thread_name_prefix="custval-likelihood")
    return list(_pool.map(func, chunks))


def unique_rows(*cols: Array) -> tuple[list[Array], npt.NDArray[np.int64]]:
    """Unique rows of the columns (hashing, in no particular order) and each row's index into them.

    Example
    -------
    >>> (x,), inverse = unique_rows(np.array([2.0, 1.0, 2.0]))
    >>> x[inverse].tolist()
    [2.0, 1.0, 2.0]
    """
    uniques, codes = [], []
    for c in cols:  # loop over the 2-4 columns, not over rows
        inv, u = pd.factorize(c, sort=False)
        uniques.append(np.asarray(u))
        codes.append(inv.astype(np.int64))
    sizes = [max(u.size, 1) for u in uniques]
    if math.prod(sizes) >= 2**62:
        stacked = np.column_stack(codes)
        _, first, inverse = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
        return [u[c[first]] for u, c in zip(uniques, codes, strict=True)], inverse.ravel()
    key = codes[0]
    for code, size in zip(codes[1:], sizes[1:], strict=True):
        key = key * size + code
    inverse, ukey = pd.factorize(key, sort=False)
    out = []
    for u, size in zip(uniques[::-1], sizes[::-1], strict=True):
        out.append(u[ukey % size])
        ukey = ukey // size
    return out[::-1], inverse.astype(np.int64)


def _codes(c: Array) -> tuple[Array, npt.NDArray[np.int64]]:
    """(values, code per row) with values[code] == c; small whole numbers are their own code."""
    if c.size and c.dtype.kind == "f":
        top = float(c.max())
        if float(c.min()) >= 0 and top < 65_536:
            whole = c.astype(np.int64)
            if np.array_equal(whole, c):
                # counts such as frequency: no hashing needed
                return np.arange(int(top) + 1, dtype=c.dtype), whole
    inv, u = pd.factorize(c, sort=False)
    return np.asarray(u), inv.astype(np.int64)


def compress_rows(*cols: Array, weights: Array, max_key: int = 2**62) -> tuple[list[Array], Array]:
    """Unique rows of the columns with summed weights (hashing, O(n), no Python loop).

    Each column is factorised by hashing, the codes are packed into one int64 key and the keys
    factorised once: three times as fast as sorting (1M rows: 0.1 s against 0.3 s), in no
    particular row order (a likelihood is a sum). If the key could overflow (billions of
    distinct values) a lexsort is used instead. Rows whose weights sum to zero are dropped.

    Example
    -------
    >>> (x, t), w = compress_rows(np.array([1.0, 1, 2]), np.array([3.0, 3, 4]),
    ...                           weights=np.ones(3))
    >>> sorted(zip(x.tolist(), t.tolist(), w.tolist()))
    [(1.0, 3.0, 2.0), (2.0, 4.0, 1.0)]
    """
    uniques, codes = [], []
    for c in cols:  # loop over the 2-3 columns, not over customers
        u, code = _codes(c)
        uniques.append(u)
        codes.append(code)
    sizes = [u.size for u in uniques]
    if math.prod(sizes) < max_key:
        key = codes[0]
        for code, size in zip(codes[1:], sizes[1:], strict=True):
            key = key * size + code
        inv, ukey = pd.factorize(key, sort=False)
        w = np.bincount(inv, weights=weights, minlength=ukey.size)
        out = []
        for u, size in zip(uniques[::-1], sizes[::-1], strict=True):
            out.append(u[ukey % size])
            ukey = ukey // size
        keep = w > 0
        return [c[keep] for c in out[::-1]], w[keep]
    order = np.lexsort(cols[::-1])
    sorted_cols = [c[order] for c in cols]
    change = np.zeros(order.size, dtype=bool)
    change[0] = True
    for c in sorted_cols:
        change[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(change)
    wsum = np.add.reduceat(weights[order], starts)
    keep = wsum > 0
    return [c[starts][keep] for c in sorted_cols], wsum[keep]


_FITTED = (
    "params_",
    "log_likelihood_",
    "aic_",
    "bic_",
    "n_iter_",
    "grad_norm_",
    "converged_",
    "n_customers_",
    "covariance_",
    "standard_errors_",
)


class LikelihoodModel(Estimator):
    """Maximum likelihood over log-parameters on compressed data, with standard errors.

    Subclasses name their parameters in ``_param_names`` and give the log-likelihood either per
    row (``_loglik_rows``, and its gradient ``_grad_rows`` of shape parameters x rows) or in total
    (``_value_and_grad``, on the state ``_prepare`` builds once per fit). The constructor's
    parameters (``tol``, ``max_iter``) are read and set as every estimator's are
    (:class:`~custval.models.base.Estimator`).
    """

    _param_names: tuple[str, ...] = ()
    _analytic_gradient = True
    # Bounds on the log-parameters: far outside any meaningful value, and they keep the
    # optimiser's trial points finite.
    _log_bound = 30.0

    params_: dict[str, float]
    log_likelihood_: float
    aic_: float
    bic_: float
    converged_: bool
    n_iter_: int
    grad_norm_: float
    covariance_: Array
    standard_errors_: dict[str, float]
    n_customers_: float

    def __init__(self, *, tol: float = 1e-10, max_iter: int = 2000) -> None:
        self.tol = tol
        self.max_iter = max_iter

    # ---- what a model provides -------------------------------------------------------------

    def _loglik_rows(self, theta: Array, data: tuple[Array, ...]) -> Array:
        raise NotImplementedError

    def _grad_rows(self, theta: Array, data: tuple[Array, ...]) -> Array:
        raise NotImplementedError

    def _init_theta(self, data: tuple[Array, ...], w: Array) -> Array:
        return np.ones(len(self._param_names))

    def _prepare(self, data: tuple[Array, ...], w: Array) -> Any:
        """Precomputed state for :meth:`_value_and_grad` (default: the data themselves)."""
        return data

    def _value_and_grad(self, theta: Array, state: Any, w: Array) -> tuple[float, Array]:
        """Total log-likelihood and its gradient in the natural parameters."""
        return self._loglik(theta, state, w), self._grad_natural(theta, state, w)

    # ---- models fitted before ----------------------------------------------------------------

    @classmethod
    def from_params(cls, params: Mapping[str, float], **settings: Any) -> Self:
        """A model that predicts with ``params`` fitted before (a run's stored JSON, say): its
        parameters checked (every one, positive and finite), nothing else learned (no standard
        errors)."""
        names = cls._param_names
        if sorted(params) != sorted(names):
            raise CustvalError(
                f"{cls.__name__} has the parameters {', '.join(names)}, not "
                f"{', '.join(map(str, params)) or 'none'}"
            )
        values = {k: float(params[k]) for k in names}
        bad = [k for k, v in values.items() if not (math.isfinite(v) and v > 0)]
        if bad:
            raise CustvalError(
                f"{cls.__name__} parameters must be positive and finite: "
                + ", ".join(f"{k}={values[k]}" for k in bad)
            )
        model = cls(**settings)
        model.params_ = values
        return model

    def _theta(self) -> Array:
        """The fitted parameters as an array in ``_param_names`` order."""
        if not hasattr(self, "params_"):
            raise CustvalError(f"{type(self).__name__} is not fitted yet", hint="Call fit first")
        return np.array([self.params_[k] for k in self._param_names])

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        """Parameter name -> {'estimate', 'se'} (natural parameters)."""
        theta = self._theta()
        se = getattr(self, "standard_errors_", {})
        return {
            k: {"estimate": float(v), "se": float(se.get(k, math.nan))}
            for k, v in zip(self._param_names, theta, strict=True)
        }

    # ---- the machinery ---------------------------------------------------------------------

    def _loglik(self, theta: Array, data: tuple[Array, ...], w: Array) -> float:
        return float(w @ self._loglik_rows(theta, data))

    def _grad_natural(self, theta: Array, data: tuple[Array, ...], w: Array) -> Array:
        """Gradient of the total log-likelihood in the natural parameters."""
        if self._analytic_gradient:
            return self._grad_rows(theta, data) @ w
        # central differences in log-parameters; step ~ eps**(1/3) balances truncation/rounding
        h = 1e-5
        g = np.empty(theta.size)
        for j in range(theta.size):  # loop over 2-4 parameters
            up, dn = theta.copy(), theta.copy()
            up[j] *= math.exp(h)
            dn[j] *= math.exp(-h)
            g[j] = (self._loglik(up, data, w) - self._loglik(dn, data, w)) / (2 * h)
        return g / theta

    def _search(self, data: tuple[Array, ...], w: Array, x0: Array) -> Any:
        """L-BFGS-B over the log-parameters from ``x0``; scipy's result."""
        n = float(w.sum())
        state = self._prepare(data, w)

        def objective(log_theta: Array) -> tuple[float, Array]:
            theta = np.exp(log_theta)
            with np.errstate(all="ignore"):
                ll, g = self._value_and_grad(theta, state, w)
                g = g * theta
            if not np.isfinite(ll) or not np.all(np.isfinite(g)):
                # outside the numerically meaningful region: push the line search back
                return 1e300, np.zeros_like(log_theta)
            return -ll / n, -g / n

        res = optimize.minimize(
            objective,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=[(-self._log_bound, self._log_bound)] * x0.size,
            options={"maxiter": self.max_iter, "ftol": 1e-15, "gtol": self.tol, "maxcor": 20},
        )
        res.state = state
        return res

    def _fit(self, data: tuple[Array, ...], w: Array) -> Self:
        """Fit, then set the learned attributes all at once: a fit that fails leaves none."""
        for name in _FITTED:  # a refit that fails must not leave the previous fit's state
            self.__dict__.pop(name, None)
        n = float(w.sum())
        # L-BFGS-B's and the covariance's linear algebra is on a handful of parameters, too
        # small to split; OpenBLAS's worker threads would still be woken at every step, which
        # tripled the Gamma-Gamma fit on two cores. One BLAS thread gives the same numbers.
        with threadpool_limits(limits=1, user_api="blas"):
            res = self._search(data, w, np.log(self._init_theta(data, w)))
            theta = np.exp(res.x)
            f, g = float(res.fun), np.asarray(res.jac)
            grad_norm = float(np.linalg.norm(g))
            at_bound = bool(np.any(np.abs(res.x) >= self._log_bound - 1e-6))
            converged = bool(np.isfinite(f) and grad_norm < GRADIENT_TOLERANCE and not at_bound)
            # forward differences from the optimum's gradient only where it is one
            cov = self._covariance(theta, res.state, w, -g * n / theta if converged else None)
        params = dict(zip(self._param_names, map(float, theta), strict=True))
        values = ", ".join(f"{k}={v:.4g}" for k, v in params.items())
        # a search that stopped short on its way to 0 or infinity found no maximum either
        runaway = not converged and np.any(np.abs(res.x) >= self._log_bound - 2.5)
        if at_bound or runaway:
            # With too few or too uniform customers the likelihood keeps rising towards infinite
            # parameters: there is no estimate (and no standard error) to report.
            raise FitError(
                f"the data ({n:.0f} customer{'s' if n != 1 else ''}) do not determine the "
                f"{type(self).__name__} parameters: the likelihood has no interior maximum "
                f"(it ended at {values})",
                count=int(n),
                hint="Fit on more customers, or on a longer calibration period",
            )
        if not np.all(np.isfinite(cov)):
            if not converged and res.nit >= self.max_iter:
                raise FitError(
                    f"the {type(self).__name__} fit did not converge in {self.max_iter} "
                    f"iterations (it stopped at {values})",
                    hint="Raise max_iter",
                )
            raise FitError(
                f"the data ({n:.0f} customer{'s' if n != 1 else ''}) do not determine the "
                f"{type(self).__name__} parameters: the likelihood is flat or curved the wrong "
                f"way at its end point ({values}), so there are no standard errors",
                count=int(n),
                hint="Fit on more customers, or on a longer calibration period",
            )
        k = theta.size
        ll = -f * n
        self.params_ = params
        self.log_likelihood_ = ll
        self.aic_ = 2 * k - 2 * ll
        self.bic_ = k * math.log(n) - 2 * ll
        self.n_iter_ = int(res.nit)
        self.grad_norm_ = grad_norm
        self.converged_ = converged
        self.n_customers_ = n
        self.covariance_ = cov
        self.standard_errors_ = dict(
            zip(self._param_names, map(float, np.sqrt(np.diag(cov))), strict=True)
        )
        return self

    def _covariance(self, theta: Array, state: Any, w: Array, grad: Array | None = None) -> Array:
        """Inverse Hessian of the negative log-likelihood in the natural parameters.

        The Hessian is the finite difference of the gradient (analytic where the model has one)
        with a relative step per parameter, then symmetrised: forward differences from the
        optimum's gradient ``grad`` when it is given (k evaluations; the step's error, ~1e-5
        relative, is far below what a standard error needs), central ones otherwise. When it is
        not positive definite (a flat or boundary optimum) the entries are NaN and ``fit``
        raises a FitError: there is no asymptotic normal approximation to report.
        """
        k = theta.size
        hess = np.empty((k, k))
        h = 1e-5 if self._analytic_gradient else 1e-4
        with np.errstate(all="ignore"):
            for j in range(k):  # loop over parameters, not customers
                up, dn = theta.copy(), theta.copy()
                step = h * theta[j]
                up[j] += step
                if grad is not None and self._analytic_gradient:
                    hess[:, j] = -(self._value_and_grad(up, state, w)[1] - grad) / step
                    continue
                dn[j] -= step
                hess[:, j] = -(
                    self._value_and_grad(up, state, w)[1] - self._value_and_grad(dn, state, w)[1]
                ) / (2 * step)
        hess = (hess + hess.T) / 2
        if not np.all(np.isfinite(hess)):
            return np.full((k, k), np.nan)
        try:
            np.linalg.cholesky(hess)
        except np.linalg.LinAlgError:
            return np.full((k, k), np.nan)
        cov = np.linalg.inv(hess)
        return cov if np.all(np.diag(cov) > 0) else np.full((k, k), np.nan)
