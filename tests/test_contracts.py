"""custval.data.contracts on small in-memory tables: the schema checks (required, mapped and
unknown columns), the per-row checks (unparseable dates, amounts, numbers and booleans, values
below the minimum, blanks) with their exact counts and example rows, and the parsing rules."""

from __future__ import annotations

from datetime import date, datetime

import ibis
import pytest

from custval.config import SourceSpec
from custval.data.clean import stage_typed
from custval.data.contracts import (
    CONTRACTS,
    Column,
    Finding,
    coerce,
    id_map_contract,
    missing_columns,
    raise_for_errors,
    validate_source,
)
from custval.data.sources import working_connection
from custval.errors import ContractError, DataValidationError
from tests.factories import raw_table

TX = CONTRACTS["transactions"]
WEB = CONTRACTS["web_sessions"]


@pytest.fixture
def con() -> ibis.BaseBackend:
    return working_connection()


def orders_spec(**kwargs) -> SourceSpec:
    """A transactions source keyed by ``account``, its time in ``ts``."""
    return SourceSpec(
        name="orders",
        kind="transactions",
        uri="orders.csv",
        columns={"customer_id": "account", "timestamp": "ts"},
        **kwargs,
    )


def found(findings: list[Finding]) -> list[tuple]:
    """(column, severity, problem, count, examples in a stable order) of each finding."""
    return [
        (f.column, f.severity, f.problem, f.count, sorted(f.examples, key=repr)) for f in findings
    ]


# ---- the schema ---------------------------------------------------------------------------------


def test_missing_required_mapped_and_unknown_columns(con: ibis.BaseBackend) -> None:
    spec = SourceSpec(
        name="orders",
        kind="transactions",
        uri="orders.csv",
        columns={"customer_id": "account", "timestamp": "ts", "price": "p", "category": "cat"},
    )
    raw = raw_table(con, "raw", {"account": ["A1"], "when": ["2024-01-05"]})
    findings = missing_columns(spec, raw, TX)
    assert [(f.column, f.severity, f.count) for f in findings] == [
        ("p", "error", 0),
        ("cat", "error", 0),
        ("ts", "error", 0),
        ("amount", "error", 0),
    ]
    unknown, mapped, required_mapped, required = findings
    assert unknown.problem == (
        "the mapping price = 'p' names no column of a transactions source; known names: "
        "amount, category, channel, customer_id, order_id, product_id, timestamp"
    )
    assert mapped.problem == (
        "the column 'cat' (mapped from custval's 'category') is missing; the source has columns "
        "account, when"
    )
    assert mapped.hint == "Fix the mapping, or remove it to go without this column"
    assert required_mapped.problem == (
        "the required column 'ts' (mapped from custval's 'timestamp') is missing; the source has "
        "columns account, when"
    )
    assert required_mapped.hint == (
        'Map it under [sources.orders.columns] in custval.toml, e.g. timestamp = "your_column"'
    )
    # a required column under custval's own name: nothing was mapped
    assert required.problem == (
        "the required column 'amount' is missing; the source has columns account, when"
    )


def test_a_source_with_every_required_column_and_no_optional_one_passes(
    con: ibis.BaseBackend,
) -> None:
    raw = raw_table(con, "raw", {"account": ["A1"], "ts": ["2024-01-05"], "amount": ["3"]})
    assert missing_columns(orders_spec(), raw, TX) == []
    report = validate_source(orders_spec(), raw, TX)
    assert (report.source, report.kind, report.rows) == ("orders", "transactions", 1)
    assert report.columns == ["account", "ts", "amount"]
    assert report.findings == [] and report.errors == []


def test_validation_reports_the_schema_errors_too(con: ibis.BaseBackend) -> None:
    raw = raw_table(con, "raw", {"account": ["A1", "A2"], "ts": ["2024-01-05", "x"]})
    report = validate_source(orders_spec(), raw, TX)
    assert found(report.errors) == [
        (
            "amount",
            "error",
            "the required column 'amount' is missing; the source has columns account, ts",
            0,
            [],
        ),
        (
            "ts",
            "error",
            "1 of 2 rows have a timestamp that matches none of the date formats",
            1,
            [{"account": "A2", "ts": "x"}],
        ),
    ]


def test_an_empty_source_is_an_error(con: ibis.BaseBackend) -> None:
    raw = raw_table(con, "raw", {"account": [], "ts": [], "amount": []})
    report = validate_source(orders_spec(), raw, TX)
    assert report.rows == 0
    assert found(report.findings) == [(None, "error", "the source has no rows", 0, [])]


# ---- rows: dates, amounts and blanks -----------------------------------------------------------


@pytest.fixture
def dirty_orders(con: ibis.BaseBackend) -> ibis.Table:
    return raw_table(
        con,
        "raw",
        {
            "account": ["A1", "A2", " ", None, "A5", "A6", "A7"],
            "ts": [
                "2024-01-05",
                "yesterday",
                "2024-02-30",  # no such day
                "05.01.2024 10:00",
                "",
                "2024/01/05",
                " 2024-01-05 ",
            ],
            "amount": ["10.00", "1,234.50", "ten", "-5", "7", None, "  "],
            "order_id": ["O1", "O2", "O3", "", "O5", "O6", "O7"],
        },
    )


