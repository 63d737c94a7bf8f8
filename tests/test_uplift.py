"""Uplift: the T- and X-learner find a planted effect, the Qini and AUUC numbers of hand-worked
examples, the targeting rule within a budget, the heuristic without an experiment, and the
errors of a campaign that cannot be evaluated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from custval.errors import CustvalError, FitError
from custval.models.uplift import (
    TARGET_COLUMNS,
    TLearner,
    XLearner,
    auuc,
    choose_targets,
    control_group_size,
    heuristic_targets,
    qini_coefficient,
    qini_curve,
    treatment_indicator,
    uplift_at_k,
)


def campaign(n: int, seed: int = 0, treated_share: float = 0.5) -> tuple[pd.DataFrame, ...]:
    """A randomised retention campaign with a planted effect on P(retained):
    +0.25 for customers who browse (sessions > 0 in a standard normal), -0.15 for those on the
    "legacy" plan (sleeping dogs), 0 otherwise; the base rate depends on tenure only."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "sessions": rng.normal(size=n),
            "tenure": rng.normal(size=n),
            "noise": rng.normal(size=n),
            "plan": rng.choice(["basic", "legacy", "premium"], n),
        }
    )
    tau = np.where(X["sessions"] > 0, 0.25, 0.0) - np.where(X["plan"] == "legacy", 0.15, 0.0)
    base = 0.5 + 0.2 * np.tanh(X["tenure"].to_numpy())
    treated = rng.random(n) < treated_share
    retained = (rng.random(n) < np.clip(base + tau * treated, 0, 1)).astype(float)
    return X, pd.Series(tau), pd.Series(treated), pd.Series(retained)


@pytest.fixture(scope="module")
def split() -> dict[str, pd.DataFrame]:
    X, tau, t, y = campaign(6000)
    train = np.arange(len(X)) < 4000
    return {
        "X": X[train],
        "t": t[train],
        "y": y[train],
        "X_test": X[~train],
        "tau_test": tau[~train].to_numpy(),
        "t_test": t[~train].to_numpy(),
        "y_test": y[~train].to_numpy(),
    }


@pytest.mark.parametrize("learner", [TLearner, XLearner])
def test_learners_recover_the_planted_ranking(learner: type, split: dict) -> None:
    model = learner(seed=1).fit(split["X"], split["t"], split["y"])
    u = model.predict_uplift(split["X_test"])
    tau = split["tau_test"]
    # the ranking finds the planted groups: their mean predicted uplift keeps the planted order
    assert u[tau > 0.2].mean() > 0.1 > u[tau == 0].mean() > u[tau < -0.1].mean()
    assert u[tau < -0.1].mean() < -0.05  # the sleeping dogs are predicted to be harmed
    assert np.corrcoef(u, tau)[0, 1] > 0.6
    q = qini_coefficient(u, split["t_test"], split["y_test"])
    shuffled = np.random.default_rng(3).permutation(u)
    assert q > 0.15
    assert q > qini_coefficient(shuffled, split["t_test"], split["y_test"]) + 0.1
    assert auuc(u, split["t_test"], split["y_test"]) > auuc(
        shuffled, split["t_test"], split["y_test"]
    )
    # the top fifth by prediction shows a clearly larger uplift than the campaign as a whole
    overall = uplift_at_k(u, split["t_test"], split["y_test"], 1.0)
    assert uplift_at_k(u, split["t_test"], split["y_test"], 0.2) > overall + 0.1


@pytest.mark.parametrize("learner", [TLearner, XLearner])
def test_contributions_add_up_to_the_uplift_and_name_the_drivers(
    learner: type, split: dict
) -> None:
    model = learner(seed=0).fit(split["X"], split["t"], split["y"])
    X = split["X_test"].iloc[:400]
    contrib, base = model.contributions(X)
    np.testing.assert_allclose(base + contrib.sum(axis=1), model.predict_uplift(X), atol=1e-9)
    # the planted drivers carry the contributions; the pure-noise column carries little
    strength = pd.Series(np.abs(contrib).mean(axis=0), index=model.schema_.columns)
    assert set(strength.nlargest(2).index) == {"sessions", "plan"}
    assert strength["noise"] < strength["sessions"] / 4
    why = model.reasons(X, top_k=2)
    np.testing.assert_allclose(why["uplift"], model.predict_uplift(X), atol=1e-9)
    browsing = (X["sessions"] > 0.5).to_numpy() & (X["plan"] != "legacy").to_numpy()
    first = why["reason_1_feature"][browsing]
    assert (first == "sessions").mean() > 0.8
    assert why["reason_1"][browsing].str.endswith("raises the effect of the offer").mean() > 0.8


