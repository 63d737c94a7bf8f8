"""Spark as the engine, through Spark Connect (a pysail server on 127.0.0.1, or the server of
CUSTVAL_TEST_SPARK_URL): the same features, the same scoring run and the same errors as on
DuckDB, and clear errors for what only Spark can get wrong."""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from custval import flows
from custval.config import EngineOptions, load_project, with_engine
from custval.data import engine
from custval.errors import CustvalError, EngineError, SourceError
from tests.factories import (
    TABLES,
    Companies,
    assert_same_rows,
    broken_company,
    contract_report,
    feature_rows,
    run,
    run_rows,
    write_csv_company,
)

pytest.importorskip("pyspark", reason="the Spark tests need custval[spark]")


def rewrite(path: Path, rows: list) -> None:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def on_spark(config: Path, url: str):
    project = load_project(config)
    project = with_engine(project, "spark")
    project.engine.url = url
    return project


def spark_rows(config: Path, url: str) -> list[dict]:
    project = on_spark(config, url)
    ft = flows.features(project, flows.prepare(project))
    return ft.to_pyarrow().to_pylist()


# --------------------------------------------------------------------------------------------
# the same features
# --------------------------------------------------------------------------------------------


def test_the_hand_made_company_gives_the_same_features_on_spark(
    tmp_path: Path, spark_url: str, hand_made_features: tuple[list[dict], list]
) -> None:
    """Three date formats, thousands separators, an id map, blanks and duplicates: parsed,
    cleaned, linked and summed on Spark as on DuckDB."""
    config = write_csv_company(tmp_path)
    assert_same_rows(hand_made_features[0], spark_rows(config, spark_url))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_generated_company_gives_the_same_features_on_spark(
    companies: Companies, spark_url: str, fmt: str
) -> None:
    """Every feature group of 800 customers with the usual dirt, value for value (1e-9)."""
    config = companies.shared(800, seed=5, fmt=fmt).config_path
    duck, _ = feature_rows(config)
    spark = spark_rows(config, spark_url)
    assert len(duck) > 700
    assert_same_rows(duck, spark)


