"""The products, subscriptions and treatments source kinds: their contracts (values a treatment
group may take, cancellations before starts, negative fees), their cleaning (each rule counted,
one row per product and per subscription), their leak-free features and the cancellation label,
the project file rules, and the generated company run end to end (validation, cleaning counts
equal to truth/dirt.json, features equal to the truth)."""

from __future__ import annotations

from datetime import date, datetime

import ibis
import pandas as pd
import pyarrow.parquet as pq
import pytest

from custval import flows
from custval.config import SourceSpec, load_project, project_from_dict
from custval.data.clean import Cleaned, clean_source, stage_typed
from custval.data.contracts import CONTRACTS, validate_source
from custval.data.sources import working_connection
from custval.errors import ConfigError
from custval.features.build import build_features
from custval.features.subscriptions import (
    cancelled_between,
    offer_features,
    subscription_features,
)
from tests.factories import Companies, planted_dirt, raw_table

NOW = datetime(2024, 6, 1)


@pytest.fixture
def con() -> ibis.BaseBackend:
    return working_connection()


def spec(kind: str, **columns: str) -> SourceSpec:
    return SourceSpec(name=kind, kind=kind, uri=f"{kind}.csv", columns=columns)  # type: ignore[arg-type]


def problems(con: ibis.BaseBackend, kind: str, columns: dict[str, list]) -> list[tuple]:
    report = validate_source(spec(kind), raw_table(con, f"raw_{kind}", columns), CONTRACTS[kind])
    return sorted((f.column, f.severity, f.problem, f.count) for f in report.findings)


def clean(con: ibis.BaseBackend, kind: str, columns: dict[str, list]) -> Cleaned:
    raw = raw_table(con, f"raw_{kind}", columns)
    return clean_source(con, stage_typed(con, spec(kind), raw, CONTRACTS[kind]), now=NOW)


def rules(cleaned: Cleaned) -> dict[str, tuple[int, int]]:
    return {r.rule: (r.changed, r.dropped) for r in cleaned.rules}


# ---- contracts ----------------------------------------------------------------------------------


def test_a_treatment_group_is_treatment_or_control(con: ibis.BaseBackend) -> None:
    found = problems(
        con,
        "treatments",
        {
            "customer_id": ["C1", "C2", "C3", "C4"],
            "sent_at": ["2024-01-05 10:00:00"] * 4,
            "group": [" Treatment", "control", "holdout", ""],
            "cost": ["0.50", "0", "-1", "2"],
        },
    )
    assert found == [
        ("cost", "error", "1 of 4 rows have a value below 0", 1),
        ("group", "error", "1 of 4 rows have a value other than treatment or control", 1),
        ("group", "warning", "1 of 4 rows have no value in a required column; cleaning drops "
         "these rows", 1),
    ]  # fmt: skip


def test_a_cancellation_cannot_precede_its_start(con: ibis.BaseBackend) -> None:
    found = problems(
        con,
        "subscriptions",
        {
            "customer_id": ["A1", "A2", "A3"],
            "started_at": ["2024-01-05 10:00:00", "2024-02-01 00:00:00", "2024/03/01 10:00"],
            "cancelled_at": ["2024-01-04 10:00:00", "", "05.03.2024 10:00"],
            "monthly_fee": ["9.99", "-5", "19.99"],
        },
    )
    assert found == [
        ("cancelled_at", "error", "1 of 3 rows have a cancelled_at before its started_at", 1),
        ("monthly_fee", "error", "1 of 3 rows have a value below 0", 1),
    ]


def test_a_catalogue_has_no_customer(con: ibis.BaseBackend) -> None:
    found = problems(
        con,
        "products",
        {"product_id": ["P1", "", "P3"], "name": ["a", "b", "c"], "price": ["1,299.00", "3", "x"]},
    )
    assert found == [
        ("price", "error", "1 of 3 rows have an amount that is not a number", 1),
        ("product_id", "warning", "1 of 3 rows have no value in a required column; cleaning "
         "drops these rows", 1),
    ]  # fmt: skip


