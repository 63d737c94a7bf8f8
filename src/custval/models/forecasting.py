"""Forecasts of a regular series (weekly or monthly sales): the baselines, the error measures,
and a rolling-origin backtest with conformal intervals.

Every method forecasts from the series' own past, one value per period; ``fit(y)`` learns
from the history, ``predict(h)`` gives the next ``h`` periods.

- :class:`Naive`: the last value, repeated.
- :class:`SeasonalNaive`: the value one season earlier (period m: 52 weeks, 12 months).
- :class:`MovingAverage`: the mean of the last ``window`` values.
- :class:`ETS`: exponential smoothing on the seasonally adjusted series (STL, Cleveland et al.
  1990; Hyndman & Athanasopoulos, *Forecasting: Principles and Practice*, 3rd ed., §13.1,
  "stlf"): simple, or with an additive damped trend, whichever has the lower AICc; the last
  season's STL component added back. Exponential smoothing with 52 seasonal states is poorly
  determined by three years of weeks (statsforecast's AutoETS refuses seasons above 24), so the
  season is taken out first, as statsmodels' STLForecast does.
- :class:`Theta`: the Theta method (Assimakopoulos & Nikolopoulos 2000, as Hyndman & Billah
  2003 show it: simple exponential smoothing with drift) on the classically deseasonalised
  series (statsmodels' ThetaModel).
- :class:`GlobalBoosting`: one LightGBM over every (origin, step) of the history (the M5
  competition's recipe, direct strategy: the step is a feature, so nothing is fed back): the
  last values, rolling means, the values one and two seasons before the target period and its
  place in the season, all divided by the mean of the last season at the origin, so that
  series of any size share one model.
- :class:`Arima`: ARIMA with Fourier terms for the season (FPP3 §10.5, dynamic harmonic
  regression): d by the KPSS test (d = 1 when it rejects stationarity at 5%, as auto.arima),
  then, stepwise, the number of Fourier pairs K with AR(1) errors and the orders (p, q) with
  that K, each with the lowest AICc over a small grid.

The measures (Hyndman & Koehler 2006, "Another look at measures of forecast accuracy",
IJF 22(4); the M5 competition's guide for RMSSE), for actuals a_t and forecasts f_t over the
horizon, with the history y_1..y_n:

    MASE  = mean |a_t - f_t| / (1/(n-m) sum_{t>m} |y_t - y_{t-m}|)
    RMSSE = sqrt( mean (a_t - f_t)^2 / (1/(n-m) sum_{t>m} (y_t - y_{t-m})^2) )
    bias  = (sum f_t - sum a_t) / sum a_t          the total's error, signed
    WAPE  = sum |a_t - f_t| / sum |a_t|

The scale is the in-sample error of the seasonal naive method (m = 1: the naive one), so a
MASE below 1 beats it in sample; a history whose scale is 0 (a constant series) leaves MASE and
RMSSE undefined (NaN).

Backtest (:func:`rolling_origin`): origins t_1 < ... < t_k, each ``step`` periods apart and
the last one ``horizon`` periods before the end; at each the method is fitted on y_1..y_t and
forecasts t+1..t+h. Intervals are split-conformal on the absolute errors by horizon step
(Stankeviciute, Alaa & van der Schaar 2021, "Conformal time-series forecasting"): at step j,
the level-(1 − α) half-width is the ceil((n+1)(1 − α))-th smallest of the n backtest errors
|a − f| at that step; with few origins, the errors of the neighbouring steps are pooled (a
window of ±w steps holding 40 errors at least): from k origins alone the rank is the largest
error, whose interval covers k/(k+1) of the time rather than the level. Their coverage is
judged honestly: at each origin only the errors of the earlier origins give the width
(:func:`conformal_coverage`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from custval.errors import CustvalError, FitError
from custval.models.base import Estimator
from custval.models.fitting import threads as default_threads

__all__ = [
    "COMBINATION",
    "ETS",
    "Arima",
    "Backtest",
    "GlobalBoosting",
    "MovingAverage",
    "Naive",
    "SeasonalNaive",
    "Theta",
    "backtest_origins",
    "bias",
    "combination",
    "combination_weights",
    "conformal_coverage",
    "conformal_widths",
    "forecast_ahead",
    "leaderboard",
    "mase",
    "rmsse",
    "rolling_origin",
    "wape",
]

Array = npt.NDArray[np.float64]


def _history(y: Any, needed: int, method: str) -> Array:
    """The series a method learns from, with at least ``needed`` periods (a FitError naming
    the ``method`` otherwise)."""
    values = _series(y)
    if values.size < needed:
        raise FitError(f"{method} needs {needed} periods at least; the series has {values.size}")
    return values


def _series(y: Any, what: str = "the series") -> Array:
    values = np.asarray(y, dtype=np.float64).ravel()
    if values.size == 0:
        raise CustvalError(f"{what} is empty")
    if not np.isfinite(values).all():
        raise CustvalError(
            f"{what} has {int((~np.isfinite(values)).sum())} missing or infinite values",
            hint="Fill the gaps first (a period without sales is 0)",
        )
    return values


# ---- the baselines -------------------------------------------------------------------------


class _Forecaster(Estimator):
    """What a forecaster learns: the history (``history_``)."""

    def _fitted(self) -> Array:
        if not hasattr(self, "history_"):
            raise CustvalError(f"{type(self).__name__} is not fitted yet", hint="Call fit")
        return self.history_  # type: ignore[no-any-return]

    @staticmethod
    def _horizon(h: int) -> int:
        if int(h) < 1:
            raise CustvalError(f"the horizon must be at least 1 period, not {h}")
        return int(h)


class Naive(_Forecaster):
    """The last value, repeated over the horizon."""

    def fit(self, y: Any) -> Self:
        self.history_ = _series(y)
        return self

    def predict(self, h: int) -> Array:
        return np.full(self._horizon(h), self._fitted()[-1])


class SeasonalNaive(_Forecaster):
    """The value one season earlier: f_{n+j} = y_{n+j-m·ceil(j/m)}."""

    def __init__(self, season_length: int = 52) -> None:
        self.season_length = season_length

    def fit(self, y: Any) -> Self:
        values = _series(y)
        if values.size < self.season_length:
            raise FitError(
                f"a seasonal naive forecast needs a whole season ({self.season_length} "
                f"periods) of history; the series has {values.size}"
            )
        self.history_ = values
        return self

    def predict(self, h: int) -> Array:
        last = self._fitted()[-self.season_length :]
        return np.resize(last, self._horizon(h))


class MovingAverage(_Forecaster):
    """The mean of the last ``window`` values (fewer when the history is shorter)."""

    def __init__(self, window: int = 4) -> None:
        self.window = window

    def fit(self, y: Any) -> Self:
        if self.window < 1:
            raise CustvalError(f"the window must be at least 1 period, not {self.window}")
        self.history_ = _series(y)
        return self

    def predict(self, h: int) -> Array:
        return np.full(self._horizon(h), self._fitted()[-self.window :].mean())


# ---- statistical candidates (statsmodels) -------------------------------------------------


@contextmanager
def _quiet() -> Iterator[None]:
    """statsmodels' convergence warnings, kept out of the output (a poorly fitting candidate
    loses on the backtest; the warning says nothing more)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class _Seasonal(_Forecaster):
    """The season of the last cycle, when the history holds two at least."""

    def _split(self, y: Array) -> tuple[Array, Array]:
        """(seasonally adjusted series, the last season's component); no season (zeros) with
        fewer than two cycles or ``season_length`` 1."""
        m = int(self.season_length)  # type: ignore[attr-defined]
        if m < 2 or y.size < 2 * m:
            return y, np.zeros(1)
        from statsmodels.tsa.seasonal import STL

        parts = STL(y, period=m, robust=True).fit()
        season = np.asarray(parts.seasonal, dtype=np.float64)
        return y - season, season[-m:]


