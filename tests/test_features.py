"""Features equal hand-computed values on a tiny company, exactly; later data changes nothing."""

from __future__ import annotations

import math
import statistics
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from custval import flows
from custval.config import load_project
from tests.factories import feature_rows, write_csv_company


def features_of(config: Path) -> tuple[dict[str, dict], list]:
    rows, catalogue = feature_rows(config)
    return {r["customer_id"]: r for r in rows}, catalogue


@pytest.fixture
def computed(hand_made_features: tuple[list[dict], list]) -> tuple[dict[str, dict], list]:
    """The hand-made company's features by customer, and the catalogue."""
    rows, catalogue = hand_made_features
    return {r["customer_id"]: r for r in rows}, catalogue


def test_customers_are_those_known_before_as_of(computed: tuple) -> None:
    rows, _ = computed
    # C3 signs up after as_of and never buys; A9's order has no customer in the id map
    assert sorted(rows) == ["C1", "C2", "C4"]


def test_btyd_rfm_by_hand(computed: tuple) -> None:
    c1 = computed[0]["C1"]
    # purchase days Jan 1 (100 + 50), Jan 15 (1200), Jan 20 (0), Feb 10 (30); as_of Mar 1
    assert c1["frequency"] == 3
    assert c1["recency"] == 40 / 7
    assert c1["T"] == 59 / 7  # to Feb 29, the last day before as_of
    assert c1["monetary_value"] == (1200 + 0 + 30) / 3
    c2 = computed[0]["C2"]
    assert (c2["frequency"], c2["recency"], c2["T"], c2["monetary_value"]) == (0, 0, 9 / 7, 0)
    c4 = computed[0]["C4"]
    assert c4["frequency"] is None and c4["T"] is None  # never bought


def test_marketing_rfm_trend_and_rhythm_by_hand(computed: tuple) -> None:
    c1 = computed[0]["C1"]
    assert c1["recency_days"] == 20
    assert c1["orders"] == 5
    assert c1["avg_order_value"] == 1380 / 5
    assert c1["refunds"] == 1
    assert c1["refund_amount"] == 50
    assert c1["revenue"] == 1380 - 50
    assert c1["days_since_first_purchase"] == 60
    gaps = [14, 5, 21]
    assert c1["ipt_mean_days"] == pytest.approx(statistics.mean(gaps), abs=1e-12)
    assert c1["ipt_std_days"] == pytest.approx(statistics.stdev(gaps), abs=1e-12)
    assert (c1["ipt_min_days"], c1["ipt_max_days"]) == (5, 21)
    # 30-day window: recent = [Jan 31, Mar 1), prior = [Jan 1, Jan 31)
    assert (c1["spend_recent"], c1["spend_prior"]) == (30, 1350)
    assert c1["spend_trend"] == (30 - 1350) / (30 + 1350)
    c2 = computed[0]["C2"]
    assert (c2["orders"], c2["revenue"], c2["refunds"], c2["spend_trend"]) == (1, 20, 0, 1.0)
    assert c2["ipt_mean_days"] is None
    c4 = computed[0]["C4"]
    assert (c4["orders"], c4["revenue"], c4["refund_amount"], c4["recency_days"]) == (
        0,
        0,
        0,
        None,
    )


def test_product_mix_and_channels_by_hand(computed: tuple) -> None:
    c1 = computed[0]["C1"]
    assert c1["share_spend_books"] == 130 / 1380
    assert c1["share_spend_home"] == 1250 / 1380  # "Home" and "home" are one category
    assert c1["share_spend_sports"] == 0
    assert c1["n_categories"] == 2  # the unknown category is not counted
    assert (c1["share_orders_web"], c1["share_orders_app"], c1["share_orders_branch"]) == (
        3 / 5,
        1 / 5,
        0,
    )
    assert c1["favourite_channel"] == "web"
    c2 = computed[0]["C2"]
    assert (c2["share_spend_sports"], c2["favourite_channel"], c2["n_categories"]) == (
        1,
        "branch",
        1,
    )
    assert computed[0]["C4"]["share_spend_books"] is None


def test_profile_by_hand(computed: tuple) -> None:
    rows = computed[0]
    c1, c2, c4 = rows["C1"], rows["C2"], rows["C4"]
    assert c1["customer_age_years"] == 34
    assert c4["customer_age_years"] == 23
    assert c2["customer_age_years"] is None
    assert (c1["tenure_days"], c2["tenure_days"], c4["tenure_days"]) == (274, 77, 425)
    assert (c1["region"], c1["plan"], c1["acquisition_channel"]) == ("north", "premium", "search")
    assert (c1["n_services"], c2["n_services"], c4["n_services"]) == (2, 0, 1)
    assert (c1["service_streaming"], c1["service_backup"], c1["service_support"]) == (1, 1, 0)
    assert (c1["segment_label"], c2["segment_label"]) == ("vip", None)


