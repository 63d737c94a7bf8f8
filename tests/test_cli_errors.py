"""Bad input: a one-paragraph message naming source, column and rows; non-zero exit; no
traceback; no partial output."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from tests.factories import TABLES, HttpServer, project_toml, run, write_csv_company


def features_cli(config: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = config.parent / "out" / "features.parquet"
    result = run("features", "--config", str(config), "--out", str(out), cwd=config.parent)
    return result, out


def assert_clean_failure(result: subprocess.CompletedProcess[str], out: Path, *needles: str):
    assert result.returncode != 0, result.stdout
    message = " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in message, (needle, message)
    assert not out.exists()
    leftovers = list(out.parent.glob("*")) if out.parent.exists() else []
    assert leftovers == [], leftovers
    return message


def rewrite(path: Path, rows: list[tuple]) -> None:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def test_good_input_writes_features(tmp_path: Path) -> None:
    result, out = features_cli(write_csv_company(tmp_path))
    assert result.returncode == 0, result.stderr
    assert out.exists() and out.with_suffix(".catalogue.json").exists()
    assert "3 customers" in " ".join(result.stdout.split())


def test_missing_required_column(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    rows = [r[:3] + r[4:] for r in TABLES["transactions"]]  # drop "amount"
    rewrite(tmp_path / "transactions.csv", rows)
    result, out = features_cli(config)
    assert_clean_failure(
        result, out, "source 'transactions'", "column 'amount'", "missing", "account_id, ts"
    )


def test_unparseable_date_names_rows(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    rows = list(TABLES["transactions"])
    rows[2] = ("O2", "A1", "2024-13-45 99:00", "50.00", "home", "app")
    rows[3] = ("O3", "A1", "next tuesday", "1,200.00", "home", "web")
    rewrite(tmp_path / "transactions.csv", rows)
    result, out = features_cli(config)
    message = assert_clean_failure(
        result,
        out,
        "source 'transactions'",
        "column 'ts'",
        "2 of 10 rows",
        "date formats",
        "'2024-13-45 99:00'",
        "'next tuesday'",
        "account_id='A1'",
    )
    assert "date_formats" in message  # tells how to fix it


def test_validate_reports_and_exits_non_zero(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    rows = list(TABLES["web_sessions"])
    rows[1] = ("S1", "V1", "2024-02-01 10:00:00", "-3", "600", "1", "0", "1", "maybe")
    rewrite(tmp_path / "web_sessions.csv", rows)
    result = run("validate", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    text = " ".join(result.stdout.split())
    assert "page_views" in text and "below 0" in text
    assert "converted" in text and "true/false" in text
    assert "Traceback" not in result.stderr


def test_id_map_linking_one_id_to_two_customers(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    rows = [*TABLES["id_map"], ("C4", " a1", "")]
    rewrite(tmp_path / "id_map.csv", rows)
    result, out = features_cli(config)
    assert_clean_failure(
        result,
        out,
        "source 'id_map'",
        "column 'account_id'",
        "1 account_id values are linked to more than one crm_id",
        "account_id='A1'",
        "crm_id='C1, C4'",
    )


def test_unreachable_database(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    text = project_toml(
        {name: f"{name}.csv" for name in TABLES if name != "transactions"}
        | {"transactions": "postgresql://custval:s3cret@127.0.0.1:1/shop"},
        extra={"transactions": 'table = "orders"'},
    )
    config.write_text(text)
    result, out = features_cli(config)
    message = assert_clean_failure(result, out, "source 'transactions'", "127.0.0.1")
    assert "s3cret" not in message


def test_empty_file(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    (tmp_path / "interactions.csv").write_text("")
    result, out = features_cli(config)
    assert_clean_failure(result, out, "source 'interactions'", "empty")


def test_missing_project_file(tmp_path: Path) -> None:
    result, out = features_cli(tmp_path / "nope.toml")
    assert_clean_failure(result, out, "nope.toml", "does not exist", "custval init")


@pytest.mark.parametrize("bad", ['as_of = "soon"', '[sources.x]\nkind = "orders"'])
def test_invalid_project_file(tmp_path: Path, bad: str) -> None:
    config = write_csv_company(tmp_path)
    config.write_text(config.read_text().replace('as_of = "2024-03-01"', bad, 1))
    result, out = features_cli(config)
    assert_clean_failure(result, out, "custval.toml", "invalid")


def test_malformed_csv_row_deep_in_the_file(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    with (tmp_path / "product_usage.csv").open("a") as fh:
        fh.write('A1,2024-02-03,1,1,60,"unterminated\n')
    result, out = features_cli(config)
    assert_clean_failure(result, out, "source 'product_usage'")


def test_unknown_feature_group(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    out = tmp_path / "out" / "features.parquet"
    result = run(
        "features", "-c", str(config), "-o", str(out), "--groups", "rfm,magic", cwd=tmp_path
    )
    assert_clean_failure(result, out, "unknown feature groups magic", "Known groups: rfm")


def test_data_that_looks_like_markup_is_shown_as_it_is(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    rows = list(TABLES["transactions"])
    rows[1] = ("O1", "A1", "2024-01-01 10:00:00", "[/b]", "books", "web")
    rows[2] = ("O2", "A1", "2024/01/01 15:00", "[red]12", "home", "app")
    rewrite(tmp_path / "transactions.csv", rows)
    result, out = features_cli(config)
    assert_clean_failure(result, out, "column 'amount'", "'[/b]'", "'[red]12'")


def test_missing_column_hint_names_the_table_to_edit(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    config.write_text(config.read_text().replace('timestamp = "ts"', 'timestamp = "time"'))
    result, out = features_cli(config)
    assert_clean_failure(
        result, out, "column 'time'", "Map it under [sources.transactions.columns] in custval.toml"
    )


def test_mapping_to_an_absent_optional_column(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    text = config.read_text().replace(
        'timestamp = "ts"', 'timestamp = "ts"\ncategory = "product_category"\nchanel = "x"'
    )
    config.write_text(text)
    result, out = features_cli(config)
    assert_clean_failure(
        result,
        out,
        "column 'product_category'",
        "mapped from custval's 'category'",
        "chanel = 'x' names no column",
    )


@pytest.mark.parametrize(
    ("target", "needle"),
    [("folder", "is a folder"), ("under-a-file/f.parquet", "is a file, not a folder")],
)
def test_unwritable_output(tmp_path: Path, target: str, needle: str) -> None:
    config = write_csv_company(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "under-a-file").write_text("x")
    out = tmp_path / target
    result = run("features", "-c", str(config), "-o", str(out), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert needle in " ".join(result.stderr.split())


@pytest.mark.parametrize(
    ("as_of", "needle"),
    [
        ("2000-01-01", "no customer is known before the as-of date 2000-01-01"),
        ("2099-01-01", "the as-of date 2099-01-01 is in the future"),
    ],
)
def test_as_of_outside_the_data(tmp_path: Path, as_of: str, needle: str) -> None:
    config = write_csv_company(tmp_path)
    out = tmp_path / "out" / "f.parquet"
    result = run("features", "-c", str(config), "-o", str(out), "--as-of", as_of, cwd=tmp_path)
    assert_clean_failure(result, out, needle)


def test_forgotten_id_namespace_is_an_error(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    config.write_text(config.read_text().replace('id_namespace = "account_id"\n', "", 1))
    result, out = features_cli(config)
    assert_clean_failure(result, out, "set id_namespace for transactions")


def test_validate_checks_the_id_map_too(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    rewrite(tmp_path / "id_map.csv", [*TABLES["id_map"], ("C4", " a1", "")])
    result = run("validate", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert "linked to more than one crm_id" in " ".join(result.stdout.split())


def test_blank_amount_is_dropped_and_counted(tmp_path: Path) -> None:
    config = write_csv_company(tmp_path)
    rows = list(TABLES["transactions"])
    rows[4] = ("O4", "A1", "2024-02-10 12:00:00", "", "books", "web")
    rewrite(tmp_path / "transactions.csv", rows)
    result, out = features_cli(config)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "rows without amount │ 0 │ 1" in text
    import pyarrow.parquet as pq

    c1 = next(r for r in pq.read_table(out).to_pylist() if r["customer_id"] == "C1")
    assert (c1["orders"], c1["revenue"]) == (4, 1380 - 30 - 50)


def test_http_api_answering_500_then_timing_out(tmp_path: Path, http_server: HttpServer) -> None:
    def route(_q: dict[str, str], n: int) -> tuple:
        if n == 1:
            return 500, b"internal error", {}
        http_server.release.wait(5)  # hangs past the client's timeout
        return 200, {"data": []}, {}

    url = http_server.route("/tickets", route)
    config = write_csv_company(tmp_path)
    text = project_toml(
        {name: f"{name}.csv" for name in TABLES if name != "interactions"} | {"interactions": url},
        extra={
            "interactions": "[sources.interactions.http]\ntimeout_s = 0.3\nmax_retries = 2\n"
            "backoff_s = 0.01"
        },
    )
    config.write_text(text)
    result, out = features_cli(config)
    assert_clean_failure(
        result, out, "source 'interactions'", "timed out after 0.3 s", "3 attempts", "page 1"
    )
    assert http_server.hits["/tickets"] == 3


def test_init_writes_a_project_file_that_loads(tmp_path: Path) -> None:
    from custval.config import load_project

    result = run("init", "--out", "custval.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    project = load_project(tmp_path / "custval.toml")
    assert project.identity.map_source == "id_map"
    assert {s.kind for s in project.sources.values()} == {
        "customers",
        "transactions",
        "web_sessions",
        "id_map",
    }
    again = run("init", "--out", "custval.toml", cwd=tmp_path)
    assert again.returncode == 2 and "exists already" in again.stderr
    assert "Traceback" not in again.stderr
