"""The logistic candidate: one-hot columns left unscaled, C chosen by inner cross-validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from custval.models.candidates import Logistic, make_candidate
from custval.models.encoding import infer_schema
from tests.factories import value_customers as customers


def test_one_hot_columns_are_centred_not_scaled() -> None:
    X, y = customers(600, seed=3)
    schema = infer_schema(X)
    model = make_candidate("logistic", seed=0).fit(schema, X, y)
    design = schema.design(X, scale_indicators=False)
    numeric = ~schema.indicator_mask()
    # numeric columns standardised; 0/1 columns (one-hot, "was missing") a unit step apart
    assert numeric.sum() == 3 and (~numeric).sum() == 1 + 3 + 3
    np.testing.assert_allclose(design[:, numeric].std(axis=0), 1.0, rtol=1e-9)
    for j in np.flatnonzero(~numeric):
        assert np.ptp(design[:, j]) == 1.0 and abs(design[:, j].mean()) < 1e-12
    # the fit is a plain L2 logistic regression at the chosen C on that design ...
    plain = LogisticRegression(C=model.C_, max_iter=5000).fit(design, y)
    scale = np.where(numeric, 1.0, np.asarray(schema.design_scale))
    np.testing.assert_allclose(model.model_.coef_[0] / scale, plain.coef_[0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(
        model.raw_score(schema, X), plain.decision_function(design), atol=1e-3
    )
    # ... and not the one on the fully standardised design (what it was before)
    standardised = LogisticRegression(C=model.C_, max_iter=5000).fit(schema.design(X), y)
    assert np.abs(standardised.coef_[0] - model.model_.coef_[0]).max() > 0.01
    # contributions still add up to the score
    contrib, base = model.contributions(schema, X)
    np.testing.assert_allclose(base + contrib.sum(axis=1), model.raw_score(schema, X), atol=1e-9)


def test_c_is_chosen_by_inner_cross_validation_on_the_rows_given() -> None:
    X, y = customers(600, seed=3)
    schema = infer_schema(X)
    model = make_candidate("logistic", seed=7).fit(schema, X, y)
    assert set(model.cv_scores_) == set(Logistic.grid)
    assert max(Logistic.grid, key=lambda c: (model.cv_scores_[c], -c)) == model.C_
    # the score of a grid point, recomputed by hand on the same inner folds of the same rows
    design = schema.design(X, scale_indicators=False)
    aucs = []
    for train, test in StratifiedKFold(3, shuffle=True, random_state=7).split(design, y):
        m = LogisticRegression(C=0.01, max_iter=5000).fit(design[train], y[train])
        aucs.append(roc_auc_score(y[test], m.decision_function(design[test])))
    assert abs(model.cv_scores_[0.01] - np.mean(aucs)) < 1e-4
    # deterministic for a seed
    again = make_candidate("logistic", seed=7).fit(schema, X, y)
    assert again.cv_scores_ == model.cv_scores_
    np.testing.assert_array_equal(again.model_.coef_, model.model_.coef_)


def test_the_grid_choice_follows_the_data() -> None:
    # pure noise features and a few rows: the strongest penalty wins; a clean signal on many
    # rows: a weak one
    rng = np.random.default_rng(1)
    noise = pd.DataFrame(rng.normal(size=(120, 30)), columns=[f"n{i}" for i in range(30)])
    y_noise = (rng.random(120) < 0.5).astype(float)
    weak = make_candidate("logistic").fit(infer_schema(noise), noise, y_noise)
    X, y = customers(3000, seed=2)
    strong = make_candidate("logistic").fit(infer_schema(X), X, y)
    assert weak.C_ < strong.C_
    assert weak.C_ <= 0.1 and strong.C_ >= 1.0
    # too few of a class for inner folds: C = 1, no search
    few = y.copy()
    few[np.flatnonzero(few == 1)[4:]] = 0
    assert make_candidate("logistic").fit(infer_schema(X), X, few).C_ == 1.0
