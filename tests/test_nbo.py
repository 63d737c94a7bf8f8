"""Next best offer: the candidate sources' SQL counts by hand, the ranker on a planted shop, the
reasons, the metrics on hand examples and the clear errors."""

from __future__ import annotations

from datetime import date, timedelta

import ibis
import numpy as np
import pandas as pd
import pytest

from custval.errors import CustvalError, FitError
from custval.features import copurchase as cp
from custval.models.nbo import (
    NextBestOffer,
    map_at_k,
    offer_reasons,
    ranking_metrics,
    recall_at_k,
    top_k,
)

AS_OF = date(2024, 2, 1)


def tx_table(rows: list[tuple], con: ibis.BaseBackend | None = None) -> ibis.Table:
    """Cleaned transactions from (customer, product, day[, amount]) rows."""
    df = pd.DataFrame(
        [(*r, 10.0) if len(r) == 3 else r for r in rows],
        columns=["customer_id", "product_id", "day", "amount"],
    )
    df["timestamp"] = pd.to_datetime(df.pop("day"))
    df["is_refund"] = df.amount < 0
    df["category"] = df.product_id.map({"x": "shoes", "y": "socks", "z": "socks"}).fillna("other")
    con = con or ibis.duckdb.connect()
    return con.create_table("tx", df)


# A bought x then y; B bought x and y on one day; C bought y before x; D bought x on two days
# (and twice on the first); A's z came between x and y; E's purchase and F's refund do not count
HAND = [
    ("A", "x", "2024-01-01"),
    ("A", "z", "2024-01-03"),
    ("A", "y", "2024-01-05"),
    ("B", "x", "2024-01-02"),
    ("B", "y", "2024-01-02"),
    ("C", "y", "2024-01-01"),
    ("C", "x", "2024-01-04"),
    ("D", "x", "2024-01-01"),
    ("D", "x", "2024-01-01"),
    ("D", "x", "2024-01-08"),
    ("E", "y", "2024-02-01"),  # on the as-of date: not seen
    ("F", "y", "2024-01-10", -10.0),  # a refund: not a purchase
]


@pytest.fixture(scope="module")
def hand() -> ibis.Table:
    return tx_table(HAND)


def test_product_history_counts_purchase_days(hand: ibis.Table) -> None:
    h = cp.product_history(hand, AS_OF).to_pandas().set_index(["customer_id", "product_id"])
    assert sorted(h.index) == [
        ("A", "x"), ("A", "y"), ("A", "z"), ("B", "x"), ("B", "y"), ("C", "x"), ("C", "y"),
        ("D", "x"),
    ]  # fmt: skip
    d = h.loc[("D", "x")]
    assert (d.times_bought, d.spend) == (2, 30.0)  # two days, three lines
    assert pd.Timestamp(d.last_day) == pd.Timestamp(2024, 1, 8)


def test_copurchase_counts_by_hand(hand: ibis.Table) -> None:
    h = cp.product_history(hand, AS_OF)
    pairs = cp.copurchase_pairs(h, min_customers=1).to_pandas()
    got = pairs.set_index(["product_id", "partner_id"])
    # x -> y: A (Jan 1 then Jan 5) and B (same day); not C, who bought y first
    # y -> x: B and C; x -> z: A; z -> y: A; y -> z and z -> x: nobody
    assert got.customers.to_dict() == {
        ("x", "y"): 2, ("y", "x"): 2, ("x", "z"): 1, ("z", "y"): 1,
    }  # fmt: skip
    # buyers: x 4 (A B C D), y 3 (A B C), z 1 (A); N = 4 customers
    xy = got.loc[("x", "y")]
    assert (xy.buyers, xy.partner_buyers) == (4, 3)
    assert xy.share == pytest.approx(2 / 4)
    assert xy.lift == pytest.approx((2 / 4) / (3 / 4))
    assert xy.cosine == pytest.approx(2 / np.sqrt(4 * 3))
    zy = got.loc[("z", "y")]
    assert (zy.share, zy.lift, zy.cosine) == pytest.approx((1.0, 4 / 3, 1 / np.sqrt(3)))
    # x's partners by cosine: y (0.577) before z (0.5)
    assert got.loc[("x", "y")].partner_rank == 1 and got.loc[("x", "z")].partner_rank == 2
    # a minimum of 2 customers keeps the two pairs that have them; top_n = 1 keeps x's first
    kept = cp.copurchase_pairs(h, min_customers=2, top_n=1).to_pandas()
    assert sorted(zip(kept.product_id, kept.partner_id, strict=True)) == [("x", "y"), ("y", "x")]


