"""The value classifier's performance estimated before labels (CBPE) and realised after."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from custval.errors import CustvalError
from custval.models.performance import estimated, realised


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def test_realised_metrics_by_hand_and_against_scikit_learn() -> None:
    score = np.array([0.9, 0.8, 0.8, 0.3, 0.2, 0.1, 0.1, 0.05, 0.05, 0.01])
    label = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0])
    got = realised(score, label, top_share=0.2)
    assert got.roc_auc == pytest.approx(roc_auc_score(label, score), rel=1e-12)  # ties halved
    assert got.precision_top == 1.0 and got.base_rate == 0.4 and got.lift_top == 2.5
    assert not got.estimated and got.assumption is None


def test_the_estimate_follows_a_covariate_shift_and_says_what_it_assumes() -> None:
    rng = np.random.default_rng(3)

    def population(mean: float, sd: float, n: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(mean, sd, n)
        p = _sigmoid(1.5 * x - 1.0)  # the calibrated model: the true probability
        return p, (rng.random(n) < p).astype(float)

    before_p, before_y = population(0.0, 1.0)
    after_p, after_y = population(0.7, 0.6)  # the customers move; value given x does not
    before, after = estimated(before_p), estimated(after_p)
    assert before.roc_auc == pytest.approx(realised(before_p, before_y).roc_auc, abs=0.01)
    assert after.roc_auc == pytest.approx(realised(after_p, after_y).roc_auc, abs=0.01)
    assert before.roc_auc - after.roc_auc > 0.05  # a real drop, seen before any label
    truth = realised(after_p, after_y)
    assert after.precision_top == pytest.approx(truth.precision_top, abs=0.02)
    assert after.lift_top == pytest.approx(truth.lift_top, rel=0.05)
    assert "covariate shift" in after.assumption
    # a concept shift (value no longer follows x as it did) is what labels alone can show
    x = rng.normal(0, 1, 100_000)
    concept_y = (rng.random(x.size) < _sigmoid(0.2 * x - 1.0)).astype(float)
    p = _sigmoid(1.5 * x - 1.0)
    assert estimated(p).roc_auc - realised(p, concept_y).roc_auc > 0.15


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(CustvalError, match="between 0 and 1"):
        estimated([0.2, 1.4])
    with pytest.raises(CustvalError, match="1 probability values are missing or infinite"):
        estimated([0.2, np.nan])
    with pytest.raises(CustvalError, match="needs both classes"):
        realised([0.2, 0.3], [1, 1])
    with pytest.raises(CustvalError, match="3 labels for 2 scores"):
        realised([0.2, 0.3], [1, 0, 1])
    with pytest.raises(CustvalError, match="0 or 1"):
        realised([0.2, 0.3], [1, 2])