class ETS(_Seasonal):
    """Exponential smoothing on the STL-adjusted series (module docstring)."""

    def __init__(self, season_length: int = 52) -> None:
        self.season_length = season_length

    def fit(self, y: Any) -> Self:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        values = _history(y, 4, "exponential smoothing")
        adjusted, season = self._split(values)
        with _quiet():
            fits = [
                ExponentialSmoothing(
                    adjusted,
                    trend=trend,
                    damped_trend=trend is not None,
                    initialization_method="estimated",
                ).fit()
                for trend in (None, "add")
            ]
        best = min(fits, key=lambda f: f.aicc if np.isfinite(f.aicc) else np.inf)
        trend = "additive damped" if best.model.trend else "none"
        self.history_, self.model_, self.season_, self.trend_ = values, best, season, trend
        return self

    def predict(self, h: int) -> Array:
        self._fitted()
        h = self._horizon(h)
        return np.asarray(self.model_.forecast(h), np.float64) + np.resize(self.season_, h)


class Theta(_Forecaster):
    """The Theta method on the classically deseasonalised series (module docstring)."""

    def __init__(self, season_length: int = 52) -> None:
        self.season_length = season_length

    def fit(self, y: Any) -> Self:
        from statsmodels.tsa.forecasting.theta import ThetaModel

        values = _history(y, 4, "the Theta method")
        m = int(self.season_length)
        seasonal = m >= 2 and values.size >= 2 * m
        with _quiet():
            self.model_ = ThetaModel(
                values,
                period=m if seasonal else 1,
                deseasonalize=seasonal,
                use_test=False,
                method="additive",
            ).fit()
        self.history_, self.seasonal_ = values, seasonal
        return self

    def predict(self, h: int) -> Array:
        self._fitted()
        return np.asarray(self.model_.forecast(self._horizon(h)), np.float64)


