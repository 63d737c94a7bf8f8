"""Pattern-table TreeSHAP equals LightGBM's own pred_contrib, split rule by split rule."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from custval.models.treeshap import ShallowTreeShap, supports


def data(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            rng.normal(size=n),
            rng.exponential(size=n),
            rng.integers(0, 6, n).astype(float),  # categorical codes
            np.where(rng.random(n) < 0.3, 0.0, rng.normal(size=n)),  # many zeros
            rng.normal(size=n),
        ]
    )
    X[rng.random(n) < 0.15, 0] = np.nan  # missing values
    X[rng.random(n) < 0.1, 2] = np.nan  # missing categories
    logit = X[:, 1] - np.nan_to_num(X[:, 0]) + (X[:, 2] == 3) - 0.5 * X[:, 3] * X[:, 4]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return X, y


def booster(params: dict[str, Any], rounds: int = 60, objective: str = "binary") -> lgb.Booster:
    X, y = data()
    base = {"objective": objective, "verbosity": -1, "seed": 1, "deterministic": True}
    ds = lgb.Dataset(X, label=y, categorical_feature=[2])
    return lgb.train({**base, **params}, ds, num_boost_round=rounds)


CASES = {
    "depth 3 (custval's)": {"num_leaves": 8, "max_depth": 3, "min_data_in_leaf": 20},
    "zero as missing": {"num_leaves": 8, "max_depth": 3, "zero_as_missing": True},
    "missing ignored": {"num_leaves": 8, "max_depth": 3, "use_missing": False},
    "unbalanced 10 leaves": {"num_leaves": 10, "max_depth": -1},
    "stumps": {"num_leaves": 2},
}


@pytest.mark.parametrize("params", CASES.values(), ids=CASES.keys())
def test_contributions_equal_lightgbms(params: dict[str, Any]) -> None:
    model = booster(params)
    explainer = ShallowTreeShap(model.dump_model())
    X, _ = data(3000, seed=5)
    # rows LightGBM never saw: categories out of range, negative codes, exact zeros
    X[:50, 2] = 17
    X[50:100, 2] = -3
    X[100:150, 3] = 0.0
    X[150:200, 0] = 0.0
    contrib, base = explainer.contributions(X, chunk=700)  # several chunks, in threads
    ref = model.predict(X, pred_contrib=True)
    np.testing.assert_allclose(contrib, ref[:, :-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(base, ref[:, -1], rtol=0, atol=1e-12)
    raw = model.predict(X, raw_score=True)
    np.testing.assert_allclose(base + contrib.sum(axis=1), raw, rtol=0, atol=1e-11)
    assert np.abs(contrib).sum(axis=0)[2] > 0  # the categorical feature is used
    used = {
        (s.categorical, s.missing)
        for t in explainer.trees_
        for s in t.splits  # the split rules this case covers
    }
    assert (
        True,
        "NaN" if "use_missing" not in params and "zero_as_missing" not in params else "None",
    ) in used
    if params.get("zero_as_missing"):
        assert (False, "Zero") in used


@pytest.mark.parametrize("min_leaf", [300, 2500], ids=["regression", "single-leaf trees"])
def test_regression_and_constant_trees(min_leaf: int) -> None:
    # with leaves of more than half the rows no split is possible: trees of one leaf
    model = booster({"num_leaves": 4, "min_data_in_leaf": min_leaf}, 30, "regression")
    leaves = {t["num_leaves"] for t in model.dump_model()["tree_info"]}
    assert leaves == ({1} if min_leaf > 2000 else {4})
    X, _ = data(500, seed=2)
    contrib, base = ShallowTreeShap(model.dump_model()).contributions(X)
    ref = model.predict(X, pred_contrib=True)
    np.testing.assert_allclose(np.column_stack([contrib, base]), ref, rtol=0, atol=1e-12)


def test_deep_trees_are_left_to_lightgbm() -> None:
    model = booster({"num_leaves": 31, "max_depth": -1}, rounds=5)
    assert not supports(model.dump_model())
    with pytest.raises(ValueError, match="does not cover"):
        ShallowTreeShap(model.dump_model())
    with pytest.raises(ValueError, match="columns"):
        ShallowTreeShap(booster(CASES["stumps"]).dump_model()).contributions(np.zeros((3, 4)))
