"""Orchestration: sources -> contracts -> cleaning -> customer 360 -> features.

Each step is a function of the step before; the CLI and the library call the same functions.
Everything runs on one working DuckDB connection: file sources are read where they lie, database
and HTTP sources are copied into it once.
"""

from __future__ import annotations

import json
import time
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
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from ibis.common.exceptions import IbisError

from custval.config import Project, SourceSpec
from custval.data import sources
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
from custval.features.build import FeatureTable, build_features

Progress = Callable[[str], None]


@contextmanager
def reading(spec: SourceSpec) -> Iterator[None]:
    """Errors of the engine while working on ``spec`` become a SourceError naming it."""
    try:
        yield
    except CustvalError:
        raise
    except (duckdb.Error, IbisError, psycopg.Error, OSError, pa.ArrowException) as exc:
        raise sources.read_error(spec, exc) from exc


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
    con = con or sources.working_connection()
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
    return Prepared(con, tables, reports, rules, rows_in, rows_out, one_row_per_order)


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
        ft.table.order_by("customer_id").to_parquet(tmp)
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


#: one year in each time unit: the default CLV horizon
ONE_YEAR = {"days": 365.0, "weeks": 52.0, "months": 12.0, "years": 1.0}

PURCHASE_MODELS = {"bgnbd": "BetaGeo", "mbgnbd": "ModifiedBetaGeo", "pnbd": "ParetoNBD"}


@dataclass
class ClvResult:
    """A fitted purchase and spend model, per-customer predictions and holdout figures."""

    purchases: object
    spend: object
    predictions: pa.Table
    holdout: dict[str, float] | None
    spend_excluded: int
    interval: dict[str, Any] | None = None
    #: cumulative repeat transactions by period, actual vs predicted (with a holdout)
    tracking: Any = None
    #: every purchase model's fit, AIC/BIC and holdout error (with ``compare``)
    comparison: Any = None


def clv(
    prepared: Prepared,
    *,
    calibration_end: date,
    holdout_end: date | None = None,
    model: str = "bgnbd",
    horizon: float = 52.0,
    discount: float = 0.0,
    time_unit: str = "weeks",
    level: float | None = 0.9,
    n_draws: int = 200,
    compare: bool = False,
) -> ClvResult:
    """Fit a purchase model (BG/NBD, MBG/NBD or Pareto/NBD) and Gamma-Gamma on the customers'
    BTYD summary at ``calibration_end``; predict P(alive), purchases and discounted CLV over
    ``horizon`` time units; judge the purchase model on the holdout when ``holdout_end`` is given.
    With a ``level`` the expected purchases and the CLV get central intervals from ``n_draws``
    draws of the models' parameters (:mod:`custval.models.clv`). With a holdout the result has a
    tracking table of cumulative repeat transactions per time unit, actual against predicted;
    with ``compare`` every purchase model is fitted and compared (log-likelihood, AIC, BIC,
    holdout error).

    Repeat buyers whose mean repeat spend is zero cannot inform the spend model and are left out
    of its fit (``spend_excluded``); they, like one-time buyers, get the population's mean spend.
    """
    from custval.features.holdout import calibration_holdout, tracking_times
    from custval.features.transactions import UNIT_DAYS, rfm_features
    from custval.models.evaluation import compare_models, holdout_errors, tracking_table

    if model not in PURCHASE_MODELS:
        raise CustvalError(
            f"unknown model '{model}'", hint="Use one of " + ", ".join(PURCHASE_MODELS)
        )
    if time_unit not in UNIT_DAYS:
        raise CustvalError(
            f"unknown time unit '{time_unit}'", hint="Use one of " + ", ".join(UNIT_DAYS)
        )
    tx = prepared.tables.get("transactions")
    if tx is None:
        raise CustvalError("CLV needs a source of kind 'transactions'")
    if holdout_end is not None:
        summary = calibration_holdout(
            tx,
            calibration_end,
            holdout_end,
            time_unit=time_unit,
            one_row_per_order=prepared.one_row_per_order,
        )
    else:
        summary = rfm_features(
            tx,
            calibration_end,
            time_unit=time_unit,
            rhythm=False,
            trend=False,
            one_row_per_order=prepared.one_row_per_order,
        ).select("customer_id", "frequency", "recency", "T", "monetary_value")
    table = summary.order_by("customer_id").to_pyarrow()
    if table.num_rows == 0:
        raise CustvalError(f"no customer bought before the calibration end {calibration_end}")
    col = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    x, tx_, t, m = (col[c].astype(float) for c in ("frequency", "recency", "T", "monetary_value"))
    fitted = btyd_predictions(
        x,
        tx_,
        t,
        m,
        model=model,
        horizon=horizon,
        discount=discount,
        level=level,
        n_draws=n_draws,
    )
    purchases, spend, interval = fitted.purchases, fitted.spend, fitted.interval
    out = {"customer_id": table.column("customer_id"), **fitted.columns}
    holdout = None
    if holdout_end is not None:
        predicted = purchases.conditional_expected_purchases(col["duration_holdout"], x, tx_, t)
        out["frequency_holdout"] = col["frequency_holdout"]
        out["predicted_holdout"] = predicted
        holdout = holdout_errors(predicted, col["frequency_holdout"])
    tracking = None
    if holdout_end is not None:
        origin, births, repeats = tracking_times(
            tx, calibration_end, holdout_end, time_unit=time_unit
        )
        # period ends every time unit from the first purchase, plus the calibration end and
        # the holdout end
        unit = UNIT_DAYS[time_unit]
        end = (holdout_end - origin).days / unit
        cal = (calibration_end - origin).days / unit
        ends = np.unique(np.append(np.arange(1.0, np.floor(end) + 1), [cal, end]))
        tracking = tracking_table(purchases, births, repeats, ends[ends > 0])
        tracking.insert(1, "period", np.where(tracking.period_end <= cal, "calibration", "holdout"))
    comparison = None
    if compare:
        comparison = compare_models(
            x,
            tx_,
            t,
            holdout_frequency=col.get("frequency_holdout"),
            holdout_duration=col.get("duration_holdout"),
        )
    return ClvResult(
        purchases,
        spend,
        pa.table(out),
        holdout,
        fitted.spend_excluded,
        interval,
        tracking,
        comparison,
    )


