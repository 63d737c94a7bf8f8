"""The feature table of one customer from a running state: the twin of the batch feature code.

A customer's state (:mod:`custval.flows.realtime` keeps it in the store, one row per customer)
holds what the feature groups need, in parts that JSON can carry:

- ``buys``: one bucket per purchase day (spend, the day's order ids), the purchases' rows and
  spend per category, rows per channel, the refunds' count and amount. Buckets, not running
  means: a late purchase lands in its own day, and the trend's windows slide with the as-of
  date.
- ``web``: counts and sums of the web sessions (sums of the values present and how many were).
- ``use``: one bucket per day of product use (features used, sessions, seconds).
- ``profile``, ``tickets``, ``subs``, ``offers``: the batch sources' own rows or sums; no event
  changes them, the as-of date does (tenure, weeks subscribed).

:func:`features_at` turns a state into the feature row at an as-of date after every record it
holds: the same definitions as :mod:`custval.features.build` (RFM in both conventions, rhythm,
trend, mix, profile, web, product, service, subscription, offers), the same values to 1e-9
(tested against the batch code on random events). The ``add_*`` functions apply one event;
each is commutative, so events may arrive in any order.

Days are whole days since 1970-01-01 (``epoch days``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from custval.features._util import column_names

__all__ = [
    "EPOCH",
    "Levels",
    "add_purchase",
    "add_refund",
    "add_usage",
    "add_web",
    "day_of",
    "features_at",
    "known_customer",
    "last_day",
]

EPOCH = date(1970, 1, 1)
UNIT_DAYS = {"days": 1.0, "weeks": 7.0, "months": 365.25 / 12, "years": 365.25}
#: the category that names no level (cleaning's fill for a missing value)
UNKNOWN = "unknown"

State = dict[str, Any]
Row = dict[str, Any]


def day_of(d: date) -> int:
    """``d`` in epoch days."""
    return (d - EPOCH).days


def _date(day: int) -> date:
    return EPOCH + timedelta(days=day)


@dataclass
class Levels:
    """The levels the batch table makes columns of (every customer's, not one's): product
    categories, sales channels, subscribed services; sorted, as :mod:`custval.features` reads
    them, so that two levels with one slug get the same ``_2`` suffix."""

    categories: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)

    def spend_columns(self) -> dict[str, str]:
        return column_names("share_spend_", self.categories)

    def channel_columns(self) -> dict[str, str]:
        return column_names("share_orders_", self.channels)

    def service_columns(self) -> dict[str, str]:
        return column_names("service_", self.services)


# ---- events ---------------------------------------------------------------------------------


def add_purchase(
    state: State,
    day: int,
    amount: float,
    order_id: str,
    category: str = UNKNOWN,
    channel: str = UNKNOWN,
) -> None:
    """One purchase row into ``state['buys']``: its day's bucket (spend, the order counted once
    per day as the batch counts distinct order ids), its category's rows and spend, its
    channel's rows."""
    buys = _part(state, "buys", _empty_buys)
    days = buys["days"]
    i = _bisect(days, day)
    if i == len(days) or days[i] != day:
        days.insert(i, day)
        buys["spend"].insert(i, 0.0)
        buys["orders"].insert(i, [])
    buys["spend"][i] += amount
    if order_id not in buys["orders"][i]:
        buys["orders"][i].append(order_id)
    buys["rows"] += 1
    rows, spend = buys["cat_rows"], buys["cat_spend"]
    rows[category] = rows.get(category, 0) + 1
    spend[category] = spend.get(category, 0.0) + amount
    buys["chans"][channel] = buys["chans"].get(channel, 0) + 1


def add_refund(state: State, amount: float) -> None:
    """One refund (``amount`` > 0, the money given back) into ``state['buys']``."""
    buys = _part(state, "buys", _empty_buys)
    buys["refunds"] += 1
    buys["refund_amount"] += amount


