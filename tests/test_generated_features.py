"""Generated features (custval.features.generated): values worked out by hand, names and
sentences from their definitions, point in time (rows at or after the as-of date never change a
feature), partial windows marked, and the clear errors of bad declarations."""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta
from pathlib import Path

import ibis
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from custval import flows
from custval.config import AutoSource, load_project
from custval.data import engine
from custval.errors import CustvalError
from custval.features.build import FeatureTable
from custval.features.generated import Relation, generate
from custval.flows.generation import default_relations
from tests.factories import Companies, run

AS_OF = date(2025, 1, 1)


def day(days_before: int, hour: int = 12) -> datetime:
    return datetime(2025, 1, 1, hour) - timedelta(days=days_before)


@pytest.fixture
def tiny() -> tuple[dict, ibis.Table]:
    """Two buyers' order lines and a customer with none: A's four orders (one of two lines),
    B's two; and rows on and after the as-of date that no feature may see."""
    rows = [
        # customer, order, time, amount, category, channel
        ("A", "o1", day(400), 10.0, "toys", "web"),
        ("A", "o2", day(200), 20.0, "books", "web"),
        ("A", "o3", day(60), 30.0, "books", "app"),
        ("A", "o3", day(60), 5.0, "toys", "app"),
        ("A", "o4", day(10), 40.0, "toys", "app"),
        ("B", "o5", day(20), 7.0, "books", "web"),
        ("B", "o6", day(5), 9.0, "toys", "app"),
        ("A", "o7", datetime(2025, 1, 1), 1000.0, "cars", "shop"),  # at the as-of date
        ("B", "o8", datetime(2025, 3, 1), 1000.0, "cars", "shop"),
    ]
    columns = ["customer_id", "order_id", "timestamp", "amount", "category", "channel"]
    con = ibis.duckdb.connect()
    tx = con.create_table(
        "tx", ibis.memtable(dict(zip(columns, zip(*rows, strict=True), strict=True)))
    )
    spine = con.create_table("spine", ibis.memtable({"customer_id": ["A", "B", "C"]}))
    return {"transactions": tx}, spine


def values(tables: dict, spine: ibis.Table, relations: list[Relation], **kw) -> dict[str, dict]:
    found = generate(tables, spine, AS_OF, relations, **kw)
    rows = found.table.order_by("customer_id").to_pyarrow().to_pylist()
    return {r["customer_id"]: r for r in rows}


REL = Relation(
    "transactions", "timestamp", ("amount",), ("category", "channel"), "order_id", ("amount",)
)


def test_the_values_worked_out_by_hand(tiny: tuple[dict, ibis.Table]) -> None:
    got = values(*tiny, [REL], windows=(30, 90, 365))
    a, b, c = got["A"], got["B"], got["C"]
    assert [a[f"tx__count__{w}"] for w in ("30d", "90d", "365d", "all")] == [1, 3, 4, 5]
    assert a["tx__amount__sum__90d"] == 75.0 and a["tx__amount__sum__all"] == 105.0
    assert a["tx__amount__mean__365d"] == pytest.approx(95 / 4)
    assert a["tx__amount__std__90d"] == pytest.approx(math.sqrt(325))  # 30, 5, 40: sample std
    assert (a["tx__amount__min__all"], a["tx__amount__max__all"]) == (5.0, 40.0)
    # B: 7 twenty days before, 9 five days before: rising by 2 in 15 days, 4 per 30 days
    assert b["tx__amount__trend__30d"] == pytest.approx(4.0)
    assert b["tx__amount__trend__all"] == pytest.approx(4.0)
    assert a["tx__amount__trend__30d"] is None  # one day: no slope
    # categories: A's last 90 days are books once, toys twice; over 365 days a tie goes to
    # the first in byte order (books 2, toys 2)
    assert a["tx__category__mode__90d"] == "toys" and a["tx__category__top_share__90d"] == 2 / 3
    assert a["tx__category__mode__365d"] == "books"
    assert a["tx__category__nunique__all"] == 2 and a["tx__channel__nunique__30d"] == 1
    # depth 2: A's orders over 90 days are 35 (two lines) and 40
    assert a["tx__order__count__90d"] == 2
    assert a["tx__order__total_amount__mean__90d"] == pytest.approx(37.5)
    assert a["tx__order__lines__max__all"] == 2.0
    assert a["tx__days_since_first"] == 400 and a["tx__days_since_last"] == 10
    assert a["tx__count__ratio_30d_365d"] == pytest.approx(1 / 4)
    assert b["tx__amount__sum__ratio_90d_365d"] == pytest.approx(1.0)
    # no purchase: zero counts and totals, nothing else invented
    assert c["tx__count__all"] == 0 and c["tx__amount__sum__30d"] == 0.0
    assert c["tx__order__count__all"] == 0 and c["tx__category__nunique__all"] == 0
    assert c["tx__amount__mean__all"] is None and c["tx__category__mode__all"] is None


