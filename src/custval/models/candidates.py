"""The candidate classifiers of the value model, each with exact or documented contributions.

Every candidate has the same small interface: ``fit(schema, X, y)``, ``raw_score(schema, X)``
(the score its contributions add up to), ``predict_proba(schema, X)`` and
``contributions(schema, X) -> (per-feature contributions (rows x schema.columns), base)`` with
``base + contributions.sum(axis=1) == raw_score`` for every row (tests check it). Contributions
are summed back to the original features (one-hot columns and "missing" indicators of a feature
add up to it).

* ``logistic``: L2-regularised logistic regression on the design with the numeric columns
  standardised and the 0/1 columns (one-hot, "was missing") centred but not scaled; its
  regularisation strength C is chosen from 0.01 to 100 by 3-fold cross-validation (ROC AUC)
  inside the rows it is fitted on. The coefficients are then expressed on the standardised
  design (multiplied by the 0/1 columns' standard deviations), the same model. Score: log-odds.
  Contributions are exact: coefficient x standardised value; the base is the intercept, the
  log-odds of a customer at the training means.
* ``lightgbm``: gradient-boosted trees (LightGBM Booster API, native categories). Score:
  log-odds. Contributions are LightGBM's exact TreeSHAP values (``pred_contrib``); the base is the
  expected score.
* ``random_forest``: scikit-learn's random forest on numeric values and category codes. Score:
  probability (the forest averages its trees' class shares). Contributions are the path
  attributions of Saabas ("treeinterpreter"): along each tree's path from the root to the leaf,
  the change of the node's share of positives is credited to the feature the parent split on;
  averaged over the trees. Additive by construction, fast, not Shapley values (a feature that
  splits early can take credit that Shapley would share).
* ``mlp``: a small neural network (scikit-learn's MLPClassifier, ReLU, one hidden layer of 32)
  on the standardised design. Score: log-odds. Contributions are integrated gradients
  (Sundararajan, Taly & Yan 2017) from the training mean (the base) to the customer, with 32
  midpoint steps; the small rest that the finite number of steps leaves is shared out in
  proportion to the absolute attributions, so that they add up to the score exactly.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from scipy.special import expit

from custval.errors import CustvalError
from custval.models.base import Estimator
from custval.models.encoding import FeatureSchema
from custval.models.treeshap import ShallowTreeShap, supports

__all__ = ["CANDIDATES", "Candidate", "make_candidate"]

Array = npt.NDArray[np.float64]


class Candidate(Estimator):
    """Interface of a candidate (module docstring)."""

    name: ClassVar[str] = ""
    #: what ``raw_score`` is: "log-odds" or "probability"
    score: ClassVar[str] = "log-odds"

    def __init__(self, seed: int = 0, threads: int = 2) -> None:
        self.seed = seed
        self.threads = threads

    def fit(self, schema: FeatureSchema, X: Any, y: Array) -> Candidate:
        raise NotImplementedError

    def raw_score(self, schema: FeatureSchema, X: Any) -> Array:
        raise NotImplementedError

    def predict_proba(self, schema: FeatureSchema, X: Any) -> Array:
        raw = self.raw_score(schema, X)
        return expit(raw) if self.score == "log-odds" else raw

    def contributions(self, schema: FeatureSchema, X: Any) -> tuple[Array, Array]:
        raise NotImplementedError

    # model files: text or skops bytes, never pickle
    def dumps(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def loads(cls, data: bytes, seed: int = 0) -> Candidate:
        raise NotImplementedError


def _group_matrix(schema: FeatureSchema) -> Array:
    """Design columns x features: 1 where a design column belongs to a feature."""
    groups = schema.design_groups
    index = {c: j for j, c in enumerate(schema.columns)}
    m = np.zeros((len(groups), len(schema.columns)))
    m[np.arange(len(groups)), [index[g] for g in groups]] = 1.0
    return m


def _skops_dumps(obj: Any) -> bytes:
    import skops.io as sio

    return bytes(sio.dumps(obj))


def _skops_loads(data: bytes) -> Any:
    import skops.io as sio

    trusted = sio.get_untrusted_types(data=data)
    allowed = [t for t in trusted if t.startswith(("sklearn.", "numpy."))]
    if len(allowed) != len(trusted):
        others = sorted(set(trusted) - set(allowed))
        raise CustvalError(
            f"the model file holds types custval does not load: {', '.join(others[:5])}",
            hint="Only scikit-learn and NumPy objects are loaded from model files",
        )
    return sio.loads(data, trusted=allowed)


class Logistic(Candidate):
    name = "logistic"
    score = "log-odds"
    #: the regularisation strengths (C) that inner cross-validation chooses from
    grid: ClassVar[tuple[float, ...]] = (0.01, 0.1, 1.0, 10.0, 100.0)
    inner_folds = 3
    #: C is chosen on at most this many of the training rows (a stratified sample); the
    #: chosen C is then fitted on all of them
    inner_rows = 50_000

    def fit(self, schema: FeatureSchema, X: Any, y: Array) -> Logistic:
        from sklearn.linear_model import LogisticRegression

        design = schema.design(X, scale_indicators=False)
        self.C_ = self._choose_c(design, y)
        self.model_ = LogisticRegression(C=self.C_, max_iter=5000, random_state=self.seed)
        self.model_.fit(design, y)
        # kept as coefficients of the standardised design (schema.design), the same scores
        # and contributions: scoring and the bundles of earlier versions stay as they were
        scale = np.asarray(schema.design_scale) if schema.design_scale else 1.0
        self.model_.coef_ = self.model_.coef_ * np.where(schema.indicator_mask(), scale, 1.0)
        return self

    def _choose_c(self, design: Array, y: Array) -> float:
        """C by inner cross-validation (mean ROC AUC) on the rows given, which are a fold's
        training rows when the value model compares candidates: nothing of its test rows is
        seen. Ties go to the smaller C, the stronger penalty."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold, train_test_split

        self.cv_scores_: dict[float, float] = {}
        if min(y.sum(), y.size - y.sum()) < 2 * self.inner_folds:
            return 1.0  # too few of a class for inner folds: the usual default
        rows = np.arange(y.size)
        if y.size > self.inner_rows:
            rows, _ = train_test_split(
                rows, train_size=self.inner_rows, stratify=y, random_state=self.seed
            )
        d, yy = design[rows], y[rows]
        scores = np.zeros(len(self.grid))
        folds = StratifiedKFold(self.inner_folds, shuffle=True, random_state=self.seed)
        for train, test in folds.split(d, yy):  # a loop over the few inner folds
            model = LogisticRegression(max_iter=5000, warm_start=True, random_state=self.seed)
            for i, c in enumerate(self.grid):  # C ascending: each fit starts from the last
                model.set_params(C=c).fit(d[train], yy[train])
                scores[i] += roc_auc_score(yy[test], model.decision_function(d[test]))
        scores /= self.inner_folds
        self.cv_scores_ = {c: float(v) for c, v in zip(self.grid, scores, strict=True)}
        return self.grid[int(np.argmax(scores))]

    def raw_score(self, schema: FeatureSchema, X: Any) -> Array:
        return np.asarray(self.model_.decision_function(schema.design(X)), dtype=np.float64)

    def contributions(self, schema: FeatureSchema, X: Any) -> tuple[Array, Array]:
        design = schema.design(X)
        per_column = design * self.model_.coef_[0]
        base = np.full(design.shape[0], float(self.model_.intercept_[0]))
        return per_column @ _group_matrix(schema), base

    def dumps(self) -> bytes:
        return _skops_dumps(self.model_)

    @classmethod
    def loads(cls, data: bytes, seed: int = 0) -> Logistic:
        out = cls(seed)
        out.model_ = _skops_loads(data)
        return out