def _fourier(t: Array, m: int, k: int) -> Array:
    """K pairs of sin and cos of the season at times ``t`` (an empty matrix for K = 0)."""
    if k == 0:
        return np.empty((t.size, 0))
    angles = 2 * np.pi * np.outer(t, np.arange(1, k + 1)) / m
    return np.hstack([np.sin(angles), np.cos(angles)])


class Arima(_Forecaster):
    """ARIMA with Fourier terms for the season, orders by AICc (module docstring)."""

    #: the (p, q) orders tried, and the Fourier pairs with a season
    ORDERS = ((0, 0), (1, 0), (0, 1), (1, 1))
    PAIRS = (2, 4)

    def __init__(self, season_length: int = 52) -> None:
        self.season_length = season_length

    def fit(self, y: Any) -> Self:
        values = _history(y, 8, "ARIMA")
        m = int(self.season_length)
        pairs = self.PAIRS if m >= 2 and values.size >= 2 * m else (0,)
        pairs = tuple(min(k, m // 2) for k in pairs)
        d = _kpss_d(values)
        with _quiet():
            # stepwise, as auto.arima: the season's pairs with the simplest errors, then the
            # orders with those pairs (7 fits, not 10)
            first = [self._one(values, d, self.ORDERS[1], k, m) for k in pairs]
            found = [t for t in first if t is not None]
            k_best = min(found, key=lambda t: t[0])[3] if found else pairs[0]
            rest = [
                self._one(values, d, pq, k_best, m) for pq in self.ORDERS if pq != self.ORDERS[1]
            ]
        ok = [t for t in [*first, *rest] if t is not None]
        if not ok:
            raise FitError("no ARIMA order could be fitted to the series")
        _, model, order, k = min(ok, key=lambda t: t[0])
        self.history_, self.model_, self.order_, self.fourier_pairs_ = values, model, order, k
        return self

    @staticmethod
    def _one(y: Array, d: int, pq: tuple[int, int], k: int, m: int) -> Any:
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        order = (pq[0], d, pq[1])
        exog = _fourier(np.arange(y.size, dtype=np.float64), m, k)
        try:
            fit = SARIMAX(
                y,
                exog=exog if k else None,
                order=order,
                # with d = 1 a linear trend in levels is a drift: auto.arima's drift term
                trend="c" if d == 0 else "t",
                # the variance out of the search: one parameter fewer, the same likelihood
                concentrate_scale=True,
            ).fit(disp=False, cov_type="none")
        except (ValueError, np.linalg.LinAlgError):
            return None
        return (fit.aicc if np.isfinite(fit.aicc) else np.inf), fit, order, k

    def predict(self, h: int) -> Array:
        history = self._fitted()
        h = self._horizon(h)
        t = np.arange(history.size, history.size + h, dtype=np.float64)
        exog = _fourier(t, int(self.season_length), self.fourier_pairs_)
        out = self.model_.forecast(h, exog=exog if self.fourier_pairs_ else None)
        return np.asarray(out, np.float64)


def _kpss_d(y: Array) -> int:
    """1 when the KPSS test rejects level stationarity at 5%, else 0 (auto.arima's rule)."""
    from statsmodels.tsa.stattools import kpss

    if np.ptp(y) == 0:
        return 0
    with _quiet():
        p_value = kpss(y, regression="c", nlags="auto")[1]
    return int(p_value < 0.05)


# ---- machine learning: one LightGBM over lags (M5) --------------------------------------------


class GlobalBoosting(_Forecaster):
    """LightGBM over lag, rolling-mean and season features, direct multi-step (module
    docstring). ``max_steps`` bounds the steps learnt (the longest horizon asked later)."""

    LAGS = 8
    WINDOWS = (4, 13, 52)

    def __init__(
        self,
        season_length: int = 52,
        *,
        max_steps: int = 52,
        rounds: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        seed: int = 0,
        threads: int | None = None,
    ) -> None:
        self.season_length = season_length
        self.max_steps = max_steps
        self.rounds = rounds
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.seed = seed
        self.threads = threads

    def _levels(self, y: Array, origins: npt.NDArray[np.int64]) -> Array:
        """The scale at each origin: the mean absolute value of the last season up to it (1
        where that is 0, so that zeros stay zeros)."""
        m = max(int(self.season_length), 1)
        cabs = np.concatenate([[0.0], np.cumsum(np.abs(y))])
        lo = np.maximum(origins + 1 - m, 0)
        level = (cabs[origins + 1] - cabs[lo]) / (origins + 1 - lo)
        return np.where(level > 0, level, 1.0)

    def _rows(
        self, y: Array, origins: npt.NDArray[np.int64], steps: npt.NDArray[np.int64], scale: Array
    ) -> Array:
        """The features of each (origin, step) pair, divided by the origin's ``scale``."""
        m = int(self.season_length)
        cols = [y[np.maximum(origins - k, 0)] / scale for k in range(self.LAGS)]
        csum = np.concatenate([[0.0], np.cumsum(y)])
        for w in self.WINDOWS:
            lo = np.maximum(origins + 1 - w, 0)
            cols.append((csum[origins + 1] - csum[lo]) / (origins + 1 - lo) / scale)
        target = origins + steps
        for back in (m, 2 * m):
            at = target - back
            seen = (at >= 0) & (at <= origins)
            cols.append(np.where(seen, y[np.clip(at, 0, None)] / scale, np.nan))
        phase = 2 * np.pi * (target % max(m, 1)) / max(m, 1)
        cols += [np.sin(phase), np.cos(phase), steps.astype(np.float64)]
        return np.column_stack(cols)

    def fit(self, y: Any) -> Self:
        import lightgbm as lgb

        values = _history(y, 2 * self.LAGS, "the boosted model")
        n, steps_max = values.size, int(self.max_steps)
        origin, step = np.meshgrid(np.arange(self.LAGS, n - 1), np.arange(1, steps_max + 1))
        keep = origin + step < n
        origin, step = origin[keep].astype(np.int64), step[keep].astype(np.int64)
        scale = self._levels(values, origin)
        X = self._rows(values, origin, step, scale)
        target = values[origin + step] / scale
        params = {
            "objective": "l2",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": 20,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": int(self.threads) if self.threads else default_threads(),
            "verbosity": -1,
        }
        booster = lgb.train(params, lgb.Dataset(X, target), num_boost_round=self.rounds)
        self.history_, self.booster_ = values, booster
        return self

    def predict(self, h: int) -> Array:
        values = self._fitted()
        h = self._horizon(h)
        if h > self.max_steps:
            raise CustvalError(
                f"the model learnt {self.max_steps} steps ahead; {h} were asked",
                hint="Fit with max_steps at least the horizon",
            )
        origins = np.full(h, values.size - 1, dtype=np.int64)
        scale = self._levels(values, origins)
        X = self._rows(values, origins, np.arange(1, h + 1, dtype=np.int64), scale)
        return np.asarray(self.booster_.predict(X), np.float64) * scale


# ---- the measures --------------------------------------------------------------------------


def _scale(history: Any, m: int, power: int) -> float:
    y = _series(history, "the history")
    m = max(int(m), 1)
    if y.size <= m:
        return math.nan
    diffs = np.abs(y[m:] - y[:-m]) ** power
    s = float(diffs.mean())
    return s if s > 0 else math.nan


def _pair(actual: Any, forecast: Any) -> tuple[Array, Array]:
    a, f = _series(actual, "the actuals"), _series(forecast, "the forecast")
    if a.shape != f.shape:
        raise CustvalError(f"{a.size} actuals against {f.size} forecasts")
    return a, f


def mase(actual: Any, forecast: Any, history: Any, m: int = 1) -> float:
    """Mean absolute scaled error (module docstring); NaN when the history's scale is 0."""
    a, f = _pair(actual, forecast)
    return float(np.abs(a - f).mean() / _scale(history, m, 1))


def rmsse(actual: Any, forecast: Any, history: Any, m: int = 1) -> float:
    """Root mean squared scaled error (module docstring); NaN when the history's scale is 0."""
    a, f = _pair(actual, forecast)
    return float(math.sqrt(((a - f) ** 2).mean() / _scale(history, m, 2)))


def bias(actual: Any, forecast: Any) -> float:
    """The error of the total, signed: (Σ forecast − Σ actual) / Σ actual; NaN for a zero
    total."""
    a, f = _pair(actual, forecast)
    total = a.sum()
    return float((f.sum() - total) / total) if total != 0 else math.nan


def wape(actual: Any, forecast: Any) -> float:
    """Weighted absolute percentage error: Σ|a − f| / Σ|a|; NaN when every actual is 0."""
    a, f = _pair(actual, forecast)
    total = np.abs(a).sum()
    return float(np.abs(a - f).sum() / total) if total > 0 else math.nan


# ---- backtest ------------------------------------------------------------------------------


@dataclass
class Backtest:
    """A rolling-origin backtest: per method, the origins' forecasts and actuals (arrays of
    origins × horizon) and the leaderboard of measures (mean over the origins)."""

    origins: npt.NDArray[np.int64]
    horizon: int
    actual: Array
    forecasts: dict[str, Array]
    errors: dict[str, str]
    leaderboard: pd.DataFrame
    #: the season of the MASE scale (1: the naive method's)
    season_length: int = 1


def backtest_origins(
    n: int, *, horizon: int, n_origins: int = 4, step: int | None = None, min_train: int = 2
) -> npt.NDArray[np.int64]:
    """The origins :func:`rolling_origin` uses for a series of ``n`` periods: the number of
    periods each origin learns from (its forecasts start at that index)."""
    return _origins(n, horizon, n_origins, step or horizon, min_train)


def _origins(n: int, horizon: int, n_origins: int, step: int, min_train: int) -> Any:
    last = n - horizon
    first = last - step * (n_origins - 1)
    if first < min_train:
        need = min_train + step * (n_origins - 1) + horizon
        raise FitError(
            f"the series has {n} periods; a backtest of {n_origins} origins {step} apart, a "
            f"horizon of {horizon} and {min_train} periods to learn from needs {need}",
            hint="Use fewer origins, a shorter horizon or a longer history",
        )
    return np.arange(first, last + 1, step, dtype=np.int64)


def rolling_origin(
    y: Any,
    methods: Mapping[str, Callable[[], Any]],
    *,
    horizon: int,
    n_origins: int = 4,
    step: int | None = None,
    season_length: int = 1,
    min_train: int | None = None,
    combine: int = 3,
    external: Mapping[str, Array] | None = None,
) -> Backtest:
    """Each of ``methods`` (name: a function making an unfitted forecaster) fitted at every
    origin and judged on the ``horizon`` periods after it (module docstring). ``step``
    defaults to the horizon (origins whose windows do not overlap); ``min_train`` to one
    season plus one period. A method that cannot be fitted at some origin is left out of the
    leaderboard, its reason in ``errors``. With two methods or more the leaderboard also has
    :data:`COMBINATION`, the weighted average of the ``combine`` best (:func:`combination`;
    0: none). ``external``: the backtest forecasts (origins × horizon, at the origins this
    function would choose, :func:`backtest_origins`) of methods that are not fitted to the
    series alone, such as the customer-based forecast, judged with the others."""
    values = _series(y)
    horizon = _Forecaster._horizon(horizon)
    step = step or horizon
    min_train = min_train or max(season_length + 1, 2)
    origins = _origins(values.size, horizon, n_origins, step, min_train)
    actual = np.stack([values[t : t + horizon] for t in origins])
    forecasts: dict[str, Array] = {}
    errors: dict[str, str] = {}
    for name, make in methods.items():  # a loop over a handful of methods
        try:
            forecasts[name] = np.stack([make().fit(values[:t]).predict(horizon) for t in origins])
        except FitError as exc:
            errors[name] = exc.problem
    for name, given in (external or {}).items():  # a loop over one or two methods
        given = np.asarray(given, dtype=np.float64)
        if given.shape != actual.shape:
            raise CustvalError(
                f"the forecasts of '{name}' are {given.shape}; the backtest needs "
                f"{actual.shape} (origins x horizon)"
            )
        forecasts[name] = given
    if combine and len(forecasts) >= 2:
        forecasts[COMBINATION] = combination(
            values, origins, actual, forecasts, season_length, combine
        )
    board = leaderboard(values, origins, actual, forecasts, season_length)
    return Backtest(origins, horizon, actual, forecasts, errors, board, season_length)


#: the name of the weighted average of the best methods in a backtest
COMBINATION = "combination"


def combination(
    values: Array,
    origins: npt.NDArray[np.int64],
    actual: Array,
    forecasts: Mapping[str, Array],
    m: int,
    top: int,
) -> Array:
    """The backtest forecasts of a weighted average of the ``top`` methods, weights 1 / MASE:
    at each origin both the choice and the weights come from the earlier origins only (equal
    weights over every method at the first), so that the combination is judged as honestly
    as the methods it combines."""
    names = list(forecasts)
    scores = _scores(values, origins, actual, forecasts, names, m)
    out = np.empty_like(actual)
    for i in range(len(origins)):  # a loop over a handful of origins
        weights = _weights(scores[:i], top) if i else np.full(len(names), 1 / len(names))
        out[i] = sum(w * forecasts[n][i] for w, n in zip(weights, names, strict=True))
    return out


def _scores(
    values: Array,
    origins: npt.NDArray[np.int64],
    actual: Array,
    forecasts: Mapping[str, Array],
    names: list[str],
    m: int,
) -> Array:
    """MASE of each method (columns, in ``names``' order) at each origin (rows)."""
    return np.array(
        [
            [mase(actual[i], forecasts[n][i], values[:t], m) for n in names]
            for i, t in enumerate(origins)
        ]
    )


def combination_weights(y: Any, backtest: Backtest, top: int = 3) -> dict[str, float]:
    """The combination's weight of each method it uses, from every origin of ``backtest`` (on
    the series ``y`` it was run on): 1 / mean MASE of the ``top`` best, summing to 1."""
    names = [n for n in backtest.forecasts if n != COMBINATION]
    scores = _scores(
        _series(y),
        backtest.origins,
        backtest.actual,
        backtest.forecasts,
        names,
        backtest.season_length,
    )
    weights = _weights(scores, top)
    return {n: float(w) for n, w in zip(names, weights, strict=True) if w > 0}


def _weights(scores: Array, top: int) -> Array:
    """1 / mean MASE of the ``top`` best methods (by mean MASE over the rows), 0 for the
    others; equal weights when no MASE is defined."""
    mean = np.nanmean(np.where(np.isfinite(scores), scores, np.nan), axis=0)
    if not np.isfinite(mean).any():
        return np.full(scores.shape[1], 1 / scores.shape[1])
    order = np.argsort(np.where(np.isfinite(mean), mean, np.inf))[:top]
    w = np.zeros(scores.shape[1])
    w[order] = 1 / np.maximum(mean[order], 1e-12)
    return w / w.sum()


def leaderboard(
    values: Array,
    origins: npt.NDArray[np.int64],
    actual: Array,
    forecasts: dict[str, Array],
    m: int,
) -> pd.DataFrame:
    """The measures of each of ``forecasts`` (origins x horizon) against ``actual``, the mean
    over the origins (MASE and RMSSE scaled on the history before each), and the honest
    coverage of their conformal intervals; best MASE first."""
    rows = []
    for name, f in forecasts.items():  # a loop over the methods
        per = [
            {
                "mase": mase(actual[i], f[i], values[:t], m),
                "rmsse": rmsse(actual[i], f[i], values[:t], m),
                "bias": bias(actual[i], f[i]),
                "wape": wape(actual[i], f[i]),
            }
            for i, t in enumerate(origins)
        ]
        means = pd.DataFrame(per).mean()
        cover = conformal_coverage(actual, f, (0.8, 0.95))
        rows.append(
            {
                "method": name,
                **means.to_dict(),
                "coverage_80": cover.get(0.8, math.nan),
                "coverage_95": cover.get(0.95, math.nan),
            }
        )
    board = pd.DataFrame(rows)
    if board.empty:
        return board
    return board.sort_values("mase", kind="stable").reset_index(drop=True)


def forecast_ahead(
    y: Any,
    backtest: Backtest,
    method: str,
    futures: Mapping[str, Array],
    *,
    levels: tuple[float, ...] = (0.8, 0.95),
    top: int = 3,
) -> pd.DataFrame:
    """The chosen ``method``'s forecast of the ``backtest.horizon`` periods after the series,
    with its conformal intervals from all the backtest's errors of that method: columns
    ``step``, ``point``, ``lo_80``, ``hi_80``, ``lo_95``, ``hi_95`` (infinite bounds when the
    backtest has too few origins for a level). ``futures`` holds each method's forecast of
    those periods (refitted on the whole series; a method fitted elsewhere gives its own);
    the combination's is the weighted average of its methods (:func:`combination_weights`),
    whose futures are the ones it needs.
    """
    if method not in backtest.forecasts:
        raise CustvalError(
            f"no method '{method}' in the backtest",
            hint=f"one of: {', '.join(backtest.forecasts)}",
        )
    if method == COMBINATION:
        weights = combination_weights(y, backtest, top)
        point = sum(w * np.asarray(futures[n], np.float64) for n, w in weights.items())
    else:
        point = np.asarray(futures[method], np.float64)
    out = pd.DataFrame({"step": np.arange(1, backtest.horizon + 1), "point": point})
    for level in levels:  # a loop over two levels
        width = conformal_widths(backtest.actual, backtest.forecasts[method], level)
        tag = f"{round(level * 100):d}"
        out[f"lo_{tag}"], out[f"hi_{tag}"] = point - width, point + width
    return out


#: the errors an interval's width is read from, at least: a per-step rank from k origins is
#: the largest error once k < 1/(1 - level) - 1, which covers k/(k+1) of the time, not the level
MIN_ERRORS = 40


def conformal_widths(actual: Array, forecast: Array, level: float) -> Array:
    """The half-width of the level's interval at each horizon step, from backtest errors
    (origins × horizon): the ceil((n+1)·level)-th smallest of the n errors |a − f| at that
    step and its neighbours, the window of ±w steps the smallest holding :data:`MIN_ERRORS`
    errors (w = 0, the step alone, from 40 origins on; every step when k·h is fewer);
    infinite when even all the errors are too few for the level."""
    errors = np.abs(np.asarray(actual, np.float64) - np.asarray(forecast, np.float64))
    k, h = errors.shape
    w = next((w for w in range(h) if k * min(2 * w + 1, h) >= MIN_ERRORS), h)
    out = np.full(h, np.inf)
    for j in range(h):  # a loop over the horizon's steps
        pool = np.sort(errors[:, max(0, j - w) : j + w + 1].ravel())
        rank = math.ceil((pool.size + 1) * level)
        if rank <= pool.size:
            out[j] = pool[rank - 1]
    return out


def conformal_coverage(
    actual: Array, forecast: Array, levels: tuple[float, ...] = (0.8, 0.95)
) -> dict[float, float]:
    """Honest coverage of the conformal intervals: at each origin i the widths come from the
    errors of origins before i only; the share of the actuals inside, over the origins whose
    widths are finite (NaN when none is)."""
    out: dict[float, float] = {}
    for level in levels:  # a loop over two levels
        inside, seen = 0, 0
        for i in range(1, actual.shape[0]):  # a loop over a handful of origins
            width = conformal_widths(actual[:i], forecast[:i], level)
            if not np.isfinite(width).all():
                continue
            inside += int((np.abs(actual[i] - forecast[i]) <= width).sum())
            seen += actual.shape[1]
        out[level] = inside / seen if seen else math.nan
    return out
