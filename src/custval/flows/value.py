"""Training the value classifier and writing its bundle: for a project (the label from future
spend or a column, features at the cutoff) or for any labelled customer table (its own
columns are the features, the label's name speaks in the reasons).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from custval.config import Project
from custval.data.tables import identifier_columns
from custval.errors import CustvalError, FitError
from custval.features.generated import is_generated
from custval.flows.generation import auto_features as with_generated
from custval.flows.monitoring import bundle_reference
from custval.flows.preparation import (
    CustomerSample,
    Prepared,
    features,
    first_purchase,
    future_spend,
    prepare,
    training_rows,
)
from custval.models.explain import importance, value_profile
from custval.models.selection import FeatureSelector
from custval.models.value import ValueClassifier, binary_label, derive_value_label, label_classes
from custval.store.bundles import check_new_folder, data_fingerprint, save_bundle
from custval.store.registry import ModelRegistry


@dataclass
class ValueTraining:
    """A trained value classifier, what it was trained on, and where its bundle is."""

    clf: Any
    features: Any
    y: Any
    label: dict[str, Any]
    cutoff: date | None  # None for a customer table: its features are as they stand
    catalogue: dict[str, str]
    importance: Any
    profile: dict[str, Any]
    folder: Path
    #: the registry alias the version got (champion, challenger; None outside a registry)
    alias: str | None = None


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
    progress: Callable[[str], None] | None = None,
    auto_features: bool = False,
) -> ValueTraining:
    """Train the high/low value classifier of a project and write its bundle; ``progress``
    hears each stage's name as it starts. With ``auto_features``, the generated features
    (``[features.auto]``) join the hand-built ones and a :class:`FeatureSelector` keeps those
    that raise the cross-validated ROC AUC; its record goes into the bundle, and scoring
    computes them again.

    The label is future value: high when a customer's spend in the ``horizon_weeks`` from
    ``cutoff`` (default: the as-of date less the horizon) is in the top ``top_share``, or a
    feature-table column named by ``label``. Features are computed at the cutoff from earlier
    data only. The bundle goes to ``out_dir/<version>`` (default: ``models/`` in the project's
    folder, where ``custval score`` and ``custval serve`` look).
    """
    say = progress or _silent
    horizon = timedelta(weeks=horizon_weeks)
    cut = _cutoff(project, cutoff, horizon_weeks, future=label is None)
    prepared = prepared or prepare(project, progress=say)
    say(f"the features at {cut} and the label")
    ft = features(project, prepared, as_of=cut)
    if auto_features:
        ft = with_generated(project, prepared, ft)
    table, sample = training_rows(project, ft)
    keys = [f.name for f in ft.catalogue if f.role != "feature" and f.name in table.columns]
    if label is not None:
        y, definition = _column_label(table, label, positive)
        keys.append(label)
    else:
        y, definition = _future_value_label(prepared, table, cut, horizon_weeks, top_share, sample)
    feats = table.drop(columns=list(dict.fromkeys(keys)))
    feats, selection = _chosen(feats, y, seed, say) if auto_features else (feats, None)
    earlier = (
        None
        if label is not None
        else _earlier_period(project, prepared, cut, horizon, top_share, keys, sample, selection)
    )
    say(f"cross-validating {len(candidates)} candidates on {folds} folds")
    settings = {"folds": folds, "top_share": top_share, "seed": seed}
    clf = ValueClassifier(
        candidates, threshold_rule=threshold_rule, **settings, **_words(definition)
    ).fit(feats, y, earlier=earlier)
    if earlier is not None:
        definition["time_split"] = _time_split(clf, cut, horizon)
    say("explaining the chosen model and writing its bundle")
    catalogue = {f.name: f.description for f in ft.catalogue}
    imp = importance(clf, feats)
    profile = value_profile(clf.schema_, feats, y)
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = save_bundle(
        clf,
        (out_dir or project.root / "models") / version,
        label=definition,
        fingerprint=data_fingerprint(feats, y),
        extra={
            **_bundle_extra(project, prepared, catalogue, imp, profile),
            "reference": bundle_reference(feats[clf.schema_.columns], clf.oof_proba_),
            "training": _window(project, cut, horizon, label is None),
            **({} if selection is None else {"feature_selection": selection.record()}),
        },
    )
    alias = ModelRegistry(folder.parent).register(folder.name)
    return ValueTraining(clf, feats, y, definition, cut, catalogue, imp, profile, folder, alias)


def _window(project: Project, cut: date, horizon: timedelta, future: bool) -> dict[str, Any]:
    """The training window a registry shows: features from data before ``cut``, the label
    from the ``horizon`` after it (a future-spend label) or as the data stood."""
    return {
        "features_as_of": cut.isoformat(),
        "label_from": cut.isoformat() if future else None,
        "label_to": (cut + horizon).isoformat() if future else None,
        "project_as_of": project.as_of.isoformat(),
    }


def _silent(_stage: str) -> None:
    pass


def _time_split(clf: ValueClassifier, cut: date, horizon: timedelta) -> dict[str, Any]:
    """The chosen model's figures forward in time, for the label's definition."""
    chosen = clf.leaderboard_.set_index("model").loc[clf.chosen_]
    return {
        "trained_at": (cut - horizon).isoformat(),
        "scored_at": cut.isoformat(),
        "roc_auc": float(chosen.time_split_roc_auc),
        "lift_top_decile": float(chosen.time_split_lift_top_decile),
    }


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
    negative, pos = label_classes(table[label], y)
    return y, {
        "kind": "column",
        "column": label,
        "positive": positive,
        "name": label,
        "classes": [negative, pos],
    }


def _words(definition: dict[str, Any]) -> dict[str, Any]:
    """The classifier's label name and class words from a label's definition: a column's
    name and values, else the derived label's "high value"."""
    if "name" not in definition:
        return {}
    return {"label_name": definition["name"], "class_names": tuple(definition["classes"])}


