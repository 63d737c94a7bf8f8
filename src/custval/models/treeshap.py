"""Exact TreeSHAP contributions of a LightGBM model of shallow trees, vectorised over rows.

LightGBM's own ``pred_contrib`` runs the TreeSHAP recursion (Lundberg et al., 2018) for every
row and tree: about 60 microseconds per customer for 200 trees of depth 3 on two cores, a
minute for a million customers. But the contributions of one tree to one row depend only on
which way the row goes at each of the tree's splits: with ``m`` internal nodes there are at
most ``2**m`` such patterns (128 for a tree of depth 3). So this module computes, once per
tree, the SHAP values of every pattern, exactly, from their definition

    phi_j = sum over S in F minus {j} of  |S|! (d - |S| - 1)! / d!  (f(S + {j}) - f(S))

where F is the tree's set of ``d`` distinct features and f(S) is the tree's path-dependent
expectation (TreeSHAP's): at a split on a feature in S the row's own way, elsewhere both ways
weighted by the training rows that went each way. Then each row only needs its pattern (a few
comparisons per split) and a table lookup per feature: the same numbers as ``pred_contrib``
(to rounding) in a tenth of the time.

The row's way at a split follows LightGBM's prediction rules exactly (``Tree::Decision``):
numeric splits send NaN to 0 unless the split has learned a side for missing values (missing
type NaN), a zero to the default side under missing type Zero; categorical splits truncate the
code toward zero and send NaN and negative codes right. Models this module does not cover
(deeper trees, several trees per iteration, averaged output, linear trees) are left to
``pred_contrib``: :func:`supports`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from custval.models.fitting import map_chunks, row_chunks

__all__ = ["ShallowTreeShap", "supports"]

Array = npt.NDArray[np.float64]

#: trees with more internal nodes than this go to LightGBM (2**10 patterns per tree at most)
MAX_INTERNAL_NODES = 10
#: LightGBM's kZeroThreshold
_ZERO = 1e-35


@dataclass
class _Split:
    feature: int
    categorical: bool
    threshold: float
    categories: tuple[int, ...]
    default_left: bool
    missing: str  # "None", "Zero" or "NaN"


@dataclass
class _Tree:
    splits: list[_Split]  # internal nodes; split k is bit k of a row's pattern
    features: npt.NDArray[np.int64]  # the tree's distinct features
    table: Array  # patterns x features: each feature's contribution
    expected: float


def _walk(node: dict[str, Any], splits: list[dict[str, Any]]) -> None:
    if "split_index" in node:
        splits.append(node)
        _walk(node["left_child"], splits)
        _walk(node["right_child"], splits)


def supports(model: dict[str, Any]) -> bool:
    """Whether ``model`` (a ``Booster.dump_model()``) can be explained here."""
    if model.get("num_tree_per_iteration", 1) != 1 or model.get("average_output", False):
        return False
    for info in model["tree_info"]:
        splits: list[dict[str, Any]] = []
        _walk(info["tree_structure"], splits)
        if len(splits) > MAX_INTERNAL_NODES or _leaves_have_coefficients(info["tree_structure"]):
            return False
    return True


def _leaves_have_coefficients(node: dict[str, Any]) -> bool:
    if "split_index" in node:
        return _leaves_have_coefficients(node["left_child"]) or _leaves_have_coefficients(
            node["right_child"]
        )
    return "leaf_coeff" in node


def _tree(structure: dict[str, Any]) -> _Tree:
    """One tree's pattern table, from its dumped structure."""
    nodes: list[dict[str, Any]] = []
    _walk(structure, nodes)
    if not nodes:  # a single leaf: a constant, no contribution
        return _Tree([], np.empty(0, np.int64), np.zeros((1, 0)), float(structure["leaf_value"]))
    position = {id(n): k for k, n in enumerate(nodes)}
    features = np.array(sorted({int(n["split_feature"]) for n in nodes}), dtype=np.int64)
    slot = {int(f): j for j, f in enumerate(features)}
    d, m = len(features), len(nodes)
    patterns = np.arange(2**m)
    subsets = np.arange(2**d)
    goes_left = [((patterns >> k) & 1).astype(bool)[None, :] for k in range(m)]
    in_subset = [((subsets >> j) & 1).astype(bool)[:, None] for j in range(d)]

    def count(node: dict[str, Any]) -> float:
        return float(node["internal_count"] if "split_index" in node else node["leaf_count"])

    def expectation(node: dict[str, Any]) -> Array:
        """f(S) for every subset S (rows) and pattern (columns) below ``node``."""
        if "split_index" not in node:
            return np.full((1, 1), float(node["leaf_value"]))
        left, right = node["left_child"], node["right_child"]
        lo, hi = expectation(left), expectation(right)
        own = np.where(goes_left[position[id(node)]], lo, hi)
        # both ways, in the proportions of the training rows (LightGBM's data counts)
        total = count(node)
        both = (count(left) * lo + count(right) * hi) / total if total > 0 else (lo + hi) / 2
        return np.where(in_subset[slot[int(node["split_feature"])]], own, both)

    f = np.broadcast_to(expectation(structure), (2**d, 2**m))
    size = np.array([bin(s).count("1") for s in subsets])
    weight = np.array([math.factorial(s) * math.factorial(d - s - 1) for s in range(d)]) / (
        math.factorial(d)
    )
    table = np.zeros((2**m, d))
    for j in range(d):  # a loop over the tree's features
        without = subsets[(subsets >> j) & 1 == 0]
        w = weight[size[without]][:, None]
        table[:, j] = (w * (f[without | (1 << j)] - f[without])).sum(axis=0)
    splits = [
        _Split(
            feature=int(n["split_feature"]),
            categorical=n["decision_type"] == "==",
            threshold=float(n["threshold"]) if n["decision_type"] != "==" else math.nan,
            categories=tuple(int(c) for c in str(n["threshold"]).split("||"))
            if n["decision_type"] == "=="
            else (),
            default_left=bool(n["default_left"]),
            missing=str(n["missing_type"]),
        )
        for n in nodes
    ]
    return _Tree(splits, features, table, float(f[0, 0]))