def point_clv(
    purchases: Any,
    spend: Any,
    x: Any,
    tx_: Any,
    t: Any,
    m: Any,
    *,
    horizon: float,
    discount: float,
) -> tuple[Any, Any]:
    """Each customer's expected spend per purchase and discounted CLV over ``horizon``: their
    own purchases at the spend the model expects of them (the population's mean for one-time
    buyers and for repeat buyers without spend data)."""
    from custval.models.clv import discounted_expected_purchases

    informative = (x > 0) & (m > 0)
    xs = np.where(informative, x, 0.0)
    ms = np.where(informative, m, 0.0)
    expected_spend = spend.conditional_expected_average_spend(xs, ms)
    purchases_ = discounted_expected_purchases(
        purchases, x, tx_, t, horizon=horizon, discount=discount
    )
    return expected_spend, expected_spend * purchases_


def clv_models_json(purchases: Any, spend: Any, horizon: float, discount: float) -> dict[str, Any]:
    """The fitted customer-base models as the store keeps them with a run (for the service)."""
    return {
        "purchases": {"model": type(purchases).__name__, "params": dict(purchases.params_)},
        "spend": {"model": type(spend).__name__, "params": dict(spend.params_)},
        "horizon": horizon,
        "discount": discount,
    }


def clv_models_from_json(saved: dict[str, Any]) -> tuple[Any, Any]:
    """The purchase and spend models of :func:`clv_models_json`, ready to predict."""
    from custval.models import btyd

    models = []
    for part in ("purchases", "spend"):
        name = saved[part]["model"]
        if name not in (*PURCHASE_MODELS.values(), "GammaGamma"):
            raise CustvalError(f"the store names an unknown customer-base model '{name}'")
        model = getattr(btyd, name)()
        model.params_ = {k: float(v) for k, v in saved[part]["params"].items()}
        models.append(model)
    return models[0], models[1]


@dataclass
class BtydFit:
    """The customer-base models fitted on one BTYD summary and their predictions per customer
    (arrays in the summary's order)."""

    purchases: Any
    spend: Any
    columns: dict[str, Any]
    interval: dict[str, Any] | None
    spend_excluded: int


