"""The feature table: every feature group joined on ``customer_id`` at one as-of date.

The customers are those known before the as-of date: everyone in the profile source who signed
up before it, and everyone with a purchase before it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.parquet as pq

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
from custval.features.subscriptions import FILLS, offer_features, subscription_features
from custval.features.transactions import mix_features, rfm_features

# what a customer without purchases has: no orders, no money (ints are counts, floats money)
TX_ZEROS: dict[str, int | float] = {
    "orders": 0,
    "refunds": 0,
    "revenue": 0.0,
    "refund_amount": 0.0,
    "spend_recent": 0.0,
    "spend_prior": 0.0,
}


@dataclass
class FeatureTable:
    """The feature expression (lazy, on the working connection) and its catalogue; ``file``,
    when the engine wrote the table out slice by slice: its Parquet file, in customer-id
    order (no sort of a table hundreds of columns wide)."""

    table: ir.Table
    catalogue: list[Feature]
    as_of: date
    file: Path | None = None

    def to_pyarrow(self) -> pa.Table:
        """The table sorted by customer_id, in this process."""
        if self.file is not None:
            return pq.read_table(self.file)
        return self.table.order_by("customer_id").to_pyarrow()


# the keys are config.FeatureGroup's values; a test keeps the two in step
GROUPS: dict[str, str] = {
    "rfm": "RFM in the BTYD and the marketing conventions (transactions)",
    "rhythm": "inter-purchase time statistics (transactions; needs rfm)",
    "trend": "spend in the recent window against the one before (transactions; needs rfm)",
    "mix": "product-category shares, channel shares, favourite channel (transactions)",
    "profile": "age, tenure, plan, region, services (customers)",
    "web": "website engagement (web_sessions)",
    "product": "product usage (product_usage)",
    "service": "service tickets (interactions)",
    "subscription": "subscribed, weeks subscribed, plan and monthly fee (subscriptions)",
    "offers": "retention offers received and weeks since the last (treatments)",
}


def build_features(
    tables: dict[str, ir.Table],
    as_of: date,
    *,
    time_unit: str = "weeks",
    trend_window_days: int = 90,
    groups: Iterable[str] | None = None,
    one_row_per_order: bool = False,
) -> FeatureTable:
    """Join the feature ``groups`` (default: all, see :data:`GROUPS`) that ``tables`` (cleaned,
    linked, keyed by kind) allow. ``one_row_per_order`` says the transactions hold no order on
    two rows (cleaning checks it), so orders can be counted as rows.

    Example
    -------
    >>> ft = build_features({"transactions": tx, "customers": crm}, date(2025, 1, 1))
    ... # doctest: +SKIP
    >>> ft.table.columns[:5]
    ('customer_id', 'customer_age_years', 'tenure_days', 'region', 'acquisition_channel')
    """
    chosen = set(GROUPS if groups is None else groups)
    unknown = chosen - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown feature groups {sorted(unknown)}; known: {list(GROUPS)}")
    parts: list[tuple[ir.Table, dict[str, object]]] = []
    extra: list[Feature] = []
    ids: list[ir.Table] = []
    if "customers" in tables:
        # the profile source also says who the customers are, chosen or not
        prof, specs = profile_features(tables["customers"], as_of)
        ids.append(prof)
        if "profile" in chosen:
            parts.append((prof, {}))
            extra += specs
    if "transactions" in tables:
        tx_parts, specs, buyers = _transaction_parts(
            tables["transactions"],
            as_of,
            chosen,
            time_unit=time_unit,
            trend_window_days=trend_window_days,
            one_row_per_order=one_row_per_order,
        )
        parts += tx_parts
        extra += specs
        ids.append(buyers)
    behaviour = {
        "web": ("web_sessions", web_features),
        "product": ("product_usage", product_features),
        "service": ("interactions", service_features),
    }
    for group, (kind, fn) in behaviour.items():
        if kind in tables and group in chosen:
            parts.append((fn(tables[kind], as_of), dict.fromkeys(COUNTS[kind], 0)))
    actions = {
        "subscription": ("subscriptions", subscription_features),
        "offers": ("treatments", offer_features),
    }
    for group, (kind, fn) in actions.items():
        if kind in tables and group in chosen:
            parts.append((fn(tables[kind], as_of), FILLS[kind]))
    if not ids:
        raise ValueError("features need a customers or a transactions table")
    table = _joined(ids, parts)
    static = [catalogue.resolve(f, time_unit) for f in catalogue.STATIC]
    known = {f.name: f for f in [*static, *extra]}
    cat = [known[c] for c in table.columns if c in known]
    return FeatureTable(table, cat, as_of)


def _transaction_parts(
    tx: ir.Table,
    as_of: date,
    chosen: set[str],
    *,
    time_unit: str,
    trend_window_days: int,
    one_row_per_order: bool,
) -> tuple[list[tuple[ir.Table, dict[str, object]]], list[Feature], ir.Table]:
    """The chosen transaction groups as (table, fill for customers without a row) parts,
    their catalogue entries, and the table of the buyers (customer_id)."""
    parts: list[tuple[ir.Table, dict[str, object]]] = []
    specs: list[Feature] = []
    if "rfm" in chosen:
        rfm = rfm_features(
            tx,
            as_of,
            time_unit=time_unit,
            trend_window_days=trend_window_days,
            rhythm="rhythm" in chosen,
            trend="trend" in chosen,
            one_row_per_order=one_row_per_order,
        )
        zero = {c: v for c, v in TX_ZEROS.items() if c in rfm.columns}
        parts.append((rfm, zero))
    if "mix" in chosen:
        mix, specs = mix_features(tx, as_of)
        parts.append((mix, {"n_categories": 0}))
    # rfm and mix have one row per buyer already
    if "rfm" in chosen:
        return parts, specs, rfm
    if "mix" in chosen:
        return parts, specs, mix
    buyers = tx.filter((tx.timestamp < cutoff(as_of)) & ~tx.is_refund)
    return parts, specs, buyers.select("customer_id").distinct()


def _joined(ids: list[ir.Table], parts: list[tuple[ir.Table, dict[str, object]]]) -> ir.Table:
    """Every customer of ``ids`` with the columns of every part, a part's fill where the
    customer has no row in it."""
    fills: dict[str, object] = {}
    if len(ids) == 1 and any(ids[0] is part for part, _ in parts):
        # one source of customers that is itself a feature part: it is the spine, no join
        table = ids[0]
    else:
        # a part that names the customers and joins in too would be computed twice: keep it
        cached = {id(t): t.cache() for t in ids if any(t is part for part, _ in parts)}
        parts = [(cached.get(id(part), part), zero) for part, zero in parts]
        ids = [cached.get(id(t), t) for t in ids]
        table = ids[0].select("customer_id")
        for other in ids[1:]:
            table = table.union(other.select("customer_id"), distinct=True)
    for part, zero in parts:
        if part is not table:
            table = table.left_join(part, "customer_id").drop("customer_id_right")
        fills.update(zero)
    # counts are whole numbers, also where they were summed from float measures
    return table.mutate(
        **{
            c: table[c].fill_null(v).cast("int64") if isinstance(v, int) else table[c].fill_null(v)
            for c, v in fills.items()
        }
    )
