"""Scoring on Spark: the features computed where the data are, every partition scored by the
same models, the run written to the store all or nothing.

The models are trained on one machine (``custval train``); here they travel with the job as
plain values (:class:`PartitionModels`: the bundle's manifest and LightGBM text, the CLV
models' parameters and covariances, the segmentation's centres). Each partition, in
``mapInPandas``, computes the value probability and class, the exact contributions and the top
reasons with their sentences, the CLV with its interval, P(alive) and the segment, with the
same functions as a scoring run on DuckDB (:func:`score_frame`); a customer's outputs depend on
their own features and the models only, so any partitioning gives the same numbers.

What needs the whole base is done once, on the driver: the CLV models are fitted on at most
``[engine] train_sample`` customers drawn on the engine (all of them below it); the importance
and the drift profiles come from at most :data:`PROFILE_SAMPLE` of them. Spark writes the
scored rows as Parquet files (``[engine] staging``), which the store loads as one run.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from custval.columns import SCORED_CLV, SUMMARY_COLUMNS
from custval.config import Project
from custval.data.spark import materialise, spark_frame
from custval.errors import CustvalError
from custval.flows.customer_base import check_summary, clv_settings
from custval.flows.preparation import CustomerSample, Prepared, features, prepare
from custval.flows.scoring import (
    ScoreResult,
    _drift_profiles,
    _Laps,
    _score_segments,
    model_folder,
    write_score_run,
)
from custval.flows.summaries import run_summaries, summary_table
from custval.models.btyd_clv import (
    btyd_outputs,
    clv_models_json,
    fit_btyd,
    model_from_json,
    purchase_model,
)
from custval.models.clv import EXACT_ROWS, SURROGATE_TOLERANCE, clv_interval
from custval.models.explain import importance, reasons
from custval.store import long_reasons, open_store
from custval.store.bundles import bundle_parts, classifier_from_parts

#: customers whose full feature rows the driver scores for the importance and drift profiles
PROFILE_SAMPLE = 100_000
#: the CLV interval's level and draws, as a scoring run on DuckDB has them
CLV_LEVEL, CLV_DRAWS = 0.9, 200


@dataclass(frozen=True)
class PartitionModels:
    """What every partition needs to score its customers: plain values, sent with the job."""

    manifest: dict[str, Any]
    model_file: bytes
    top_k: int
    #: the CLV models (:func:`clv_models_json` with each model's covariance) and the interval's
    #: level, draws and method; None: no CLV
    clv: dict[str, Any] | None = None
    #: the segmentation's model (:func:`custval.models.segments.centroid_model`); None: none
    segments: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------------
# on each partition
# --------------------------------------------------------------------------------------------

#: the classifiers rebuilt in this process, by the model file's identity: one per worker
_CLASSIFIERS: dict[int, Any] = {}


def score_partitions(
    models: PartitionModels, frames: Iterable[pd.DataFrame]
) -> Iterator[pd.DataFrame]:
    """``mapInPandas``' function: each batch of feature rows scored (:func:`score_frame`)."""
    for frame in frames:
        if len(frame):
            yield score_frame(models, frame)


def score_frame(models: PartitionModels, frame: pd.DataFrame) -> pd.DataFrame:
    """The scored rows of a batch of the feature table: customer_id, value_probability,
    value_class, the CLV columns, the segment, and reason_i, reason_i_feature,
    reason_i_value, reason_i_contribution for each rank."""
    clf = _classifier(models)
    frame = frame.reset_index(drop=True)
    explained = reasons(
        clf,
        frame,
        top_k=models.top_k,
        catalogue=clf.manifest_.get("catalogue", {}),
        source="features",
        contributions=clf.contributions(frame, "features"),
    )
    out = pd.DataFrame(
        {
            "customer_id": frame["customer_id"].astype(str).to_numpy(),
            "value_probability": explained["probability"].to_numpy(np.float64),
            "value_class": explained["predicted_class"].to_numpy().astype(np.int32),
        }
    )
    if models.clv is not None:
        for column, values in partition_clv(models.clv, frame).items():
            out[column] = values
    if models.segments is not None:
        out["segment"] = _segment_names(models.segments, frame, out)
    for rank in range(1, ranks(models, clf) + 1):
        for suffix in ("", "_feature", "_value"):
            out[f"reason_{rank}{suffix}"] = explained[f"reason_{rank}{suffix}"].astype(object)
        out[f"reason_{rank}_contribution"] = explained[f"reason_{rank}_contribution"].to_numpy(
            np.float64
        )
    return out


