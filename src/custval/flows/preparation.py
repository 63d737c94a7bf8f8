"""Preparing a project: sources -> contracts -> cleaning -> identity -> feature table.

Each step is a function of the step before; the CLI, the service and notebooks call the same
functions. Everything runs on one working DuckDB connection: file sources are read where they
lie, database and HTTP sources are copied into it once.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from ibis.common.exceptions import IbisError

from custval.config import Project, SourceSpec
from custval.data import engine, sources, spark
from custval.data.clean import RuleResult, Staged, clean_source, stage_typed
from custval.data.contracts import (
    CONTRACTS,
    Contract,
    Finding,
    SourceReport,
    id_map_contract,
    missing_columns,
    raise_for_errors,
    validate_source,
)
from custval.data.identity import IdMap, clean_id_map, linker, unlinked_rule
from custval.errors import CustvalError, IdentityError
from custval.features._util import cutoff as midnight
from custval.features.build import FeatureTable, build_features
from custval.flows.events import stored_events, with_events

Progress = Callable[[str], None]


@contextmanager
def reading(spec: SourceSpec) -> Iterator[None]:
    """Errors of the engine while working on ``spec`` become a SourceError naming it."""
    try:
        yield
    except CustvalError:
        raise
    except _engine_errors() as exc:
        raise sources.read_error(spec, exc) from exc


def _engine_errors() -> tuple[type[BaseException], ...]:
    """The errors of the engines a run has loaded: psycopg is imported only by a PostgreSQL
    source (so that file sources spare its import), and raises only once it is."""
    found: tuple[type[BaseException], ...] = (duckdb.Error, IbisError, OSError, pa.ArrowException)
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        found = (*found, psycopg.Error)
    spark_errors = sys.modules.get("pyspark.errors")
    if spark_errors is not None:
        found = (*found, spark_errors.PySparkException)
    return found


def _noop(_: str) -> None:
    return None


@dataclass
class Prepared:
    """Cleaned, linked tables by kind, with everything that was found and done on the way."""

    con: ibis.BaseBackend
    tables: dict[str, ir.Table]
    reports: list[SourceReport]
    rules: list[RuleResult]
    rows_in: dict[str, int] = field(default_factory=dict)
    rows_out: dict[str, int] = field(default_factory=dict)
    one_row_per_order: bool = False
    #: when the last of the store's events in the tables was received (None: no event)
    events_through: datetime | None = None


def id_namespaces(project: Project) -> list[str]:
    """The id-map columns the project needs: the primary one first, then the sources' own."""
    names = [project.identity.primary]
    for spec in project.sources.values():
        if spec.kind != "id_map" and spec.id_namespace and spec.id_namespace not in names:
            names.append(spec.id_namespace)
    return names


def contract_for(project: Project, spec: SourceSpec) -> Contract:
    if spec.kind == "id_map":
        return id_map_contract(spec, id_namespaces(project))
    return CONTRACTS[spec.kind]


def open_all(
    project: Project, con: ibis.BaseBackend, progress: Progress = _noop
) -> dict[str, ir.Table]:
    """Open every source on ``con`` (copying database and HTTP sources into it)."""
    raw: dict[str, ir.Table] = {}
    for name, spec in project.sources.items():
        progress(f"reading {name}")
        with reading(spec):
            raw[name] = sources.stage(sources.open_source(spec, con), con, f"_raw_{name}")
    return raw


def validate(
    project: Project,
    con: ibis.BaseBackend,
    raw: dict[str, ir.Table],
    progress: Progress = _noop,
) -> list[SourceReport]:
    """Check every source against its contract, and the id map for ids linked to two
    customers; returns one report per source."""
    reports = []
    for name, spec in project.sources.items():
        progress(f"validating {name}")
        with reading(spec):
            report = validate_source(spec, raw[name], contract_for(project, spec))
            if spec.kind == "id_map" and not report.errors:
                try:
                    clean_id_map(
                        con,
                        spec,
                        raw[name],
                        id_namespaces(project),
                        project.identity.primary,
                    )
                except IdentityError as exc:
                    report.findings.append(
                        Finding(
                            name,
                            exc.column,
                            "error",
                            exc.problem,
                            exc.count or 0,
                            exc.examples,
                            exc.hint,
                        )
                    )
        reports.append(report)
    return reports


