"""A realistic multi-source sample company with known ground truth.

:func:`generate` writes nine raw sources (CRM, transactions, web sessions, product usage, service
tickets, an id map, a product catalogue, subscriptions and a retention campaign's treatment log)
as CSV, Parquet or one DuckDB file, a ready ``custval.toml``, and a ``truth/`` folder with the
parameters and latent values that produced the data, so that cleaning, features and models can be
tested against known answers. The catalogue (each order's product), the subscriptions and the
campaign are simulated by :mod:`custval.data.synth_actions` from random streams of their own, so
that the six original sources hold the same rows for a seed as before they came.

The generative model
--------------------
Time is measured in **weeks**, money in **currency units** (rounded to cents).

*The calendar* (:mod:`custval.data._synth_season`): a yearly cycle (+-20%, highest at the turn
of the year), a weekly one (Saturdays busiest) and two promotion weeks a year (mid-May and the
week of 28 November, x1.6) multiply every customer's purchase rate and the signups of each day;
``truth/calendar.parquet`` holds the multiplier of every day, so that sales forecasts can be
judged against the planted pattern. A customer's purchases are drawn in the calendar's
intensity time and mapped back, so the BG/NBD story below holds in that time.

*Customers* sign up during the ``history_years`` (3) years before ``end_date``; the signup density
rises linearly so that the last day has ``1 + signup_trend`` times the signups of the first (the
planted acquisition curve: that growth times the calendar). Each
customer has a profile: region, acquisition channel, plan (free/basic/premium), age, subscribed
services and an engagement level ``e_i ~ Gamma(2, 1/2) x plan factor x (1 + 0.1 services)``
(mean about 1). The profile shifts the latent behaviour, so profile features carry real signal.

*Purchases* follow the BG/NBD story with the dropout also possible after the first purchase
(strictly, the MBG/NBD variant):

- transaction rate ``lambda_i = Gamma(shape r, rate alpha) x m_plan x m_channel x m_region``
  purchases per week while alive (premium x1.6, basic x1.0, free x0.6; referral x1.3...);
- dropout probability ``p_i ~ Beta(a, b x k_plan x k_channel)``: a larger ``b`` means less churn
  (premium x1.6, free x0.7);
- defaults ``r = 0.9, alpha = 2.2, a = 0.7, b = 6`` give about 9.5 orders per customer over the
  three years (``r = 0.5, alpha = 8, a = 0.8, b = 3`` would give about 2.4);
- 92% of customers have a product account; 90% of those buy, the first time a few days
  (``Gamma(2, 1.5)`` days) after signup. The first purchase is not a repeat purchase; repeats
  arrive as a Poisson process with rate ``lambda_i``; after every purchase, the first included,
  the customer dies with probability ``p_i``. Nothing happens on or after ``end_date + 1 day``.

*Spend* is Gamma-Gamma: ``nu_i ~ Gamma(shape q, rate gamma_i)`` with ``gamma_i = gamma x
plan factor x age factor`` (premium and older customers spend more), and every order's value is
``Gamma(shape p, rate nu_i)``, so a customer's expected order value is ``p / nu_i`` and the
population mean is ``p gamma / (q - 1)`` (30 currency units by default).

*Engagement* drives the other sources: web sessions ``~ Poisson(c_web x e_i x (0.05 + lambda_i)
x weeks)`` plus one converting session per web order, product-usage days ``~ Binomial(days,
c_usage x e_i x sqrt(lambda_i / (r/alpha)))``, both fading after the customer's death; service
tickets arrive at ``c_tickets x (0.2 + 4 p_i)`` per week plus a burst in the four weeks before a
dropout, so tickets flag customers about to churn. A ``segment_label`` (vip, loyal, bargain,
occasional) derived from the latent values, with 10% noise, is known for 30% of customers.

Raw-export dirt
---------------
Dates and amounts are strings in every format. Dates come in three formats (ISO, ``YYYY/MM/DD``,
``DD.MM.YYYY``; never an ambiguous day/month order), amounts from 1,000 up carry a thousands
separator, about 2% of orders get a refund row (negative amount, order id ``R...``), some ids are
lower-cased or padded with spaces, some values are missing, a few rows are exact duplicates and a
few extra orders (not true ones) are dated in a far future year; true orders whose timestamp was
lost stay true orders. ``truth/dirt.json`` counts every one of them. Duplicated rows copy only
rows that carry no other dirt, so the counts hold both before and after removing exact duplicates
(except the number of ISO dates).

The new sources have dirt of their own (dirty ids, the three date formats, copies, and in
subscriptions older snapshots of cancelled subscriptions, written before the cancellation), and
1% of transactions have no product id; ``truth/dirt.json`` counts them too.

Everything is vectorised NumPy and Arrow (1M customers and about 10M orders in about a minute
on two cores) and deterministic for a seed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from custval.data import synth_actions
from custval.data._synth_base import (
    ACQUISITION_CHANNELS,
    CATEGORIES,
    DAY,
    PLANS,
    REGIONS,
    SALES_CHANNELS,
    SEGMENTS,
    SERVICES,
    TICKET_KINDS,
    WEEK,
    _active_until,
    _choice,
    _Clock,
    _Customers,
    _duplicate,
    _format_amounts,
    _format_codes,
    _format_counts,
    _format_times,
    _group_cumsum,
    _hex_matrix,
    _id_column,
    _id_matrix,
    _Ids,
    _labels,
    _lookup,
    _Orders,
    _strings,
    _uniform_times,
)
from custval.data._synth_season import Calendar, Season
from custval.errors import CustvalError

__all__ = ["SOURCE_NAMES", "DirtRates", "SynthParams", "SynthResult", "generate"]

Format = Literal["csv", "parquet", "duckdb"]
Progress = Callable[[str, float], None]

MAX_CUSTOMERS = 9_999_999  # crm ids are "C" + 7 digits

SOURCE_NAMES: tuple[str, ...] = (
    "crm_customers",
    "transactions",
    "web_sessions",
    "product_usage",
    "interactions",
    "id_map",
    "products",
    "subscriptions",
    "treatments",
)


@dataclass(frozen=True)
class SynthParams:
    """Population parameters of the sample company.

    Rates are per week, money is in currency units, shares are fractions of customers. The
    multipliers (``plan_lambda``, ``channel_dropout_b``...) say how the profile shifts a customer's
    latent purchase rate, dropout and spend. All of it is written to ``truth/params.json``.

    Example
    -------
    >>> params = SynthParams()
    >>> round(params.r / params.alpha, 3)  # mean purchase rate per week before multipliers
    0.409
    >>> params.p * params.gamma / (params.q - 1)  # mean order value, currency
    30.0
    """

    # BG/NBD-type purchase process (weeks)
    r: float = 0.9
    alpha: float = 2.2
    a: float = 0.7
    b: float = 6.0
    # Gamma-Gamma spend (currency)
    p: float = 6.0
    q: float = 4.0
    gamma: float = 15.0
    history_years: int = 3
    signup_trend: float = 1.0
    #: the calendar of sales and signups: yearly and weekly cycles, promotion weeks
    season: Season = field(default_factory=Season)
    share_account: float = 0.92
    share_visitor: float = 0.80
    share_buyers_among_accounts: float = 0.90
    first_purchase_delay_days_gamma: tuple[float, float] = (2.0, 1.5)
    region_shares: Mapping[str, float] = field(
        default_factory=lambda: dict(
            zip(REGIONS, (0.20, 0.20, 0.18, 0.17, 0.17, 0.08), strict=True)
        )
    )
    region_lambda: Mapping[str, float] = field(
        default_factory=lambda: dict(zip(REGIONS, (1.0, 0.95, 1.0, 1.05, 1.1, 0.85), strict=True))
    )
    channel_shares: Mapping[str, float] = field(
        default_factory=lambda: dict(
            zip(ACQUISITION_CHANNELS, (0.30, 0.20, 0.15, 0.10, 0.25), strict=True)
        )
    )
    channel_lambda: Mapping[str, float] = field(
        default_factory=lambda: dict(
            zip(ACQUISITION_CHANNELS, (1.0, 0.9, 1.3, 1.1, 1.0), strict=True)
        )
    )
    channel_dropout_b: Mapping[str, float] = field(
        default_factory=lambda: dict(
            zip(ACQUISITION_CHANNELS, (1.0, 0.85, 1.3, 1.0, 1.1), strict=True)
        )
    )
    plan_shares: Mapping[str, float] = field(
        default_factory=lambda: dict(zip(PLANS, (0.35, 0.45, 0.20), strict=True))
    )
    plan_lambda: Mapping[str, float] = field(
        default_factory=lambda: dict(zip(PLANS, (0.6, 1.0, 1.6), strict=True))
    )
    plan_dropout_b: Mapping[str, float] = field(
        default_factory=lambda: dict(zip(PLANS, (0.7, 1.0, 1.6), strict=True))
    )
    plan_spend_gamma: Mapping[str, float] = field(
        default_factory=lambda: dict(zip(PLANS, (0.85, 1.0, 1.4), strict=True))
    )
    plan_engagement: Mapping[str, float] = field(
        default_factory=lambda: dict(zip(PLANS, (0.8, 1.0, 1.3), strict=True))
    )
    plan_service_rates: Mapping[str, tuple[float, ...]] = field(
        default_factory=lambda: {
            "free": (0.05, 0.05, 0.05, 0.05, 0.05),
            "basic": (0.35, 0.25, 0.20, 0.15, 0.10),
            "premium": (0.70, 0.60, 0.50, 0.50, 0.40),
        }
    )
    age_mean: float = 42.0
    age_sd: float = 13.0
    age_range: tuple[float, float] = (18.0, 85.0)
    spend_gamma_per_year_over_40: float = 0.008
    spend_gamma_age_clip: tuple[float, float] = (0.75, 1.35)
    category_shares: Mapping[str, float] = field(
        default_factory=lambda: dict(
            zip(CATEGORIES, (0.15, 0.15, 0.20, 0.20, 0.10, 0.20), strict=True)
        )
    )
    sales_channel_shares: Mapping[str, float] = field(
        default_factory=lambda: dict(zip(SALES_CHANNELS, (0.35, 0.40, 0.15, 0.10), strict=True))
    )
    sales_channel_shares_60_plus: Mapping[str, float] = field(
        default_factory=lambda: dict(zip(SALES_CHANNELS, (0.30, 0.15, 0.35, 0.20), strict=True))
    )
    web_sessions_per_week: float = 0.12
    product_active_day_prob: float = 0.05
    tickets_per_week: float = 0.02
    tickets_before_dropout: float = 0.8
    #: weeks over which a leaver's product use fades to nothing before it stops (two weeks
    #: after the dropout): a leading sign of leaving that purchases do not show; 0, the
    #: default, keeps use steady to the end
    usage_fade_weeks: float = 0.0
    refund_share: float = 0.02
    segment_known_share: float = 0.30
    segment_noise: float = 0.10


@dataclass(frozen=True)
class DirtRates:
    """How often each kind of deliberate dirt is planted (fractions of rows).

    Example
    -------
    >>> DirtRates().duplicate_transactions
    0.005
    """

    duplicate_transactions: float = 0.005
    duplicate_web_sessions: float = 0.005
    duplicate_crm_customers: float = 0.002
    duplicate_product_usage: float = 0.002
    empty_category: float = 0.01
    empty_channel: float = 0.01
    empty_ts: float = 0.0002
    empty_birth_date: float = 0.05
    empty_region: float = 0.02
    empty_page_views: float = 0.005
    dirty_crm_id: float = 0.02
    dirty_account_id: float = 0.02
    dirty_visitor_id: float = 0.01
    future_transactions: float = 0.0001
    date_format_slash: float = 0.10
    date_format_dot: float = 0.10


@dataclass(frozen=True)
class SynthResult:
    """What :func:`generate` wrote.

    ``files`` maps each source name to its file (for DuckDB every source points at
    ``company.duckdb``, one table per source); ``rows`` counts the rows written per source,
    duplicates and refunds included.
    """

    out: Path
    files: dict[str, Path]
    rows: dict[str, int]
    config_path: Path


def _simulate_customers(
    rng: np.random.Generator, n: int, params: SynthParams, clock: _Clock
) -> _Customers:
    calendar = Calendar.of(clock.start, clock.horizon, params.season)
    u = rng.random(n)
    signup = np.sort(np.minimum(calendar.signups(u, params.signup_trend), clock.horizon - 1))

    region = _choice(rng, params.region_shares, n)
    channel = _choice(rng, params.channel_shares, n)
    plan = _choice(rng, params.plan_shares, n)
    lo, hi = params.age_range
    age_at_signup = np.clip(rng.normal(params.age_mean, params.age_sd, n), lo, hi)
    birth_day = signup // DAY - (age_at_signup * 365.25).astype(np.int64)
    end_day = (clock.horizon - DAY) // DAY
    age = (end_day - birth_day) / 365.25

    rates = np.array([params.plan_service_rates[name] for name in PLANS])
    has_service = rng.random((n, len(SERVICES))) < rates[plan]
    services = (has_service * (1 << np.arange(len(SERVICES)))).sum(1).astype(np.uint8)
    n_services = has_service.sum(1)
    engagement = (
        rng.gamma(2.0, 0.5, n)
        * _lookup(params.plan_engagement, PLANS)[plan]
        * (1.0 + 0.1 * n_services)
    )

    lam = (
        rng.gamma(params.r, 1.0 / params.alpha, n)
        * _lookup(params.plan_lambda, PLANS)[plan]
        * _lookup(params.channel_lambda, ACQUISITION_CHANNELS)[channel]
        * _lookup(params.region_lambda, REGIONS)[region]
    )
    b_i = (
        params.b
        * _lookup(params.plan_dropout_b, PLANS)[plan]
        * _lookup(params.channel_dropout_b, ACQUISITION_CHANNELS)[channel]
    )
    p_drop = np.clip(rng.beta(params.a, b_i), 1e-9, 1.0)
    clip_lo, clip_hi = params.spend_gamma_age_clip
    gamma_i = (
        params.gamma
        * _lookup(params.plan_spend_gamma, PLANS)[plan]
        * np.clip(1.0 + params.spend_gamma_per_year_over_40 * (age - 40.0), clip_lo, clip_hi)
    )
    nu = rng.gamma(params.q, 1.0 / gamma_i)

    has_account = rng.random(n) < params.share_account
    has_visitor = rng.random(n) < params.share_visitor
    buyer = has_account & (rng.random(n) < params.share_buyers_among_accounts)
    shape, scale = params.first_purchase_delay_days_gamma
    first = signup + (rng.gamma(shape, scale, n) * DAY).astype(np.int64)
    first = np.where(buyer & (first < clock.horizon), first, -1)
    return _Customers(
        n=n,
        signup=signup,
        birth_day=birth_day,
        age=age,
        region=region,
        channel=channel,
        plan=plan,
        services=services,
        engagement=engagement,
        lam=lam,
        p_drop=p_drop,
        nu=nu,
        has_account=has_account,
        has_visitor=has_visitor,
        buyer=buyer,
        first=first,
        death=np.full(n, -1, np.int64),
        alive=buyer.copy(),
        n_purchases=np.zeros(n, np.int64),
        total_cents=np.zeros(n, np.int64),
    )


def _simulate_orders(
    rng: np.random.Generator, cust: _Customers, params: SynthParams, clock: _Clock
) -> _Orders:
    """Purchase times and values; fills the customers' death, alive, counts and spend."""
    idx = np.flatnonzero(cust.first >= 0)
    t1 = cust.first[idx]
    # the purchases are drawn in the calendar's intensity time and mapped back (_synth_season)
    calendar = Calendar.of(clock.start, clock.horizon, params.season)
    w1 = calendar.warp(t1)
    window = calendar.warp(np.array([clock.horizon]))[0] - w1  # intensity seconds to the end
    lam, p_drop = cust.lam[idx], cust.p_drop[idx]
    n_until_death = rng.geometric(p_drop)  # purchases up to and including the fatal one
    # Repeat purchases of an immortal customer in the window; the real ones are the first
    # min(n_until_death - 1, k) of them. Given k, Poisson times are uniform order statistics:
    # cumulated exponential gaps over the sum of k + 1 gaps.
    k = rng.poisson(lam * window / WEEK)
    repeats = np.minimum(n_until_death - 1, k)
    dead = n_until_death - 1 <= k
    gaps = rng.standard_exponential(int(repeats.sum()))
    cum = _group_cumsum(gaps, repeats)
    last = np.cumsum(repeats) - 1
    cum_last = np.where(repeats > 0, cum[np.maximum(last, 0)] if cum.size else 0.0, 0.0)
    total = cum_last + rng.standard_gamma(k - repeats + 1.0)
    owner = np.repeat(np.arange(idx.size), repeats)
    rep_ts = np.clip(
        calendar.unwarp(w1[owner] + cum / total[owner] * window[owner]),
        t1[owner],
        clock.horizon - 1,
    )

    order_cust = np.concatenate([idx, idx[owner]])
    ts = np.concatenate([t1, rep_ts])
    death_ts = t1.copy()
    has_rep = repeats > 0
    death_ts[has_rep] = rep_ts[last[has_rep]]
    cust.death[idx[dead]] = death_ts[dead]
    cust.alive[idx[dead]] = False

    value = rng.gamma(params.p, 1.0 / cust.nu[order_cust])
    cents = np.maximum(1, np.rint(value * 100.0)).astype(np.int64)
    cust.n_purchases[:] = np.bincount(order_cust, minlength=cust.n)
    cust.total_cents[:] = np.bincount(order_cust, weights=cents, minlength=cust.n).astype(np.int64)

    # product mix and channel: each customer has a favourite they choose with their own loyalty,
    # otherwise they pick from the population shares; older customers prefer branch and phone.
    n = cust.n
    fav_cat = _choice(rng, params.category_shares, n)
    cat_loyalty = rng.beta(2.0, 2.0, n)
    young = _choice(rng, params.sales_channel_shares, n)
    senior = _choice(rng, params.sales_channel_shares_60_plus, n)
    fav_chan = np.where(cust.age >= 60, senior, young)
    chan_loyalty = rng.beta(3.0, 2.0, n)
    cust.fav_cat, cust.cat_loyalty, cust.fav_chan = fav_cat, cat_loyalty, fav_chan
    m = ts.size
    category = np.where(
        rng.random(m) < cat_loyalty[order_cust],
        fav_cat[order_cust],
        _choice(rng, params.category_shares, m),
    )
    channel = np.where(
        rng.random(m) < chan_loyalty[order_cust],
        fav_chan[order_cust],
        _choice(rng, params.sales_channel_shares, m),
    )
    return _Orders(
        cust=order_cust.astype(np.int64),
        ts=ts,
        cents=cents,
        category=category.astype(np.int8),
        channel=channel.astype(np.int8),
    )


