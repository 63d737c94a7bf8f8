"""Churn risk: the labels worked out by hand, the lapse threshold's formula, the baselines on
customers simulated from BG/NBD, the churn classifier on a planted signal, and its errors."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from custval.errors import CustvalError, FitError
from custval.models.btyd import BetaGeo, ParetoNBD
from custval.models.churn import (
    BTYD_CHURN_COLUMNS,
    LAPSE_K,
    ChurnClassifier,
    btyd_churn_features,
    cancellation_label,
    churn_metrics,
    compare_with_baseline,
    expected_gap,
    lapse_label,
    lapse_probability,
    lapse_threshold,
    palive_baseline,
    quiet_probability,
)
from custval.models.explain import reasons
from custval.store.bundles import load_bundle, save_bundle

# r = 1, alpha = 10: a customer's expected gap is (10 + T) / (1 + x) weeks, 10 without repeats
PARAMS = {"r": 1.0, "alpha": 10.0, "a": 1.0, "b": 3.0}


@pytest.fixture
def bg() -> BetaGeo:
    return BetaGeo.from_params(PARAMS)


# ---- cancellation ---------------------------------------------------------------------------


def test_cancellation_label_by_hand() -> None:
    cancelled = [
        "2024-02-10",  # in [cutoff, cutoff + 4 weeks): churned
        None,  # never cancelled: stayed
        "2024-01-05",  # cancelled before the cutoff: not active, no label
        None,  # started after the cutoff: no label
        "2024-02-28",  # exactly cutoff + 4 weeks: the interval is open on the right, stayed
        "2024-01-31",  # exactly at the cutoff: still active before it, churned at it
        "2024-06-01",  # after the horizon: stayed
    ]
    started = [
        "2023-05-01",
        "2023-06-01",
        "2023-07-01",
        "2024-02-05",
        "2023-08-01",
        "2023-09-01",
        "2024-01-30 23:59",  # started the minute before the cutoff: active
    ]
    y = cancellation_label(
        cancelled, "2024-01-31", timedelta(weeks=4), started_at=started, data_end="2024-12-31"
    )
    np.testing.assert_array_equal(y, [1.0, 0.0, np.nan, np.nan, 0.0, 1.0, 0.0])
    # a subscription that starts at the cutoff itself is not active before it
    at_cutoff = cancellation_label(
        [None], "2024-01-31", timedelta(weeks=4), started_at=["2024-01-31"], data_end="2024-12-31"
    )
    assert np.isnan(at_cutoff).all()
    # without started_at every customer not cancelled before the cutoff counts as active
    y2 = cancellation_label(cancelled, "2024-01-31", pd.Timedelta(days=28), data_end="2024-12-31")
    np.testing.assert_array_equal(y2, [1.0, 0.0, np.nan, 0.0, 0.0, 1.0, 0.0])


def test_cancellation_label_timezones_agree() -> None:
    naive = cancellation_label(
        ["2024-02-10 12:00", None], "2024-01-31", timedelta(weeks=4), data_end="2024-12-31"
    )
    aware = cancellation_label(
        pd.to_datetime(["2024-02-10 12:00", None]).tz_localize("UTC"),
        "2024-01-31",
        timedelta(weeks=4),
        data_end="2024-12-31",
    )
    np.testing.assert_array_equal(naive, aware)


@pytest.mark.parametrize("horizon", [timedelta(0), timedelta(days=-3)])
def test_cancellation_horizon_must_be_positive(horizon: timedelta) -> None:
    with pytest.raises(CustvalError, match="horizon must be positive"):
        cancellation_label(["2024-02-10"], "2024-01-31", horizon, data_end="2024-12-31")


def test_cancellation_cutoff_after_the_data() -> None:
    cancelled = ["2024-02-10", None]
    started = ["2023-01-01", "2023-03-01"]
    # the data end at their latest date, 2024-02-10, unless told otherwise
    with pytest.raises(CustvalError, match="at or after the end of the data"):
        cancellation_label(cancelled, "2024-03-01", timedelta(weeks=4), started_at=started)
    with pytest.raises(CustvalError, match="after the data"):
        cancellation_label(cancelled, "2024-01-31", timedelta(weeks=4), started_at=started)
    with pytest.raises(CustvalError, match="after the data"):
        cancellation_label(cancelled, "2024-01-31", timedelta(weeks=4), data_end="2024-02-20")
    with pytest.raises(CustvalError, match="must hold dates"):
        cancellation_label(["soon"], "2024-01-31", timedelta(weeks=4), data_end="2024-12-31")


# ---- lapse ----------------------------------------------------------------------------------


def _summary(rows: list[tuple[float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["frequency", "recency", "T"])


def test_lapse_threshold_is_k_times_the_expected_gap(bg: BetaGeo) -> None:
    s = _summary([(4, 20, 40), (0, 0, 20), (9, 50, 90), (np.nan, np.nan, np.nan)])
    gap = expected_gap(bg, s)
    # (alpha + T) / (r + x) for repeat buyers; alpha / r, the population's, for x = 0
    np.testing.assert_allclose(gap[:3], [50 / 5, 10 / 1, 100 / 10])
    assert np.isnan(gap[3])
    assert pytest.approx(math.log(20)) == LAPSE_K
    # a live customer at the expected rate stays quiet so long with probability 5%
    assert math.exp(-LAPSE_K) == pytest.approx(0.05)
    np.testing.assert_allclose(lapse_threshold(bg, s)[:3], math.log(20) * gap[:3])
    np.testing.assert_allclose(lapse_threshold(bg, s, k=2.0)[:3], 2.0 * gap[:3])
    with pytest.raises(CustvalError, match="must be positive"):
        lapse_threshold(bg, s, k=0.0)


def test_lapse_label_by_hand(bg: BetaGeo) -> None:
    s = _summary(
        [
            (4, 20, 40),  # g = 10, threshold 29.96; gap 20 + 13 = 33 without a purchase
            (4, 20, 40),  # the same, but buys in the horizon
            (4, 30, 40),  # gap 10 + 13 = 23: quiet, but not for long enough
            (0, 0, 20),  # g = alpha / r = 10; gap 20 + 13 = 33 (own posterior: 30, no lapse)
            (0, 0, 10),  # gap 23 < 29.96
            (np.nan, np.nan, np.nan),  # no purchase before the cutoff
        ]
    )
    after = [0, 1, 0, 0, 0, 0]
    y = lapse_label(bg, s, after, 13.0)
    np.testing.assert_array_equal(y, [1, 0, 0, 1, 0, np.nan])
    # a stricter reading of "too long" (k = 2: threshold 20 weeks) catches the third too
    np.testing.assert_array_equal(lapse_label(bg, s, after, 13.0, k=2.0), [1, 0, 1, 1, 1, np.nan])


@pytest.mark.parametrize("horizon", [0.0, -13.0, float("nan")])
def test_lapse_horizon_must_be_positive(bg: BetaGeo, horizon: float) -> None:
    with pytest.raises(CustvalError, match="horizon must be positive"):
        lapse_label(bg, _summary([(1, 5, 10)]), [0], horizon)


def test_lapse_cutoff_after_the_data(bg: BetaGeo) -> None:
    s = _summary([(1, 5, 10), (0, 0, 3)])
    with pytest.raises(CustvalError, match="at or after the end of the data"):
        lapse_label(bg, s, [0, 0], 13.0, observed_after=0.0)
    with pytest.raises(CustvalError, match="runs past the end of the data"):
        lapse_label(bg, s, [0, 0], 13.0, observed_after=8.0)
    assert lapse_label(bg, s, [0, 0], 13.0, observed_after=13.0).shape == (2,)


def test_lapse_input_errors(bg: BetaGeo) -> None:
    s = _summary([(1, 5, 10), (0, 0, 3)])
    with pytest.raises(CustvalError, match="2 customers"):
        lapse_label(bg, s, [0, 0, 0], 13.0)
    with pytest.raises(CustvalError, match="non-negative count"):
        lapse_label(bg, s, [0, -1], 13.0)
    with pytest.raises(CustvalError, match="no column T"):
        lapse_label(bg, s.drop(columns="T"), [0, 0], 13.0)
    with pytest.raises(CustvalError, match="recency above T"):
        lapse_label(bg, _summary([(1, 12, 10)]), [0], 13.0)
    with pytest.raises(CustvalError, match="not fitted"):
        lapse_label(BetaGeo(), s, [0, 0], 13.0)


# ---- baselines ------------------------------------------------------------------------------


def test_palive_baseline_and_lapse_probability_by_hand(bg: BetaGeo) -> None:
    s = _summary([(4, 20, 40), (4, 30, 40), (0, 0, 20), (np.nan, np.nan, np.nan)])
    base = palive_baseline(bg, s)
    # Fader, Hardie & Lee (2005) eq. 13: P(alive) = 1 / (1 + a / (b + x - 1) (..)^(r + x))
    p_alive = 1 / (1 + 1 / 6 * (50 / 30) ** 5)
    assert base[0] == pytest.approx(1 - p_alive)
    assert base[2] == 0.0  # BG/NBD: no repeat purchase, no chance to have left
    assert np.isnan(base[3])
    p = lapse_probability(bg, s, 13.0)
    # the gap is due: P(no purchase in 13 weeks) = (1 - P(alive)) + P(alive) (50 / 63)^5
    assert p[0] == pytest.approx(1 - p_alive + p_alive * (50 / 63) ** 5)
    assert p[1] == 0.0  # not due: whatever happens, no lapse in this horizon
    assert p[2] == pytest.approx((30 / 43) ** 1)
    assert np.isnan(p[3])
    # the second is not due, but its chance of a quiet horizon is there all the same
    alive_1 = 1 / (1 + 1 / 6 * (50 / 40) ** 5)
    quiet_1 = 1 - alive_1 + alive_1 * (50 / 63) ** 5
    assert quiet_probability(bg, s, 13.0)[1] == pytest.approx(quiet_1)
    with pytest.raises(CustvalError, match="BG/NBD"):
        lapse_probability(ParetoNBD.from_params({"r": 1, "alpha": 10, "s": 1, "beta": 10}), s, 13)


def _simulate_bgnbd(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers of one cohort under BG/NBD with PARAMS: the summary at T = 52 weeks and
    their purchases in the 13 weeks after."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(PARAMS["r"], 1 / PARAMS["alpha"], n)
    p = rng.beta(PARAMS["a"], PARAMS["b"], n)
    m = 120  # purchases drawn per customer: far more than 65 weeks at these rates bring
    times = np.cumsum(rng.exponential(1.0, (n, m)) / lam[:, None], axis=1)
    lives = rng.geometric(p)  # repeat purchases made before leaving, the fatal one included
    made = np.arange(1, m + 1)[None, :] <= lives[:, None]
    before = made & (times <= 52.0)
    x = before.sum(axis=1)
    tx = np.where(x > 0, np.where(before, times, 0.0).max(axis=1), 0.0)
    after = (made & (times > 52.0) & (times <= 65.0)).sum(axis=1)
    return _summary(list(zip(x, tx, np.full(n, 52.0), strict=True))), after


def test_lapse_probability_is_calibrated_on_bgnbd_customers(bg: BetaGeo) -> None:
    s, after = _simulate_bgnbd(20_000, seed=3)
    y = lapse_label(bg, s, after, 13.0)
    p = lapse_probability(bg, s, 13.0)
    # the model that generated the data predicts the share of lapses, overall and by decile
    se = math.sqrt(np.sum(p * (1 - p))) / y.size
    assert abs(p.mean() - y.mean()) < 4 * se
    order = np.argsort(p)
    for part in np.array_split(order, 5):
        assert abs(p[part].mean() - y[part].mean()) < 0.03
    # with no signal beyond the purchases, the model's own P(lapse) beats 1 - P(alive), also
    # among repeat buyers (1 - P(alive) is 0 for everyone else under BG/NBD, however long
    # they have been quiet)
    base = palive_baseline(bg, s)
    rep = s.frequency.to_numpy() > 0
    assert roc_auc_score(y, p) > roc_auc_score(y, base) + 0.1
    auc_alive = roc_auc_score(y[rep], base[rep])
    assert roc_auc_score(y[rep], p[rep]) > auc_alive + 0.02 and auc_alive > 0.7


def test_btyd_churn_features(bg: BetaGeo) -> None:
    s = _summary([(4, 20, 40), (0, 0, 20)])
    f = btyd_churn_features(bg, s, 13.0)
    assert tuple(f.columns) == BTYD_CHURN_COLUMNS
    np.testing.assert_allclose(f.btyd_p_alive, 1 - palive_baseline(bg, s))
    np.testing.assert_allclose(f.btyd_expected_gap, [10.0, 10.0])
    np.testing.assert_allclose(f.btyd_gap_ratio, [20 / 10, 20 / 10])
    np.testing.assert_allclose(f.btyd_p_quiet, quiet_probability(bg, s, 13.0))
    # the due customer (gap 33 > 29.96) lapses exactly when quiet: P(lapse) = P(quiet)
    assert f.btyd_p_quiet.iloc[0] == pytest.approx(lapse_probability(bg, s, 13.0)[0])


# ---- comparing scores -----------------------------------------------------------------------


def test_compare_with_baseline() -> None:
    rng = np.random.default_rng(0)
    n = 3_000
    signal = rng.normal(size=n)
    y = (rng.random(n) < expit(2 * signal)).astype(float)
    good = signal + rng.normal(scale=0.3, size=n)
    weak = np.round(signal + rng.normal(scale=1.5, size=n))  # many ties
    table = compare_with_baseline(y, {"model": good, "baseline": weak}, "baseline", n_boot=300)
    rows = table.set_index("score")
    assert rows.loc["model", "roc_auc"] == pytest.approx(roc_auc_score(y, good))
    assert rows.loc["baseline", "roc_auc"] == pytest.approx(roc_auc_score(y, weak))
    gain = rows.loc["model", "roc_auc"] - rows.loc["baseline", "roc_auc"]
    assert rows.loc["model", "roc_auc_gain"] == pytest.approx(gain)
    lo, hi = rows.loc["model", ["gain_lower", "gain_upper"]]
    assert 0 < lo < gain < hi < 2 * gain
    assert np.isnan(rows.loc["baseline", "roc_auc_gain"])
    # a probability of the same order has the same ranking figures
    metrics = churn_metrics(y, expit(good))
    assert rows.loc["model", "lift_top_decile"] == pytest.approx(metrics["lift_top_decile"])
    assert rows.loc["model", "pr_auc"] == pytest.approx(metrics["pr_auc"])
    # the same seed, the same interval; no resamples, no interval
    again = compare_with_baseline(y, {"model": good, "baseline": weak}, "baseline", n_boot=300)
    pd.testing.assert_frame_equal(table, again)
    bare = compare_with_baseline(y, {"model": good, "baseline": weak}, "baseline", n_boot=0)
    assert bare.gain_lower.isna().all()
    with pytest.raises(CustvalError, match="not among the scores"):
        compare_with_baseline(y, {"model": good}, "baseline")
    with pytest.raises(FitError, match="one class only"):
        churn_metrics(np.zeros(10), np.linspace(0, 1, 10))
    with pytest.raises(CustvalError, match="without a label"):
        churn_metrics(np.r_[np.nan, np.ones(5), np.zeros(4)], np.linspace(0, 1, 10))


# ---- the classifier -------------------------------------------------------------------------


def churners(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers whose churn rises with days since last use and complaints, falls on the
    premium plan; a noise column."""
    rng = np.random.default_rng(seed)
    days = rng.exponential(30, n).round()
    complaints = rng.poisson(0.5, n).astype(float)
    plan = rng.choice(["free", "basic", "premium"], n, p=[0.4, 0.4, 0.2])
    z = -2.0 + 0.05 * days + 0.8 * complaints - 1.2 * (plan == "premium")
    y = (rng.random(n) < expit(z)).astype(float)
    X = pd.DataFrame(
        {
            "days_since_last_use": days,
            "complaints": complaints,
            "plan": plan,
            "noise": rng.normal(size=n),
        }
    )
    return X, y


