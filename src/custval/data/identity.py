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

from collections.abc import Callable
from dataclasses import dataclass

import ibis
import ibis.expr.types as ir

from custval.config import SourceSpec
from custval.data import engine
from custval.data.clean import RuleResult
from custval.data.contracts import Column, coerce
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
    # the same normalisation as every source's ids (blank ids are null), or the join would miss
    typed = raw.select(
        **{ns: coerce(raw[spec.column(ns)], Column(ns, "id"), ()) for ns in namespaces}
    )
    # one pass: the distinct rows, each with how many raw rows it stands for
    grouped = typed.group_by(namespaces).aggregate(_n=typed.count())
    staged = engine.materialise(con, f"_idmap_{spec.name}", grouped)
    no_primary = staged[primary].isnull()
    counts = (
        staged.aggregate(
            rows=staged._n.sum(),
            no_primary=staged._n.sum(where=no_primary),
            kept=(~no_primary).cast("int64").sum(),
        )
        .to_pyarrow()
        .to_pylist()[0]
    )
    table = staged.filter(staged[primary].notnull()).drop("_n")
    rows, dropped = int(counts["rows"] or 0), int(counts["no_primary"] or 0)
    rules = [
        RuleResult(spec.name, f"rows without {primary}", dropped=dropped),
        RuleResult(spec.name, "duplicate rows", dropped=rows - dropped - int(counts["kept"] or 0)),
    ]
    idmap = IdMap(table, primary, namespaces, rules)
    for ns in namespaces:
        if ns == primary:
            continue
        pairs = idmap.pairs(ns)
        # pairs are distinct, so an id on two rows is an id of two customers
        conflicts = (
            pairs.group_by("_linked_id")
            .aggregate(customers=pairs.count())
            .filter(lambda t: t.customers > 1)
        )
        n = int(conflicts.count().to_pyarrow().as_py())
        if n:
            first = conflicts.order_by("_linked_id").limit(MAX_EXAMPLES).select("_linked_id")
            shown = pairs.semi_join(first, "_linked_id")
            rows = (
                shown.group_by("_linked_id")
                .aggregate(ids=shown.customer_id.collect())
                .order_by("_linked_id")
                .to_pyarrow()
                .to_pylist()
            )
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


def linker(
    name: str, namespace: str | None, idmap: IdMap | None
) -> Callable[[ir.Table], ir.Table] | None:
    """How to give a cleaned source's rows the customer's primary id, or None when nothing needs
    linking (no id map, or the source is keyed by the primary namespace already).

    The returned function keeps every row: ``customer_id`` becomes the primary id, or null where
    the map does not know the row's id; ``_source_id`` keeps the row's own id, so that cleaning
    can count the unmatched rows and ids in the same pass that materialises the table.
    """
    if idmap is None or namespace in (None, idmap.primary):
        return None
    if namespace not in idmap.namespaces:
        raise IdentityError(
            f"id_namespace '{namespace}' is not a column of the id map (it has "
            + ", ".join(idmap.namespaces)
            + ")",
            source=name,
        )
    pairs = idmap.pairs(namespace)

    def attach(table: ir.Table) -> ir.Table:
        own = table.rename(_source_id="customer_id")
        joined = own.left_join(pairs, own._source_id == pairs._linked_id)
        rest = [c for c in table.columns if c != "customer_id"]
        return joined.select(joined.customer_id, *rest, _source_id=joined._source_id)

    return attach


def unlinked_rule(name: str, namespace: str, rows: int, ids: int) -> RuleResult:
    """The count of rows dropped because the id map does not know their id."""
    return RuleResult(
        name, f"rows whose {namespace} is not in the id map ({ids} distinct ids)", dropped=rows
    )