def add_web(state: State, day: int, values: Row) -> None:
    """One web session (page_views, duration_sec, blogs_viewed, videos_viewed,
    whitepapers_viewed, converted; each may be None) into ``state['web']``."""
    web = _part(state, "web", _empty_web)
    web["n"] += 1
    for key, name in _WEB_SUMS.items():
        value = values.get(name)
        if value is not None:
            web[key] += float(value)
            web[f"{key}_n"] += 1
    web["last"] = day if web["last"] is None else max(web["last"], day)


def add_usage(state: State, day: int, values: Row) -> None:
    """One row of product use (features_used, sessions, time_sec; each may be None) into its
    day's bucket: features used is the day's largest, sessions and seconds add up (as the batch
    merges two rows of one day)."""
    use = _part(state, "use", lambda: {"days": [], "fu": [], "se": [], "ti": []})
    days = use["days"]
    i = _bisect(days, day)
    if i == len(days) or days[i] != day:
        days.insert(i, day)
        for key in ("fu", "se", "ti"):
            use[key].insert(i, None)
    use["fu"][i] = _max(use["fu"][i], values.get("features_used"))
    use["se"][i] = _plus(use["se"][i], values.get("sessions"))
    use["ti"][i] = _plus(use["ti"][i], values.get("time_sec"))


#: the web state's sums and the session's field each adds
_WEB_SUMS = {
    "pv": "page_views",
    "dur": "duration_sec",
    "blogs": "blogs_viewed",
    "videos": "videos_viewed",
    "white": "whitepapers_viewed",
    "conv": "converted",
}


def copy_part(value: Any) -> Any:
    """A copy of one part of a state, to change without touching the original: the lists and
    maps of the parts one level deep (what the ``add_*`` functions change), faster than a
    generic deep copy."""
    if isinstance(value, dict):
        return {
            k: (
                [list(x) if isinstance(x, list) else x for x in v]
                if isinstance(v, list)
                else dict(v)
                if isinstance(v, dict)
                else v
            )
            for k, v in value.items()
        }
    return value


def _part(state: State, key: str, empty: Any) -> State:
    """The state's part ``key``, made empty first when the customer has none."""
    if state.get(key) is None:
        state[key] = empty()
    return state[key]  # type: ignore[no-any-return]


def _empty_buys() -> State:
    return {
        "days": [],
        "spend": [],
        "orders": [],
        "rows": 0,
        "cat_rows": {},
        "cat_spend": {},
        "chans": {},
        "refunds": 0,
        "refund_amount": 0.0,
    }


def _empty_web() -> State:
    web: State = {"n": 0, "last": None}
    for key in _WEB_SUMS:
        web[key] = 0.0
        web[f"{key}_n"] = 0
    return web


def _bisect(days: list[int], day: int) -> int:
    lo, hi = 0, len(days)
    while lo < hi:
        mid = (lo + hi) // 2
        if days[mid] < day:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _max(a: float | None, b: float | None) -> float | None:
    if b is None:
        return a
    return float(b) if a is None else max(a, float(b))


def _plus(a: float | None, b: float | None) -> float | None:
    if b is None:
        return a
    return float(b) if a is None else a + float(b)


# ---- who the customer is --------------------------------------------------------------------


def known_customer(state: State) -> bool:
    """Whether the batch table has a row for this customer: a profile, or a purchase."""
    return state.get("profile") is not None or bool((state.get("buys") or {}).get("days"))


def last_day(state: State) -> int | None:
    """The last day any record of the state falls on (features need an as-of date after it)."""
    found = [
        *(state.get("buys") or {}).get("days", [])[-1:],
        *(state.get("use") or {}).get("days", [])[-1:],
        (state.get("web") or {}).get("last"),
        (state.get("tickets") or {}).get("last"),
        (state.get("offers") or {}).get("last"),
        *(s["start"] for s in state.get("subs") or []),
        *(s["end"] for s in state.get("subs") or [] if s["end"] is not None),
    ]
    days = [d for d in found if d is not None]
    return max(days) if days else None


