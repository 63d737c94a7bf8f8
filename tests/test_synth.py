"""Tests of the sample-company generator: files, ids, dirt counts and the ground truth.

The data tests use 2,000 customers (about 20,000 orders); the statistical tests of the generative
model simulate 50,000 customers without writing files. Everything runs in a few seconds.
"""

from __future__ import annotations

import json
import re
import tomllib
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from custval.data import _synth_base as base
from custval.data import synth
from custval.data.synth import SOURCE_NAMES, SynthParams, generate
from custval.errors import CustvalError

N = 2000
SEED = 7
END = date(2025, 12, 31)
AS_OF = END + timedelta(days=1)

COLUMNS = {
    "crm_customers": [
        "crm_id",
        "signup_date",
        "birth_date",
        "region",
        "acquisition_channel",
        "plan",
        "services",
        "segment_label",
    ],
    "transactions": ["order_id", "account_id", "ts", "amount", "category", "channel", "product_id"],
    "web_sessions": [
        "session_id",
        "visitor_id",
        "started_at",
        "page_views",
        "duration_sec",
        "blogs_viewed",
        "videos_viewed",
        "whitepapers_viewed",
        "converted",
    ],
    "product_usage": ["account_id", "date", "features_used", "sessions", "time_sec"],
    "interactions": [
        "ticket_id",
        "crm_id",
        "opened_at",
        "kind",
        "resolved",
        "resolution_hours",
    ],
    "id_map": ["crm_id", "visitor_id", "account_id"],
    "products": ["product_id", "name", "category", "price"],
    "subscriptions": [
        "subscription_id",
        "account_id",
        "plan",
        "started_at",
        "cancelled_at",
        "monthly_fee",
    ],
    "treatments": [
        "crm_id",
        "campaign_id",
        "sent_at",
        "group",
        "offer",
        "channel",
        "cost",
        "retained",
    ],
}
#: the sources the generator wrote before the catalogue, subscriptions and campaign came
ORIGINAL_SOURCES = (
    "crm_customers",
    "transactions",
    "web_sessions",
    "product_usage",
    "interactions",
    "id_map",
)
TRUTH_COLUMNS = [
    "crm_id",
    "lambda_per_week",
    "p_dropout",
    "spend_nu",
    "expected_spend",
    "first_purchase",
    "death_time",
    "alive_at_end",
    "n_purchases",
    "total_spend",
]
DATE_COLUMNS = {
    "crm_customers": ["signup_date", "birth_date"],
    "transactions": ["ts"],
    "web_sessions": ["started_at"],
    "product_usage": ["date"],
    "interactions": ["opened_at"],
    "subscriptions": ["started_at", "cancelled_at"],
    "treatments": ["sent_at"],
}
STRING_COLUMNS = {"order_id", "account_id", "ts", "amount", "crm_id", "visitor_id", "date"}
STRING_COLUMNS |= {"product_id", "price", "started_at", "cancelled_at", "monthly_fee", "cost"}
TS_PATTERNS = {
    "iso": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$",
    "slash": r"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}$",
    "dot": r"^\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}$",
}
DATE_PATTERNS = {
    "iso": r"^\d{4}-\d{2}-\d{2}$",
    "slash": r"^\d{4}/\d{2}/\d{2}$",
    "dot": r"^\d{2}\.\d{2}\.\d{4}$",
}
PARSE_FORMATS = [
    "%Y-%m-%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%d.%m.%Y %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%d.%m.%Y",
]


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


NUMERIC_OR_BOOL = {
    "page_views",
    "duration_sec",
    "blogs_viewed",
    "videos_viewed",
    "whitepapers_viewed",
    "converted",
    "features_used",
    "sessions",
    "time_sec",
    "resolved",
    "resolution_hours",
    "retained",
}


def read_source(result: synth.SynthResult, name: str) -> pa.Table:
    """A source as Arrow, the same way for every format (CSV strings stay strings)."""
    path = result.files[name]
    if path.suffix == ".csv":
        types = {c: pa.string() for c in COLUMNS[name] if c not in NUMERIC_OR_BOOL}
        return pa_csv.read_csv(
            path,
            convert_options=pa_csv.ConvertOptions(
                column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
            ),
        )
    if path.suffix == ".parquet":
        return pq.read_table(path)
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(f'SELECT * FROM "{name}"').to_arrow_table()


