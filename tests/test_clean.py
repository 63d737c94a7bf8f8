"""custval.data.clean on small in-memory tables: every rule of the cleaning policy with the rows
it changed or dropped, and the cleaned table itself."""

from __future__ import annotations

from datetime import date, datetime

import ibis
import pytest

from custval.config import SourceSpec
from custval.data.clean import UNKNOWN, Cleaned, clean_source, stage_typed
from custval.data.contracts import CONTRACTS
from custval.data.sources import working_connection
from tests.factories import raw_table

NOW = datetime(2024, 6, 1)
FUTURE = "future dates (timestamp after 2024-06-01 00:00)"


@pytest.fixture
def con() -> ibis.BaseBackend:
    return working_connection()


def clean(con: ibis.BaseBackend, spec: SourceSpec, columns: dict[str, list]) -> Cleaned:
    raw = raw_table(con, f"raw_{spec.name}", columns)
    return clean_source(con, stage_typed(con, spec, raw, CONTRACTS[spec.kind]), now=NOW)


def rules(cleaned: Cleaned) -> list[tuple[str, int, int]]:
    return [(r.rule, r.changed, r.dropped) for r in cleaned.rules]


def rows(cleaned: Cleaned, *order: str) -> list[dict]:
    return cleaned.table.order_by(list(order)).to_pyarrow().to_pylist()


ORDERS = SourceSpec(
    name="orders",
    kind="transactions",
    uri="orders.csv",
    columns={"customer_id": "account", "timestamp": "ts"},
)


def test_transactions_rule_by_rule(con: ibis.BaseBackend) -> None:
    cleaned = clean(
        con,
        ORDERS,
        {
            "order_id": ["O1", "o2", "O3", "O3", "O4", "O5", "", "O7", "O8", "O9", "O10", "O11"],
            "account": [" a1 ", "A1", "A2", "a2", None, "A3", "A3", "A4", "A4", "A5", "A5", None],
            "ts": [
                "2024-01-05 10:00:00",
                "05.01.2024 11:00",  # not ISO
                "2024/01/06",  # not ISO
                "2024/01/06",  # not ISO; with the row before, a duplicate once normalised
                "2024-01-07",
                "",  # no timestamp
                "2024-01-08",
                "2099-01-01",  # after the moment of cleaning
                "2024-01-09",
                "2024-01-10",
                "2024-01-11",
                "2099-01-01",  # no id and in the future: dropped once, for the id
            ],
            "amount": ["10.00", "1,234.50", "7", "7", "7", "8", "9", "10", "", "-11", "12", "1"],
            "category": [" Books ", "", "home", "Home", "x", "x", "x", "x", "x", None, "x", "x"],
        },
    )
    assert rules(cleaned) == [
        ("ids normalised (customer_id)", 2, 0),  # " a1 ", "a2"
        ("ids normalised (order_id)", 1, 0),  # "o2"
        ("dates in non iso formats parsed (timestamp)", 3, 0),
        ("thousands separators removed (amount)", 1, 0),
        ("missing set to unknown (category)", 2, 0),  # "" and null
        ("rows without customer_id", 0, 2),
        ("rows without order_id", 0, 1),
        ("rows without timestamp", 0, 1),
        ("rows without amount", 0, 1),
        (FUTURE, 0, 1),
        ("negative amounts flagged as refunds", 1, 0),
        ("duplicate rows", 0, 1),
    ]
    assert all(r.source == "orders" for r in cleaned.rules)
    # nothing is lost silently: the rows out are the rows in less every drop
    assert (cleaned.rows_in, cleaned.rows_out) == (12, 5)
    assert cleaned.rows_out == cleaned.rows_in - sum(r.dropped for r in cleaned.rules)
    assert cleaned.one_row_per_order is True
    assert (cleaned.kind, cleaned.unlinked_rows, cleaned.unlinked_ids) == ("transactions", 0, 0)
    assert rows(cleaned, "order_id") == [
        {
            "customer_id": "A1",
            "order_id": "O1",
            "timestamp": datetime(2024, 1, 5, 10),
            "amount": 10.0,
            "category": "books",
            "channel": None,  # a category the source lacks stays empty
            "product_id": None,  # nor does a product
            "is_refund": False,
        },
        {
            "customer_id": "A5",
            "order_id": "O10",
            "timestamp": datetime(2024, 1, 11),
            "amount": 12.0,
            "category": "x",
            "channel": None,
            "product_id": None,  # nor does a product
            "is_refund": False,
        },
        {
            "customer_id": "A1",
            "order_id": "O2",
            "timestamp": datetime(2024, 1, 5, 11),
            "amount": 1234.5,
            "category": UNKNOWN,
            "channel": None,
            "product_id": None,  # nor does a product
            "is_refund": False,
        },
        {
            "customer_id": "A2",
            "order_id": "O3",
            "timestamp": datetime(2024, 1, 6),
            "amount": 7.0,
            "category": "home",
            "channel": None,
            "product_id": None,  # nor does a product
            "is_refund": False,
        },
        {
            "customer_id": "A5",
            "order_id": "O9",
            "timestamp": datetime(2024, 1, 10),
            "amount": -11.0,  # a refund is kept, flagged
            "category": UNKNOWN,
            "channel": None,
            "product_id": None,  # nor does a product
            "is_refund": True,
        },
    ]


