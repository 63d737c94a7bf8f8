"""Features from transactions: RFM in two conventions, purchase rhythm, spend trend, product mix
and channel preferences.

BTYD convention (as in Fader, Hardie & Lee 2005 and the lifetimes library): purchases on the same
calendar day are one transaction; ``frequency`` counts repeat purchase days (the first purchase is
not a repeat); ``recency`` runs from the first to the last purchase day and ``T`` from the first
purchase day to the last observed day (the day before the as-of date), both in the project's time
unit (weeks by default);
``monetary_value`` is the mean spend of the repeat purchase days. Refunds are not purchases.

Marketing convention: ``recency_days`` since the last purchase, ``orders`` and ``revenue`` (net of
refunds).

Only transactions strictly before the as-of date are used.
"""

from __future__ import annotations

from datetime import date

import ibis
import ibis.expr.types as ir

from custval.features import catalogue
from custval.features._util import (
    column_names,
    cutoff,
    days_between,
    distinct_values,
    safe_ratio,
)
from custval.features.catalogue import Feature

# months and years are average calendar lengths (365.25 days a year)
UNIT_DAYS = {"days": 1.0, "weeks": 7.0, "months": 365.25 / 12, "years": 365.25}


def rfm_features(
    tx: ir.Table,
    as_of: date,
    *,
    time_unit: str = "weeks",
    trend_window_days: int = 90,
    rhythm: bool = True,
    trend: bool = True,
    one_row_per_order: bool = False,
) -> ir.Table:
    """RFM, and optionally purchase rhythm and spend trend, per customer, from cleaned
    transactions.

    ``tx`` has customer_id, order_id, timestamp, amount and is_refund. Customers without a
    purchase before ``as_of`` have no row. Orders are distinct order ids (an order may span
    several rows, one per line), or rows when ``one_row_per_order`` says that is the same.

    Example
    -------
    >>> rfm_features(tx, date(2025, 1, 1)).select("customer_id", "frequency", "T").head(1)
    ... # doctest: +SKIP
    """
    unit = UNIT_DAYS[time_unit]
    end = ibis.date(as_of)
    past = tx.filter(tx.timestamp < cutoff(as_of))
    buys = past.filter(~past.is_refund)
    per_day = buys.group_by("customer_id", day=buys.timestamp.date()).aggregate(
        spend=buys.amount.sum(),
        orders=buys.count() if one_row_per_order else buys.order_id.nunique(),
    )
    extra: dict[str, ir.Value] = {}
    if rhythm:
        per_day, gaps = _rhythm(per_day)
        extra |= gaps
    d = per_day
    if trend:
        extra |= _trend_sums(d, as_of, trend_window_days)
    a = d.group_by("customer_id").aggregate(
        _first=d.day.min(),
        _last=d.day.max(),
        _days=d.count(),
        _spend=d.spend.sum(),
        _first_spend=d.spend.argmin(d.day),
        orders=d.orders.sum(),
        **extra,
    )
    if trend:
        extra["spend_trend"] = safe_ratio(
            a.spend_recent - a.spend_prior, a.spend_recent + a.spend_prior
        )
    frequency = a._days - 1
    features = a.select(
        "customer_id",
        frequency=frequency,
        recency=days_between(a._last, a._first) / unit,
        # to the last observed day, as in the literature (and lifetimes): a customer whose first
        # purchase is on the day before as_of has T = 0; this reproduces the published CDNOW fits
        T=(days_between(end, a._first) - 1) / unit,
        monetary_value=ibis.ifelse(
            frequency > 0, (a._spend - a._first_spend) / frequency.cast("float64"), 0.0
        ),
        recency_days=days_between(end, a._last),
        orders=a.orders,
        gross_spend=a._spend,
        avg_order_value=safe_ratio(a._spend, a.orders),
        days_since_first_purchase=days_between(end, a._first),
        **{k: (a[k] if k in a.columns else v) for k, v in extra.items()},
    )
    return _with_refunds(features, past)