def test_popularity_overall_and_by_segment(hand: ibis.Table) -> None:
    pop = cp.popularity(hand, AS_OF, window_days=60).to_pandas().set_index("product_id")
    assert pop.buyers.to_dict() == {"x": 4, "y": 3, "z": 1}
    assert pop["rank"].to_dict() == {"x": 1, "y": 2, "z": 3}
    assert pop.share.to_dict() == pytest.approx({"x": 1.0, "y": 0.75, "z": 0.25})
    # within the last 30 days (from Jan 2): A's y and z, B's x and y, C's x, D's x
    recent = cp.popularity(hand, AS_OF, window_days=30).to_pandas().set_index("product_id")
    assert recent.buyers.to_dict() == {"x": 3, "y": 2, "z": 1}
    segments = ibis.memtable({"customer_id": ["A", "B", "C", "D"], "segment": ["s", "s", "t", "t"]})
    seg = cp.popularity(hand, AS_OF, window_days=60, segments=segments).to_pandas()
    s = seg[seg.segment == "s"].set_index("product_id")
    assert s.buyers.to_dict() == {"x": 2, "y": 2, "z": 1}
    assert s["rank"].to_dict() == {"x": 1, "y": 2, "z": 3}  # ties by product id
    t = seg[seg.segment == "t"].set_index("product_id")
    assert t.share.to_dict() == pytest.approx({"x": 1.0, "y": 0.5})


def test_the_catalogue_prefers_the_products_table(hand: ibis.Table) -> None:
    products = ibis.memtable(
        {"product_id": ["x", "y"], "name": ["X", "Y"], "category": ["kit", "kit"], "price": [5, 7]}
    )
    cat = cp.product_catalogue(hand, products).to_pandas().set_index("product_id")
    # x and y from the table; z, which it lacks, from the transactions (socks, 10 a line)
    assert cat.category.to_dict() == {"x": "kit", "y": "kit", "z": "socks"}
    assert cat.price.to_dict() == {"x": 5.0, "y": 7.0, "z": 10.0}
    names_only = cp.product_catalogue(hand, products.select("product_id", "category"))
    got = names_only.to_pandas().set_index("product_id")
    assert got.category.to_dict() == {"x": "kit", "y": "kit", "z": "socks"}
    assert got.price.to_dict() == {"x": 10.0, "y": 10.0, "z": 10.0}


def test_candidates_unite_the_sources_with_their_features(hand: ibis.Table) -> None:
    h = cp.product_history(hand, AS_OF)
    pairs = cp.copurchase_pairs(h, min_customers=1)
    pop = cp.popularity(hand, AS_OF, window_days=60)
    cat = cp.product_catalogue(hand)
    people = ibis.memtable({"customer_id": ["B", "D", "G"]})
    c = cp.candidates(people, h, pairs, pop, cat, AS_OF, n_popular=1).to_pandas()
    got = c.set_index(["customer_id", "product_id"]).sort_index()
    # B bought x and y; x's partners y, z; y's partner x; popular: x
    # D bought x (twice); x's partners y and z; G bought nothing: the most popular only
    assert list(got.index) == [
        ("B", "x"), ("B", "y"), ("B", "z"), ("D", "x"), ("D", "y"), ("D", "z"), ("G", "x"),
    ]  # fmt: skip
    dx, dy = got.loc[("D", "x")], got.loc[("D", "y")]
    assert (dx.times_bought, dx.days_since_bought, dx.cop_links) == (2, 24, 0)
    assert (dy.times_bought, dy.cop_via, dy.cop_share) == (0, "x", pytest.approx(0.5))
    assert np.isnan(dy.days_since_bought)
    # D's x, the link to y, is 24 days old on Feb 1 and from D's last purchase day
    assert dy.cop_recent == pytest.approx(2 / np.sqrt(12) * 2 ** (-24 / 30))
    assert dy.cop_last_share == pytest.approx(0.5)
    # B reaches z through x only (y leads nowhere but x); y through x
    bz = got.loc[("B", "z")]
    assert (bz.cop_links, bz.cop_via, bz.cop_score) == (1, "x", pytest.approx(0.5))
    assert got.loc[("B", "x")].cop_via == "y"
    # D's purchase days in the product's category: 2 in shoes (x), none in socks
    assert (dx.category, dx.category_days) == ("shoes", 2)
    assert (dy.category, dy.category_days) == ("socks", 0)
    assert got.loc[("G", "x")].glob_rank == 1 and got.loc[("G", "x")].times_bought == 0
    assert set(c.columns) == set(cp.CANDIDATE_COLUMNS) - {"seg_share", "seg_rank"}