def test_features_on_the_command_line_with_engine_spark(
    companies: Companies, spark_url: str, tmp_path: Path
) -> None:
    config = companies.shared(800, seed=5, fmt="parquet").config_path
    out = tmp_path / "features.parquet"
    done = run(
        "features", "-c", str(config), "-o", str(out), "--engine", "spark",
        cwd=tmp_path, env={"SPARK_REMOTE": spark_url},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert "features: 800 customers" in " ".join(done.stdout.split())
    duck, _ = feature_rows(config)
    assert_same_rows(duck, pq.read_table(out).to_pylist())


def test_the_sales_series_of_a_forecast_are_the_same_on_spark(
    companies: Companies, spark_url: str
) -> None:
    """What `custval forecast --engine spark` forecasts from: the weekly revenue, purchases
    and customers, per channel too."""
    from custval.features.series import sales_series

    config = companies.shared(800, seed=5, fmt="parquet").config_path
    duck = load_project(config)
    spark = on_spark(config, spark_url)
    tables = [flows.prepare(p).tables["transactions"] for p in (duck, spark)]
    for by in (None, "channel"):
        a, b = (sales_series(tx, duck.as_of, by=by) for tx in tables)
        assert len(a) > 50
        assert_same_rows(a.to_dict("records"), b.to_dict("records"), key="period")


# --------------------------------------------------------------------------------------------
# the same errors
# --------------------------------------------------------------------------------------------


def test_contract_violations_give_the_same_report_on_spark(tmp_path: Path, spark_url: str) -> None:
    """A missing column, unparseable dates, a negative count and a bad flag: the same
    problems, counts and example rows on both engines."""
    config = broken_company(tmp_path)
    duck = contract_report(load_project(config))
    assert any(f[1] == "ts" and f[4] == 2 for f in duck), duck
    assert any(f[1] == "page_views" for f in duck), duck
    assert contract_report(on_spark(config, spark_url)) == duck


def test_a_missing_column_stops_features_with_the_same_message(
    tmp_path: Path, spark_url: str
) -> None:
    config = write_csv_company(tmp_path)
    rewrite(tmp_path / "transactions.csv", [r[:3] + r[4:] for r in TABLES["transactions"]])
    messages = []
    for project in (load_project(config), on_spark(config, spark_url)):
        with pytest.raises(CustvalError) as caught:
            flows.prepare(project)
        messages.append(str(caught.value))
    assert "amount" in messages[0]
    assert messages[1] == messages[0]


# --------------------------------------------------------------------------------------------
# what only Spark gets wrong
# --------------------------------------------------------------------------------------------


def test_an_unreachable_spark_is_named_after_a_bounded_wait() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = EngineOptions(kind="spark", url=f"sc://127.0.0.1:{port}", connect_timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(EngineError) as caught:
        engine.connect(options)
    waited = time.monotonic() - started
    assert 1.4 <= waited < 5, waited
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "does not answer after 1.5 s" in message
    assert "connect_timeout_s" in message


def test_a_pyspark_outside_the_supported_range_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyspark

    monkeypatch.setattr(pyspark, "__version__", "4.2.0")
    with pytest.raises(EngineError) as caught:
        engine.connect(EngineOptions(kind="spark", url="sc://127.0.0.1:1"))
    message = str(caught.value)
    assert "pyspark 4.2.0" in message and "3.5 up to, not including, 4.1" in message
    assert "custval[spark]" in message


def test_no_spark_address_asks_for_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    with pytest.raises(EngineError, match="SPARK_REMOTE"):
        engine.connect(EngineOptions(kind="spark"))


def test_what_scores_on_duckdb_only_is_refused_before_any_work(tmp_path: Path) -> None:
    """[actions] and a machine-learned CLV learn from the whole feature table: scoring on
    Spark says so, and what to do, before it reaches Spark (the address here answers nobody)."""
    project = on_spark(write_csv_company(tmp_path), "sc://127.0.0.1:1")
    ml = project.model_copy(update={"clv": project.clv.model_copy(update={"method": "ml"})})
    with pytest.raises(CustvalError, match=r"\[clv\] method = 'ml' is not available on Spark"):
        flows.score_on_spark(ml, store_url=tmp_path / "s.duckdb")
    acting = project.model_copy(
        update={"actions": project.actions.model_copy(update={"churn": True})}
    )
    with pytest.raises(CustvalError) as caught:
        flows.score_on_spark(acting, store_url=tmp_path / "s.duckdb")
    assert "[actions]" in str(caught.value) and "--engine duckdb" in str(caught.value)
    assert not (tmp_path / "s.duckdb").exists()


def test_the_init_template_shows_an_engine_that_loads() -> None:
    import tomllib

    from custval.cli.template import TEMPLATE

    start = TEMPLATE.index("# [engine]")
    lines = [line.removeprefix("# ") for line in TEMPLATE[start:].split("\n\n")[0].splitlines()]
    found = EngineOptions(**tomllib.loads("\n".join(lines))["engine"])
    assert found.kind == "spark" and found.url.startswith("sc://")
    assert found.staging.startswith("s3://") and found.train_sample == 1_000_000


def test_an_unknown_engine_names_the_flag(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    done = run("features", "-c", str(config), "--engine", "sparkle", cwd=tmp_path)
    assert done.returncode != 0
    assert "unknown engine 'sparkle' (--engine)" in " ".join(done.stderr.split())


def test_a_path_the_cluster_cannot_read_names_the_source(tmp_path: Path, spark_url: str) -> None:
    config = write_csv_company(tmp_path)
    text = config.read_text().replace(
        'uri = "web_sessions.csv"', 'uri = "s3a://no-such-bucket/web/*.parquet"'
    )
    config.write_text(text)
    project = on_spark(config, spark_url)
    con = engine.connect(project.engine)
    with pytest.raises(SourceError) as caught:
        flows.open_all(project, con)
    message = str(caught.value)
    assert "source 'web_sessions'" in message and "s3a://no-such-bucket/web/*.parquet" in message
    assert "the cluster reads" in message


def test_parquet_files_whose_column_types_differ_are_refused(
    tmp_path: Path, spark_url: str
) -> None:
    config = write_csv_company(tmp_path)
    folder = tmp_path / "tx"
    folder.mkdir()
    header, *body = (list(r) for r in TABLES["transactions"])
    first = pa.table({h: [r[i] for r in body[:4]] for i, h in enumerate(header)})
    second = first.set_column(3, "amount", pa.array([1.0, 2.0, 3.0, 4.0]))
    pq.write_table(first, folder / "part-1.parquet")
    pq.write_table(second, folder / "part-2.parquet")
    text = config.read_text()
    config.write_text(text.replace('uri = "transactions.csv"', 'uri = "tx/*.parquet"'))
    with pytest.raises(SourceError) as caught:
        flows.prepare(on_spark(config, spark_url))
    message = str(caught.value)
    assert "source 'transactions'" in message and "same columns and types" in message


def test_csv_files_with_their_columns_in_another_order_are_read_by_name(
    tmp_path: Path, spark_url: str, hand_made_features: tuple[list[dict], list]
) -> None:
    """An export split over files that do not keep the column order: read by name, as on
    DuckDB, not with shifted columns."""
    config = write_csv_company(tmp_path)
    folder = tmp_path / "tx"
    folder.mkdir()
    header, *body = (list(r) for r in TABLES["transactions"])
    rewrite(folder / "a.csv", [header, *body[: len(body) // 2]])
    order = [1, 0, 3, 2, *range(4, len(header))]
    rewrite(
        folder / "b.csv", [[row[i] for i in order] for row in [header, *body[len(body) // 2 :]]]
    )
    text = config.read_text()
    config.write_text(text.replace('uri = "transactions.csv"', 'uri = "tx/*.csv"'))
    assert_same_rows(hand_made_features[0], spark_rows(config, spark_url))


# --------------------------------------------------------------------------------------------
# the same scoring run
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(companies: Companies, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the generated company with a LightGBM value model and a segmentation in its
    store (on DuckDB)."""
    folder = tmp_path_factory.mktemp("spark_scoring") / "company"
    config = companies.copy(folder, 800, seed=5, fmt="parquet").config_path
    project = load_project(config)
    flows.train_value(project, candidates=("lightgbm",), folds=3)
    done = run("segment", "-c", str(config), "--k", "4", cwd=folder)
    assert done.returncode == 0, done.stderr
    return config


def test_a_scoring_run_on_spark_equals_the_run_on_duckdb(trained: Path, spark_url: str) -> None:
    """Probability, class, P(alive), expected purchases, segment and every reason with its
    sentence: the same for every customer, whichever engine scored them (1e-9).

    The CLV and its interval within 1e-6: Spark adds a customer's amounts in another order,
    so monetary_value differs in its last bits (3.6e-15 here); the Gamma-Gamma fit, which stops
    within its tolerance, and its covariance (a finite-difference Hessian) turn that into up to
    about 1e-7 (8e-8 on the CLV, 4e-7 on the bounds with a million customers, bench/spark.py)."""
    duck_store = trained.parent / "custval.duckdb"
    spark_store = trained.parent / "spark.duckdb"
    shutil.copy(duck_store, spark_store)  # the same segmentation in both
    project = load_project(trained)
    flows.score(project, store_url=duck_store)
    spark = on_spark(trained, spark_url)
    spark.engine.partitions = 3  # several partitions, each scored on its own
    result = flows.score_on_spark(spark, store_url=spark_store)
    assert result.segment_run is not None and result.clv_method == "btyd"

    duck_preds = run_rows(duck_store, "predictions", "customer_id")
    spark_preds = run_rows(spark_store, "predictions", "customer_id")
    assert len(duck_preds) > 700
    assert {r["segment"] for r in duck_preds} - {None}
    assert sum(r["clv_lower"] is not None for r in duck_preds) > 500
    clv = dict.fromkeys(("clv_expected", "clv_lower", "clv_upper"), 1e-6)
    assert_same_rows(duck_preds, spark_preds, looser=clv)
    order = "customer_id, rank"
    assert_same_rows(
        run_rows(duck_store, "reasons", order), run_rows(spark_store, "reasons", order)
    )


@pytest.mark.postgres
def test_a_spark_run_is_loaded_into_postgresql(
    trained: Path, spark_url: str, pg_url: str, pg_schema: str, tmp_path: Path
) -> None:
    """The scored files streamed into a PostgreSQL store (COPY, a batch at a time), all or
    nothing: the same rows as a run on DuckDB into a DuckDB store."""
    from custval.store import open_store
    from tests.factories import search_path_url

    pg_store = search_path_url(pg_url, pg_schema)
    spark = on_spark(trained, spark_url)
    result = flows.score_on_spark(spark, store_url=pg_store)
    duck_store = tmp_path / "plain.duckdb"
    flows.score(load_project(trained), store_url=duck_store)
    store = open_store(pg_store)
    try:
        rows = store.run_rows("predictions", result.run_id).sort_by("customer_id")
        reasons = store.run_rows("reasons", result.run_id).sort_by(
            [("customer_id", "ascending"), ("rank", "ascending")]
        )
        status = store.query("SELECT status FROM runs WHERE run_id = ?", (result.run_id,))
    finally:
        store.close()
    assert status == [("succeeded",)]
    clv = dict.fromkeys(("clv_expected", "clv_lower", "clv_upper"), 1e-6)
    pg_rows = rows.drop_columns(["run_id"]).to_pylist()
    assert_same_rows(run_rows(duck_store, "predictions", "customer_id"), pg_rows, looser=clv)
    pg_reasons = reasons.drop_columns(["run_id"]).to_pylist()
    assert_same_rows(run_rows(duck_store, "reasons", "customer_id, rank"), pg_reasons)


def test_training_on_spark_learns_from_customers_drawn_there(
    companies: Companies, spark_url: str, tmp_path: Path
) -> None:
    """`custval train --engine spark`: the features at the cutoff and the future-spend label
    computed on Spark for about train_sample customers drawn there by a hash of their id (the
    same customers at both cutoffs of the time split), the models fitted here. With every
    customer drawn, the label is the one DuckDB gives."""
    config = companies.copy(tmp_path / "company", 2000, seed=6, fmt="parquet").config_path
    duck = flows.train_value(
        load_project(config), candidates=("logistic",), folds=3, out_dir=tmp_path / "duck"
    )
    spark = on_spark(config, spark_url)
    whole = flows.train_value(spark, candidates=("logistic",), folds=3, out_dir=tmp_path / "whole")
    assert len(whole.features) == len(duck.features) > 1100  # known at the cutoff
    assert whole.label["threshold_spend"] == pytest.approx(duck.label["threshold_spend"])
    assert (whole.y == duck.y).all()

    spark.engine.train_sample = 1000
    drawn = flows.train_value(spark, candidates=("logistic",), folds=3, out_dir=tmp_path / "drawn")
    assert 850 <= len(drawn.features) <= 1150, len(drawn.features)
    assert "time_split" in drawn.label  # the earlier period's customers drawn alike


def test_the_generated_features_are_the_same_on_spark(companies: Companies, spark_url: str) -> None:
    """`features --auto` on Spark: every generated feature (windows, modes with their ties,
    trends, the orders' depth 2) of 300 customers equal to DuckDB's (1e-9)."""
    config = companies.shared(300, seed=5, fmt="parquet").config_path

    def auto_rows(project) -> list[dict]:
        prepared = flows.prepare(project)
        ft = flows.auto_features(project, prepared, flows.features(project, prepared))
        return ft.to_pyarrow().to_pylist()

    duck = auto_rows(load_project(config))
    assert len(duck[0]) > 500
    assert_same_rows(duck, auto_rows(on_spark(config, spark_url)))