def test_transactions_may_name_their_product(con: ibis.BaseBackend) -> None:
    orders = SourceSpec(
        name="orders",
        kind="transactions",
        uri="orders.csv",
        columns={"customer_id": "account", "timestamp": "ts", "product_id": "sku"},
    )
    raw = raw_table(
        con,
        "raw_orders",
        {"account": ["A1", "A1"], "ts": ["2024-01-05", "2024-01-06"], "amount": ["3", "4"],
         "sku": [" p1 ", ""]},
    )  # fmt: skip
    contract = CONTRACTS["transactions"]
    assert validate_source(orders, raw, contract).findings == []
    cleaned = clean_source(con, stage_typed(con, orders, raw, contract), now=NOW)
    assert rules(cleaned)["ids normalised (product_id)"] == (1, 0)
    got = cleaned.table.order_by("timestamp").to_pyarrow().column("product_id").to_pylist()
    assert got == ["P1", None]


# ---- cleaning -----------------------------------------------------------------------------------


def test_one_row_per_subscription_the_cancelled_one_wins(con: ibis.BaseBackend) -> None:
    cleaned = clean(
        con,
        "subscriptions",
        {
            "customer_id": ["A1", "a1 ", "A2", "A2", "A3"],
            "subscription_id": ["SUB1", "SUB1", "SUB2", "SUB2", "SUB3"],
            "plan": ["basic", "basic", "Premium", "premium", None],
            "started_at": ["2024-01-05 10:00:00", "2024-01-05 10:00:00", "2024/02/01 00:00",
                           "2024-02-01 00:00:00", "2024-03-01 00:00:00"],
            "cancelled_at": ["", "2024-04-01 00:00:00", "", "", "2099-01-01 00:00:00"],
            "monthly_fee": ["9.99", "9.99", "19.99", "19.99", "9.99"],
        },
    )  # fmt: skip
    got = rules(cleaned)
    assert got["ids normalised (customer_id)"] == (1, 0)
    assert got["dates in non iso formats parsed (started_at)"] == (1, 0)
    assert got["missing set to unknown (plan)"] == (1, 0)
    assert got["future dates set to empty (cancelled_at)"] == (1, 0)
    # SUB1's open snapshot and SUB2's copy
    assert got["duplicate or conflicting rows"] == (0, 2)
    assert (cleaned.rows_in, cleaned.rows_out) == (5, 3)
    table = cleaned.table.order_by("subscription_id").to_pyarrow().to_pylist()
    assert [(r["subscription_id"], r["plan"], r["cancelled_at"]) for r in table] == [
        ("SUB1", "basic", datetime(2024, 4, 1)),
        ("SUB2", "premium", None),
        ("SUB3", "unknown", None),  # a cancellation after now is not known yet
    ]


def test_one_row_per_product(con: ibis.BaseBackend) -> None:
    cleaned = clean(
        con,
        "products",
        {
            "product_id": ["P1", "p1", "P2", ""],
            "name": ["Tea", "Green tea", "Coffee", "Nothing"],
            "category": ["Grocery", "grocery", None, "x"],
            "price": ["3.50", "3.50", "1,200.00", "1"],
        },
    )
    got = rules(cleaned)
    assert got["rows without product_id"] == (0, 1)
    assert got["duplicate or conflicting rows"] == (0, 1)
    assert got["thousands separators removed (price)"] == (1, 0)
    table = cleaned.table.order_by("product_id").to_pyarrow().to_pylist()
    assert [(r["product_id"], r["name"], r["category"], r["price"]) for r in table] == [
        ("P1", "Green tea", "grocery", 3.5),  # the first in the order of all columns
        ("P2", "Coffee", "unknown", 1200.0),
    ]


def test_a_required_group_is_dropped_when_blank_never_filled(con: ibis.BaseBackend) -> None:
    cleaned = clean(
        con,
        "treatments",
        {
            "customer_id": ["C1", "C2", "C3"],
            "sent_at": ["2024-01-05 10:00:00"] * 3,
            "group": ["treatment", "", "Control"],
            "channel": ["email", None, "SMS"],
        },
    )
    got = rules(cleaned)
    assert got["rows without group"] == (0, 1)
    assert "missing set to unknown (group)" not in got
    assert got["missing set to unknown (channel)"] == (1, 0)
    table = cleaned.table.order_by("customer_id").to_pyarrow().to_pylist()
    assert [(r["customer_id"], r["group"], r["channel"]) for r in table] == [
        ("C1", "treatment", "email"),
        ("C3", "control", "sms"),
    ]


# ---- features -----------------------------------------------------------------------------------