def ranks(models: PartitionModels, clf: Any) -> int:
    """The reasons per customer: top_k, at most the model's features."""
    return min(models.top_k, len(clf.schema_.columns))


def partition_clv(clv: dict[str, Any], frame: pd.DataFrame) -> dict[str, Any]:
    """The CLV columns of a scoring run (:data:`SCORED_CLV`) for the rows of ``frame`` (NaN
    for customers without a purchase), by the fitted models in ``clv``."""
    purchases, spend = clv_models_with_covariance(clv)
    buyers = frame["T"].notna().to_numpy()
    x, tx_, t, m = (
        frame[c].to_numpy(dtype=np.float64, na_value=np.nan)[buyers] for c in SUMMARY_COLUMNS
    )
    found: dict[str, Any] = {}
    if buyers.any():
        found, _ = btyd_outputs(
            purchases,
            spend,
            x,
            tx_,
            t,
            m,
            horizon=clv["horizon"],
            discount=clv["discount"],
            level=clv["level"],
            n_draws=clv["draws"],
            purchases_interval=False,
            method=clv["method"],
        )
    out = {}
    for src, dst in SCORED_CLV.items():
        full = np.full(len(frame), np.nan)
        if src in found:
            full[buyers] = found[src]
        out[dst] = full
    return out


def clv_models_with_covariance(clv: dict[str, Any]) -> tuple[Any, Any]:
    """The purchase and spend models of ``clv``, with the covariances the interval draws from."""
    purchases = purchase_model(clv["purchases"])
    spend = model_from_json(clv["spend"], ("GammaGamma",))
    purchases.covariance_ = np.asarray(clv["purchases"]["covariance"], dtype=np.float64)
    spend.covariance_ = np.asarray(clv["spend"]["covariance"], dtype=np.float64)
    return purchases, spend


def _segment_names(segments: dict[str, Any], frame: pd.DataFrame, out: pd.DataFrame) -> Any:
    """Each row's segment name, as a run on DuckDB places it (its features are checked on
    the driver, :func:`_segmentation`)."""
    _, names, _ = _score_segments(frame, out, "", segments)
    return names


def _classifier(models: PartitionModels) -> Any:
    key = id(models.model_file)
    if key not in _CLASSIFIERS:
        _CLASSIFIERS.clear()  # one job's model at a time per worker
        _CLASSIFIERS[key] = classifier_from_parts(models.manifest, models.model_file)
    return _CLASSIFIERS[key]


def output_schema(models: PartitionModels, clf: Any) -> str:
    """The scored rows' schema as Spark's DDL (:func:`score_frame`'s columns, in order)."""
    cols = ["customer_id string", "value_probability double", "value_class int"]
    if models.clv is not None:
        cols += [f"{dst} double" for dst in SCORED_CLV.values()]
    if models.segments is not None:
        cols.append("segment string")
    for rank in range(1, ranks(models, clf) + 1):
        cols += [
            f"reason_{rank} string",
            f"reason_{rank}_feature string",
            f"reason_{rank}_value string",
            f"reason_{rank}_contribution double",
        ]
    return ", ".join(cols)


# --------------------------------------------------------------------------------------------
# on the driver
# --------------------------------------------------------------------------------------------


