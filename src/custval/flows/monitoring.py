"""Drift of a run's features and outputs against a reference run (issue 19, in progress): the
reference's profiles (:mod:`custval.models.drift`) of every column of a feature or prediction
table, and a later table's comparison with them, a row per column. The store keeps the
profiles (counts, not rows) next to each run; this module turns tables into them and back into
a report."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.types as pat

from custval.errors import CustvalError
from custval.models.drift import ALPHA, MIN_PSI, Profile, compare, profile
from custval.store import Store

__all__ = [
    "OUTPUTS",
    "bundle_profiles",
    "bundle_reference",
    "drift_report",
    "merge_profiles",
    "profile_rows",
    "profiles_from_rows",
    "profiles_like",
    "reference_profiles",
    "run_profiles",
    "run_reference",
]

#: columns that name a customer or a run: never profiled
KEYS = frozenset({"customer_id", "run_id"})
#: the outputs of a scoring run that are profiled (those it has): the value probability, CLV,
#: P(alive), expected purchases, segment and churn risk
OUTPUTS = (
    "value_probability",
    "clv_expected",
    "p_alive",
    "expected_purchases",
    "segment",
    "p_churn",
)


def bundle_reference(features: pd.DataFrame, probability: Any) -> dict[str, list[dict[str, Any]]]:
    """What a model bundle keeps as the reference of its later runs: the profiles of the
    training features, and of the value probability as cross-validation saw it (out of fold,
    so not flattered by the fit)."""
    table = pa.Table.from_pandas(features, preserve_index=False)
    feats = reference_profiles(table)
    prob = np.asarray(probability, dtype=np.float64)
    prob = prob[np.isfinite(prob)]  # rows cross-validation left out (a subsample) have none
    outputs = {"value_probability": profile(prob, "value_probability")}
    return {
        "features": [p.to_dict() for p in feats.values()],
        "outputs": [p.to_dict() for p in outputs.values()],
    }


def run_profiles(
    features: pa.Table,
    outputs: dict[str, Any],
    reference: dict[str, dict[str, Profile]],
) -> pa.Table:
    """The store's ``run_profiles`` rows of a scoring run: its ``features`` (the model's
    columns) and ``outputs`` (name: values, those of :data:`OUTPUTS` it has) profiled on the
    bins of ``reference`` (:func:`run_reference`), so that every run of a model compares with
    every other and with its training data; an output the reference lacks gets bins of its own
    (this run becomes its reference)."""
    ref = reference.get("features", {})
    names = [c for c in features.column_names if c not in KEYS]
    if ref:
        feats = profiles_like(ref, features.select(names))
    else:  # a bundle from before issue 19: the first run is the reference
        feats = reference_profiles(features, names)
    outs: dict[str, Profile] = {}
    for name, values in outputs.items():
        chunked = values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])
        column = _values(chunked)
        prior = reference.get("outputs", {}).get(name)
        outs[name] = prior.like(column) if prior is not None else profile(column, name)
    return pa.concat_tables([profile_rows(feats, "features"), profile_rows(outs, "outputs")])


def bundle_profiles(manifest: dict[str, Any]) -> dict[str, dict[str, Profile]]:
    """The training profiles a bundle keeps (:func:`bundle_reference`), by source and name;
    empty for a bundle from before they were kept."""
    saved = manifest.get("reference") or {}
    return {
        source: {d["name"]: Profile.from_dict(d) for d in saved.get(source, [])}
        for source in ("features", "outputs")
    }


def run_reference(store: Store, manifest: dict[str, Any], version: str) -> dict[str, Any]:
    """The bins a scoring run of model ``version`` is profiled on: the features and value
    probability of its training data (the bundle's ``reference``), and the other outputs of
    the model's first stored run (CLV, P(alive), segment: training does not predict them)."""
    ref = bundle_profiles(manifest)
    first = store.first_run(version)
    if first is not None:
        rows = store.run_rows("run_profiles", first)
        for source in ("features", "outputs"):
            for name, prior in profiles_from_rows(rows, source).items():
                ref[source].setdefault(name, prior)
    return ref


def reference_profiles(table: pa.Table, columns: Iterable[str] | None = None) -> dict[str, Profile]:
    """A profile per column of ``table`` (all but the keys, or ``columns``)."""
    names = [c for c in (columns or table.column_names) if c not in KEYS]
    return {name: profile(_values(table.column(name)), name) for name in names}


def profiles_like(reference: dict[str, Profile], table: pa.Table) -> dict[str, Profile]:
    """The profiles of ``table``'s columns on the reference's bins; a column the reference has
    and the table lacks, or the other way round, is an error naming them."""
    have = {c for c in table.column_names if c not in KEYS}
    missing, extra = sorted(set(reference) - have), sorted(have - set(reference))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks {len(missing)} of the reference's columns")
        if extra:
            parts.append(f"has {len(extra)} the reference does not")
        raise CustvalError(
            "the run's features differ from its reference's: it " + " and ".join(parts),
            count=len(missing) + len(extra),
            examples=[
                *({"missing": c} for c in missing[:5]),
                *({"new": c} for c in extra[:5]),
            ],
            hint="Compare runs of the same model, or make this run the new reference",
        )
    return {name: ref.like(_values(table.column(name))) for name, ref in reference.items()}


def merge_profiles(parts: Iterable[dict[str, Profile]]) -> dict[str, Profile]:
    """The profiles of a run read in parts (partitions, chunks): counts added per column."""
    merged: dict[str, Profile] = {}
    for part in parts:
        for name, p in part.items():
            merged[name] = merged[name].merge(p) if name in merged else p
    return merged


def drift_report(
    reference: dict[str, Profile],
    current: dict[str, Profile],
    *,
    alpha: float = ALPHA,
    min_psi: float = MIN_PSI,
) -> pd.DataFrame:
    """A row per column: PSI, Jensen-Shannon distance, the critical PSI at these sample
    sizes, the p-value and whether it alarms; the largest PSI first."""
    rows = []
    for name, ref in reference.items():
        r = compare(ref, current[name], alpha=alpha, min_psi=min_psi)
        rows.append(
            {
                "feature": name,
                "kind": ref.kind,
                "psi": r.psi,
                "js_distance": r.js_distance,
                "critical_psi": r.critical_psi,
                "p_value": r.p_value,
                "alarm": r.alarm,
                "n_reference": r.n_reference,
                "n_current": r.n_current,
            }
        )
    frame = pd.DataFrame(rows)
    return frame.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)


