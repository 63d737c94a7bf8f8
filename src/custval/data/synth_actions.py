"""What the generated company sells and does: a product catalogue, subscriptions that are
cancelled, and a retention campaign with a randomised control group, each with planted truth.

:func:`custval.data.synth.generate` calls :func:`simulate_goods` and :func:`simulate_retention`
with a random stream of their own (never the stream of the original sources, whose rows stay the
same for a seed) and writes the tables and truths built here.

Products
--------
``products_per_category`` (20) products per category, ids ``P<category 1-6><3 digits>``. Within a
category, popularity is Zipf-like (weight ``1 / rank^1.1``) over a random order; each segment
(:data:`~custval.data.synth.SEGMENTS`, the customer's true, noise-free segment) has its own
popularity, ``(1 - w) x global + w x Zipf over the segment's own random order`` with ``w =
0.75``, so that segment popularity predicts better than global popularity.

Every product ``X`` has one or two partners ``Y`` in its category with planted strengths
``s_XY ~ U(0.15, 0.40)``. A customer's orders keep their (already drawn) categories; within a
category, the first order's product is drawn by the segment's popularity; each later order, with
``X`` the previous product in that category, is

- partner ``Y`` of ``X`` with probability ``s_XY`` (co-purchase affinity);
- else, with probability ``rho_i x c_category`` (repurchase: ``rho_i ~ Beta(2, 5)`` per
  customer, ``c`` from 0.3 for electronics to 2.0 for grocery, capped at 0.95), one of the
  customer's earlier products in that category, each earlier order equally likely;
- else a draw by the segment's popularity.

The same process continues for ``future_weeks`` (13) weeks after the end date for the customers
alive then (BG/NBD purchases, the same categories habit), written only to
``truth/next_products.parquet``.
An order's amount stays the Gamma-Gamma draw of the original story (an order is a basket; its
product is its main item), so list prices and amounts are not tied.

Subscriptions
-------------
Customers with an account whose CRM plan is basic or premium subscribe ``Exp(2 days)`` after
signup (9.99 or 19.99 a month; 8.99 or 17.99 for subscriptions started in the first half of the
history). Cancellation has a weekly hazard, piecewise constant in time:

``h(t) = h0 x premium^[premium] x exp(-b_e (e_i - 1)) x tenure(t) x stop^[t >= stop_i]
x complaint^(complaints in the last 8 weeks)``

with ``h0 = 0.008``, premium x0.6, ``b_e = 0.5`` on the engagement ``e_i``, tenure x2.5 in the
first 13 weeks, x1.5 to a year, x1 after; x10 once the customer has stopped purchasing (the fatal
purchase of the BG/NBD story, also after the end date; 8 weeks after signup for customers who
never buy) and x2 per complaint ticket of the last 8 weeks (the interactions source's; none are
simulated after the end date). About 60% of the subscriptions are cancelled before the end date,
and a subscriber active then cancels within 13 weeks with probability 0.2 on average. With
``E_j ~ Exp(1)`` per subscription, it is cancelled when the cumulative hazard reaches ``E_j``;
cancellations up to 52 weeks after the end date are kept in the truth, the source shows those
before it.

The retention campaign
----------------------
Twelve weeks before the end date, a random 40% of the subscribers active that day are chosen and
split 75% treatment / 25% control (``treatments`` source, one row each, sent between 9:00 and
17:00 by email, sms or phone; the cost is the contact's and the offer's, 1.5 monthly fees; a
held-out control row costs nothing).
For a customer active at time ``t``, ``p_control = 1 - exp(-(H(t + 8 weeks) - H(t)))`` is the
chance of cancelling within 8 weeks uncontacted, and the true uplift on P(retained) is, from what
the sources show before ``t`` and a persistent noise ``n_i ~ N(0, 0.02)``:

- sleeping dog (a complaint in the last 16 weeks; about 4% of the subscribers):
  ``tau = -0.10 + n_i``;
- lost cause (no order before ``t``, or none in the last 16 weeks nor in three of the customer's
  own mean gaps between orders): ``tau = 0.02 + n_i / 2``;
- else ``tau = min(0.06 + 0.8 p_control, 0.30) + n_i`` for customers whose favourite sales
  channel is the web or the app and who browse the website (persuadables when tau > 0.05: 0.13
  on average, a quarter of them over 0.15), ``0.15 p_control + n_i`` for the others (sure
  things: low risk, tau near 0);

clipped so that ``p_treated = p_control - tau`` is a probability. Treatment and control share one
uniform draw per customer: with ``u = 1 - exp(-(E_j - H(t)))``, a control customer cancels within
the window when ``u < p_control``, a treated one when ``u < p_treated`` (the window's hazard is
scaled to give exactly ``p_treated``); a prevented cancellation moves later. ``retained``: still
subscribed 8 weeks after the contact.

``truth/uplift.parquet`` gives, for every subscriber active at the end date, the same quantities
for a contact at the as-of date, ``value_at_stake`` (12 monthly fees plus the expected spend of
the next 52 weeks from the latent BG/NBD and Gamma-Gamma values) and ``incremental_profit = tau x
value_at_stake - cost`` (an email contact and the offer, 1.5 monthly fees), the quantity a
targeting rule should maximise. The sleeping dogs and the lost causes stopped purchasing more
often, so their risk is the highest: ranking by churn risk contacts the wrong customers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from custval.data._synth_base import (
    CATEGORIES,
    DAY,
    PLANS,
    SALES_CHANNELS,
    SEGMENTS,
    WEEK,
    _Clock,
    _Customers,
    _duplicate,
    _format_amounts,
    _format_codes,
    _format_counts,
    _format_times,
    _group_cumsum,
    _id_column,
    _id_matrix,
    _Ids,
    _labels,
    _Orders,
    _strings,
)

__all__ = [
    "CONTACT_CHANNELS",
    "GROUPS",
    "PRODUCT_NAMES",
    "SUBSCRIPTION_PLANS",
    "UPLIFT_CLASSES",
    "ActionDirt",
    "ActionParams",
    "Goods",
    "Retention",
    "products_table",
    "simulate_goods",
    "simulate_retention",
    "subscriptions_table",
    "treatments_table",
    "write_truth",
]

SUBSCRIPTION_PLANS = ("basic", "premium")
CONTACT_CHANNELS = ("email", "sms", "phone")
GROUPS = ("treatment", "control")
UPLIFT_CLASSES = ("persuadable", "sure_thing", "lost_cause", "sleeping_dog")
#: never: a time (seconds) later than anything simulated
_NEVER = np.iinfo(np.int64).max // 4

PRODUCT_NAMES: dict[str, tuple[str, ...]] = {
    "electronics": (
        "Wireless earbuds", "Bluetooth speaker", "USB-C charger", "Smartwatch", "Tablet stand",
        "Noise-cancelling headphones", "Power bank", "HDMI cable", "Webcam",
        "Mechanical keyboard", "Wireless mouse", "Portable SSD", "Smart plug", "E-reader",
        "Action camera", "Fitness tracker", "Phone case", "USB desk lamp", "Laptop sleeve",
        "Streaming stick",
    ),
    "books": (
        "Crime novel", "Cookbook", "Travel guide", "Children's picture book", "Biography",
        "Science fiction novel", "Poetry collection", "History of Europe", "Self-help guide",
        "Graphic novel", "Gardening handbook", "Business strategy book", "Fantasy trilogy",
        "Language course book", "Photography book", "Puzzle book", "Classic novel", "World atlas",
        "Art history book", "Programming book",
    ),
    "home": (
        "Scented candle", "Bath towel set", "Cotton bed linen", "Ceramic vase", "Throw blanket",
        "Storage baskets", "Kitchen knife set", "Non-stick frying pan", "Coffee grinder",
        "Table lamp", "Cushion cover", "Picture frame", "Wall clock", "Doormat",
        "Laundry basket", "Glass food containers", "Wine glasses", "Plant pot",
        "Shower curtain", "Cutlery set",
    ),
    "fashion": (
        "Cotton T-shirt", "Slim-fit jeans", "Wool sweater", "Rain jacket", "Leather belt",
        "Sneakers", "Summer dress", "Knitted scarf", "Ankle socks, 5 pairs", "Baseball cap",
        "Chino trousers", "Linen shirt", "Winter coat", "Leather wallet", "Sunglasses", "Hoodie",
        "Canvas tote bag", "Ankle boots", "Silk tie", "Pyjama set",
    ),
    "sports": (
        "Trail running shoes", "Yoga mat", "Dumbbell set", "Water bottle", "Cycling helmet",
        "Tennis racket", "Football", "Resistance bands", "Running shorts", "Swimming goggles",
        "Hiking backpack", "Jump rope", "Foam roller", "Sports socks", "Climbing chalk",
        "Ski gloves", "Badminton set", "Camping stove", "Sleeping bag", "Protein shaker",
    ),
    "grocery": (
        "Ground coffee", "Green tea", "Olive oil", "Dark chocolate", "Pasta", "Basmati rice",
        "Breakfast cereal", "Honey", "Peanut butter", "Sparkling water, 6 pack", "Oat milk",
        "Tomato sauce", "Mixed nuts", "Granola bars", "Orange juice", "Sea salt",
        "Strawberry jam", "Oatmeal", "Spice set", "Coconut water",
    ),
}  # fmt: skip


def _by_category(values: tuple[float, ...]) -> dict[str, float]:
    return dict(zip(CATEGORIES, values, strict=True))


@dataclass(frozen=True)
class ActionParams:
    """Parameters of the catalogue, the subscriptions and the campaign (see the module
    docstring); written to ``truth/params.json`` under ``actions``. Times are in weeks, money
    in currency units."""

    products_per_category: int = 20
    zipf_exponent: float = 1.1
    segment_popularity_weight: float = 0.75
    partner_strength: tuple[float, float] = (0.15, 0.40)
    two_partners_share: float = 0.5
    repurchase_beta: tuple[float, float] = (2.0, 5.0)
    category_repurchase: Mapping[str, float] = field(
        default_factory=lambda: _by_category((0.3, 0.4, 0.8, 0.7, 0.8, 2.0))
    )
    category_price: Mapping[str, float] = field(
        default_factory=lambda: _by_category((80.0, 18.0, 35.0, 45.0, 40.0, 5.0))
    )
    price_sigma: float = 0.6
    future_weeks: int = 13
    # subscriptions
    monthly_fee: Mapping[str, float] = field(
        default_factory=lambda: {"basic": 9.99, "premium": 19.99}
    )
    early_monthly_fee: Mapping[str, float] = field(
        default_factory=lambda: {"basic": 8.99, "premium": 17.99}
    )
    start_delay_days: float = 2.0
    hazard_per_week: float = 0.008
    hazard_premium: float = 0.6
    hazard_engagement_slope: float = 0.5
    hazard_tenure: tuple[tuple[float, float], ...] = ((13.0, 2.5), (52.0, 1.5), (np.inf, 1.0))
    hazard_after_stop: float = 10.0
    never_bought_grace_weeks: float = 8.0
    hazard_per_complaint: float = 2.0
    complaint_memory_weeks: float = 8.0
    simulated_weeks_after_end: int = 52
    # the campaign
    campaign_weeks_before_end: int = 12
    campaign_share: float = 0.40
    treated_share: float = 0.75
    window_weeks: int = 8
    offer: str = "3 months at half price"
    offer_cost_months: float = 1.5
    channel_shares: Mapping[str, float] = field(
        default_factory=lambda: dict(zip(CONTACT_CHANNELS, (0.60, 0.25, 0.15), strict=True))
    )
    channel_cost: Mapping[str, float] = field(
        default_factory=lambda: dict(zip(CONTACT_CHANNELS, (0.10, 0.40, 3.50), strict=True))
    )
    persuadable_base_tau: float = 0.06
    persuadable_share_of_risk: float = 0.80
    other_share_of_risk: float = 0.15
    max_tau: float = 0.30
    sleeping_dog_tau: float = -0.10
    lost_cause_tau: float = 0.02
    tau_noise: float = 0.02
    complaint_recent_weeks: float = 16.0
    lapse_weeks: float = 16.0
    value_weeks: int = 52


@dataclass(frozen=True)
class ActionDirt:
    """How often each defect is planted in the new sources (fractions of rows)."""

    dirty_id: float = 0.02
    date_format_slash: float = 0.10
    date_format_dot: float = 0.10
    duplicate_rows: float = 0.002
    stale_snapshots: float = 0.05  # of the cancelled subscriptions: an older copy, not cancelled
    empty_product_id: float = 0.01


# ---------------------------------------------------------------------------------------------
# Products
# ---------------------------------------------------------------------------------------------


@dataclass
class Catalogue:
    """The products, in category order (product code = category x per-category + rank)."""

    category: np.ndarray  # (P,) category code
    price_cents: np.ndarray  # (P,)
    partners: np.ndarray  # (P, 2) product codes, -1 for none
    strength: np.ndarray  # (P, 2) probabilities, 0 for none
    popularity: np.ndarray  # (segments, P): each product's share of its category, per segment
    global_popularity: np.ndarray  # (P,)
    _cdf: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.category.size)

    @property
    def per_category(self) -> int:
        return self.size // len(CATEGORIES)

    def numbers(self) -> np.ndarray:
        """The digits of the product ids: 1001..1020 for the first category, 2001... next."""
        k = self.per_category
        return (self.category.astype(np.int64) + 1) * 1000 + np.arange(self.size) % k + 1

    def ids(self) -> list[str]:
        return [f"P{n}" for n in self.numbers()]

    def cdf(self) -> np.ndarray:
        """The popularities as one sorted array for drawing: the cumulative shares of
        (segment s, category c) shifted by ``s x categories + c``."""
        if self._cdf is None:
            k, n_cat, n_seg = self.per_category, len(CATEGORIES), len(SEGMENTS)
            cdf = np.cumsum(self.popularity.reshape(n_seg, n_cat, k), axis=2)
            cdf /= cdf[:, :, -1:]
            groups = np.arange(n_seg * n_cat, dtype=float).reshape(n_seg, n_cat, 1)
            self._cdf = (cdf + groups).ravel()
        return self._cdf


@dataclass
class Goods:
    """The products bought: one per true order (aligned with the orders), the orders of the
    weeks after the end date, and when each customer stops purchasing."""

    catalogue: Catalogue
    order_product: np.ndarray
    future_cust: np.ndarray
    future_ts: np.ndarray
    future_category: np.ndarray
    future_product: np.ndarray
    stop: np.ndarray  # seconds: the fatal purchase (also after the end date), _NEVER if none
    repurchase: np.ndarray  # per customer, rho_i


def _catalogue(rng: np.random.Generator, params: ActionParams) -> Catalogue:
    k, n_cat, n_seg = params.products_per_category, len(CATEGORIES), len(SEGMENTS)
    size = k * n_cat
    category = np.repeat(np.arange(n_cat), k).astype(np.int8)
    zipf = 1.0 / np.arange(1, k + 1) ** params.zipf_exponent
    zipf /= zipf.sum()
    w = params.segment_popularity_weight
    glob = np.empty(size)
    popularity = np.empty((n_seg, size))
    partners = np.full((size, 2), -1, np.int64)
    strength = np.zeros((size, 2))
    lo, hi = params.partner_strength
    # 6 categories and 120 products: loops over the catalogue, never over customers
    for c in range(n_cat):
        part = slice(c * k, (c + 1) * k)
        glob[part] = zipf[rng.permutation(k)]
        for s in range(n_seg):
            popularity[s, part] = (1 - w) * glob[part] + w * zipf[rng.permutation(k)]
    for x in range(size):
        c = x // k
        others = np.delete(np.arange(c * k, (c + 1) * k), x - c * k)
        how_many = 2 if rng.random() < params.two_partners_share else 1
        partners[x, :how_many] = rng.choice(others, how_many, replace=False)
        strength[x, :how_many] = rng.uniform(lo, hi, how_many)
    base = np.array([params.category_price[name] for name in CATEGORIES])[category]
    price = np.floor(base * rng.lognormal(0.0, params.price_sigma, size)) + 0.99
    return Catalogue(
        category=category,
        price_cents=np.rint(price * 100).astype(np.int64),
        partners=partners,
        strength=strength,
        popularity=popularity,
        global_popularity=glob,
    )


def _popular(
    rng: np.random.Generator, cat: Catalogue, segment: np.ndarray, category: np.ndarray
) -> np.ndarray:
    """A product of each row's category drawn by the row's segment's popularity."""
    k, n_cat = cat.per_category, len(CATEGORIES)
    g = segment.astype(np.int64) * n_cat + category
    found = np.searchsorted(cat.cdf(), rng.random(g.size) + g, side="right") - g * k
    return category.astype(np.int64) * k + np.minimum(found, k - 1)