def score_on_spark(
    project: Project,
    *,
    store_url: str | Path,
    model_version: str | None = None,
    models_dir: Path | None = None,
    top_k: int = 3,
    with_clv: bool = True,
    progress: Callable[[str], None] | None = None,
) -> ScoreResult:
    """:func:`custval.flows.scoring.score` on the project's Spark: the same run, the scoring
    in ``mapInPandas`` over the feature table's partitions."""
    _check_supported(project)
    folder = model_folder(models_dir or (project.root / "models"), model_version)
    manifest, model_file = bundle_parts(folder)
    clf = classifier_from_parts(manifest, model_file)
    lap = _Laps(progress)
    store = open_store(store_url)
    staging = _staging(project)
    try:
        prepared = prepare(project, progress=lap.start)
        lap("prepare")
        lap.start("the features, and samples of them for the models")
        # computed once and kept by Spark: the samples, the CLV fit and the scoring read it
        table = materialise(prepared.con, "_custval_features", features(project, prepared).table)
        sample, _ = _sample(table, PROFILE_SAMPLE)
        lap("features")
        clv, clv_models, buyers = None, None, None
        if with_clv and "transactions" in prepared.tables:
            lap.start(f"CLV by {project.clv.method}, fitted on a sample")
            clv, clv_models, buyers = fit_clv(project, prepared, table)
            lap("clv")
        placed = store.latest_segment_model()
        segments, segment_run, segment_note = _segmentation(placed, table, clv is not None)
        models = PartitionModels(manifest, model_file, top_k, clv, segments)
        lap.start("scoring every partition on Spark")
        scored = _score_on_engine(project, prepared, table, models, clf, staging)
        lap("scoring")
        lap.start("writing the run to the store")
        run_id, high, n = _store_run(
            store,
            project,
            prepared,
            clf,
            version=folder.name,
            models=models,
            scored=scored,
            sample=sample,
            clv_models=clv_models,
            buyers=buyers,
        )
        top = _top(scored, ranks(models, clf))
        lap("store")
    finally:
        store.close()
        _remove(staging)
    return ScoreResult(
        run_id,
        str(store_url),
        folder.name,
        n,
        high,
        top,
        lap.seconds,
        segment_run,
        segment_note,
        "btyd" if clv_models else None,
        None,
    )


def _check_supported(project: Project) -> None:
    if project.clv.method != "btyd":
        raise CustvalError(
            f"[clv] method = '{project.clv.method}' is not available on Spark: its models "
            "learn from the whole feature table",
            hint="Score with --clv-method btyd on Spark, or run this project with --engine duckdb",
        )
    if project.actions.any:
        raise CustvalError(
            "the project's [actions] (churn, propensity, offers, targeting, playbooks) are "
            "computed on DuckDB only",
            hint="Remove [actions] from the project file to score it on Spark, or score it with "
            "--engine duckdb",
        )


def _sample(table: Any, size: int) -> tuple[pd.DataFrame, bool]:
    """About ``size`` rows of ``table`` (:class:`CustomerSample`), sorted by customer id, and
    whether they are all of them."""
    sample = CustomerSample.of(table, size)
    frame = sample.rows(table).to_pyarrow().to_pandas()
    frame = frame.sort_values("customer_id", kind="stable").reset_index(drop=True)
    return frame, sample.complete


