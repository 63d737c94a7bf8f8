"""``custval monitor``: a scoring run checked against its reference (issue 19).

The run's stored drift profiles (:mod:`custval.flows.monitoring`) are compared, column by
column, with the reference's: by default (``first``) the first run of the run's model, its
first customers in production (for that run itself, the training data); or the training data
(``training``: the features and value probability the bundle keeps, the other outputs from the
model's first run); or the model's previous run (``previous``); or any run of the same model.
The training features are as of the training cutoff, a label horizon before the scoring runs:
features that grow with time (tenure, days since) differ for that alone, which is why the
first run is the default. The value classifier's performance is
estimated from the run's probabilities (CBPE, :mod:`custval.models.performance`) and set
against training's. Both are kept per run in the store (``run_drift``, ``run_performance``),
so that BI tools draw their trend; thresholds are the project's ``[monitor]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from custval.config import MonitorOptions, Project
from custval.errors import CustvalError
from custval.flows.monitoring import bundle_profiles, drift_report, profiles_from_rows
from custval.flows.outcomes import (
    Outcomes,
    forecast_outcomes,
    matured_on,
    realised_outcomes,
)
from custval.models.drift import ASSUMPTION as DRIFT_ASSUMPTION
from custval.models.drift import Profile
from custval.models.performance import ClassifierPerformance, estimated, migration_matrix
from custval.store import Store, open_store
from custval.store.registry import STORE_WAIT_S

__all__ = ["MonitorReport", "check_run"]

SOURCES = ("features", "outputs")


@dataclass
class MonitorReport:
    """What ``custval monitor`` found for one scoring run."""

    run_id: str
    as_of: date | None
    model_version: str
    #: what the run was compared with, in words, and as the store keeps it
    reference: str
    reference_key: str
    #: a row per column: source, feature, kind, psi, js_distance, critical_psi, p_value,
    #: alarm, n_reference, n_current; the largest PSI first
    drift: pd.DataFrame
    estimate: ClassifierPerformance
    #: the model's out-of-fold ROC AUC at training, the yardstick of the estimate
    training_auc: float | None
    thresholds: MonitorOptions
    notes: list[str] = field(default_factory=list)
    #: the predictions against what happened, once the labels have matured
    outcomes: Outcomes | None = None
    #: customers by segment in the reference run (rows) and this one (columns)
    migration: pd.DataFrame | None = None
    #: earlier forecast runs against the actual values a later one holds (flows.outcomes)
    forecasts: pd.DataFrame | None = None

    @property
    def drift_alarms(self) -> pd.DataFrame:
        return self.drift[self.drift["alarm"]]

    @property
    def performance_alarm(self) -> bool:
        """The estimated ROC AUC fell more than ``auc_drop`` below training's."""
        if self.training_auc is None or not np.isfinite(self.estimate.roc_auc):
            return False
        return bool(self.estimate.roc_auc < self.training_auc - self.thresholds.auc_drop)

    @property
    def alarm(self) -> bool:
        """Whether monitoring fails: more alarming columns than ``max_alarms``, or the
        performance alarm."""
        return len(self.drift_alarms) > self.thresholds.max_alarms or self.performance_alarm

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON (``custval monitor --json``)."""
        drift = self.drift.astype({"alarm": bool}).to_dict("records")
        return {
            "run_id": self.run_id,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "model_version": self.model_version,
            "reference": self.reference,
            "alarm": self.alarm,
            "drift_alarms": [f"{r['source']}.{r['feature']}" for r in drift if r["alarm"]],
            "performance_alarm": self.performance_alarm,
            "thresholds": self.thresholds.model_dump(),
            "drift": drift,
            "drift_assumption": DRIFT_ASSUMPTION,
            "estimated_performance": {**vars(self.estimate)},
            "training_roc_auc": self.training_auc,
            "realised": self.outcomes.to_json() if self.outcomes else None,
            "segment_migration": None
            if self.migration is None
            else {
                "before": list(self.migration.index),
                "after": list(self.migration.columns),
                "customers": self.migration.to_numpy().tolist(),
            },
            "forecasts": None
            if self.forecasts is None or self.forecasts.empty
            else self.forecasts.astype({"first": str, "last": str}).to_dict("records"),
            "notes": self.notes,
        }


def check_run(
    project: Project,
    *,
    store_url: str | Path | None = None,
    run: str | None = None,
    reference: str = "first",
    models_dir: Path | None = None,
    realised: bool = False,
) -> MonitorReport:
    """Check scoring ``run`` (default: the latest) against ``reference`` (``first``,
    ``training``, ``previous`` or a run id) and keep the result in the store (module
    docstring). Once the run's labels have matured, its predictions are judged against what
    happened (:mod:`custval.flows.outcomes`); ``realised`` makes that required (an error
    before)."""
    with open_store(store_url or project.store, wait=STORE_WAIT_S) as store:
        run_id, version, as_of = _scoring_run(store, run)
        current = _stored(store, run_id)
        key, words, ref, notes = _reference(
            store, run_id, version, reference, models_dir or project.root / "models"
        )
        drift = _compare(ref, current, project.monitor, notes)
        probability = store.run_rows("predictions", run_id).column("value_probability")
        estimate = estimated(probability.drop_null().to_numpy())
        report = MonitorReport(
            run_id,
            as_of,
            version,
            words,
            key,
            drift,
            estimate,
            _training_auc(models_dir or project.root / "models", version, notes),
            project.monitor,
            notes,
        )
        report.migration = _migration(store, run_id, key)
        report.outcomes = _outcomes(project, store, run_id, as_of, models_dir, realised, notes)
        report.forecasts = forecast_outcomes(store)
        _keep(store, report)
    return report


def _outcomes(
    project: Project,
    store: Store,
    run_id: str,
    as_of: date | None,
    models_dir: Path | None,
    required: bool,
    notes: list[str],
) -> Outcomes | None:
    """The realised figures when the labels have matured (required or not), else a note."""
    version = store.query("SELECT model_version FROM runs WHERE run_id = ?", (run_id,))[0][0]
    try:
        manifest = _manifest(models_dir or project.root / "models", str(version))
    except CustvalError:
        if required:
            raise
        notes.append(f"model {version} is not in the models folder: no realised figures")
        return None
    due = matured_on(manifest, as_of) if as_of else None
    if not required and (due is None or due > project.as_of):
        if due is not None:
            notes.append(f"the labels mature on {due}: realised performance from then")
        return None
    if as_of is None:
        raise CustvalError(f"run {run_id} has no as-of date: its outcome cannot be dated")
    return realised_outcomes(project, store, run_id, as_of, manifest)


def _migration(store: Store, run_id: str, reference_key: str) -> pd.DataFrame | None:
    """The segment migration from the reference run to this one, when both have segments."""
    if reference_key.startswith("training:"):
        return None
    before = store.run_rows("predictions", reference_key).select(["customer_id", "segment"])
    after = store.run_rows("predictions", run_id).select(["customer_id", "segment"])
    if before.column("segment").null_count == before.num_rows:
        return None
    joined = before.to_pandas().merge(after.to_pandas(), on="customer_id", suffixes=("_b", "_a"))
    if joined["segment_a"].isna().all():
        return None
    return migration_matrix(joined["segment_b"], joined["segment_a"])


def _scoring_run(store: Store, run: str | None) -> tuple[str, str, date | None]:
    """The run to check: its id, model version and as-of date."""
    if run is None:
        run = store.latest_run("score")
        if run is None:
            raise CustvalError(
                "the store has no scoring run to monitor",
                source=store.url,
                hint="Run 'custval score -c PROJECT' first",
            )
    rows = store.query(
        "SELECT kind, status, model_version, as_of FROM runs WHERE run_id = ?", (run,)
    )
    if not rows or rows[0][0] != "score" or rows[0][1] != "succeeded":
        found = f"a {rows[0][1]} {rows[0][0]} run" if rows else "not in the store"
        raise CustvalError(
            f"run '{run}' is {found}: only succeeded scoring runs are monitored",
            source=store.url,
            hint="Leave out --run to check the latest scoring run",
        )
    return run, str(rows[0][2]), rows[0][3]


def _stored(store: Store, run_id: str) -> dict[str, dict[str, Profile]]:
    rows = store.run_rows("run_profiles", run_id)
    if rows.num_rows == 0:
        raise CustvalError(
            f"run {run_id} kept no drift profiles: it was scored before custval monitored runs",
            source=store.url,
            hint="Score the project again; the new run is monitored",
        )
    return {source: profiles_from_rows(rows, source) for source in SOURCES}


def _reference(
    store: Store, run_id: str, version: str, reference: str, models_dir: Path
) -> tuple[str, str, dict[str, dict[str, Profile]], list[str]]:
    """(key kept in the store, words for the report, profiles, notes) of the reference."""
    first = store.first_run(version)
    if reference == "first":
        if first is not None and first != run_id:
            return first, f"run {first}, model {version}'s first", _stored(store, first), []
        reference = "training"  # the first run itself: its training data is all there is
    if reference == "training":
        return _training_reference(store, run_id, version, models_dir, first)
    other = _previous_run(store, run_id, version) if reference == "previous" else reference
    _scoring_run(store, other)
    if other == run_id:
        raise CustvalError(f"run {run_id} cannot be its own reference", hint="Name another run")
    return other, f"run {other}", _stored(store, other), []


def _training_reference(
    store: Store, run_id: str, version: str, models_dir: Path, first: str | None
) -> tuple[str, str, dict[str, dict[str, Profile]], list[str]]:
    """The model's training data (features and value probability; the other outputs from the
    model's first run when that is another run)."""
    manifest = _manifest(models_dir, version)
    ref = bundle_profiles(manifest)
    notes = []
    at = (manifest.get("training") or {}).get("features_as_of")
    if at:
        notes.append(
            f"the training features are as of {at}: features that grow with time (tenure, "
            "days since) differ from a later run's for that alone"
        )
    if first is not None and first != run_id:
        for name, prior in _stored(store, first)["outputs"].items():
            ref["outputs"].setdefault(name, prior)
    if not ref["features"]:
        if first is None or first == run_id:
            raise CustvalError(
                f"there is no reference for run {run_id}: model {version}'s bundle keeps no "
                "training profiles (trained before custval monitored runs) and this is its "
                "first run",
                hint="Compare with another run (--reference RUN_ID), or train again",
            )
        ref["features"] = _stored(store, first)["features"]
        notes.append(f"the bundle keeps no training profiles: features compared with {first}")
    return f"training:{version}", f"the training data of model {version}", ref, notes


