"""Features from subscriptions and from a campaign's treatment log, and the cancellation label.

Only what is known before the as-of date is used: a subscription started before it, cancelled
only when the cancellation lies before it (a later cancellation is not yet known, so the
subscription counts as active), offers sent before it.
"""

from __future__ import annotations

from datetime import date

import ibis
import ibis.expr.types as ir

from custval.features._util import cutoff, days_between

#: what a customer without a row has: no subscription, no fee, no offer
FILLS: dict[str, dict[str, object]] = {
    "subscriptions": {
        "subscribed": 0,
        "subscription_weeks": 0.0,
        "monthly_fee": 0.0,
        "subscription_plan": "none",
    },
    "treatments": {"offers_received": 0},
}


def subscription_features(subscriptions: ir.Table, as_of: date) -> ir.Table:
    """Per customer with a subscription started before ``as_of``: ``subscribed`` (1 when one
    is active at ``as_of``), ``subscription_weeks`` (weeks subscribed before ``as_of``, all
    subscriptions together), ``subscription_plan`` (the plan of the latest one started, active
    or not) and ``monthly_fee`` (the fees of those active at ``as_of``)."""
    cut = cutoff(as_of)
    s = subscriptions.filter(subscriptions.started_at < cut)
    ended = s.cancelled_at.notnull() & (s.cancelled_at < cut)
    active = ~ended
    until = ibis.ifelse(ended, s.cancelled_at, cut)
    days = days_between(until.date(), s.started_at.date())
    return s.group_by("customer_id").aggregate(
        subscribed=active.cast("int64").max(),
        subscription_weeks=days.sum().cast("float64") / 7.0,
        subscription_plan=s.plan.argmax(s.started_at),
        monthly_fee=ibis.ifelse(active, s.monthly_fee.fill_null(0.0), 0.0).sum(),
    )


def offer_features(treatments: ir.Table, as_of: date) -> ir.Table:
    """Per customer contacted before ``as_of`` (group treatment; a held-out customer received
    nothing): ``offers_received`` and ``weeks_since_last_offer``."""
    t = treatments.filter(
        (treatments.sent_at < cutoff(as_of)) & (treatments["group"] == "treatment")
    )
    return t.group_by("customer_id").aggregate(
        offers_received=t.count(),
        weeks_since_last_offer=days_between(ibis.date(as_of), t.sent_at.max().date()) / 7.0,
    )


def cancelled_between(subscriptions: ir.Table, start: date, end: date) -> ir.Table:
    """The churn label: one row per customer subscribed at ``start`` (a subscription started
    before it and not cancelled before it), ``cancelled`` 1 when one of those subscriptions
    was cancelled in ``[start, end)`` and none stayed active, else 0.

    Example
    -------
    >>> labels = cancelled_between(tables["subscriptions"], as_of, as_of + timedelta(weeks=13))
    ... # doctest: +SKIP
    """
    lo, hi = cutoff(start), cutoff(end)
    s = subscriptions.filter(
        (subscriptions.started_at < lo)
        & (subscriptions.cancelled_at.isnull() | (subscriptions.cancelled_at >= lo))
    )
    stays = s.cancelled_at.isnull() | (s.cancelled_at >= hi)
    return s.group_by("customer_id").aggregate(
        cancelled=1 - stays.cast("int64").max(),
    )