def fit_clv(
    project: Project, prepared: Prepared, table: Any
) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame | None]:
    """The CLV models fitted on at most ``[engine] train_sample`` buyers drawn on the engine,
    and the interval's method for the whole base: (what partitions need, the run's JSON, the
    buyers' summary when the sample is all of them)."""
    missing = [c for c in SUMMARY_COLUMNS if c not in table.columns]
    if missing:
        raise CustvalError(
            "CLV on Spark needs the rfm feature group (frequency, recency, T, monetary_value)",
            hint='Add "rfm" to [features] groups, or score with --no-clv',
        )
    horizon, discount = clv_settings(project)
    buyers = table.filter(table["T"].notnull()).select("customer_id", *SUMMARY_COLUMNS)
    summary, complete = _sample(buyers, project.engine.train_sample)
    x, tx_, t, m = (summary[c].to_numpy(dtype=np.float64) for c in SUMMARY_COLUMNS)
    ids = summary["customer_id"].to_numpy()
    check_summary(prepared.tables["transactions"], project.as_of, ids, x, m)
    choice, spend = fit_btyd(x, tx_, t, m, model=project.clv.model)
    saved = clv_models_json(choice.purchases, spend, horizon, discount, choice=choice)
    distinct = int(
        buyers.select("frequency", "recency", "T").distinct().count().to_pyarrow().as_py()
    )
    method = _interval_method(choice.purchases, spend, summary, distinct, horizon, discount)
    clv = {
        "purchases": {**saved["purchases"], "covariance": choice.purchases.covariance_.tolist()},
        "spend": {**saved["spend"], "covariance": spend.covariance_.tolist()},
        "horizon": horizon,
        "discount": discount,
        "level": CLV_LEVEL,
        "draws": CLV_DRAWS,
        "method": method,
    }
    saved["interval"] = {"level": CLV_LEVEL, "draws": CLV_DRAWS, "method": method}
    saved["fitted_on"] = {"customers": len(summary), "engine": "spark"}
    return clv, saved, summary if complete else None


def _interval_method(
    purchases: Any,
    spend: Any,
    summary: pd.DataFrame,
    distinct: int,
    horizon: float,
    discount: float,
) -> str:
    """The interval method a run on one machine would choose for the whole base ("auto" of
    :func:`custval.models.clv.clv_interval`): exact up to EXACT_ROWS distinct rows, beyond that
    the quadratic when its error on (a part of) the sample is within the tolerance."""
    if distinct <= EXACT_ROWS:
        return "exact"
    part = summary.head(50_000)
    x, tx_, t, m = (part[c].to_numpy(dtype=np.float64) for c in SUMMARY_COLUMNS)
    informative = (x > 0) & (m > 0)
    found = clv_interval(
        purchases,
        spend,
        x,
        tx_,
        t,
        np.where(informative, m, 0.0),
        spend_frequency=np.where(informative, x, 0.0),
        horizon=horizon,
        discount=discount,
        level=CLV_LEVEL,
        n_draws=CLV_DRAWS,
        method="quadratic",
    )
    return "quadratic" if found.surrogate_error <= SURROGATE_TOLERANCE else "exact"