def _assign_products(
    rng: np.random.Generator,
    cat: Catalogue,
    who: np.ndarray,
    category: np.ndarray,
    segment: np.ndarray,
    repeat_p: np.ndarray,
) -> np.ndarray:
    """A product for every order; the orders of a customer must come in time order. One step
    per position within a customer's category (first order, second...), never per customer."""
    m = who.size
    if m == 0:
        return np.zeros(0, np.int16)
    # g: the orders grouped by customer and category, in time order within a group
    order = np.argsort(who.astype(np.int64) * 8 + category, kind="stable")  # g -> order
    first = np.ones(m, bool)
    first[1:] = (who[order][1:] != who[order][:-1]) | (category[order][1:] != category[order][:-1])
    starts = np.flatnonzero(first)
    pos = np.arange(m) - np.repeat(starts, np.diff(np.append(starts, m)))
    del first, starts
    # p: the same orders by position in their group, so that each step is one slice
    small = np.uint16 if pos.max() < 2**16 else np.int64  # a radix sort when it fits
    by_pos = np.argsort(pos.astype(small), kind="stable")  # p -> g
    bounds = np.searchsorted(pos[by_pos], np.arange(int(pos.max()) + 2))
    del pos
    g_to_p = np.empty(m, np.int64)
    g_to_p[by_pos] = np.arange(m)
    src = order[by_pos]  # p -> order
    del order
    seg_p, cat_p, rep_p = segment[who[src]], category[src], repeat_p[src]
    product = np.empty(m, np.int16)
    s1, s2 = cat.strength[:, 0], cat.strength[:, 0] + cat.strength[:, 1]
    y1, y2 = cat.partners[:, 0].astype(np.int16), cat.partners[:, 1].astype(np.int16)
    for k in range(bounds.size - 1):
        at = slice(bounds[k], bounds[k + 1])
        if k == 0:
            product[at] = _popular(rng, cat, seg_p[at], cat_p[at])
            continue
        g = by_pos[at]
        prev = product[g_to_p[g - 1]]
        u = rng.random(g.size)
        chosen = np.where(u < s1[prev], y1[prev], y2[prev])
        other = np.flatnonzero(u >= s2[prev])
        # not a partner: a repeat of one of the k earlier orders, or a popular product
        repeat = rng.random(other.size) < rep_p[at][other]
        back = other[repeat]
        chosen[back] = product[g_to_p[g[back] - 1 - rng.integers(0, k, back.size)]]
        fresh = other[~repeat]
        chosen[fresh] = _popular(rng, cat, seg_p[at][fresh], cat_p[at][fresh])
        product[at] = chosen
    out = np.empty(m, np.int16)
    out[src] = product
    return out


