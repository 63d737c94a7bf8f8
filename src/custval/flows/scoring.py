"""Scoring a project into the store: value probability, class and reasons, CLV by the
project's method, P(alive), the segment; one run, all or nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from custval.columns import CLV_INTERVAL, SCORED_CLV
from custval.config import Project
from custval.errors import FitError
from custval.flows.actions import ActionResult, score_actions
from custval.flows.customer_base import btyd_columns, clv_settings
from custval.flows.generation import auto_features
from custval.flows.leaderboard import METHOD_CANDIDATES, clv_leaderboard
from custval.flows.monitoring import OUTPUTS, run_profiles, run_reference
from custval.flows.preparation import Prepared, features, prepare
from custval.flows.summaries import run_summaries, summary_table
from custval.models.clv_serving import FILE_NAME
from custval.models.explain import importance, reasons
from custval.models.segments import assign_nearest
from custval.models.value import ValueClassifier
from custval.store import Store, long_reasons, open_store
from custval.store.bundles import load_bundle
from custval.store.registry import ModelRegistry


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
    #: what the project's [actions] added (None when it asks for none)
    actions: ActionResult | None = None


def score(
    project: Project,
    *,
    store_url: str | Path,
    model_version: str | None = None,
    models_dir: Path | None = None,
    top_k: int = 3,
    with_clv: bool = True,
    prepared: Prepared | None = None,
    progress: Callable[[str], None] | None = None,
) -> ScoreResult:
    """Score every customer at the project's as-of date and write one run to the store.

    Value probability, class and top reasons from the model bundle (the champion of
    ``models_dir``, :mod:`custval.store.registry`, unless ``model_version`` names one), and,
    when the project has transactions,
    CLV over the project's horizon (``[clv]``, a year by default) with its 90% interval, by
    its method (BG/NBD and Gamma-Gamma by default; :func:`score_clv`), and P(alive) and
    expected purchases from BG/NBD; each customer's segment by the store's latest
    segmentation; all or nothing (:mod:`custval.store`). ``progress`` gets each stage's name.
    """
    folder = model_folder(models_dir or (project.root / "models"), model_version)
    clf = load_bundle(folder)
    lap = _Laps(progress)
    # open the store first: an unreachable store fails before any work
    store = open_store(store_url)
    try:
        prepared = prepared or prepare(project, progress=lap.start)
        lap("prepare")
        lap.start("computing the features")
        table = model_features(project, prepared, clf.manifest_)
        lap("features")
        lap.start("the value model's probabilities and reasons")
        explained, imp = _explain(clf, table, top_k, lap)
        ids = table["customer_id"].astype(str).to_numpy()
        preds: dict[str, Any] = {
            "customer_id": ids,
            "value_probability": explained.probability.to_numpy(),
            "value_class": explained.predicted_class.to_numpy().astype(np.int32),
        }
        clv_models, clv_kept = _clv_step(project, prepared, table, preds, top_k, lap, with_clv)
        segment_run, segment_note = _segments_step(store, table, preds, lap)
        actions = None
        if project.actions.any:
            actions = score_actions(project, prepared, table, preds, clv_models, lap.start)
            lap("actions")
        profiles = _drift_profiles(store, clf, folder.name, table, preds, actions, lap)
        summaries = _summaries(project, prepared, table, preds, clv_models, lap)
        lap.start("writing the run to the store")
        run_id = _write(
            store,
            project,
            clf,
            version=folder.name,
            explained=explained,
            imp=imp,
            preds=preds,
            top_k=top_k,
            clv=(clv_models, clv_kept),
            actions=actions or ActionResult(),
            drift=profiles,
            summaries=summaries,
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
        lap.seconds,
        segment_run,
        segment_note,
        clv_models.get("method") if clv_models else None,
        actions,
    )


def model_features(project: Project, prepared: Prepared, manifest: dict) -> pd.DataFrame:
    """The feature table the model of ``manifest`` scores: the hand-built features, and the
    generated ones when it was trained with them (:func:`trained_on_generated`)."""
    ft = features(project, prepared)
    if trained_on_generated(manifest):
        ft = auto_features(project, prepared, ft)
    return ft.to_pyarrow().to_pandas()


def _summaries(
    project: Project,
    prepared: Prepared,
    table: pd.DataFrame,
    preds: dict[str, Any],
    clv_models: dict[str, Any] | None,
    lap: _Laps,
) -> pa.Table:
    """The run's summaries for the dashboard (:mod:`custval.flows.summaries`)."""
    lap.start("the dashboard's summaries")
    found = summary_table(run_summaries(preds, project, prepared, clv_models, table))
    lap("summaries")
    return found