def btyd_predictions(
    x: Any,
    tx_: Any,
    t: Any,
    m: Any,
    *,
    model: str = "bgnbd",
    horizon: float = 52.0,
    discount: float = 0.0,
    level: float | None = 0.9,
    n_draws: int = 200,
    purchases_interval: bool = True,
) -> BtydFit:
    """Fit the purchase model and Gamma-Gamma on the summary (frequency ``x``, recency ``tx_``,
    age ``t``, mean repeat spend ``m``) and predict each customer's P(alive), purchases over
    ``horizon``, expected spend and discounted CLV, with central ``level`` intervals of the CLV
    (and of the purchases when ``purchases_interval``). See :func:`clv`."""
    from custval.models import btyd
    from custval.models.clv import clv_interval, expected_purchases_interval

    if model not in PURCHASE_MODELS:
        raise CustvalError(
            f"unknown model '{model}'", hint="Use one of " + ", ".join(PURCHASE_MODELS)
        )
    purchases = getattr(btyd, PURCHASE_MODELS[model])().fit(x, tx_, t)
    informative = (x > 0) & (m > 0)
    spend = btyd.GammaGamma().fit(x[informative], m[informative])
    xs = np.where(informative, x, 0.0)
    ms = np.where(informative, m, 0.0)
    out = {
        "frequency": x,
        "recency": tx_,
        "T": t,
        "monetary_value": m,
        "p_alive": purchases.probability_alive(x, tx_, t),
        "expected_purchases": purchases.conditional_expected_purchases(horizon, x, tx_, t),
    }
    out["expected_spend"], out["clv"] = point_clv(
        purchases, spend, x, tx_, t, m, horizon=horizon, discount=discount
    )
    interval = None
    if level is not None:
        clv_iv = clv_interval(
            purchases,
            spend,
            x,
            tx_,
            t,
            ms,
            spend_frequency=xs,
            horizon=horizon,
            discount=discount,
            level=level,
            n_draws=n_draws,
        )
        interval = {"level": level, "draws": n_draws, "method": clv_iv.method}
        if purchases_interval:
            purchases_iv = expected_purchases_interval(
                purchases, x, tx_, t, horizon=horizon, level=level, n_draws=n_draws
            )
            out["expected_purchases_lower"] = purchases_iv.lower
            out["expected_purchases_upper"] = purchases_iv.upper
            interval["expected_purchases_total"] = dict(
                zip(("estimate", "lower", "upper"), purchases_iv.total, strict=True)
            )
        out["clv_lower"] = clv_iv.lower
        out["clv_upper"] = clv_iv.upper
        interval["clv_total"] = dict(zip(("estimate", "lower", "upper"), clv_iv.total, strict=True))
    excluded = int(((x > 0) & ~informative).sum())
    return BtydFit(purchases, spend, out, interval, excluded)


@dataclass
class ValueTraining:
    """A trained value classifier, what it was trained on, and where its bundle is."""

    clf: Any
    features: Any
    y: Any
    label: dict[str, Any]
    cutoff: date
    catalogue: dict[str, str]
    importance: Any
    profile: dict[str, Any]
    folder: Path


def train_value(
    project: Project,
    *,
    cutoff: date | None = None,
    horizon_weeks: int = 52,
    top_share: float = 0.2,
    label: str | None = None,
    positive: str | None = None,
    folds: int = 5,
    candidates: tuple[str, ...] = ("logistic", "lightgbm", "random_forest", "mlp"),
    seed: int = 0,
    out_dir: Path | None = None,
    prepared: Prepared | None = None,
    threshold_rule: str = "top_share",
) -> ValueTraining:
    """Train the high/low value classifier of a project and write its bundle.

    The label is future value: high when a customer's spend in the ``horizon_weeks`` from
    ``cutoff`` (default: the as-of date less the horizon) is in the top ``top_share``, or a
    feature-table column named by ``label``. Features are computed at the cutoff from earlier
    data only. The bundle goes to ``out_dir/<version>`` (default: ``models/`` by the project).
    """
    from datetime import UTC, datetime

    from custval.explain import importance, value_profile
    from custval.models.bundle import data_fingerprint, save_bundle
    from custval.models.value import ValueClassifier, binary_label, derive_value_label

    horizon = timedelta(weeks=horizon_weeks)
    cut = cutoff or project.as_of - horizon
    if label is None and cut + horizon > project.as_of:
        raise CustvalError(
            f"the cutoff {cut} plus {horizon_weeks} weeks ends after the project's as-of date "
            f"{project.as_of}: the future value is not known yet",
            hint=f"Use a cutoff on or before {project.as_of - horizon}",
        )
    prepared = prepared or prepare(project)
    ft = features(project, prepared, as_of=cut)
    table = ft.to_pyarrow().to_pandas()
    keys = [f.name for f in ft.catalogue if f.role != "feature" and f.name in table.columns]
    if label is not None:
        if label not in table.columns:
            raise CustvalError(
                f"the feature table has no column '{label}'",
                column=label,
                hint="Columns: " + ", ".join(table.columns[:20]),
            )
        y = binary_label(table[label], positive, column=label)
        definition: dict[str, Any] = {"kind": "column", "column": label, "positive": positive}
        keys.append(label)
    else:
        spend = future_spend(prepared, table["customer_id"], cut, cut + horizon)
        y = derive_value_label(spend, top_share)
        definition = {
            "kind": "future_spend",
            "cutoff": cut.isoformat(),
            "horizon_weeks": horizon_weeks,
            "top_share": top_share,
            "threshold_spend": float(np.min(spend[y == 1])),
        }
    feats = table.drop(columns=list(dict.fromkeys(keys)))
    earlier = (
        None
        if label is not None
        else _earlier_period(project, prepared, cut, horizon, top_share, keys)
    )
    clf = ValueClassifier(
        candidates, folds=folds, top_share=top_share, seed=seed, threshold_rule=threshold_rule
    ).fit(feats, y, earlier=earlier)
    if earlier is not None:
        chosen = clf.leaderboard_.set_index("model").loc[clf.chosen_]
        definition["time_split"] = {
            "trained_at": (cut - horizon).isoformat(),
            "scored_at": cut.isoformat(),
            "roc_auc": float(chosen.time_split_roc_auc),
            "lift_top_decile": float(chosen.time_split_lift_top_decile),
        }
    catalogue = {f.name: f.description for f in ft.catalogue}
    imp = importance(clf, feats)
    profile = value_profile(clf.schema_, feats, y)
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = out_dir or Path("models")
    folder = save_bundle(
        clf,
        root / version,
        label=definition,
        fingerprint=data_fingerprint(feats, y),
        extra={
            "catalogue": catalogue,
            # how the features were computed, so that the service computes them alike
            "features": {
                "time_unit": project.time_unit,
                "trend_window_days": project.features.trend_window_days,
                "groups": list(project.features.groups),
                "one_row_per_order": prepared.one_row_per_order,
            },
            "importance": imp.head(20).to_dict("records"),
            "profile": {
                "high_share": profile["high_share"],
                "features": profile["features"].to_dict("records"),
                "conditions": profile["conditions"].to_dict("records"),
            },
        },
    )
    return ValueTraining(clf, feats, y, definition, cut, catalogue, imp, profile, folder)