class LightGBM(Candidate):
    name = "lightgbm"
    score = "log-odds"
    #: at most this many trees; early stopping on a tenth of the training rows picks fewer
    rounds = 200
    patience = 30

    def params(self) -> dict[str, Any]:
        # shallow trees (depth 3; early stopping adds trees instead): TreeSHAP's cost grows
        # with leaves x depth squared, and the reasons of a million customers must come in
        # minutes; on the telco and the benchmark data depth 3 is as accurate as depth 4-5
        return {
            "objective": "binary",
            "learning_rate": 0.1,
            "num_leaves": 8,
            "max_depth": 3,
            "min_data_in_leaf": 20,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.9,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "seed": self.seed,
            "num_threads": self.threads,
            "verbosity": -1,
            "deterministic": True,
            "force_row_wise": True,
        }

    def fit(self, schema: FeatureSchema, X: Any, y: Array) -> LightGBM:
        from sklearn.model_selection import train_test_split

        if min(y.sum(), y.size - y.sum()) < 20:
            # too few of a class to hold some out: a fixed, modest number of trees
            return self._boost(schema, X, y, None, fixed_rounds=100)
        # the number of trees is chosen on a tenth of the rows held out of this fit
        _, stop_rows = train_test_split(
            np.arange(y.size), test_size=0.1, stratify=y, random_state=self.seed
        )
        stop = np.zeros(y.size, dtype=bool)
        stop[stop_rows] = True
        return self._boost(schema, X, y, stop)

    def _boost(
        self, schema: FeatureSchema, X: Any, y: Array, stop: Any, fixed_rounds: int = 100
    ) -> Any:
        """Train on the rows not in the boolean mask ``stop``, with early stopping on those
        in it; without a mask, ``fixed_rounds`` trees on all rows."""
        import lightgbm as lgb

        codes = schema.codes(X)
        self._explainer = None  # built from the fitted trees on first use
        cats = list(range(len(schema.numeric), len(schema.columns)))
        names = [f"f{j}" for j in range(codes.shape[1])]
        if stop is None:
            data = lgb.Dataset(codes, label=y, categorical_feature=cats, feature_name=names)
            self.model_ = lgb.train(self.params(), data, num_boost_round=fixed_rounds)
            return self
        data = lgb.Dataset(
            codes[~stop], label=y[~stop], categorical_feature=cats, feature_name=names
        )
        valid = lgb.Dataset(codes[stop], label=y[stop], reference=data)
        self.model_ = lgb.train(
            self.params(),
            data,
            num_boost_round=self.rounds,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(self.patience, verbose=False)],
        )
        return self

    def raw_score(self, schema: FeatureSchema, X: Any) -> Array:
        codes = schema.codes(X)
        return np.asarray(self.model_.predict(codes, raw_score=True), dtype=np.float64)

    def contributions(self, schema: FeatureSchema, X: Any) -> tuple[Array, Array]:
        codes = schema.codes(X)
        # TreeSHAP by pattern tables: the same values as pred_contrib, about 10x faster
        explainer = getattr(self, "_explainer", None)
        if explainer is None:
            dumped = self.model_.dump_model()
            explainer = ShallowTreeShap(dumped) if supports(dumped) else False
            self._explainer = explainer
        if explainer:
            return explainer.contributions(codes)
        contrib = np.asarray(self.model_.predict(codes, pred_contrib=True))
        return contrib[:, :-1], contrib[:, -1]

    def dumps(self) -> bytes:
        return str(self.model_.model_to_string()).encode()

    @classmethod
    def loads(cls, data: bytes, seed: int = 0) -> LightGBM:
        import lightgbm as lgb

        out = cls(seed)
        out.model_ = lgb.Booster(model_str=data.decode())
        return out


