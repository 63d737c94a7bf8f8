"""Training the high/low value classifier of a project: the label from future spend (or a
column), features at the cutoff, the candidates compared, the bundle written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from custval.config import Project
from custval.errors import CustvalError, FitError
from custval.flows.preparation import Prepared, features, first_purchase, future_spend, prepare
from custval.models.explain import importance, value_profile
from custval.models.value import ValueClassifier, binary_label, derive_value_label
from custval.store.bundles import data_fingerprint, save_bundle


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
    data only. The bundle goes to ``out_dir/<version>`` (default: ``models/`` in the project's
    folder, where ``custval score`` and ``custval serve`` look).
    """

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
        y, definition = _column_label(table, label, positive)
        keys.append(label)
    else:
        y, definition = _future_value_label(prepared, table, cut, horizon_weeks, top_share)
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
    folder = save_bundle(
        clf,
        (out_dir or project.root / "models") / version,
        label=definition,
        fingerprint=data_fingerprint(feats, y),
        extra=_bundle_extra(project, prepared, catalogue, imp, profile),
    )
    return ValueTraining(clf, feats, y, definition, cut, catalogue, imp, profile, folder)


def _column_label(
    table: pd.DataFrame, label: str, positive: str | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The label from a column of the feature table, and its definition for the bundle."""
    if label not in table.columns:
        raise CustvalError(
            f"the feature table has no column '{label}'",
            column=label,
            hint="Columns: " + ", ".join(table.columns[:20]),
        )
    y = binary_label(table[label], positive, column=label)
    return y, {"kind": "column", "column": label, "positive": positive}


def _future_value_label(
    prepared: Prepared, table: pd.DataFrame, cut: date, horizon_weeks: int, top_share: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """High for the top ``top_share`` of spend in the horizon after the cutoff, and the
    label's definition for the bundle."""
    spend = future_spend(prepared, table["customer_id"], cut, cut + timedelta(weeks=horizon_weeks))
    y = derive_value_label(spend, top_share)
    return y, {
        "kind": "future_spend",
        "cutoff": cut.isoformat(),
        "horizon_weeks": horizon_weeks,
        "top_share": top_share,
        "threshold_spend": float(np.min(spend[y == 1])),
    }


def _bundle_extra(
    project: Project,
    prepared: Prepared,
    catalogue: dict[str, str],
    imp: pd.DataFrame,
    profile: dict[str, Any],
) -> dict[str, Any]:
    """What the bundle keeps beside the model: the catalogue, how the features were computed
    (so that the service computes them alike), the importance and the high-value profile."""
    return {
        "catalogue": catalogue,
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
    }


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

    earlier = cut - horizon
    first = first_purchase(prepared)
    if first is None or earlier <= first:
        return None
    old = features(project, prepared, as_of=earlier).to_pyarrow().to_pandas()
    try:
        y_old = derive_value_label(
            future_spend(prepared, old["customer_id"], earlier, cut), top_share
        )
    except FitError:  # too few customers then, or nobody spent: no earlier period to judge on
        return None
    return old.drop(columns=[k for k in dict.fromkeys(keys) if k in old.columns]), y_old