def subscriptions() -> ibis.Table:
    return ibis.memtable(
        {
            "customer_id": ["C1", "C1", "C2", "C3"],
            "plan": ["basic", "premium", "basic", "premium"],
            "started_at": pd.to_datetime(["2023-01-01", "2023-07-02", "2023-03-05", "2024-03-01"]),
            "cancelled_at": pd.to_datetime(["2023-07-02", None, "2024-02-04", None]),
            "monthly_fee": [9.0, 19.0, 9.0, 19.0],
        }
    )


def treatments() -> ibis.Table:
    return ibis.memtable(
        {
            "customer_id": ["C1", "C2", "C3", "C1"],
            "sent_at": pd.to_datetime(["2023-12-04", "2023-12-04", "2023-12-04", "2024-02-26"]),
            "group": ["treatment", "control", "treatment", "treatment"],
        }
    )


def by_customer(table: ibis.Table) -> dict[str, dict]:
    return {r.pop("customer_id"): r for r in table.to_pyarrow().to_pylist()}


def test_subscription_features_know_only_the_past() -> None:
    early = by_customer(subscription_features(subscriptions(), date(2024, 1, 1)))
    # C2's cancellation (2024-02-04) is not known yet on 2024-01-01; C3 has not started
    assert early == {
        "C1": {
            "subscribed": 1,
            "subscription_weeks": 365 / 7,  # 182 days, then 183 from 2023-07-02 to 2024-01-01
            "subscription_plan": "premium",
            "monthly_fee": 19.0,
        },
        "C2": {
            "subscribed": 1,
            "subscription_weeks": 302 / 7,
            "subscription_plan": "basic",
            "monthly_fee": 9.0,
        },
    }
    late = by_customer(subscription_features(subscriptions(), date(2024, 3, 1)))
    assert late["C2"] == {
        "subscribed": 0,
        "subscription_weeks": 48.0,
        "subscription_plan": "basic",
        "monthly_fee": 0.0,
    }
    assert "C3" not in late  # it starts on the as-of date itself


def test_offers_count_contacts_before_as_of_not_holdouts() -> None:
    got = by_customer(offer_features(treatments(), date(2024, 1, 1)))
    assert got == {
        "C1": {"offers_received": 1, "weeks_since_last_offer": 4.0},
        "C3": {"offers_received": 1, "weeks_since_last_offer": 4.0},
    }
    got = by_customer(offer_features(treatments(), date(2024, 3, 4)))
    assert got["C1"] == {"offers_received": 2, "weeks_since_last_offer": 1.0}


def test_the_cancellation_label() -> None:
    label = by_customer(cancelled_between(subscriptions(), date(2024, 1, 1), date(2024, 4, 1)))
    # C1 stays subscribed; C2 cancels within the window; C3 was not subscribed at its start
    assert label == {"C1": {"cancelled": 0}, "C2": {"cancelled": 1}}
    label = by_customer(cancelled_between(subscriptions(), date(2024, 1, 1), date(2024, 2, 4)))
    assert label["C2"] == {"cancelled": 0}  # the end is not in the window


def test_the_feature_table_fills_customers_without_subscription_or_offer() -> None:
    customers = ibis.memtable(
        {
            "customer_id": ["C1", "C2", "C4"],
            "signup_date": pd.to_datetime(["2022-01-01"] * 3).date,
            "birth_date": pd.to_datetime(["1980-01-01"] * 3).date,
            "region": ["n", "s", "e"],
            "acquisition_channel": ["x", "y", "z"],
            "plan": ["basic", "basic", "free"],
            "services": ["", "", ""],
            "segment_label": [None, None, None],
        }
    )
    tables = {"customers": customers, "subscriptions": subscriptions(), "treatments": treatments()}
    ft = build_features(tables, date(2024, 1, 1), groups=["subscription", "offers"])
    got = by_customer(ft.table)
    assert got["C4"] == {
        "subscribed": 0,
        "subscription_weeks": 0.0,
        "subscription_plan": "none",
        "monthly_fee": 0.0,
        "offers_received": 0,
        "weeks_since_last_offer": None,
    }
    assert got["C2"]["offers_received"] == 0 and got["C2"]["subscribed"] == 1
    sources = {f.name: f.source for f in ft.catalogue}
    assert sources["subscribed"] == "subscriptions"
    assert sources["weeks_since_last_offer"] == "treatments"