def _previous_run(store: Store, run_id: str, version: str) -> str:
    rows = store.query(
        "SELECT r.run_id FROM runs r, runs c WHERE c.run_id = ? AND r.kind = 'score' "
        "AND r.status = 'succeeded' AND r.model_version = ? AND r.run_id <> c.run_id "
        "AND r.finished_at < c.finished_at "
        "AND EXISTS (SELECT 1 FROM run_profiles p WHERE p.run_id = r.run_id) "
        "ORDER BY r.finished_at DESC LIMIT 1",
        (run_id, version),
    )
    if not rows:
        raise CustvalError(
            f"there is no reference run: run {run_id} is the first monitored run of model "
            f"{version}",
            hint="Compare with the training data (--reference training, the default)",
        )
    return str(rows[0][0])


def _manifest(models_dir: Path, version: str) -> dict[str, Any]:
    folder = models_dir / version
    if not (folder / "manifest.json").exists():
        raise CustvalError(
            f"the run's model {version} is not in '{models_dir}': its training data cannot be "
            "the reference",
            hint="Point --models at the folder that holds it, or use --reference RUN_ID",
        )
    return dict(json.loads((folder / "manifest.json").read_text()))


def _training_auc(models_dir: Path, version: str, notes: list[str]) -> float | None:
    # the manifest's figures: the model itself need not be loaded for them
    try:
        metrics = _manifest(models_dir, version).get("metrics") or {}
    except CustvalError as exc:
        notes.append(f"no training ROC AUC to compare with: {str(exc).splitlines()[0]}")
        return None
    auc = metrics.get("roc_auc")
    return None if auc is None else float(auc)


