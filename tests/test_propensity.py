"""Category propensity: the category history by hand, the two designs compared on a time-based
holdout of a planted shop, reasons, and the clear errors."""

from __future__ import annotations

from datetime import date, timedelta

import ibis
import numpy as np
import pandas as pd
import pytest

from custval.errors import CustvalError, FitError
from custval.features import copurchase as cp
from custval.features.transactions import rfm_features
from custval.models.propensity import CATEGORY_FEATURES, CategoryPropensity

AS_OF = date(2024, 3, 1)


def test_category_history_by_hand() -> None:
    df = pd.DataFrame(
        {
            "customer_id": ["A", "A", "A", "A", "B", "B"],
            "timestamp": pd.to_datetime(
                ["2024-01-01", "2024-01-01", "2024-02-10", "2024-02-20", "2024-02-01", "2024-03-01"]
            ),
            "amount": [10.0, 5.0, 20.0, -20.0, 7.0, 9.0],
            "category": ["shoes", "shoes", "socks", "socks", "unknown", "socks"],
        }
    )
    df["is_refund"] = df.amount < 0
    tx = ibis.duckdb.connect().create_table("tx", df)
    h = cp.category_history(tx, AS_OF).to_pandas().set_index(["customer_id", "category"])
    # A: shoes on Jan 1 (two lines, one day), socks on Feb 10 (the Feb 20 refund is no purchase);
    # B's "unknown" is left out and Mar 1 is the as-of date itself
    assert sorted(h.index) == [("A", "shoes"), ("A", "socks")]
    shoes, socks = h.loc[("A", "shoes")], h.loc[("A", "socks")]
    assert (shoes.cat_days, shoes.cat_spend, shoes.cat_days_since) == (1, 15.0, 60)
    assert (socks.cat_days, socks.cat_spend, socks.cat_days_since) == (1, 20.0, 20)
    assert shoes.cat_day_share == socks.cat_day_share == 0.5
    bought = cp.category_purchases(tx, date(2024, 2, 1), date(2024, 3, 2)).to_pandas()
    assert sorted(zip(bought.customer_id, bought.category, strict=True)) == [
        ("A", "socks"),
        ("B", "socks"),
    ]


# ---- a planted shop ------------------------------------------------------------------------

START = date(2023, 1, 1)
END = date(2024, 12, 31)
HORIZON = 90
CATEGORIES = ("garden", "kitchen", "toys")