def test_the_fit_is_deterministic_and_text_columns_are_categories(split: dict) -> None:
    a = XLearner(seed=4).fit(split["X"], split["t"], split["y"])
    b = XLearner(seed=4).fit(split["X"], split["t"], split["y"])
    np.testing.assert_array_equal(
        a.predict_uplift(split["X_test"]), b.predict_uplift(split["X_test"])
    )
    assert a.schema_.categorical == {"plan": ["basic", "legacy", "premium"]}
    # columns are taken by name: another order scores the same
    shuffled = split["X_test"][["plan", "noise", "tenure", "sessions"]]
    np.testing.assert_array_equal(a.predict_uplift(shuffled), a.predict_uplift(split["X_test"]))


def test_x_learner_weights_follow_the_propensity_option(split: dict) -> None:
    share = XLearner().fit(split["X"], split["t"], split["y"])
    assert share.treated_share_ == pytest.approx(split["t"].mean())
    np.testing.assert_allclose(share.weight(split["X_test"]), split["t"].mean())
    fixed = XLearner(propensity=0.5).fit(split["X"], split["t"], split["y"])
    np.testing.assert_allclose(fixed.weight(split["X_test"]), 0.5)
    # tau = g tau_0 + (1 - g) tau_1 exactly
    tau0 = fixed.tau0_.predict(fixed.schema_.codes(split["X_test"]))
    tau1 = fixed.tau1_.predict(fixed.schema_.codes(split["X_test"]))
    np.testing.assert_allclose(fixed.predict_uplift(split["X_test"]), 0.5 * tau0 + 0.5 * tau1)
    fitted = XLearner(propensity="logistic").fit(split["X"], split["t"], split["y"])
    g = fitted.weight(split["X_test"])
    # a randomised assignment: the fitted propensity stays near the share
    assert np.abs(g - split["t"].mean()).max() < 0.1
    with pytest.raises(CustvalError, match="not a share"):
        XLearner(propensity=1.5).fit(split["X"], split["t"], split["y"])


@pytest.mark.parametrize(
    "model", [TLearner(seed=2), XLearner(seed=2), XLearner(propensity="logistic")]
)
def test_the_json_round_trip_predicts_the_same(model: TLearner | XLearner, split: dict) -> None:
    model.fit(split["X"], split["t"], split["y"])
    again = type(model).from_json(model.to_json())
    X = split["X_test"]
    np.testing.assert_array_equal(again.predict_uplift(X), model.predict_uplift(X))
    np.testing.assert_allclose(again.contributions(X)[0], model.contributions(X)[0])
    assert again.get_params() == model.get_params()
    other = XLearner if isinstance(model, TLearner) else TLearner
    with pytest.raises(CustvalError, match="not a"):
        other.from_json(model.to_json())


def test_arrays_work_as_tables(split: dict) -> None:
    X = split["X"][["sessions", "tenure", "noise"]].to_numpy()
    model = TLearner().fit(X, split["t"].to_numpy(), split["y"].to_numpy())
    assert model.schema_.numeric == ["0", "1", "2"]
    u = model.predict_uplift(split["X_test"][["sessions", "tenure", "noise"]].to_numpy())
    assert np.corrcoef(u, split["tau_test"])[0, 1] > 0.4  # the plan's effect is not in X