class RandomForest(Candidate):
    name = "random_forest"
    score = "probability"
    #: the smallest leaf, and the features each split considers (the spend model's forest,
    #: a regression, sets its own)
    min_leaf = 5
    max_features: float | str = "sqrt"

    def _forest(self) -> Any:
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier

    def fit(self, schema: FeatureSchema, X: Any, y: Array) -> RandomForest:
        # each tree on at most 30,000 rows: on a million customers a full bootstrap per tree
        # costs minutes and gains nothing measurable
        # larger leaves as the table grows keep the trees' depth, and their cost, in check
        self.model_ = self._forest()(
            n_estimators=200 if len(y) <= 50_000 else 100,
            min_samples_leaf=max(self.min_leaf, len(y) // 2_000),
            max_features=self.max_features,
            max_samples=min(len(y), 30_000),
            n_jobs=self.threads,
            random_state=self.seed,
        )
        self.model_.fit(schema.codes(X), y)
        return self

    def raw_score(self, schema: FeatureSchema, X: Any) -> Array:
        return np.asarray(self.model_.predict_proba(schema.codes(X))[:, 1], dtype=np.float64)

    def contributions(self, schema: FeatureSchema, X: Any) -> tuple[Array, Array]:
        from scipy import sparse

        codes = schema.codes(X)
        k = codes.shape[1]
        contrib = np.zeros((codes.shape[0], k))
        base = 0.0
        for tree in self.model_.estimators_:  # a loop over trees; each is vectorised over rows
            t = tree.tree_
            share = self._node_values(t)
            parent = np.full(t.node_count, -1)
            for child in (t.children_left, t.children_right):
                inner = child >= 0
                parent[child[inner]] = np.flatnonzero(inner)
            nodes = np.flatnonzero(parent >= 0)
            delta = share[nodes] - share[parent[nodes]]
            credit = sparse.csr_matrix(
                (delta, (nodes, t.feature[parent[nodes]])), shape=(t.node_count, k)
            )
            contrib += np.asarray((tree.decision_path(codes) @ credit).todense())
            base += share[0]
        n = len(self.model_.estimators_)
        return contrib / n, np.full(codes.shape[0], base / n)

    @staticmethod
    def _node_values(tree: Any) -> Array:
        """What each node predicts: its share of positives."""
        return np.asarray(tree.value[:, 0, 1] / tree.value[:, 0, :].sum(axis=1))

    def dumps(self) -> bytes:
        return _skops_dumps(self.model_)

    @classmethod
    def loads(cls, data: bytes, seed: int = 0) -> RandomForest:
        out = cls(seed)
        out.model_ = _skops_loads(data)
        return out


class MLP(Candidate):
    name = "mlp"
    score = "log-odds"
    steps = 32

    def fit(self, schema: FeatureSchema, X: Any, y: Array) -> MLP:
        from sklearn.neural_network import MLPClassifier

        # early stopping on 15% of the rows with a patience of 20 epochs: the default (10%, 10)
        # stops before a small data set has been learnt at all
        self.model_ = MLPClassifier(
            hidden_layer_sizes=(32,),
            alpha=0.1,
            # holding out 15% needs a few of each class
            early_stopping=bool(min(y.sum(), y.size - y.sum()) >= 20),
            validation_fraction=0.15,
            n_iter_no_change=20,
            max_iter=200,
            # small batches learn small tables; large ones keep a million rows fast
            batch_size=min(200, int(0.8 * len(y))) if len(y) < 20_000 else 1024,
            random_state=self.seed,
        )
        self.model_.fit(schema.design(X), y)
        return self

    def _forward(self, design: Array) -> tuple[Array, list[Array]]:
        """Log-odds and each hidden layer's pre-activations."""
        h = design
        pre = []
        layers = list(zip(self.model_.coefs_, self.model_.intercepts_, strict=True))
        for w, b in layers[:-1]:
            z = h @ w + b
            pre.append(z)
            h = np.maximum(z, 0.0)
        w, b = layers[-1]
        return (h @ w + b)[:, 0], pre

    def _gradient(self, design: Array) -> Array:
        """d log-odds / d design, by back-propagation through the ReLU layers."""
        _, pre = self._forward(design)
        g = np.broadcast_to(self.model_.coefs_[-1][:, 0], (design.shape[0], pre[-1].shape[1]))
        for i in range(len(pre) - 1, -1, -1):  # a loop over the few layers
            g = g * (pre[i] > 0)
            g = g @ self.model_.coefs_[i].T
        return g

    def raw_score(self, schema: FeatureSchema, X: Any) -> Array:
        return self._forward(schema.design(X))[0]

    def contributions(self, schema: FeatureSchema, X: Any) -> tuple[Array, Array]:
        design = schema.design(X)
        zero = np.zeros((1, design.shape[1]))  # the training mean, standardised
        base_score = float(self._forward(zero)[0][0])
        grads = np.zeros_like(design)
        for step in (np.arange(self.steps) + 0.5) / self.steps:  # a loop over the path's steps
            grads += self._gradient(design * step)
        attr = design * grads / self.steps
        # share out the Riemann rest so that the attributions add up to the score exactly
        rest = self._forward(design)[0] - base_score - attr.sum(axis=1)
        weight = np.abs(attr)
        total = weight.sum(axis=1, keepdims=True)
        share = np.where(total > 0, weight / np.where(total > 0, total, 1.0), 1.0 / attr.shape[1])
        attr = attr + share * rest[:, None]
        return attr @ _group_matrix(schema), np.full(design.shape[0], base_score)

    def dumps(self) -> bytes:
        return _skops_dumps(self.model_)

    @classmethod
    def loads(cls, data: bytes, seed: int = 0) -> MLP:
        out = cls(seed)
        out.model_ = _skops_loads(data)
        return out


CANDIDATES: dict[str, type[Candidate]] = {
    c.name: c for c in (Logistic, RandomForest, LightGBM, MLP)
}


def make_candidate(name: str, seed: int = 0, threads: int = 2) -> Candidate:
    """A fresh candidate by name (logistic, random_forest, lightgbm, mlp)."""
    if name not in CANDIDATES:
        raise CustvalError(
            f"unknown candidate model '{name}'", hint="Use one of " + ", ".join(CANDIDATES)
        )
    return CANDIDATES[name](seed=seed, threads=threads)
