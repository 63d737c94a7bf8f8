"""custval.data.identity on small in-memory tables: the id map's cleaning and its counts, an id
linked to two customers, linking a source's rows to the primary id, and the unlinked rows."""

from __future__ import annotations

from datetime import datetime

import ibis
import pytest

from custval.config import SourceSpec
from custval.data.clean import RuleResult, clean_source, stage_typed
from custval.data.contracts import CONTRACTS
from custval.data.identity import IdMap, clean_id_map, linker, unlinked_rule
from custval.data.sources import working_connection
from custval.errors import IdentityError
from tests.factories import raw_table

NAMESPACES = ["crm_id", "account_id", "visitor_id"]
#: the id map's own name for the account ids
MAP = SourceSpec(name="ids", kind="id_map", uri="ids.csv", columns={"account_id": "acct"})


@pytest.fixture
def con() -> ibis.BaseBackend:
    return working_connection()


@pytest.fixture
def idmap(con: ibis.BaseBackend) -> IdMap:
    raw = raw_table(
        con,
        "raw_ids",
        {
            "crm_id": ["C1", " c1 ", "C1", "C2", "", None, "C3"],
            "acct": ["A1", "a1", "A1B", "A2", "A9", "A8", None],
            "visitor_id": ["V1", "v1 ", None, "", "V9", None, "V3"],
        },
    )
    return clean_id_map(con, MAP, raw, NAMESPACES, "crm_id")


def rows_of(table: ibis.Table, *order: str) -> list[dict]:
    return table.order_by(list(order)).to_pyarrow().to_pylist()


def test_the_id_map_is_normalised_deduplicated_and_counted(idmap: IdMap) -> None:
    assert (idmap.primary, idmap.namespaces) == ("crm_id", NAMESPACES)
    # " c1 "/"a1"/"v1 " is C1/A1/V1 once normalised: a duplicate; two rows have no crm_id
    assert idmap.rules == [
        RuleResult("ids", "rows without crm_id", dropped=2),
        RuleResult("ids", "duplicate rows", dropped=1),
    ]
    assert rows_of(idmap.table, "crm_id", "account_id") == [
        {"crm_id": "C1", "account_id": "A1", "visitor_id": "V1"},
        {"crm_id": "C1", "account_id": "A1B", "visitor_id": None},
        {"crm_id": "C2", "account_id": "A2", "visitor_id": None},
        {"crm_id": "C3", "account_id": None, "visitor_id": "V3"},
    ]
    # one customer may hold two accounts; ids without a customer link nothing
    assert rows_of(idmap.pairs("account_id"), "_linked_id") == [
        {"_linked_id": "A1", "customer_id": "C1"},
        {"_linked_id": "A1B", "customer_id": "C1"},
        {"_linked_id": "A2", "customer_id": "C2"},
    ]
    assert rows_of(idmap.pairs("visitor_id"), "_linked_id") == [
        {"_linked_id": "V1", "customer_id": "C1"},
        {"_linked_id": "V3", "customer_id": "C3"},
    ]


def test_an_id_linked_to_two_customers_is_an_error_naming_it(con: ibis.BaseBackend) -> None:
    raw = raw_table(
        con,
        "raw_conflict",
        {
            "crm_id": ["C1", "C2", "C3", "C4", "C5", "C6"],
            # a7 is A7 once normalised; B1 belongs to C4 and C5; C6's A6 is its own
            "acct": ["A7", "a7", "A7", "B1", " b1", "A6"],
        },
    )
    with pytest.raises(IdentityError) as caught:
        clean_id_map(con, MAP, raw, ["crm_id", "account_id"], "crm_id")
    err = caught.value
    assert (err.source, err.column, err.count) == ("ids", "acct", 2)
    assert err.examples == [
        {"acct": "A7", "crm_id": "C1, C2, C3"},
        {"acct": "B1", "crm_id": "C4, C5"},
    ]
    assert str(err) == (
        "source 'ids', column 'acct': 2 account_id values are linked to more than one crm_id, "
        "so their rows cannot be given to one customer. Examples: {acct='A7', crm_id='C1, C2, "
        "C3'}; {acct='B1', crm_id='C4, C5'}. fix the id map so that each id belongs to one "
        "customer."
    )