# ---------------------------------------------------------------------------------------------
# The sources
# ---------------------------------------------------------------------------------------------


def _make_ids(rng: np.random.Generator, n: int) -> _Ids:
    crm = _id_matrix(np.arange(1, n + 1), ord("C"), 7)
    # account numbers rise with signup like a database sequence, with gaps
    max_gap = int(np.clip(80_000_000 // max(n, 1), 1, 9))
    account = 10_000_000 + np.cumsum(rng.integers(1, max_gap + 1, n))
    # an odd multiplier modulo 2^32 is a bijection, so visitor ids are distinct but look random
    mult = int(rng.integers(0, 2**31)) * 2 + 1
    shift = int(rng.integers(0, 2**32))
    visitor = (np.arange(n, dtype=np.uint64) * np.uint64(mult) + np.uint64(shift)) % np.uint64(
        2**32
    )
    return _Ids(
        crm=crm,
        account=_id_matrix(account, ord("A"), 8),
        visitor=_hex_matrix(visitor, ord("V")),
    )


def _crm_table(
    rng: np.random.Generator,
    cust: _Customers,
    ids: _Ids,
    params: SynthParams,
    rates: DirtRates,
    true_segment: np.ndarray,
) -> tuple[pa.Table, dict[str, Any]]:
    n = cust.n
    segment = _noisy_segments(rng, true_segment, params)
    known = rng.random(n) < params.segment_known_share
    birth_ok = rng.random(n) >= rates.empty_birth_date
    region_ok = rng.random(n) >= rates.empty_region
    dirty = rng.random(n) < rates.dirty_crm_id
    fmt_signup = _format_codes(rng, n, rates)
    fmt_birth = _format_codes(rng, n, rates)
    clean = birth_ok & region_ok & ~dirty & (fmt_signup == 0) & (fmt_birth == 0)
    rows, n_dup = _duplicate(rng, clean, rates.duplicate_crm_customers)

    services_lut = pa.array(
        [";".join(s for k, s in enumerate(SERVICES) if mask >> k & 1) for mask in range(32)]
    )
    table = pa.table(
        {
            "crm_id": _id_column(ids.crm[rows], dirty[rows], rng),
            "signup_date": _format_times(cust.signup[rows], fmt_signup[rows], with_time=False),
            "birth_date": _format_times(
                cust.birth_day[rows] * DAY, fmt_birth[rows], birth_ok[rows], with_time=False
            ),
            "region": _labels(cust.region[rows], REGIONS, region_ok[rows]),
            "acquisition_channel": _labels(cust.channel[rows], ACQUISITION_CHANNELS),
            "plan": _labels(cust.plan[rows], PLANS),
            "services": pc.take(services_lut, pa.array(cust.services[rows].astype(np.int32))),
            "segment_label": _labels(segment[rows], SEGMENTS, known[rows]),
        }
    )
    dirt = {
        "rows": table.num_rows,
        "duplicates": n_dup,
        "empty": {
            "birth_date": int(n - birth_ok.sum()),
            "region": int(n - region_ok.sum()),
        },
        "dirty_ids": {"crm_id": int(dirty.sum())},
        "date_formats": {
            "signup_date": _format_counts(fmt_signup),
            "birth_date": _format_counts(fmt_birth, birth_ok),
        },
        "segment_label_known": int(known.sum()),
    }
    return table, dirt


def _true_segments(cust: _Customers, params: SynthParams) -> np.ndarray:
    """vip / loyal / bargain / occasional from the latent values."""
    spend = params.p / cust.nu
    value = np.where(cust.buyer & cust.alive, 52.0 * cust.lam * spend, 0.0)
    buyers = cust.buyer
    if buyers.any():
        vip_cut = np.quantile(value[buyers], 0.9)
        lam_mid = np.median(cust.lam[buyers])
        cheap = np.quantile(spend[buyers], 0.25)
    else:
        vip_cut = lam_mid = cheap = np.inf
    segment = np.full(cust.n, 3, np.int8)
    segment[buyers & (spend < cheap) & (cust.lam >= lam_mid)] = 2
    segment[buyers & (cust.p_drop < 0.05) & (cust.lam >= lam_mid)] = 1
    segment[buyers & (value >= vip_cut) & (value > 0)] = 0
    return segment


def _noisy_segments(
    rng: np.random.Generator, true_segment: np.ndarray, params: SynthParams
) -> np.ndarray:
    """The segments as the CRM records them: some label noise."""
    segment = true_segment.copy()
    noisy = rng.random(segment.size) < params.segment_noise
    segment[noisy] = rng.integers(0, len(SEGMENTS), int(noisy.sum()))
    return segment


def _transactions_table(
    rng: np.random.Generator,
    cust: _Customers,
    orders: _Orders,
    ids: _Ids,
    params: SynthParams,
    rates: DirtRates,
    clock: _Clock,
    *,
    goods: synth_actions.Goods,
    extra: np.random.Generator,
) -> tuple[pa.Table, dict[str, Any]]:
    """The transactions source; its products come from ``goods`` and the ``extra`` stream, so
    that the other columns stay what they were before products came."""
    n_orders = orders.ts.size
    src, delay, refund = _refunds(rng, orders, params, clock)
    future_year, fut_cust, fut_ts, fut_entered, fut_cents = _future_rows(
        rng, cust, params, rates, clock, n_orders
    )
    n_future = fut_cust.size
    kind = np.concatenate(
        [np.zeros(n_orders, np.int8), np.ones(src.size, np.int8), np.full(n_future, 2, np.int8)]
    )
    ts = np.concatenate([orders.ts, orders.ts[src] + delay, fut_ts])
    sort_key = np.concatenate([orders.ts, orders.ts[src] + delay, fut_entered])
    order = np.argsort(sort_key, kind="stable")
    del sort_key
    kind, ts = kind[order], ts[order]
    who = np.concatenate([orders.cust, orders.cust[src], fut_cust])[order]
    cents = np.concatenate([orders.cents, refund, fut_cents.astype(np.int64)])[order]
    fut_category = _choice(rng, params.category_shares, n_future)
    category = np.concatenate([orders.category, orders.category[src], fut_category])[order]
    product = _products_of(extra, goods, src, fut_category)[order]
    channel = np.concatenate(
        [orders.channel, orders.channel[src], _choice(rng, params.sales_channel_shares, n_future)]
    )[order]
    del order
    n = kind.size
    is_refund = kind == 1
    number = _order_numbers(rng, is_refund)
    cat_ok = rng.random(n) >= rates.empty_category
    chan_ok = rng.random(n) >= rates.empty_channel
    ts_ok = (kind != 0) | (rng.random(n) >= rates.empty_ts)
    dirty = rng.random(n) < rates.dirty_account_id
    fmt = _format_codes(rng, n, rates)
    big = np.abs(cents) >= 100_000  # written with a thousands separator
    clean = (kind == 0) & cat_ok & chan_ok & ts_ok & ~dirty & (fmt == 0) & ~big
    rows, n_dup = _duplicate(rng, clean, rates.duplicate_transactions)

    prefix = np.where(is_refund[rows], ord("R"), ord("O")).astype(np.uint8)
    table = pa.table(
        {
            "order_id": _strings(_id_matrix(number[rows], prefix, 9)),
            "account_id": _id_column(ids.account[who[rows]], dirty[rows], rng),
            "ts": _format_times(ts[rows], fmt[rows], ts_ok[rows], with_time=True),
            "amount": _format_amounts(cents[rows]),
            "category": _labels(category[rows], CATEGORIES, cat_ok[rows]),
            "channel": _labels(channel[rows], SALES_CHANNELS, chan_ok[rows]),
        }
    )
    product_ids, n_no_product = _product_column(extra, goods, product, rows)
    table = table.append_column("product_id", product_ids)
    dirt = {
        "rows": table.num_rows,
        "orders": n_orders,
        "duplicates": n_dup,
        "refunds": int(src.size),
        "future": int(n_future),
        "future_year": future_year,
        "empty": {
            "ts": int(n - ts_ok.sum()),
            "category": int(n - cat_ok.sum()),
            "channel": int(n - chan_ok.sum()),
            "product_id": n_no_product,
        },
        "dirty_ids": {"account_id": int(dirty.sum())},
        "thousands_separator": int(np.count_nonzero(big)),
        "date_formats": {"ts": _format_counts(fmt, ts_ok)},
    }
    return table, dirt


def _products_of(
    extra: np.random.Generator, goods: synth_actions.Goods, src: np.ndarray, fut_cat: np.ndarray
) -> np.ndarray:
    """The product of every order, refund (its order's) and far-future row (any product of its
    category), in that order."""
    fut_product = synth_actions.products_in(extra, goods.catalogue, fut_cat)
    return np.concatenate([goods.order_product, goods.order_product[src], fut_product])


def _product_column(
    extra: np.random.Generator, goods: synth_actions.Goods, product: np.ndarray, rows: np.ndarray
) -> tuple[pa.Array, int]:
    """The product ids of the written ``rows`` (``product`` per distinct row), some empty, and
    how many distinct rows have none. Empties only where a row has no copy, so that duplicates
    stay copies of rows without other dirt."""
    n = product.size
    single = np.bincount(rows, minlength=n) == 1
    product_ok = ~single | (extra.random(n) >= synth_actions.ActionDirt().empty_product_id)
    ids = synth_actions.product_ids(goods.catalogue, product[rows], product_ok[rows])
    return ids, int(n - product_ok.sum())


def _order_numbers(rng: np.random.Generator, is_refund: np.ndarray) -> np.ndarray:
    """Order and refund numbers, each rising with time like a database sequence."""
    n, n_refunds = is_refund.size, int(np.count_nonzero(is_refund))
    number = np.empty(n, np.int64)
    first_o, first_r = (int(x) for x in rng.integers(100_000_000, 200_000_000, 2))
    number[~is_refund] = first_o + np.arange(n - n_refunds)
    number[is_refund] = first_r + np.arange(n_refunds)
    return number


def _refunds(
    rng: np.random.Generator, orders: _Orders, params: SynthParams, clock: _Clock
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refunds a few days after some orders, all or part of the amount back: the refunded
    orders (indices), the delays (seconds) and the refunds (negative cents)."""
    src = np.flatnonzero(rng.random(orders.ts.size) < params.refund_share)
    delay = (rng.gamma(2.0, 1.5, src.size) * DAY).astype(np.int64) + 3600
    src_ok = orders.ts[src] + delay < clock.horizon
    src, delay = src[src_ok], delay[src_ok]
    part = np.maximum(1, np.rint(orders.cents[src] * rng.uniform(0.2, 0.8, src.size)))
    refund = -np.where(rng.random(src.size) < 0.7, orders.cents[src], part.astype(np.int64))
    return src, delay, refund


def _future_rows(
    rng: np.random.Generator,
    cust: _Customers,
    params: SynthParams,
    rates: DirtRates,
    clock: _Clock,
    n_orders: int,
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Far-future rows, extra orders that a broken till dated decades ahead: their year, and
    per row the customer, the timestamp, when it was entered (where it sits in the export)
    and the cents."""
    n_future = round(rates.future_transactions * n_orders)
    if cust.n >= 1000:
        n_future = max(1, n_future)
    buyers = np.flatnonzero(cust.n_purchases > 0)
    if buyers.size == 0:
        n_future = 0
    future_year = max(2099, clock.end_date.year + 20)
    year_start = (date(future_year, 1, 1) - date(1970, 1, 1)).days * DAY
    fut_cust = buyers[rng.integers(0, max(buyers.size, 1), n_future)]
    fut_ts = year_start + rng.integers(0, 365 * DAY, n_future)
    fut_entered = rng.integers(clock.start, clock.horizon, n_future)
    fut_cents = np.maximum(1, np.rint(rng.gamma(params.p, 1.0 / cust.nu[fut_cust]) * 100.0))
    return future_year, fut_cust, fut_ts, fut_entered, fut_cents


def _web_table(
    rng: np.random.Generator,
    cust: _Customers,
    orders: _Orders,
    ids: _Ids,
    params: SynthParams,
    rates: DirtRates,
    clock: _Clock,
) -> tuple[pa.Table, dict[str, Any]]:
    # one session that ends in each web order of a known visitor...
    web_order = (orders.channel == SALES_CHANNELS.index("web")) & cust.has_visitor[orders.cust]
    conv_cust = orders.cust[web_order]
    conv_end = orders.ts[web_order]
    # ...and browsing from a few weeks before signup to two months after a dropout; people who
    # never buy drift away after a few months
    lo = cust.signup - 4 * WEEK
    hi = _active_until(cust, clock, 8 * WEEK)
    drift = cust.signup + (rng.exponential(12.0, cust.n) * WEEK).astype(np.int64)
    hi = np.where(cust.buyer, hi, np.minimum(clock.horizon, drift))
    rate = params.web_sessions_per_week * cust.engagement * (0.05 + cust.lam)
    counts = rng.poisson(rate * (hi - lo) / WEEK) * cust.has_visitor
    browse_cust, browse_start = _uniform_times(rng, counts, lo, hi)

    n_conv = conv_cust.size
    who = np.concatenate([conv_cust, browse_cust])
    converted = np.arange(who.size) < n_conv
    eng = np.sqrt(cust.engagement[who])
    pages = 1 + rng.poisson(np.where(converted, 2.0 + 5.0 * eng, 2.0 * eng))
    duration = (pages * rng.gamma(2.0, 20.0, who.size)).astype(np.int64) + 5
    started = np.concatenate(
        [conv_end - duration[:n_conv] - rng.integers(0, 120, n_conv), browse_start]
    )
    # content interest is personal: some read blogs, some watch videos, few read whitepapers
    blog_p = rng.beta(1.0, 8.0, cust.n)
    video_p = rng.beta(1.0, 6.0, cust.n)
    paper_p = rng.beta(0.5, 12.0, cust.n)
    blogs = rng.binomial(pages, blog_p[who])
    videos = rng.binomial(pages - blogs, video_p[who])
    papers = rng.binomial(pages - blogs - videos, paper_p[who])

    order = np.argsort(started, kind="stable")
    who, started, converted = who[order], started[order], converted[order]
    pages, duration = pages[order], duration[order]
    blogs, videos, papers = blogs[order], videos[order], papers[order]
    n = who.size

    pages_ok = rng.random(n) >= rates.empty_page_views
    dirty = rng.random(n) < rates.dirty_visitor_id
    fmt = _format_codes(rng, n, rates)
    clean = pages_ok & ~dirty & (fmt == 0)
    rows, n_dup = _duplicate(rng, clean, rates.duplicate_web_sessions)
    first_s = int(rng.integers(1_000_000_000, 2_000_000_000))
    table = pa.table(
        {
            "session_id": _strings(_id_matrix(first_s + np.arange(n)[rows], ord("S"), 10)),
            "visitor_id": _id_column(ids.visitor[who[rows]], dirty[rows], rng),
            "started_at": _format_times(started[rows], fmt[rows], with_time=True),
            "page_views": pa.array(pages[rows], pa.int64(), mask=~pages_ok[rows]),
            "duration_sec": pa.array(duration[rows], pa.int64()),
            "blogs_viewed": pa.array(blogs[rows], pa.int64()),
            "videos_viewed": pa.array(videos[rows], pa.int64()),
            "whitepapers_viewed": pa.array(papers[rows], pa.int64()),
            "converted": pa.array(converted[rows], pa.bool_()),
        }
    )
    dirt = {
        "rows": table.num_rows,
        "duplicates": n_dup,
        "converted": int(n_conv),
        "empty": {"page_views": int(n - pages_ok.sum())},
        "dirty_ids": {"visitor_id": int(dirty.sum())},
        "date_formats": {"started_at": _format_counts(fmt)},
    }
    return table, dirt


def _product_table(
    rng: np.random.Generator,
    cust: _Customers,
    ids: _Ids,
    params: SynthParams,
    rates: DirtRates,
    clock: _Clock,
) -> tuple[pa.Table, dict[str, Any]]:
    first_day = cust.signup // DAY
    last_day = (_active_until(cust, clock, 2 * WEEK) - 1) // DAY
    # account holders who never buy try the product for a month or so
    trial = first_day + rng.exponential(30.0, cust.n).astype(np.int64)
    last_day = np.where(cust.buyer, last_day, np.minimum(last_day, trial))
    n_days = np.maximum(last_day - first_day + 1, 1)
    lam_ref = params.r / params.alpha
    prob = params.product_active_day_prob * cust.engagement * np.sqrt(cust.lam / lam_ref)
    prob = np.clip(np.where(cust.buyer, prob, 0.3 * prob), 0.0, 0.9)
    counts = rng.binomial(n_days, prob) * cust.has_account
    owner = np.repeat(np.arange(cust.n), counts)
    day = first_day[owner] + (rng.random(owner.size) * n_days[owner]).astype(np.int64)
    if params.usage_fade_weeks > 0:
        owner, day = _faded(rng, cust, owner, day, params.usage_fade_weeks)
    # one row per account and day, ordered by day like a daily export
    base = int(first_day.min())
    key = np.sort((day - base) * cust.n + owner)
    # np.unique hashes in numpy 2.4, ten times slower than sorting and dropping repeats here
    keep = np.ones(key.size, bool)
    keep[1:] = key[1:] != key[:-1]
    key = key[keep]
    owner = key % cust.n
    day = key // cust.n + base
    del key, keep
    n = owner.size
    feature_p = rng.beta(2.0, 4.0, cust.n)
    features = 1 + rng.binomial(6, feature_p[owner])
    sessions = 1 + rng.poisson(0.7 * cust.engagement[owner])
    time_sec = (sessions * rng.gamma(2.0, 300.0, n)).astype(np.int64) + 30

    fmt = _format_codes(rng, n, rates)
    rows, n_dup = _duplicate(rng, fmt == 0, rates.duplicate_product_usage)
    table = pa.table(
        {
            "account_id": _strings(ids.account[owner[rows]]),
            "date": _format_times(day[rows] * DAY, fmt[rows], with_time=False),
            "features_used": pa.array(features[rows], pa.int64()),
            "sessions": pa.array(sessions[rows], pa.int64()),
            "time_sec": pa.array(time_sec[rows], pa.int64()),
        }
    )
    dirt = {
        "rows": table.num_rows,
        "duplicates": n_dup,
        "date_formats": {"date": _format_counts(fmt)},
    }
    return table, dirt


def _faded(
    rng: np.random.Generator, cust: _Customers, owner: np.ndarray, day: np.ndarray, weeks: float
) -> tuple[np.ndarray, np.ndarray]:
    """The days of use kept when use fades before a dropout: a leaver's day ``d`` days before
    her use ends (two weeks after the dropout) is kept with probability d / the fade's days,
    so that use falls in a straight line to nothing."""
    last = np.where(cust.death >= 0, cust.death // DAY + 14, np.iinfo(np.int64).max // 2)
    kept = rng.random(owner.size) < np.clip((last[owner] - day) / (weeks * 7 + 14), 0.0, 1.0)
    return owner[kept], day[kept]


def _interactions_table(
    rng: np.random.Generator,
    cust: _Customers,
    ids: _Ids,
    params: SynthParams,
    rates: DirtRates,
    clock: _Clock,
    complaints: dict[str, np.ndarray] | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """The interactions source; the complaints (customer index, seconds) go into
    ``complaints`` when given, for the subscriptions' hazard."""
    lo = cust.signup
    hi = _active_until(cust, clock, 2 * WEEK)
    rate = params.tickets_per_week * (0.2 + 4.0 * cust.p_drop)
    counts = rng.poisson(rate * (hi - lo) / WEEK)
    base_cust, base_ts = _uniform_times(rng, counts, lo, hi)
    # customers about to drop out call more often in their last weeks
    dying = cust.death >= 0
    burst = rng.poisson(params.tickets_before_dropout * dying)
    burst_lo = np.maximum(cust.signup, cust.death - 4 * WEEK)
    burst_cust, burst_ts = _uniform_times(rng, burst, burst_lo, np.maximum(cust.death, burst_lo))
    who = np.concatenate([base_cust, burst_cust])
    opened = np.concatenate([base_ts, burst_ts])
    late = np.arange(who.size) >= base_cust.size
    order = np.argsort(opened, kind="stable")
    who, opened, late = who[order], opened[order], late[order]
    n = who.size

    complaint_p = np.where(late, 0.5, np.minimum(0.7, 0.15 + 0.6 * cust.p_drop[who]))
    u = rng.random(n)
    kind = np.where(u < complaint_p, 1, np.where(u < complaint_p + 0.2, 2, 0)).astype(np.int8)
    if complaints is not None:
        complaints["cust"], complaints["ts"] = who[kind == 1], opened[kind == 1]
    hours = np.round(rng.gamma(1.5, 10.0, n) * np.where(kind == 2, 2.0, 1.0) + 0.1, 1)
    closed_at = opened + (hours * 3600).astype(np.int64)
    is_open = (closed_at >= clock.horizon) | (
        (opened >= clock.horizon - 10 * DAY) & (rng.random(n) < 0.7)
    )
    resolved = rng.random(n) < 0.9
    dirty = rng.random(n) < rates.dirty_crm_id
    fmt = _format_codes(rng, n, rates)
    first_t = int(rng.integers(10_000_000, 20_000_000))
    table = pa.table(
        {
            "ticket_id": _strings(_id_matrix(first_t + np.arange(n), ord("T"), 8)),
            "crm_id": _id_column(ids.crm[who], dirty, rng),
            "opened_at": _format_times(opened, fmt, with_time=True),
            "kind": _labels(kind, TICKET_KINDS),
            "resolved": pa.array(resolved, pa.bool_(), mask=is_open),
            "resolution_hours": pa.array(hours, pa.float64(), mask=is_open),
        }
    )
    dirt = {
        "rows": n,
        "duplicates": 0,
        "open": int(is_open.sum()),
        "dirty_ids": {"crm_id": int(dirty.sum())},
        "date_formats": {"opened_at": _format_counts(fmt)},
    }
    return table, dirt


def _id_map_table(
    rng: np.random.Generator, cust: _Customers, ids: _Ids, rates: DirtRates
) -> tuple[pa.Table, dict[str, Any]]:
    dirty = rng.random(cust.n) < rates.dirty_crm_id
    table = pa.table(
        {
            "crm_id": _id_column(ids.crm, dirty, rng),
            "visitor_id": _strings(ids.visitor, valid=cust.has_visitor),
            "account_id": _strings(ids.account, valid=cust.has_account),
        }
    )
    dirt = {
        "rows": cust.n,
        "duplicates": 0,
        "dirty_ids": {"crm_id": int(dirty.sum())},
        "without_visitor_id": int(cust.n - cust.has_visitor.sum()),
        "without_account_id": int(cust.n - cust.has_account.sum()),
    }
    return table, dirt


def _truth_table(cust: _Customers, ids: _Ids, params: SynthParams) -> pa.Table:
    def stamp(seconds: np.ndarray) -> pa.Array:
        return pa.array(seconds.astype("datetime64[s]"), pa.timestamp("s"), mask=seconds < 0)

    return pa.table(
        {
            "crm_id": _strings(ids.crm),
            "lambda_per_week": pa.array(cust.lam),
            "p_dropout": pa.array(cust.p_drop),
            "spend_nu": pa.array(cust.nu),
            "expected_spend": pa.array(params.p / cust.nu),
            "first_purchase": stamp(cust.first),
            "death_time": stamp(cust.death),
            "alive_at_end": pa.array(cust.alive),
            "n_purchases": pa.array(cust.n_purchases),
            "total_spend": pa.array(cust.total_cents / 100.0),
        }
    )


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


class _Writer:
    """Writes tables into a (temporary) folder as CSV, Parquet or tables of one DuckDB file.

    Writing runs in one background thread while the next table is generated (Arrow's writers
    release the GIL), which hides most of the writing time on two cores. At most one write is
    pending, so at most two tables are held in memory.
    """

    def __init__(self, folder: Path, fmt: Format) -> None:
        self.folder = folder
        self.fmt = fmt
        self.files: dict[str, str] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-writer")
        self._pending: Future[None] | None = None
        self._con: Any = None
        if fmt == "duckdb":
            import duckdb

            self._con = duckdb.connect(str(folder / "company.duckdb"))

    def write(self, name: str, table: pa.Table) -> None:
        self.wait()
        self.files[name] = "company.duckdb" if self.fmt == "duckdb" else f"{name}.{self.fmt}"
        self._pending = self._pool.submit(self._write, name, table)

    def _write(self, name: str, table: pa.Table) -> None:
        if self.fmt == "csv":
            pa_csv.write_csv(table, self.folder / self.files[name])
        elif self.fmt == "parquet":
            pq.write_table(table, self.folder / self.files[name])
        else:
            self._con.register("synth_arrow", table)
            self._con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM synth_arrow')
            self._con.unregister("synth_arrow")

    def wait(self) -> None:
        """Wait for the pending write; re-raises its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
            if self._con is not None:
                self._con.close()
                self._con = None


_SOURCE_SECTIONS = (
    # (section, source name, kind, id namespace, timestamp column)
    ("crm", "crm_customers", "customers", "crm_id", None),
    ("transactions", "transactions", "transactions", "account_id", "ts"),
    ("web", "web_sessions", "web_sessions", "visitor_id", "started_at"),
    ("product", "product_usage", "product_usage", "account_id", None),
    ("service", "interactions", "interactions", "crm_id", "opened_at"),
    # the new sources name their columns as custval does (started_at, sent_at...)
    ("subscriptions", "subscriptions", "subscriptions", "account_id", None),
    ("treatments", "treatments", "treatments", "crm_id", None),
)


def _project_toml(fmt: Format, files: Mapping[str, str], seed: int, n: int, as_of: date) -> str:
    def location(name: str) -> str:
        if fmt == "duckdb":
            return f'uri = "duckdb://{files[name]}"\ntable = "{name}"'
        return f'uri = "{files[name]}"'

    lines = [
        f"# custval project generated by `custval synth` (seed {seed}, {n} customers)",
        "# Raw exports with deliberate dirt; truth/ holds the true parameters and counts.",
        f'as_of = "{as_of.isoformat()}"  # the day after the data end: all history is before it',
        'time_unit = "weeks"',
        "",
        "[identity]",
        'map_source = "id_map"',
        'primary = "crm_id"',
    ]
    for section, name, kind, namespace, ts_col in _SOURCE_SECTIONS:
        lines += [
            "",
            f"[sources.{section}]",
            f'kind = "{kind}"',
            location(name),
            f'id_namespace = "{namespace}"',
            f"[sources.{section}.columns]",
            f'customer_id = "{namespace}"',
        ]
        if ts_col:
            lines.append(f'timestamp = "{ts_col}"')
    # the catalogue describes products, not customers: no id namespace
    lines += ["", "[sources.products]", 'kind = "products"', location("products")]
    lines += ["", "[sources.id_map]", 'kind = "id_map"', location("id_map"), ""]
    return "\n".join(lines)


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder into place: one rename when ``out`` is new, else file by file
    (a rename is atomic per file, so no reader sees half a file)."""
    if not out.exists():
        tmp.chmod(0o755)  # mkdtemp makes it private to its owner
        tmp.rename(out)
        return
    for src in sorted(tmp.rglob("*")):
        if src.is_file():
            dest = out / src.relative_to(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            src.replace(dest)
    shutil.rmtree(tmp, ignore_errors=True)


def generate(
    n_customers: int,
    out: str | Path,
    *,
    seed: int = 0,
    fmt: Literal["csv", "parquet", "duckdb"] = "csv",
    end_date: date = date(2025, 12, 31),
    progress: Callable[[str, float], None] | None = None,
    params: SynthParams | None = None,
) -> SynthResult:
    """Generate a sample company with ``n_customers`` customers into the folder ``out``.

    Writes the nine sources (:data:`SOURCE_NAMES`) as ``<name>.csv``, ``<name>.parquet`` or
    tables of ``company.duckdb``; ``custval.toml`` pointing at them (as of ``end_date`` + 1 day,
    time unit weeks); and ``truth/params.json``, ``truth/customers.parquet`` (latent values per
    customer), ``truth/calendar.parquet`` (the planted sales multiplier and signup rate of
    every day), ``truth/dirt.json`` (counts of every planted defect), ``truth/products.json``,
    ``truth/next_products.parquet``, ``truth/subscriptions.parquet`` and
    ``truth/uplift.parquet`` (see :mod:`custval.data.synth_actions`). The model is described in
    the module docstring; about 10 orders per customer, 1M customers in about a minute.

    Everything is written into a temporary folder beside ``out`` first and moved into place at
    the end, so an interrupted run leaves no half-written file; other files already in ``out``
    are left alone. The same ``seed`` gives the same data. ``progress(step, fraction_done)`` is
    called between steps when given (eight step names, fractions from 0.0 to 1.0). ``params``
    changes the population (default :class:`SynthParams`), e.g. a longer history.

    Raises :class:`~custval.errors.CustvalError` for a number of customers outside 1 to
    9,999,999, an unknown format, or an ``out`` that is a file.

    Example
    -------
    >>> result = generate(2000, "sample-company", seed=1, fmt="parquet")  # doctest: +SKIP
    >>> result.rows["transactions"]  # doctest: +SKIP
    19446
    >>> result.config_path.name  # doctest: +SKIP
    'custval.toml'
    """
    n, out = _checked(n_customers, fmt, out)
    report: Progress = progress or (lambda _step, _fraction: None)
    params, rates = params or SynthParams(), DirtRates()
    clock = _Clock.from_end(end_date, params.history_years)
    rng = np.random.default_rng(seed)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        report("customers", 0.0)
        cust = _simulate_customers(rng, n, params, clock)
        written = _write_sources(
            tmp, fmt, rng, cust, seed=seed, params=params, rates=rates, clock=clock, report=report
        )
        files, dirt = written.files, written.dirt
        report("truth", 0.93)
        as_of = end_date + timedelta(days=1)
        _write_truth(tmp / "truth", cust, written, params, rates, clock, (seed, n, as_of))

        report("finishing", 0.97)
        (tmp / "custval.toml").write_text(
            _project_toml(fmt, files, seed, n, as_of), encoding="utf-8"
        )
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report("finishing", 1.0)
    return SynthResult(
        out=out,
        files={name: out / files[name] for name in SOURCE_NAMES},
        rows={name: int(dirt[name]["rows"]) for name in SOURCE_NAMES},
        config_path=out / "custval.toml",
    )


def _write_truth(
    truth: Path,
    cust: _Customers,
    written: Any,
    params: SynthParams,
    rates: DirtRates,
    clock: _Clock,
    run: tuple[int, int, date],
) -> None:
    """``truth/``: the customers' latent values, the calendar, the actions' truth, the
    parameters and the dirt counts (see :func:`generate`); ``run`` is (seed, n, as_of)."""
    seed, n, as_of = run
    truth.mkdir()
    pq.write_table(_truth_table(cust, written.ids, params), truth / "customers.parquet")
    calendar = Calendar.of(clock.start, clock.horizon, params.season)
    calendar.truth(params.signup_trend).to_parquet(truth / "calendar.parquet", index=False)
    actions = synth_actions.ActionParams()
    synth_actions.write_truth(truth, written.goods, written.retention, written.ids, clock, actions)
    meta = _truth_meta(seed, n, as_of, clock, params, rates)
    meta["actions"] = synth_actions.truth_meta(actions, synth_actions.ActionDirt())
    meta["calendar"] = calendar.meta()
    (truth / "params.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (truth / "dirt.json").write_text(json.dumps(written.dirt, indent=2) + "\n", encoding="utf-8")


def _checked(n_customers: Any, fmt: str, out: str | Path) -> tuple[int, Path]:
    """The number of customers and the output folder, checked (see :func:`generate`)."""
    if isinstance(n_customers, bool) or not isinstance(n_customers, int | np.integer):
        raise CustvalError(f"the number of customers must be a whole number, not {n_customers!r}")
    n = int(n_customers)
    if not 1 <= n <= MAX_CUSTOMERS:
        raise CustvalError(f"the number of customers must be 1 to {MAX_CUSTOMERS:,}, not {n:,}")
    if fmt not in ("csv", "parquet", "duckdb"):
        raise CustvalError(f"the format must be csv, parquet or duckdb, not '{fmt}'")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CustvalError(f"'{out}' exists and is not a folder")
    return n, out


@dataclass
class _Written:
    """What :func:`_write_sources` made: the ids, the files and dirt counts by source name, and
    the new sources' simulation for the truth."""

    ids: _Ids
    files: dict[str, str]
    dirt: dict[str, Any]
    goods: synth_actions.Goods
    retention: synth_actions.Retention


def _write_sources(
    tmp: Path,
    fmt: Format,
    rng: np.random.Generator,
    cust: _Customers,
    *,
    seed: int,
    params: SynthParams,
    rates: DirtRates,
    clock: _Clock,
    report: Progress,
) -> _Written:
    """Simulate the orders and the ids, and write the nine sources into ``tmp``.

    The catalogue, the subscriptions and the campaign draw from streams of their own (from
    ``seed`` and 17), never from ``rng``, so the original sources keep their rows."""
    orders = _simulate_orders(rng, cust, params, clock)
    ids = _make_ids(rng, cust.n)
    goods_rng, tx_rng, retention_rng, dirt_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, 17]).spawn(4)
    )
    actions, action_dirt = synth_actions.ActionParams(), synth_actions.ActionDirt()
    segment = _true_segments(cust, params)
    writer = _Writer(tmp, fmt)
    dirt: dict[str, Any] = {"note": _DIRT_NOTE}
    complaints: dict[str, np.ndarray] = {}

    def emit(name: str, built: tuple[pa.Table, dict[str, Any]]) -> None:
        table, dirt[name] = built
        writer.write(name, table)

    try:
        report("crm_customers", 0.08)
        emit("crm_customers", _crm_table(rng, cust, ids, params, rates, segment))
        report("transactions", 0.15)
        goods = synth_actions.simulate_goods(
            goods_rng, cust, orders, segment, clock, actions, params.category_shares
        )
        emit("products", synth_actions.products_table(goods))
        emit(
            "transactions",
            _transactions_table(
                rng, cust, orders, ids, params, rates, clock, goods=goods, extra=tx_rng
            ),
        )
        report("web_sessions", 0.55)
        emit("web_sessions", _web_table(rng, cust, orders, ids, params, rates, clock))
        report("product_usage", 0.68)
        emit("product_usage", _product_table(rng, cust, ids, params, rates, clock))
        report("interactions", 0.80)
        emit("interactions", _interactions_table(rng, cust, ids, params, rates, clock, complaints))
        emit("id_map", _id_map_table(rng, cust, ids, rates))
        retention = synth_actions.simulate_retention(
            retention_rng,
            cust,
            orders,
            goods,
            (complaints["cust"], complaints["ts"]),
            clock,
            actions,
            params.p,
        )
        del orders
        emit(
            "subscriptions",
            synth_actions.subscriptions_table(dirt_rng, retention, ids, clock, action_dirt),
        )
        emit(
            "treatments",
            synth_actions.treatments_table(dirt_rng, retention, ids, clock, actions, action_dirt),
        )
    finally:
        writer.close()
    return _Written(ids, dict(writer.files), dirt, goods, retention)


_DIRT_NOTE = (
    "'rows' is what each file holds, exact duplicates included; every other count is of "
    "distinct rows. Duplicates copy only rows without other dirt (ISO dates, clean ids, no "
    "empty values, amounts under 1,000, no refund or future row), so these counts also hold in "
    "the file, except the ISO date-format counts, which the file exceeds by 'duplicates' (and, "
    "in subscriptions, by 'stale_snapshots': older copies of cancelled subscriptions, written "
    "before the cancellation, clean but for the missing cancelled_at)."
)


def _truth_meta(
    seed: int, n: int, as_of: date, clock: _Clock, params: SynthParams, rates: DirtRates
) -> dict[str, Any]:
    """What ``truth/params.json`` says: the model, the settings and the truth columns."""
    return {
        "model": "BG/NBD purchases (dropout possible after the first purchase: MBG/NBD) "
        "with Gamma-Gamma spend",
        "time_unit": "weeks",
        "currency": "currency units, rounded to cents",
        "seed": seed,
        "n_customers": n,
        "end_date": clock.end_date.isoformat(),
        "as_of": as_of.isoformat(),
        "history_start": clock.start_date.isoformat(),
        "population": asdict(params),
        "dirt_rates": asdict(rates),
        "truth_columns": {
            "lambda_per_week": "purchase rate while alive, per week",
            "p_dropout": "probability of dropping out after each purchase",
            "spend_nu": "Gamma-Gamma rate of the customer's order values",
            "expected_spend": "p / spend_nu: expected order value, currency",
            "first_purchase": "first order (null: none before as_of)",
            "death_time": "time of the fatal purchase (null: alive at end or never bought)",
            "alive_at_end": "a buyer still purchasing at end_date (false for non-buyers)",
            "n_purchases": "true orders (no refunds, duplicates or future rows)",
            "total_spend": "sum of the true orders' amounts, currency, refunds not netted",
        },
    }