def test_a_window_without_rows_has_zero_totals_and_shares(
    tiny: tuple[dict, ibis.Table],
) -> None:
    """A buyer with no purchase in the last 3 days has a total and a share of zero there, as a
    customer who never bought has, not a missing value; the mean and spread are missing."""
    got = values(*tiny, [REL], windows=(3, 365))
    for buyer in ("A", "B"):
        row = got[buyer]
        assert row["tx__count__3d"] == 0 and row["tx__amount__sum__3d"] == 0.0
        assert row["tx__count__ratio_3d_365d"] == 0.0
        assert row["tx__amount__sum__ratio_3d_365d"] == 0.0
        assert row["tx__amount__mean__3d"] is None and row["tx__amount__std__3d"] is None
    assert got["C"]["tx__amount__sum__ratio_3d_365d"] is None  # nothing to share


def test_names_and_sentences_follow_from_the_definitions(tiny: tuple[dict, ibis.Table]) -> None:
    found = generate(*tiny, AS_OF, [REL], windows=(30, 90, 365))
    by_name = {f.name: f for f in found.catalogue}
    assert list(found.table.columns) == ["customer_id", *by_name]
    assert by_name["tx__amount__mean__90d"].description == (
        "Mean amount per purchase in the last 90 days"
    )
    assert by_name["tx__category__mode__all"].description == (
        "Most frequent category among purchases over the whole history"
    )
    assert by_name["tx__order__total_amount__max__30d"].description == (
        "Largest amount (its rows added) of one order in the last 30 days"
    )
    assert by_name["tx__amount__trend__90d"].unit == "currency per 30 days"
    assert by_name["tx__count__ratio_30d_365d"].description == (
        "Purchases in the last 30 days as a share of the last 365"
    )
    # the history starts 400 days before: every window fits in it
    assert not any("partial" in f.description for f in found.catalogue)
    longer = generate(*tiny, AS_OF, [REL], windows=(30, 500))
    marked = {
        f.name for f in longer.catalogue if "(partial: the history starts on" in f.description
    }
    assert "tx__count__500d" in marked and "tx__count__30d" not in marked


def test_the_issues_example_sentence(companies: Companies) -> None:
    config = companies.shared(300, seed=5, fmt="parquet").config_path
    project = load_project(config)
    prepared = flows.prepare(project)
    ft = flows.auto_features(project, prepared, flows.features(project, prepared))
    by_name = {f.name: f for f in ft.catalogue}
    assert by_name["web__page_views__mean__90d"].description == (
        "Mean page views per web session in the last 90 days"
    )
    assert len([f for f in ft.catalogue if "__" in f.name]) >= 150
    assert not any(name.startswith("offers__retained") for name in by_name)  # an outcome


def same_value(x: object, y: object) -> bool:
    """Equal; floats to 1e-12 (the engine adds a column in any order, in parallel)."""
    if isinstance(x, float) and isinstance(y, float):
        return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-12)
    return x == y


def future_rows(table: ibis.Table, rel: Relation, rng: random.Random) -> ibis.Table:
    """Some of the table's rows moved to the as-of date's first instant or later."""
    offset = rng.choice([0, 0, 1, 30, 400])
    moved = table.limit(rng.randint(1, 40), offset=rng.randint(0, 20))
    time = moved[rel.time]
    if time.type().is_timestamp():
        when = ibis.timestamp(datetime(2026, 1, 1)) + ibis.interval(days=offset)
    else:
        when = ibis.date(2026, 1, 1) + ibis.interval(days=offset)
    return moved.mutate(**{rel.time: when.cast(time.type())})