def test_segment_candidates_and_chunks(hand: ibis.Table) -> None:
    h = cp.product_history(hand, AS_OF)
    segments = ibis.memtable({"customer_id": ["A", "B", "C", "D"], "segment": ["s", "s", "t", "t"]})
    seg_pop = cp.popularity(hand, AS_OF, window_days=60, segments=segments)
    people = segments.filter(segments.customer_id.isin(["C", "D"]))
    c = cp.candidates(
        people,
        h,
        cp.copurchase_pairs(h, min_customers=1),
        cp.popularity(hand, AS_OF, window_days=60),
        cp.product_catalogue(hand),
        AS_OF,
        segment_popular=seg_pop,
        n_popular=1,
    ).to_pandas()
    dy = c[(c.customer_id == "D") & (c.product_id == "y")].iloc[0]
    assert (dy.seg_share, dy.seg_rank) == (pytest.approx(0.5), 2)
    parts = cp.customer_chunks(segments, 3)
    ids = sorted(i for p in parts for i in p.to_pandas().customer_id)
    assert ids == ["A", "B", "C", "D"]  # every customer in exactly one part


def test_candidate_batches_cover_every_customer_once(hand: ibis.Table) -> None:
    segments = ibis.memtable({"customer_id": ["A", "B"], "segment": ["s", "s"]})
    sources = cp.candidate_sources(hand, AS_OF, segments=segments, min_customers=1)
    people = ibis.memtable({"customer_id": ["A", "B", "C", "D", "G", "A"]})
    parts = list(cp.candidate_batches(sources, people, batch_customers=2))
    assert len(parts) == 3  # 5 distinct customers, 2 a part
    whole = pd.concat(parts, ignore_index=True)
    assert sorted(whole.customer_id.unique()) == ["A", "B", "C", "D", "G"]
    assert not whole.duplicated(["customer_id", "product_id"]).any()
    once = cp.candidates(
        people.distinct().left_join(segments, "customer_id").select("customer_id", "segment"),
        sources.history,
        sources.pairs,
        sources.popular,
        sources.catalogue,
        AS_OF,
        segment_popular=sources.segment_popular,
    ).to_pandas()
    key = ["customer_id", "product_id"]
    pd.testing.assert_frame_equal(
        whole.astype(once.dtypes.to_dict()).sort_values(key).reset_index(drop=True),
        once.sort_values(key).reset_index(drop=True),
        check_dtype=False,
    )
    # in segment s only A bought in the 28 days before Feb 1 (y, on Jan 5); C has none
    seg = whole.set_index(key).seg_rank.astype("float64")
    assert seg.loc[("A", "y")] == 1 and np.isnan(seg.loc[("A", "x")])
    assert np.isnan(seg.loc[("C", "y")])


def test_no_product_column_is_a_clear_error() -> None:
    con = ibis.duckdb.connect()
    tx = tx_table(HAND, con).drop("product_id")
    with pytest.raises(CustvalError) as err:
        cp.product_history(tx, AS_OF)
    assert "transactions have no product_id column; map one with [sources.transactions" in str(
        err.value
    )
    with pytest.raises(CustvalError, match=r"\[sources\.shop\.columns\] product_id"):
        cp.require_products(tx, "shop")


# ---- metrics -------------------------------------------------------------------------------