@pytest.fixture(scope="module")
def fitted() -> tuple[ChurnClassifier, pd.DataFrame, np.ndarray]:
    X, y = churners(600)
    clf = ChurnClassifier(("logistic", "lightgbm"), folds=3, top_share=float(y.mean()))
    return clf.fit(X, y), X, y


def test_classifier_on_a_planted_signal(fitted) -> None:
    clf, X, y = fitted
    board = clf.leaderboard_
    assert set(board.model) == {"logistic", "lightgbm"} and clf.chosen_ in set(board.model)
    # out of fold, the chosen model ranks churners far better than a random score does
    assert not np.isnan(clf.oof_proba_).any()
    oof_auc = roc_auc_score(y, clf.oof_proba_)
    random_auc = roc_auc_score(y, np.random.default_rng(1).random(y.size))
    assert oof_auc > 0.8 and oof_auc > random_auc + 0.25
    assert clf.oof_metrics_["roc_auc"] == pytest.approx(oof_auc)
    rel = clf.reliability_
    assert len(rel) == 10 and rel.customers.sum() == len(X)
    assert rel.observed.iloc[-1] > rel.observed.iloc[0]
    assert 0 <= clf.calibration_error_ < 0.1
    # top_share = the label's share: as many customers called churners as churned
    p = clf.predict_proba(X)
    assert np.all((p > 0) & (p < 1))
    assert clf.predict(X).mean() == pytest.approx(y.mean(), abs=0.01)
    assert np.mean(p >= clf.threshold_) == pytest.approx(y.mean(), abs=0.01)
    assert clf.label_name_ == "churn" and clf.class_names_ == ("stays", "churns")
    why = reasons(clf, X.head(5), top_k=2)
    assert why.reason_1.str.endswith("the chance of churn").all()
    np.testing.assert_allclose(why.probability, p[:5])