def test_without_order_ids_identical_rows_are_two_purchases(con: ibis.BaseBackend) -> None:
    spec = SourceSpec(name="tills", kind="transactions", uri="tills.csv")
    cleaned = clean(
        con,
        spec,
        {
            "customer_id": ["C1", "C1", "c1", "C2"],
            "timestamp": ["2024-01-05"] * 4,
            "amount": ["5", "5", "5", "7"],
        },
    )
    assert ("duplicate rows", 0, 0) in rules(cleaned)
    assert not any(r.rule == "rows without order_id" for r in cleaned.rules)
    assert (cleaned.rows_in, cleaned.rows_out, cleaned.one_row_per_order) == (4, 4, True)
    assert [(r["customer_id"], r["amount"]) for r in rows(cleaned, "customer_id")] == [
        ("C1", 5.0),
        ("C1", 5.0),
        ("C1", 5.0),
        ("C2", 7.0),
    ]


def test_an_order_on_two_rows_is_not_one_row_per_order(con: ibis.BaseBackend) -> None:
    cleaned = clean(
        con,
        ORDERS,
        {
            "order_id": ["O1", "O1", "O2"],
            "account": ["A1", "A1", "A2"],
            "ts": ["2024-01-05"] * 3,
            "amount": ["5", "6", "7"],  # two products of order O1: not duplicates
        },
    )
    assert ("duplicate rows", 0, 0) in rules(cleaned)
    assert (cleaned.rows_out, cleaned.one_row_per_order) == (3, False)


def test_customers_future_attributes_categories_and_one_profile_each(
    con: ibis.BaseBackend,
) -> None:
    spec = SourceSpec(name="crm", kind="customers", uri="crm.csv")
    cleaned = clean(
        con,
        spec,
        {
            "customer_id": ["C1", "c1", "C2", "C3", "C4"],
            "signup_date": ["2023-01-01", "2023-01-01", "2099-01-01", "15.12.2023", ""],
            "birth_date": ["1990-05-05", "1990-05-05", "1980-01-01", "2030-01-01", None],
            "region": ["North", "South", "", " east ", None],
            "segment_label": ["VIP", "VIP", "", "  ", None],
        },
    )
    assert rules(cleaned) == [
        ("ids normalised (customer_id)", 1, 0),
        ("dates in non iso formats parsed (signup_date)", 1, 0),
        ("dates in non iso formats parsed (birth_date)", 0, 0),
        ("missing set to unknown (region)", 2, 0),
        ("rows without customer_id", 0, 0),
        # a date in the future is impossible: as an attribute only the value goes
        ("future dates set to empty (signup_date)", 1, 0),
        ("future dates set to empty (birth_date)", 1, 0),
        # C1 twice, in two regions: one profile, the first in the order of the columns
        ("duplicate or conflicting rows", 0, 1),
    ]
    assert (cleaned.rows_in, cleaned.rows_out, cleaned.one_row_per_order) == (5, 4, None)
    absent = {"acquisition_channel": None, "plan": None, "services": None}
    assert rows(cleaned, "customer_id") == [
        {
            "customer_id": "C1",
            "signup_date": date(2023, 1, 1),
            "birth_date": date(1990, 5, 5),
            "region": "north",
            "segment_label": "VIP",  # text keeps its case
            **absent,
        },
        {
            "customer_id": "C2",
            "signup_date": None,
            "birth_date": date(1980, 1, 1),
            "region": UNKNOWN,
            "segment_label": None,
            **absent,
        },
        {
            "customer_id": "C3",
            "signup_date": date(2023, 12, 15),
            "birth_date": None,
            "region": "east",
            "segment_label": None,  # blank text stays missing, nothing is invented
            **absent,
        },
        {
            "customer_id": "C4",
            "signup_date": None,
            "birth_date": None,
            "region": UNKNOWN,
            "segment_label": None,
            **absent,
        },
    ]


def test_missing_measures_and_flags_stay_missing(con: ibis.BaseBackend) -> None:
    spec = SourceSpec(name="web", kind="web_sessions", uri="web.csv")
    cleaned = clean(
        con,
        spec,
        {
            "customer_id": ["V1", "V2", "V3", "V3", "V4"],
            "timestamp": ["2024-01-01 10:00:00", "2024-01-02", "2024-01-03", "2024-01-03", ""],
            "page_views": ["3", "", None, None, "1"],
            "converted": ["yes", " ", "no", "no", "1"],
        },
    )
    assert rules(cleaned) == [
        ("ids normalised (customer_id)", 0, 0),
        ("dates in non iso formats parsed (timestamp)", 0, 0),
        ("missing left empty (page_views)", 3, 0),
        ("missing left empty (converted)", 1, 0),
        ("rows without customer_id", 0, 0),
        ("rows without timestamp", 0, 1),
        (FUTURE, 0, 0),
        ("duplicate rows", 0, 1),
    ]
    got = [
        (r["customer_id"], r["page_views"], r["converted"]) for r in rows(cleaned, "customer_id")
    ]
    assert got == [("V1", 3.0, True), ("V2", None, None), ("V3", None, False)]
    assert (cleaned.rows_in, cleaned.rows_out) == (5, 3)