def _clv_step(
    project: Project,
    prepared: Prepared,
    table: pd.DataFrame,
    preds: dict[str, Any],
    top_k: int,
    lap: _Laps,
    with_clv: bool,
) -> tuple[dict[str, Any] | None, ClvKept]:
    """CLV, P(alive) and expected purchases into ``preds`` when asked and the project has
    transactions: (the fitted models' JSON, what the run keeps of a machine-learned CLV)."""
    if not with_clv or "transactions" not in prepared.tables:
        return None, ClvKept()
    lap.start(f"CLV by {project.clv.method}")
    clv_columns, clv_models, clv_kept = score_clv(project, prepared, table, top_k)
    preds.update(clv_columns)
    lap("clv")
    return clv_models, clv_kept


def _segments_step(
    store: Store, table: Any, preds: dict[str, Any], lap: _Laps
) -> tuple[str | None, str | None]:
    """Each customer's segment into ``preds`` by the store's latest segmentation, if any:
    (segmentation run, why the segments were left empty)."""
    lap.start("the customers' segments")
    placed = store.latest_segment_model()
    if placed is None:
        return None, None
    segment_run, names, segment_note = _score_segments(table, preds, *placed)
    if names is not None:
        preds["segment"] = names
    lap("segments")
    return segment_run, segment_note


def trained_on_generated(manifest: dict) -> bool:
    """Whether the model of a bundle's ``manifest`` was trained with generated features
    (``train --auto-features`` records its feature selection)."""
    return "feature_selection" in manifest


def model_folder(root: Path, version: str | None) -> Path:
    """The bundle of model ``version`` under ``root`` (a version, ``champion``,
    ``challenger`` or ``latest``), or the champion there (:mod:`custval.store.registry`)."""
    return root / ModelRegistry(root).resolve(version)