def test_a_continuous_outcome_gets_regressions() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    t = rng.random(n) < 0.7  # unbalanced, as retention campaigns are
    tau = 10.0 * (X["a"] > 0)
    spend = 50 + 5 * X["b"] + tau * t + rng.normal(0, 5, n)
    model = XLearner().fit(X, t, spend)
    assert not model.binary_
    u = model.predict_uplift(X)
    assert u[X["a"] > 0.3].mean() == pytest.approx(10.0, abs=2.0)
    assert u[X["a"] < -0.3].mean() == pytest.approx(0.0, abs=2.0)


def test_treatment_words_and_numbers() -> None:
    assert treatment_indicator([1, 0, 1]).tolist() == [True, False, True]
    assert treatment_indicator([" Treatment", "control", "CONTROL"]).tolist() == [
        True,
        False,
        False,
    ]
    with pytest.raises(CustvalError, match="neither treatment nor control") as err:
        treatment_indicator(["treatment", "maybe", "control", "2"])
    assert err.value.count == 2


# ---- evaluation on hand-worked examples ---------------------------------------------------

# six customers by descending predicted uplift: treated T, control C and the outcome
#   k:        1    2    3    4    5    6
#   group:    T    C    T    C    T    C
#   outcome:  1    0    1    0    0    1
# Q(k) = Y_T - Y_C N_T / N_C: k=1 undefined (no control yet) -> interpolated 0.5, then
# 1, 2, 2, 2, and Q(6) = 2 - 1 * 3/3 = 1. Random: k/6. Sum over k=0..6: Q 8.5, random 3.5.
# Qini coefficient = (8.5 - 3.5) / 7 / |Q(6)| = 5/7.
# G(k) = k (Y_T/N_T - Y_C/N_C): k=1 -> interpolated 1, then 2, 3, 4, 10/3, 2; sum 46/3;
# AUUC = 46/3 / 7 / |G(6)| = 23/21.
HAND_UPLIFT = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
HAND_TREATED = np.array([1, 0, 1, 0, 1, 0])
HAND_Y = np.array([1, 0, 1, 0, 0, 1])


def test_qini_and_auuc_of_a_hand_worked_example() -> None:
    curve = qini_curve(HAND_UPLIFT, HAND_TREATED, HAND_Y)
    np.testing.assert_allclose(curve["qini"], [0, 0.5, 1, 2, 2, 2, 1])
    np.testing.assert_allclose(curve["random"], np.arange(7) / 6)
    np.testing.assert_allclose(curve["gain"], [0, 1, 2, 3, 4, 10 / 3, 2])
    assert qini_coefficient(HAND_UPLIFT, HAND_TREATED, HAND_Y) == pytest.approx(5 / 7)
    assert qini_coefficient(HAND_UPLIFT, HAND_TREATED, HAND_Y, normalize=False) == pytest.approx(
        5 / 7
    )
    assert auuc(HAND_UPLIFT, HAND_TREATED, HAND_Y) == pytest.approx(23 / 21)
    assert auuc(HAND_UPLIFT, HAND_TREATED, HAND_Y, normalize=False) == pytest.approx(46 / 21)
    # the top half: treated 1, 1 against control 0 -> 1; everyone: 2/3 - 1/3
    assert uplift_at_k(HAND_UPLIFT, HAND_TREATED, HAND_Y, 0.5) == pytest.approx(1.0)
    assert uplift_at_k(HAND_UPLIFT, HAND_TREATED, HAND_Y, 1.0) == pytest.approx(1 / 3)
    # the order is what counts, not the scale nor the input order
    perm = np.array([3, 0, 5, 1, 4, 2])
    assert qini_coefficient(
        10 * HAND_UPLIFT[perm] - 3, HAND_TREATED[perm], HAND_Y[perm]
    ) == pytest.approx(5 / 7)