# ---- features -------------------------------------------------------------------------------


def features_at(
    state: State,
    as_of: date,
    *,
    kinds: Iterable[str],
    groups: Iterable[str],
    levels: Levels,
    time_unit: str = "weeks",
    trend_window_days: int = 90,
) -> Row:
    """The customer's feature row at ``as_of`` (after every record of ``state``), as
    :func:`custval.features.build.build_features` computes it for the same records: the
    ``groups`` that the project's source ``kinds`` allow, the level columns of ``levels``."""
    chosen, present = set(groups), set(kinds)
    end = day_of(as_of)
    row: Row = {}
    if "customers" in present and "profile" in chosen:
        row |= _profile(state.get("profile"), as_of, levels)
    if "transactions" in present:
        row |= _transactions(state.get("buys"), end, chosen, levels, time_unit, trend_window_days)
    if "web_sessions" in present and "web" in chosen:
        row |= _web(state.get("web"), end)
    if "product_usage" in present and "product" in chosen:
        row |= _product(state.get("use"), end)
    if "interactions" in present and "service" in chosen:
        row |= _service(state.get("tickets"), end)
    if "subscriptions" in present and "subscription" in chosen:
        row |= _subscription(state.get("subs"), end)
    if "treatments" in present and "offers" in chosen:
        row |= _offers(state.get("offers"), end)
    return row


def _profile(profile: Row | None, as_of: date, levels: Levels) -> Row:
    """features.profile: age, tenure, the profile's categories, a 0/1 column per service."""
    flags = levels.service_columns()
    if profile is None:  # a buyer the profile source does not know: its columns are empty
        keys = ("customer_age_years", "tenure_days", "region", "acquisition_channel", "plan")
        return dict.fromkeys([*keys, "n_services", "segment_label", *flags.values()])
    birth = None if profile.get("birth") is None else _date(profile["birth"])
    age = None
    if birth is not None and birth < as_of:
        before = (as_of.month * 100 + as_of.day) < (birth.month * 100 + birth.day)
        age = as_of.year - birth.year - int(before)
    signup = profile.get("signup")
    items = _services(profile.get("services"))
    row: Row = {
        "customer_age_years": age,
        "tenure_days": None if signup is None else day_of(as_of) - signup,
        "region": profile.get("region"),
        "acquisition_channel": profile.get("acquisition_channel"),
        "plan": profile.get("plan"),
        "segment_label": profile.get("segment_label"),
    }
    row |= {col: int(name in items) for name, col in flags.items()}
    row["n_services"] = sum(int(name in items) for name in flags)
    return row


def _services(text: str | None) -> set[str]:
    if text is None:
        return set()
    return {s.strip().lower() for s in text.split(";") if s.strip()}


def _transactions(
    buys: State | None,
    end: int,
    chosen: set[str],
    levels: Levels,
    time_unit: str,
    window: int,
) -> Row:
    row: Row = {}
    bought = buys is not None and bool(buys["days"])
    if "rfm" in chosen:
        if bought:
            row |= _rfm(buys, end, chosen, time_unit, window)  # type: ignore[arg-type]
        else:
            row |= _no_rfm(chosen)
    if "mix" in chosen:
        row |= _mix(buys if bought else None, levels)
    return row