class ShallowTreeShap:
    """TreeSHAP contributions of a LightGBM binary or regression model of shallow trees.

    Parameters
    ----------
    model : dict
        ``Booster.dump_model()`` of the model; :func:`supports` must hold.

    Example
    -------
    >>> explainer = ShallowTreeShap(booster.dump_model())  # doctest: +SKIP
    >>> contrib, base = explainer.contributions(X)  # same as booster.predict(X, pred_contrib=True)
    """

    def __init__(self, model: dict[str, Any]) -> None:
        if not supports(model):
            raise ValueError("the model has trees this explainer does not cover")
        self.n_features_ = int(model["max_feature_idx"]) + 1
        self.trees_ = [_tree(info["tree_structure"]) for info in model["tree_info"]]
        self.expected_value_ = float(sum(t.expected for t in self.trees_))
        splits = [s for t in self.trees_ for s in t.splits]
        self._categorical = sorted({s.feature for s in splits if s.categorical})
        # per categorical split a lookup code -> goes left; its last slot stands for NaN,
        # negative codes and codes beyond every split's categories, which all go right
        self._top = max((max(s.categories) for s in splits if s.categories), default=0)
        self._lookups = {
            id(s): np.isin(np.arange(self._top + 2), s.categories) for s in splits if s.categorical
        }
        self._flatten(splits)

    #: up to this many rows go through the flat arrays (every split of every tree at once)
    small_batch = 256

    def _flatten(self, splits: list[_Split]) -> None:
        """Every split and every table entry of the forest in flat arrays, so that a few rows
        (an online request) are explained in a fixed number of NumPy calls, not a loop over
        trees."""
        kinds = {"None": 0, "Zero": 1, "NaN": 2}
        self._node_feature = np.array([s.feature for s in splits], dtype=np.int64)
        self._node_threshold = np.array([s.threshold for s in splits])
        self._node_kind = np.array([3 if s.categorical else kinds[s.missing] for s in splits])
        self._node_default_left = np.array([s.default_left for s in splits], dtype=bool)
        self._node_tree = np.concatenate(
            [np.full(len(t.splits), i) for i, t in enumerate(self.trees_)] + [np.empty(0, int)]
        ).astype(np.int64)
        self._node_bit = np.concatenate(
            [2.0 ** np.arange(len(t.splits)) for t in self.trees_] + [np.empty(0)]
        )
        self._cat_nodes = np.flatnonzero(self._node_kind == 3)
        self._cat_lookup = (
            np.array([self._lookups[id(splits[i])] for i in self._cat_nodes])
            if self._cat_nodes.size
            else np.zeros((0, self._top + 2), dtype=bool)
        )
        # entry (tree t, pattern q, slot j) of the tables sits at base_t + q * d_t + j
        sizes = [t.table.size for t in self.trees_]
        bases = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._flat_table = np.concatenate([t.table.ravel() for t in self.trees_])
        pairs = [
            (i, j, int(f)) for i, t in enumerate(self.trees_) for j, f in enumerate(t.features)
        ]
        tree_of = np.array([i for i, _, _ in pairs], dtype=np.int64)
        self._pair_tree = tree_of
        self._pair_base = bases[tree_of] + np.array([j for _, j, _ in pairs], dtype=np.int64)
        self._pair_width = np.array([len(self.trees_[i].features) for i in tree_of], np.int64)
        self._pair_feature = np.array([f for _, _, f in pairs], dtype=np.int64)

    def contributions(self, X: Array, chunk: int = 65_536) -> tuple[Array, Array]:
        """Per-feature contributions (rows x features) and the base value per row, in the
        model's raw score: base + contributions.sum(axis=1) is the raw prediction."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_:
            raise ValueError(f"X must have {self.n_features_} columns, not {X.shape}")
        if X.shape[0] <= self.small_batch:
            return self._explain_flat(X), np.full(X.shape[0], self.expected_value_)
        out = np.zeros((self.n_features_, X.shape[0]))  # features x rows: contiguous adds

        def work(rows: slice) -> None:
            self._explain(X[rows], out[:, rows])

        map_chunks(work, row_chunks(X.shape[0], chunk))
        return out.T, np.full(X.shape[0], self.expected_value_)

    def _explain_flat(self, X: Array) -> Array:
        n, p = X.shape
        v = X[:, self._node_feature]  # rows x splits
        nan = np.isnan(v)
        as_zero = np.where(nan, 0.0, v)
        left = as_zero <= self._node_threshold
        kind = self._node_kind
        # missing type NaN: NaN goes to the default side, numbers compare as they are
        left = np.where((kind == 2) & nan, self._node_default_left, left)
        # missing type Zero: zero (and NaN, read as 0) goes to the default side
        zero = np.abs(as_zero) <= _ZERO
        left = np.where((kind == 1) & zero, self._node_default_left, left)
        if self._cat_nodes.size:
            c = v[:, self._cat_nodes]
            outside = np.isnan(c) | (c <= -1) | (c >= self._top + 1)
            codes = np.where(outside, -1, np.where(outside, 0, c).astype(np.int64))
            rows = np.arange(self._cat_nodes.size)
            left[:, self._cat_nodes] = self._cat_lookup[rows, codes]
        n_trees = len(self.trees_)
        # each row's pattern per tree: the sum of its splits' bits that go left
        at = (np.arange(n)[:, None] * n_trees + self._node_tree).ravel()
        pattern = np.bincount(at, weights=(left * self._node_bit).ravel(), minlength=n * n_trees)
        pattern = pattern.reshape(n, n_trees).astype(np.int64)
        index = self._pair_base + pattern[:, self._pair_tree] * self._pair_width
        values = self._flat_table[index]  # rows x (tree, feature) pairs
        at = (np.arange(n)[:, None] * p + self._pair_feature).ravel()
        return np.bincount(at, weights=values.ravel(), minlength=n * p).reshape(n, p)

    def _explain(self, X: Array, out: Array) -> None:
        n = X.shape[0]
        columns = np.ascontiguousarray(X.T)
        nan = np.isnan(columns)
        as_zero = np.where(nan, 0.0, columns)  # LightGBM's NaN -> 0 where no side is learned
        zero = np.abs(as_zero) <= _ZERO
        codes = {}
        for f in self._categorical:  # a loop over categorical features
            c = columns[f]
            outside = nan[f] | (c <= -1) | (c >= self._top + 1)
            codes[f] = np.where(outside, -1, np.where(outside, 0, c).astype(np.int64))
        pattern = np.empty(n, dtype=np.int64)
        left = np.empty(n, dtype=bool)
        for tree in self.trees_:  # a loop over trees; each step is vectorised over rows
            if not tree.splits:
                continue
            pattern[:] = 0
            for k, s in enumerate(tree.splits):
                f = s.feature
                if s.categorical:
                    np.take(self._lookups[id(s)], codes[f], out=left)
                elif s.missing == "NaN":
                    np.less_equal(columns[f], s.threshold, out=left)
                    if s.default_left:
                        left |= nan[f]
                else:
                    np.less_equal(as_zero[f], s.threshold, out=left)
                    if s.missing == "Zero":
                        if s.default_left:
                            left |= zero[f]
                        else:
                            left &= ~zero[f]
                pattern |= left.astype(np.int64) << k
            for j, f in enumerate(tree.features):
                out[f] += np.take(tree.table[:, j], pattern)
