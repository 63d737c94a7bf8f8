"""Features from behaviour: website sessions, product usage and service interactions.

Counts are zero for a customer with no recorded activity; ratios and means are then null (no
value is invented). Only activity strictly before the as-of date is used.
"""

from __future__ import annotations

from datetime import date

import ibis
import ibis.expr.types as ir

from custval.features._util import cutoff, days_between, safe_ratio

COUNTS = {
    "web_sessions": (
        "website_sessions",
        "website_views",
        "blogs_viewed",
        "videos_viewed",
        "whitepapers_viewed",
        "converted_to_sale",
    ),
    "product_usage": ("product_active_days", "product_features_used"),
    "interactions": ("tickets", "complaints", "incidents"),
}


def web_features(web: ir.Table, as_of: date) -> ir.Table:
    """Website engagement per customer (one row per customer with a session before ``as_of``)."""
    w = web.filter(web.timestamp < cutoff(as_of))
    return w.group_by("customer_id").aggregate(
        website_sessions=w.count(),
        website_views=w.page_views.sum().fill_null(0),
        pages_per_session=w.page_views.mean(),
        blogs_viewed=w.blogs_viewed.sum().fill_null(0),
        videos_viewed=w.videos_viewed.sum().fill_null(0),
        whitepapers_viewed=w.whitepapers_viewed.sum().fill_null(0),
        web_minutes_per_session=w.duration_sec.mean() / 60,
        converted_to_sale=w.converted.cast("int64").sum().fill_null(0),
        web_conversion_rate=w.converted.cast("float64").mean(),
        days_since_last_session=days_between(ibis.date(as_of), w.timestamp.max().date()),
    )


def product_features(usage: ir.Table, as_of: date) -> ir.Table:
    """Product usage per customer (one row per customer with a day of use before ``as_of``).

    Several rows for one customer and day (two accounts, say) are merged first: sessions and
    time are added up, features used is the larger of the two (distinct features may overlap).
    """
    u = usage.filter(usage.date < ibis.date(as_of))
    per_day = u.group_by("customer_id", "date").aggregate(
        features_used=u.features_used.max(), sessions=u.sessions.sum(), time_sec=u.time_sec.sum()
    )
    p = per_day
    return p.group_by("customer_id").aggregate(
        product_active_days=p.count(),
        product_features_used=p.features_used.sum().fill_null(0),
        product_features_used_per_day=p.features_used.mean(),
        avg_sessions_per_day=p.sessions.mean(),
        avg_time_per_session_min=safe_ratio(p.time_sec.sum(), p.sessions.sum()) / 60,
        days_since_last_use=days_between(ibis.date(as_of), p.date.max()),
    )


def service_features(tickets: ir.Table, as_of: date) -> ir.Table:
    """Service interactions per customer (one row per customer with a ticket before ``as_of``).

    Tickets are those opened before ``as_of``; their outcome (resolved, hours to resolve) is as
    the source tells it now, which for a ticket settled after ``as_of`` is later knowledge. A
    source with a resolution timestamp would let this be cut at ``as_of`` too.
    """
    t = tickets.filter(tickets.timestamp < cutoff(as_of))
    return t.group_by("customer_id").aggregate(
        tickets=t.count(),
        complaints=(t.kind == "complaint").cast("int64").sum(),
        incidents=(t.kind == "incident").cast("int64").sum(),
        tickets_resolved_share=t.resolved.cast("float64").mean(),
        mean_resolution_hours=t.resolution_hours.mean(),
        days_since_last_ticket=days_between(ibis.date(as_of), t.timestamp.max().date()),
    )