def _rfm(buys: State, end: int, chosen: set[str], time_unit: str, window: int) -> Row:
    """features.transactions.rfm_features for a buyer: both RFM conventions, the rhythm of the
    purchase days, the spend trend and the refunds."""
    unit = UNIT_DAYS[time_unit]
    days, spend = buys["days"], buys["spend"]
    first, last, n = days[0], days[-1], len(days)
    total = math.fsum(spend)
    orders = sum(len(o) for o in buys["orders"])
    frequency = n - 1
    row: Row = {
        "frequency": frequency,
        "recency": (last - first) / unit,
        "T": (end - first - 1) / unit,
        "monetary_value": (total - spend[0]) / frequency if frequency > 0 else 0.0,
        "recency_days": end - last,
        "orders": orders,
        "avg_order_value": total / orders if orders else None,
        "days_since_first_purchase": end - first,
    }
    if "rhythm" in chosen:
        row |= _rhythm(days)
    if "trend" in chosen:
        recent = math.fsum(s for d, s in zip(days, spend, strict=True) if d >= end - window)
        prior = math.fsum(
            s for d, s in zip(days, spend, strict=True) if end - 2 * window <= d < end - window
        )
        row["spend_recent"], row["spend_prior"] = recent, prior
        both = recent + prior
        row["spend_trend"] = None if both == 0 else (recent - prior) / both
    row["refunds"] = buys["refunds"]
    row["refund_amount"] = buys["refund_amount"]
    row["revenue"] = total - buys["refund_amount"]
    return row


def _rhythm(days: list[int]) -> Row:
    gaps = [b - a for a, b in itertools.pairwise(days)]
    if not gaps:
        return dict.fromkeys(("ipt_mean_days", "ipt_std_days", "ipt_min_days", "ipt_max_days"))
    mean = math.fsum(gaps) / len(gaps)
    std = None
    if len(gaps) > 1:
        std = math.sqrt(math.fsum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1))
    return {
        "ipt_mean_days": mean,
        "ipt_std_days": std,
        "ipt_min_days": float(min(gaps)),
        "ipt_max_days": float(max(gaps)),
    }


def _no_rfm(chosen: set[str]) -> Row:
    """What the batch table has for a customer without a purchase: no orders and no money,
    the rest empty (build.TX_ZEROS)."""
    row: Row = dict.fromkeys(
        (
            "frequency",
            "recency",
            "T",
            "monetary_value",
            "recency_days",
            "avg_order_value",
            "days_since_first_purchase",
        )
    )
    row |= {"orders": 0, "refunds": 0, "revenue": 0.0, "refund_amount": 0.0}
    if "rhythm" in chosen:
        row |= dict.fromkeys(("ipt_mean_days", "ipt_std_days", "ipt_min_days", "ipt_max_days"))
    if "trend" in chosen:
        row |= {"spend_recent": 0.0, "spend_prior": 0.0, "spend_trend": None}
    return row


def _mix(buys: State | None, levels: Levels) -> Row:
    """features.transactions.mix_features: shares of spend per category and of rows per
    channel, the categories bought, the favourite channel (ties alphabetical)."""
    spend_cols, channel_cols = levels.spend_columns(), levels.channel_columns()
    if buys is None:
        row: Row = dict.fromkeys([*spend_cols.values(), *channel_cols.values()])
        return row | {"n_categories": 0, "favourite_channel": None}
    cat_rows, cat_spend = buys["cat_rows"], buys["cat_spend"]
    chans, rows = buys["chans"], buys["rows"]
    total = math.fsum(cat_spend.values())
    row = {}
    for cat, col in spend_cols.items():
        row[col] = None if total == 0 else cat_spend.get(cat, 0.0) / total
    row |= {col: chans.get(ch, 0) / rows if rows else None for ch, col in channel_cols.items()}
    # a customer's levels are among everyone's: counted and compared on their own
    row["n_categories"] = sum(1 for c, n in cat_rows.items() if c != UNKNOWN and n > 0)
    own = {ch: n for ch, n in chans.items() if ch != UNKNOWN and n > 0}
    top = max(own.values(), default=0)
    row["favourite_channel"] = min((ch for ch, n in own.items() if n == top), default=None)
    return row


