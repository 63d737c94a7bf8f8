"""The value classifier: selection, encodings, contributions and reasons, on generated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from custval.errors import CustvalError, FitError
from custval.models.candidates import CANDIDATES, make_candidate
from custval.models.encoding import infer_schema
from custval.models.explain import importance, reasons, value_profile
from custval.models.value import (
    ValueClassifier,
    binary_label,
    classification_metrics,
    derive_value_label,
)
from tests.factories import value_customers as customers


@pytest.fixture(scope="module")
def fitted() -> tuple[ValueClassifier, pd.DataFrame, np.ndarray]:
    X, y = customers(800)
    return ValueClassifier(folds=3).fit(X, y), X, y


def test_selection_leaderboard_and_refit(fitted) -> None:
    clf, X, _ = fitted
    board = clf.leaderboard_
    assert set(board.model) == set(CANDIDATES)
    assert board.roc_auc_mean.is_monotonic_decreasing
    for m in ("roc_auc", "pr_auc", "log_loss", "brier", "lift_top_decile"):
        assert board[f"{m}_mean"].notna().all() and (board[f"{m}_std"] >= 0).all()
    # the signal is strong and mostly linear: the best candidates separate well (the neural
    # network, with 530 training rows a fold, is the weakest, as it should be)
    assert board.roc_auc_mean.iloc[:3].min() > 0.75 and board.roc_auc_mean.min() > 0.6
    assert clf.chosen_ in CANDIDATES
    best = board.roc_auc_mean.max()
    assert (
        board.set_index("model").loc[clf.chosen_, "roc_auc_mean"] >= best - board.roc_auc_std.max()
    )
    # the refit model predicts probabilities, and the threshold keeps the top 20%
    p = clf.predict_proba(X)
    assert np.all((p > 0) & (p < 1))
    assert clf.predict(X).mean() == pytest.approx(0.2, abs=0.02)
    rel = clf.reliability_
    assert rel.customers.sum() == len(X) and len(rel) == 10
    assert rel.observed.iloc[-1] > rel.observed.iloc[0]
    assert 0 <= clf.calibration_error_ < 0.1


def test_metrics_by_hand() -> None:
    y = np.array([0, 0, 1, 1, 0, 1, 0, 0, 0, 0], dtype=float)
    p = np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.4, 0.35, 0.05, 0.15, 0.5])
    m = classification_metrics(y, p)
    # pairs (positive, negative) ordered correctly: 3 x 7 pairs, one wrong (0.4 below 0.5)
    assert m["roc_auc"] == pytest.approx(20 / 21)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert m["lift_top_decile"] == pytest.approx(1 / 0.3)  # top 10% = the 0.9, a positive


@pytest.mark.parametrize("name", list(CANDIDATES))
def test_contributions_add_up_to_the_score(name: str, fitted) -> None:
    _, X, y = fitted
    schema = infer_schema(X)
    model = make_candidate(name).fit(schema, X, y)
    contrib, base = model.contributions(schema, X.head(200))
    assert contrib.shape == (200, len(schema.columns))
    raw = model.raw_score(schema, X.head(200))
    np.testing.assert_allclose(base + contrib.sum(axis=1), raw, rtol=1e-7, atol=1e-7)
    p = model.predict_proba(schema, X.head(200))
    np.testing.assert_allclose(p, expit(raw) if model.score == "log-odds" else raw)
    # the noise column matters least on average
    mean_abs = np.abs(contrib).mean(axis=0)
    assert mean_abs[schema.columns.index("noise")] < mean_abs[schema.columns.index("frequency")]


def test_column_order_unseen_categories_and_missing_columns(fitted) -> None:
    clf, X, _ = fitted
    shuffled = X[X.columns[::-1]]
    np.testing.assert_allclose(clf.predict_proba(shuffled), clf.predict_proba(X))
    new = X.head(5).copy()
    new["plan"] = ["enterprise", None, "free", "basic", "  premium "]
    p = clf.predict_proba(new)
    assert np.all(np.isfinite(p))
    # surrounding spaces are not a new category
    assert p[4] == pytest.approx(clf.predict_proba(X.head(5).assign(plan="premium"))[4])
    with pytest.raises(CustvalError, match=r"lacks 1 feature column.*plan"):
        clf.predict_proba(X.drop(columns="plan"), source="new.csv")
    with pytest.raises(CustvalError, match="'frequency' was numeric in training but holds text"):
        clf.predict_proba(X.head(3).assign(frequency=["1", "two", "3"]))


def test_bad_labels_and_too_little_data() -> None:
    X, y = customers(200)
    # the data do not determine a classifier: FitError; malformed labels: CustvalError
    with pytest.raises(FitError, match="one class only"):
        ValueClassifier(folds=3).fit(X, np.zeros(200))
    with pytest.raises(FitError, match="40 customers are too few"):
        ValueClassifier(folds=3).fit(X.head(40), y[:40])
    assert binary_label(["Yes", "no", " YES "]).tolist() == [1.0, 0.0, 1.0]
    assert binary_label(["gold", "silver", "gold"], "gold").tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(FitError, match="every row's label is 'no'"):
        binary_label(["No", "No"])
    with pytest.raises(CustvalError, match="cannot tell which label value means high"):
        binary_label(["gold", "silver"])
    with pytest.raises(CustvalError, match="positive value 'platinum' does not occur"):
        binary_label(["gold", "silver"], "platinum")
    with pytest.raises(CustvalError, match="1 row has no label"):
        binary_label(["Yes", None, "No"])
    with pytest.raises(CustvalError, match="1 row has no label"):
        binary_label(["gold", "NA", "silver"], "gold")  # "NA" is no label, not a negative
    # numbers as labels, as text or floats: 1, 1.0 and "1" are the same value
    assert binary_label([0.0, 1.0, 1.0]).tolist() == [0.0, 1.0, 1.0]
    assert binary_label(["0", "1.0", "1"], "1").tolist() == [0.0, 1.0, 1.0]
    assert binary_label([2, 5, 5], 5).tolist() == [0.0, 1.0, 1.0]
    v = np.arange(100.0)
    assert derive_value_label(v, 0.2).sum() == 20
    with pytest.raises(FitError, match="40 customers are too few for a value label"):
        derive_value_label(v[:40])
    with pytest.raises(FitError, match="does not separate customers"):
        derive_value_label(np.zeros(100))
    with pytest.raises(CustvalError, match="top_share must lie between 0 and 1"):
        derive_value_label(v, 1.5)


def test_reasons_importance_and_profile(fitted) -> None:
    clf, X, y = fitted
    r = reasons(clf, X.head(50), top_k=3, catalogue={"frequency": "Purchase days"})
    assert len(r) == 50 and {"reason_1", "reason_3_contribution"} <= set(r.columns)
    contrib, _ = clf.contributions(X.head(50))
    # the first reason is the largest contribution, its sentence names the direction
    np.testing.assert_allclose(np.abs(r.reason_1_contribution), np.abs(contrib).max(axis=1))
    assert (np.abs(r.reason_1_contribution) >= np.abs(r.reason_2_contribution)).all()
    ups = r.reason_1_contribution >= 0
    assert r.reason_1[ups].str.contains("raises the chance of high value").all()
    assert r.reason_1[~ups].str.contains("lowers").all()
    freq_rows = r.reason_1_feature == "frequency"
    assert r.reason_1[freq_rows].str.startswith("Purchase days: ").all()
    assert (r.predicted_class == (r.probability >= clf.threshold_)).all()
    imp = importance(clf, X)
    assert imp.feature.iloc[0] in ("frequency", "days_since_last", "plan")
    assert imp.share.sum() == pytest.approx(1.0)
    prof = value_profile(clf.schema_, X, y)
    feats = prof["features"].set_index("feature")
    assert feats.loc["frequency", "median_high"] > feats.loc["frequency", "median_low"]
    assert feats.loc["plan", "category"] == "premium" and feats.loc["plan", "lift"] > 1.2
    assert prof["conditions"].lift.iloc[0] > 1.3


def test_bundle_round_trip_and_integrity(fitted, tmp_path) -> None:
    from custval.store.bundles import data_fingerprint, load_bundle, save_bundle

    clf, X, y = fitted
    folder = save_bundle(
        clf, tmp_path / "v1", label={"kind": "column"}, fingerprint=data_fingerprint(X, y)
    )
    files = sorted(p.name for p in folder.iterdir())
    assert files[0] == "manifest.json" and files[1] in ("model.skops", "model.txt")
    assert not any(p.suffix in (".pkl", ".pickle", ".joblib") for p in folder.iterdir())
    back = load_bundle(folder)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert back.threshold_ == clf.threshold_ and back.chosen_ == clf.chosen_
    manifest = back.manifest_
    for key in ("created_at", "data", "schema", "label", "metrics", "leaderboard", "libraries"):
        assert manifest[key]
    assert manifest["data"]["rows"] == len(X)
    # a damaged model file is refused, and so is an existing folder
    model_file = folder / manifest["files"]["model"]
    model_file.write_bytes(model_file.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CustvalError, match="does not match its manifest"):
        load_bundle(folder)
    with pytest.raises(CustvalError, match="exists and is not empty"):
        save_bundle(clf, folder, label={}, fingerprint={})
    with pytest.raises(CustvalError, match=r"has no manifest\.json"):
        load_bundle(tmp_path)
    # an edited manifest is refused, and so is a broken one, with a message, not a traceback
    import json

    good = save_bundle(clf, tmp_path / "v2", label={}, fingerprint={})
    manifest = json.loads((good / "manifest.json").read_text())
    manifest["schema"]["design_scale"] = [1.0]
    (good / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CustvalError, match="was changed after training"):
        load_bundle(good)
    del manifest["files"]
    (good / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CustvalError, match=r"damaged or incomplete|was changed"):
        load_bundle(good)


def test_guards_time_split_and_neutral_unseen_categories() -> None:
    X, y = customers(400, seed=5)
    few = y.copy()
    few[np.flatnonzero(few == 1)[6:]] = 0  # six positives, five folds
    with pytest.raises(FitError, match="the rarer class has 6 customers"):
        ValueClassifier(folds=5).fit(X, few)
    # the earlier period lacks a feature that appeared later: it is missing there, no error
    clf = ValueClassifier(("logistic", "lightgbm"), folds=3).fit(
        X, y, earlier=(X.drop(columns="region"), y)
    )
    assert {"time_split_roc_auc", "time_split_lift_top_decile"} <= set(clf.leaderboard_.columns)
    # an unseen category moves the logistic score by nothing: it is the average customer
    logistic = ValueClassifier(("logistic",), folds=3).fit(X, y)
    contrib, _ = logistic.contributions(X.head(3).assign(plan="enterprise"))
    assert np.allclose(contrib[:, logistic.schema_.columns.index("plan")], 0.0)
    r = reasons(logistic, X.head(3).assign(plan="enterprise"), top_k=len(X.columns))
    plan_reason = [
        r[f"reason_{i}"].iloc[0] for i in range(1, 6) if r[f"reason_{i}_feature"].iloc[0] == "plan"
    ]
    assert plan_reason and "does not change the chance" in plan_reason[0]