def test_the_reversed_ranking_scores_below_zero_and_ties_score_the_random_line() -> None:
    assert qini_coefficient(-HAND_UPLIFT, HAND_TREATED, HAND_Y) < 0
    # every prediction tied: no order at all, the curve is the random line itself
    assert qini_coefficient(np.zeros(6), HAND_TREATED, HAND_Y) == pytest.approx(0.0, abs=1e-12)
    # two tied blocks: the curve is straight inside each block, whatever the input order
    tied = np.array([1.0, 1, 1, 0, 0, 0])
    a = qini_coefficient(tied, HAND_TREATED, HAND_Y)
    within = [1, 2, 0, 4, 5, 3]  # each block's customers in another order
    b = qini_coefficient(tied, HAND_TREATED[within], HAND_Y[within])
    assert a == pytest.approx(b)
    # block 1 (T,C,T: 1,0,1): Q(3) = 2 - 0 = 2; Q(6) = 1; straight lines: 0, 2/3, 4/3, 2, then
    # 5/3, 4/3, 1; minus k/6; mean over 7 points
    expected = (np.array([0, 2 / 3, 4 / 3, 2, 5 / 3, 4 / 3, 1]) - np.arange(7) / 6).mean()
    assert a == pytest.approx(expected)


def test_evaluation_errors_name_the_problem() -> None:
    with pytest.raises(CustvalError, match="no control group: uplift needs customers who were not"):
        qini_coefficient(HAND_UPLIFT, np.ones(6), HAND_Y)
    with pytest.raises(CustvalError, match="treated share 0%"):
        auuc(HAND_UPLIFT, np.zeros(6), HAND_Y)
    with pytest.raises(CustvalError, match=r"rows do not match \(features 6, treatment 5"):
        qini_curve(HAND_UPLIFT, HAND_TREATED[:5], HAND_Y)
    with pytest.raises(CustvalError, match="same outcome overall"):
        qini_coefficient(HAND_UPLIFT, HAND_TREATED, np.ones(6))
    with pytest.raises(CustvalError, match="holds no control customers"):
        uplift_at_k(HAND_UPLIFT, HAND_TREATED, HAND_Y, 0.1)


def test_learner_errors_name_the_problem(split: dict) -> None:
    X, t, y = split["X"], split["t"], split["y"]
    with pytest.raises(CustvalError, match="no control group") as err:
        XLearner().fit(X, np.ones(len(X), dtype=bool), y)
    assert "treated share 100%" in str(err.value)
    with pytest.raises(CustvalError, match="treated share 0%"):
        TLearner().fit(X, np.zeros(len(X)), y)
    with pytest.raises(CustvalError, match="rows do not match"):
        XLearner().fit(X, t[:-3], y)
    few = t.to_numpy().copy()
    few[:] = True
    few[:5] = False
    with pytest.raises(FitError, match="control group has 5 customers"):
        TLearner().fit(X, few, y)
    with pytest.raises(FitError, match="every customer of the control group has outcome 1"):
        XLearner().fit(X, t, np.where(t, y, 1.0))


# ---- targeting ----------------------------------------------------------------------------


def test_choose_targets_follows_the_profit_rule_within_the_budget() -> None:
    # profit = uplift x value - cost: 0.1*100-5 = 5, 0.2*50-5 = 5, 0.05*1000-5 = 45, 0.3*10-5 = -2
    uplift = [0.1, 0.2, 0.05, 0.3]
    value = [100.0, 50.0, 1000.0, 10.0]
    out = choose_targets(uplift, value, 5.0, budget=10.0, customer_id=["a", "b", "c", "d"])
    t = out.table
    assert t["customer_id"].tolist() == ["c", "a", "b", "d"]  # by profit; ties in input order
    np.testing.assert_allclose(t["expected_profit"], [45, 5, 5, -2])
    assert t["contact"].tolist() == [True, True, False, False]
    assert (out.spent, out.contacted, out.expected_profit) == (10.0, 2, 50.0)
    assert t["method"].eq("uplift").all()
    assert t["reason"].iloc[0] == (
        "uplift 0.05 x value 1,000 - cost 5 = 45: expected incremental profit, contact"
    )
    assert "budget goes to customers with a higher" in t["reason"].iloc[2]
    assert "expected to lose money" in t["reason"].iloc[3]
    # one shape for both methods: the churn columns are shown when given, never used
    assert tuple(t.columns) == TARGET_COLUMNS
    assert t["p_churn"].isna().all()
    shown = choose_targets(uplift, value, 5.0, budget=10.0, p_churn=[0.9, 0.1, 0.2, 0.5]).table
    assert shown["contact"].tolist() == t["contact"].tolist()
    np.testing.assert_allclose(shown["value_at_risk"], [200, 90, 5, 5])
    # without a budget: every profitable customer, and only those
    assert choose_targets(uplift, value, 5.0).table["contact"].tolist() == [True] * 3 + [False]
    # more than the profitable customers cost, less than the whole base: spent only on them
    rich = choose_targets(uplift, value, 5.0, budget=18.0)
    assert rich.spent == 15.0
    assert "exceeds the cost of contacting every profitable customer (15.00)" in rich.note
    assert "3.00 is left unspent" in rich.note