def test_web_product_service_by_hand(computed: tuple) -> None:
    rows = computed[0]
    c1, c2, c4 = rows["C1"], rows["C2"], rows["C4"]
    assert (c1["website_sessions"], c1["website_views"], c1["pages_per_session"]) == (2, 14, 7)
    assert (c1["blogs_viewed"], c1["videos_viewed"], c1["whitepapers_viewed"]) == (1, 2, 1)
    assert c1["web_minutes_per_session"] == 6
    assert (c1["converted_to_sale"], c1["web_conversion_rate"]) == (1, 0.5)
    assert c1["days_since_last_session"] == 15
    # C4's only session has no page views: counted as a session, views unknown
    assert (c4["website_sessions"], c4["website_views"], c4["pages_per_session"]) == (1, 0, None)
    assert (c2["website_sessions"], c2["pages_per_session"]) == (0, None)

    assert (c1["product_active_days"], c1["product_features_used"]) == (2, 8)
    assert c1["product_features_used_per_day"] == 4
    assert c1["avg_sessions_per_day"] == 1.5
    assert c1["avg_time_per_session_min"] == 10
    assert c1["days_since_last_use"] == 28
    assert (c2["product_active_days"], c2["avg_time_per_session_min"]) == (1, 1)
    assert c4["product_active_days"] == 0

    assert (c1["tickets"], c1["complaints"], c1["incidents"]) == (1, 1, 0)
    assert (c1["tickets_resolved_share"], c1["mean_resolution_hours"]) == (1, 5)
    assert c1["days_since_last_ticket"] == 29
    assert (c2["tickets"], c2["incidents"], c2["tickets_resolved_share"]) == (2, 1, 0)
    assert c2["mean_resolution_hours"] is None
    assert c2["days_since_last_ticket"] == 10


def test_catalogue_describes_every_column(computed: tuple) -> None:
    rows, cat = computed
    columns = set(next(iter(rows.values())))
    assert {f.name for f in cat} == columns
    by_name = {f.name: f for f in cat}
    assert by_name["T"].unit == "weeks"
    assert by_name["share_spend_books"].description == "share of spend on books"
    assert all(f.description and f.unit and f.source for f in cat)


def test_data_after_as_of_changes_nothing(computed: tuple, tmp_path: Path) -> None:
    base, _ = computed
    more, _ = features_of(write_csv_company(tmp_path / "more", after=True))
    assert base.keys() == more.keys()
    for cid in base:
        for col, value in base[cid].items():
            other = more[cid][col]
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(other)
            else:
                assert other == value, (cid, col)


def test_earlier_as_of_moves_the_window(tmp_path: Path) -> None:
    project = load_project(write_csv_company(tmp_path))
    prepared = flows.prepare(project)
    table: pa.Table = flows.features(project, prepared, date(2024, 1, 16)).to_pyarrow()
    rows = {r["customer_id"]: r for r in table.to_pylist()}
    # by Jan 16 C1 has bought on Jan 1 and Jan 15; C2 has not bought yet
    assert (rows["C1"]["frequency"], rows["C1"]["T"]) == (1, 14 / 7)
    assert rows["C2"]["orders"] == 0


def test_feature_groups_select_columns(tmp_path: Path) -> None:
    project = load_project(write_csv_company(tmp_path))
    prepared = flows.prepare(project)
    table = flows.features(project, prepared, groups=["rfm"]).to_pyarrow()
    assert table.column_names == [
        "customer_id",
        "frequency",
        "recency",
        "T",
        "monetary_value",
        "recency_days",
        "orders",
        "avg_order_value",
        "days_since_first_purchase",
        "refunds",
        "refund_amount",
        "revenue",
    ]
    # the customers are the same whichever groups are chosen
    assert table.column("customer_id").to_pylist() == ["C1", "C2", "C4"]
    full = flows.features(project, prepared).to_pyarrow()
    assert table.to_pylist() == full.select(table.column_names).to_pylist()
    web = flows.features(project, prepared, groups=["web", "service"]).to_pyarrow()
    assert "website_sessions" in web.column_names and "frequency" not in web.column_names