def _earlier_period(
    project: Project,
    prepared: Prepared,
    cut: date,
    horizon: timedelta,
    top_share: float,
    keys: list[str],
) -> tuple[Any, Any] | None:
    """Features at cut - horizon and the label from the spend up to cut: the period before,
    for a time-based split. None when the history is too short for it."""
    from custval.models.value import derive_value_label

    earlier = cut - horizon
    first = first_purchase(prepared)
    if first is None or earlier <= first:
        return None
    old = features(project, prepared, as_of=earlier).to_pyarrow().to_pandas()
    try:
        y_old = derive_value_label(
            future_spend(prepared, old["customer_id"], earlier, cut), top_share
        )
    except CustvalError:
        return None
    return old.drop(columns=[k for k in dict.fromkeys(keys) if k in old.columns]), y_old


def first_purchase(prepared: Prepared) -> date | None:
    """The date of the first purchase in the transactions (None when there is none)."""
    first = prepared.tables["transactions"].timestamp.min().execute()
    return None if first is None else pd.Timestamp(first).date()


def future_spend(prepared: Prepared, customer_ids: Any, start: date, end: date) -> Any:
    """Each customer's net spend in [start, end) (0 without purchases), in ``customer_ids``
    order."""
    import pandas as pd

    from custval.features._util import cutoff as midnight

    tx = prepared.tables["transactions"]
    window = tx.filter((tx.timestamp >= midnight(start)) & (tx.timestamp < midnight(end)))
    spend = window.group_by("customer_id").aggregate(spend=window.amount.sum()).to_pandas()
    by_id = pd.Series(spend.spend.to_numpy(), index=spend.customer_id.to_numpy())
    return by_id.reindex(np.asarray(customer_ids)).fillna(0.0).to_numpy(dtype=np.float64)


@dataclass
class ScoreResult:
    """A scoring run written to the store."""

    run_id: str
    store_url: str
    model_version: str
    customers: int
    high: int
    predictions: Any
    #: seconds spent in each step: prepare, features, contributions, reasons, clv, segments,
    #: store
    seconds: dict[str, float] = field(default_factory=dict)
    #: the segmentation run whose segments fill ``predictions.segment`` (None: no segments)
    segment_run: str | None = None
    #: why the segments were left empty, when the store has a segmentation that cannot be used
    segment_note: str | None = None
    #: the method behind clv_expected (btyd, lightgbm, random_forest, mlp, hybrid)
    clv_method: str | None = None


def latest_model(models_dir: Path) -> Path:
    """The newest model bundle in ``models_dir`` (versions are UTC timestamps)."""
    versions = sorted(p for p in models_dir.glob("*") if (p / "manifest.json").exists())
    if not versions:
        raise CustvalError(
            f"there is no trained model in '{models_dir}'", hint="Run 'custval train' first"
        )
    return versions[-1]