def _segmentation(
    placed: tuple[str, dict[str, Any]] | None, table: Any, with_clv: bool
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(the segmentation's model, its run, why segments are left empty) for a feature table
    with ``table``'s columns (and the CLV when computed)."""
    if placed is None:
        return None, None, None
    run_id, model = placed
    have = set(table.columns) | ({"clv"} if with_clv else set())
    missing = [f for f in model["preparation"]["features"] if f not in have]
    if missing:
        return (
            None,
            None,
            f"segments left empty: segmentation run {run_id} uses {', '.join(missing)}, which "
            "this scoring run does not compute",
        )
    return model, run_id, None


def _score_on_engine(
    project: Project,
    prepared: Prepared,
    table: Any,
    models: PartitionModels,
    clf: Any,
    staging: str,
) -> pads.Dataset:
    """Every customer scored in ``mapInPandas`` and written by Spark as Parquet files to the
    ``staging`` folder, which this process then reads as a dataset."""
    frame = spark_frame(prepared.con, table)
    if project.engine.partitions:
        frame = frame.repartition(project.engine.partitions)
    scored = frame.mapInPandas(partial(score_partitions, models), schema=output_schema(models, clf))
    try:
        scored.write.mode("overwrite").parquet(staging)
        return pads.dataset(staging, format="parquet")
    except Exception as exc:
        raise CustvalError(
            f"Spark could not score the customers into {staging}: {_first_line(exc)}",
            hint="The workers run custval: install the same custval version there; "
            "[engine] staging must be a folder both Spark and this machine reach",
        ) from None


def _staging(project: Project) -> str:
    """The folder of this run's scored rows: under ``[engine] staging``, else in a temporary
    folder of this machine (a local Spark's)."""
    base = project.engine.staging or tempfile.mkdtemp(prefix="custval-spark-")
    return f"{base.rstrip('/')}/run-{uuid.uuid4().hex}"


def _remove(staging: str) -> None:
    """Delete the run's scored rows, wherever they are (a failure to is not the run's)."""
    with contextlib.suppress(Exception):
        filesystem, path = pafs.FileSystem.from_uri(staging)
        filesystem.delete_dir(path)
    local = Path(staging).parent
    if local.name.startswith("custval-spark-") and local.is_dir():
        shutil.rmtree(local, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


#: scored rows written to the store at a time
BATCH_ROWS = 100_000


def _store_run(
    store: Any,
    project: Project,
    prepared: Prepared,
    clf: Any,
    *,
    version: str,
    models: PartitionModels,
    scored: pads.Dataset,
    sample: pd.DataFrame,
    clv_models: dict[str, Any] | None,
    buyers: pd.DataFrame | None,
) -> tuple[str, int, int]:
    """The run written to the store all or nothing, its rows read from the scored files a
    batch at a time: (run id, high-value customers, customers). ``buyers``: every buyer's
    summary, when the driver has it, for the dashboard's tracking table."""
    k = ranks(models, clf)
    names = scored.schema.names
    outputs = [c for c in names if not c.startswith("reason_")]
    reason_cols = [c for c in names if c.startswith("reason_")]
    predictions = (
        _nan_as_null(pa.Table.from_batches([b]))
        for b in scored.to_batches(columns=outputs, batch_size=BATCH_ROWS)
    )
    reasons = (
        long_reasons(b.to_pandas(), b.column("customer_id").to_numpy(zero_copy_only=False), k)
        for b in scored.to_batches(columns=["customer_id", *reason_cols], batch_size=BATCH_ROWS)
    )
    # the summaries need five columns of every customer; the rest streams
    wanted = ("value_class", "value_probability", "segment", "clv_expected", "p_alive")
    few = scored.to_table(columns=[c for c in wanted if c in names])
    preds = {c: few.column(c).to_numpy(zero_copy_only=False) for c in few.column_names}
    summaries = summary_table(run_summaries(preds, project, prepared, clv_models, buyers))
    sample_scores = score_frame(models, sample)
    imp = importance(clf, sample, contributions=clf.contributions(sample, "features"))
    sample_preds = {c: sample_scores[c].to_numpy() for c in outputs}
    profiles = _drift_profiles(store, clf, version, sample, sample_preds, None, _Laps())
    run_id = write_score_run(
        store,
        project,
        clf,
        version=version,
        predictions=predictions,
        reasons=reasons,
        importance=imp,
        clv_models=clv_models,
        extra={"run_profiles": profiles, "run_summaries": summaries},
    )
    return run_id, int(np.sum(preds["value_class"] == 1)), len(preds["value_class"])


def _nan_as_null(rows: pa.Table) -> pa.Table:
    """NaN (no purchase, so no CLV) as NULL, as a run on DuckDB stores it for the BI tools."""
    for i, field in enumerate(rows.schema):
        if pa.types.is_floating(field.type):
            column = rows.column(i)
            rows = rows.set_column(i, field, pc.if_else(pc.is_nan(column), None, column))
    return rows


def _top(scored: pads.Dataset, k: int, n: int = 100) -> pd.DataFrame:
    """The ``n`` customers of highest value probability, as :class:`ScoreResult` shows them
    (the whole run is in the store): probability, class, reasons."""
    columns = ["customer_id", "value_probability", "value_class"]
    columns += [f"reason_{r}" for r in range(1, k + 1)]
    rows = scored.to_table(columns=columns)
    order = pc.sort_indices(rows, [("value_probability", "descending")])[:n]
    frame = rows.take(order).to_pandas()
    names = {"value_probability": "probability", "value_class": "predicted_class"}
    return frame.rename(columns=names)
