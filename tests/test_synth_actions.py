"""The generated company's catalogue, subscriptions and retention campaign
(custval.data.synth_actions): the original sources keep their rows, and every planted truth
(co-purchase partners, segment popularity, repurchase, the cancellation hazard, the randomised
campaign and its uplift) is in the data the way truth/ says.

One company of 20,000 customers is generated (a few seconds); the product statistics use 30,000
simulated customers without files.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from custval.data import synth
from custval.data import synth_actions as sa
from custval.data.synth import generate

END = date(2025, 12, 31)
AS_OF = datetime(2026, 1, 1)

# ------------------------------------------------------------------------------------------
# the original sources keep their rows
# ------------------------------------------------------------------------------------------

ORIGINAL = {
    "crm_customers": [
        "crm_id",
        "signup_date",
        "birth_date",
        "region",
        "acquisition_channel",
        "plan",
        "services",
        "segment_label",
    ],
    "transactions": ["order_id", "account_id", "ts", "amount", "category", "channel"],
    "web_sessions": [
        "session_id",
        "visitor_id",
        "started_at",
        "page_views",
        "duration_sec",
        "blogs_viewed",
        "videos_viewed",
        "whitepapers_viewed",
        "converted",
    ],
    "product_usage": ["account_id", "date", "features_used", "sessions", "time_sec"],
    "interactions": ["ticket_id", "crm_id", "opened_at", "kind", "resolved", "resolution_hours"],
    "id_map": ["crm_id", "visitor_id", "account_id"],
}
#: 400 customers, seed 11, Parquet: the original sources as the generator writes them since
#: the calendar came (issue 18: yearly and weekly cycles and promotion weeks move every
#: timestamp, hence every source). They were pinned at dc579d0 against the catalogue,
#: subscriptions and campaign, and must not move again unless the generative model changes.
FINGERPRINTS = {
    "crm_customers": "78d64ee97d409fbf",
    "transactions": "949cf39aba5b34a2",
    "web_sessions": "988514b0b11a0f49",
    "product_usage": "ee8f3c6c1b523fe8",
    "interactions": "e9c2d429d6f71f53",
    "id_map": "5de517def775e077",
    "truth/customers": "34cc40b8184e3452",
    "truth/params": "af3799f086c76b73",
    "truth/dirt": "a4e48a168aaaa463",
}


def digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_the_original_sources_and_truth_keep_their_values(tmp_path: Path) -> None:
    out = generate(400, tmp_path / "c", seed=11, fmt="parquet").out
    found = {
        name: digest(pq.read_table(out / f"{name}.parquet").select(cols).to_pydict())
        for name, cols in ORIGINAL.items()
    }
    found["truth/customers"] = digest(pq.read_table(out / "truth/customers.parquet").to_pydict())
    params = json.loads((out / "truth/params.json").read_text())
    assert "actions" in params
    params.pop("actions")
    # a later population setting, off by default, which draws nothing when off
    assert params["population"].pop("usage_fade_weeks") == 0.0
    found["truth/params"] = digest(params)
    dirt = json.loads((out / "truth/dirt.json").read_text())
    assert dirt["transactions"]["empty"].pop("product_id") >= 0
    found["truth/dirt"] = digest({k: v for k, v in dirt.items() if k in ORIGINAL})
    assert found == FINGERPRINTS
    # the only new column of an original source
    columns = pq.read_table(out / "transactions.parquet").column_names
    assert columns == [*ORIGINAL["transactions"], "product_id"]


# ------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(20_000, tmp_path_factory.mktemp("actions") / "c", seed=5, fmt="parquet").out


def read(company: Path, name: str) -> pd.DataFrame:
    return pq.read_table(company / name).to_pandas()


def when(text: pd.Series) -> pd.Series:
    """Timestamps written in the generator's three formats."""
    found = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M", "%d.%m.%Y %H:%M"):
        found = found.fillna(pd.to_datetime(text, format=fmt, errors="coerce"))
    return found


@pytest.fixture(scope="module")
def population() -> tuple[synth._Customers, synth._Orders, np.ndarray, sa.Goods]:
    params = synth.SynthParams()
    clock = synth._Clock.from_end(END, params.history_years)
    rng = np.random.default_rng(11)
    cust = synth._simulate_customers(rng, 30_000, params, clock)
    orders = synth._simulate_orders(rng, cust, params, clock)
    segment = synth._true_segments(cust, params)
    goods = sa.simulate_goods(
        np.random.default_rng(3),
        cust,
        orders,
        segment,
        clock,
        sa.ActionParams(),
        params.category_shares,
    )
    return cust, orders, segment, goods