def test_choose_targets_on_random_customers() -> None:
    rng = np.random.default_rng(7)
    n = 5000
    uplift = rng.normal(0.02, 0.05, n)
    value = rng.gamma(2, 200, n)
    cost = rng.uniform(1, 10, n)
    budget = 2000.0
    t = choose_targets(uplift, value, cost, budget).table
    chosen = t[t["contact"]]
    assert chosen["cost"].sum() <= budget
    assert (chosen["expected_profit"] > 0).all()
    np.testing.assert_allclose(t["expected_profit"], t["uplift"] * t["value"] - t["cost"])
    # a prefix of the ranking: nobody left out is ranked above someone chosen
    assert t["contact"].to_numpy()[: len(chosen)].all()
    # the next one in line would not have fitted
    following = t.iloc[len(chosen)]
    assert following["expected_profit"] <= 0 or chosen["cost"].sum() + following["cost"] > budget


def test_targeting_errors() -> None:
    with pytest.raises(CustvalError, match="larger than the base") as err:
        choose_targets([0.1, 0.2], [100, 100], 5.0, budget=50.0)
    assert "costs 10.00" in str(err.value) and "50.00" in str(err.value)
    with pytest.raises(CustvalError, match="rows do not match"):
        choose_targets([0.1, 0.2], [100], 5.0)
    with pytest.raises(CustvalError, match="1 customers have no uplift"):
        choose_targets([0.1, np.nan], [100, 100], 5.0)
    with pytest.raises(CustvalError, match="larger than the base"):
        heuristic_targets([0.1, 0.2], [100, 100], 5.0, budget=11.0)


def test_heuristic_targets_say_what_they_are() -> None:
    p_churn = np.array([0.9, 0.1, 0.5, 0.3])
    clv = np.array([10.0, 1000.0, 100.0, 500.0])
    # value at risk: 9, 100, 50, 150 -> order d, b, c, a; a's 9 does not cover a cost of 10
    out = heuristic_targets(p_churn, clv, 10.0, budget=20.0, customer_id=list("abcd"))
    t = out.table
    assert tuple(t.columns) == TARGET_COLUMNS
    assert out.method == "heuristic" and t["method"].eq("heuristic").all()
    assert t["customer_id"].tolist() == ["d", "b", "c", "a"]
    assert t["contact"].tolist() == [True, True, False, False]
    assert t["uplift"].isna().all() and t["expected_profit"].isna().all()
    assert out.expected_profit is None
    assert "no experiment" in out.note and "heuristic" in out.note
    assert "no experiment: the effect of an offer is unknown" in t["reason"].iloc[0]
    assert "not above the cost" in t["reason"].iloc[3]
    # the suggested control group: the size to detect 5 points on the base's retention
    assert out.control_group == control_group_size(1 - p_churn.mean(), 0.05)
    assert f"{out.control_group:,} customers" in out.note


def test_control_group_size_of_the_two_proportion_test() -> None:
    # 50% against 55%, 80% power, 5% two-sided: the textbook 1,565 per group
    assert control_group_size(0.5, 0.05) == 1565
    # a larger effect needs far fewer; three treated per control need fewer controls
    assert control_group_size(0.5, 0.10) < control_group_size(0.5, 0.05) / 3.5
    assert control_group_size(0.8, 0.05, treated_per_control=3) < control_group_size(0.8, 0.05)
    assert control_group_size(0.8, 0.05, power=0.9) > control_group_size(0.8, 0.05)
    with pytest.raises(CustvalError, match="not two rates"):
        control_group_size(0.98, 0.05)