def test_unparseable_values_are_errors_and_blanks_warnings(
    con: ibis.BaseBackend, dirty_orders: ibis.Table
) -> None:
    report = validate_source(orders_spec(), dirty_orders, TX)
    assert report.rows == 7
    blank = "no value in a required column; cleaning drops these rows"
    assert found(report.findings) == [
        # blank ids: the row cannot belong to a customer
        (
            "account",
            "warning",
            f"2 of 7 rows have {blank}",
            2,
            [{"account": " "}, {"account": None}],
        ),
        # an order id is optional, but a row without one where others have it is dropped
        (
            "order_id",
            "warning",
            f"1 of 7 rows have {blank}",
            1,
            [{"account": None, "order_id": ""}],
        ),
        (
            "ts",
            "error",
            "2 of 7 rows have a timestamp that matches none of the date formats",
            2,
            [{"account": " ", "ts": "2024-02-30"}, {"account": "A2", "ts": "yesterday"}],
        ),
        # a blank timestamp is missing, not unparseable
        ("ts", "warning", f"1 of 7 rows have {blank}", 1, [{"account": "A5", "ts": ""}]),
        (
            "amount",
            "error",
            "1 of 7 rows have an amount that is not a number",
            1,
            [{"account": " ", "amount": "ten"}],
        ),
        (
            "amount",
            "warning",
            f"2 of 7 rows have {blank}",
            2,
            [{"account": "A6", "amount": None}, {"account": "A7", "amount": "  "}],
        ),
    ]
    dates = next(f for f in report.errors if f.column == "ts")
    assert dates.hint == "Set date_formats for this source in custval.toml (strptime codes)"
    assert [f.column for f in report.errors] == ["ts", "amount"]


def test_counts_over_the_typed_table_equal_counts_over_the_raw_one(
    con: ibis.BaseBackend, dirty_orders: ibis.Table
) -> None:
    staged = stage_typed(con, orders_spec(), dirty_orders, TX)
    shared = validate_source(orders_spec(), dirty_orders, TX, counts_from=staged.table)
    alone = validate_source(orders_spec(), dirty_orders, TX)
    assert shared.rows == alone.rows == 7
    assert found(shared.findings) == found(alone.findings)
    assert len(shared.findings) == 6


def test_the_source_s_date_formats_replace_the_default_ones(con: ibis.BaseBackend) -> None:
    raw = raw_table(
        con,
        "raw",
        {"account": ["A1", "A2", "A3"], "ts": ["05/01/2024", "2024-01-05", "13/13/2024"]},
    )
    raw = raw.mutate(amount=ibis.literal("1"))
    report = validate_source(orders_spec(date_formats=["%d/%m/%Y"]), raw, TX)
    # ISO text is no longer among the formats
    assert found(report.errors) == [
        (
            "ts",
            "error",
            "2 of 3 rows have a timestamp that matches none of the date formats",
            2,
            [{"account": "A2", "ts": "2024-01-05"}, {"account": "A3", "ts": "13/13/2024"}],
        )
    ]


def test_at_most_five_example_rows(con: ibis.BaseBackend) -> None:
    n = 8
    raw = raw_table(
        con,
        "raw",
        {
            "account": [f"A{i}" for i in range(n)],
            "ts": ["never"] * n,
            "amount": ["1"] * n,
        },
    )
    (finding,) = validate_source(orders_spec(), raw, TX).findings
    assert finding.count == 8 and finding.problem.startswith("8 of 8 rows")
    assert len(finding.examples) == 5
    assert {e["ts"] for e in finding.examples} == {"never"}


# ---- rows: numbers, ranges and booleans --------------------------------------------------------


def test_numbers_ranges_and_booleans(con: ibis.BaseBackend) -> None:
    spec = SourceSpec(name="web", kind="web_sessions", uri="web.csv")
    raw = raw_table(
        con,
        "raw",
        {
            "customer_id": ["V1", "V2", "V3", "V4", "V5", "V6", "V7"],
            "timestamp": ["2024-01-05"] * 7,
            "page_views": ["3", "-1", "many", "", " 4 ", "-2", "0"],
            "converted": ["true", "Yes", " N ", "1", "maybe", "", "0"],
        },
    )
    report = validate_source(spec, raw, WEB)
    # blank measures and flags are allowed (they stay missing); 0 is within the range
    assert found(report.findings) == [
        (
            "page_views",
            "error",
            "1 of 7 rows have a value that is not a number",
            1,
            [{"customer_id": "V3", "page_views": "many"}],
        ),
        (
            "page_views",
            "error",
            "2 of 7 rows have a value below 0",
            2,
            [{"customer_id": "V2", "page_views": "-1"}, {"customer_id": "V6", "page_views": "-2"}],
        ),
        (
            "converted",
            "error",
            "1 of 7 rows have a value that is not true/false/yes/no/1/0",
            1,
            [{"customer_id": "V5", "converted": "maybe"}],
        ),
    ]


