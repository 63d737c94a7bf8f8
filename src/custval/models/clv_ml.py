"""Machine-learned CLV: a customer's spend over a horizon, learnt from all that is known of them.

The probabilistic CLV (:mod:`custval.models.clv`) reads only the purchase history. A company
also knows each customer's profile, products, channels and web and product usage; a regression
on the feature table uses all of it. The pipeline (:func:`custval.pipeline.clv_leaderboard`)
builds the training rows -- features at a cutoff, strictly before it, and the spend in the
window after it, for several cutoffs stacked -- and this module holds what learns from them:

* :class:`SpendRegressor` -- the estimator: ``fit(X, y)``, ``predict(X)`` (expected spend over the
  window, in the data's currency), ``calibrate(X, y)`` then ``interval(X)`` (conformal
  intervals), ``contributions(X)`` (exact per-feature contributions to the model's score, for
  the reasons). Its ``model`` is one of:

  - ``lightgbm``: gradient-boosted trees with a Tweedie loss (variance power 1.5), the loss of
    a spend that is zero for most customers and skewed for the others; log link. Score: log of
    the expected spend; contributions are exact TreeSHAP values, so a contribution c multiplies
    the expected spend by exp(c).
  - ``random_forest``: scikit-learn's random forest regression on spend. Score: spend;
    contributions by Saabas' path attribution, as in the value model (additive, not Shapley).
  - ``mlp``: a small neural network (32 ReLU units) on the standardised design with a Poisson
    loss and an exponential output, so that it, too, predicts the mean spend on a log scale;
    its score is clipped to the largest training spend (a network extrapolates without bound).
    Score: log spend; contributions are integrated gradients, as in the value model.

  The hybrid of the pipeline is ``lightgbm`` on the features plus the probabilistic model's
  outputs for the same window (P(alive), expected purchases and expected spend).

* :func:`clv_metrics`, :func:`decile_table`, :func:`choose` -- how the leaderboard judges and
  picks: per-customer MAE and RMSE, the aggregate error of the total, Spearman's rank
  correlation, the share of the actual spend held by the predicted top 20%, and predicted
  against actual by decile of the prediction.

Intervals are split-conformal (Vovk et al. 2005; Lei et al. 2018) on the residuals of rows the
model did not learn from (the pipeline uses the latest window, held out in time), scaled by the
prediction so that a big spender's interval is wider than an occasional buyer's:
``s = prediction + tau`` with tau the median prediction, and the lower and upper bounds are
``prediction - q_lo * s`` (at least 0) and ``prediction + q_hi * s``, where q_lo and q_hi are
the ``(1 + level) / 2`` quantiles of the scaled shortfalls and excesses. Under exchangeability
of the held-out rows and the scored ones, each side misses about ``(1 - level) / 2`` of the
customers; the coverage is reported on the holdout, since the future need not be exchangeable
with the past.

Example
-------
>>> model = SpendRegressor("lightgbm").fit(features_at_cutoff, spend_after_cutoff)  # doctest: +SKIP
>>> model.calibrate(features_later, spend_later).interval(features_today)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from custval.errors import CustvalError, FitError
from custval.models.base import Estimator
from custval.models.candidates import MLP, Candidate, LightGBM, RandomForest
from custval.models.encoding import FeatureSchema, infer_schema
from custval.models.value import as_frame

__all__ = ["SPEND_MODELS", "SpendRegressor", "choose", "clv_metrics", "decile_table"]

Array = npt.NDArray[np.float64]


class _TweedieTrees(LightGBM):
    name = "lightgbm"
    score = "log spend"

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "objective": "tweedie",
            "tweedie_variance_power": 1.5,
            "learning_rate": 0.05,
            "min_data_in_leaf": 50,
        }

    rounds = 400
    patience = 40

    def fit(self, schema: FeatureSchema, X: Any, y: Array) -> _TweedieTrees:
        # a tenth of the customers (all their cutoffs' rows) stops the boosting: a customer in
        # both halves would make the held-out error look better than it is
        if "customer_id" in X.columns:
            ids = X["customer_id"].astype(str).to_numpy(dtype=object)
            stop = pd.util.hash_array(ids, hash_key=f"custvalstop{self.seed:05d}"[:16]) % 10 == 0
        else:
            stop = np.random.default_rng(self.seed).random(y.size) < 0.1
        if stop.sum() < 50 or (y[~stop] > 0).sum() < 20:
            return self._boost(schema, X, y, None, fixed_rounds=150)  # type: ignore[no-any-return]
        return self._boost(schema, X, y, stop)  # type: ignore[no-any-return]


class _ForestRegression(RandomForest):
    name = "random_forest"
    score = "spend"

    # the value model's forest (subsampled trees, leaves that grow with the table), as a
    # regression with larger leaves and half the features at each split
    min_leaf = 10
    max_features = 0.5

    def _forest(self) -> Any:
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor

    def raw_score(self, schema: FeatureSchema, X: Any) -> Array:
        return np.asarray(self.model_.predict(schema.codes(X)), dtype=np.float64)

    @staticmethod
    def _node_values(tree: Any) -> Array:
        return np.asarray(tree.value[:, 0, 0], dtype=np.float64)


class _NetRegression(MLP):
    name = "mlp"
    score = "log spend"

    def fit(self, schema: FeatureSchema, X: Any, y: Array) -> _NetRegression:
        from sklearn.neural_network import MLPRegressor

        # a Poisson loss with an exponential output: the mean of a skewed, zero-inflated
        # spend, on the log scale; spend in units of its mean keeps the gradients tame
        self.unit_ = float(y.mean()) or 1.0
        self.model_ = MLPRegressor(
            loss="poisson",
            hidden_layer_sizes=(32,),
            alpha=0.1,
            early_stopping=len(y) >= 200,
            validation_fraction=0.15,
            n_iter_no_change=20,
            max_iter=200,
            batch_size=min(200, int(0.8 * len(y))) if len(y) < 20_000 else 1024,
            random_state=self.seed,
        )
        self.model_.fit(schema.design(X), y / self.unit_)
        return self

    def raw_score(self, schema: FeatureSchema, X: Any) -> Array:
        # log of the expected spend: the output layer's input, plus the log of the unit
        return self._forward(schema.design(X))[0] + np.log(self.unit_)

    def contributions(self, schema: FeatureSchema, X: Any) -> tuple[Array, Array]:
        contrib, base = super().contributions(schema, X)
        return contrib, base + np.log(self.unit_)


@contextmanager
def _numeric_failures(what: str) -> Iterator[None]:
    """A numeric failure of scikit-learn, LightGBM or NumPy inside the block (a singular
    matrix, an overflow, a LightGBM error) as a FitError: these data do not determine the
    model, and a caller that can go on without it catches FitError alone."""
    import lightgbm as lgb

    try:
        yield
    except (ValueError, ArithmeticError, lgb.basic.LightGBMError) as exc:
        raise FitError(
            f"{what} on these data ({type(exc).__name__}: {exc})",
            hint="Use more customers or a longer history",
        ) from exc


#: the machine-learned spend models by name
SPEND_MODELS: dict[str, type[Candidate]] = {
    c.name: c for c in (_TweedieTrees, _ForestRegression, _NetRegression)
}


class SpendRegressor(Estimator):
    """Expected spend over a window from a customer's features (see the module docstring).

    Parameters
    ----------
    model : {"lightgbm", "random_forest", "mlp"}
    level : float
        Level of the conformal intervals (after :meth:`calibrate`).
    seed : int
    threads : int

    Attributes (after ``fit``)
    --------------------------
    schema_ : FeatureSchema
        The features, their types and encodings.
    candidate_ : the fitted model.
    cap_ : float
        log of the largest training spend: the MLP's score is clipped to it.
    conformal_ : dict or None
        ``q_low``, ``q_high`` and ``tau`` of the intervals, and ``rows`` they were learnt on.
    """

    def __init__(
        self, model: str = "lightgbm", level: float = 0.9, seed: int = 0, threads: int = 2
    ) -> None:
        self.model = model
        self.level = level
        self.seed = seed
        self.threads = threads

    def fit(self, X: pd.DataFrame, y: Any, exclude: tuple[str, ...] = ("customer_id",)) -> Self:
        """Learn spend ``y`` (currency, one value per row of ``X``) from the columns of ``X``.

        Raises :class:`~custval.errors.FitError` when the data do not determine the model
        (fewer than 10 rows with spend, or a numeric failure of the learning library), a
        :class:`~custval.errors.CustvalError` for malformed input."""
        if self.model not in SPEND_MODELS:
            raise CustvalError(
                f"unknown CLV model '{self.model}'",
                hint="Use one of " + ", ".join(SPEND_MODELS),
            )
        if not 0 < self.level < 1:
            raise CustvalError(f"the interval level must be between 0 and 1, not {self.level}")
        target = np.asarray(y, dtype=np.float64)
        if target.shape != (len(X),) or not np.isfinite(target).all():
            raise CustvalError("the spend to learn must be one finite number per customer")
        if (target > 0).sum() < 10:
            raise FitError(
                f"only {(target > 0).sum()} of {target.size:,} customers spent anything in the "
                "training windows: too few to learn spend from",
                hint="Use a longer history or a shorter horizon",
            )
        # refunds larger than purchases make a window's net spend negative; spend is learnt
        # as at least 0 (a Tweedie loss has no negative values)
        target = np.maximum(target, 0.0)
        schema = infer_schema(X, exclude=exclude)  # standardisation learnt too
        candidate = SPEND_MODELS[self.model](seed=self.seed, threads=self.threads)
        with _numeric_failures(f"the {self.model} spend model could not be fitted"):
            candidate.fit(schema, X, target)
        self.schema_ = schema
        self.candidate_ = candidate
        # a network extrapolates without bound off the training data: no customer is given
        # more than the most any customer spent in a training window
        self.cap_ = float(np.log(target.max()))
        self.conformal_: dict[str, float] | None = None
        return self

    @property
    def score_kind_(self) -> str:
        """What :meth:`contributions` add up to: log spend, or spend for the forest."""
        return str(self.candidate_.score)

    def _from_score(self, raw: Array) -> Array:
        if self.model == "lightgbm":
            return np.exp(raw)
        if self.model == "mlp":
            return np.exp(np.minimum(raw, self.cap_))
        return raw.clip(min=0.0)

    def predict(self, X: pd.DataFrame, source: str = "input") -> Array:
        """Expected spend over the window (currency) of each row of ``X``."""
        return self._from_score(self.candidate_.raw_score(self.schema_, as_frame(X, source)))

    def contributions(self, X: pd.DataFrame, source: str = "input") -> tuple[Array, Array]:
        """(rows x features contributions, base) in the model's score (``score_kind_``):
        ``base + contributions.sum(axis=1)`` is the score of each row, the one
        :meth:`predict` turns into spend (for the MLP, after its cap: a capped row's
        contributions are scaled down together to reach it)."""
        contrib, base = self.candidate_.contributions(self.schema_, as_frame(X, source))
        if self.model == "mlp":
            total = contrib.sum(axis=1)
            over = base + total > self.cap_
            if over.any():
                shrink = np.where(over, (self.cap_ - base) / np.where(over, total, 1.0), 1.0)
                contrib = contrib * shrink[:, None]
        return contrib, base

    def calibrate(self, X: pd.DataFrame, y: Any) -> Self:
        """Learn the interval bounds from the residuals on rows the model did not learn from
        (at least ``2 / (1 - level)`` of them: fewer cannot bound a ``level`` interval, a
        :class:`~custval.errors.FitError`)."""
        actual = np.maximum(np.asarray(y, dtype=np.float64), 0.0)
        n = actual.size
        # split conformal: the k-th smallest of n scores, k = ceil((n + 1) * (1 + level) / 2)
        k = int(np.ceil((n + 1) * (1 + self.level) / 2))
        if k > n:
            raise FitError(
                f"{n} customers held out for the {self.level:.0%} intervals: too few to bound "
                f"them (at least {int(np.ceil(2 / (1 - self.level)))} are needed)",
                hint="Use more customers or a lower interval level",
            )
        with _numeric_failures(f"the {self.model} spend model's intervals could not be learnt"):
            predicted = self.predict(X)
        tau = float(np.median(predicted)) or float(predicted.mean()) or 1.0
        scaled = (actual - predicted) / (predicted + tau)
        self.conformal_ = {
            "q_low": float(np.sort(-scaled)[k - 1]),
            "q_high": float(np.sort(scaled)[k - 1]),
            "tau": tau,
            "rows": float(n),
        }
        return self

    def interval(self, X: pd.DataFrame, predicted: Array | None = None) -> tuple[Array, Array]:
        """(lower, upper) bounds of each row's spend at the model's level."""
        if self.conformal_ is None:
            raise CustvalError("the model has no intervals: calibrate it on held-out rows first")
        mid = self.predict(X) if predicted is None else predicted
        scale = mid + self.conformal_["tau"]
        lower = np.maximum(mid - self.conformal_["q_low"] * scale, 0.0)
        return lower, mid + self.conformal_["q_high"] * scale

    def dumps(self) -> tuple[dict[str, Any], bytes]:
        """The fitted model as (a JSON-able description, the model file's bytes): LightGBM's
        text format or a skops file, never pickle (:mod:`custval.store.bundles`). The
        description holds the feature schema, the intervals, the libraries and the file's
        SHA-256; :meth:`loads` reads both back."""
        import hashlib
        from importlib.metadata import version as pkg_version

        if not hasattr(self, "candidate_"):
            raise CustvalError("the spend model is not fitted yet", hint="Call fit first")
        payload = self.candidate_.dumps()
        return {
            "format": "custval-spend-model",
            "format_version": 1,
            "model": self.model,
            "level": self.level,
            "seed": self.seed,
            "schema": self.schema_.to_dict(),
            "cap": self.cap_,
            # the MLP learns spend in units of the training mean
            "unit": getattr(self.candidate_, "unit_", None),
            "conformal": self.conformal_,
            "libraries": {lib: pkg_version(lib) for lib in ("scikit-learn", "lightgbm")},
            "sha256": hashlib.sha256(payload).hexdigest(),
        }, payload

    @classmethod
    def loads(cls, saved: dict[str, Any], payload: bytes) -> SpendRegressor:
        """A fitted model from :meth:`dumps`' two parts, after checking that they belong
        together and that scikit-learn is the training minor version (for its models)."""
        import hashlib
        from importlib.metadata import version as pkg_version

        try:
            if saved.get("format") != "custval-spend-model" or saved["model"] not in SPEND_MODELS:
                raise CustvalError("this is not a custval spend model")
            if hashlib.sha256(payload).hexdigest() != saved["sha256"]:
                raise CustvalError("the spend model's file does not match its description")
            if saved["model"] != "lightgbm":
                trained, here = saved["libraries"]["scikit-learn"], pkg_version("scikit-learn")
                if trained.split(".")[:2] != here.split(".")[:2]:
                    raise CustvalError(
                        f"the spend model was trained with scikit-learn {trained}, this is "
                        f"{here}: it may not load or predict the same",
                        hint="Score again with this installation",
                    )
            out = cls(saved["model"], level=float(saved["level"]), seed=int(saved["seed"]))
            out.schema_ = FeatureSchema.from_dict(saved["schema"])
            out.candidate_ = SPEND_MODELS[saved["model"]].loads(payload, seed=out.seed)
            if saved.get("unit") is not None:
                out.candidate_.unit_ = float(saved["unit"])  # type: ignore[attr-defined]
            out.cap_ = float(saved["cap"])
            out.conformal_ = saved.get("conformal")
        except (KeyError, TypeError, ValueError, AttributeError, UnicodeDecodeError) as exc:
            raise CustvalError(
                f"the saved spend model is damaged or incomplete ({type(exc).__name__}: {exc})"
            ) from None
        return out


# ---- judging ------------------------------------------------------------------------------


def clv_metrics(actual: Any, predicted: Any, top_share: float = 0.2) -> dict[str, float]:
    """How well ``predicted`` spend matches ``actual`` spend over the same window.

    ``mae`` and ``rmse`` per customer (currency), ``total_error`` ((predicted total - actual
    total) / actual total), ``spearman`` (rank correlation), ``top20_capture`` (share of the
    actual spend held by the customers with the top ``top_share`` of predictions; ties broken
    by row order) and ``top20_best`` (that share for a perfect ranking, for scale).

    Example
    -------
    >>> clv_metrics([0, 10, 30], [1, 9, 33])["mae"]
    1.6666666666666667
    """
    from scipy.stats import spearmanr

    y = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if y.shape != p.shape or y.size == 0:
        raise CustvalError("actual and predicted spend must be two arrays of the same length")
    n_top = max(1, round(top_share * y.size))
    total = y.sum()
    top = np.argsort(-p, kind="stable")[:n_top]
    best = np.sort(y)[::-1][:n_top]
    rho = spearmanr(p, y).statistic if np.ptp(p) > 0 and np.ptp(y) > 0 else float("nan")
    return {
        "mae": float(np.abs(p - y).mean()),
        "rmse": float(np.sqrt(((p - y) ** 2).mean())),
        "total_error": float(p.sum() / total - 1) if total else float("nan"),
        "spearman": float(rho),
        "top20_capture": float(y[top].sum() / total) if total else float("nan"),
        "top20_best": float(best.sum() / total) if total else float("nan"),
    }


def decile_table(actual: Any, predicted: Any, bins: int = 10) -> pd.DataFrame:
    """Predicted against actual mean spend by decile of the prediction (``decile`` 1 = the
    lowest predictions; equal-sized groups by rank, ties by row order): ``customers``,
    ``predicted_mean``, ``actual_mean``, ``predicted_total``, ``actual_total``."""
    y = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    rank = np.empty(p.size, dtype=np.int64)
    rank[np.argsort(p, kind="stable")] = np.arange(p.size)
    decile = rank * bins // max(p.size, 1) + 1
    frame = pd.DataFrame({"decile": decile, "predicted": p, "actual": y})
    out = frame.groupby("decile").agg(
        customers=("actual", "size"),
        predicted_mean=("predicted", "mean"),
        actual_mean=("actual", "mean"),
        predicted_total=("predicted", "sum"),
        actual_total=("actual", "sum"),
    )
    return out.reset_index()


#: the most a chosen model may miss the total by, while another misses it by less
TOTAL_TOLERANCE = 0.10


def choose(board: pd.DataFrame) -> str:
    """The best row of a leaderboard (columns ``model``, ``mae``, ``total_error``): the lowest
    per-customer MAE among the models whose total is within 10% of the actual; when none is,
    the lowest MAE. MAE alone would favour predicting little for everyone (most customers
    spend nothing in a window), which misleads a budget built on the total."""
    if board.empty:
        raise CustvalError("the leaderboard is empty: no CLV model could be evaluated")
    fine = board[board["total_error"].abs() <= TOTAL_TOLERANCE]
    pool = fine if not fine.empty else board
    return str(pool.sort_values(["mae", "model"]).iloc[0]["model"])