def score(
    project: Project,
    *,
    store_url: str | Path,
    model_version: str | None = None,
    models_dir: Path | None = None,
    top_k: int = 3,
    with_clv: bool = True,
    prepared: Prepared | None = None,
) -> ScoreResult:
    """Score every customer at the project's as-of date and write one run to the store.

    Value probability, class and top reasons from the model bundle (the newest in
    ``models_dir`` unless ``model_version`` names one), and, when the project has transactions,
    CLV over the project's horizon (``[clv]``, a year by default) with its 90% interval, by
    its method (BG/NBD and Gamma-Gamma by default; :func:`_score_clv`), and P(alive) and
    expected purchases from BG/NBD; each customer's segment by the store's latest
    segmentation. The run is all or nothing (:mod:`custval.store`).
    """
    import hashlib

    import pandas as pd
    import pyarrow as pa

    from custval.explain import importance, reasons
    from custval.models.bundle import load_bundle
    from custval.store import open_store

    root = models_dir or (project.root / "models")
    folder = root / model_version if model_version else latest_model(root)
    if not (folder / "manifest.json").exists():
        known = ", ".join(sorted(p.name for p in root.glob("*"))) if root.exists() else "none"
        raise CustvalError(
            f"there is no model version '{model_version}' in '{root}'",
            hint=f"Versions there: {known}",
        )
    clf = load_bundle(folder)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step] = now - clock
        clock = now

    # open the store first: an unreachable store fails before any work
    store = open_store(store_url)
    try:
        prepared = prepared or prepare(project)
        lap("prepare")
        table = features(project, prepared).to_pyarrow().to_pandas()
        lap("features")
        catalogue = clf.manifest_.get("catalogue", {})
        # one pass of the model's contributions serves the reasons and the importance
        contributions = clf.contributions(table, "features")
        lap("contributions")
        explained = reasons(
            clf,
            table,
            top_k=top_k,
            catalogue=catalogue,
            source="features",
            contributions=contributions,
        )
        imp = importance(clf, table, contributions=contributions)
        del contributions
        lap("reasons")
        ids = table["customer_id"].astype(str).to_numpy()
        preds: dict[str, Any] = {
            "customer_id": ids,
            "value_probability": explained.probability.to_numpy(),
            "value_class": explained.predicted_class.to_numpy().astype(np.int32),
        }
        clv_models, clv_kept = None, ClvKept()
        if with_clv and "transactions" in prepared.tables:
            clv_columns, clv_models, clv_kept = _score_clv(project, prepared, table, top_k)
            preds.update(clv_columns)
            lap("clv")
        segment_run, segment_note = None, None
        placed = store.latest_segment_model()
        if placed is not None:
            segment_run, names, segment_note = _score_segments(table, preds, *placed)
            if names is not None:
                preds["segment"] = names
            lap("segments")
        reasons_table = _long_reasons(explained, ids, min(top_k, len(clf.schema_.columns)))
        profiles = _profile_rows(clf.manifest_.get("profile", {}).get("features", []))
        config_hash = hashlib.sha256(
            project.model_dump_json(exclude={"store"}).encode() + str(folder.name).encode()
        ).hexdigest()[:16]
        store.save_model(folder.name, clf.manifest_)
        run_id = store.write_run(
            kind="score",
            # missing values (no purchase, so no CLV) are NULL for the BI tools, not NaN
            predictions=pa.Table.from_pandas(pd.DataFrame(preds), preserve_index=False),
            reasons=reasons_table,
            importance=pa.Table.from_pandas(imp, preserve_index=False),
            profiles=profiles,
            model_version=folder.name,
            as_of=project.as_of,
            config_hash=config_hash,
            clv_models=clv_models,
            extra={"clv_reasons": clv_kept.reasons} if clv_kept.reasons is not None else None,
            files=clv_kept.files,
        )
        lap("store")
    finally:
        store.close()
    return ScoreResult(
        run_id,
        str(store_url),
        folder.name,
        len(ids),
        int(explained.predicted_class.sum()),
        explained.assign(customer_id=ids),
        seconds,
        segment_run,
        segment_note,
        clv_models.get("method") if clv_models else None,
    )


def _score_segments(
    table: Any, preds: dict[str, Any], run_id: str, model: dict[str, Any]
) -> tuple[str | None, Any, str | None]:
    """Each scored customer's segment name by the store's latest segmentation (its
    preparation and centres, :func:`custval.models.segments.assign_nearest`), from the feature
    ``table`` and the run's CLV (``clv``, the segmentation's name for it). Returns (segmentation
    run, names, None), or (None, None, why) when the segmentation uses features this scoring
    run does not have, so a segmentation of another table never stops a scoring run."""
    from custval.models.segments import assign_nearest

    wanted = list(model["preparation"]["features"])
    frame = table.copy()
    if "clv_expected" in preds:
        frame["clv"] = preds["clv_expected"]
    missing = [f for f in wanted if f not in frame.columns]
    if missing:
        return (
            None,
            None,
            f"segments left empty: segmentation run {run_id} uses {', '.join(missing)}, which "
            "this scoring run does not compute",
        )
    labels = assign_nearest(model, frame[wanted])
    names = np.array([model["names"].get(str(k), str(k)) for k in range(len(model["centers"]))])
    return run_id, names[labels], None


#: the BTYD summary in the feature table (the rfm group, in the project's time unit)
SUMMARY_COLUMNS = ("frequency", "recency", "T", "monetary_value")


@dataclass
class ClvKept:
    """What a scoring run keeps of a machine-learned CLV besides its columns: the reasons
    for each customer's CLV (the store's long table) and the model's file."""

    reasons: Any = None
    files: dict[str, bytes] | None = None