def consecutive(
    orders: synth._Orders, product: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Orders sorted by customer, category and time: customer, category, product, and whether
    each is the customer's first in its category."""
    o = np.lexsort((orders.ts, orders.category, orders.cust))
    c, k, p = orders.cust[o], orders.category[o], product[o]
    first = np.ones(c.size, bool)
    first[1:] = (c[1:] != c[:-1]) | (k[1:] != k[:-1])
    return c, k, p, first


# ------------------------------------------------------------------------------------------
# products
# ------------------------------------------------------------------------------------------


def test_the_catalogue_and_its_planted_truth(company: Path) -> None:
    products = read(company, "products.parquet")
    assert products.columns.tolist() == ["product_id", "name", "category", "price"]
    assert len(products) == 120 and products.product_id.is_unique
    assert products.product_id.str.fullmatch(r"P[1-6]\d{3}").all()
    first_digit = products.product_id.str[1].astype(int) - 1
    assert (products.category == [synth.CATEGORIES[i] for i in first_digit]).all()
    assert (products.groupby("category").size() == 20).all()
    assert products.groupby("category").name.nunique().eq(20).all()
    prices = products.price.str.replace(",", "").astype(float)
    assert (prices > 0).all()
    assert prices[products.category == "electronics"].median() > 4 * (
        prices[products.category == "grocery"].median()
    )
    truth = json.loads((company / "truth/products.json").read_text())
    category = dict(zip(products.product_id, products.category, strict=True))
    partners = pd.DataFrame(truth["affinities"])
    assert (partners.product_id.map(category) == partners.partner_id.map(category)).all()
    assert (partners.product_id != partners.partner_id).all()
    assert partners.groupby("product_id").size().between(1, 2).all()
    assert partners.product_id.nunique() == 120
    assert partners.strength.between(0.15, 0.40).all()
    for shares in [truth["global_popularity"], *truth["segment_popularity"].values()]:
        by_category = pd.Series(shares).groupby(pd.Series(category)).sum()
        assert np.allclose(by_category, 1.0)


def test_every_transaction_has_a_product_of_its_category(company: Path) -> None:
    tx = read(company, "transactions.parquet").drop_duplicates()
    products = read(company, "products.parquet")
    category = dict(zip(products.product_id, products.category, strict=True))
    known = tx.product_id.notna() & tx.category.notna()
    assert (tx.product_id[known].map(category) == tx.category[known]).all()
    dirt = json.loads((company / "truth/dirt.json").read_text())["transactions"]
    assert tx.product_id.isna().sum() == dirt["empty"]["product_id"]
    assert tx.product_id.isna().mean() == pytest.approx(0.01, abs=0.003)
    # a refund carries the product of an order of its account (unless that order's is empty)
    account = tx.account_id.str.strip().str.upper()
    refund = tx.order_id.str.startswith("R") & tx.product_id.notna()
    bought = set(zip(account[~refund], tx.product_id[~refund], strict=True))
    refunded = list(zip(account[refund], tx.product_id[refund], strict=True))
    assert np.mean([pair not in bought for pair in refunded]) < 0.02


def test_planted_partners_are_what_customers_buy_next(population: tuple) -> None:
    _, orders, _, goods = population
    cat = goods.catalogue
    _, _, p, first = consecutive(orders, goods.order_product)
    later = ~first
    prev, nxt = np.roll(p, 1)[later], p[later]
    seen = np.bincount(prev, minlength=cat.size)
    pairs = np.bincount(prev * cat.size + nxt, minlength=cat.size**2).reshape(cat.size, -1)
    observed, planted = [], []
    for x in np.flatnonzero(seen > 200):
        for y, s in zip(cat.partners[x], cat.strength[x], strict=True):
            if y >= 0:
                observed.append(pairs[x, y] / seen[x])
                planted.append(s)
    observed_a, planted_a = np.array(observed), np.array(planted)
    assert observed_a.size > 150
    # the partner comes with its planted strength, plus what popularity and repeats add
    assert np.corrcoef(observed_a, planted_a)[0, 1] > 0.9
    assert 0.0 < (observed_a - planted_a).mean() < 0.05
    # a product that is no partner follows far less often
    partner = np.zeros((cat.size, cat.size), bool)
    for x in range(cat.size):
        partner[x, cat.partners[x][cat.partners[x] >= 0]] = True
    same = (cat.category[:, None] == cat.category[None, :]) & ~np.eye(cat.size, dtype=bool)
    assert pairs[partner].mean() > 5 * pairs[same & ~partner].mean()


def test_segment_popularity_beats_global_popularity(population: tuple) -> None:
    _, orders, segment, goods = population
    cat = goods.catalogue
    c, _, p, first = consecutive(orders, goods.order_product)
    fp, fs = p[first], segment[c[first]]

    def top3(weights: np.ndarray) -> np.ndarray:
        chosen = np.zeros(cat.size, bool)
        for start in range(0, cat.size, cat.per_category):
            block = np.arange(start, start + cat.per_category)
            chosen[block[np.argsort(-weights[block])[:3]]] = True
        return chosen

    by_segment = np.array([top3(cat.popularity[s]) for s in range(len(synth.SEGMENTS))])
    hit_segment = by_segment[fs, fp].mean()
    hit_global = top3(cat.global_popularity)[fp].mean()
    assert hit_segment > 1.3 * hit_global
    assert np.log(cat.popularity[fs, fp]).mean() > np.log(cat.global_popularity[fp]).mean() + 0.3


def test_repurchase_follows_the_category(population: tuple) -> None:
    _, orders, _, goods = population
    c, k, p, first = consecutive(orders, goods.order_product)
    frame = pd.DataFrame({"group": c.astype(np.int64) * 8 + k, "product": p, "category": k})
    frame["again"] = frame.duplicated(["group", "product"])
    again = frame[~first].groupby("category").again.mean()
    grocery, electronics = (synth.CATEGORIES.index(n) for n in ("grocery", "electronics"))
    assert again[grocery] > again[electronics] + 0.08
    assert (again > 0.3).all()


def test_next_products_are_the_13_weeks_after_the_end(company: Path) -> None:
    future = read(company, "truth/next_products.parquet")
    truth = read(company, "truth/customers.parquet")
    products = read(company, "products.parquet")
    assert future.columns.tolist() == ["crm_id", "ts", "category", "product_id"]
    assert future.ts.min() >= AS_OF and future.ts.max() < AS_OF + timedelta(weeks=13)
    alive = truth[truth.alive_at_end]
    assert set(future.crm_id) <= set(alive.crm_id)
    category = dict(zip(products.product_id, products.category, strict=True))
    assert (future.product_id.map(category) == future.category).all()
    lam, p = alive.lambda_per_week.to_numpy(), alive.p_dropout.to_numpy()
    expected = (-np.expm1(-lam * p * 13) / p).sum()
    assert len(future) == pytest.approx(expected, rel=0.05)


# ------------------------------------------------------------------------------------------
# subscriptions
# ------------------------------------------------------------------------------------------


def test_the_hazard_curve_integrates_and_inverts_exactly() -> None:
    # subscription 0: 0.1 a week from week 0, 0.2 from week 2, until week 10;
    # subscription 1: 1.0 a week from week 3 to week 4
    curve = sa._Hazard(
        np.array([0, 0, 0, 1, 1]),
        np.array([0.0, 2.0, 10.0, 3.0, 4.0]),
        np.array([np.log(0.1), np.log(2.0), 0.0, 0.0, 0.0]),
        2,
    )
    sub = np.array([0, 0, 0, 0, 1, 1])
    t = np.array([1.0, 2.0, 5.0, 10.0, 3.5, 2.0])
    assert curve.at(sub, t) == pytest.approx([0.1, 0.2, 0.8, 1.8, 0.5, 0.0])
    assert curve.rate(sub, t) == pytest.approx([0.1, 0.2, 0.2, 0.2, 1.0, 1.0])
    back = curve.invert(np.array([0, 0, 0, 1, 1]), np.array([0.05, 0.5, 2.0, 0.25, 1.5]))
    assert back == pytest.approx([0.5, 3.5, np.inf, 3.25, np.inf])


def test_subscriptions_source_and_truth_agree(company: Path) -> None:
    source = read(company, "subscriptions.parquet")
    truth = read(company, "truth/subscriptions.parquet")
    crm = read(company, "crm_customers.parquet").drop_duplicates()
    id_map = read(company, "id_map.parquet")
    dirt = json.loads((company / "truth/dirt.json").read_text())["subscriptions"]
    assert source.columns.tolist() == [
        "subscription_id",
        "account_id",
        "plan",
        "started_at",
        "cancelled_at",
        "monthly_fee",
    ]
    assert source.subscription_id.str.fullmatch(r"SUB\d{7}").all()
    # an older snapshot of a cancelled subscription is the only kind of second row
    distinct = source.drop_duplicates()
    assert len(source) - len(distinct) == dirt["duplicates"]
    stale = distinct.subscription_id.duplicated(keep=False) & distinct.cancelled_at.isna()
    assert stale.sum() == dirt["stale_snapshots"] > 0
    latest = distinct[~stale].set_index("subscription_id").sort_index()
    truth = truth.set_index("subscription_id").sort_index()
    assert latest.index.equals(truth.index)
    assert (latest.plan == truth.plan).all()
    starts = when(latest.started_at)
    assert (starts.dt.floor("min") == truth.started_at.dt.floor("min")).all()
    shown = latest.cancelled_at.notna()
    assert (shown == truth.cancelled_before_end).all()
    assert shown.sum() == dirt["cancelled"]
    cancelled = when(latest.cancelled_at[shown])
    assert (cancelled.dt.floor("min") == truth.cancelled_at[shown].dt.floor("min")).all()
    assert (truth.cancelled_at.dropna() > truth.started_at[truth.cancelled_at.notna()]).all()
    assert (latest.monthly_fee.astype(float) == truth.monthly_fee).all()
    # who subscribes: basic and premium customers with an account, days after signup
    crm["crm"] = crm.crm_id.str.strip().str.upper()
    plan = dict(zip(crm.crm, crm.plan, strict=True))
    assert (truth.crm_id.map(plan) == truth.plan).all()
    paying = crm.plan.isin(["basic", "premium"]) & crm.crm.isin(id_map.account_id.notna().pipe(
        lambda has: id_map.crm_id[has].str.strip().str.upper()
    ))  # fmt: skip
    assert set(truth.crm_id) <= set(crm.crm[paying])
    # the others signed up so late that their subscription starts after the end
    late = crm[paying & ~crm.crm.isin(truth.crm_id)]
    assert len(late) < 0.01 * len(truth)
    signup_date = crm.signup_date.str.replace("/", "-")
    dot = signup_date.str.contains(".", regex=False)
    signup_date[dot] = pd.to_datetime(signup_date[dot], format="%d.%m.%Y").dt.strftime("%Y-%m-%d")
    signup = dict(zip(crm.crm, pd.to_datetime(signup_date), strict=True))
    assert (late.crm.map(signup) > pd.Timestamp(END) - timedelta(days=30)).all()
    delay = truth.started_at - truth.crm_id.map(signup)
    assert delay.min() >= timedelta(0) and delay.median() < timedelta(days=3)


def test_cancellation_risk_is_calibrated_and_driven_by_the_sources(company: Path) -> None:
    truth = read(company, "truth/subscriptions.parquet")
    active = truth[~truth.cancelled_before_end]
    assert active.p_cancel_13w.notna().all()
    assert truth.p_cancel_13w[truth.cancelled_before_end].isna().all()
    within = active.cancelled_at < AS_OF + timedelta(weeks=13)
    se = np.sqrt((active.p_cancel_13w * (1 - active.p_cancel_13w)).sum()) / len(active)
    assert within.mean() == pytest.approx(active.p_cancel_13w.mean(), abs=4 * se)
    # much higher once the customer has stopped purchasing, lower for premium
    stopped = active.stopped_purchasing_at < AS_OF
    assert active.hazard_per_week[stopped].median() > 4 * active.hazard_per_week[~stopped].median()
    premium = active.plan == "premium"
    assert active.hazard_per_week[premium].median() < active.hazard_per_week[~premium].median()
    assert 0.3 < len(active) / len(truth) < 0.6


# ------------------------------------------------------------------------------------------
# the campaign
# ------------------------------------------------------------------------------------------


def test_the_campaign_is_randomised_and_agrees_with_the_subscriptions(company: Path) -> None:
    log = read(company, "treatments.parquet").drop_duplicates()
    subs = read(company, "truth/subscriptions.parquet")
    assert log.columns.tolist() == [
        "crm_id",
        "campaign_id",
        "sent_at",
        "group",
        "offer",
        "channel",
        "cost",
        "retained",
    ]
    log["crm"] = log.crm_id.str.strip().str.upper()
    assert log.crm.is_unique and log.campaign_id.nunique() == 1
    sent = when(log.sent_at)
    day = AS_OF - timedelta(weeks=12)
    assert (sent.dt.normalize() == day).all()
    treated = log.group == "treatment"
    n = len(log)
    assert treated.mean() == pytest.approx(0.75, abs=3 * np.sqrt(0.75 * 0.25 / n))
    cost = log.cost.astype(float)
    assert (cost[~treated] == 0).all() and (cost[treated] > 0).all()
    assert set(log.channel) == set(sa.CONTACT_CHANNELS)
    # 40% of the subscribers active on the day it was sent
    active = (subs.started_at < day) & ~(subs.cancelled_at < day + timedelta(days=1))
    assert n / active.sum() == pytest.approx(0.40, abs=3 * np.sqrt(0.24 / active.sum()))
    assert set(log.crm) <= set(subs.crm_id[active])
    # retained: still subscribed 8 weeks later, as the subscriptions tell
    cancel = log.crm.map(dict(zip(subs.crm_id, subs.cancelled_at, strict=True)))
    stayed = ~(cancel < sent + timedelta(weeks=8))
    assert (stayed == log.retained).all()


def test_the_uplift_is_planted_heterogeneous_and_measurable(company: Path) -> None:
    up = read(company, "truth/uplift.parquet")
    log = read(company, "treatments.parquet").drop_duplicates()
    log["crm"] = log.crm_id.str.strip().str.upper()
    camp = up[up.campaign_group.notna()].merge(log, left_on="crm_id", right_on="crm")
    assert (camp.campaign_group == camp.group).all()
    tau = camp.groupby("campaign_class").campaign_tau.mean()
    assert tau["sleeping_dog"] == pytest.approx(-0.10, abs=0.02)
    assert tau["lost_cause"] == pytest.approx(0.02, abs=0.01)
    assert tau["persuadable"] > 0.10 and abs(tau["sure_thing"]) < 0.03
    shares = camp.campaign_class.value_counts(normalize=True)
    assert 0.02 < shares["sleeping_dog"] < 0.08
    # what the experiment measures is the planted uplift
    treated = camp.group == "treatment"
    measured = camp.retained[treated].mean() - camp.retained[~treated].mean()
    se = np.sqrt(0.1 / treated.sum() + 0.15 / (~treated).sum())
    assert measured == pytest.approx(camp.campaign_tau.mean(), abs=3 * se)
    persuaded = camp.campaign_class == "persuadable"
    lift = camp.retained[treated & persuaded].mean() - camp.retained[~treated & persuaded].mean()
    assert lift > 0.05
    # Ascarza: the riskiest are not the ones worth contacting
    end = up[up.active_at_end]
    risky = end.campaign_class.isin(["sleeping_dog"]) | end.uplift_class.isin(
        ["sleeping_dog", "lost_cause"]
    )
    assert end.p_control[risky].mean() > 2 * end.p_control[end.uplift_class == "sure_thing"].mean()
    k = len(end) // 5
    by_risk = end.nlargest(k, "p_control").incremental_profit.sum()
    by_value = (end.tau * end.value_at_stake - end.cost).nlargest(k).sum()
    assert by_value > 1.5 * by_risk
    assert np.allclose(end.incremental_profit, end.tau * end.value_at_stake - end.cost)
    assert np.allclose(end.p_treated, end.p_control - end.tau, atol=1e-9)
    params = json.loads((company / "truth/params.json").read_text())["actions"]
    assert "incremental_profit" in params and params["parameters"]["treated_share"] == 0.75


def test_ids_and_formats_of_the_new_sources(company: Path) -> None:
    log = read(company, "treatments.parquet")
    dirt = json.loads((company / "truth/dirt.json").read_text())
    distinct = log.drop_duplicates()
    assert len(log) - len(distinct) == dirt["treatments"]["duplicates"]
    dirty = distinct.crm_id != distinct.crm_id.str.strip().str.upper()
    assert dirty.sum() == dirt["treatments"]["dirty_ids"]["crm_id"]
    formats = {"slash": r"^\d{4}/", "dot": r"^\d{2}\."}
    for name, pattern in formats.items():
        found = distinct.sent_at.str.contains(pattern).sum()
        assert found == dirt["treatments"]["date_formats"]["sent_at"][name]
    assert all(re.fullmatch(r"RET-\d{4}-\d{2}-\d{2}", c) for c in set(log.campaign_id))