def test_map_and_recall_on_a_hand_example() -> None:
    recommended = pd.DataFrame(
        {
            "customer_id": ["u1", "u1", "u1", "u2", "u2", "u4"],
            "product_id": ["a", "c", "b", "e", "f", "a"],
            "rank": [1, 2, 3, 1, 2, 1],
        }
    )
    actual = pd.DataFrame(
        {"customer_id": ["u1", "u1", "u2", "u3"], "product_id": ["a", "b", "d", "g"]}
    )
    # u1: hits at 1 and 3 -> (1 + 2/3) / min(2, 10); u2 and u3 (no offers) 0; u4 bought nothing
    m = ranking_metrics(recommended, actual, k=10)
    assert m["map@10"] == pytest.approx((1 + 2 / 3) / 2 / 3)
    assert m["recall@10"] == pytest.approx((1 + 0 + 0) / 3)
    assert m["customers"] == 3
    # at k = 2 u1 keeps a (hit) and c: AP = 1 / min(2, 2), recall 1/2
    assert map_at_k(recommended, actual, k=2) == pytest.approx(0.5 / 3)
    assert recall_at_k(recommended, actual, k=2) == pytest.approx(0.5 / 3)
    # one purchase, offered third: AP = (1/3) / min(1, k); not among the first 2: 0
    only_b = actual.iloc[[1]]
    assert map_at_k(recommended, only_b, k=3) == pytest.approx(1 / 3)
    assert map_at_k(recommended, only_b, k=2) == 0.0


def test_top_k_per_customer() -> None:
    rows, rank = top_k(["a", "b", "a", "a", "b"], np.array([0.1, 0.5, 0.9, 0.9, 0.2]), 2)
    assert rows.tolist() == [2, 3, 1, 4]  # a: two 0.9s (first row first); b: 0.5 then 0.2
    assert rank.tolist() == [1, 2, 1, 2]


def test_offer_reasons_name_the_rule_that_holds() -> None:
    top = pd.DataFrame(
        {
            "product_id": ["p1", "p2", "p3", "p4", "p5", "p6"],
            "times_bought": [3, 1, 1, 0, 0, 0],
            "days_since_bought": [5.0, 40.0, 12.0, np.nan, np.nan, np.nan],
            "cop_share": [0.5, 0.0, 0.314, 0.0, 0.0, 0.0],
            "cop_via": ["p9", None, "p9", None, None, None],
            "seg_rank": [1.0, 2.0, 3.0, 5.0, np.nan, np.nan],
            "glob_rank": [1.0, 2.0, 3.0, 4.0, 7.0, np.nan],
        }
    )
    products = pd.DataFrame({"product_id": ["p3", "p9"], "name": ["Running socks", "Trail shoes"]})
    assert offer_reasons(top, products).tolist() == [
        "bought 3 times before",
        "bought before, 40 days ago",
        "bought Trail shoes; customers who buy Trail shoes often buy Running socks (31% of them)",
        "popular in your segment (top 5)",
        "popular overall (top 7)",
        "customers with similar purchases buy it",
    ]
    _, source = offer_reasons(top, products, with_source=True)
    assert source.tolist() == [
        "repurchase",
        "repurchase",
        "co-purchase",
        "segment popularity",
        "global popularity",
        "similar customers",
    ]


# ---- the ranker on a planted shop ----------------------------------------------------------

START = date(2024, 1, 1)
END = date(2024, 12, 26)
HORIZON = 56


def planted_shop(n: int = 1200, n_products: int = 24, seed: int = 0) -> pd.DataFrame:
    """Customers buy every 5 to 40 days; after product i they buy its planted partner i + 1
    with chance 0.7, else a product drawn by popularity (a few dominate)."""
    rng = np.random.default_rng(seed)
    popularity = rng.dirichlet(np.full(n_products, 0.3))
    steps = 40
    gaps = rng.integers(5, 41, size=(n, steps))
    day = rng.integers(0, 150, size=(n, 1)) + np.cumsum(gaps, axis=1) - gaps[:, :1]
    follows = rng.random((n, steps)) < 0.7
    drawn = rng.choice(n_products, size=(n, steps), p=popularity)
    product = np.empty((n, steps), dtype=np.int64)
    product[:, 0] = drawn[:, 0]
    for s in range(1, steps):  # a loop over the purchase steps, vectorised over customers
        product[:, s] = np.where(follows[:, s], (product[:, s - 1] + 1) % n_products, drawn[:, s])
    keep = day < (END - START).days
    customer = np.repeat(np.arange(n), steps).reshape(n, steps)
    df = pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in customer[keep]],
            "product_id": [f"P{p:02d}" for p in product[keep]],
            "timestamp": pd.Timestamp(START) + pd.to_timedelta(day[keep], unit="D"),
        }
    )
    df["amount"] = 10.0
    df["is_refund"] = False
    df["category"] = "cat" + (product[keep] % 3).astype(str)
    return df


