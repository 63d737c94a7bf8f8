"""The feature catalogue: every feature's name, meaning, unit and source.

Reasons for predictions quote these descriptions, so they are written for a business reader.
Features whose names depend on the data (one share per product category, one flag per
subscribed service) are described by a pattern and added when the feature table is built.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

Role = Literal["feature", "label", "key"]


@dataclass(frozen=True)
class Feature:
    """One column of the feature table."""

    name: str
    description: str
    unit: str
    source: str
    role: Role = "feature"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _f(name: str, description: str, unit: str, source: str, role: Role = "feature") -> Feature:
    return Feature(name, description, unit, source, role)


# Units of the BTYD columns depend on the project's time unit; "{unit}" is filled in.
STATIC: tuple[Feature, ...] = (
    _f("customer_id", "the customer's id in the primary id namespace", "id", "identity", "key"),
    # BTYD convention (Fader, Hardie & Lee): same-day purchases are one transaction
    _f(
        "frequency",
        "repeat purchase days: days with a purchase, less the first",
        "count",
        "transactions",
    ),
    _f("recency", "time from first to last purchase day", "{unit}", "transactions"),
    _f(
        "T",
        "time from first purchase day to the last day before the as-of date",
        "{unit}",
        "transactions",
    ),
    _f(
        "monetary_value",
        "mean spend per repeat purchase day (0 without repeats)",
        "currency",
        "transactions",
    ),
    # marketing convention
    _f("recency_days", "days since the last purchase", "days", "transactions"),
    _f("orders", "orders placed (refunds excluded)", "count", "transactions"),
    _f("revenue", "spend net of refunds", "currency", "transactions"),
    _f("avg_order_value", "mean spend per order, before refunds", "currency", "transactions"),
    _f("refunds", "refund transactions", "count", "transactions"),
    _f("refund_amount", "money refunded", "currency", "transactions"),
    _f(
        "days_since_first_purchase",
        "days from the first purchase to the as-of date",
        "days",
        "transactions",
    ),
    _f("ipt_mean_days", "mean days between purchase days", "days", "transactions"),
    _f("ipt_std_days", "standard deviation of days between purchase days", "days", "transactions"),
    _f("ipt_min_days", "shortest gap between purchase days", "days", "transactions"),
    _f("ipt_max_days", "longest gap between purchase days", "days", "transactions"),
    _f(
        "spend_recent",
        "spend in the trend window before the as-of date",
        "currency",
        "transactions",
    ),
    _f("spend_prior", "spend in the trend window before that", "currency", "transactions"),
    _f(
        "spend_trend",
        "(recent - prior) / (recent + prior): -1 falling to +1 rising",
        "ratio",
        "transactions",
    ),
    _f("n_categories", "distinct product categories bought", "count", "transactions"),
    _f(
        "favourite_channel",
        "channel with the most orders (ties: alphabetical)",
        "category",
        "transactions",
    ),
    # profile
    _f("customer_age_years", "age in whole years at the as-of date", "years", "customers"),
    _f("tenure_days", "days since signup", "days", "customers"),
    _f("region", "region", "category", "customers"),
    _f("acquisition_channel", "how the customer was acquired", "category", "customers"),
    _f("plan", "subscription plan", "category", "customers"),
    _f("n_services", "number of subscribed services", "count", "customers"),
    _f("segment_label", "known segment (where one is recorded)", "category", "customers", "label"),
    # web analytics
    _f("website_sessions", "website sessions", "count", "web_sessions"),
    _f("website_views", "website page views", "count", "web_sessions"),
    _f("pages_per_session", "mean page views per website session", "pages", "web_sessions"),
    _f("blogs_viewed", "blog posts viewed", "count", "web_sessions"),
    _f("videos_viewed", "videos viewed", "count", "web_sessions"),
    _f("whitepapers_viewed", "whitepapers viewed", "count", "web_sessions"),
    _f("web_minutes_per_session", "mean minutes per website session", "minutes", "web_sessions"),
    _f("converted_to_sale", "website sessions that ended in a sale", "count", "web_sessions"),
    _f(
        "web_conversion_rate",
        "share of website sessions that ended in a sale",
        "ratio",
        "web_sessions",
    ),
    _f("days_since_last_session", "days since the last website session", "days", "web_sessions"),
    # product analytics
    _f("product_active_days", "days with product use", "days", "product_usage"),
    _f(
        "product_features_used",
        "product features used, summed over active days",
        "count",
        "product_usage",
    ),
    _f(
        "product_features_used_per_day",
        "mean product features used per active day",
        "count",
        "product_usage",
    ),
    _f("avg_sessions_per_day", "mean product sessions per active day", "sessions", "product_usage"),
    _f("avg_time_per_session_min", "mean minutes per product session", "minutes", "product_usage"),
    _f("days_since_last_use", "days since the last day of product use", "days", "product_usage"),
    # service interactions
    _f("tickets", "service tickets opened", "count", "interactions"),
    _f("complaints", "tickets that were complaints", "count", "interactions"),
    _f("incidents", "tickets that were incidents", "count", "interactions"),
    _f(
        "tickets_resolved_share",
        "share of tickets with a known outcome that were resolved",
        "ratio",
        "interactions",
    ),
    _f("mean_resolution_hours", "mean hours to resolve a ticket", "hours", "interactions"),
    _f("days_since_last_ticket", "days since the last ticket", "days", "interactions"),
    # subscriptions: cancellations after the as-of date are not known yet
    _f(
        "subscribed",
        "has a subscription active at the as-of date (1) or not (0)",
        "flag",
        "subscriptions",
    ),
    _f(
        "subscription_weeks",
        "weeks subscribed before the as-of date, all subscriptions together",
        "weeks",
        "subscriptions",
    ),
    _f(
        "subscription_plan",
        "plan of the latest subscription (none: never subscribed)",
        "category",
        "subscriptions",
    ),
    _f(
        "monthly_fee",
        "monthly fees of the subscriptions active at the as-of date",
        "currency",
        "subscriptions",
    ),
    # campaigns
    _f(
        "offers_received",
        "retention offers sent to the customer (not counting control-group holdouts)",
        "count",
        "treatments",
    ),
    _f("weeks_since_last_offer", "weeks since the last offer sent", "weeks", "treatments"),
)

BY_NAME: dict[str, Feature] = {f.name: f for f in STATIC}


def spend_share(category: str, column: str) -> Feature:
    return Feature(column, f"share of spend on {category}", "ratio", "transactions")


def channel_share(channel: str, column: str) -> Feature:
    return Feature(column, f"share of orders through {channel}", "ratio", "transactions")


def service_flag(service: str, column: str) -> Feature:
    return Feature(column, f"subscribes to {service} (1) or not (0)", "flag", "customers")


def resolve(feature: Feature, time_unit: str) -> Feature:
    """Fill the time unit into a BTYD feature's unit."""
    return replace(feature, unit=feature.unit.format(unit=time_unit))