def _future_value_label(
    prepared: Prepared,
    table: pd.DataFrame,
    cut: date,
    horizon_weeks: int,
    top_share: float,
    sample: CustomerSample,
) -> tuple[np.ndarray, dict[str, Any]]:
    """High for the top ``top_share`` of spend in the horizon after the cutoff, and the
    label's definition for the bundle."""
    end = cut + timedelta(weeks=horizon_weeks)
    spend = future_spend(prepared, table["customer_id"], cut, end, sample)
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
    sample: CustomerSample,
    selection: FeatureSelector | None = None,
) -> tuple[Any, Any] | None:
    """Features at cut - horizon and the label from the spend up to cut: the period before,
    for a time-based split (the customers of ``sample``; the ``selection``'s features where
    generated ones were chosen). None when the history is too short for it."""

    earlier = cut - horizon
    first = first_purchase(prepared)
    if first is None or earlier <= first:
        return None
    ft = features(project, prepared, as_of=earlier)
    if selection is not None:
        ft = with_generated(project, prepared, ft)
    old = sample.rows(ft.table).order_by("customer_id").to_pyarrow().to_pandas()
    try:
        y_old = derive_value_label(
            future_spend(prepared, old["customer_id"], earlier, cut, sample), top_share
        )
    except FitError:  # too few customers then, or nobody spent: no earlier period to judge on
        return None
    old = old.drop(columns=[k for k in dict.fromkeys(keys) if k in old.columns])
    return (old if selection is None else old[selection.kept_]), y_old


def _chosen(
    feats: pd.DataFrame, y: Any, seed: int, say: Callable[[str], None]
) -> tuple[pd.DataFrame, FeatureSelector]:
    """The hand-built features and the generated ones that raise the cross-validated ROC AUC
    over them, and the selector that chose."""
    say("choosing among the generated features")
    generated = [c for c in feats.columns if is_generated(c)]
    base = [c for c in feats.columns if not is_generated(c)]
    selection = FeatureSelector(seed=seed).fit(feats, y, base, generated)
    return feats[selection.kept_], selection


def _cutoff(project: Project, cutoff: date | None, horizon_weeks: int, future: bool) -> date:
    """The training cutoff (default: the as-of date less the horizon); a future-value label
    whose horizon would end after the as-of date is refused."""
    horizon = timedelta(weeks=horizon_weeks)
    cut = cutoff or project.as_of - horizon
    if future and cut + horizon > project.as_of:
        raise CustvalError(
            f"the cutoff {cut} plus {horizon_weeks} weeks ends after the project's as-of date "
            f"{project.as_of}: the future value is not known yet",
            hint=f"Use a cutoff on or before {project.as_of - horizon}",
        )
    return cut


# ---- any labelled customer table ----------------------------------------------------------


@dataclass
class LabelledTable:
    """A customer table split into its feature columns and a 0/1 label. ``label`` is the
    label's definition as a bundle keeps it: the column, the positive value, the name the
    reasons use, the two classes' words, the id columns left out and the source."""

    features: pd.DataFrame
    y: Any
    label: dict[str, Any]

    @property
    def ids(self) -> list[str]:
        return list(self.label["id_columns"])