def _compare(
    reference: dict[str, dict[str, Profile]],
    current: dict[str, dict[str, Profile]],
    options: MonitorOptions,
    notes: list[str],
) -> pd.DataFrame:
    """The drift report of both sources; features must be the reference's, outputs the
    reference lacks are noted and left out."""
    ref, cur = reference["features"], current["features"]
    missing, new = sorted(set(ref) - set(cur)), sorted(set(cur) - set(ref))
    if missing or new:
        raise CustvalError(
            f"the run's features differ from its reference's: {len(missing)} missing, "
            f"{len(new)} new",
            count=len(missing) + len(new),
            examples=[*({"missing": c} for c in missing[:5]), *({"new": c} for c in new[:5])],
            hint="Compare runs of the same model, or train a model on the new features",
        )
    outs = {n: p for n, p in current["outputs"].items() if n in reference["outputs"]}
    if set(current["outputs"]) - set(outs):
        notes.append(
            "no reference yet for " + ", ".join(sorted(set(current["outputs"]) - set(outs)))
        )
    frames = [
        drift_report(
            {n: reference[source][n] for n in profiles},
            profiles,
            alpha=options.alpha,
            min_psi=options.min_psi,
        ).assign(source=source)
        for source, profiles in (("features", cur), ("outputs", outs))
        if profiles
    ]
    frame = pd.concat(frames, ignore_index=True)
    first = ["source", "feature"]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    return frame.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)


def _keep(store: Store, report: MonitorReport) -> None:
    """The report into the store's ``run_drift`` and ``run_performance``; a check of the same
    run against the same reference replaces the earlier one."""
    now = datetime.now(UTC).replace(tzinfo=None)
    drift = pa.Table.from_pandas(
        report.drift.assign(
            run_id=report.run_id,
            reference=report.reference_key,
            alarm=report.drift["alarm"].astype("int32"),
            checked_at=now,
        ),
        preserve_index=False,
    )
    est = report.estimate
    metrics = {"roc_auc": est.roc_auc, "precision_top": est.precision_top, "lift_top": est.lift_top}
    perf = pa.table(
        {
            "run_id": [report.run_id] * len(metrics),
            "kind": ["estimated"] * len(metrics),
            "metric": list(metrics),
            "value": pa.array([float(v) for v in metrics.values()], pa.float64()),
            "detail": [json.dumps({"assumption": est.assumption, "n": est.n})] * len(metrics),
            "checked_at": pa.array([now] * len(metrics), pa.timestamp("us")),
        }
    )
    store.replace_rows(
        ("run_drift", {"run_id": report.run_id, "reference": report.reference_key}, drift),
        ("run_performance", {"run_id": report.run_id, "kind": "estimated"}, perf),
    )