def test_a_conflict_shows_the_first_five_ids_and_counts_all(con: ibis.BaseBackend) -> None:
    shared = [f"A{i}" for i in range(7)]
    raw = raw_table(
        con,
        "raw_many",
        {"crm_id": [f"C{i}" for i in range(14)], "acct": shared + shared[::-1]},
    )
    with pytest.raises(IdentityError) as caught:
        clean_id_map(con, MAP, raw, ["crm_id", "account_id"], "crm_id")
    assert caught.value.count == 7
    assert [e["acct"] for e in caught.value.examples] == ["A0", "A1", "A2", "A3", "A4"]
    assert caught.value.examples[0]["crm_id"] == "C0, C13"


def test_what_needs_no_linking(idmap: IdMap) -> None:
    assert linker("orders", "account_id", None) is None  # no id map
    assert linker("orders", None, idmap) is None  # no namespace: keyed by customer already
    assert linker("crm", "crm_id", idmap) is None  # the primary namespace
    with pytest.raises(IdentityError) as caught:
        linker("orders", "email", idmap)
    assert str(caught.value) == (
        "source 'orders': id_namespace 'email' is not a column of the id map (it has crm_id, "
        "account_id, visitor_id)."
    )


def test_cleaning_links_rows_to_the_primary_id_and_counts_the_unlinked(
    con: ibis.BaseBackend, idmap: IdMap
) -> None:
    spec = SourceSpec(
        name="orders",
        kind="transactions",
        uri="orders.csv",
        id_namespace="account_id",
        columns={"customer_id": "account"},
    )
    raw = raw_table(
        con,
        "raw_orders",
        {
            "order_id": ["O1", "O2", "O3", "O4", "O5", "O6"],
            "account": ["a1", "A1B", "A2", "Z1", " z1", "A9"],
            "timestamp": ["2024-01-01"] * 6,
            "amount": ["1", "2", "3", "4", "5", "6"],
        },
    )
    attach = linker("orders", "account_id", idmap)
    assert attach is not None
    # on cleaned rows (normalised ids) the function keeps every row: unknown ids get no
    # customer and keep their own id
    clean_ids = raw_table(con, "clean_ids", {"customer_id": ["A1", "A1B", "A2", "Z1", "A9"]})
    attached = rows_of(attach(clean_ids), "_source_id")
    assert [(r["customer_id"], r["_source_id"]) for r in attached] == [
        ("C1", "A1"),
        ("C1", "A1B"),
        ("C2", "A2"),
        (None, "A9"),  # A9 is in the map, but without a customer
        (None, "Z1"),
    ]
    staged = stage_typed(con, spec, raw, CONTRACTS["transactions"])
    cleaned = clean_source(con, staged, now=datetime(2024, 6, 1), link=attach)
    # Z1 (twice, once dirty) and A9 are not linked: 3 rows, 2 distinct ids
    assert (cleaned.rows_in, cleaned.rows_out) == (6, 3)
    assert (cleaned.unlinked_rows, cleaned.unlinked_ids) == (3, 2)
    assert [(r["order_id"], r["customer_id"]) for r in rows_of(cleaned.table, "order_id")] == [
        ("O1", "C1"),
        ("O2", "C1"),
        ("O3", "C2"),
    ]
    assert "_source_id" not in cleaned.table.columns
    # no cleaning rule dropped the unlinked rows: the identity rule does
    assert sum(r.dropped for r in cleaned.rules) == 0
    rule = unlinked_rule("orders", "account_id", cleaned.unlinked_rows, cleaned.unlinked_ids)
    assert rule == RuleResult(
        "orders", "rows whose account_id is not in the id map (2 distinct ids)", dropped=3
    )


def test_customers_known_under_two_ids_get_one_profile(con: ibis.BaseBackend, idmap: IdMap) -> None:
    spec = SourceSpec(
        name="profiles",
        kind="customers",
        uri="profiles.csv",
        id_namespace="account_id",
        columns={"customer_id": "account"},
    )
    raw = raw_table(
        con,
        "raw_profiles",
        {
            "account": ["A1", "A1B", "A2", "Z1"],
            "plan": ["premium", "basic", "free", "basic"],
        },
    )
    staged = stage_typed(con, spec, raw, CONTRACTS["customers"])
    cleaned = clean_source(
        con, staged, now=datetime(2024, 6, 1), link=linker("p", "account_id", idmap)
    )
    # C1's two accounts are one customer: the first row in column order is kept ("basic")
    assert [(r["customer_id"], r["plan"]) for r in rows_of(cleaned.table, "customer_id")] == [
        ("C1", "basic"),
        ("C2", "free"),
    ]
    assert (cleaned.unlinked_rows, cleaned.unlinked_ids, cleaned.rows_out) == (1, 1, 2)
    (dedupe,) = [r for r in cleaned.rules if r.rule == "duplicate or conflicting rows"]
    assert dedupe.dropped == 1
