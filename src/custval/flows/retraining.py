"""``custval retrain``: a challenger trained on fresh data, judged against the champion on the
same time-based holdout, promoted only when better by the project's margin (issue 19).

**The holdout** is the latest period whose labels are known: the customers' features at
``as_of − horizon`` and their spend in the ``horizon`` after (the champion's label definition,
so that both are judged on the same question). **The champion** predicts it as it stands.
**The challenger** is trained on that period (the freshest labelled data; its bundle is what
would be promoted), and its score on the holdout is the one a deployed model of its kind would
have earned: the challenger's model trained one horizon earlier and scored on the holdout,
a period it has not seen (the ``time_split`` figures of :class:`~custval.models.value.
ValueClassifier`). Scoring the challenger on its own training rows would flatter it.

The challenger is promoted when its ROC AUC beats the champion's by ``[monitor]
promote_margin`` (or with ``force``; or when the champion cannot score today's features at
all). A champion trained on data that overlaps the holdout has seen its labels: its score is
optimistic, and the decision errs towards keeping it; the note says so. Every decision is
logged in the registry and the store, with the figures.

**Segmentations** follow the same policy: the project's features are segmented again with the
latest segmentation's features and number of segments; the new segments are paired with the
old ones (:func:`custval.models.segments.segment_mapping`), and the new segmentation is stored
only when the share of customers it keeps together reaches ``[monitor] segment_stability``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from custval.config import Project
from custval.errors import CustvalError
from custval.flows.preparation import Prepared, prepare
from custval.flows.segmentation import segment_features, segment_table, store_segments
from custval.flows.value import ValueTraining, train_value
from custval.models.segments import assign_nearest, segment_mapping
from custval.models.value import classification_metrics
from custval.store import open_store
from custval.store.bundles import load_bundle
from custval.store.registry import STORE_WAIT_S, ModelRegistry

__all__ = ["RetrainResult", "SegmentationDecision", "retrain"]


@dataclass
class SegmentationDecision:
    """Whether a new segmentation replaced the latest one, and why."""

    kept_new: bool
    stability: float
    threshold: float
    #: old segment name: new segment name
    mapping: dict[str, str]
    run_id: str | None
    previous_run: str


@dataclass
class RetrainResult:
    """What ``custval retrain`` did: the holdout, both models' figures on it, the decision."""

    champion: str | None
    challenger: str
    holdout: dict[str, Any]
    champion_metrics: dict[str, float] | None
    challenger_metrics: dict[str, float]
    margin: float
    promoted: bool
    forced: bool
    reason: str
    notes: list[str] = field(default_factory=list)
    segmentation: SegmentationDecision | None = None

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "segmentation"}
        out["segmentation"] = vars(self.segmentation) if self.segmentation else None
        return out


def retrain(
    project: Project,
    *,
    models_dir: Path | None = None,
    force: bool = False,
    margin: float | None = None,
    folds: int | None = None,
    candidates: tuple[str, ...] | None = None,
    prepared: Prepared | None = None,
    progress: Callable[[str], None] | None = None,
) -> RetrainResult:
    """Train a challenger, judge it against the champion, promote it or not (module
    docstring)."""
    say = progress or (lambda _stage: None)
    root = models_dir or project.root / "models"
    registry = ModelRegistry(root, store_url=project.store)
    champion = registry.aliases().get("champion")
    if champion is None and (champion := _newest(registry)) is not None:
        # a models folder from before the registry: its newest version has been the one used
        registry.promote(champion, action="adopt", reason="the version in use before retrain")
    manifest = load_bundle(root / champion).manifest_ if champion else {}
    label = manifest.get("label") or {}
    prepared = prepared or prepare(project, progress=say)
    trained = _train_challenger(project, prepared, root, manifest, label, folds, candidates, say)
    say("the champion on the same holdout")
    result = _judge(trained, champion, root, label, margin, project, force)
    _decide(registry, result)
    result.segmentation = _resegment(project, prepared, say)
    if result.segmentation is not None:
        seg = result.segmentation
        verdict = "kept the new one" if seg.kept_new else "kept the latest one"
        registry.record(
            {
                "action": "segment",
                "alias": None,
                "version": None,
                "previous": seg.previous_run,
                "forced": False,
                "reason": f"segmentation: {verdict} (stability {seg.stability:.3f}, "
                f"needed {seg.threshold:g})",
                "details": vars(seg),
            }
        )
    return result