def test_the_id_map_needs_a_primary_id_on_every_row_but_not_the_others(
    con: ibis.BaseBackend,
) -> None:
    spec = SourceSpec(name="ids", kind="id_map", uri="ids.csv", columns={"account_id": "acct"})
    contract = id_map_contract(spec, ["crm_id", "account_id"])
    assert contract.key == "crm_id"
    assert [(c.name, c.required, c.values_required) for c in contract.columns] == [
        ("crm_id", True, True),
        ("account_id", True, False),
    ]
    raw = raw_table(con, "raw", {"crm_id": ["C1", "", "C3"], "acct": ["A1", "A2", ""]})
    report = validate_source(spec, raw, contract)
    assert found(report.findings) == [
        (
            "crm_id",
            "warning",
            "1 of 3 rows have no value in a required column; cleaning drops these rows",
            1,
            [{"crm_id": ""}],
        )
    ]
    missing = missing_columns(spec, raw_table(con, "raw2", {"crm_id": ["C1"]}), contract)
    assert [(f.column, f.problem.split(";")[0]) for f in missing] == [
        ("acct", "the required column 'acct' (mapped from custval's 'account_id') is missing")
    ]


# ---- errors -------------------------------------------------------------------------------------


def test_errors_are_raised_together_and_warnings_are_not(
    con: ibis.BaseBackend, dirty_orders: ibis.Table
) -> None:
    report = validate_source(orders_spec(), dirty_orders, TX)
    warnings_only = validate_source(
        orders_spec(),
        raw_table(
            con, "ok", {"account": ["A1", ""], "ts": ["2024-01-05"] * 2, "amount": ["1"] * 2}
        ),
        TX,
    )
    assert warnings_only.errors == [] and len(warnings_only.findings) == 1
    raise_for_errors([warnings_only])  # warnings let the pipeline go on
    with pytest.raises(DataValidationError) as caught:
        raise_for_errors([warnings_only, report])
    err = caught.value
    assert [(e.source, e.column, e.count) for e in err.errors] == [
        ("orders", "ts", 2),
        ("orders", "amount", 1),
    ]
    assert all(isinstance(e, ContractError) for e in err.errors)
    assert str(err).startswith(
        "2 problems in the data: (1) source 'orders', column 'ts': 2 of 7 rows have a timestamp "
        "that matches none of the date formats. Examples: "
    )
    assert "(2) source 'orders', column 'amount': 1 of 7 rows have an amount that is not a " in (
        str(err)
    )
    assert "{account=' ', amount='ten'}" in str(err)


# ---- parsing -------------------------------------------------------------------------------------


def parsed(con: ibis.BaseBackend, values: list, column: Column, formats: tuple = ()) -> list:
    t = ibis.memtable({"v": values})
    return con.to_pyarrow(coerce(t.v, column, formats).name("v")).to_pylist()


def test_parsing_rules(con: ibis.BaseBackend) -> None:
    # ids: trimmed, upper-cased, blanks missing; whole floats (JSON, spreadsheets) lose the ".0"
    assert parsed(con, [" c0042 ", "C0042", "", None], Column("x", "id")) == [
        "C0042",
        "C0042",
        None,
        None,
    ]
    assert parsed(con, [1001.0, 1001.5], Column("x", "id")) == ["1001", "1001.5"]
    # categories are lower-cased, text keeps its case; both trimmed, blanks missing
    assert parsed(con, [" Home ", "", "A b"], Column("x", "category")) == ["home", None, "a b"]
    assert parsed(con, [" Home ", "", "A b"], Column("x", "text")) == ["Home", None, "A b"]
    # amounts and numbers lose thousands separators (with the decimal point, the default); a
    # comma that groups no three digits is no thousands separator: "11,77" is not 1177
    assert parsed(con, ["1,234.50", " 7 ", "-5", "ten"], Column("x", "amount")) == [
        1234.5,
        7.0,
        -5.0,
        None,
    ]
    assert parsed(con, ["1,234", "2.5", "11,77"], Column("x", "number")) == [1234.0, 2.5, None]
    assert parsed(con, ["true", "Yes", " N ", "1", "f", "0", "maybe", ""], Column("x", "bool")) == [
        True,
        True,
        False,
        True,
        False,
        False,
        None,
        None,
    ]
    # every default layout, and text with stray blanks
    defaults = orders_spec().formats
    stamps = [
        "2024-01-05 10:11:12",
        "2024/01/05 10:11",
        "05.01.2024",
        "05/01/2024 10:11",
        "20240105",
    ]
    assert parsed(
        con, [*stamps, " 2024-01-05", "2024-13-01"], Column("x", "timestamp"), defaults
    ) == [
        datetime(2024, 1, 5, 10, 11, 12),
        datetime(2024, 1, 5, 10, 11),
        datetime(2024, 1, 5),
        datetime(2024, 1, 5, 10, 11),
        datetime(2024, 1, 5),
        datetime(2024, 1, 5),
        None,
    ]
    assert parsed(con, ["2024-01-05 23:59:00"], Column("x", "date"), defaults) == [date(2024, 1, 5)]