def candidate_set(tx: ibis.Table, at: date) -> pd.DataFrame:
    history = cp.product_history(tx, at).cache()
    return cp.candidates(
        history.select("customer_id").distinct(),
        history,
        cp.copurchase_pairs(history, min_customers=2),
        cp.popularity(tx, at, window_days=28),
        cp.product_catalogue(tx),
        at,
        n_via=3,
        n_popular=6,
    ).to_pandas()


@pytest.fixture(scope="module")
def planted() -> dict[str, object]:
    con = ibis.duckdb.connect()
    df = planted_shop()
    tx = con.create_table("tx", df)
    as_of = END - timedelta(days=HORIZON)
    t0 = as_of - timedelta(days=HORIZON)
    train = candidate_set(tx, t0)
    bought_train = cp.product_purchases(tx, t0, as_of).to_pandas()
    now = candidate_set(tx, as_of)
    bought_now = cp.product_purchases(tx, as_of, END).to_pandas()
    model = NextBestOffer(k=10, horizon_days=HORIZON, rounds=60, num_leaves=7).fit(
        train, bought_train
    )
    before = df[df.timestamp < pd.Timestamp(as_of)].sort_values("timestamp")
    last = before.groupby("customer_id").product_id.last()
    return {
        "model": model,
        "now": now,
        "bought_now": bought_now,
        "last": last,
        "recommended": model.recommend(now),
    }


def test_the_ranker_offers_the_planted_partner_first(planted: dict) -> None:
    rec = planted["recommended"]
    first = rec[rec["rank"] == 1].set_index("customer_id").product_id
    last = planted["last"].reindex(first.index)
    partner = "P" + ((last.str[1:].astype(int) + 1) % 24).map("{:02d}".format)
    # the planted rule: the next purchase is the last one's partner with chance 0.7
    assert (first == partner).mean() >= 0.9
    reasons = rec[rec["rank"] == 1].reason
    assert reasons.str.contains("customers who buy").mean() >= 0.9


def test_the_ranker_beats_its_sources_alone(planted: dict) -> None:
    now, bought = planted["now"], planted["bought_now"]
    ranker = ranking_metrics(planted["recommended"], bought)
    for source in ("glob_share", "cop_score"):
        rows, rank = top_k(now.customer_id, now[source].to_numpy(dtype=float), 10)
        alone = ranking_metrics(now.iloc[rows].assign(rank=rank), bought)
        assert ranker["map@10"] > alone["map@10"], source
    model = planted["model"]
    assert 0 < model.candidate_recall_ <= 1
    assert model.best_iteration_ >= 1 and model.validation_map_ > 0


def test_offers_are_k_distinct_products_per_customer(planted: dict) -> None:
    rec = planted["recommended"]
    assert list(rec.columns) == ["customer_id", "rank", "product_id", "score", "reason", "source"]
    per = rec.groupby("customer_id")
    assert per.size().max() == 10
    assert (per.product_id.nunique() == per.size()).all()
    assert (per["rank"].min() == 1).all()
    # scores fall with the rank
    assert (rec.groupby("customer_id").score.diff().dropna() <= 0).all()


def test_the_ranker_reads_customer_features(planted: dict) -> None:
    now, bought = planted["now"], planted["bought_now"]
    days = now.groupby("customer_id").times_bought.sum()
    customers = pd.DataFrame(
        {"customer_id": days.index, "days": days.to_numpy(), "tier": np.where(days > 9, "a", "b")}
    )
    model = NextBestOffer(rounds=20, num_leaves=7).fit(now, bought, customers)
    assert model.customer_schema_.columns == ["days", "tier"]
    assert model.booster_.feature_name()[-2:] == ["customer_days", "customer_tier"]
    # one customer's offers depend on that customer's row only, not on who else is scored
    mask = (now.customer_id == now.customer_id.iloc[0]).to_numpy()
    one = now[mask]
    alone = model.score(one, customers[customers.customer_id == one.customer_id.iloc[0]])
    assert np.allclose(alone, model.score(now, customers)[mask])
    with pytest.raises(CustvalError, match="customer features"):
        model.score(one)