def _newest(registry: ModelRegistry) -> str | None:
    found = registry.versions()
    return found[-1].version if found else None


def _train_challenger(
    project: Project,
    prepared: Prepared,
    root: Path,
    manifest: dict[str, Any],
    label: dict[str, Any],
    folds: int | None,
    candidates: tuple[str, ...] | None,
    say: Callable[[str], None],
) -> ValueTraining:
    """The challenger, by the champion's label definition and candidates, on the latest
    labelled period."""
    chosen = tuple(r["model"] for r in manifest.get("leaderboard", []))
    options: dict[str, Any] = {
        "folds": folds or int(manifest.get("folds", 5)),
        "candidates": candidates or chosen or ("logistic", "lightgbm", "random_forest", "mlp"),
        "seed": int(manifest.get("seed", 0)),
        "threshold_rule": manifest.get("threshold_rule", "top_share"),
    }
    if label.get("kind") == "column":
        options.update(label=label["column"], positive=label.get("positive"))
    else:
        options.update(
            horizon_weeks=int(label.get("horizon_weeks", 52)),
            top_share=float(label.get("top_share", manifest.get("top_share", 0.2))),
        )
    return train_value(project, prepared=prepared, out_dir=root, progress=say, **options)


def _judge(
    trained: ValueTraining,
    champion: str | None,
    root: Path,
    label: dict[str, Any],
    margin: float | None,
    project: Project,
    force: bool,
) -> RetrainResult:
    """Both models' ROC AUC and top-decile lift on the holdout, and the decision."""
    margin = project.monitor.promote_margin if margin is None else margin
    table, y, notes = trained.features, np.asarray(trained.y), []
    holdout = {
        "features_as_of": str(trained.cutoff),
        "label_to": str(trained.cutoff + timedelta(weeks=int(label.get("horizon_weeks", 52))))
        if trained.cutoff and label.get("kind") != "column"
        else None,
        "customers": len(y),
        "positives": int(y.sum()),
    }
    mine = _challenger_metrics(trained, notes)
    theirs, why_not = None, None
    if champion is not None:
        model = load_bundle(root / champion)  # loaded (checked) by retrain already
        try:
            theirs = _pick(classification_metrics(y, model.predict_proba(table)))
        except CustvalError as exc:  # today's features are not the ones it takes
            why_not = str(exc).splitlines()[0]
        notes += _overlap(model.manifest_, trained.cutoff)
    promoted, reason = _verdict(mine, theirs, why_not, margin, force, champion)
    return RetrainResult(
        champion,
        trained.folder.name,
        holdout,
        theirs,
        mine,
        margin,
        promoted,
        force,
        reason,
        notes,
    )


def _pick(metrics: dict[str, float]) -> dict[str, float]:
    return {"roc_auc": metrics["roc_auc"], "lift_top_decile": metrics["lift_top_decile"]}


def _challenger_metrics(trained: ValueTraining, notes: list[str]) -> dict[str, float]:
    """The challenger's forward figures on the holdout; its cross-validated ones when the
    history is too short for a period before the holdout (said in the notes)."""
    ts = trained.label.get("time_split")
    if ts:
        return {"roc_auc": float(ts["roc_auc"]), "lift_top_decile": float(ts["lift_top_decile"])}
    notes.append(
        "the history is too short to train the challenger a horizon earlier: its figures are "
        "cross-validated on the holdout's customers, not forward in time"
    )
    return _pick(trained.clf.oof_metrics_)


