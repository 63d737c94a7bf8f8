"""Cleaning and the customer 360 on the sample company: every rule's count equals the dirt the
generator planted (truth/dirt.json), nothing is lost silently, and the features agree with the
true purchase counts."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from custval import flows
from custval.config import load_project
from tests.factories import Companies, planted_dirt


@pytest.fixture(scope="module")
def company(companies: Companies):
    result = companies.shared(3000, seed=3, fmt="csv")
    project = load_project(result.config_path)
    prepared = flows.prepare(project)
    return result, project, prepared, planted_dirt(result)


def rule(prepared: flows.Prepared, source: str, prefix: str):
    found = [r for r in prepared.rules if r.source == source and r.rule.startswith(prefix)]
    assert len(found) == 1, (source, prefix, [r.rule for r in prepared.rules])
    return found[0]


def test_transaction_rules_match_planted_dirt(company: tuple) -> None:
    _, _, prepared, dirt = company
    tx = dirt["transactions"]
    assert rule(prepared, "transactions", "duplicate rows").dropped == tx["duplicates"]
    assert (
        rule(prepared, "transactions", "ids normalised (customer_id)").changed
        == (tx["dirty_ids"]["account_id"])
    )
    assert rule(prepared, "transactions", "future dates").dropped == tx["future"]
    assert rule(prepared, "transactions", "rows without timestamp").dropped == tx["empty"]["ts"]
    assert rule(prepared, "transactions", "negative amounts").changed == tx["refunds"]
    assert (
        rule(prepared, "transactions", "missing set to unknown (category)").changed
        == (tx["empty"]["category"])
    )
    assert (
        rule(prepared, "transactions", "missing set to unknown (channel)").changed
        == (tx["empty"]["channel"])
    )
    formats = tx["date_formats"]["ts"]
    assert rule(prepared, "transactions", "dates in non iso").changed == (
        formats["slash"] + formats["dot"]
    )
    assert (
        rule(prepared, "transactions", "thousands separators").changed
        == (tx["thousands_separator"])
    )
    assert rule(prepared, "transactions", "rows whose account_id").dropped == 0


def test_other_sources_match_planted_dirt(company: tuple) -> None:
    _, _, prepared, dirt = company
    crm, web = dirt["crm_customers"], dirt["web_sessions"]
    assert rule(prepared, "crm", "duplicate or conflicting rows").dropped == crm["duplicates"]
    assert (
        rule(prepared, "crm", "ids normalised (customer_id)").changed == crm["dirty_ids"]["crm_id"]
    )
    assert (
        rule(prepared, "crm", "missing set to unknown (region)").changed == (crm["empty"]["region"])
    )
    assert rule(prepared, "web", "duplicate rows").dropped == web["duplicates"]
    assert (
        rule(prepared, "web", "ids normalised (customer_id)").changed
        == web["dirty_ids"]["visitor_id"]
    )
    assert (
        rule(prepared, "web", "missing left empty (page_views)").changed
        == (web["empty"]["page_views"])
    )
    assert (
        rule(prepared, "product", "duplicate rows").dropped == (dirt["product_usage"]["duplicates"])
    )
    assert (
        rule(prepared, "service", "ids normalised (customer_id)").changed
        == (dirt["interactions"]["dirty_ids"]["crm_id"])
    )
    assert (
        rule(prepared, "service", "missing left empty (resolved)").changed
        == (dirt["interactions"]["open"])
    )


def test_no_row_is_lost_silently(company: tuple) -> None:
    _, project, prepared, dirt = company
    raw_names = {
        "crm": "crm_customers",
        "transactions": "transactions",
        "web": "web_sessions",
        "product": "product_usage",
        "service": "interactions",
    }
    for name, raw_name in raw_names.items():
        # the rows read are the rows the generator wrote ...
        assert prepared.rows_in[name] == dirt[raw_name]["rows"], name
        # ... and the rows the cleaned table holds, counted there, are those less every drop
        dropped = sum(r.dropped for r in prepared.rules if r.source == name)
        kind = project.sources[name].kind
        held = int(prepared.tables[kind].count().to_pyarrow().as_py())
        assert held == prepared.rows_out[name] == prepared.rows_in[name] - dropped, name


def test_orders_per_customer_equal_the_truth(company: tuple, tmp_path: Path) -> None:
    result, project, prepared, dirt = company
    ft = flows.features(project, prepared, groups=["rfm"])
    flows.write_features(ft, tmp_path / "f.parquet")
    features = {
        r["customer_id"]: r["orders"] for r in pq.read_table(tmp_path / "f.parquet").to_pylist()
    }
    truth = pq.read_table(result.out / "truth" / "customers.parquet").to_pylist()
    true_orders = {r["crm_id"]: r["n_purchases"] for r in truth if r["n_purchases"] > 0}
    # orders whose timestamp the export lost are true orders that cleaning must drop
    lost = dirt["transactions"]["empty"]["ts"]
    assert sum(true_orders.values()) - sum(features.get(c, 0) for c in true_orders) == lost
    differing = [c for c, n in true_orders.items() if features.get(c, 0) != n]
    assert len(differing) <= lost
    assert set(features) >= set(true_orders)