def _score_clv(
    project: Project, prepared: Prepared, table: Any, top_k: int = 3
) -> tuple[dict[str, Any], dict[str, Any], ClvKept]:
    """CLV over the project's horizon (``[clv]``; default a year at 10% a year) with its 90%
    interval, P(alive) and expected purchases for each row of the feature ``table`` (NaN for
    customers without a purchase), the fitted models (:func:`clv_models_json`) and what the
    run keeps of a machine-learned model.

    P(alive) and the expected purchases always come from the BTYD model. With ``[clv] method``
    other than btyd the CLV and its interval come from the method the leaderboard chose
    (:func:`custval.clv_leaderboard.clv_leaderboard`), for every customer of the table (those
    without a purchase too); the models' JSON then says which (``method``), keeps the
    leaderboard and, for a machine-learned choice, the model's description and how it becomes
    the CLV (``spend_model``, :mod:`custval.clv_serving`), whose file the run keeps; the
    reasons for each customer's CLV go to the store's ``clv_reasons``."""
    options = project.clv
    horizon, discount = clv_settings(project)
    if options.method == "btyd":
        cols, models = btyd_columns(project, prepared, table, horizon=horizon, discount=discount)
        models["method"] = "btyd"
        return cols, models, ClvKept()
    try:
        # P(alive) and the expected purchases; the CLV and its interval come from the chosen
        # method below, so no interval draws here
        cols, models = btyd_columns(
            project, prepared, table, horizon=horizon, discount=discount, level=None
        )
    except CustvalError as exc:
        # no repeat buyers, say: the machine-learned CLV does without the BTYD model
        cols = {c: np.full(len(table), np.nan) for c in ("p_alive", "expected_purchases")}
        models = {"btyd_error": str(exc).split("\n", 1)[0]}
    from custval.clv_leaderboard import METHOD_CANDIDATES, clv_leaderboard

    board = clv_leaderboard(
        project,
        prepared,
        horizon=horizon,
        discount=discount,
        methods=METHOD_CANDIDATES[options.method],
        choose_method=options.method,
        today=table,
        top_k=top_k,
    )
    found = board.predictions.set_index("customer_id")
    ids = table["customer_id"].astype(str).to_numpy()
    for src, dst in (
        ("clv", "clv_expected"),
        ("clv_lower", "clv_lower"),
        ("clv_upper", "clv_upper"),
    ):
        cols[dst] = found[src].reindex(ids).to_numpy(dtype=np.float64)
    models["method"] = board.chosen
    models["leaderboard"] = board.leaderboard.to_dict("records")
    models["evaluation"] = board.evaluation
    if board.model is None or board.serving is None:
        return cols, models, ClvKept()
    from custval.clv_serving import FILE_NAME

    described, payload = board.model.dumps()
    models["spend_model"] = {"model": described, "serving": board.serving, "file": FILE_NAME}
    kept = ClvKept(files={FILE_NAME: payload})
    if board.reasons is not None:
        ranks = sum(1 for c in board.reasons.columns if c.endswith("_feature"))
        kept.reasons = _long_reasons(board.reasons, board.predictions["customer_id"], ranks)
    return cols, models, kept


def clv_settings(project: Project) -> tuple[float, float]:
    """The project's CLV horizon (``[clv] horizon``, default a year) and its discount rate per
    time unit (from ``[clv] discount_per_year``), both in the project's time unit."""
    per_year = ONE_YEAR[project.time_unit]
    return (
        project.clv.horizon or per_year,
        (1 + project.clv.discount_per_year) ** (1 / per_year) - 1,
    )