def prepare(
    project: Project,
    con: ibis.BaseBackend | None = None,
    progress: Progress = _noop,
    now: datetime | None = None,
) -> Prepared:
    """Open, validate, clean and link every source of ``project``.

    Each source is parsed once into a typed table that validation and cleaning share. Raises
    :class:`custval.errors.DataValidationError` listing every contract error of every source
    before anything is cleaned.
    """
    con = con or engine.connect(project.engine)
    raw = open_all(project, con, progress)
    reports: list[SourceReport] = []
    staged: dict[str, Staged] = {}
    for name, spec in project.sources.items():
        progress(f"validating {name}")
        contract = contract_for(project, spec)
        with reading(spec):
            missing = missing_columns(spec, raw[name], contract)
            if missing or spec.kind == "id_map":
                report = validate_source(spec, raw[name], contract)
            else:
                staged[name] = stage_typed(con, spec, raw[name], contract)
                report = validate_source(spec, raw[name], contract, staged[name].table)
        reports.append(report)
    raise_for_errors(reports)

    rules: list[RuleResult] = []
    idmap: IdMap | None = None
    map_name = project.identity.map_source
    if map_name is not None:
        progress(f"linking identities through {map_name}")
        with reading(project.sources[map_name]):
            idmap = clean_id_map(
                con,
                project.sources[map_name],
                raw[map_name],
                id_namespaces(project),
                project.identity.primary,
            )
        rules += idmap.rules
    by_kind: dict[str, list[ir.Table]] = {}
    rows_in: dict[str, int] = {}
    rows_out: dict[str, int] = {}
    per_order: list[bool] = []
    for name, spec in project.sources.items():
        if spec.kind == "id_map":
            continue
        progress(f"cleaning {name}")
        with reading(spec):
            attach = linker(name, spec.id_namespace, idmap)
            cleaned = clean_source(con, staged[name], now=now, link=attach)
        rules += cleaned.rules
        if attach is not None:
            rules.append(
                unlinked_rule(
                    name, str(spec.id_namespace), cleaned.unlinked_rows, cleaned.unlinked_ids
                )
            )
        rows_in[name] = cleaned.rows_in
        rows_out[name] = cleaned.rows_out
        by_kind.setdefault(spec.kind, []).append(cleaned.table)
        if cleaned.one_row_per_order is not None:
            per_order.append(cleaned.one_row_per_order)
    tables = {}
    for kind, parts in by_kind.items():
        table = parts[0]
        for other in parts[1:]:
            table = table.union(other)
        tables[kind] = table
    # two transaction sources may share order ids, so only one source can vouch for itself
    one_row_per_order = per_order == [True]
    prepared = Prepared(con, tables, reports, rules, rows_in, rows_out, one_row_per_order)
    return _with_stored_events(project, prepared, progress)


def _with_stored_events(project: Project, prepared: Prepared, progress: Progress) -> Prepared:
    """The prepared tables with the store's events (:mod:`custval.flows.realtime`): records
    like the sources' rows."""
    events = stored_events(project.store)
    if events is not None:
        progress(f"adding the store's {events.num_rows:,} events")
        with_events(prepared, events)
    return prepared


def features(
    project: Project,
    prepared: Prepared,
    as_of: date | None = None,
    groups: list[str] | None = None,
) -> FeatureTable:
    """The feature table of a prepared project at ``as_of`` (default: the project's), with the
    feature ``groups`` given (default: the project's).

    An as-of date after today is refused: recency and T would count time that has not passed.
    """
    as_of = as_of or project.as_of
    if as_of > date.today() + timedelta(days=1):
        raise CustvalError(
            f"the as-of date {as_of} is in the future: recency and T would count time that has "
            "not passed",
            hint="Use today's date or an earlier one",
        )
    return build_features(
        prepared.tables,
        as_of,
        time_unit=project.time_unit,
        trend_window_days=project.features.trend_window_days,
        groups=groups or project.features.groups,
        one_row_per_order=prepared.one_row_per_order,
    )


