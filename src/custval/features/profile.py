"""Features from the customer profile (CRM): age, tenure, plan, region, subscribed services."""

from __future__ import annotations

from datetime import date

import ibis
import ibis.expr.types as ir

from custval.features import catalogue
from custval.features._util import days_between, distinct_values, slug
from custval.features.catalogue import Feature


def _services(customers: ir.Table) -> ir.ArrayValue:
    items = customers.services.split(";").map(lambda s: s.strip().lower())
    return items.filter(lambda s: s != "")


def profile_features(customers: ir.Table, as_of: date) -> tuple[ir.Table, list[Feature]]:
    """One row per customer who signed up before ``as_of`` (or whose signup date is unknown).

    ``customer_age_years`` is the age in whole years at ``as_of`` (a birth date on or after
    ``as_of`` gives null); ``tenure_days`` counts days from signup to ``as_of``; each subscribed
    service becomes a 0/1 column ``service_<name>``.
    """
    end = ibis.date(as_of)
    c = customers.filter(customers.signup_date.isnull() | (customers.signup_date < end))
    services = _services(c)
    names = distinct_values(services.unnest(), exclude=())
    flags = {f"service_{slug(s)}": services.contains(s).fill_null(False).cast("int8") for s in names}
    years = days_between(end, c.birth_date).cast("float64") / 365.25
    table = c.select(
        "customer_id",
        customer_age_years=ibis.ifelse(c.birth_date < end, years.floor(), ibis.null()).cast(
            "int64"
        ),
        tenure_days=days_between(end, c.signup_date),
        region=c.region,
        acquisition_channel=c.acquisition_channel,
        plan=c.plan,
        n_services=services.length().fill_null(0),
        segment_label=c.segment_label.nullif("unknown"),
        **flags,
    )
    specs = [catalogue.service_flag(s, f"service_{slug(s)}") for s in names]
    return table, specs