def btyd_columns(
    project: Project,
    prepared: Prepared,
    table: Any,
    *,
    horizon: float,
    discount: float = 0.0,
    level: float | None = 0.9,
    as_of: date | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """BG/NBD and Gamma-Gamma fitted at ``as_of`` (default: the project's): for each row of
    the feature ``table`` (computed at that date) its ``clv_expected`` over ``horizon`` time
    units at ``discount`` per unit, with its central ``level`` interval (``clv_lower``,
    ``clv_upper``; NaN without a level), ``p_alive``, ``expected_purchases`` and
    ``expected_spend`` (per purchase); NaN for customers without a purchase. Returns the
    columns and the fitted models (:func:`clv_models_json`).

    The BTYD summary comes from the feature table when it has the rfm columns (they are the
    same ``rfm_features`` at the same date and time unit), else from the transactions."""
    settings = {"horizon": horizon, "discount": discount}
    n = len(table)
    if all(c in table.columns for c in SUMMARY_COLUMNS):
        buyers = table["T"].notna().to_numpy()
        x, tx_, t, m = (
            table[c].to_numpy(dtype=np.float64, na_value=np.nan)[buyers] for c in SUMMARY_COLUMNS
        )
        fit = btyd_predictions(x, tx_, t, m, purchases_interval=False, level=level, **settings)
        cols, models = fit.columns, clv_models_json(fit.purchases, fit.spend, **settings)
        where = np.flatnonzero(buyers)
    else:
        result = clv(
            prepared,
            calibration_end=as_of or project.as_of,
            time_unit=project.time_unit,
            level=level,
            **settings,
        )
        models = clv_models_json(result.purchases, result.spend, **settings)
        c = result.predictions
        found = pd.Series(
            np.arange(c.num_rows), index=c.column("customer_id").to_numpy(zero_copy_only=False)
        )
        at = found.reindex(table["customer_id"].to_numpy()).to_numpy()
        where = np.flatnonzero(~np.isnan(at))
        cols = {k: c.column(k).to_numpy() for k in c.column_names}
        cols = {k: v[at[where].astype(np.int64)] for k, v in cols.items()}
    out = {}
    for src, dst in (
        ("clv", "clv_expected"),
        ("clv_lower", "clv_lower"),
        ("clv_upper", "clv_upper"),
        ("p_alive", "p_alive"),
        ("expected_purchases", "expected_purchases"),
        ("expected_spend", "expected_spend"),
    ):
        full = np.full(n, np.nan)
        if src in cols:
            full[where] = cols[src]
        out[dst] = full
    return out, models


def _long_reasons(explained: Any, ids: Any, k: int) -> Any:
    """The reasons of :func:`custval.explain.reasons` (one column set per rank) as the store's
    long table: customer_id, rank, feature, feature_value, contribution, direction, text;
    customer by customer, rank 1 first. Built in Arrow: no Python strings per row."""
    import pyarrow as pa

    from custval.store import directions

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


def _profile_rows(records: list[dict[str, Any]]) -> Any:
    """The model's high-value profile (from its bundle) as long rows for the store:
    feature, kind, statistic, value, category."""
    import pyarrow as pa

    rows: dict[str, list[Any]] = {
        k: [] for k in ("feature", "kind", "statistic", "value", "category")
    }
    stats = {
        "numeric": ("median_high", "median_low", "ratio"),
        "categorical": ("share_high", "share_low", "lift"),
    }
    for rec in records:  # a loop over the model's features
        for stat in stats.get(rec.get("kind", ""), ()):
            value = rec.get(stat)
            rows["feature"].append(rec["feature"])
            rows["kind"].append(rec["kind"])
            rows["statistic"].append(stat)
            rows["value"].append(None if value is None or value != value else float(value))
            rows["category"].append(rec.get("category") if rec["kind"] == "categorical" else None)
    return pa.table(
        {
            "feature": pa.array(rows["feature"], pa.string()),
            "kind": pa.array(rows["kind"], pa.string()),
            "statistic": pa.array(rows["statistic"], pa.string()),
            "value": pa.array(rows["value"], pa.float64()),
            "category": pa.array(rows["category"], pa.string()),
        }
    )


@dataclass
class SegmentResult:
    """A segmentation of a customer table: per customer its segment and name, per segment its
    profile, name and rule, and the fitted segmenter (None for RFM segments)."""

    algorithm: str
    segmenter: Any
    customers: Any  # customer_id, segment, segment_name
    profiles: Any  # segment, name, rule, customers, share, ..., distinctive

    def summary(self) -> dict[str, Any]:
        """The JSON summary of ``custval segment --json``."""
        seg = self.segmenter
        out: dict[str, Any] = {"algorithm": self.algorithm, "customers": len(self.customers)}
        if seg is not None:
            out.update(
                {
                    "k": seg.k_,
                    "silhouette": seg.silhouette_,
                    "calinski_harabasz": seg.calinski_harabasz_,
                    "stability_ari": seg.stability_,
                    "preparation": seg.prep_.record(),
                }
            )
            if hasattr(seg, "scores_"):
                out["k_scores"] = seg.scores_.to_dict("records")
        profiles = self.profiles.drop(columns=["_gaps"], errors="ignore")
        out["segments"] = json.loads(profiles.to_json(orient="records"))
        return out


def segment_features(project: Project, prepared: Prepared) -> Any:
    """The project's feature table at its as-of date with each customer's predicted CLV
    (``clv``, as ``custval score`` predicts it: by the project's ``[clv]`` method; with btyd,
    missing for customers who never bought): what ``custval segment --config`` segments."""
    table = features(project, prepared).to_pyarrow().to_pandas()
    if "transactions" in prepared.tables:
        clv_columns, _, _ = _score_clv(project, prepared, table)
        table["clv"] = clv_columns["clv_expected"]
    return table


def segment_table(
    table: Any,
    *,
    id_column: str = "customer_id",
    features: list[str] | None = None,
    algorithm: str = "kmeans",
    k: str | int = "auto",
    seed: int = 0,
) -> SegmentResult:
    """Segment a customer table (one row per customer): cluster with ``algorithm`` (or
    ``"rfm"`` for RFM quintile segments on recency_days, orders and revenue), profile and name
    each segment (:mod:`custval.models.segments`)."""
    from custval.models.segments import (
        Segmenter,
        name_segments,
        profile_segments,
        rfm_segments,
    )

    if id_column not in table.columns:
        raise CustvalError(f"the table has no id column '{id_column}'", column=id_column)
    if table[id_column].duplicated().any():
        dup = table[id_column][table[id_column].duplicated()].head(5).tolist()
        raise CustvalError(
            f"the id column '{id_column}' repeats customers (e.g. {', '.join(map(str, dup))})",
            column=id_column,
            hint="Segment a table with one row per customer",
        )
    ids = table[id_column].astype(str).to_numpy()
    if algorithm == "rfm":
        need = ["recency_days", "orders", "revenue"]
        lacking = [c for c in need if c not in table.columns]
        if lacking:
            raise CustvalError(
                f"RFM segments need the columns {', '.join(need)}; the table lacks "
                f"{', '.join(lacking)}",
                column=lacking[0],
            )
        rfm = rfm_segments(*(table[c].to_numpy(dtype=np.float64) for c in need))
        names = sorted(set(rfm["segment"]))
        code = {n: i for i, n in enumerate(names)}
        labels = rfm["segment"].map(code).to_numpy()
        profiles = profile_segments(table, labels, features=need)
        profiles.insert(1, "name", [names[s] for s in profiles["segment"]])
        profiles.insert(2, "rule", [_rfm_rule(names[s]) for s in profiles["segment"]])
        customers = pd.DataFrame(
            {"customer_id": ids, "segment": labels, "segment_name": rfm["segment"].to_numpy()}
        )
        return SegmentResult("rfm", None, customers, profiles)
    seg = Segmenter(algorithm, k, features=features, seed=seed).fit(table)
    profiles = profile_segments(table, seg.labels_, features=seg.prep_.features_)
    named = name_segments(profiles)
    profiles.insert(1, "name", named["name"].to_numpy())
    profiles.insert(2, "rule", named["rule"].to_numpy())
    name_of = dict(zip(named["segment"], named["name"], strict=True))
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "segment": seg.labels_,
            "segment_name": pd.Series(seg.labels_).map(name_of).to_numpy(),
        }
    )
    return SegmentResult(algorithm, seg, customers, profiles)