def write_features(ft: FeatureTable, path: str | Path) -> Path:
    """Write the feature table (sorted by customer_id) to Parquet, with its catalogue as JSON
    beside it (``<name>.catalogue.json``); readers see whole files or none.

    The engine writes the Parquet file itself, so the table never passes through Python.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    catalogue = path.with_suffix(".catalogue.json")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp_cat = catalogue.with_name(f".{catalogue.name}.tmp")
    try:
        if ft.file is not None:
            shutil.copyfile(ft.file, tmp)
        else:
            _to_parquet(ft.table.order_by("customer_id"), tmp)
        if pq.ParquetFile(tmp).metadata.num_rows == 0:
            raise CustvalError(
                f"no customer is known before the as-of date {ft.as_of}: no profile signed up "
                "and no purchase was made before it",
                hint="Choose a later as_of",
            )
        tmp_cat.write_text(json.dumps([f.as_dict() for f in ft.catalogue], indent=1))
        tmp.replace(path)
        tmp_cat.replace(catalogue)
    except OSError as exc:
        raise CustvalError(f"cannot write '{path}': {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
        tmp_cat.unlink(missing_ok=True)
    return path


def _to_parquet(table: ir.Table, path: Path) -> None:
    """``table`` as one Parquet file: written by the engine itself, or (Spark, which writes a
    folder of parts where its workers are) streamed here a batch at a time, in order."""
    if not spark.is_spark(table._find_backend()):
        table.to_parquet(path)
        return
    batches = table.to_pyarrow_batches(chunk_size=sources.BATCH_ROWS)
    with pq.ParquetWriter(path, batches.schema) as writer:
        for batch in batches:
            writer.write_batch(batch)


def first_purchase(prepared: Prepared) -> date | None:
    """The date of the first purchase in the transactions (None when there is none)."""
    first = prepared.tables["transactions"].timestamp.min().execute()
    return None if first is None else pd.Timestamp(first).date()


#: the buckets a customer id is hashed into to draw a sample on the engine
SAMPLE_BUCKETS = 1_000_000


@dataclass(frozen=True)
class CustomerSample:
    """Customers drawn on the engine by a hash of their id: the same customers in every table
    and at every date (``keep`` of :data:`SAMPLE_BUCKETS` buckets; None: all of them)."""

    keep: int | None = None

    @classmethod
    def of(cls, table: ir.Table, size: int) -> CustomerSample:
        """About ``size`` of the customers of ``table`` (one row each), or all when fewer."""
        total = int(table.count().to_pyarrow().as_py())
        if total <= size:
            return cls()
        return cls(max(1, int(SAMPLE_BUCKETS * size / total)))

    @property
    def complete(self) -> bool:
        return self.keep is None

    def rows(self, table: ir.Table) -> ir.Table:
        """The rows of ``table`` (keyed by customer_id) of the sampled customers."""
        if self.keep is None:
            return table
        return table.filter(table.customer_id.hash().abs() % SAMPLE_BUCKETS < self.keep)


def training_rows(project: Project, ft: FeatureTable) -> tuple[pd.DataFrame, CustomerSample]:
    """The feature rows a model learns from, sorted by customer id: every customer's on DuckDB;
    on Spark about ``[engine] train_sample`` customers drawn there (docs/scale.md), and the
    sample, so that their labels come from the same customers."""
    sample = CustomerSample()
    if spark.is_spark(ft.table._find_backend()):
        sample = CustomerSample.of(ft.table, project.engine.train_sample)
    if sample.complete:
        return ft.to_pyarrow().to_pandas(), sample
    rows = sample.rows(ft.table).order_by("customer_id").to_pyarrow().to_pandas()
    return rows, sample


def future_spend(
    prepared: Prepared,
    customer_ids: Any,
    start: date,
    end: date,
    sample: CustomerSample | None = None,
) -> Any:
    """Each customer's net spend in [start, end) (0 without purchases), in ``customer_ids``
    order; with ``sample``, the spend is summed for its customers only."""

    tx = prepared.tables["transactions"]
    window = tx.filter((tx.timestamp >= midnight(start)) & (tx.timestamp < midnight(end)))
    window = (sample or CustomerSample()).rows(window)
    spend = window.group_by("customer_id").aggregate(spend=window.amount.sum()).to_pandas()
    by_id = pd.Series(spend.spend.to_numpy(), index=spend.customer_id.to_numpy())
    return by_id.reindex(np.asarray(customer_ids)).fillna(0.0).to_numpy(dtype=np.float64)
