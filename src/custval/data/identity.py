"""The customer 360: one ``customer_id`` across sources.

Each source keys its rows by an id of its own namespace (a CRM id, a web visitor id, a product
account id). The id map says which ids belong together. Linking replaces every source's key with
the customer's id in the primary namespace (``identity.primary``, by default ``crm_id``).

Rules, each counted:

- ids in the map are normalised like every other id (trimmed, upper-cased) and duplicate map rows
  are kept once;
- map rows without a primary id cannot link anything and are dropped;
- one customer may hold several ids of a namespace (two accounts, two browsers), but one id may
  not belong to two customers: that is an error that names the ids;
- source rows whose id is not in the map are dropped and counted (rows and distinct ids).
"""

from __future__ import annotations

from dataclasses import dataclass

import ibis
import ibis.expr.types as ir

from custval.config import SourceSpec
from custval.data.clean import RuleResult
from custval.errors import MAX_EXAMPLES, IdentityError


@dataclass
class IdMap:
    """A cleaned id map: a table with one column per namespace, materialised on a connection."""

    table: ir.Table
    primary: str
    namespaces: list[str]
    rules: list[RuleResult]

    def pairs(self, namespace: str) -> ir.Table:
        """Distinct (id in ``namespace``, customer_id) pairs."""
        t = self.table
        return (
            t.filter(t[namespace].notnull())
            .select(_linked_id=t[namespace], customer_id=t[self.primary])
            .distinct()
        )


def clean_id_map(
    con: ibis.BaseBackend, spec: SourceSpec, raw: ir.Table, namespaces: list[str], primary: str
) -> IdMap:
    """Normalise, de-duplicate and check the id map; raise :class:`IdentityError` on conflicts.

    ``namespaces`` are custval's names of the id columns (mapped to the source's own names by
    ``spec.columns``); ``primary`` is one of them.

    Example
    -------
    >>> idmap = clean_id_map(con, spec, raw, ["crm_id", "account_id"], "crm_id")  # doctest: +SKIP
    >>> idmap.pairs("account_id").count().execute()
    4612
    """
    cols = {}
    for ns in namespaces:
        value = raw[spec.column(ns)].cast("string").strip().upper()
        cols[ns] = ibis.ifelse(value == "", ibis.null("string"), value)
    typed = raw.select(**cols)
    counts = typed.aggregate(
        rows=typed.count(), no_primary=typed[primary].isnull().sum()
    ).to_pyarrow().to_pylist()[0]
    kept = typed.filter(typed[primary].notnull()).distinct()
    table = con.create_table(f"_idmap_{spec.name}", kept, temp=True, overwrite=True)
    rows_out = int(table.count().to_pyarrow().as_py())
    rules = [
        RuleResult(spec.name, f"rows without {primary}", dropped=int(counts["no_primary"])),
        RuleResult(
            spec.name,
            "duplicate rows",
            dropped=int(counts["rows"]) - int(counts["no_primary"]) - rows_out,
        ),
    ]
    idmap = IdMap(table, primary, namespaces, rules)
    for ns in namespaces:
        if ns == primary:
            continue
        pairs = idmap.pairs(ns)
        conflicts = (
            pairs.group_by("_linked_id")
            .aggregate(customers=pairs.customer_id.nunique(), ids=pairs.customer_id.collect())
            .filter(lambda t: t.customers > 1)
        )
        n = int(conflicts.count().to_pyarrow().as_py())
        if n:
            rows = conflicts.order_by("_linked_id").limit(MAX_EXAMPLES).to_pyarrow().to_pylist()
            raise IdentityError(
                f"{n} {ns} values are linked to more than one {primary}, so their rows cannot "
                "be given to one customer",
                source=spec.name,
                column=spec.column(ns),
                count=n,
                examples=[
                    {spec.column(ns): r["_linked_id"], primary: ", ".join(sorted(r["ids"]))}
                    for r in rows
                ],
                hint="fix the id map so that each id belongs to one customer",
            )
    return idmap


def link(
    con: ibis.BaseBackend, name: str, table: ir.Table, namespace: str | None, idmap: IdMap | None
) -> tuple[ir.Table, list[RuleResult]]:
    """Give every row of a cleaned source the customer's primary id in ``customer_id``.

    Rows whose id the map does not know are dropped and counted. A source already keyed by the
    primary namespace (or any source when there is no id map) is returned as it is.
    """
    if idmap is None or namespace in (None, idmap.primary):
        return table, []
    if namespace not in idmap.namespaces:
        raise IdentityError(
            f"id_namespace '{namespace}' is not a column of the id map (it has "
            + ", ".join(idmap.namespaces)
            + ")",
            source=name,
        )
    pairs = idmap.pairs(namespace)
    joined = table.rename(_linked_id="customer_id").inner_join(pairs, "_linked_id")
    linked = joined.drop("_linked_id")
    linked = linked.select("customer_id", *[c for c in linked.columns if c != "customer_id"])
    out = con.create_table(f"_linked_{name}", linked, temp=True, overwrite=True)
    unmatched = table.anti_join(pairs, table.customer_id == pairs._linked_id)
    stats = unmatched.aggregate(
        rows=unmatched.count(), ids=unmatched.customer_id.nunique()
    ).to_pyarrow().to_pylist()[0]
    rule = RuleResult(
        name,
        f"rows whose {namespace} is not in the id map ({int(stats['ids'])} distinct ids)",
        dropped=int(stats["rows"]),
    )
    return out, [rule]