def labelled_table(
    df: pd.DataFrame,
    label: str,
    *,
    positive: str | None = None,
    id_col: str | None = None,
    source: str = "table",
) -> LabelledTable:
    """``df``'s own columns as features and ``label`` as 0/1 (``positive`` the value meaning
    yes; default read from yes/no, true/false, 1/0, high/low). Identifier columns (``id_col``,
    default those :func:`custval.data.tables.identifier_columns` finds) are left out."""
    if label not in df.columns:
        raise CustvalError(
            f"the table has no column '{label}'",
            source=source,
            column=label,
            hint="Name one of its columns with --label: " + ", ".join(map(str, df.columns[:20])),
        )
    if id_col is not None and id_col not in df.columns:
        raise CustvalError(
            f"the table has no column '{id_col}'",
            source=source,
            column=id_col,
            hint="Name one of its columns with --id: " + ", ".join(map(str, df.columns[:20])),
        )
    y = binary_label(df[label], positive, column=label)
    negative, pos = label_classes(df[label], y)
    ids = [id_col] if id_col else identifier_columns(df, exclude=(label,))
    feats = df.drop(columns=[label, *ids])
    if feats.columns.empty:
        raise CustvalError(
            f"the table has no columns to learn from besides the label '{label}' and the ids "
            f"({', '.join(ids) or 'none'})",
            source=source,
            hint="Add the customers' attributes as columns",
        )
    definition = {
        "kind": "table",
        "column": label,
        "positive": pos,
        "name": label,
        "classes": [negative, pos],
        "id_columns": ids,
        "source": source,
    }
    return LabelledTable(feats.reset_index(drop=True), y, definition)


def fit_table(
    table: LabelledTable,
    *,
    folds: int = 5,
    candidates: tuple[str, ...] = ("logistic", "lightgbm", "random_forest", "mlp"),
    seed: int = 0,
    threshold_rule: str = "top_share",
    top_share: float | None = None,
) -> ValueClassifier:
    """The candidates cross-validated on the table and the chosen one refitted on all rows.
    Under the "top_share" rule the positive class is given to as many customers as hold it
    in the table (``top_share`` default: the label's positive share)."""
    share = float(np.mean(table.y)) if top_share is None else top_share
    return ValueClassifier(
        candidates,
        folds=folds,
        seed=seed,
        threshold_rule=threshold_rule,
        top_share=share,
        **_words(table.label),
    ).fit(table.features, table.y)


def save_table_model(clf: ValueClassifier, table: LabelledTable, folder: Path) -> ValueTraining:
    """The bundle of a classifier fitted on a labelled table, written to ``folder`` (new or
    empty), with the importance and the profile of the positive customers."""
    feats, y = table.features, table.y
    # the columns' names are their descriptions: "monthly_charges" reads "Monthly charges"
    catalogue = {str(c): str(c).replace("_", " ") for c in feats.columns}
    contributions = clf.contributions(feats, table.label["source"])
    imp = importance(clf, feats, contributions=contributions)
    profile = value_profile(clf.schema_, feats, y)
    saved = save_bundle(
        clf,
        folder,
        label=table.label,
        fingerprint=data_fingerprint(feats, y),
        extra={
            "catalogue": catalogue,
            "reference": bundle_reference(feats[clf.schema_.columns], clf.oof_proba_),
            "importance": imp.head(20).to_dict("records"),
            "profile": {
                "high_share": profile["high_share"],
                "features": profile["features"].to_dict("records"),
                "conditions": profile["conditions"].to_dict("records"),
            },
        },
    )
    return ValueTraining(clf, feats, y, table.label, None, catalogue, imp, profile, saved)


def train_table(
    df: pd.DataFrame,
    label: str,
    folder: Path,
    *,
    positive: str | None = None,
    id_col: str | None = None,
    source: str = "table",
    folds: int = 5,
    candidates: tuple[str, ...] = ("logistic", "lightgbm", "random_forest", "mlp"),
    seed: int = 0,
    threshold_rule: str = "top_share",
    top_share: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> ValueTraining:
    """Train the classifier on any labelled customer table and write its bundle to
    ``folder``: :func:`labelled_table`, :func:`fit_table`, :func:`save_table_model`;
    ``progress`` hears each stage's name as it starts.

    Example
    -------
    >>> train_table(pd.read_csv("telco.csv"), "churn", Path("churn-model"), positive="Yes")
    ... # doctest: +SKIP
    """
    say = progress or _silent
    check_new_folder(folder)
    table = labelled_table(df, label, positive=positive, id_col=id_col, source=source)
    say(f"cross-validating {len(candidates)} candidates on {folds} folds")
    clf = fit_table(
        table,
        folds=folds,
        candidates=candidates,
        seed=seed,
        threshold_rule=threshold_rule,
        top_share=top_share,
    )
    say("explaining the chosen model and writing its bundle")
    return save_table_model(clf, table, folder)