def _rhythm(per_day: ir.Table) -> tuple[ir.Table, dict[str, ir.Value]]:
    """The purchase days with the ``gap`` in days since the customer's previous one, and the
    per-customer aggregates of the gaps (inter-purchase times)."""
    previous = per_day.day.lag().over(group_by="customer_id", order_by="day")
    per_day = per_day.mutate(gap=days_between(per_day.day, previous))
    g = per_day.gap
    return per_day, {
        "ipt_mean_days": g.mean(),
        "ipt_std_days": g.std(how="sample"),
        "ipt_min_days": g.min().cast("float64"),
        "ipt_max_days": g.max().cast("float64"),
    }


def _trend_sums(d: ir.Table, as_of: date, window_days: int) -> dict[str, ir.Value]:
    """Per-customer spend of the purchase days ``d`` in the last ``window_days`` before
    ``as_of`` and in the window before that."""
    recent_from = ibis.date(as_of) - ibis.interval(days=window_days)
    prior_from = ibis.date(as_of) - ibis.interval(days=2 * window_days)
    prior = (d.day >= prior_from) & (d.day < recent_from)
    return {
        "spend_recent": d.spend.sum(where=d.day >= recent_from).fill_null(0.0),
        "spend_prior": d.spend.sum(where=prior).fill_null(0.0),
    }


def _with_refunds(features: ir.Table, past: ir.Table) -> ir.Table:
    """``features`` (with ``gross_spend``) with each customer's ``refunds``, ``refund_amount``
    and ``revenue`` net of them, from the transactions ``past``."""
    refunds = past.filter(past.is_refund)
    ref = refunds.group_by("customer_id").aggregate(
        refunds=refunds.count(), refund_amount=-refunds.amount.sum()
    )
    joined = features.left_join(ref, "customer_id").drop("customer_id_right")
    return joined.mutate(
        refunds=joined.refunds.fill_null(0),
        refund_amount=joined.refund_amount.fill_null(0.0),
        revenue=joined.gross_spend - joined.refund_amount.fill_null(0.0),
    ).drop("gross_spend")


def mix_features(tx: ir.Table, as_of: date) -> tuple[ir.Table, list[Feature]]:
    """Share of spend per product category and of orders per channel, and the favourite channel.

    Category and channel values are read from the purchases before ``as_of``, so that the columns
    do not depend on later data. Missing values ("unknown") get no share of their own.
    """
    past = tx.filter((tx.timestamp < cutoff(as_of)) & ~tx.is_refund)
    categories = distinct_values(past.category, exclude=("unknown",))
    channels = distinct_values(past.channel, exclude=("unknown",))
    spend_names = column_names("share_spend_", categories)
    channel_names = column_names("share_orders_", channels)
    spend = past.amount.sum()
    n = past.count()
    cols: dict[str, ir.Value] = {}
    specs: list[Feature] = []
    for cat in categories:
        name = spend_names[cat]
        cols[name] = safe_ratio(past.amount.sum(where=past.category == cat).fill_null(0.0), spend)
        specs.append(catalogue.spend_share(cat, name))
    channel_cols = {}
    for ch in channels:
        name = channel_names[ch]
        channel_cols[ch] = name
        cols[name] = safe_ratio(past.channel.isin([ch]).sum(), n)
        specs.append(catalogue.channel_share(ch, name))
    # per-category row counts make n_categories without a COUNT(DISTINCT), which costs as much
    # as all the shares together
    counts = {f"_n_{i}": (past.category == cat).sum() for i, cat in enumerate(categories)}
    mix = past.group_by("customer_id").aggregate(**counts, **cols)
    bought = [(mix[c] > 0).cast("int64") for c in counts]
    mix = mix.mutate(n_categories=sum(bought, ibis.literal(0))).drop(*counts)
    if channel_cols:
        top = ibis.greatest(*[mix[c] for c in channel_cols.values()])
        # alphabetical order of `channels` breaks ties deterministically
        favourite = ibis.cases(
            *[((mix[c] == top) & (top > 0), ch) for ch, c in channel_cols.items()],
            else_=ibis.null("string"),
        )
    else:
        favourite = ibis.null("string")
    mix = mix.mutate(favourite_channel=favourite)
    return mix, specs