class _Laps:
    """Seconds spent in each step of a run: calling it with a step's name ends the step."""

    def __init__(self, progress: Callable[[str], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()
        self._progress = progress

    def start(self, stage: str) -> None:
        """Tell the caller's progress that ``stage`` starts."""
        if self._progress is not None:
            self._progress(stage)

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = now - self._clock
        self._clock = now


def _explain(
    clf: ValueClassifier, table: pd.DataFrame, top_k: int, lap: _Laps
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each customer's probability, class and top reasons, and the global importance."""
    # one pass of the model's contributions serves the reasons and the importance
    contributions = clf.contributions(table, "features")
    lap("contributions")
    explained = reasons(
        clf,
        table,
        top_k=top_k,
        catalogue=clf.manifest_.get("catalogue", {}),
        source="features",
        contributions=contributions,
    )
    imp = importance(clf, table, contributions=contributions)
    lap("reasons")
    return explained, imp


def _write(
    store: Store,
    project: Project,
    clf: ValueClassifier,
    *,
    version: str,
    explained: pd.DataFrame,
    imp: pd.DataFrame,
    preds: dict[str, Any],
    top_k: int,
    clv: tuple[dict[str, Any] | None, ClvKept],
    actions: ActionResult,
    drift: pa.Table,
    summaries: pa.Table,
) -> str:
    """The scoring run, written to the store all or nothing; returns its id."""
    clv_models, clv_kept = clv
    return write_score_run(
        store,
        project,
        clf,
        version=version,
        # missing values (no purchase, so no CLV) are NULL for the BI tools, not NaN
        predictions=pa.Table.from_pandas(pd.DataFrame(preds), preserve_index=False),
        reasons=long_reasons(explained, preds["customer_id"], min(top_k, len(clf.schema_.columns))),
        importance=imp,
        clv_models=clv_models,
        extra={
            **({"clv_reasons": clv_kept.reasons} if clv_kept.reasons is not None else {}),
            **actions.tables,
            "run_profiles": drift,
            "run_summaries": summaries,
        },
        files={**(clv_kept.files or {}), **actions.files} or None,
    )


def write_score_run(
    store: Store,
    project: Project,
    clf: ValueClassifier,
    *,
    version: str,
    predictions: pa.Table | Iterable[pa.Table],
    reasons: pa.Table | Iterable[pa.Table],
    importance: pd.DataFrame,
    clv_models: dict[str, Any] | None,
    extra: dict[str, pa.Table],
    files: dict[str, bytes] | None = None,
) -> str:
    """A scoring run's rows (the predictions and the long reasons, as tables or one table
    after another), written with the model's record, importance and profile, all or nothing;
    returns its id."""
    config_hash = hashlib.sha256(
        project.model_dump_json(exclude={"store"}).encode() + version.encode()
    ).hexdigest()[:16]
    store.save_model(version, clf.manifest_)
    return store.write_run(
        kind="score",
        predictions=predictions,
        reasons=reasons,
        importance=pa.Table.from_pandas(importance, preserve_index=False),
        profiles=profile_rows(clf.manifest_.get("profile", {}).get("features", [])),
        model_version=version,
        as_of=project.as_of,
        config_hash=config_hash,
        clv_models=clv_models,
        extra=extra,
        files=files,
    )


def _drift_profiles(
    store: Store,
    clf: ValueClassifier,
    version: str,
    table: pd.DataFrame,
    preds: dict[str, Any],
    actions: ActionResult | None,
    lap: _Laps,
) -> pa.Table:
    """The run's drift profiles (:func:`custval.flows.monitoring.run_profiles`): the model's
    features and the outputs on the bins of the model's reference."""
    lap.start("the drift profiles of the features and outputs")
    columns = list(clf.schema_.columns)
    feats = pa.Table.from_pandas(table[columns], preserve_index=False)
    outputs = {k: preds[k] for k in OUTPUTS if k in preds}
    churn = (actions.tables if actions else {}).get("churn_risk")
    if churn is not None:
        outputs["p_churn"] = churn.column("p_churn")
    found = run_profiles(feats, outputs, run_reference(store, clf.manifest_, version))
    lap("profiles")
    return found


def _score_segments(
    table: Any, preds: dict[str, Any], run_id: str, model: dict[str, Any]
) -> tuple[str | None, Any, str | None]:
    """Each scored customer's segment name by the store's latest segmentation (its
    preparation and centres, :func:`custval.models.segments.assign_nearest`), from the feature
    ``table`` and the run's CLV (``clv``, the segmentation's name for it). Returns (segmentation
    run, names, None), or (None, None, why) when the segmentation uses features this scoring
    run does not have, so a segmentation of another table never stops a scoring run."""

    wanted = list(model["preparation"]["features"])
    frame = table.copy()
    if SCORED_CLV["clv"] in preds:
        frame["clv"] = preds[SCORED_CLV["clv"]]
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


@dataclass
class ClvKept:
    """What a scoring run keeps of a machine-learned CLV besides its columns: the reasons
    for each customer's CLV (the store's long table) and the model's file."""

    reasons: Any = None
    files: dict[str, bytes] | None = None


def score_clv(
    project: Project, prepared: Prepared, table: Any, top_k: int = 3
) -> tuple[dict[str, Any], dict[str, Any], ClvKept]:
    """CLV over the project's horizon (``[clv]``; default a year at 10% a year) with its 90%
    interval, P(alive) and expected purchases for each row of the feature ``table`` (NaN for
    customers without a purchase), the fitted models (:func:`clv_models_json`) and what the
    run keeps of a machine-learned model.

    P(alive) and the expected purchases always come from the BTYD model. With ``[clv] method``
    other than btyd the CLV and its interval come from the method the leaderboard chose
    (:func:`custval.flows.leaderboard.clv_leaderboard`), for every customer of the table (those
    without a purchase too); the models' JSON then says which (``method``), keeps the
    leaderboard and, for a machine-learned choice, the model's description and how it becomes
    the CLV (``spend_model``, :mod:`custval.models.clv_serving`), whose file the run keeps; the
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
    except FitError as exc:
        # no repeat buyers, say: the machine-learned CLV does without the BTYD model
        cols = {c: np.full(len(table), np.nan) for c in ("p_alive", "expected_purchases")}
        models = {"btyd_error": str(exc).split("\n", 1)[0]}

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
    for src in CLV_INTERVAL:
        cols[SCORED_CLV[src]] = found[src].reindex(ids).to_numpy(dtype=np.float64)
    models["method"] = board.chosen
    models["leaderboard"] = board.leaderboard.to_dict("records")
    models["evaluation"] = board.evaluation
    if board.model is None or board.serving is None:
        return cols, models, ClvKept()

    described, payload = board.model.dumps()
    models["spend_model"] = {"model": described, "serving": board.serving, "file": FILE_NAME}
    kept = ClvKept(files={FILE_NAME: payload})
    if board.reasons is not None:
        ranks = sum(1 for c in board.reasons.columns if c.endswith("_feature"))
        kept.reasons = long_reasons(board.reasons, board.predictions["customer_id"], ranks)
    return cols, models, kept


def profile_rows(records: list[dict[str, Any]]) -> Any:
    """The model's high-value profile (from its bundle) as long rows for the store:
    feature, kind, statistic, value, category."""

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
