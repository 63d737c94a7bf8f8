"""The prediction store: every run's predictions and reasons, in DuckDB or PostgreSQL.

One schema on both engines, created and upgraded by numbered migrations recorded in
``schema_version`` (applied when the store is opened). A run is all-or-nothing: its row in
``runs`` is written first with status ``running`` (so that a failure can be recorded), then its
predictions, reasons and summaries go in one transaction that also marks it ``succeeded``; on
any error the transaction is rolled back and the run is marked ``failed`` with the error. The BI
views read succeeded runs only, so a reader sees the previous run or the new one, never half.
Bulk rows go through Arrow into DuckDB and through ``COPY`` into PostgreSQL.

Tables and views are documented in ``docs/store.md``.

Example
-------
>>> with open_store("custval.duckdb") as store:  # doctest: +SKIP
...     run_id = store.write_run(kind="score", predictions=table, reasons=reasons_table)
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from custval.config import mask_url
from custval.errors import CustvalError
from custval.store.dashboard import SUMMARY_COLUMNS
from custval.store.dashboard import migration_12 as dashboard_migration
from custval.store.events import migration_13 as events_migration
from custval.store.forecasts import BI_VIEWS_9, FORECAST_TABLES, latest_forecast
from custval.store.forecasts import migration as forecast_migration
from custval.store.monitoring import BI_VIEWS_11, DECISION_COLUMNS, MONITORING_TABLES
from custval.store.monitoring import migration as monitoring_migration
from custval.store.monitoring import migration_11 as monitoring_migration_11

__all__ = [
    "BI_ALIASES",
    "BI_VERSION",
    "BI_VIEWS",
    "MIGRATIONS",
    "Store",
    "directions",
    "long_reasons",
    "open_store",
]

# Columns of the bulk tables, in order; types as both engines spell them.
PREDICTION_COLUMNS = {
    "run_id": "TEXT",
    "customer_id": "TEXT",
    "as_of": "DATE",
    "value_probability": "DOUBLE PRECISION",
    "value_class": "INTEGER",
    "clv_expected": "DOUBLE PRECISION",
    "clv_lower": "DOUBLE PRECISION",
    "clv_upper": "DOUBLE PRECISION",
    "p_alive": "DOUBLE PRECISION",
    "expected_purchases": "DOUBLE PRECISION",
    "segment": "TEXT",
}
REASON_COLUMNS = {
    "run_id": "TEXT",
    "customer_id": "TEXT",
    "rank": "INTEGER",
    "feature": "TEXT",
    "feature_value": "TEXT",
    "contribution": "DOUBLE PRECISION",
    "direction": "TEXT",
    "text": "TEXT",
}
IMPORTANCE_COLUMNS = {
    "run_id": "TEXT",
    "feature": "TEXT",
    "mean_abs_contribution": "DOUBLE PRECISION",
    "share": "DOUBLE PRECISION",
}
PROFILE_COLUMNS = {
    "run_id": "TEXT",
    "feature": "TEXT",
    "kind": "TEXT",
    "statistic": "TEXT",
    "value": "DOUBLE PRECISION",
    "category": "TEXT",
}


SEGMENT_COLUMNS = {
    "run_id": "TEXT",
    "customer_id": "TEXT",
    "segment": "INTEGER",
    "segment_name": "TEXT",
}
SEGMENT_PROFILE_COLUMNS = {
    "run_id": "TEXT",
    "segment": "INTEGER",
    "name": "TEXT",
    "rule": "TEXT",
    "customers": "BIGINT",
    "share": "DOUBLE PRECISION",
    "revenue_share": "DOUBLE PRECISION",
    "clv_share": "DOUBLE PRECISION",
    "distinctive": "TEXT",
    "profile": "TEXT",
}

# What the actions of a scoring run add (issue 17): churn risk, category propensity, next best
# products, the targeting list and the playbooks. ``contact`` and the classes are 0/1 integers:
# one type on both engines.
CHURN_COLUMNS = {
    "run_id": "TEXT",
    "customer_id": "TEXT",
    "p_churn": "DOUBLE PRECISION",
    "churn_class": "INTEGER",
    "label_kind": "TEXT",
    "horizon_days": "INTEGER",
    "p_alive": "DOUBLE PRECISION",
}
PROPENSITY_COLUMNS = {
    "run_id": "TEXT",
    "customer_id": "TEXT",
    "category": "TEXT",
    "rank": "INTEGER",
    "probability": "DOUBLE PRECISION",
    "reason": "TEXT",
}
OFFER_COLUMNS = {
    "run_id": "TEXT",
    "customer_id": "TEXT",
    "rank": "INTEGER",
    "product_id": "TEXT",
    "product_name": "TEXT",
    "category": "TEXT",
    "score": "DOUBLE PRECISION",
    "source": "TEXT",
    "reason": "TEXT",
}
TARGETING_COLUMNS = {
    "run_id": "TEXT",
    "customer_id": "TEXT",
    "method": "TEXT",
    "priority": "INTEGER",
    "contact": "INTEGER",
    "uplift": "DOUBLE PRECISION",
    "p_churn": "DOUBLE PRECISION",
    "value": "DOUBLE PRECISION",
    "cost": "DOUBLE PRECISION",
    "expected_profit": "DOUBLE PRECISION",
    "reason": "TEXT",
}
PLAYBOOK_COLUMNS = {
    "run_id": "TEXT",
    "segment": "TEXT",
    "customers": "BIGINT",
    "aspect": "TEXT",
    "recommendation": "TEXT",
    "rule": "TEXT",
    "numbers": "TEXT",
}
CUSTOMER_PLAYBOOK_COLUMNS = {
    "run_id": "TEXT",
    "customer_id": "TEXT",
    "segment": "TEXT",
    "offer": "TEXT",
    "channel": "TEXT",
    "next_purchase_days": "DOUBLE PRECISION",
    "retention": "TEXT",
    "reason": "TEXT",
}
#: what ``Store.recommendations`` answers per customer: (key, table, the order of a list; None
#: for one row) (custval.store.snapshot reads the same)
RECOMMENDATION_PARTS = (
    ("offers", "next_best_offers", "rank"),
    ("propensities", "propensities", "rank"),
    ("churn", "churn_risk", None),
    ("playbook", "customer_playbooks", None),
    ("churn_reasons", "churn_reasons", "rank"),
)
ACTION_TABLES = {
    "churn_risk": CHURN_COLUMNS,
    "churn_reasons": REASON_COLUMNS,
    "propensities": PROPENSITY_COLUMNS,
    "next_best_offers": OFFER_COLUMNS,
    "targeting": TARGETING_COLUMNS,
    "playbooks": PLAYBOOK_COLUMNS,
    "customer_playbooks": CUSTOMER_PLAYBOOK_COLUMNS,
}

#: the bulk tables and their columns
BULK_TABLES = {
    "predictions": PREDICTION_COLUMNS,
    "reasons": REASON_COLUMNS,
    "clv_reasons": REASON_COLUMNS,
    "feature_importance": IMPORTANCE_COLUMNS,
    "value_profiles": PROFILE_COLUMNS,
    "segments": SEGMENT_COLUMNS,
    "segment_profiles": SEGMENT_PROFILE_COLUMNS,
    **ACTION_TABLES,
    **FORECAST_TABLES,
    **MONITORING_TABLES,
    "run_summaries": SUMMARY_COLUMNS,
}
_ARROW_TYPES = {
    "TEXT": pa.string(),
    "DOUBLE PRECISION": pa.float64(),
    "INTEGER": pa.int32(),
    "DATE": pa.date32(),
    "BIGINT": pa.int64(),
    "TIMESTAMP": pa.timestamp("us"),
}


def directions(contribution: Any) -> pa.Array:
    """The ``direction`` column of ``reasons``: raises, lowers or none, by the sign."""
    words = np.array(["lowers", "none", "raises"])
    return pa.array(words[np.sign(np.asarray(contribution, dtype=np.float64)).astype(np.int64) + 1])


def long_reasons(explained: Any, ids: Any, k: int) -> pa.Table:
    """The reasons of :func:`custval.models.explain.reasons` (one column set per rank) as the
    store's long table: customer_id, rank, feature, feature_value, contribution, direction, text;
    customer by customer, rank 1 first. Built in Arrow: no Python strings per row."""

    n = len(ids)
    # row r of rank i sits at i * n + r in the concatenated ranks
    order = pa.array((np.arange(n)[:, None] + n * np.arange(k)[None, :]).ravel())
    long: dict[str, Any] = {
        "customer_id": pa.array(ids, pa.string()).take(pa.array(np.repeat(np.arange(n), k))),
        "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), n)),
    }
    for col, suffix in (("feature", "_feature"), ("feature_value", "_value"), ("text", "")):
        ranks = [pa.array(explained[f"reason_{i}{suffix}"], pa.string()) for i in range(1, k + 1)]
        long[col] = pa.concat_arrays(ranks).take(order)
    contribution = np.column_stack(
        [explained[f"reason_{i}_contribution"].to_numpy(np.float64) for i in range(1, k + 1)]
    ).ravel()
    long["contribution"] = pa.array(contribution)
    long["direction"] = directions(contribution)
    return pa.table(long)


def _create(name: str, cols: dict[str, str]) -> str:
    return f"CREATE TABLE {name} (" + ", ".join(f"{c} {t}" for c, t in cols.items()) + ")"


#: The BI contract's version and its views, in ``bi_contract``. A later change is additive (a
#: new column or view); a breaking change makes ``v2_*`` views beside these (docs/bi.md).
BI_VERSION = "v1"
_BI_VIEWS_7 = {
    "v1_runs": "succeeded run",
    "v1_latest_predictions": "customer, in the latest succeeded scoring run",
    "v1_customer_value_summary": "scoring run and value class",
    "v1_reason_summary": "scoring run, value class, feature and direction",
    "v1_latest_segments": "customer, in the latest succeeded segmentation run",
    "v1_latest_segment_profiles": "segment, in the latest succeeded segmentation run",
    "v1_segment_value_summary": "scoring run and segment",
}
# added by migration 8 (additive: v1 grows new views, the old ones are unchanged)
_BI_VIEWS_8 = {
    "v1_latest_churn_risk": "customer, in the latest succeeded scoring run",
    "v1_churn_summary": "scoring run and churn class",
    "v1_latest_propensities": "customer and category, in the latest succeeded scoring run",
    "v1_latest_next_best_offers": "customer and rank, in the latest succeeded scoring run",
    "v1_latest_targeting": "customer, in the latest succeeded run with a targeting list",
    "v1_latest_playbooks": "segment and aspect, in the latest succeeded scoring run",
    "v1_latest_customer_playbooks": "customer, in the latest succeeded scoring run",
}
BI_VIEWS = {**_BI_VIEWS_7, **_BI_VIEWS_8, **BI_VIEWS_9, **BI_VIEWS_11}
#: the views of migrations 1 and 5, kept as aliases of their v1 views
BI_ALIASES = {
    "latest_predictions": "v1_latest_predictions",
    "customer_value_summary": "v1_customer_value_summary",
    "reason_summary": "v1_reason_summary",
    "latest_segment_profiles": "v1_latest_segment_profiles",
    "segment_value_summary": "v1_segment_value_summary",
}

# the latest succeeded run of a kind: the last finished (ties: the larger run_id), the same
# rule as Store.latest_run
_LATEST = "(SELECT run_id FROM v1_runs WHERE kind = '{kind}' AND is_latest)"
_BI_V1 = [
    """CREATE TABLE bi_contract (
        version TEXT NOT NULL,
        view_name TEXT NOT NULL,
        grain TEXT NOT NULL,
        PRIMARY KEY (version, view_name)
    )""",
    *(
        f"INSERT INTO bi_contract VALUES ('{BI_VERSION}', '{view}', 'one row per {grain}')"
        for view, grain in _BI_VIEWS_7.items()
    ),
    """CREATE VIEW v1_runs AS
        SELECT run_id, kind, started_at, finished_at, model_version, as_of, n_customers,
               ROW_NUMBER() OVER (PARTITION BY kind ORDER BY finished_at DESC, run_id DESC) = 1
                   AS is_latest
        FROM runs WHERE status = 'succeeded'""",
    f"""CREATE VIEW v1_latest_predictions AS
        SELECT run_id, customer_id, as_of, value_probability, value_class, clv_expected,
               clv_lower, clv_upper, p_alive, expected_purchases, segment
        FROM predictions WHERE run_id = {_LATEST.format(kind="score")}""",
    """CREATE VIEW v1_customer_value_summary AS
        SELECT p.run_id, r.as_of, r.is_latest, p.value_class, COUNT(*) AS customers,
               AVG(p.value_probability) AS mean_probability,
               SUM(p.clv_expected) AS clv_total, AVG(p.clv_expected) AS clv_mean,
               AVG(p.p_alive) AS mean_p_alive
        FROM predictions p JOIN v1_runs r ON p.run_id = r.run_id
        WHERE r.kind = 'score'
        GROUP BY p.run_id, r.as_of, r.is_latest, p.value_class""",
    """CREATE VIEW v1_reason_summary AS
        SELECT s.run_id, r.is_latest, p.value_class, s.feature, s.direction,
               COUNT(*) AS customers,
               SUM(CASE WHEN s.rank = 1 THEN 1 ELSE 0 END) AS as_first_reason
        FROM reasons s
        JOIN predictions p ON p.run_id = s.run_id AND p.customer_id = s.customer_id
        JOIN v1_runs r ON r.run_id = s.run_id
        WHERE r.kind = 'score'
        GROUP BY s.run_id, r.is_latest, p.value_class, s.feature, s.direction""",
    f"""CREATE VIEW v1_latest_segments AS
        SELECT run_id, customer_id, segment, segment_name
        FROM segments WHERE run_id = {_LATEST.format(kind="segment")}""",
    f"""CREATE VIEW v1_latest_segment_profiles AS
        SELECT run_id, segment, name, rule, customers, share, revenue_share, clv_share,
               distinctive, profile
        FROM segment_profiles WHERE run_id = {_LATEST.format(kind="segment")}""",
    """CREATE VIEW v1_segment_value_summary AS
        SELECT p.run_id, r.as_of, r.is_latest, p.segment, COUNT(*) AS customers,
               SUM(p.value_class) AS high_value_customers,
               AVG(p.value_probability) AS mean_probability,
               SUM(p.clv_expected) AS clv_total, AVG(p.clv_expected) AS clv_mean,
               AVG(p.p_alive) AS mean_p_alive
        FROM predictions p JOIN v1_runs r ON p.run_id = r.run_id
        WHERE r.kind = 'score' AND p.segment IS NOT NULL
        GROUP BY p.run_id, r.as_of, r.is_latest, p.segment""",
]


_LATEST_SCORE = _LATEST.format(kind="score")
# the targeting list comes from `custval score` (when the project asks) or `custval target`
_LATEST_TARGETING = """(SELECT run_id FROM v1_runs
    WHERE kind IN ('score', 'target') AND run_id IN (SELECT run_id FROM targeting)
    ORDER BY finished_at DESC, run_id DESC LIMIT 1)"""
_ACTIONS_V1 = [
    *(_create(name, cols) for name, cols in ACTION_TABLES.items()),
    *(
        f"CREATE INDEX {name}_run ON {name} (run_id, customer_id)"
        for name, cols in ACTION_TABLES.items()
        if "customer_id" in cols
    ),
    *(
        f"INSERT INTO bi_contract VALUES ('{BI_VERSION}', '{view}', 'one row per {grain}')"
        for view, grain in _BI_VIEWS_8.items()
    ),
    f"""CREATE VIEW v1_latest_churn_risk AS
        SELECT run_id, customer_id, p_churn, churn_class, label_kind, horizon_days, p_alive
        FROM churn_risk WHERE run_id = {_LATEST_SCORE}""",
    """CREATE VIEW v1_churn_summary AS
        SELECT c.run_id, r.as_of, r.is_latest, c.churn_class, c.label_kind,
               COUNT(*) AS customers, AVG(c.p_churn) AS mean_p_churn,
               AVG(c.p_alive) AS mean_p_alive
        FROM churn_risk c JOIN v1_runs r ON c.run_id = r.run_id
        WHERE r.kind = 'score'
        GROUP BY c.run_id, r.as_of, r.is_latest, c.churn_class, c.label_kind""",
    f"""CREATE VIEW v1_latest_propensities AS
        SELECT run_id, customer_id, category, rank, probability, reason
        FROM propensities WHERE run_id = {_LATEST_SCORE}""",
    f"""CREATE VIEW v1_latest_next_best_offers AS
        SELECT run_id, customer_id, rank, product_id, product_name, category, score, source,
               reason
        FROM next_best_offers WHERE run_id = {_LATEST_SCORE}""",
    f"""CREATE VIEW v1_latest_targeting AS
        SELECT run_id, customer_id, method, priority, contact, uplift, p_churn, value, cost,
               expected_profit, reason
        FROM targeting WHERE run_id = {_LATEST_TARGETING}""",
    f"""CREATE VIEW v1_latest_playbooks AS
        SELECT run_id, segment, customers, aspect, recommendation, rule, numbers
        FROM playbooks WHERE run_id = {_LATEST_SCORE}""",
    f"""CREATE VIEW v1_latest_customer_playbooks AS
        SELECT run_id, customer_id, segment, offer, channel, next_purchase_days, retention,
               reason
        FROM customer_playbooks WHERE run_id = {_LATEST_SCORE}""",
]


def _bi_aliases() -> list[str]:
    """The unversioned views redefined over their v1 views (same grain, more columns)."""
    return [
        sql
        for alias, view in BI_ALIASES.items()
        for sql in (f"DROP VIEW {alias}", f"CREATE VIEW {alias} AS SELECT * FROM {view}")
    ]


#: ``"postgres" + ONLY_ON + sql`` is a statement of a migration for that engine only
ONLY_ON = " only: "

# Each migration is a list of statements valid on DuckDB and PostgreSQL (or marked for one
# engine, ONLY_ON); never edit a released one, add the next.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            status TEXT NOT NULL,
            model_version TEXT,
            as_of DATE,
            n_customers BIGINT,
            config_hash TEXT,
            error TEXT
        )""",
        """CREATE TABLE models (
            version TEXT PRIMARY KEY,
            created_at TIMESTAMP,
            manifest TEXT,
            metrics TEXT
        )""",
        _create("predictions", PREDICTION_COLUMNS),
        _create("reasons", REASON_COLUMNS),
        _create("feature_importance", IMPORTANCE_COLUMNS),
        _create("value_profiles", PROFILE_COLUMNS),
        "CREATE INDEX predictions_run ON predictions (run_id, customer_id)",
        "CREATE INDEX reasons_run ON reasons (run_id, customer_id)",
        """CREATE VIEW latest_predictions AS
            SELECT p.* FROM predictions p
            JOIN (SELECT run_id FROM runs WHERE status = 'succeeded' AND kind = 'score'
                  ORDER BY finished_at DESC LIMIT 1) r ON p.run_id = r.run_id""",
        """CREATE VIEW customer_value_summary AS
            SELECT p.run_id, p.value_class, COUNT(*) AS customers,
                   AVG(p.value_probability) AS mean_probability,
                   SUM(p.clv_expected) AS clv_total, AVG(p.clv_expected) AS clv_mean,
                   AVG(p.p_alive) AS mean_p_alive
            FROM predictions p JOIN runs r ON p.run_id = r.run_id
            WHERE r.status = 'succeeded'
            GROUP BY p.run_id, p.value_class""",
        """CREATE VIEW reason_summary AS
            SELECT s.run_id, p.value_class, s.feature, s.direction, COUNT(*) AS customers,
                   SUM(CASE WHEN s.rank = 1 THEN 1 ELSE 0 END) AS as_first_reason
            FROM reasons s
            JOIN predictions p ON p.run_id = s.run_id AND p.customer_id = s.customer_id
            JOIN runs r ON r.run_id = s.run_id
            WHERE r.status = 'succeeded'
            GROUP BY s.run_id, p.value_class, s.feature, s.direction""",
    ],
    [
        # the REST service's keys, as hashes only (custval.api.keys)
        """CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            scope TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            created_at TIMESTAMP NOT NULL,
            revoked_at TIMESTAMP
        )""",
        # the customer-base models a scoring run fitted (JSON), for the service's CLV
        "ALTER TABLE runs ADD COLUMN clv_models TEXT",
    ],
    [
        # segmentation runs (custval segment): each customer's segment, each segment's profile
        _create("segments", SEGMENT_COLUMNS),
        _create("segment_profiles", SEGMENT_PROFILE_COLUMNS),
        "CREATE INDEX segments_run ON segments (run_id, customer_id)",
    ],
    [
        # how a segmentation run places new customers (JSON: preparation and centroids)
        "ALTER TABLE runs ADD COLUMN segment_model TEXT",
    ],
    [
        # the BI views of segments: the latest segmentation's profiles, and value by segment
        """CREATE VIEW latest_segment_profiles AS
            SELECT g.* FROM segment_profiles g
            JOIN (SELECT run_id FROM runs WHERE status = 'succeeded' AND kind = 'segment'
                  ORDER BY finished_at DESC LIMIT 1) r ON g.run_id = r.run_id""",
        """CREATE VIEW segment_value_summary AS
            SELECT p.run_id, p.segment, COUNT(*) AS customers,
                   SUM(p.value_class) AS high_value_customers,
                   AVG(p.value_probability) AS mean_probability,
                   SUM(p.clv_expected) AS clv_total, AVG(p.clv_expected) AS clv_mean,
                   AVG(p.p_alive) AS mean_p_alive
            FROM predictions p JOIN runs r ON p.run_id = r.run_id
            WHERE r.status = 'succeeded' AND r.kind = 'score' AND p.segment IS NOT NULL
            GROUP BY p.run_id, p.segment""",
    ],
    [
        # the reasons for each customer's CLV when a machine-learned model predicted it
        _create("clv_reasons", REASON_COLUMNS),
        "CREATE INDEX clv_reasons_run ON clv_reasons (run_id, customer_id)",
        # files a run keeps for the service: the machine-learned CLV model (BYTEA is BLOB in
        # DuckDB)
        """CREATE TABLE run_files (
            run_id TEXT NOT NULL,
            name TEXT NOT NULL,
            payload BYTEA NOT NULL,
            sha256 TEXT NOT NULL,
            PRIMARY KEY (run_id, name)
        )""",
    ],
    # the BI contract v1 (docs/bi.md): views named v1_*, each of one stated grain, reading
    # only the run kinds it names; the unversioned views of migrations 1 and 5 become aliases
    # of them (before, customer_value_summary counted every segmentation and online run too)
    [*_BI_V1, *_bi_aliases()],
    # the actions of issue 17 and their BI views (additive to the contract v1)
    _ACTIONS_V1,
    # sales forecasts (issue 18): the forecasts, their backtest and series, with BI views
    forecast_migration(_create, BI_VERSION, _LATEST.format(kind="forecast")),
    # monitoring (issue 19): each run's drift profiles, counts per bin and column
    monitoring_migration(_create),
    # monitoring (issue 19): drift and performance per run, the registry's decisions, BI views
    monitoring_migration_11(_create, BI_VERSION),
    # the dashboard (issue 20): each scoring run's summaries, so that no page scans customers
    dashboard_migration(_create),
    # real time (issue 21): the events, each customer's running state, the state's rebuilds
    events_migration(_create),
]