def _overlap(manifest: dict[str, Any], cutoff: date | None) -> list[str]:
    """A note when the champion's training labels (its ``manifest``) reach into the
    holdout."""
    label_to = (manifest.get("training") or {}).get("label_to")
    if cutoff is None or not label_to or date.fromisoformat(label_to) <= cutoff:
        return []
    return [
        f"the champion's training labels ran to {label_to}, into the holdout (from {cutoff}): "
        "it has seen part of it, so its score is optimistic and the decision leans to keeping it"
    ]


def _verdict(
    mine: dict[str, float],
    theirs: dict[str, float] | None,
    why_not: str | None,
    margin: float,
    force: bool,
    champion: str | None,
) -> tuple[bool, str]:
    if champion is None:
        return True, "there was no champion"
    if why_not is not None:
        return True, f"the champion cannot score today's features ({why_not})"
    assert theirs is not None
    gain = mine["roc_auc"] - theirs["roc_auc"]
    figures = (
        f"holdout ROC AUC {mine['roc_auc']:.4f} against the champion's {theirs['roc_auc']:.4f} "
        f"({gain:+.4f}; margin {margin:g})"
    )
    if force:
        return True, f"forced; {figures}"
    if gain >= margin:
        return True, f"better: {figures}"
    return False, f"not better by the margin: {figures}"


def _decide(registry: ModelRegistry, result: RetrainResult) -> None:
    """The decision into the registry (and the store): a promotion, or the challenger kept
    out with the reason."""
    details = {
        "holdout": result.holdout,
        "champion_metrics": result.champion_metrics,
        "challenger_metrics": result.challenger_metrics,
        "margin": result.margin,
        "notes": result.notes,
    }
    if result.promoted and result.champion is not None:
        registry.promote(
            result.challenger,
            reason=result.reason,
            forced=result.forced,
            action="retrain",
            details=details,
        )
    else:  # kept out (or, with no champion before, made champion by training)
        registry.record(
            {
                "action": "retrain",
                "alias": None,
                "version": result.challenger,
                "previous": result.champion,
                "forced": False,
                "reason": result.reason,
                "details": details,
            }
        )


def _resegment(
    project: Project, prepared: Prepared, say: Callable[[str], None]
) -> SegmentationDecision | None:
    """The latest segmentation redone on today's features, stored only when it keeps enough
    customers together (module docstring); None when the store has no segmentation."""
    with open_store(project.store, wait=STORE_WAIT_S) as store:
        placed = store.latest_segment_model()
    if placed is None:
        return None
    previous_run, model = placed
    say("segmenting again and comparing with the latest segmentation")
    table = segment_features(project, prepared)
    wanted = list(model["preparation"]["features"])
    missing = [f for f in wanted if f not in table.columns]
    if missing:
        raise CustvalError(
            f"the latest segmentation ({previous_run}) uses {', '.join(missing)}, which the "
            "project's features no longer have",
            hint="Segment the project again with 'custval segment -c PROJECT'",
        )
    old = assign_nearest(model, table[wanted])
    new = segment_table(
        table, features=wanted, algorithm=model.get("algorithm", "kmeans"), k=len(model["centers"])
    )
    pairs, stability = segment_mapping(old, new.customers["segment"].to_numpy())
    new_names = dict(zip(new.profiles["segment"].astype(int), new.profiles["name"], strict=True))
    mapping = {
        model["names"].get(str(o), str(o)): str(new_names.get(n, n)) for o, n in pairs.items()
    }
    threshold = project.monitor.segment_stability
    run_id = None
    if stability >= threshold:
        run_id = store_segments(new, project.store, project.as_of, wait=STORE_WAIT_S)
    return SegmentationDecision(
        stability >= threshold, stability, threshold, mapping, run_id, previous_run
    )
