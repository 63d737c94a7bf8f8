"""What customers buy, product by product: the candidate sources of the next best offer and the
category history of product propensity, as Ibis expressions over the cleaned transactions
(customer_id, timestamp, amount, is_refund, category and product_id).

Only purchases count (refunds are not), and only those strictly before the as-of date; a
purchase "day" is a calendar day, so two lines of one product on one day are bought once.

Candidate sources (the H&M Kaggle recipe: several cheap sources, then one ranker):

- **repurchase**: the products the customer bought (:func:`product_history`);
- **item-to-item co-purchase** (:func:`copurchase_pairs`): for products X and Y, ``customers``
  counts the customers whose first purchase of Y came on or after their first purchase of X
  ("customers who buy X then Y"). With ``buyers(X)`` the customers who bought X and N all
  buyers, the pair's ``share`` is customers / buyers(X) (the share of X's buyers who go on to
  buy Y, the association rule's confidence), its ``lift`` is share / (buyers(Y) / N), and its
  ``cosine`` is customers / sqrt(buyers(X) buyers(Y)) (Sarwar et al. 2001; between the share,
  which favours best-sellers, and the lift, which favours rarities). Each product keeps its
  ``top_n`` partners by cosine;
- **segment popularity** and **global popularity** (:func:`popularity`): the products bought
  by the most customers in the last ``window_days`` days, within each segment or overall.

:func:`candidates` unites them per customer and gives each (customer, product) the features of
every source, whichever source proposed it. :func:`candidate_sources` computes and caches the
sources at a date; :func:`candidate_batches` hands out the candidates of a million customers
in parts of bounded memory.

Propensity reads :func:`category_history` (per customer and category) and learns from
:func:`category_purchases`; the ranker learns from :func:`product_purchases`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import ibis
import ibis.expr.types as ir
import pandas as pd

from custval.errors import CustvalError
from custval.features._util import cutoff, days_between

__all__ = [
    "CandidateSources",
    "candidate_batches",
    "candidate_sources",
    "candidates",
    "category_history",
    "category_purchases",
    "copurchase_pairs",
    "customer_chunks",
    "popularity",
    "product_catalogue",
    "product_history",
    "product_purchases",
    "require_products",
]

#: the half-life, in days, of a co-purchase link's weight in ``cop_recent``: a product bought
#: a month ago says half as much about the next purchase as one bought today
HALF_LIFE_DAYS = 30.0

_KEYS = ("customer_id", "product_id")

#: the columns :func:`candidates` gives every (customer, product); numbers are features of the
#: ranker, ``cop_via`` (the bought product behind the best co-purchase share) explains it
CANDIDATE_COLUMNS = (
    "customer_id",
    "product_id",
    "times_bought",
    "days_since_bought",
    "cop_score",
    "cop_recent",
    "cop_share",
    "cop_lift",
    "cop_last_share",
    "cop_links",
    "cop_via",
    "seg_share",
    "seg_rank",
    "glob_share",
    "glob_rank",
    "category",
    "price",
    "category_days",
)


def require_products(tx: ir.Table, source: str = "transactions") -> None:
    """A clear error when the transactions name no product (``source``: the transaction
    source's name in the project file, for the hint)."""
    if "product_id" not in tx.columns:
        raise CustvalError(
            "transactions have no product_id column; map one with "
            f'[sources.{source}.columns] product_id = "<your column>"',
            hint="Next best offers rank products, so each purchase must name its product",
        )


def _buys(tx: ir.Table, start: date | None, end: date) -> ir.Table:
    """Purchases of a named product in [start, end) (from the beginning without ``start``)."""
    keep = (tx.timestamp < cutoff(end)) & ~tx.is_refund & tx.product_id.notnull()
    if start is not None:
        keep &= tx.timestamp >= cutoff(start)
    return tx.filter(keep)


def product_history(tx: ir.Table, as_of: date, *, window_days: int | None = None) -> ir.Table:
    """Per customer and product bought before ``as_of`` (within ``window_days`` when given):
    ``times_bought`` (purchase days), ``first_day``, ``last_day`` and ``spend``.

    Example
    -------
    >>> product_history(tx, date(2025, 1, 1)).columns  # doctest: +SKIP
    ('customer_id', 'product_id', 'times_bought', 'first_day', 'last_day', 'spend')
    """
    require_products(tx)
    start = None if window_days is None else as_of - timedelta(days=window_days)
    past = _buys(tx, start, as_of)
    per_day = past.group_by("customer_id", "product_id", day=past.timestamp.date()).aggregate(
        spend=past.amount.sum()
    )
    return per_day.group_by("customer_id", "product_id").aggregate(
        times_bought=per_day.count(),
        first_day=per_day.day.min(),
        last_day=per_day.day.max(),
        spend=per_day.spend.sum(),
    )


def _bucket(customer_id: ir.StringValue, parts: int) -> ir.IntegerValue:
    """A stable bucket 0..parts-1 of each customer id (the engine's hash, made non-negative)."""
    h = customer_id.hash() % parts
    return (h + parts) % parts


def copurchase_pairs(
    history: ir.Table,
    *,
    top_n: int = 10,
    min_customers: int = 3,
    sample_every: int = 1,
) -> ir.Table:
    """Item-to-item co-purchase counts from a :func:`product_history` (module docstring):
    ``product_id``, ``partner_id``, ``customers``, ``buyers`` (of the product),
    ``partner_buyers``, ``share``, ``lift``, ``cosine`` and ``partner_rank`` (1 = highest
    cosine), the ``top_n`` partners of each product that ``min_customers`` customers at least
    bought in that order.

    With ``sample_every`` > 1 only one customer in that many (by a hash of the id) is counted:
    shares, lifts and cosines are ratios, which a large random sample estimates well, and the
    self-join's cost grows with the square of the products per customer.
    """
    h = history.select("customer_id", "product_id", "first_day")
    if sample_every > 1:
        h = h.filter(_bucket(h.customer_id, sample_every) == 0)
    later = h.view()
    joined = h.join(
        later,
        [
            h.customer_id == later.customer_id,
            h.product_id != later.product_id,
            h.first_day <= later.first_day,
        ],
    )
    pairs = joined.group_by(
        product_id=joined.product_id, partner_id=joined.product_id_right
    ).aggregate(customers=joined.count())
    pairs = pairs.filter(pairs.customers >= min_customers)
    buyers = h.group_by("product_id").aggregate(buyers=h.count())
    total = h.aggregate(n=h.customer_id.nunique())
    partner = buyers.select(partner_id=buyers.product_id, partner_buyers=buyers.buyers)
    p = pairs.join(buyers, "product_id").join(partner, "partner_id").cross_join(total)
    share = p.customers.cast("float64") / p.buyers
    p = p.select(
        "product_id",
        "partner_id",
        "customers",
        "buyers",
        "partner_buyers",
        share=share,
        lift=share * p.n / p.partner_buyers,
        cosine=p.customers.cast("float64") / (p.buyers * p.partner_buyers).cast("float64").sqrt(),
    )
    rank = ibis.row_number().over(
        group_by="product_id", order_by=[ibis.desc("cosine"), ibis.desc("customers"), "partner_id"]
    )
    p = p.mutate(partner_rank=rank + 1)
    return p.filter(p.partner_rank <= top_n)


def popularity(
    tx: ir.Table,
    as_of: date,
    *,
    window_days: int = 28,
    segments: ir.Table | None = None,
    top_n: int | None = None,
) -> ir.Table:
    """The products' popularity in the last ``window_days`` days before ``as_of``:
    ``product_id``, ``buyers`` (customers who bought it), ``share`` (of the customers who
    bought anything then) and ``rank`` (1 = most buyers; ties by product id), within each
    ``segment`` when ``segments`` (customer_id, segment) is given; the first ``top_n`` only
    when given. Customers without a segment count for no segment.
    """
    require_products(tx)
    recent = _buys(tx, as_of - timedelta(days=window_days), as_of)
    per = recent.select("customer_id", "product_id").distinct()
    keys: list[str] = []
    if segments is not None:
        seg = segments.select("customer_id", "segment").filter(segments.segment.notnull())
        per = per.join(seg, "customer_id")
        keys = ["segment"]
    counts = per.group_by(*keys, "product_id").aggregate(buyers=per.count())
    if keys:
        active = per.group_by(*keys).aggregate(active=per.customer_id.nunique())
        counts = counts.join(active, keys)
    else:
        counts = counts.cross_join(per.aggregate(active=per.customer_id.nunique()))
    rank = ibis.row_number().over(
        group_by=keys or None, order_by=[ibis.desc("buyers"), "product_id"]
    )
    out = counts.select(
        *keys,
        "product_id",
        "buyers",
        share=counts.buyers.cast("float64") / counts.active,
        rank=rank + 1,
    )
    return out if top_n is None else out.filter(out["rank"] <= top_n)


def product_catalogue(tx: ir.Table, products: ir.Table | None = None) -> ir.Table:
    """``product_id``, ``category`` and ``price`` of every product bought: from the
    ``products`` table where it has them; else, and for products it lacks, from the
    transactions (the product's most common category, its mean line amount)."""
    require_products(tx)
    buys = tx.filter(~tx.is_refund & tx.product_id.notnull())
    complete = products is not None and {"category", "price"} <= set(products.columns)
    if complete:
        assert products is not None
        given = products.select(
            "product_id", "category", price=products.price.cast("float64")
        ).distinct(on="product_id")
        # the transactions are read only for the products the table lacks (usually none)
        buys = buys.anti_join(given, "product_id")
    seen = buys.group_by("product_id").aggregate(
        category=buys.category.mode() if "category" in buys.columns else ibis.null("string"),
        price=buys.amount.mean().cast("float64"),
    )
    if products is None:
        return seen
    if complete:
        return given.union(seen)
    cols = [c for c in ("category", "price") if c in products.columns]
    part = products.select("product_id", *cols).distinct(on="product_id")
    both = seen.left_join(part.rename(**{f"given_{c}": c for c in cols}), "product_id")
    category = both.category
    if "given_category" in both.columns:
        category = both.given_category.fill_null(both.category)
    price = both.price
    if "given_price" in both.columns:
        price = both.given_price.cast("float64").fill_null(both.price)
    return both.select("product_id", category=category, price=price)


def _links(own: ir.Table, pairs: ir.Table, n_via: int, as_of: date) -> ir.Table:
    """The co-purchase links of the customers' ``n_via`` most recently bought products (then
    the most often bought): per link the partner (``product_id``), its ``cosine``, ``share``
    and ``lift``, the cosine weighted by 2^(-age / half-life) (``weighted``; its age the days
    since the customer bought the linking product), the share again where the linking product
    is from the customer's last purchase day (``last_share``) and the linking product
    (``via``)."""
    rank = ibis.row_number().over(
        group_by="customer_id",
        order_by=[ibis.desc("last_day"), ibis.desc("times_bought"), "product_id"],
    )
    ranked = own.mutate(_r=rank, latest=own.last_day.max().over(group_by="customer_id"))
    vias = ranked.filter(ranked._r < n_via).select(
        "customer_id", "latest", via="product_id", via_last="last_day"
    )
    j = vias.join(pairs, vias.via == pairs.product_id)
    age = days_between(ibis.date(as_of), j.via_last).cast("float64")
    return j.select(
        "customer_id",
        product_id=j.partner_id,
        cosine=j.cosine,
        weighted=j.cosine * (age * (-math.log(2) / HALF_LIFE_DAYS)).exp(),
        share=j.share,
        lift=j.lift,
        last_share=ibis.ifelse(j.via_last == j.latest, j.share, ibis.null("float64")),
        via=j.via,
    )


def _rows(table: ir.Table, **given: ir.Value) -> ir.Table:
    """``table``'s customer_id and product_id with the columns every candidate source gives
    (:func:`candidates`' union), null where the source has no value."""
    types = {
        "times_bought": "int64",
        "last_day": "date",
        "cosine": "float64",
        "weighted": "float64",
        "share": "float64",
        "lift": "float64",
        "last_share": "float64",
        "via": "string",
    }
    return table.select(
        "customer_id",
        "product_id",
        **{c: given.get(c, ibis.null(t)).cast(t) for c, t in types.items()},
    )


def _via_of_best_share(share: ir.FloatingValue, via: ir.StringValue) -> ir.StringValue:
    """The ``via`` of the highest ``share`` (a share in [0, 1]; ties: the greater id), as an
    aggregate. The share, in millionths and zero-padded, leads a text whose maximum is taken:
    the engines' ARG_MAX is not portable, and the ordered aggregate Ibis writes for
    ``argmax`` costs DuckDB a sort per group, most of the candidates' time."""
    key = (share * 1e6).round().cast("int64").cast("string").lpad(7, "0") + via
    return key.max().substr(7)


def candidates(
    customers: ir.Table,
    history: ir.Table,
    pairs: ir.Table,
    popular: ir.Table,
    catalogue: ir.Table,
    as_of: date,
    *,
    segment_popular: ir.Table | None = None,
    n_via: int = 3,
    n_popular: int = 8,
    min_link_score: float = 0.02,
) -> ir.Table:
    """The candidate products of ``customers`` (customer_id, and ``segment`` when
    ``segment_popular`` is given) with every source's features (:data:`CANDIDATE_COLUMNS`).

    Candidates: every product the customer bought (repurchase), the co-purchase partners of
    their ``n_via`` most recently bought products whose ``cop_recent`` reaches
    ``min_link_score``, and the ``n_popular`` most popular products of their segment and
    overall. (On the generated company the weaker links are a third of the candidates and
    hold under 5% of the later purchases found among them: ranking them costs more than
    they bring.)

    Features, for every candidate whatever proposed it: ``times_bought`` (0 if never) and
    ``days_since_bought`` (null if never); ``cop_score`` (the sum of the links' cosines),
    ``cop_recent`` (the same with each link weighted by 2^(-age / :data:`HALF_LIFE_DAYS`)),
    ``cop_share`` and ``cop_lift`` (the highest), ``cop_last_share`` (the highest share from
    a product of the customer's last purchase day), ``cop_links`` (how many of the
    customer's products lead to it) and ``cop_via`` (the bought product with the highest
    share; 0 and null without a link); the product's share of buyers and rank in the
    customer's segment (``seg_*``, only with segments) and overall (``glob_*``); its
    ``category`` and ``price``; ``category_days``, the customer's purchase days in the
    product's category.

    One union of the sources' rows and one aggregation per (customer, product), rather than a
    join per source: the engine hashes the candidates once. ``history``, ``pairs``,
    ``popular``, ``segment_popular`` and ``catalogue`` come from :func:`product_history`,
    :func:`copurchase_pairs`, :func:`popularity` and :func:`product_catalogue` at the same
    ``as_of`` (:func:`candidate_sources` makes and caches them all).
    """
    spine = customers.select("customer_id", *(["segment"] if segment_popular is not None else []))
    own = history.semi_join(spine.select("customer_id"), "customer_id")
    links = _links(own, pairs, n_via, as_of)
    top_global = popular.filter(popular["rank"] <= n_popular).select("product_id")
    parts = [
        _rows(own, times_bought=own.times_bought, last_day=own.last_day),
        _rows(links, **{c: links[c] for c in links.columns if c not in _KEYS}),
        _rows(spine.select("customer_id").cross_join(top_global)),
    ]
    if segment_popular is not None:
        top_seg = segment_popular.filter(segment_popular["rank"] <= n_popular)
        parts.append(_rows(spine.join(top_seg.select("segment", "product_id"), "segment")))
    u = ibis.union(*parts, distinct=False)
    c = u.group_by("customer_id", "product_id").aggregate(
        times_bought=u.times_bought.max().fill_null(0),
        days_since_bought=days_between(ibis.date(as_of), u.last_day.max()).cast("float64"),
        cop_score=u.cosine.sum().fill_null(0.0),
        cop_recent=u.weighted.sum().fill_null(0.0),
        cop_share=u.share.max().fill_null(0.0),
        cop_lift=u.lift.max().fill_null(0.0),
        cop_last_share=u.last_share.max().fill_null(0.0),
        cop_links=u.via.count(),
        cop_via=_via_of_best_share(u.share, u.via),
    )
    if segment_popular is not None:
        seg = segment_popular.select("segment", "product_id", seg_share="share", seg_rank="rank")
        j = c.join(spine, "customer_id").left_join(seg, ["segment", "product_id"])
        c = j.select(*c.columns, seg_share=j.seg_share.fill_null(0.0), seg_rank=j.seg_rank)
    glob = popular.select("product_id", glob_share="share", glob_rank="rank")
    j = c.left_join(glob, "product_id")
    c = j.select(*c.columns, glob_share=j.glob_share.fill_null(0.0), glob_rank=j.glob_rank)
    proposed = (c.times_bought > 0) | (c.cop_recent >= min_link_score) | (c.glob_rank <= n_popular)
    if segment_popular is not None:
        proposed |= c.seg_rank <= n_popular
    c = c.filter(proposed.fill_null(False))
    j = c.left_join(catalogue, "product_id")
    c = j.select(*c.columns, category=j.category, price=j.price)
    return _with_category_days(c, own, catalogue)


def _with_category_days(c: ir.Table, own: ir.Table, catalogue: ir.Table) -> ir.Table:
    """``c`` with ``category_days``: the customer's purchase days in the product's category."""
    per = own.join(catalogue.select("product_id", "category"), "product_id")
    days = per.group_by("customer_id", "category").aggregate(category_days=per.times_bought.sum())
    out = c.left_join(days, ["customer_id", "category"])
    return out.select(*c.columns, category_days=out.category_days.fill_null(0))


@dataclass
class CandidateSources:
    """The candidate sources at one date, cached on the working connection (the tables
    :func:`candidates` reads), and the segments they were counted by."""

    as_of: date
    history: ir.Table
    pairs: ir.Table
    popular: ir.Table
    catalogue: ir.Table
    segments: ir.Table | None = None
    segment_popular: ir.Table | None = None


def candidate_sources(
    tx: ir.Table,
    as_of: date,
    *,
    segments: ir.Table | None = None,
    products: ir.Table | None = None,
    popular_days: int = 28,
    top_partners: int = 5,
    min_customers: int = 3,
    max_pair_customers: int = 300_000,
) -> CandidateSources:
    """Every candidate source at ``as_of``, computed once and cached: the purchase history,
    the co-purchase pairs (``top_partners`` per product, :func:`copurchase_pairs`),
    popularity over the last ``popular_days`` days overall and, with ``segments``
    (customer_id, segment), per segment; the product catalogue (``products`` when given).

    The pairs are counted on about ``max_pair_customers`` customers at most (one in every
    ``ceil(buyers / max_pair_customers)``, by a hash of the id): their shares, lifts and
    cosines are ratios that 300,000 customers estimate to within a percent or two, and the
    self-join's cost grows with the customers counted. ``min_customers`` applies to the
    sample."""
    require_products(tx)
    history = product_history(tx, as_of).cache()
    buyers = int(history.customer_id.nunique().execute())
    every = max(1, math.ceil(buyers / max_pair_customers))
    pairs = copurchase_pairs(
        history, top_n=top_partners, min_customers=min_customers, sample_every=every
    ).cache()
    popular = popularity(tx, as_of, window_days=popular_days).cache()
    segment_popular = None
    if segments is not None:
        segments = segments.select("customer_id", "segment").filter(segments.segment.notnull())
        segment_popular = popularity(tx, as_of, window_days=popular_days, segments=segments).cache()
    catalogue = product_catalogue(tx, products).cache()
    return CandidateSources(as_of, history, pairs, popular, catalogue, segments, segment_popular)


def candidate_batches(
    sources: CandidateSources,
    customers: ir.Table,
    *,
    batch_customers: int = 200_000,
    n_via: int = 3,
    n_popular: int = 8,
    min_link_score: float = 0.02,
) -> Iterator[pd.DataFrame]:
    """The :func:`candidates` of ``customers`` (a table with customer_id) from ``sources``,
    in parts of about ``batch_customers`` customers, each as a pandas table with Arrow-backed
    columns (no copy through Python objects)."""
    spine = customers.select("customer_id").distinct()
    if sources.segments is not None:
        joined = spine.left_join(sources.segments, "customer_id")
        spine = joined.select("customer_id", "segment")
    spine = _materialised(spine, sources.history)
    n = int(spine.count().execute())
    parts = max(1, math.ceil(n / batch_customers))
    for part in customer_chunks(spine, parts):  # a loop over parts of the customers
        table = candidates(
            part,
            sources.history,
            sources.pairs,
            sources.popular,
            sources.catalogue,
            sources.as_of,
            segment_popular=sources.segment_popular,
            n_via=n_via,
            n_popular=n_popular,
            min_link_score=min_link_score,
        ).to_pyarrow()
        yield table.to_pandas(types_mapper=pd.ArrowDtype)


def _materialised(table: ir.Table, like: ir.Table) -> ir.Table:
    """``table`` computed once, on the engine of ``like``: each part of the customers filters
    it, and a table made of in-memory frames alone would otherwise land on another engine."""
    engine = ibis.get_backend(like)
    if ibis.get_backend(table) is engine:
        return table.cache()
    name = ibis.util.gen_name("custval_customers")
    return engine.create_table(name, table.to_pyarrow(), temp=True)


def customer_chunks(customers: ir.Table, parts: int) -> list[ir.Table]:
    """``customers`` split into ``parts`` disjoint tables of about equal size (by a hash of
    the id), to rank candidates part by part in bounded memory."""
    if parts <= 1:
        return [customers]
    bucket = _bucket(customers.customer_id, parts)
    return [customers.filter(bucket == i) for i in range(parts)]


def product_purchases(tx: ir.Table, start: date, end: date) -> ir.Table:
    """The distinct (customer_id, product_id) bought in [start, end): a ranker's labels."""
    require_products(tx)
    return _buys(tx, start, end).select("customer_id", "product_id").distinct()


def category_history(tx: ir.Table, as_of: date) -> ir.Table:
    """Per customer and product category bought before ``as_of``: ``cat_days`` (purchase
    days), ``cat_spend``, ``cat_days_since`` (since the last one) and ``cat_day_share`` (of
    the customer's purchase days). Missing categories ("unknown") are left out."""
    past = tx.filter((tx.timestamp < cutoff(as_of)) & ~tx.is_refund & (tx.category != "unknown"))
    per_day = past.group_by("customer_id", "category", day=past.timestamp.date()).aggregate(
        spend=past.amount.sum()
    )
    per = per_day.group_by("customer_id", "category").aggregate(
        cat_days=per_day.count(), cat_spend=per_day.spend.sum(), last=per_day.day.max()
    )
    total = per.cat_days.sum().over(group_by="customer_id")
    return per.select(
        "customer_id",
        "category",
        "cat_days",
        "cat_spend",
        cat_days_since=days_between(ibis.date(as_of), per["last"]),
        cat_day_share=per.cat_days.cast("float64") / total,
    )


def category_purchases(tx: ir.Table, start: date, end: date) -> ir.Table:
    """The distinct (customer_id, category) bought in [start, end): propensity's labels."""
    keep = (
        (tx.timestamp >= cutoff(start))
        & (tx.timestamp < cutoff(end))
        & ~tx.is_refund
        & (tx.category != "unknown")
    )
    return tx.filter(keep).select("customer_id", "category").distinct()