def _rfm_rule(name: str) -> str:
    from custval.models.segments import RFM_SEGMENTS

    return dict(RFM_SEGMENTS).get(name, "no rule matched")


@dataclass
class LabelledSegments:
    """Segments learnt from labels the company has: the held-out accuracy, and every
    customer's segment (the label where there is one, else the model's) with reasons."""

    accuracy: float
    held_out: int
    customers: Any  # customer_id, segment, source ("label" or "model"), probability, reasons


def assign_labelled_segments(
    table: Any, *, id_column: str, labels: str, seed: int = 0, top_k: int = 3
) -> LabelledSegments:
    """Learn the segments of column ``labels`` (blank where unknown) from the other columns,
    judge the model on a fifth of the labelled customers held out, refit on all of them, and
    place every unlabelled customer, with the reasons for its segment."""
    from sklearn.model_selection import train_test_split

    from custval.models.segment_assign import SegmentAssigner

    for col in (id_column, labels):
        if col not in table.columns:
            raise CustvalError(f"the table has no column '{col}'", column=col)
    y = table[labels].astype("string").str.strip()
    known = (y.notna() & (y != "")).to_numpy()
    if known.sum() < 20:
        raise CustvalError(
            f"only {int(known.sum())} customers have a label in '{labels}': too few to learn from",
            column=labels,
        )
    features = table.drop(columns=[labels])
    exclude = (id_column,)
    idx = np.flatnonzero(known)
    counts = y[known].value_counts()
    stratify = y[known].to_numpy() if counts.min() >= 2 else None
    train, test = train_test_split(idx, test_size=0.2, random_state=seed, stratify=stratify)
    judge = SegmentAssigner(seed=seed).fit(
        features.iloc[train], y.iloc[train].to_numpy(), exclude=exclude
    )
    accuracy = float((judge.predict(features.iloc[test]) == y.iloc[test].to_numpy()).mean())
    model = SegmentAssigner(seed=seed).fit(
        features.iloc[idx], y.iloc[idx].to_numpy(), exclude=exclude
    )
    why = model.reasons(features, top_k=top_k)
    out = pd.DataFrame(
        {
            "customer_id": table[id_column].astype(str).to_numpy(),
            "segment": np.where(known, y.fillna("").to_numpy(dtype=object), why["segment"]),
            "source": np.where(known, "label", "model"),
            "probability": why["probability"].to_numpy(),
        }
    )
    for i in range(1, top_k + 1):
        if f"reason_{i}" in why:
            out[f"reason_{i}"] = why[f"reason_{i}"].to_numpy()
    return LabelledSegments(accuracy, len(test), out)