def _future_orders(
    rng: np.random.Generator,
    cust: _Customers,
    clock: _Clock,
    params: ActionParams,
    category_shares: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The orders of the customers alive at the end in the ``future_weeks`` after it (customer,
    seconds, category; each customer's in time order), and every customer's stop: when they
    stop purchasing (seconds)."""
    idx = np.flatnonzero(cust.alive & (cust.first >= 0))
    lam, p = cust.lam[idx], cust.p_drop[idx]
    weeks = float(params.future_weeks)
    fatal = rng.geometric(p)  # purchases up to and including the fatal one
    k = rng.poisson(lam * weeks)  # purchases of an immortal customer in the window
    real = np.minimum(fatal, k)
    # given k purchases, their times are uniform order statistics (cumulated gaps over k + 1)
    gaps = rng.standard_exponential(int(real.sum()))
    cum = _group_cumsum(gaps, real)
    last = np.cumsum(real) - 1
    cum_last = np.where(real > 0, cum[np.maximum(last, 0)] if cum.size else 0.0, 0.0)
    total = cum_last + rng.standard_gamma(k - real + 1.0)
    owner = np.repeat(np.arange(idx.size), real)
    window = params.future_weeks * WEEK
    ts = clock.horizon + np.minimum((cum / total[owner] * window).astype(np.int64), window - 1)
    # dies in the window at the last of them, or after it at the (fatal - k)-th purchase there
    after = rng.standard_gamma(np.maximum(fatal - k, 1).astype(float)) / lam
    late = clock.horizon + window + np.minimum(after * WEEK, 100 * 52 * WEEK).astype(np.int64)
    dies_in = (fatal <= k) & (real > 0)
    stop = np.where(cust.death >= 0, cust.death, _NEVER)
    stop[idx] = np.where(dies_in, ts[np.maximum(last, 0)] if ts.size else 0, late)
    never = cust.first < 0
    grace = int(params.never_bought_grace_weeks * WEEK)
    stop[never] = cust.signup[never] + grace
    who = idx[owner]
    loyal = rng.random(who.size) < cust.cat_loyalty[who]
    drawn = rng.choice(len(CATEGORIES), who.size, p=category_shares / category_shares.sum())
    category = np.where(loyal, cust.fav_cat[who], drawn).astype(np.int8)
    return who, ts, category, stop


def simulate_goods(
    rng: np.random.Generator,
    cust: _Customers,
    orders: _Orders,
    segment: np.ndarray,
    clock: _Clock,
    params: ActionParams,
    category_shares: Mapping[str, float],
) -> Goods:
    """The catalogue, a product for every true order, and the orders and products of the weeks
    after the end date (see the module docstring)."""
    cat = _catalogue(rng, params)
    shares = np.array([category_shares[name] for name in CATEGORIES], float)
    f_cust, f_ts, f_cat, stop = _future_orders(rng, cust, clock, params, shares)
    a, b = params.repurchase_beta
    rho = rng.beta(a, b, cust.n)
    factor = np.array([params.category_repurchase[name] for name in CATEGORIES])
    who = np.concatenate([orders.cust, f_cust])
    category = np.concatenate([orders.category, f_cat]).astype(np.int64)
    repeat_p = np.minimum(0.95, rho[who] * factor[category])
    # history then future: within a customer both are in time order, and the future is later
    product = _assign_products(rng, cat, who, category, segment, repeat_p)
    n_hist = orders.cust.size
    return Goods(
        catalogue=cat,
        order_product=product[:n_hist],
        future_cust=f_cust,
        future_ts=f_ts,
        future_category=f_cat,
        future_product=product[n_hist:],
        stop=stop,
        repurchase=rho,
    )


def products_in(rng: np.random.Generator, cat: Catalogue, category: np.ndarray) -> np.ndarray:
    """A uniformly drawn product of each category in ``category``."""
    k = cat.per_category
    return category.astype(np.int64) * k + rng.integers(0, k, category.size)


def product_ids(cat: Catalogue, codes: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Product codes as id strings ("P1007"), null where not ``valid``."""
    names = pa.array(cat.ids(), pa.string())
    mask = None if valid is None else ~valid
    return pc.take(names, pa.array(codes.astype(np.int32), mask=mask))


def products_table(goods: Goods) -> tuple[pa.Table, dict[str, Any]]:
    """The ``products`` source: id, name, category and list price of every product."""
    cat = goods.catalogue
    k = cat.per_category
    names = [PRODUCT_NAMES[CATEGORIES[int(c)]][i % k % 20] for i, c in enumerate(cat.category)]
    table = pa.table(
        {
            "product_id": product_ids(cat, np.arange(cat.size)),
            "name": pa.array(names, pa.string()),
            "category": _labels(cat.category, CATEGORIES),
            "price": _format_amounts(cat.price_cents),
        }
    )
    return table, {"rows": table.num_rows, "duplicates": 0}


# ---------------------------------------------------------------------------------------------
# Subscriptions and their cancellation hazard
# ---------------------------------------------------------------------------------------------


class _Hazard:
    """Piecewise-constant weekly hazards, one curve per subscription, from events (time in
    weeks since the history start, change of the log-hazard); cumulative hazard and its
    inverse, vectorised."""

    SPAN = 10_000.0  # weeks: more than any time simulated, to key (subscription, time)

    def __init__(self, sub: np.ndarray, t: np.ndarray, dlog: np.ndarray, n_subs: int) -> None:
        # events at one time on one curve may come in any order: they add up the same
        key = sub * self.SPAN + t
        order = np.argsort(key)
        self.key, self.sub, self.t = key[order], sub[order], t[order]
        del key
        counts = np.bincount(self.sub, minlength=n_subs)
        self.log_h = _group_cumsum(dlog[order], counts)
        self.first = np.cumsum(counts) - counts
        self.last = self.first + counts - 1
        length = np.zeros(self.t.size)
        same = self.sub[1:] == self.sub[:-1]
        length[:-1] = np.where(same, self.t[1:] - self.t[:-1], 0.0)
        self.h = np.exp(self.log_h)
        d_h = self.h * length
        self.cum = np.cumsum(d_h)  # inclusive, over every subscription in turn
        self.before = self.cum - d_h
        self.offset = self.before[self.first]

    def _interval(self, sub: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The event at or before ``t`` on each subscription's curve (its first when earlier)."""
        i = np.searchsorted(self.key, sub * self.SPAN + t, side="right") - 1
        return np.clip(i, self.first[sub], self.last[sub])

    def rate(self, sub: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The weekly hazard at ``t``."""
        return self.h[self._interval(sub, t)]

    def at(self, sub: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The cumulative hazard from the subscription's start to ``t``."""
        i = self._interval(sub, t)
        within = np.clip(t - self.t[i], 0.0, None)
        return self.before[i] - self.offset[sub] + self.h[i] * within

    def invert(self, sub: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The time at which the cumulative hazard reaches ``target`` (inf when it does not
        within the curve)."""
        goal = self.offset[sub] + target
        i = np.searchsorted(self.cum, goal, side="left")
        beyond = i > self.last[sub]
        i = np.minimum(i, self.last[sub])
        t = self.t[i] + (goal - self.before[i]) / self.h[i]
        return np.where(beyond, np.inf, t)


@dataclass
class Retention:
    """Subscriptions (one per subscribing customer) and the campaign. Times in seconds."""

    cust: np.ndarray  # customer index per subscription
    plan: np.ndarray  # 0 basic, 1 premium
    fee_cents: np.ndarray
    start: np.ndarray
    cancel: np.ndarray  # true cancellation (seconds), _NEVER when none within the simulation
    stop: np.ndarray  # when the customer stops purchasing (seconds)
    hazard_end: np.ndarray  # weekly hazard at the end date (nan when cancelled before)
    p_cancel_13w: np.ndarray  # nan when cancelled before the end date
    camp: np.ndarray  # subscriptions in the campaign
    sent: np.ndarray  # seconds, per campaign row
    treated: np.ndarray
    channel: np.ndarray
    cost_cents: np.ndarray
    retained: np.ndarray
    camp_p_control: np.ndarray
    camp_tau: np.ndarray
    camp_class: np.ndarray
    end: dict[str, np.ndarray]  # truth at the as-of date for the subscribers active then


def _subscribers(
    rng: np.random.Generator, cust: _Customers, clock: _Clock, params: ActionParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Who subscribes (customer index), the plan (0 basic, 1 premium), the start (seconds, in
    order) and the monthly fee (cents)."""
    paying = cust.has_account & (cust.plan >= PLANS.index("basic"))
    delay = (rng.exponential(params.start_delay_days, cust.n) * DAY).astype(np.int64)
    start = cust.signup + delay
    who = np.flatnonzero(paying & (start < clock.horizon))
    start = start[who]
    plan = (cust.plan[who] == PLANS.index("premium")).astype(np.int8)
    fees = np.array([params.monthly_fee[p] for p in SUBSCRIPTION_PLANS])
    early = np.array([params.early_monthly_fee[p] for p in SUBSCRIPTION_PLANS])
    midpoint = (clock.start + clock.horizon) // 2
    fee = np.where(start < midpoint, early[plan], fees[plan])
    return who, plan, start, np.rint(fee * 100).astype(np.int64)


def _hazard(
    cust: _Customers,
    who: np.ndarray,
    plan: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    complaints: tuple[np.ndarray, np.ndarray],
    clock: _Clock,
    params: ActionParams,
) -> _Hazard:
    """Every subscription's hazard curve from its start to a year after the end date."""
    n_subs = who.size

    def weeks(seconds: np.ndarray) -> np.ndarray:
        return (seconds - clock.start) / WEEK

    t0 = weeks(start)
    end = weeks(np.asarray(clock.horizon)) + params.simulated_weeks_after_end
    eng = cust.engagement[who]
    base = (
        np.log(params.hazard_per_week)
        + np.log(params.hazard_premium) * plan
        - params.hazard_engagement_slope * (eng - 1.0)
    )
    subs = [np.arange(n_subs)]
    times = [t0]
    steps = [base + np.log(params.hazard_tenure[0][1])]
    for (until, factor), (_, following) in zip(
        params.hazard_tenure[:-1], params.hazard_tenure[1:], strict=True
    ):
        subs.append(np.arange(n_subs))
        times.append(t0 + until)
        steps.append(np.full(n_subs, np.log(following / factor)))
    subs.append(np.arange(n_subs))
    times.append(np.maximum(weeks(np.minimum(stop[who], clock.horizon + 200 * WEEK)), t0))
    steps.append(np.full(n_subs, np.log(params.hazard_after_stop)))
    sub_of = np.full(cust.n, -1, np.int64)
    sub_of[who] = np.arange(n_subs)
    c_sub = sub_of[complaints[0]]
    c_t = weeks(complaints[1])
    keep = c_sub >= 0
    c_sub, c_t = c_sub[keep], c_t[keep]
    memory = params.complaint_memory_weeks
    keep = c_t + memory > t0[c_sub]
    c_sub, c_t = c_sub[keep], c_t[keep]
    jump = np.log(params.hazard_per_complaint)
    subs += [c_sub, c_sub]
    times += [np.maximum(c_t, t0[c_sub]), c_t + memory]
    steps += [np.full(c_sub.size, jump), np.full(c_sub.size, -jump)]
    subs.append(np.arange(n_subs))
    times.append(np.full(n_subs, end))
    steps.append(np.zeros(n_subs))
    sub, t, dlog = np.concatenate(subs), np.concatenate(times), np.concatenate(steps)
    inside = (t < end) | (dlog == 0)
    return _Hazard(sub[inside], np.minimum(t[inside], end), dlog[inside], n_subs)


def _lapsed(orders: _Orders, n: int, when: np.ndarray, who: np.ndarray, weeks: float) -> np.ndarray:
    """For each customer in ``who``: no order before ``when``, or none in the last ``weeks``
    and in the last three of the customer's own mean gaps between orders before it."""
    limit = np.full(n, -1, np.int64)
    limit[who] = when
    before = orders.ts < limit[orders.cust]
    owner, ts = orders.cust[before], orders.ts[before]
    last = np.full(n, -1, np.int64)
    np.maximum.at(last, owner, ts)
    first = np.full(n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, owner, ts)
    count = np.bincount(owner, minlength=n)
    last, first, count = last[who], first[who], count[who]
    gap = np.where(count > 1, (last - first) / np.maximum(count - 1, 1), 0.0)
    quiet = when - last > np.maximum(weeks * WEEK, 3.0 * gap)
    return (count == 0) | quiet


def _recent_complaints(
    complaints: tuple[np.ndarray, np.ndarray], n: int, when: np.ndarray, who: np.ndarray,
    weeks: float,
) -> np.ndarray:  # fmt: skip
    """For each customer in ``who``, complaints in the ``weeks`` before ``when``."""
    c_cust, c_ts = complaints
    limit = np.full(n, -1, np.int64)
    limit[who] = when
    inside = (c_ts < limit[c_cust]) & (c_ts >= limit[c_cust] - int(weeks * WEEK))
    return np.bincount(c_cust[inside], minlength=n)[who]


@dataclass
class _Habits:
    """What the uplift rule reads per customer: orders, complaints, web and channel habits."""

    orders: _Orders
    complaints: tuple[np.ndarray, np.ndarray]
    web_app: np.ndarray  # favours the web or the app and browses the website
    noise: np.ndarray
    n: int


def _uplift(
    habits: _Habits, who: np.ndarray, when: np.ndarray, p_control: np.ndarray, params: ActionParams
) -> tuple[np.ndarray, np.ndarray]:
    """True uplift on P(retained) of a contact at ``when`` (seconds) for customers ``who``,
    and their class (index into :data:`UPLIFT_CLASSES`)."""
    dog = (
        _recent_complaints(habits.complaints, habits.n, when, who, params.complaint_recent_weeks)
        > 0
    )
    lost = _lapsed(habits.orders, habits.n, when, who, params.lapse_weeks)
    noise = habits.noise[who]
    web_app = habits.web_app[who]
    share = np.where(web_app, params.persuadable_share_of_risk, params.other_share_of_risk)
    base = np.where(web_app, params.persuadable_base_tau, 0.0)
    tau = np.where(
        dog,
        params.sleeping_dog_tau + noise,
        np.where(
            lost,
            params.lost_cause_tau + noise / 2,
            np.minimum(base + share * p_control, params.max_tau) + noise,
        ),
    )
    tau = np.clip(tau, p_control - 0.999, p_control)
    kind = np.where(dog, 3, np.where(lost, 2, np.where(tau > 0.05, 0, 1))).astype(np.int8)
    return tau, kind


def _campaign(
    rng: np.random.Generator,
    curve: _Hazard,
    e_draw: np.ndarray,
    start: np.ndarray,
    cancel0: np.ndarray,
    clock: _Clock,
    params: ActionParams,
) -> dict[str, np.ndarray]:
    """Who is contacted when, and in which group (campaign rows, in subscription order)."""
    day = clock.horizon - params.campaign_weeks_before_end * WEEK
    # subscribed before the day and through it: active whenever the offer goes out
    day_ends = (day + DAY - clock.start) / WEEK
    active = (start < day) & (cancel0 > day_ends)
    chosen = np.flatnonzero(active & (rng.random(start.size) < params.campaign_share))
    sent = day + (9 * 3600 + rng.random(chosen.size) * 8 * 3600).astype(np.int64)
    treated = rng.random(chosen.size) < params.treated_share
    shares = np.array([params.channel_shares[c] for c in CONTACT_CHANNELS])
    channel = rng.choice(len(CONTACT_CHANNELS), chosen.size, p=shares / shares.sum())
    t_sent = (sent - clock.start) / WEEK
    h_sent = curve.at(chosen, t_sent)
    delta = curve.at(chosen, t_sent + params.window_weeks) - h_sent
    return {
        "sub": chosen,
        "sent": sent,
        "treated": treated,
        "channel": channel.astype(np.int8),
        "t_sent": t_sent,
        "h_sent": h_sent,
        "delta": delta,
        "residual": e_draw[chosen] - h_sent,
    }


def _treated_cancel(
    curve: _Hazard, camp: dict[str, np.ndarray], p_treated: np.ndarray
) -> np.ndarray:
    """The cancellation times (weeks) of the treated: the window's hazard scaled to give
    ``p_treated``, the same draw, a prevented cancellation moved later."""
    sub, h_sent, delta, residual = camp["sub"], camp["h_sent"], camp["delta"], camp["residual"]
    scaled = -np.log1p(-p_treated)  # the window's cumulative hazard under treatment
    in_window = residual < scaled
    ratio = np.where(scaled > 0, delta / np.maximum(scaled, 1e-300), 0.0)
    target = np.where(in_window, h_sent + residual * ratio, h_sent + delta + residual - scaled)
    return curve.invert(sub, target)


def simulate_retention(
    rng: np.random.Generator,
    cust: _Customers,
    orders: _Orders,
    goods: Goods,
    complaints: tuple[np.ndarray, np.ndarray],
    clock: _Clock,
    params: ActionParams,
    spend_p: float,
) -> Retention:
    """Subscriptions, their cancellations and the retention campaign (see the module
    docstring). ``complaints`` are the complaint tickets (customer index, seconds) of the
    interactions source; ``spend_p`` is the Gamma-Gamma shape of order values."""
    who, plan, start, fee = _subscribers(rng, cust, clock, params)
    curve = _hazard(cust, who, plan, start, goods.stop, complaints, clock, params)
    e_draw = rng.standard_exponential(who.size)
    subs = np.arange(who.size)
    cancel_w = curve.invert(subs, e_draw)  # weeks, inf when not within the simulation
    habits = _Habits(
        orders=orders,
        complaints=complaints,
        web_app=cust.has_visitor & (cust.fav_chan <= SALES_CHANNELS.index("app")),
        noise=rng.normal(0.0, params.tau_noise, cust.n),
        n=cust.n,
    )
    camp = _campaign(rng, curve, e_draw, start, cancel_w, clock, params)
    p_control = -np.expm1(-camp["delta"])
    tau, kind = _uplift(habits, who[camp["sub"]], camp["sent"], p_control, params)
    p_treated = np.clip(p_control - tau, 0.0, 0.999)
    treated = camp["treated"]
    cancel_w[camp["sub"][treated]] = _treated_cancel(
        curve, {k: v[treated] for k, v in camp.items()}, p_treated[treated]
    )
    finite = np.isfinite(cancel_w)
    cancel = np.full(who.size, _NEVER, np.int64)
    cancel[finite] = np.maximum(
        clock.start + np.rint(cancel_w[finite] * WEEK).astype(np.int64), start[finite] + 1
    )
    channel_cost = np.array([params.channel_cost[c] for c in CONTACT_CHANNELS])
    offer = params.offer_cost_months * fee[camp["sub"]] / 100.0
    cost = np.where(treated, channel_cost[camp["channel"]] + offer, 0.0)
    end = _end_truth(
        curve,
        habits,
        cust,
        who=who,
        fee=fee,
        cancel=cancel,
        clock=clock,
        params=params,
        spend_p=spend_p,
    )
    return Retention(
        cust=who,
        plan=plan,
        fee_cents=fee,
        start=start,
        cancel=cancel,
        stop=goods.stop[who],
        hazard_end=end.pop("hazard_end"),
        p_cancel_13w=end.pop("p_cancel_13w"),
        camp=camp["sub"],
        sent=camp["sent"],
        treated=treated,
        channel=camp["channel"],
        cost_cents=np.rint(cost * 100).astype(np.int64),
        retained=cancel[camp["sub"]] >= camp["sent"] + params.window_weeks * WEEK,
        camp_p_control=p_control,
        camp_tau=tau,
        camp_class=kind,
        end=end,
    )


def _end_truth(
    curve: _Hazard,
    habits: _Habits,
    cust: _Customers,
    *,
    who: np.ndarray,
    fee: np.ndarray,
    cancel: np.ndarray,
    clock: _Clock,
    params: ActionParams,
    spend_p: float,
) -> dict[str, np.ndarray]:
    """Per subscription, at the end date (nan where cancelled before it): the weekly hazard,
    the chance of cancelling within 13 weeks, and a contact's uplift and value."""
    active = np.flatnonzero(cancel >= clock.horizon)
    t_end = np.full(active.size, (clock.horizon - clock.start) / WEEK)
    h_end = curve.at(active, t_end)

    def within(weeks: float) -> np.ndarray:
        return -np.expm1(-(curve.at(active, t_end + weeks) - h_end))

    p_control = within(params.window_weeks)
    c = who[active]
    tau, kind = _uplift(habits, c, np.full(active.size, clock.horizon), p_control, params)
    lam, p = cust.lam[c], cust.p_drop[c]
    purchases = np.where(cust.alive[c], -np.expm1(-lam * p * params.value_weeks) / p, 0.0)
    value = 12 * fee[active] / 100.0 + purchases * spend_p / cust.nu[c]
    cost = params.channel_cost["email"] + params.offer_cost_months * fee[active] / 100.0
    out = {
        name: np.full(who.size, np.nan)
        for name in (
            "hazard_end",
            "p_cancel_13w",
            "p_control",
            "p_treated",
            "tau",
            "value_at_stake",
            "cost",
        )
    }
    out["hazard_end"][active] = curve.rate(active, t_end)
    out["p_cancel_13w"][active] = within(13.0)
    out["p_control"][active] = p_control
    out["p_treated"][active] = np.clip(p_control - tau, 0.0, 0.999)
    out["tau"][active] = tau
    out["value_at_stake"][active] = value
    out["cost"][active] = cost
    out["class"] = np.full(who.size, -1, np.int8)
    out["class"][active] = kind
    return out


# ---------------------------------------------------------------------------------------------
# The sources
# ---------------------------------------------------------------------------------------------


def _prefixed_ids(numbers: np.ndarray, prefix: str, digits: int) -> np.ndarray:
    """Rows of bytes: ``prefix`` then ``numbers`` zero-padded to ``digits``."""
    head = np.frombuffer(prefix.encode(), np.uint8)
    body = _id_matrix(numbers, int(head[-1]), digits)
    return np.concatenate([np.broadcast_to(head[:-1], (numbers.size, head.size - 1)), body], 1)


def _copies(
    rng: np.random.Generator, clean: np.ndarray, stale: np.ndarray, rate: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Row index with an older snapshot before each ``stale`` row and exact copies of some
    other ``clean`` rows after them; which rows are the snapshots; the number of copies."""
    n = clean.size
    pool = clean & ~stale
    share = min(1.0, rate * n / max(1, int(np.count_nonzero(pool))))
    dup = pool & (rng.random(n) < share)
    reps = 1 + stale + dup
    rows = np.repeat(np.arange(n), reps)
    snapshot = np.zeros(rows.size, bool)
    snapshot[(np.cumsum(reps) - reps)[stale]] = True
    return rows, snapshot, int(np.count_nonzero(dup))


def subscriptions_table(
    rng: np.random.Generator, ret: Retention, ids: _Ids, clock: _Clock, dirt: ActionDirt
) -> tuple[pa.Table, dict[str, Any]]:
    """The ``subscriptions`` source: one row per subscription, ordered by start, cancellations
    before the end date shown; some older snapshots (not yet cancelled), copies and dirty ids."""
    order = np.argsort(ret.start, kind="stable")
    n = order.size
    start, cancel = ret.start[order], ret.cancel[order]
    shown = cancel < clock.horizon
    dirty = rng.random(n) < dirt.dirty_id
    fmt_start = _format_codes(rng, n, dirt)
    fmt_cancel = _format_codes(rng, n, dirt)
    clean = ~dirty & (fmt_start == 0) & (fmt_cancel == 0)
    stale = shown & clean & (rng.random(n) < dirt.stale_snapshots)
    rows, snapshot, n_dup = _copies(rng, clean, stale, dirt.duplicate_rows)
    numbers = 1_000_001 + np.arange(n)
    table = pa.table(
        {
            "subscription_id": _strings(_prefixed_ids(numbers[rows], "SUB", 7)),
            "account_id": _id_column(ids.account[ret.cust[order][rows]], dirty[rows], rng),
            "plan": _labels(ret.plan[order][rows], SUBSCRIPTION_PLANS),
            "started_at": _format_times(start[rows], fmt_start[rows], with_time=True),
            "cancelled_at": _format_times(
                np.where(shown, cancel, start)[rows],
                fmt_cancel[rows],
                shown[rows] & ~snapshot,
                with_time=True,
            ),
            "monthly_fee": _format_amounts(ret.fee_cents[order][rows]),
        }
    )
    counts = {
        "rows": table.num_rows,
        "subscriptions": n,
        "duplicates": n_dup,
        "stale_snapshots": int(stale.sum()),
        "cancelled": int(shown.sum()),
        "cancelled_after_end": int(((cancel >= clock.horizon) & (cancel < _NEVER)).sum()),
        "dirty_ids": {"account_id": int(dirty.sum())},
        "date_formats": {
            "started_at": _format_counts(fmt_start),
            "cancelled_at": _format_counts(fmt_cancel, shown),
        },
    }
    return table, counts


def treatments_table(
    rng: np.random.Generator,
    ret: Retention,
    ids: _Ids,
    clock: _Clock,
    params: ActionParams,
    dirt: ActionDirt,
) -> tuple[pa.Table, dict[str, Any]]:
    """The ``treatments`` source: the campaign log, one row per contacted or held-out
    customer, ordered by the time sent."""
    order = np.argsort(ret.sent, kind="stable")
    n = order.size
    who = ret.cust[ret.camp[order]]
    dirty = rng.random(n) < dirt.dirty_id
    fmt = _format_codes(rng, n, dirt)
    rows, n_dup = _duplicate(rng, ~dirty & (fmt == 0), dirt.duplicate_rows)
    day = clock.end_date.toordinal() - 7 * params.campaign_weeks_before_end + 1
    campaign = f"RET-{date_from_ordinal(day)}"
    table = pa.table(
        {
            "crm_id": _id_column(ids.crm[who[rows]], dirty[rows], rng),
            "campaign_id": pa.array([campaign] * rows.size, pa.string()),
            "sent_at": _format_times(ret.sent[order][rows], fmt[rows], with_time=True),
            "group": _labels(np.where(ret.treated[order], 0, 1)[rows], GROUPS),
            "offer": pa.array([params.offer] * rows.size, pa.string()),
            "channel": _labels(ret.channel[order][rows], CONTACT_CHANNELS),
            "cost": _format_amounts(ret.cost_cents[order][rows]),
            "retained": pa.array(ret.retained[order][rows], pa.bool_()),
        }
    )
    counts = {
        "rows": table.num_rows,
        "contacts": n,
        "duplicates": n_dup,
        "treatment": int(ret.treated.sum()),
        "control": int(n - ret.treated.sum()),
        "dirty_ids": {"crm_id": int(dirty.sum())},
        "date_formats": {"sent_at": _format_counts(fmt)},
    }
    return table, counts


def date_from_ordinal(day: int) -> str:
    """An ISO date from a proleptic Gregorian ordinal."""
    return date.fromordinal(day).isoformat()


# ---------------------------------------------------------------------------------------------
# The truth
# ---------------------------------------------------------------------------------------------


def _stamp(seconds: np.ndarray, valid: np.ndarray) -> pa.Array:
    return pa.array(np.where(valid, seconds, 0).astype("datetime64[s]"), pa.timestamp("s"),
                    mask=~valid)  # fmt: skip


def _floats(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.float64(), mask=np.isnan(values))


def products_truth(goods: Goods, params: ActionParams) -> dict[str, Any]:
    """``truth/products.json``: the affinities, the popularities and the repurchase habit."""
    cat = goods.catalogue
    pid = cat.ids()
    affinities = [
        {"product_id": pid[x], "partner_id": pid[int(y)], "strength": round(float(s), 4)}
        for x in range(cat.size)
        for y, s in zip(cat.partners[x], cat.strength[x], strict=True)
        if y >= 0
    ]

    def shares(weights: np.ndarray) -> dict[str, float]:
        return {p: round(float(w), 6) for p, w in zip(pid, weights, strict=True)}

    return {
        "note": "popularities are each product's share of its category; a customer's later "
        "order in a category is a partner of the previous product there with the partner's "
        "strength, else with probability min(0.95, rho_i x category factor) a repeat of one "
        "of the earlier products there (each earlier order equally likely), else a draw by "
        "the customer's true segment's popularity; the first order in a category is such a "
        "draw",
        "products_per_category": cat.per_category,
        "affinities": affinities,
        "global_popularity": shares(cat.global_popularity),
        "segment_popularity": {seg: shares(cat.popularity[s]) for s, seg in enumerate(SEGMENTS)},
        "repurchase": {
            "rho_beta": list(params.repurchase_beta),
            "category_factor": dict(params.category_repurchase),
            "cap": 0.95,
            "mean_rho": round(float(goods.repurchase.mean()), 4),
        },
    }


def _next_products(goods: Goods, ids: _Ids) -> pa.Table:
    order = np.lexsort((goods.future_ts, goods.future_cust))
    return pa.table(
        {
            "crm_id": _strings(ids.crm[goods.future_cust[order]]),
            "ts": _stamp(goods.future_ts[order], np.ones(order.size, bool)),
            "category": _labels(goods.future_category[order], CATEGORIES),
            "product_id": product_ids(goods.catalogue, goods.future_product[order]),
        }
    )


def _subscriptions_truth(ret: Retention, ids: _Ids, clock: _Clock) -> pa.Table:
    order = np.argsort(ret.start, kind="stable")
    never = ret.cancel[order] >= _NEVER
    stops = ret.stop[order]
    return pa.table(
        {
            "subscription_id": _strings(_prefixed_ids(1_000_001 + np.arange(order.size), "SUB", 7)),
            "crm_id": _strings(ids.crm[ret.cust[order]]),
            "plan": _labels(ret.plan[order], SUBSCRIPTION_PLANS),
            "monthly_fee": pa.array(ret.fee_cents[order] / 100.0),
            "started_at": _stamp(ret.start[order], np.ones(order.size, bool)),
            "cancelled_at": _stamp(ret.cancel[order], ~never),
            "cancelled_before_end": pa.array(ret.cancel[order] < clock.horizon),
            "stopped_purchasing_at": _stamp(stops, stops < _NEVER // 2),
            "hazard_per_week": _floats(ret.hazard_end[order]),
            "p_cancel_13w": _floats(ret.p_cancel_13w[order]),
        }
    )


def _uplift_truth(ret: Retention, ids: _Ids, clock: _Clock) -> pa.Table:
    n = ret.cust.size
    camp_of = np.full(n, -1, np.int64)
    camp_of[ret.camp] = np.arange(ret.camp.size)
    active = ret.cancel >= clock.horizon
    rows = np.flatnonzero(active | (camp_of >= 0))
    c = camp_of[rows]
    in_camp = c >= 0
    c = np.where(in_camp, c, ret.camp.size)  # one padding element for the others
    end = ret.end

    def camp_values(values: np.ndarray) -> np.ndarray:
        return np.append(values, values.dtype.type(0))[c]

    classes = end["class"][rows]
    return pa.table(
        {
            "crm_id": _strings(ids.crm[ret.cust[rows]]),
            "subscription_id": _strings(_prefixed_ids(_sub_numbers(ret)[rows], "SUB", 7)),
            "active_at_end": pa.array(active[rows]),
            "p_control": _floats(end["p_control"][rows]),
            "p_treated": _floats(end["p_treated"][rows]),
            "tau": _floats(end["tau"][rows]),
            "uplift_class": _labels(np.maximum(classes, 0), UPLIFT_CLASSES, classes >= 0),
            "value_at_stake": _floats(end["value_at_stake"][rows]),
            "cost": _floats(end["cost"][rows]),
            "incremental_profit": _floats(
                end["tau"][rows] * end["value_at_stake"][rows] - end["cost"][rows]
            ),
            "campaign_group": _labels(np.where(camp_values(ret.treated), 0, 1), GROUPS, in_camp),
            "campaign_p_control": _floats(
                np.where(in_camp, camp_values(ret.camp_p_control), np.nan)
            ),
            "campaign_tau": _floats(np.where(in_camp, camp_values(ret.camp_tau), np.nan)),
            "campaign_class": _labels(camp_values(ret.camp_class), UPLIFT_CLASSES, in_camp),
        }
    )


def _sub_numbers(ret: Retention) -> np.ndarray:
    """Each subscription's number (in subscription order): rising with the start."""
    rank = np.empty(ret.start.size, np.int64)
    rank[np.argsort(ret.start, kind="stable")] = np.arange(ret.start.size)
    return 1_000_001 + rank


def write_truth(
    folder: Path, goods: Goods, ret: Retention, ids: _Ids, clock: _Clock, params: ActionParams
) -> None:
    """``products.json``, ``next_products.parquet``, ``subscriptions.parquet`` and
    ``uplift.parquet`` into the truth folder."""
    text = json.dumps(products_truth(goods, params), indent=2) + "\n"
    (folder / "products.json").write_text(text, encoding="utf-8")
    pq.write_table(_next_products(goods, ids), folder / "next_products.parquet")
    pq.write_table(_subscriptions_truth(ret, ids, clock), folder / "subscriptions.parquet")
    pq.write_table(_uplift_truth(ret, ids, clock), folder / "uplift.parquet")


def truth_meta(params: ActionParams, dirt: ActionDirt) -> dict[str, Any]:
    """What ``truth/params.json`` says about the catalogue, subscriptions and campaign."""
    return {
        "model": "products: segment popularity, planted co-purchase partners and repurchase; "
        "subscriptions: a piecewise-constant weekly cancellation hazard; campaign: a "
        "randomised retention offer with a planted heterogeneous uplift (see "
        "custval.data.synth_actions)",
        "parameters": asdict(params),
        "dirt_rates": asdict(dirt),
        "incremental_profit": "tau x value_at_stake - cost per customer (truth/uplift.parquet): "
        "tau = p_control - p_treated, the true change in the chance of staying subscribed 8 "
        "weeks after a contact at the as-of date; value_at_stake = 12 monthly fees + the "
        "expected spend of the next 52 weeks (BG/NBD and Gamma-Gamma, latent values); cost = "
        "an email contact + the offer (1.5 monthly fees). Targeting should maximise its sum "
        "over the customers contacted within the budget",
        "uplift_classes": {
            "persuadable": "favours the web or the app, browses the website, no recent "
            "complaint, bought in the last 16 weeks: tau about 0.8 x p_control",
            "sure_thing": "the other recent buyers without a recent complaint: tau about "
            "0.15 x p_control (low risk, tau near 0)",
            "lost_cause": "no purchase in the last 16 weeks (or never): tau about 0.02, the "
            "highest risks",
            "sleeping_dog": "a complaint in the last 12 weeks: tau about -0.10",
        },
        "truth_files": {
            "products.json": "the catalogue's planted affinities, popularities and repurchase",
            "next_products.parquet": "every order of the 13 weeks after end_date (crm_id, ts, "
            "category, product_id); customers absent bought nothing then",
            "subscriptions.parquet": "per subscription: the true cancellation (also after "
            "end_date, up to 52 weeks; null: none), when the customer stopped purchasing, the "
            "weekly hazard at end_date and p_cancel_13w (null when cancelled before end_date)",
            "uplift.parquet": "per subscriber active at end_date or in the campaign: p_control, "
            "p_treated, tau, class, value_at_stake, cost and incremental_profit for a contact "
            "at as_of (null when not active at end_date), and the campaign's group, "
            "p_control, tau and class",
        },
    }