def profile_rows(profiles: dict[str, Profile], source: str) -> pa.Table:
    """The rows of the store's ``run_profiles`` for ``profiles`` of one ``source``
    (``features`` or ``outputs``), without the run id (the store stamps it)."""
    names = list(profiles)
    return pa.table(
        {
            "source": [source] * len(names),
            "feature": names,
            "kind": [profiles[n].kind for n in names],
            "n": pa.array([profiles[n].n for n in names], pa.int64()),
            "profile": [json.dumps(profiles[n].to_dict()) for n in names],
        }
    )


def profiles_from_rows(rows: pa.Table, source: str) -> dict[str, Profile]:
    """The profiles of one ``source`` back from the store's ``run_profiles`` rows."""
    return {
        r["feature"]: Profile.from_dict(json.loads(r["profile"]))
        for r in rows.to_pylist()
        if r["source"] == source
    }


def _values(column: pa.ChunkedArray) -> np.ndarray:
    """Numbers (and booleans, as 0 and 1) as float64 with NaN for nulls; anything else as
    Python objects with None."""
    kind = column.type
    if any(is_(kind) for is_ in (pat.is_integer, pat.is_floating, pat.is_decimal, pat.is_boolean)):
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return column.to_numpy(zero_copy_only=False).astype(object)
