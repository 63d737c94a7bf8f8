"""Features from the customer profile (CRM): age, tenure, plan, region, subscribed services."""

from __future__ import annotations

from datetime import date

import ibis
import ibis.expr.types as ir

from custval.features import catalogue
from custval.features._util import column_names, days_between, distinct_values
from custval.features.catalogue import Feature


def _service_names(customers: ir.Table) -> list[str]:
    items = customers.select(s=customers.services.split(";").unnest())
    return distinct_values(items.s.strip().lower().nullif(""))


def _subscribes(services: ir.StringValue, name: str) -> ir.IntegerValue:
    # ";a;b;" contains ";a;" exactly when a is one of the items; no array lambdas, which
    # DuckDB 2 rejects in the syntax Ibis 12 writes
    padded = ibis.literal(";") + services.lower().re_replace(r"\s*;\s*", ";").strip() + ";"
    return padded.contains(f";{name};").fill_null(False).cast("int8")


def profile_features(customers: ir.Table, as_of: date) -> tuple[ir.Table, list[Feature]]:
    """One row per customer who signed up before ``as_of`` (or whose signup date is unknown).

    The profile is the source's current snapshot: plan, region and services as they are now,
    not as they were at ``as_of`` (a CRM seldom keeps their history).
    ``customer_age_years`` is the age in whole years at ``as_of`` (a birth date on or after
    ``as_of`` gives null); ``tenure_days`` counts days from signup to ``as_of``; each subscribed
    service becomes a 0/1 column ``service_<name>``.
    """
    end = ibis.date(as_of)
    c = customers.filter(customers.signup_date.isnull() | (customers.signup_date < end))
    names = _service_names(c)
    columns = column_names("service_", names)
    flags = {columns[s]: _subscribes(c.services, s) for s in names}
    birth = c.birth_date
    # whole years: the year difference, less one until this year's birthday
    before_birthday = (as_of.month * 100 + as_of.day) < (birth.month() * 100 + birth.day())
    years = as_of.year - birth.year() - before_birthday.cast("int64")
    table = c.select(
        "customer_id",
        customer_age_years=ibis.ifelse(birth < end, years, ibis.null()).cast("int64"),
        tenure_days=days_between(end, c.signup_date),
        region=c.region,
        acquisition_channel=c.acquisition_channel,
        plan=c.plan,
        n_services=sum(flags.values(), ibis.literal(0)).cast("int64"),
        segment_label=c.segment_label,
        **flags,
    )
    specs = [catalogue.service_flag(s, columns[s]) for s in names]
    return table, specs