def norm(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return pc.utf8_upper(pc.utf8_trim_whitespace(values))


def parse_times(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Timestamps/dates in any of the three formats as datetime64[s] (NaT when empty)."""
    out = np.full(len(values), np.datetime64("NaT"), "datetime64[s]")
    for fmt in PARSE_FORMATS:
        parsed = pc.strptime(values, format=fmt, unit="s", error_is_null=True)
        got = parsed.to_numpy(zero_copy_only=False).astype("datetime64[s]")
        fill = np.isnat(out) & ~np.isnat(got)
        out[fill] = got[fill]
    return out


def parse_amounts(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.array([float(v.replace(",", "")) for v in values.to_pylist()])


def distinct(table: pa.Table) -> pa.Table:
    return table.group_by(table.column_names, use_threads=False).aggregate([])


def n_duplicates(table: pa.Table) -> int:
    return table.num_rows - distinct(table).num_rows


def matches(values: pa.Array | pa.ChunkedArray, pattern: str) -> np.ndarray:
    found = pc.fill_null(pc.match_substring_regex(values, pattern), False)
    return found.to_numpy(zero_copy_only=False)


# ------------------------------------------------------------------------------------------
# fixtures: one company per format, generated once
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def companies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, synth.SynthResult]:
    base = tmp_path_factory.mktemp("synth")
    return {
        fmt: generate(N, base / fmt, seed=SEED, fmt=fmt) for fmt in ("csv", "parquet", "duckdb")
    }


@pytest.fixture(scope="module")
def company(companies: dict[str, synth.SynthResult]) -> synth.SynthResult:
    return companies["csv"]


@pytest.fixture(scope="module")
def tables(company: synth.SynthResult) -> dict[str, pa.Table]:
    return {name: read_source(company, name) for name in SOURCE_NAMES}


@pytest.fixture(scope="module")
def dirt(company: synth.SynthResult) -> dict:
    return json.loads((company.out / "truth" / "dirt.json").read_text())


@pytest.fixture(scope="module")
def truth(company: synth.SynthResult) -> pa.Table:
    return pq.read_table(company.out / "truth" / "customers.parquet")


@pytest.fixture(scope="module")
def id_map(tables: dict[str, pa.Table]) -> dict[str, dict[str, str]]:
    """account -> crm and visitor -> crm, normalised."""
    m = tables["id_map"]
    crm = norm(m["crm_id"]).to_pylist()
    acc = m["account_id"].to_pylist()
    vis = m["visitor_id"].to_pylist()
    return {
        "account": {a: c for a, c in zip(acc, crm, strict=True) if a},
        "visitor": {v: c for v, c in zip(vis, crm, strict=True) if v},
    }


@pytest.fixture(scope="module")
def orders(tables: dict[str, pa.Table], dirt: dict) -> dict[str, np.ndarray]:
    """Distinct transaction rows, parsed."""
    t = distinct(tables["transactions"])
    ts = parse_times(t["ts"])
    return {
        "order_id": np.array(t["order_id"].to_pylist()),
        "account": np.array(norm(t["account_id"]).to_pylist()),
        "ts": ts,
        "amount": parse_amounts(t["amount"]),
        "future": ts >= np.datetime64(f"{dirt['transactions']['future_year']}-01-01"),
    }


# ------------------------------------------------------------------------------------------
# files, formats, project file
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet", "duckdb"])
def test_every_source_and_truth_file_is_written(
    companies: dict[str, synth.SynthResult], fmt: str
) -> None:
    result = companies[fmt]
    assert set(result.files) == set(SOURCE_NAMES)
    for name in SOURCE_NAMES:
        expected = "company.duckdb" if fmt == "duckdb" else f"{name}.{fmt}"
        assert result.files[name] == result.out / expected
        assert result.files[name].is_file()
        table = read_source(result, name)
        assert table.column_names == COLUMNS[name]
        assert table.num_rows == result.rows[name] > 0
        for col in STRING_COLUMNS & set(table.column_names):
            assert pa.types.is_string(table.schema.field(col).type), (name, col)
    assert result.rows["id_map"] == N
    assert result.config_path == result.out / "custval.toml"
    truth = pq.read_table(result.out / "truth" / "customers.parquet")
    assert truth.column_names == TRUTH_COLUMNS
    assert truth.num_rows == N
    for name in ("products.json", "next_products.parquet", "subscriptions.parquet"):
        assert (result.out / "truth" / name).is_file()
    assert pq.read_table(result.out / "truth" / "uplift.parquet").num_rows > 0
    params = json.loads((result.out / "truth" / "params.json").read_text())
    assert params["time_unit"] == "weeks"
    assert params["seed"] == SEED and params["n_customers"] == N
    assert params["end_date"] == END.isoformat()
    assert params["population"]["r"] == SynthParams().r
    assert params["population"]["plan_lambda"]["premium"] == 1.6
    # no temporary folder is left beside the output
    assert not [p for p in result.out.parent.iterdir() if p.name.startswith(".")]


def test_all_formats_hold_the_same_data(companies: dict[str, synth.SynthResult]) -> None:
    for name in SOURCE_NAMES:
        csv_table = read_source(companies["csv"], name)
        parquet = read_source(companies["parquet"], name)
        duck = read_source(companies["duckdb"], name)
        assert parquet.cast(csv_table.schema).equals(csv_table), name
        assert duck.cast(parquet.schema).equals(parquet), name


@pytest.mark.parametrize("fmt", ["csv", "parquet", "duckdb"])
def test_project_file_loads_and_points_at_the_files(
    companies: dict[str, synth.SynthResult], fmt: str
) -> None:
    from custval.config import load_project

    result = companies[fmt]
    text = result.config_path.read_text()
    raw = tomllib.loads(text)
    assert text.startswith(f"# custval project generated by `custval synth` (seed {SEED}, {N}")
    assert raw["as_of"] == AS_OF.isoformat()
    assert raw["time_unit"] == "weeks"
    assert raw["identity"] == {"map_source": "id_map", "primary": "crm_id"}
    assert set(raw["sources"]) == {
        "crm",
        "transactions",
        "web",
        "product",
        "service",
        "id_map",
        "products",
        "subscriptions",
        "treatments",
    }
    assert raw["sources"]["transactions"]["columns"] == {
        "customer_id": "account_id",
        "timestamp": "ts",
    }
    project = load_project(result.config_path)
    assert project.as_of == AS_OF
    assert {s.kind for s in project.sources.values()} == {
        "customers",
        "transactions",
        "web_sessions",
        "product_usage",
        "interactions",
        "id_map",
        "products",
        "subscriptions",
        "treatments",
    }
    assert raw["sources"]["subscriptions"]["id_namespace"] == "account_id"
    assert raw["sources"]["treatments"]["id_namespace"] == "crm_id"
    assert "id_namespace" not in raw["sources"]["products"]
    for key, spec in raw["sources"].items():
        if fmt == "duckdb":
            assert spec["uri"] == "duckdb://company.duckdb"
            assert spec["table"] in SOURCE_NAMES
            assert project.sources[key].uri == f"duckdb://{result.out.resolve()}/company.duckdb"
        else:
            assert not Path(spec["uri"]).is_absolute()
            assert Path(project.sources[key].uri).is_file()


def test_same_seed_same_files_other_seed_other_files(
    tmp_path: Path, company: synth.SynthResult
) -> None:
    again = generate(N, tmp_path / "again", seed=SEED)
    for name in SOURCE_NAMES:
        assert again.files[name].read_bytes() == company.files[name].read_bytes(), name
    truth_files = ("params.json", "dirt.json", "customers.parquet", "products.json")
    truth_files += ("next_products.parquet", "subscriptions.parquet", "uplift.parquet")
    for name in truth_files:
        assert (again.out / "truth" / name).read_bytes() == (
            company.out / "truth" / name
        ).read_bytes()
    assert (again.out / "custval.toml").read_text() == company.config_path.read_text()
    other = generate(N, tmp_path / "other", seed=SEED + 1)
    for name in SOURCE_NAMES:
        assert other.files[name].read_bytes() != company.files[name].read_bytes(), name


def test_progress_is_reported_in_order(tmp_path: Path) -> None:
    calls: list[tuple[str, float]] = []
    generate(300, tmp_path / "p", progress=lambda step, done: calls.append((step, done)))
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    names = list(dict.fromkeys(step for step, _ in calls))
    assert len(names) == 8  # the CLI's progress bar has eight steps
    assert set(ORIGINAL_SOURCES) - {"id_map"} <= set(names)


def test_an_interrupted_run_leaves_nothing_behind(tmp_path: Path) -> None:
    def stop(step: str, _done: float) -> None:
        if step == "web_sessions":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(500, tmp_path / "out", progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_rewriting_an_existing_folder_replaces_files(tmp_path: Path) -> None:
    out = tmp_path / "company"
    generate(200, out, seed=1)
    (out / "notes.txt").write_text("mine")
    second = generate(300, out, seed=2, fmt="parquet")
    assert (out / "notes.txt").read_text() == "mine"  # other files are left alone
    assert pq.read_table(second.files["id_map"]).num_rows == 300
    assert json.loads((out / "truth" / "params.json").read_text())["n_customers"] == 300
    assert 'uri = "id_map.parquet"' in second.config_path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["company"]


def test_tiny_companies_and_bad_arguments(tmp_path: Path) -> None:
    for n in (1, 2, 10):
        result = generate(n, tmp_path / f"n{n}", seed=3)
        assert result.rows["crm_customers"] >= n
        assert result.rows["id_map"] == n
        assert pq.read_table(result.out / "truth" / "customers.parquet").num_rows == n
    with pytest.raises(CustvalError, match="number of customers"):
        generate(0, tmp_path / "zero")
    with pytest.raises(CustvalError, match="number of customers"):
        generate(10_000_000, tmp_path / "big")
    with pytest.raises(CustvalError, match="format"):
        generate(10, tmp_path / "x", fmt="xlsx")  # type: ignore[arg-type]
    (tmp_path / "afile").write_text("")
    with pytest.raises(CustvalError, match="not a folder"):
        generate(10, tmp_path / "afile")


# ------------------------------------------------------------------------------------------
# ids
# ------------------------------------------------------------------------------------------


def test_ids_have_their_formats_and_dirty_ones_normalise(
    tables: dict[str, pa.Table], dirt: dict, truth: pa.Table
) -> None:
    crm_ids = set(truth["crm_id"].to_pylist())
    assert len(crm_ids) == N
    assert all(re.fullmatch(r"C\d{7}", c) for c in crm_ids)
    m = tables["id_map"]
    accounts = set(m["account_id"].drop_null().to_pylist())
    visitors = set(m["visitor_id"].drop_null().to_pylist())
    assert all(re.fullmatch(r"A\d{8}", a) for a in accounts)
    assert all(re.fullmatch(r"V[0-9A-F]{8}", v) for v in visitors)
    assert len(accounts) == m["account_id"].drop_null().length()  # unique
    assert len(visitors) == m["visitor_id"].drop_null().length()
    assert 0.75 < len(visitors) / N < 0.85  # ~20% without visitor id
    assert 0.88 < len(accounts) / N < 0.96  # ~8% without account
    assert dirt["id_map"]["without_visitor_id"] == N - len(visitors)
    assert dirt["id_map"]["without_account_id"] == N - len(accounts)

    checks = [
        ("crm_customers", "crm_id", crm_ids, 0.02),
        ("interactions", "crm_id", crm_ids, 0.02),
        ("id_map", "crm_id", crm_ids, 0.02),
        ("transactions", "account_id", accounts, 0.02),
        ("web_sessions", "visitor_id", visitors, 0.01),
        ("product_usage", "account_id", accounts, 0.0),
        ("subscriptions", "account_id", accounts, 0.02),
        ("treatments", "crm_id", crm_ids, 0.02),
    ]
    for name, col, valid, rate in checks:
        table = distinct(tables[name])
        raw = table[col]
        assert raw.null_count == 0
        normalised = norm(raw)
        assert set(normalised.to_pylist()) <= valid, (name, col)
        n_dirty = int(pc.sum(pc.not_equal(raw, normalised)).as_py() or 0)
        assert n_dirty == dirt[name].get("dirty_ids", {}).get(col, 0), (name, col)
        assert abs(n_dirty / table.num_rows - rate) < 0.01 + 3 * np.sqrt(rate / table.num_rows)
        if n_dirty >= 10:  # both kinds of dirt show once there are a few
            dirty = pc.filter(raw, pc.not_equal(raw, normalised)).to_pylist()
            assert any(d != d.strip() for d in dirty) and any(d.strip().islower() for d in dirty)

    orders = tables["transactions"]["order_id"].to_pylist()
    assert all(re.fullmatch(r"[OR]\d{9}", o) for o in orders)
    sessions = distinct(tables["web_sessions"])["session_id"]
    assert pc.count_distinct(sessions).as_py() == sessions.length()
    tickets = tables["interactions"]["ticket_id"]
    assert pc.count_distinct(tickets).as_py() == tickets.length()


def test_every_id_in_the_activity_sources_is_in_the_id_map(
    tables: dict[str, pa.Table], id_map: dict[str, dict[str, str]], truth: pa.Table
) -> None:
    assert set(norm(tables["transactions"]["account_id"]).to_pylist()) <= set(id_map["account"])
    assert set(norm(tables["product_usage"]["account_id"]).to_pylist()) <= set(id_map["account"])
    assert set(norm(tables["web_sessions"]["visitor_id"]).to_pylist()) <= set(id_map["visitor"])
    # customers without an account never buy
    has_account = set(id_map["account"].values())
    bought = pc.greater(truth["n_purchases"], 0).to_numpy(zero_copy_only=False)
    buyers = np.array(truth["crm_id"].to_pylist())[bought]
    assert set(buyers) <= has_account


# ------------------------------------------------------------------------------------------
# dirt
# ------------------------------------------------------------------------------------------


def test_duplicates_are_counted_exactly_and_spread_out(
    tables: dict[str, pa.Table], dirt: dict
) -> None:
    rates = {"transactions": 0.005, "web_sessions": 0.005, "crm_customers": 0.002}
    rates |= {"product_usage": 0.002, "interactions": 0.0, "id_map": 0.0}
    rates |= {"products": 0.0, "subscriptions": 0.002, "treatments": 0.002}
    for name, table in tables.items():
        dups = n_duplicates(table)
        assert dups == dirt[name]["duplicates"], name
        assert dirt[name]["rows"] == table.num_rows
        assert dups / table.num_rows == pytest.approx(rates[name], abs=0.003), name
    # copies sit next to their original, not all at the end
    ids = np.array(tables["transactions"]["order_id"].to_pylist())
    where = np.flatnonzero(ids[1:] == ids[:-1])
    assert where.size == dirt["transactions"]["duplicates"]
    assert where.min() < ids.size / 2


def test_refunds_future_rows_and_empty_values_match_dirt_json(
    tables: dict[str, pa.Table], orders: dict[str, np.ndarray], dirt: dict
) -> None:
    d = dirt["transactions"]
    negative = orders["amount"] < 0
    refund_ids = np.char.startswith(orders["order_id"].astype(str), "R")
    assert negative.sum() == refund_ids.sum() == d["refunds"]
    assert np.array_equal(negative, refund_ids)
    assert d["refunds"] / d["orders"] == pytest.approx(0.02, abs=0.006)
    assert d["future"] == orders["future"].sum() >= 1
    assert d["future"] == max(1, round(0.0001 * d["orders"]))
    future_years = orders["ts"][orders["future"]].astype("datetime64[Y]").astype(int) + 1970
    assert (future_years == d["future_year"]).all()
    assert d["orders"] + d["refunds"] + d["future"] + d["duplicates"] == d["rows"]

    t = distinct(tables["transactions"])
    for col in ("ts", "category", "channel", "product_id"):
        assert t[col].null_count == d["empty"][col], col
    for col in ("order_id", "account_id", "amount"):
        assert t[col].null_count == 0
    assert t["category"].null_count / t.num_rows == pytest.approx(0.01, abs=0.004)
    assert d["empty"]["ts"] <= max(3, 0.001 * t.num_rows)
    amounts = t["amount"]
    commas = matches(amounts, ",")
    assert commas.sum() == d["thousands_separator"]
    assert (np.abs(orders["amount"][commas]) >= 1000).all()
    assert (np.abs(orders["amount"][~commas]) < 1000).all()
    assert matches(amounts, r"^-?\d{1,3}(,\d{3})*\.\d{2}$").all()

    crm = distinct(tables["crm_customers"])
    for col in ("birth_date", "region"):
        assert crm[col].null_count == dirt["crm_customers"]["empty"][col]
    assert crm["birth_date"].null_count / N == pytest.approx(0.05, abs=0.015)
    assert crm["region"].null_count / N == pytest.approx(0.02, abs=0.01)
    for col in ("crm_id", "signup_date", "acquisition_channel", "plan"):
        assert crm[col].null_count == 0
    web = distinct(tables["web_sessions"])
    assert web["page_views"].null_count == dirt["web_sessions"]["empty"]["page_views"]


def test_refunds_follow_their_orders(orders: dict[str, np.ndarray]) -> None:
    refund = orders["amount"] < 0
    real = ~refund & ~orders["future"]
    # every refund is at most the biggest earlier order of its account, and dated before as_of
    for account, ts, amount in zip(
        orders["account"][refund], orders["ts"][refund], orders["amount"][refund], strict=True
    ):
        earlier = real & (orders["account"] == account) & (orders["ts"] < ts)
        assert earlier.any()
        assert -amount <= orders["amount"][earlier].max() + 1e-9
    assert (orders["ts"][refund] < np.datetime64(AS_OF)).all()


@pytest.mark.parametrize("name", list(DATE_COLUMNS))
def test_date_formats_are_mixed_and_never_ambiguous(
    tables: dict[str, pa.Table], dirt: dict, name: str
) -> None:
    table = distinct(tables[name])
    for col in DATE_COLUMNS[name]:
        values = table[col]
        timestamps = ("ts", "started_at", "opened_at", "cancelled_at", "sent_at")
        patterns = TS_PATTERNS if col in timestamps else DATE_PATTERNS
        counts = {k: int(matches(values, p).sum()) for k, p in patterns.items()}
        assert sum(counts.values()) == values.length() - values.null_count
        expected = dict(dirt[name]["date_formats"][col])
        if col == "started_at" and name == "subscriptions":
            # older snapshots of cancelled subscriptions repeat their (ISO) start
            expected["iso"] += dirt[name]["stale_snapshots"]
        assert counts == expected, (name, col)
        total = sum(counts.values())
        assert counts["iso"] / total == pytest.approx(0.8, abs=0.05)
        assert counts["slash"] / total == pytest.approx(0.1, abs=0.04)
        assert not matches(values, r"^\d{2}/\d{2}/\d{4}").any()
        parsed = parse_times(values)
        assert np.isnat(parsed).sum() == values.null_count


# ------------------------------------------------------------------------------------------
# ground truth
# ------------------------------------------------------------------------------------------


def test_clean_orders_per_customer_equal_the_truth(
    orders: dict[str, np.ndarray], truth: pa.Table, id_map: dict[str, dict[str, str]]
) -> None:
    real = (orders["amount"] > 0) & ~orders["future"]
    crm = np.array([id_map["account"][a] for a in orders["account"][real]])
    ids, counts = np.unique(crm, return_counts=True)
    got = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    expected = dict(zip(truth["crm_id"].to_pylist(), truth["n_purchases"].to_pylist(), strict=True))
    assert {k: got.get(k, 0) for k in expected} == expected
    spend: dict[str, float] = {}
    for c, a in zip(crm, orders["amount"][real], strict=True):
        spend[c] = spend.get(c, 0.0) + a
    for c, total in zip(truth["crm_id"].to_pylist(), truth["total_spend"].to_pylist(), strict=True):
        assert spend.get(c, 0.0) == pytest.approx(total, abs=0.005)
    assert 8 < sum(expected.values()) / N < 12  # ~10 orders per customer


def test_nothing_happens_after_end_date_but_the_planted_future_rows(
    tables: dict[str, pa.Table], orders: dict[str, np.ndarray], truth: pa.Table
) -> None:
    as_of = np.datetime64(AS_OF, "s")
    ts = orders["ts"][~orders["future"]]
    assert (ts[~np.isnat(ts)] < as_of).all()
    for name, cols in DATE_COLUMNS.items():
        for col in cols:
            parsed = parse_times(tables[name][col])
            if name == "transactions":
                continue
            assert (parsed[~np.isnat(parsed)] < as_of).all(), (name, col)
    first = truth["first_purchase"].to_numpy(zero_copy_only=False)
    death = truth["death_time"].to_numpy(zero_copy_only=False)
    assert (first[~np.isnat(first)] < as_of).all()
    assert (death[~np.isnat(death)] < as_of).all()
    start = np.datetime64(END.replace(year=END.year - 3), "s")
    signup = parse_times(distinct(tables["crm_customers"])["signup_date"])
    assert (signup >= start).all()


def test_truth_is_internally_consistent(truth: pa.Table) -> None:
    t = {c: truth[c].to_numpy(zero_copy_only=False) for c in truth.column_names}
    bought = t["n_purchases"] > 0
    assert np.array_equal(bought, ~np.isnat(t["first_purchase"]))
    dead = ~np.isnat(t["death_time"])
    assert not (dead & t["alive_at_end"]).any()
    assert (t["death_time"][dead] >= t["first_purchase"][dead]).all()
    assert (t["n_purchases"][dead] >= 1).all()
    assert np.allclose(t["expected_spend"], SynthParams().p / t["spend_nu"])
    assert ((t["p_dropout"] > 0) & (t["p_dropout"] <= 1)).all()
    assert (t["lambda_per_week"] > 0).all()
    assert (t["total_spend"][~bought] == 0).all()
    assert 0.2 < t["alive_at_end"][bought].mean() < 0.8


def test_profile_and_behaviour_carry_signal(
    tables: dict[str, pa.Table], truth: pa.Table, id_map: dict[str, dict[str, str]]
) -> None:
    crm = distinct(tables["crm_customers"])
    plan = dict(zip(norm(crm["crm_id"]).to_pylist(), crm["plan"].to_pylist(), strict=True))
    segment = dict(
        zip(norm(crm["crm_id"]).to_pylist(), crm["segment_label"].to_pylist(), strict=True)
    )
    ids = truth["crm_id"].to_pylist()
    lam = truth["lambda_per_week"].to_numpy()
    spend = truth["total_spend"].to_numpy()
    p_drop = truth["p_dropout"].to_numpy()
    plans = np.array([plan[c] for c in ids])
    assert lam[plans == "premium"].mean() > 1.5 * lam[plans == "free"].mean()
    assert spend[plans == "premium"].mean() > spend[plans == "free"].mean()
    labels = np.array([segment[c] or "" for c in ids])
    assert 0.25 < (labels != "").mean() < 0.35
    assert spend[labels == "vip"].mean() > 2 * spend[labels == "occasional"].mean()

    def rank_corr(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.corrcoef(np.argsort(np.argsort(x)), np.argsort(np.argsort(y)))[0, 1])

    index = {c: i for i, c in enumerate(ids)}
    web = distinct(tables["web_sessions"])
    sessions = np.bincount(
        [index[id_map["visitor"][v]] for v in norm(web["visitor_id"]).to_pylist()], minlength=N
    )
    has_visitor = np.isin(ids, list(id_map["visitor"].values()))
    assert rank_corr(sessions[has_visitor], lam[has_visitor]) > 0.3
    usage = tables["product_usage"]
    days = np.bincount(
        [index[id_map["account"][a]] for a in usage["account_id"].to_pylist()], minlength=N
    )
    assert rank_corr(days[spend > 0], spend[spend > 0]) > 0.5
    assert rank_corr(sessions[has_visitor & (spend > 0)], spend[has_visitor & (spend > 0)]) > 0.5
    tickets = tables["interactions"]
    per_customer = np.bincount([index[c] for c in norm(tickets["crm_id"]).to_pylist()], minlength=N)
    high = p_drop > np.quantile(p_drop, 0.8)
    low = p_drop < np.quantile(p_drop, 0.2)
    assert per_customer[high].mean() > 1.5 * per_customer[low].mean()
    converted = pc.sum(web["converted"]).as_py()
    web_orders = distinct(tables["transactions"]).filter(pc.equal(pc.field("channel"), "web"))
    assert 0 < converted <= web_orders.num_rows


# ------------------------------------------------------------------------------------------
# the generative model, on 50,000 simulated customers (no files)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def population() -> tuple[synth._Customers, synth._Orders, synth._Clock]:
    params = SynthParams()
    clock = synth._Clock.from_end(END, params.history_years)
    rng = np.random.default_rng(11)
    customers = synth._simulate_customers(rng, 50_000, params, clock)
    orders = synth._simulate_orders(rng, customers, params, clock)
    return customers, orders, clock


def test_purchase_counts_match_the_model_expectation(
    population: tuple[synth._Customers, synth._Orders, synth._Clock],
) -> None:
    cust, _, clock = population
    bought = cust.first >= 0
    weeks = (clock.horizon - cust.first[bought]) / synth.WEEK
    lam, p = cust.lam[bought], cust.p_drop[bought]
    # first purchase, then repeats until a dropout after any purchase (the first included)
    expected = 1 + (1 - p) / p * (1 - np.exp(-lam * p * weeks))
    assert cust.n_purchases[bought].sum() / expected.sum() == pytest.approx(1.0, abs=0.03)
    # and P(alive at the end) = (1 - p) exp(-lambda p t) integrated the same way
    alive = (1 - p) * np.exp(-lam * p * weeks)
    assert cust.alive[bought].mean() == pytest.approx(alive.mean(), abs=0.015)
    assert 8.0 < cust.n_purchases.mean() < 12.0


def test_population_parameters_are_recovered(
    population: tuple[synth._Customers, synth._Orders, synth._Clock],
) -> None:
    cust, orders, _ = population
    params = SynthParams()
    lam_mult = (
        synth._lookup(params.plan_lambda, synth.PLANS)[cust.plan]
        * synth._lookup(params.channel_lambda, synth.ACQUISITION_CHANNELS)[cust.channel]
        * synth._lookup(params.region_lambda, synth.REGIONS)[cust.region]
    )
    base = cust.lam / lam_mult  # Gamma(r, alpha): mean r/alpha, variance r/alpha^2
    assert base.mean() == pytest.approx(params.r / params.alpha, rel=0.03)
    assert base.var() == pytest.approx(params.r / params.alpha**2, rel=0.08)
    free, premium = cust.plan == 0, cust.plan == 2
    assert cust.lam[premium].mean() / cust.lam[free].mean() == pytest.approx(1.6 / 0.6, rel=0.1)
    assert cust.p_drop[premium].mean() < cust.p_drop[free].mean()
    basic_search = (cust.plan == 1) & (cust.channel == 0)
    a, b = params.a, params.b
    assert cust.p_drop[basic_search].mean() == pytest.approx(a / (a + b), rel=0.05)
    # Gamma-Gamma: order values average p / nu per customer, nu averages q / gamma_i
    value = orders.cents / 100.0
    assert value.sum() / (params.p / cust.nu[orders.cust]).sum() == pytest.approx(1.0, abs=0.01)
    assert value.mean() > 0.8 * params.p * params.gamma / (params.q - 1)
    assert (params.p / cust.nu)[premium].mean() > (params.p / cust.nu)[free].mean()
    assert (orders.cents > 0).all()


# ------------------------------------------------------------------------------------------
# string building
# ------------------------------------------------------------------------------------------


def test_amounts_are_formatted_with_thousands_separators() -> None:
    cents = np.array([0, 5, 99_999, 100_000, 123_456_789, -123_450, -5, 100_000_000_000 - 1])
    assert base._format_amounts(cents).to_pylist() == [
        "0.00",
        "0.05",
        "999.99",
        "1,000.00",
        "1,234,567.89",
        "-1,234.50",
        "-0.05",
        "999,999,999.99",
    ]


def test_times_are_formatted_in_three_formats() -> None:
    secs = np.array(["2024-03-05T07:08:09", "1999-12-31T23:59:59", "2099-01-02T00:00:00"])
    seconds = secs.astype("datetime64[s]").astype(np.int64)
    fmt = np.array([0, 1, 2], np.int8)
    valid = np.array([True, True, False])
    assert base._format_times(seconds, fmt, with_time=True).to_pylist() == [
        "2024-03-05 07:08:09",
        "1999/12/31 23:59",
        "02.01.2099 00:00",
    ]
    assert base._format_times(seconds, fmt, valid, with_time=False).to_pylist() == [
        "2024-03-05",
        "1999/12/31",
        None,
    ]


def test_dirty_ids_always_differ_and_normalise_back() -> None:
    mat = base._hex_matrix(np.arange(5000, dtype=np.uint64) * 2654435761 % 2**32, ord("V"))
    clean = base._strings(mat).to_pylist()
    dirty = base._dirty_ids(mat, np.random.default_rng(0)).to_pylist()
    assert all(d != c and d.strip().upper() == c for d, c in zip(dirty, clean, strict=True))
    assert {d[0] == " " for d in dirty} == {True, False}
    assert {d[-1] == " " for d in dirty} == {True, False}


def test_other_end_dates_move_the_history(tmp_path: Path) -> None:
    end = date(2024, 2, 29)
    result = generate(300, tmp_path / "leap", end_date=end, fmt="parquet")
    assert tomllib.loads(result.config_path.read_text())["as_of"] == "2024-03-01"
    t = pq.read_table(result.files["transactions"])
    ts = parse_times(t["ts"])
    future = ts >= np.datetime64("2099-01-01")
    assert (ts[~future & ~np.isnat(ts)] < np.datetime64("2024-03-01")).all()
    signup = parse_times(pq.read_table(result.files["crm_customers"])["signup_date"])
    assert (signup >= np.datetime64("2021-02-28")).all()


def test_product_use_fades_before_a_dropout_only_when_asked() -> None:
    """With ``usage_fade_weeks`` a leaver's days of use thin out in a straight line to none
    at the end of her use (two weeks after the dropout); a stayer's are all kept; the default
    (0) draws nothing and changes nothing."""
    from types import SimpleNamespace

    from custval.data.synth import DAY, _faded

    assert SynthParams().usage_fade_weeks == 0.0
    death_day = 1000
    cust = SimpleNamespace(death=np.array([death_day * DAY, -1]))
    rng = np.random.default_rng(0)
    n = 200_000
    owner = np.repeat([0, 1], n)
    day = np.tile(rng.integers(death_day - 200, death_day + 14, n), 2)
    kept_owner, kept_day = _faded(rng, cust, owner, day, weeks=12)
    assert (kept_owner == 1).sum() == n  # the stayer keeps every day
    leaver = kept_day[kept_owner == 0]
    end, span = death_day + 14, 12 * 7 + 14
    before = (day[:n] < end - span).sum()
    assert (leaver < end - span).sum() == before  # before the fade: all kept
    near = (day[:n] >= end - 14).sum()  # the last two weeks: kept with d / 98, 8% on average
    assert (leaver >= end - 14).sum() < 0.1 * near
    mid = (day[:n] >= end - span) & (day[:n] < end - span // 2)
    share = ((leaver >= end - span) & (leaver < end - span // 2)).sum() / mid.sum()
    assert share == pytest.approx(0.75, abs=0.03)  # the fade's first half: 1 down to 1/2