# ---- the project file ---------------------------------------------------------------------------


def test_a_catalogue_needs_no_id_namespace_but_customer_sources_do(tmp_path) -> None:
    raw = {
        "as_of": "2024-01-01",
        "identity": {"map_source": "ids"},
        "sources": {
            "ids": {"kind": "id_map", "uri": "ids.csv"},
            "tx": {"kind": "transactions", "uri": "tx.csv", "id_namespace": "account_id"},
            "catalogue": {"kind": "products", "uri": "products.csv"},
        },
    }
    project = project_from_dict(raw, root=tmp_path)
    assert project.sources["catalogue"].kind == "products"
    raw["sources"]["subs"] = {"kind": "subscriptions", "uri": "subs.csv"}
    with pytest.raises(ConfigError, match="set id_namespace for subs"):
        project_from_dict(raw, root=tmp_path)


# ---- the generated company, end to end ----------------------------------------------------------


@pytest.fixture(scope="module")
def company(companies: Companies):
    result = companies.shared(3000, seed=3, fmt="csv")
    project = load_project(result.config_path)
    return result, project, flows.prepare(project), planted_dirt(result)


def rule(prepared: flows.Prepared, source: str, prefix: str):
    found = [r for r in prepared.rules if r.source == source and r.rule.startswith(prefix)]
    assert len(found) == 1, (source, prefix, [r.rule for r in prepared.rules])
    return found[0]


def test_the_new_sources_are_valid_and_cleaned_as_planted(company: tuple) -> None:
    _, _, prepared, dirt = company
    assert not [f for r in prepared.reports for f in r.errors]
    subs, camp = dirt["subscriptions"], dirt["treatments"]
    dropped = rule(prepared, "subscriptions", "duplicate or conflicting rows").dropped
    assert dropped == subs["duplicates"] + subs["stale_snapshots"]
    assert (
        rule(prepared, "subscriptions", "ids normalised (customer_id)").changed
        == (subs["dirty_ids"]["account_id"])
    )
    for col in ("started_at", "cancelled_at"):
        formats = subs["date_formats"][col]
        changed = rule(prepared, "subscriptions", f"dates in non iso formats parsed ({col})")
        assert changed.changed == formats["slash"] + formats["dot"]
    assert rule(prepared, "subscriptions", "rows whose account_id").dropped == 0
    assert prepared.rows_out["subscriptions"] == subs["subscriptions"]
    assert rule(prepared, "treatments", "duplicate rows").dropped == camp["duplicates"]
    assert (
        rule(prepared, "treatments", "ids normalised (customer_id)").changed
        == (camp["dirty_ids"]["crm_id"])
    )
    assert prepared.rows_out["treatments"] == camp["contacts"]
    assert prepared.rows_out["products"] == 120
    assert rule(prepared, "transactions", "ids normalised (product_id)").changed == 0
    tx = prepared.tables["transactions"]
    empty = int(tx.product_id.isnull().sum().to_pyarrow().as_py())
    planted = dirt["transactions"]["empty"]
    # the rows cleaning drops (no timestamp, far future) may have had no product either
    assert planted["product_id"] - planted["ts"] - dirt["transactions"]["future"] <= empty
    assert empty <= planted["product_id"]


def test_the_features_agree_with_the_truth(company: tuple, tmp_path) -> None:
    result, project, prepared, dirt = company
    ft = flows.features(project, prepared, groups=["subscription", "offers"])
    flows.write_features(ft, tmp_path / "f.parquet")
    features = pq.read_table(tmp_path / "f.parquet").to_pandas().set_index("customer_id")
    truth = pq.read_table(result.out / "truth" / "subscriptions.parquet").to_pandas()
    active = truth[~truth.cancelled_before_end].crm_id
    assert set(features.index[features.subscribed == 1]) == set(active)
    plans = truth.set_index("crm_id").plan
    assert (features.subscription_plan[plans.index] == plans).all()
    assert (features.subscription_plan.drop(plans.index) == "none").all()
    fee = truth[~truth.cancelled_before_end].set_index("crm_id").monthly_fee
    assert features.monthly_fee[fee.index].to_numpy() == pytest.approx(fee.to_numpy())
    assert features.offers_received.sum() == dirt["treatments"]["treatment"]
    assert features.weeks_since_last_offer.dropna().between(11.9, 12.1).all()