def test_rows_at_or_after_the_as_of_date_never_change_a_feature(companies: Companies) -> None:
    """A property, tried with three random draws: whatever rows are added at the as-of date's
    first instant or after it, to whichever related tables, every generated feature of every
    customer stays as it was (a float to its last bits, which the order of a parallel sum
    moves)."""
    project = load_project(companies.shared(300, seed=5, fmt="parquet").config_path)
    assert project.as_of == date(2026, 1, 1)
    prepared = flows.prepare(project)
    spine = engine.materialise(prepared.con, "spine", flows.features(project, prepared).table)
    rels = default_relations(prepared.tables)

    def features(tables: dict) -> pa.Table:
        def keep(name: str, part: ibis.Table) -> ibis.Table:
            return engine.materialise(prepared.con, name, part)

        found = generate(tables, spine, project.as_of, rels, windows=(30, 365), keep=keep)
        return found.table.order_by("customer_id").to_pyarrow()

    before = features(prepared.tables)
    for seed in range(3):
        rng = random.Random(seed)
        changed = dict(prepared.tables)
        for rel in rng.sample(rels, k=rng.randint(1, len(rels))):
            changed[rel.kind] = changed[rel.kind].union(future_rows(changed[rel.kind], rel, rng))
        after = features(changed)
        assert before.column_names == after.column_names
        for name in before.column_names:
            pairs = zip(before[name].to_pylist(), after[name].to_pylist(), strict=True)
            diffs = [(x, y) for x, y in pairs if not same_value(x, y)]
            assert not diffs, (seed, name, diffs[:3])


