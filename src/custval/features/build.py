"""The feature table: every feature group joined on ``customer_id`` at one as-of date.

The customers are those known before the as-of date: everyone in the profile source who signed
up before it, and everyone with a purchase before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import ibis.expr.types as ir

from custval.features import catalogue
from custval.features._util import cutoff
from custval.features.behaviour import (
    COUNTS,
    product_features,
    service_features,
    web_features,
)
from custval.features.catalogue import Feature
from custval.features.profile import profile_features
from custval.features.transactions import mix_features, rfm_features

TX_COUNTS = (
    "orders",
    "revenue",
    "refunds",
    "refund_amount",
    "spend_recent",
    "spend_prior",
    "n_categories",
)


@dataclass
class FeatureTable:
    """The feature expression (lazy, on the working connection) and its catalogue."""

    table: ir.Table
    catalogue: list[Feature]
    as_of: date

    def to_pyarrow(self):
        return self.table.order_by("customer_id").to_pyarrow()


def build_features(
    tables: dict[str, ir.Table],
    as_of: date,
    *,
    time_unit: str = "weeks",
    trend_window_days: int = 90,
) -> FeatureTable:
    """Join every feature group available from ``tables`` (cleaned, linked, keyed by kind).

    Example
    -------
    >>> ft = build_features({"transactions": tx, "customers": crm}, date(2025, 1, 1))
    ... # doctest: +SKIP
    >>> ft.table.columns[:5]
    ('customer_id', 'customer_age_years', 'tenure_days', 'region', 'acquisition_channel')
    """
    parts: list[tuple[ir.Table, dict[str, ir.Value]]] = []
    extra: list[Feature] = []
    ids: list[ir.Table] = []
    if "customers" in tables:
        prof, specs = profile_features(tables["customers"], as_of)
        parts.append((prof, {}))
        extra += specs
        ids.append(prof.select("customer_id"))
    if "transactions" in tables:
        tx = tables["transactions"]
        rfm = rfm_features(tx, as_of, time_unit=time_unit, trend_window_days=trend_window_days)
        mix, specs = mix_features(tx, as_of)
        parts.append((rfm, {c: 0 for c in TX_COUNTS if c != "n_categories"}))
        parts.append((mix, {"n_categories": 0}))
        extra += specs
        buyers = tx.filter((tx.timestamp < cutoff(as_of)) & ~tx.is_refund)
        ids.append(buyers.select("customer_id").distinct())
    groups = {
        "web_sessions": web_features,
        "product_usage": product_features,
        "interactions": service_features,
    }
    for kind, fn in groups.items():
        if kind in tables:
            parts.append((fn(tables[kind], as_of), dict.fromkeys(COUNTS[kind], 0)))
    if not ids:
        raise ValueError("features need a customers or a transactions table")
    spine = ids[0]
    for other in ids[1:]:
        spine = spine.union(other, distinct=True)
    table = spine
    fills: dict[str, object] = {}
    for part, zero in parts:
        table = table.left_join(part, "customer_id").drop("customer_id_right")
        fills.update(zero)
    table = table.mutate(**{c: table[c].fill_null(v) for c, v in fills.items()})

    static = [catalogue.resolve(f, time_unit) for f in catalogue.STATIC]
    known = {f.name: f for f in [*static, *extra]}
    cat = [known[c] for c in table.columns if c in known]
    return FeatureTable(table, cat, as_of)