def test_classifier_bundle_round_trip(fitted, tmp_path) -> None:
    clf, X, _ = fitted
    folder = save_bundle(clf, tmp_path / "churn", label={"kind": "lapse"}, fingerprint={})
    loaded = load_bundle(folder)
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X))
    assert loaded.threshold_ == clf.threshold_ and loaded.label_name_ == "churn"


def test_classifier_errors() -> None:
    X, y = churners(200)
    with pytest.raises(FitError, match="no customer churned"):
        ChurnClassifier(("logistic",)).fit(X, np.zeros(len(X)))
    with pytest.raises(FitError, match="every customer churned"):
        ChurnClassifier(("logistic",)).fit(X, np.ones(len(X)))
    unlabelled = y.copy()
    unlabelled[[3, 7]] = np.nan
    with pytest.raises(CustvalError, match="missing for 2 customers"):
        ChurnClassifier(("logistic",)).fit(X, unlabelled)
    with pytest.raises(CustvalError, match="0 \\(stayed\\) or 1 \\(churned\\)"):
        ChurnClassifier(("logistic",)).fit(X, y * 2)
    with pytest.raises(CustvalError, match="churn classifier is not fitted"):
        ChurnClassifier().predict_proba(X)
    early = (X, np.zeros(len(X)))
    with pytest.raises(FitError, match="earlier period's churn label has one class"):
        ChurnClassifier(("logistic",)).fit(X, y, earlier=early)