def test_slices_of_customers_give_the_table_of_all_at_once(
    companies: Companies, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """DuckDB computes the generated features slice by slice of customers, each slice a row
    group of one Parquet file: the file written from many slices is the one table of all
    customers, row for row, in customer-id order, with one catalogue."""
    project = load_project(companies.shared(300, seed=5, fmt="parquet").config_path)
    prepared = flows.prepare(project)
    hand = flows.features(project, prepared)

    def written(cells: int, name: str) -> tuple[FeatureTable, pa.Table]:
        monkeypatch.setattr(flows.generation, "SLICE_CELLS", cells)
        ft = flows.auto_features(project, prepared, hand)
        out = flows.write_features(ft, tmp_path / name)
        return ft, pq.read_table(out)

    whole_ft, whole = written(10**9, "whole.parquet")
    sliced_ft, sliced = written(100 * 600, "sliced.parquet")  # about 100 customers a slice
    assert whole_ft.file is not None and sliced_ft.file is not None
    assert pq.ParquetFile(whole_ft.file).num_row_groups == 1
    assert pq.ParquetFile(sliced_ft.file).num_row_groups >= 2
    ids = sliced["customer_id"].to_pylist()
    assert ids == sorted(ids) and len(ids) == len(set(ids)) == whole.num_rows
    assert [f.as_dict() for f in sliced_ft.catalogue] == [f.as_dict() for f in whole_ft.catalogue]
    assert sliced.column_names == whole.column_names
    for name in whole.column_names:
        pairs = zip(whole[name].to_pylist(), sliced[name].to_pylist(), strict=True)
        diffs = [(x, y) for x, y in pairs if not same_value(x, y)]
        assert not diffs, (name, diffs[:3])
    assert sliced_ft.to_pyarrow().equals(sliced)  # what training reads


# --------------------------------------------------------------------------------------------
# bad declarations
# --------------------------------------------------------------------------------------------


def declared(config: Path, **sources: AutoSource):
    project = load_project(config)
    project.features.auto.sources.update(sources)
    return project


def test_a_source_with_no_key_path_to_the_customer_is_named(companies: Companies) -> None:
    config = companies.shared(300, seed=5, fmt="parquet").config_path
    project = declared(config, products=AutoSource(time="name"))
    with pytest.raises(CustvalError) as caught:
        flows.auto_features(
            project, prepared := flows.prepare(project), flows.features(project, prepared)
        )
    message = str(caught.value)
    assert "'products'" in message and "no key path to the customer" in message


def test_a_time_column_that_is_not_a_time_is_named(companies: Companies) -> None:
    config = companies.shared(300, seed=5, fmt="parquet").config_path
    project = declared(config, web=AutoSource(time="page_views"))
    prepared = flows.prepare(project)
    with pytest.raises(CustvalError) as caught:
        flows.auto_features(project, prepared, flows.features(project, prepared))
    message = str(caught.value)
    assert "the time column 'page_views' is not a time" in message and "'web'" in message


def test_more_features_than_allowed_is_an_error_with_the_way_out(companies: Companies) -> None:
    project = load_project(companies.shared(300, seed=5, fmt="parquet").config_path)
    project.features.auto.max_features = 100
    prepared = flows.prepare(project)
    with pytest.raises(CustvalError, match=r"more than the 100 allowed.*fewer windows"):
        flows.auto_features(project, prepared, flows.features(project, prepared))


def test_windows_out_of_range_are_refused(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from custval.config import AutoFeatureOptions

    with pytest.raises(ValidationError, match="1 to 3650 days"):
        AutoFeatureOptions(windows=[30, 0])
    assert AutoFeatureOptions(windows=[365, 30, 30]).windows == [30, 365]


def test_features_auto_on_the_command_line(companies: Companies, tmp_path: Path) -> None:
    config = companies.shared(300, seed=5, fmt="parquet").config_path
    out = tmp_path / "features.parquet"
    done = run("features", "-c", str(config), "--auto", "-o", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    generated_names = [c for c in table.column_names if "__" in c]
    assert len(generated_names) >= 150 and "recency_days" in table.column_names
    import json

    catalogue = json.loads(out.with_suffix(".catalogue.json").read_text())
    described = (
        {f["name"]: f["description"] for f in catalogue["features"]}
        if isinstance(catalogue, dict)
        else {f["name"]: f["description"] for f in catalogue}
    )
    assert set(generated_names) <= set(described)


def test_training_with_generated_features_records_the_choice_and_scoring_follows(
    companies: Companies, tmp_path: Path
) -> None:
    """`train --auto-features`: the selection (chosen, every dropped feature's reason, each
    block's ROC AUC) in the bundle, the model's features the hand-built plus the chosen, and
    `score` computing the generated features again for it."""
    import json

    from custval.features.generated import is_generated
    from tests.factories import run_rows

    config = companies.copy(tmp_path / "company", 600, seed=5, fmt="parquet").config_path
    done = run(
        "train", "-c", str(config), "--auto-features", "--models", "lightgbm", "--folds", "3",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = json.loads(next((config.parent / "models").glob("2*/manifest.json")).read_text())
    record = manifest["feature_selection"]
    assert record["base_roc_auc"] <= record["roc_auc"]
    assert len(record["dropped"]) + len(record["chosen"]) >= 150
    assert all(is_generated(n) for n in [*record["dropped"], *record["chosen"]])
    reasons = set(record["dropped"].values())
    assert any(r.startswith("near-constant") for r in reasons)
    assert any(r.startswith("correlated with") for r in reasons)
    assert record["steps"] or "gain below the permuted-label baseline in a fold" in reasons
    from custval.store.bundles import load_bundle

    model = load_bundle(next((config.parent / "models").glob("2*")))
    used = [c for c in model.schema_.columns if is_generated(c)]
    assert used == [c for c in record["chosen"] if c in used]
    done = run("score", "-c", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(run_rows(config.parent / "custval.duckdb", "predictions", "customer_id")) > 500
    # the real-time state keeps the hand-built features only: refused before serving
    done = run("serve", "-c", str(config), "--realtime", cwd=tmp_path, timeout=60)
    assert done.returncode != 0
    assert "trained with generated features" in " ".join(done.stderr.split())


def test_hand_built_names_never_look_generated() -> None:
    from custval.features.catalogue import STATIC
    from custval.features.generated import is_generated

    assert not any(is_generated(f.name) for f in STATIC)


def test_the_documented_settings_load() -> None:
    """docs/features.md's [features.auto] example is a valid project section."""
    import re
    import tomllib

    from custval.config import FeatureOptions

    text = (Path(__file__).parent.parent / "docs" / "features.md").read_text()
    block = next(b for b in re.findall(r"```toml\n(.*?)```", text, flags=re.S) if "auto" in b)
    options = FeatureOptions(**tomllib.loads(block)["features"])
    assert options.auto.windows == [30, 90, 365] and options.auto.max_features == 2000
    assert options.auto.sources["web"].numeric == ["page_views", "duration_sec"]