def test_a_saved_ranker_recommends_the_same(planted: dict) -> None:
    model = planted["model"]
    again = NextBestOffer.loads(model.dumps())
    now = planted["now"]
    pd.testing.assert_frame_equal(again.recommend(now), planted["recommended"])
    assert again.get_params() == model.get_params()
    with pytest.raises(CustvalError, match="not a next-best-offer model"):
        NextBestOffer.loads(b'{"kind": "other"}')


def test_ranker_errors() -> None:
    c = pd.DataFrame({"customer_id": ["a"], "product_id": ["x"], "times_bought": [1]})
    with pytest.raises(FitError, match="too few to learn a ranking"):
        NextBestOffer().fit(c, c[["customer_id", "product_id"]])
    with pytest.raises(CustvalError, match="none of the ranker's features"):
        NextBestOffer().fit(c[["customer_id", "product_id"]], c)
    with pytest.raises(CustvalError, match="not fitted"):
        NextBestOffer().recommend(c)


def test_als_finds_the_customers_block() -> None:
    pytest.importorskip("implicit")
    from custval.models.nbo import ImplicitAls

    rng = np.random.default_rng(1)
    rows = []
    for i in range(200):  # two blocks: customers 0-99 buy p0-p4, 100-199 buy p5-p9
        block = 0 if i < 100 else 5
        for p in rng.choice(5, size=3, replace=False):
            rows.append((f"c{i}", f"p{block + p}", 1))
    history = pd.DataFrame(rows, columns=["customer_id", "product_id", "times_bought"])
    als = ImplicitAls(factors=2, iterations=10, seed=0, threads=1).fit(history)
    rec = als.recommend(["c0", "c150", "unknown"], n=2, filter_bought=True)
    assert set(rec.customer_id) == {"c0", "c150"}
    block = rec.product_id.str[1:].astype(int) >= 5
    assert (block == (rec.customer_id == "c150")).all()
    bought = set(history[history.customer_id == "c0"].product_id)
    assert not bought & set(rec[rec.customer_id == "c0"].product_id)
    # a customer's own block scores above the other block; unknown ids score NaN
    s = als.score_pairs(["c0", "c0", "c0", "nobody"], ["p1", "p7", "zz", "p1"])
    assert s[0] > s[1] and np.isnan(s[2]) and np.isnan(s[3])


def test_top_k_breaks_ties_by_the_given_values_whatever_the_row_order() -> None:
    scores = np.array([0.5, 0.5, 0.5, 0.9])
    ids = ["a", "a", "a", "a"]
    products = ["p3", "p1", "p2", "p0"]
    rows, rank = top_k(ids, scores, 3, ties=products)
    assert [products[r] for r in rows] == ["p0", "p1", "p2"] and rank.tolist() == [1, 2, 3]
    flipped, _ = top_k(ids[::-1], scores[::-1], 3, ties=products[::-1])
    assert [products[::-1][r] for r in flipped] == ["p0", "p1", "p2"]


def test_the_offers_step_caps_duckdb_memory_and_puts_it_back() -> None:
    from custval.data.engine import _megabytes, capped_memory
    from custval.data.sources import working_connection

    con = working_connection()
    con.raw_sql("SET memory_limit = '3GB'")
    setting = "SELECT current_setting('memory_limit')"
    before = con.raw_sql(setting).fetchone()[0]
    with capped_memory(con, 1500):
        assert con.raw_sql(setting).fetchone()[0] == "1.3 GiB"  # 1500 MB = 1.397 GiB
    # put back as DuckDB shows it, rounded down to a tenth of a GiB (3GB: 2.7 GiB, back 2.6)
    after = con.raw_sql(setting).fetchone()[0]
    assert 0.95 * _megabytes(before) <= _megabytes(after) <= _megabytes(before)
    con.raw_sql("SET memory_limit = '1GB'")
    with capped_memory(con, 1500):  # never raised: 1GB stays (to within DuckDB's rounding)
        shown = con.raw_sql(setting).fetchone()[0]
        assert shown.endswith("MiB") and 950 <= float(shown.split()[0]) <= 953.7