def test_an_order_on_several_rows_counts_once(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    # a second line of order O4: another product in the same order
    with (tmp_path / "transactions.csv").open("a") as fh:
        fh.write("O4,A1,2024-02-10 12:00:00,5.00,home,web\r\n")
    project = load_project(config)
    prepared = flows.prepare(project)
    assert prepared.one_row_per_order is False
    rows = {r["customer_id"]: r for r in flows.features(project, prepared).to_pyarrow().to_pylist()}
    assert rows["C1"]["orders"] == 5
    assert rows["C1"]["revenue"] == 1385 - 50
    assert rows["C1"]["monetary_value"] == (1200 + 0 + 35) / 3


def test_one_row_per_order_is_detected(tmp_path: Path) -> None:
    project = load_project(write_csv_company(tmp_path))
    assert flows.prepare(project).one_row_per_order is True


@pytest.mark.parametrize(
    ("birth", "age"),
    [("2000-03-01", 24), ("2000-03-02", 23), ("2000-02-29", 24), ("1990-02-28", 34)],
)
def test_age_in_whole_years_on_and_around_birthdays(tmp_path: Path, birth: str, age: int) -> None:
    config = write_csv_company(tmp_path)
    text = (tmp_path / "crm_customers.csv").read_text().replace("1990-03-01", birth)
    (tmp_path / "crm_customers.csv").write_text(text)
    rows, _ = features_of(config)
    assert rows["C1"]["customer_age_years"] == age  # as_of is 2024-03-01


def test_categories_with_the_same_slug_get_their_own_columns(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    text = (tmp_path / "transactions.csv").read_text()
    text = text.replace(",books,", ",home & garden,", 1).replace(",Home,", ",home-garden,", 1)
    (tmp_path / "transactions.csv").write_text(text)
    rows, cat = features_of(config)
    c1 = rows["C1"]
    assert c1["share_spend_home_garden"] == 100 / 1380
    assert c1["share_spend_home_garden_2"] == 1200 / 1380
    shares = [v for k, v in c1.items() if k.startswith("share_spend_")]
    assert sum(shares) == pytest.approx(1.0)
    names = {f.name: f.description for f in cat}
    assert names["share_spend_home_garden_2"] == "share of spend on home-garden"


def test_counts_are_integers(computed: tuple) -> None:
    c1 = computed[0]["C1"]
    for name in (
        "orders",
        "refunds",
        "website_views",
        "complaints",
        "tickets",
        "n_categories",
        "converted_to_sale",
        "product_active_days",
    ):
        assert isinstance(c1[name], int), name


def test_customers_keyed_by_account_with_two_accounts_get_one_row(tmp_path: Path) -> None:
    import csv

    config = write_csv_company(tmp_path)
    rows = [
        ("account_id", "signup_date", "plan"),
        ("A1", "2023-06-01", "premium"),
        ("A1B", "2023-06-02", "premium"),
        ("A2", "2023-12-15", "basic"),
    ]
    with (tmp_path / "crm_customers.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with (tmp_path / "id_map.csv").open("a", newline="") as fh:
        csv.writer(fh).writerow(("C1", "A1B", ""))
    text = config.read_text().replace(
        'id_namespace = "crm_id"\n[sources.crm_customers.columns]\ncustomer_id = "crm_id"',
        'id_namespace = "account_id"\n[sources.crm_customers.columns]\ncustomer_id = "account_id"',
    )
    config.write_text(text)
    rows_by_id, _ = features_of(config)
    assert sorted(rows_by_id) == ["C1", "C2"]
    assert rows_by_id["C1"]["tenure_days"] == 274  # the earlier of the two profiles


def test_feature_group_names_agree() -> None:
    from typing import get_args

    from custval.config import FeatureGroup
    from custval.features.build import GROUPS

    assert list(GROUPS) == list(get_args(FeatureGroup))


def test_transactions_without_order_ids_count_every_row(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    lines = (tmp_path / "transactions.csv").read_text().splitlines()
    # drop the order_id column; the exact duplicate of O6 is now a second purchase
    (tmp_path / "transactions.csv").write_text(
        "\n".join(line.split(",", 1)[1] for line in lines) + "\n"
    )
    project = load_project(config)
    prepared = flows.prepare(project)
    assert prepared.one_row_per_order is True
    rows = {r["customer_id"]: r for r in flows.features(project, prepared).to_pyarrow().to_pylist()}
    assert (rows["C1"]["orders"], rows["C1"]["frequency"]) == (5, 3)
    assert (rows["C2"]["orders"], rows["C2"]["revenue"]) == (2, 40)
