"""FeatureSelector (custval.models.selection): near-constant and correlated candidates dropped
with their reasons, noise beaten by a permuted-label baseline, blocks kept only where the
cross-validated ROC AUC rises; the same data give the same choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from custval.errors import CustvalError
from custval.models.selection import FeatureSelector


@pytest.fixture(scope="module")
def table() -> tuple[pd.DataFrame, np.ndarray]:
    """4,000 customers: a base feature that explains some of the label, two candidates that
    explain more (one a copy of the other, to within noise), a categorical one that helps,
    twenty of pure noise and one almost constant."""
    rng = np.random.default_rng(7)
    n = 4000
    base = rng.normal(size=n)
    signal = rng.normal(size=n)
    plan = rng.choice(["basic", "plus", "pro"], size=n)
    logit = 0.8 * base + 1.5 * signal + np.where(plan == "pro", 1.0, 0.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    X = pd.DataFrame(
        {
            "base": base,
            "signal": signal,
            "signal_copy": signal + rng.normal(scale=0.01, size=n),
            "plan": plan,
            "almost_constant": np.where(rng.random(n) < 0.995, 0.0, 1.0),
        }
    )
    for k in range(20):
        X[f"noise_{k}"] = rng.normal(size=n)
    return X, y


def test_what_helps_is_kept_and_every_drop_has_its_reason(table) -> None:
    X, y = table
    candidates = [c for c in X.columns if c != "base"]
    selector = FeatureSelector(block=2).fit(X, y, ["base"], candidates)
    kept_signal = {"signal", "signal_copy"} & set(selector.chosen_)
    assert len(kept_signal) == 1  # one of the twins
    twin = ({"signal", "signal_copy"} - kept_signal).pop()
    assert selector.dropped_[twin].startswith("correlated with")
    assert "plan" in selector.chosen_
    assert selector.dropped_["almost_constant"].startswith("near-constant")
    assert not any(c.startswith("noise_") for c in selector.chosen_)
    assert all(f"noise_{k}" in selector.dropped_ for k in range(20))
    assert selector.kept_[0] == "base"
    assert selector.auc_ > selector.base_auc_ + 0.05
    assert selector.steps_[0].kept and selector.steps_[0].auc == pytest.approx(selector.auc_)
    record = selector.record()
    assert record["chosen"] == selector.chosen_ and record["roc_auc"] == selector.auc_
    assert set(record["dropped"]) | set(record["chosen"]) == set(candidates)


def test_the_same_data_give_the_same_choice(table) -> None:
    X, y = table
    candidates = [c for c in X.columns if c != "base"]
    first = FeatureSelector(block=2).fit(X, y, ["base"], candidates).record()
    again = FeatureSelector(block=2).fit(X, y, ["base"], candidates).record()
    assert first == again


def test_too_few_of_a_class_and_missing_columns_are_refused(table) -> None:
    X, y = table
    with pytest.raises(CustvalError, match="at least 15 customers of each class"):
        FeatureSelector().fit(X, np.r_[np.ones(10), np.zeros(len(y) - 10)], ["base"], ["signal"])
    with pytest.raises(CustvalError, match="lacks 1 feature columns: nowhere"):
        FeatureSelector().fit(X, y, ["base"], ["nowhere"])
    with pytest.raises(CustvalError, match="not determined"):
        FeatureSelector().record()