def planted_shop(n: int = 900, seed: int = 0) -> pd.DataFrame:
    """Each customer buys at their own rate; a purchase is in their planted favourite
    category with chance 0.75, else in any of the three."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(2.0, 1 / 60, size=n)  # purchases per day: about one a month on average
    favourite = rng.integers(0, 3, size=n)
    days = (END - START).days
    counts = rng.poisson(rate * days)
    customer = np.repeat(np.arange(n), counts)
    day = rng.integers(0, days, size=customer.size)
    own = rng.random(customer.size) < 0.75
    category = np.where(own, favourite[customer], rng.integers(0, 3, size=customer.size))
    df = pd.DataFrame(
        {
            "customer_id": [f"C{i:04d}" for i in customer],
            "timestamp": pd.Timestamp(START) + pd.to_timedelta(day, unit="D"),
            "amount": rng.gamma(2.0, 20.0, size=customer.size),
            "category": np.asarray(CATEGORIES)[category],
            "order_id": np.arange(customer.size).astype(str),
        }
    )
    df["is_refund"] = False
    df.attrs["favourite"] = dict(
        zip([f"C{i:04d}" for i in range(n)], np.asarray(CATEGORIES)[favourite], strict=True)
    )
    return df


def period(tx: ibis.Table, at: date) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    customers = (
        rfm_features(tx, at, rhythm=False, trend=False)
        .select("customer_id", "frequency", "recency_days", "revenue")
        .to_pandas()
    )
    history = cp.category_history(tx, at).to_pandas()
    bought = cp.category_purchases(tx, at, at + timedelta(days=HORIZON)).to_pandas()
    return customers, history, bought


@pytest.fixture(scope="module")
def shop() -> dict[str, object]:
    df = planted_shop()
    tx = ibis.duckdb.connect().create_table("tx", df)
    now = END - timedelta(days=HORIZON)
    earlier = period(tx, now - timedelta(days=HORIZON))
    present = period(tx, now)
    model = CategoryPropensity(seed=0, threads=1).fit(*present, earlier=earlier)
    return {"model": model, "present": present, "earlier": earlier, "favourite": df.attrs}


def test_both_designs_are_compared_on_the_time_holdout(shop: dict) -> None:
    model = shop["model"]
    board = model.leaderboard_
    assert set(board.strategy) == {"stacked", "per_category"}
    assert (board.holdout == "time").all() and board.error.isna().all()
    best = board.sort_values("log_loss").iloc[0].strategy
    assert model.chosen_ == best
    # the planted favourite makes every category predictable
    assert (model.category_metrics_.roc_auc > 0.7).all()
    assert set(model.category_metrics_.category) == set(CATEGORIES)
    assert model.categories_ == list(CATEGORIES)


def test_the_favourite_category_comes_first(shop: dict) -> None:
    model = shop["model"]
    customers, history, _ = shop["present"]
    p = model.predict_proba(customers, history)
    assert len(p) == len(customers) * 3
    assert p.probability.between(0, 1).all()
    top = p.loc[p.groupby("customer_id").probability.idxmax()].set_index("customer_id").category
    favourite = pd.Series(shop["favourite"]["favourite"]).reindex(top.index)
    assert (top == favourite).mean() >= 0.8


def test_reasons_explain_each_probability(shop: dict) -> None:
    model = shop["model"]
    customers, history, _ = shop["present"]
    few, hist = customers.head(20), history
    r = model.reasons(few, hist, top_k=2, catalogue={"recency_days": "days since last purchase"})
    p = model.predict_proba(few, hist)
    assert np.allclose(r.probability, p.probability)
    assert list(r.customer_id) == list(p.customer_id) and list(r.category) == list(p.category)
    assert "category" not in set(r.reason_1_feature) | set(r.reason_2_feature)
    assert all(
        s.endswith(f"the chance of buying in {c}")
        for s, c in zip(r.reason_1, r.category, strict=True)
    )
    known = {*CATEGORY_FEATURES, "frequency", "recency_days", "revenue"}
    assert set(r.reason_1_feature) <= known
    described = r.reason_1[r.reason_1_feature == "cat_days_since"]
    assert described.str.startswith("Days since the last purchase in this category: ").all()


def test_a_saved_model_predicts_the_same(shop: dict) -> None:
    model = shop["model"]
    customers, history, _ = shop["present"]
    again = CategoryPropensity.loads(model.dumps())
    few = customers.head(30)
    pd.testing.assert_frame_equal(
        again.reasons(few, history, top_k=2), model.reasons(few, history, top_k=2)
    )
    assert again.chosen_ == model.chosen_
    pd.testing.assert_frame_equal(again.leaderboard_, model.leaderboard_, check_dtype=False)
    with pytest.raises(CustvalError, match="not a propensity model"):
        CategoryPropensity.loads(b"[1]")


def test_without_an_earlier_period_customers_are_held_out(shop: dict) -> None:
    customers, history, bought = shop["present"]
    model = CategoryPropensity(strategy="stacked", threads=1).fit(customers, history, bought)
    assert list(model.leaderboard_.strategy) == ["stacked"]
    assert (model.leaderboard_.holdout == "customers").all()
    assert model.chosen_ == "stacked"


def test_a_category_with_too_few_buyers_leaves_the_stacked_design(shop: dict) -> None:
    customers, history, bought = shop["present"]
    # keep 3 buyers of toys in the horizon: too few for a model of its own
    toys = bought[bought.category == "toys"]
    thin = pd.concat([bought[bought.category != "toys"], toys.head(3)])
    model = CategoryPropensity(threads=1).fit(customers, history, thin)
    board = model.leaderboard_.set_index("strategy")
    assert "category 'toys' has 3 buyers" in board.loc["per_category", "error"]
    assert model.chosen_ == "stacked"


def test_one_category_is_a_clear_error() -> None:
    customers = pd.DataFrame({"customer_id": ["a", "b"], "orders": [1, 2]})
    history = pd.DataFrame({"customer_id": ["a", "b"], "category": ["shoes", "unknown"]})
    bought = pd.DataFrame({"customer_id": ["a"], "category": ["shoes"]})
    with pytest.raises(FitError) as err:
        CategoryPropensity().fit(customers, history, bought)
    assert "one product category only ('shoes')" in str(err.value)
    assert "[sources.X.columns] category" in str(err.value)
    with pytest.raises(CustvalError, match="unknown propensity strategy"):
        CategoryPropensity(strategy="best").fit(customers, history, bought)
    with pytest.raises(CustvalError, match="not fitted"):
        CategoryPropensity().predict_proba(customers, history)