def _web(web: State | None, end: int) -> Row:
    """features.behaviour.web_features (counts 0 and means empty without a session)."""
    if web is None or web["n"] == 0:
        counts = ("website_sessions", "website_views", "blogs_viewed", "videos_viewed")
        row: Row = dict.fromkeys((*counts, "whitepapers_viewed", "converted_to_sale"), 0)
        means = ("pages_per_session", "web_minutes_per_session", "web_conversion_rate")
        return row | dict.fromkeys((*means, "days_since_last_session"))
    return {
        "website_sessions": web["n"],
        "website_views": _count(web["pv"]),
        "pages_per_session": _mean(web, "pv"),
        "blogs_viewed": _count(web["blogs"]),
        "videos_viewed": _count(web["videos"]),
        "whitepapers_viewed": _count(web["white"]),
        "web_minutes_per_session": None if web["dur_n"] == 0 else _mean(web, "dur") / 60,
        "converted_to_sale": _count(web["conv"]),
        "web_conversion_rate": _mean(web, "conv"),
        "days_since_last_session": end - web["last"],
    }


def _count(value: float) -> int:
    """A summed measure as the batch table's whole count (its cast rounds half away from 0)."""
    return math.floor(abs(value) + 0.5) * (1 if value >= 0 else -1)


def _mean(part: State, key: str) -> float | None:
    n = part[f"{key}_n"]
    return None if n == 0 else part[key] / n


def _product(use: State | None, end: int) -> Row:
    """features.behaviour.product_features over the days of use."""
    if use is None or not use["days"]:
        row: Row = {"product_active_days": 0, "product_features_used": 0}
        keys = ("product_features_used_per_day", "avg_sessions_per_day")
        return row | dict.fromkeys((*keys, "avg_time_per_session_min", "days_since_last_use"))
    fu = [v for v in use["fu"] if v is not None]
    se = [v for v in use["se"] if v is not None]
    ti = [v for v in use["ti"] if v is not None]
    sessions, seconds = (math.fsum(se) if se else None), (math.fsum(ti) if ti else None)
    per_session = None
    if sessions is not None and sessions != 0 and seconds is not None:
        per_session = seconds / sessions / 60
    return {
        "product_active_days": len(use["days"]),
        "product_features_used": _count(math.fsum(fu)) if fu else 0,
        "product_features_used_per_day": math.fsum(fu) / len(fu) if fu else None,
        "avg_sessions_per_day": sessions / len(se) if se else None,
        "avg_time_per_session_min": per_session,
        "days_since_last_use": end - use["days"][-1],
    }


def _service(tickets: State | None, end: int) -> Row:
    """features.behaviour.service_features from the tickets' counts and sums."""
    if tickets is None:
        row: Row = {"tickets": 0, "complaints": 0, "incidents": 0}
        keys = ("tickets_resolved_share", "mean_resolution_hours", "days_since_last_ticket")
        return row | dict.fromkeys(keys)
    return {
        "tickets": tickets["n"],
        "complaints": tickets["complaints"],
        "incidents": tickets["incidents"],
        "tickets_resolved_share": _mean(tickets, "res"),
        "mean_resolution_hours": _mean(tickets, "hours"),
        "days_since_last_ticket": end - tickets["last"],
    }


def _subscription(subs: list[Row] | None, end: int) -> Row:
    """features.subscriptions.subscription_features; each of ``subs`` has ``at`` (when it
    started, sortable), ``start`` and ``end`` (days; ``end`` None until cancelled), ``plan``
    and ``fee`` (monthly, or None)."""
    if not subs:
        return {
            "subscribed": 0,
            "subscription_weeks": 0.0,
            "monthly_fee": 0.0,
            "subscription_plan": "none",
        }
    active = [s["end"] is None or s["end"] >= end for s in subs]
    days = [(end if a else s["end"]) - s["start"] for s, a in zip(subs, active, strict=True)]
    latest = max(subs, key=lambda s: s["at"])
    return {
        "subscribed": int(any(active)),
        "subscription_weeks": sum(days) / 7.0,
        "subscription_plan": latest["plan"],
        "monthly_fee": math.fsum(
            (s["fee"] or 0.0) if a else 0.0 for s, a in zip(subs, active, strict=True)
        ),
    }