class Store:
    """An open store (see the module docstring); use :func:`open_store`."""

    def __init__(self, url: str, con: Any, engine: str) -> None:
        self.url = url
        self.con = con
        self.engine = engine
        #: called when the store is closed (a held DuckDB file: :func:`hold_store`)
        self.released: Callable[[], Any] | None = None

    # ---- plumbing ---------------------------------------------------------------------------

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        if self.engine == "postgres":
            sql = sql.replace("?", "%s")
            cur = self.con.cursor()
            cur.execute(sql, params)
            return cur
        return self.con.execute(sql, list(params))

    def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query inside the caller's transaction (no commit: its locks and its
        writes stay the transaction's)."""
        return [tuple(r) for r in self._execute(sql, params).fetchall()]

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query (``?`` placeholders on both engines), committed on PostgreSQL."""
        cur = self._execute(sql, params)
        rows = cur.fetchall()
        if self.engine == "postgres":
            self.con.commit()
        return [tuple(r) for r in rows]

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if self.engine == "postgres":
            try:
                yield
                self.con.commit()
            except BaseException:
                self.con.rollback()
                raise
        else:
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield
                self.con.execute("COMMIT")
            except BaseException:
                self.con.execute("ROLLBACK")
                raise

    def close(self) -> None:
        if self.released is not None:
            self.released()
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- schema -----------------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply the migrations not yet applied; returns the schema version."""
        with self._transaction():
            self._execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
            )
        current = self.query("SELECT COALESCE(MAX(version), 0) FROM schema_version")[0][0]
        for version, statements in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            with self._transaction():
                for sql in statements:
                    engine, marked, statement = sql.partition(ONLY_ON)
                    if not marked or engine.strip() == self.engine:
                        self._execute(statement if marked else sql)
                self._execute("INSERT INTO schema_version VALUES (?, ?)", (version, _now()))
        return len(MIGRATIONS)

    # ---- writing ----------------------------------------------------------------------------

    def _bulk_stream(
        self,
        table: str,
        columns: dict[str, str],
        data: pa.Table | Iterable[pa.Table],
        stamp: Callable[[pa.Table], pa.Table],
    ) -> int:
        """``data`` (a table, or tables one after another: memory holds one at a time)
        stamped and written in bulk; returns the rows written."""
        n = 0
        for part in [data] if isinstance(data, pa.Table) else data:
            self._bulk(table, columns, stamp(part))
            n += part.num_rows
        return n

    def _bulk(self, table: str, columns: dict[str, str], data: pa.Table) -> None:
        missing = [c for c in columns if c not in data.column_names]
        if missing:
            data = _with_nulls(data, missing, columns)
        data = data.select(list(columns))
        if self.engine == "postgres":
            buf = io.BytesIO()
            pacsv.write_csv(data, buf, pacsv.WriteOptions(include_header=False))
            cur = self.con.cursor()
            with cur.copy(
                f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)"
            ) as copy:
                copy.write(buf.getvalue())
        else:
            self.con.register("__incoming", data)
            try:
                self.con.execute(f"INSERT INTO {table} SELECT * FROM __incoming")
            finally:
                self.con.unregister("__incoming")

    def replace_rows(self, *parts: tuple[str, dict[str, Any], pa.Table]) -> None:
        """For each (bulk table, ``where``, rows): delete the table's rows matching ``where``
        (column: value) and write the rows in their place; all in one transaction, so that a
        check run again replaces the earlier one whole."""
        with self._transaction():
            for table, where, rows in parts:
                clause = " AND ".join(f"{c} = ?" for c in where)
                self._execute(f"DELETE FROM {table} WHERE {clause}", tuple(where.values()))
                self._bulk(table, BULK_TABLES[table], rows)

    def record_decisions(self, decisions: list[dict[str, Any]]) -> None:
        """Append the registry's decisions (``model_decisions``; missing keys NULL), all in
        one transaction."""
        marks = ", ".join("?" for _ in DECISION_COLUMNS)
        with self._transaction():
            for decision in decisions:
                values = tuple(decision.get(c) for c in DECISION_COLUMNS)
                self._execute(f"INSERT INTO model_decisions VALUES ({marks})", values)

    def save_model(self, version: str, manifest: dict[str, Any]) -> None:
        """Record a model version (idempotent)."""
        with self._transaction():
            exists = self._execute("SELECT 1 FROM models WHERE version = ?", (version,))
            if not exists.fetchall():
                self._execute(
                    "INSERT INTO models VALUES (?, ?, ?, ?)",
                    (
                        version,
                        _now(),
                        json.dumps(manifest, default=str),
                        json.dumps(manifest.get("metrics", {}), default=str),
                    ),
                )

    def write_run(
        self,
        *,
        kind: str,
        predictions: pa.Table | Iterable[pa.Table],
        reasons: pa.Table | Iterable[pa.Table] | None = None,
        importance: pa.Table | None = None,
        profiles: pa.Table | None = None,
        model_version: str | None = None,
        as_of: date | None = None,
        config_hash: str | None = None,
        clv_models: dict[str, Any] | None = None,
        segment_model: dict[str, Any] | None = None,
        extra: dict[str, pa.Table] | None = None,
        files: dict[str, bytes] | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> str:
        """Write one run, all or nothing; returns its run_id. ``files`` (name: bytes) are
        kept with the run (:meth:`run_file`). ``predictions`` and ``reasons`` may come as
        tables one after another (a large run's parts, read as they are written).

        ``before_commit`` (for tests) is called inside the transaction after the rows are
        written: an exception there must leave nothing of the run but its failed status.
        """
        run_id = uuid.uuid4().hex
        with self._transaction():
            self._execute(
                "INSERT INTO runs (run_id, kind, started_at, status, model_version, as_of, "
                "config_hash, clv_models, segment_model) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (
                    run_id,
                    kind,
                    _now(),
                    model_version,
                    as_of,
                    config_hash,
                    json.dumps(clv_models) if clv_models is not None else None,
                    json.dumps(segment_model) if segment_model is not None else None,
                ),
            )
        try:
            with self._transaction():
                n = self._bulk_stream(
                    "predictions",
                    PREDICTION_COLUMNS,
                    predictions,
                    lambda rows: _stamp(rows, run_id, as_of),
                )
                if reasons is not None:
                    self._bulk_stream(
                        "reasons", REASON_COLUMNS, reasons, lambda rows: _stamp(rows, run_id)
                    )
                if importance is not None:
                    self._bulk("feature_importance", IMPORTANCE_COLUMNS, _stamp(importance, run_id))
                if profiles is not None:
                    self._bulk("value_profiles", PROFILE_COLUMNS, _stamp(profiles, run_id))
                for name, rows in (extra or {}).items():  # e.g. segments, segment_profiles
                    self._bulk(name, BULK_TABLES[name], _stamp(rows, run_id))
                for name, payload in (files or {}).items():  # a file or two per run
                    self._execute(
                        "INSERT INTO run_files VALUES (?, ?, ?, ?)",
                        (run_id, name, payload, hashlib.sha256(payload).hexdigest()),
                    )
                if before_commit is not None:
                    before_commit()
                self._execute(
                    "UPDATE runs SET status = 'succeeded', finished_at = ?, n_customers = ? "
                    "WHERE run_id = ?",
                    (_now(), n, run_id),
                )
        except BaseException as exc:
            with self._transaction():
                self._execute(
                    "UPDATE runs SET status = 'failed', finished_at = ?, error = ? "
                    "WHERE run_id = ?",
                    (_now(), f"{type(exc).__name__}: {exc}"[:2000], run_id),
                )
            raise
        return run_id

    # ---- reading ----------------------------------------------------------------------------

    def run_rows(self, table: str, run_id: str) -> pa.Table:
        """One run's rows of a bulk table (``predictions``, ``reasons``, ...) as Arrow, in
        the store's column order and types; read in bulk (Arrow from DuckDB, COPY from
        PostgreSQL), never row by row."""
        return self.all_rows(table, BULK_TABLES[table], run_id=run_id)

    def all_rows(self, table: str, columns: dict[str, str], run_id: str | None = None) -> pa.Table:
        """The rows of ``table`` (one run's, when ``run_id`` is given) in ``columns``' order and
        types, read in bulk."""
        schema = pa.schema([(c, _ARROW_TYPES[t]) for c, t in columns.items()])
        if self.engine == "postgres":
            from psycopg import sql

            where = sql.SQL("")
            if run_id is not None:
                where = sql.SQL(" WHERE run_id = {run}").format(run=sql.Literal(run_id))
            statement = sql.SQL(
                "COPY (SELECT {cols} FROM {table}{where}) TO STDOUT WITH (FORMAT csv)"
            ).format(
                cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                table=sql.Identifier(table),
                where=where,
            )
            buf = io.BytesIO()
            with self.con.cursor().copy(statement) as copy:
                for block in copy:
                    buf.write(block)
            self.con.commit()
            if buf.tell() == 0:
                return schema.empty_table()
            buf.seek(0)
            return pacsv.read_csv(
                buf,
                read_options=pacsv.ReadOptions(column_names=list(columns)),
                # PostgreSQL writes NULL unquoted and the empty string quoted
                convert_options=pacsv.ConvertOptions(
                    column_types=schema,
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            )
        cols = ", ".join(columns)
        where, params = ("", []) if run_id is None else (" WHERE run_id = ?", [run_id])
        data = self.con.execute(f"SELECT {cols} FROM {table}{where}", params).fetch_arrow_table()
        return data.cast(schema)

    def latest_segment_model(self) -> tuple[str, dict[str, Any]] | None:
        """(run_id, model) of the latest succeeded segmentation run that can place customers."""
        rows = self.query(
            "SELECT run_id, segment_model FROM runs WHERE status = 'succeeded' AND "
            "kind = 'segment' ORDER BY finished_at DESC, run_id DESC LIMIT 1"
        )
        if not rows or not rows[0][1]:
            return None
        return rows[0][0], json.loads(rows[0][1])

    def latest_clv_models(self) -> dict[str, Any] | None:
        """The CLV models of the latest succeeded scoring run, if it fitted any (with its
        ``run_id``, where its files are)."""
        rows = self.query(
            "SELECT run_id, clv_models FROM runs WHERE status = 'succeeded' AND kind = 'score' "
            "ORDER BY finished_at DESC, run_id DESC LIMIT 1"
        )
        if not rows or not rows[0][1]:
            return None
        return {**json.loads(rows[0][1]), "run_id": rows[0][0]}

    def run_file(self, run_id: str, name: str) -> bytes | None:
        """A file a run kept (``write_run(files=...)``), checked against its SHA-256."""
        rows = self.query(
            "SELECT payload, sha256 FROM run_files WHERE run_id = ? AND name = ?", (run_id, name)
        )
        if not rows:
            return None
        payload = bytes(rows[0][0])
        if hashlib.sha256(payload).hexdigest() != rows[0][1]:
            raise CustvalError(f"the file '{name}' of run {run_id} in the store is damaged")
        return payload

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        """A customer's prediction and reasons in the latest succeeded scoring run."""
        run_id = self.latest_run()
        if run_id is None:
            return None
        cols = list(PREDICTION_COLUMNS)
        rows = self.query(
            f"SELECT {', '.join(cols)} FROM predictions WHERE run_id = ? AND customer_id = ?",
            (run_id, customer_id),
        )
        if not rows:
            return None
        out = dict(zip(cols, rows[0], strict=True))
        out["as_of"] = str(out["as_of"])
        reasons = self.query(
            "SELECT rank, feature, feature_value, contribution, direction, text FROM reasons "
            "WHERE run_id = ? AND customer_id = ? ORDER BY rank",
            (run_id, customer_id),
        )
        keys = ("rank", "feature", "value", "contribution", "direction", "text")
        out["reasons"] = [dict(zip(keys, r, strict=True)) for r in reasons]
        return out

    def add_api_key(self, name: str, scope: str, sha256: str) -> None:
        """Keep a key's hash (custval.api.keys); a name already in use is an error."""
        if self.query("SELECT 1 FROM api_keys WHERE name = ?", (name,)):
            raise CustvalError(f"the store already has an API key named '{name}'")
        with self._transaction():
            self._execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, NULL)", (name, scope, sha256, _now())
            )

    def api_keys(self) -> list[tuple[str, str, str]]:
        """(name, scope, sha256) of the keys not revoked."""
        return self.query("SELECT name, scope, sha256 FROM api_keys WHERE revoked_at IS NULL")

    def api_key_list(self) -> list[tuple[str, str, Any, Any]]:
        """(name, scope, created_at, revoked_at) of every key kept, by creation; no hash."""
        return self.query(
            "SELECT name, scope, created_at, revoked_at FROM api_keys ORDER BY created_at, name"
        )

    def revoke_api_key(self, name: str) -> bool:
        """Mark the key ``name`` revoked (kept, for the record); False when there is no such
        key not revoked yet."""
        if not self.query("SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,)):
            return False
        with self._transaction():
            self._execute("UPDATE api_keys SET revoked_at = ? WHERE name = ?", (_now(), name))
        return True

    def recommendations(self, customer_id: str) -> dict[str, Any] | None:
        """What the latest runs recommend for a customer: next best offers, category
        propensities, churn risk, the customer's playbook (latest scoring run) and their place
        in the latest targeting list. None when no run knows the customer."""
        run_id = self.latest_run()
        if run_id is None:
            return None
        found: dict[str, Any] = {"customer_id": customer_id, "run_id": run_id}
        for key, table, order in RECOMMENDATION_PARTS:
            cols = [c for c in BULK_TABLES[table] if c not in ("run_id", "customer_id")]
            rows = self.query(
                f"SELECT {', '.join(cols)} FROM {table} WHERE run_id = ? AND customer_id = ?"
                + (f" ORDER BY {order}" if order else ""),
                (run_id, customer_id),
            )
            dicts = [dict(zip(cols, r, strict=True)) for r in rows]
            found[key] = dicts if order else (dicts[0] if dicts else None)
        targeting = self.query(
            "SELECT * FROM v1_latest_targeting WHERE customer_id = ?", (customer_id,)
        )
        cols = list(TARGETING_COLUMNS)
        found["targeting"] = dict(zip(cols, targeting[0], strict=True)) if targeting else None
        known = self.query(
            "SELECT 1 FROM predictions WHERE run_id = ? AND customer_id = ?", (run_id, customer_id)
        )
        return found if known else None

    def forecast(self, series: str | None = None) -> dict[str, Any] | None:
        """The latest forecast run as ``GET /v1/forecasts`` answers it
        (:func:`custval.store.forecasts.latest_forecast`)."""
        return latest_forecast(self, series)

    def first_run(self, model_version: str) -> str | None:
        """The first succeeded scoring run of a model version that kept drift profiles: the
        reference of its later runs' outputs."""
        rows = self.query(
            "SELECT r.run_id FROM runs r WHERE r.status = 'succeeded' AND r.kind = 'score' "
            "AND r.model_version = ? AND EXISTS (SELECT 1 FROM run_profiles p "
            "WHERE p.run_id = r.run_id) ORDER BY r.finished_at, r.run_id LIMIT 1",
            (model_version,),
        )
        return rows[0][0] if rows else None

    def latest_run(self, kind: str = "score") -> str | None:
        rows = self.query(
            "SELECT run_id FROM runs WHERE status = 'succeeded' AND kind = ? "
            "ORDER BY finished_at DESC, run_id DESC LIMIT 1",
            (kind,),
        )
        return rows[0][0] if rows else None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _stamp(data: pa.Table, run_id: str, as_of: date | None = None) -> pa.Table:
    """The rows with this run's id (and as-of date where the table has that column)."""
    data = data.drop_columns([c for c in ("run_id",) if c in data.column_names])
    data = data.append_column("run_id", pa.array([run_id] * data.num_rows, pa.string()))
    if as_of is not None and "as_of" not in data.column_names:
        data = data.append_column("as_of", pa.array([as_of] * data.num_rows, pa.date32()))
    return data


def _with_nulls(data: pa.Table, missing: list[str], columns: dict[str, str]) -> pa.Table:
    for c in missing:
        data = data.append_column(c, pa.nulls(data.num_rows, _ARROW_TYPES[columns[c]]))
    return data


def _connect_duckdb(path: Path, read_only: bool, wait: float) -> Any:
    """A DuckDB connection; a file locked by another process (a service reading it, say) is
    tried again for up to ``wait`` seconds. A file this process has open for writing already
    is read through that configuration (DuckDB refuses a second one in one process: a scoring
    run reads the events of the store it writes to)."""
    import duckdb

    deadline = time.monotonic() + wait
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            if read_only and "different configuration" in str(exc):
                read_only = False
                continue
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                raise CustvalError(f"cannot open the store '{path}': {exc}") from None
            time.sleep(0.1)


#: the DuckDB files this process holds open for writing (:func:`hold_store`), by path
_HELD: dict[str, Any] = {}


def _duckdb_key(text: str) -> str:
    if text.startswith(("postgresql://", "postgres://")):
        return text
    return str(Path(text.removeprefix("duckdb://")).resolve())


def hold_store(url: str | Path, *, wait: float = 0.0) -> Store:
    """Open the store for writing and keep it open: a DuckDB file admits one writing process,
    and this one (a service taking events) then shares it with every :func:`open_store` of
    the process, read-only ones too. Closing the returned store releases it."""
    store = open_store(url, wait=wait)
    if store.engine == "duckdb":
        key = _duckdb_key(str(url))
        _HELD[key] = store.con
        store.released = lambda: _HELD.pop(key, None)
    return store


def open_store(url: str | Path, *, read_only: bool = False, wait: float = 0.0) -> Store:
    """Open (and create or upgrade) the store at ``url``: a DuckDB file path (or
    ``duckdb:///path``) or a ``postgresql://`` URL. A store that cannot be reached is a clear
    error naming it. ``read_only`` opens an existing store without upgrading it (a DuckDB file
    can then be read by several processes). ``wait``: seconds to wait for a DuckDB file that
    another process holds (a writer that must not fail because a service is reading)."""
    text = str(url)
    held = _HELD.get(_duckdb_key(text))
    if held is not None:  # this process writes that DuckDB file: share its database
        return Store(str(Path(text.removeprefix("duckdb://"))), held.cursor(), "duckdb")
    if text.startswith(("postgresql://", "postgres://")):
        import psycopg

        try:
            con = psycopg.connect(text, connect_timeout=10)
        except psycopg.Error as exc:
            raise CustvalError(
                f"cannot reach the store {mask_url(text)}: {str(exc).strip().splitlines()[0]}",
                hint="Check the URL, the server and the credentials",
            ) from None
        store = Store(text, con, "postgres")
    else:
        path = Path(text.removeprefix("duckdb://"))
        if read_only and not path.exists():
            raise CustvalError(f"there is no store at '{path}'", hint="Run 'custval score' first")
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        con = _connect_duckdb(path, read_only, wait)
        store = Store(str(path), con, "duckdb")
    if not read_only:
        store.migrate()
    return store