def _offers(offers: State | None, end: int) -> Row:
    """features.subscriptions.offer_features: offers received and weeks since the last."""
    if offers is None or offers["n"] == 0:
        return {"offers_received": 0, "weeks_since_last_offer": None}
    return {"offers_received": offers["n"], "weeks_since_last_offer": (end - offers["last"]) / 7.0}


# ---- every customer's state at once ---------------------------------------------------------

#: each part of the state: the SQL that makes it, one JSON document per customer, from the
#: cleaned table of its kind (DuckDB, over Arrow)
_DAY = "date_diff('day', DATE '1970-01-01', CAST({col} AS DATE))"
_PART_SQL = {
    "buys": f"""
        WITH b AS (SELECT * FROM transactions WHERE NOT is_refund),
        per_day AS (
            SELECT customer_id, {_DAY.format(col="timestamp")} AS day, SUM(amount) AS spend,
                   list(DISTINCT order_id ORDER BY order_id) AS orders
            FROM b GROUP BY ALL),
        days AS (
            SELECT customer_id, list(day ORDER BY day) AS days,
                   list(spend ORDER BY day) AS spend, list(orders ORDER BY day) AS orders
            FROM per_day GROUP BY customer_id),
        cats AS (
            SELECT customer_id, SUM(n) AS n, map_from_entries(list((category, n))) AS cat_rows,
                   map_from_entries(list((category, s))) AS cat_spend
            FROM (SELECT customer_id, category, COUNT(*) AS n, SUM(amount) AS s
                  FROM b GROUP BY ALL) GROUP BY customer_id),
        chans AS (
            SELECT customer_id, map_from_entries(list((channel, n))) AS chans
            FROM (SELECT customer_id, channel, COUNT(*) AS n FROM b GROUP BY ALL)
            GROUP BY customer_id),
        refunds AS (
            SELECT customer_id, COUNT(*) AS refunds, -SUM(amount) AS refund_amount
            FROM transactions WHERE is_refund GROUP BY customer_id),
        ids AS (SELECT DISTINCT customer_id FROM transactions)
        SELECT ids.customer_id, to_json({{
            'days': coalesce(days.days, []), 'spend': coalesce(days.spend, []),
            'orders': coalesce(days.orders, []), 'rows': coalesce(cats.n, 0),
            'cat_rows': coalesce(cats.cat_rows, map()),
            'cat_spend': coalesce(cats.cat_spend, map()),
            'chans': coalesce(chans.chans, map()), 'refunds': coalesce(refunds.refunds, 0),
            'refund_amount': coalesce(refunds.refund_amount, 0.0)}}) AS part
        FROM ids LEFT JOIN days USING (customer_id) LEFT JOIN cats USING (customer_id)
        LEFT JOIN chans USING (customer_id) LEFT JOIN refunds USING (customer_id)""",
    "web": f"""
        SELECT customer_id, to_json({{
            'n': COUNT(*), 'last': MAX({_DAY.format(col="timestamp")}),
            'pv': coalesce(SUM(page_views), 0.0), 'pv_n': COUNT(page_views),
            'dur': coalesce(SUM(duration_sec), 0.0), 'dur_n': COUNT(duration_sec),
            'blogs': coalesce(SUM(blogs_viewed), 0.0), 'blogs_n': COUNT(blogs_viewed),
            'videos': coalesce(SUM(videos_viewed), 0.0), 'videos_n': COUNT(videos_viewed),
            'white': coalesce(SUM(whitepapers_viewed), 0.0),
            'white_n': COUNT(whitepapers_viewed),
            'conv': coalesce(SUM(CAST(converted AS DOUBLE)), 0.0), 'conv_n': COUNT(converted)
        }}) AS part FROM web_sessions GROUP BY customer_id""",
    "use": f"""
        SELECT customer_id, to_json({{
            'days': list(day ORDER BY day), 'fu': list(fu ORDER BY day),
            'se': list(se ORDER BY day), 'ti': list(ti ORDER BY day)}}) AS part
        FROM (SELECT customer_id, {_DAY.format(col='"date"')} AS day, MAX(features_used) AS fu,
                     SUM(sessions) AS se, SUM(time_sec) AS ti
              FROM product_usage GROUP BY ALL) GROUP BY customer_id""",
    "profile": f"""
        SELECT customer_id, to_json({{
            'signup': {_DAY.format(col="signup_date")}, 'birth': {_DAY.format(col="birth_date")},
            'region': region, 'acquisition_channel': acquisition_channel, 'plan': plan,
            'services': services, 'segment_label': segment_label}}) AS part
        FROM customers""",
    "tickets": f"""
        SELECT customer_id, to_json({{
            'n': COUNT(*), 'complaints': COUNT(*) FILTER (WHERE kind = 'complaint'),
            'incidents': COUNT(*) FILTER (WHERE kind = 'incident'),
            'res': coalesce(SUM(CAST(resolved AS DOUBLE)), 0.0), 'res_n': COUNT(resolved),
            'hours': coalesce(SUM(resolution_hours), 0.0), 'hours_n': COUNT(resolution_hours),
            'last': MAX({_DAY.format(col="timestamp")})}}) AS part
        FROM interactions GROUP BY customer_id""",
    "subs": f"""
        SELECT customer_id, to_json(list({{
            'at': epoch_us(started_at), 'start': {_DAY.format(col="started_at")},
            'end': {_DAY.format(col="cancelled_at")}, 'plan': plan, 'fee': monthly_fee}}
            ORDER BY started_at)) AS part
        FROM subscriptions GROUP BY customer_id""",
    "offers": f"""
        SELECT customer_id, to_json({{'n': COUNT(*), 'last': MAX({_DAY.format(col="sent_at")})}})
            AS part
        FROM treatments WHERE "group" = 'treatment' GROUP BY customer_id""",
}
#: each part's kind of source
PART_KINDS = {
    "buys": "transactions",
    "web": "web_sessions",
    "use": "product_usage",
    "profile": "customers",
    "tickets": "interactions",
    "subs": "subscriptions",
    "offers": "treatments",
}


def state_parts(tables: dict[str, Any]) -> dict[str, Any]:
    """Every customer's state parts from the cleaned ``tables`` (Arrow, by kind): ``{part:
    Arrow table of customer_id and the part as JSON text}``, computed in DuckDB."""
    import duckdb

    con = duckdb.connect()
    try:
        for kind, table in tables.items():
            con.register(kind, table)
        return {
            part: con.execute(sql).fetch_arrow_table()
            for part, sql in _PART_SQL.items()
            if PART_KINDS[part] in tables
        }
    finally:
        con.close()


def levels_of(tables: dict[str, Any]) -> Levels:
    """The levels of the cleaned ``tables`` (Arrow, by kind) that the batch makes columns of."""
    import duckdb

    con = duckdb.connect()
    try:
        found = Levels()
        if "transactions" in tables:
            con.register("transactions", tables["transactions"])
            for name, col in (("categories", "category"), ("channels", "channel")):
                values = con.execute(
                    f"SELECT DISTINCT {col} FROM transactions WHERE NOT is_refund "
                    f"AND {col} IS NOT NULL AND {col} <> '{UNKNOWN}'"
                ).fetchall()
                setattr(found, name, sorted(v[0] for v in values))
        if "customers" in tables:
            con.register("customers", tables["customers"])
            values = con.execute(
                "SELECT DISTINCT nullif(trim(lower(s)), '') AS s FROM (SELECT "
                "unnest(string_split(services, ';')) AS s FROM customers) WHERE s IS NOT NULL"
            ).fetchall()
            found.services = sorted(v[0] for v in values if v[0] is not None)
        return found
    finally:
        con.close()
