"""Saving and loading a trained value model: a folder with a JSON manifest and model files.

A bundle is a folder (``models/<version>/`` under a project) holding

* ``manifest.json``: format and custval version, creation time, the chosen model, what its
  scores are (log-odds or probability), the decision threshold and its rule, the label's
  definition and its words (``label_name``: "churn", "high value"; ``class_names``), a
  fingerprint of the training data (rows, columns, a hash of the values), the
  feature schema (columns, types, categories, medians, standardisation), the out-of-fold metrics,
  the reliability table, the leaderboard, the library versions, and the model file's SHA-256;
* the model: LightGBM's text format (``model.txt``) or a skops file (``model.skops``) for
  scikit-learn models. Never pickle: loading a model file must not be able to run code, and
  skops loads only the scikit-learn and NumPy types it is told to trust.

:func:`load_bundle` checks the format, the hashes of the model file and of what scoring depends
on in the manifest, and (for scikit-learn models) that scikit-learn's minor version is the
training one, and returns a fitted :class:`~custval.models.value.ValueClassifier` whose schema
refuses incompatible input with a clear message (a missing column, text in a numeric column).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from custval.errors import CustvalError
from custval.models.candidates import CANDIDATES
from custval.models.encoding import FeatureSchema
from custval.models.value import ValueClassifier
from custval.version import __version__

__all__ = [
    "check_new_folder",
    "code_fingerprint",
    "data_fingerprint",
    "latest_model",
    "load_bundle",
    "save_bundle",
]

FORMAT = "custval-value-model"
FORMAT_VERSION = 1
_LIBRARIES = ("numpy", "pandas", "scikit-learn", "lightgbm", "skops")


def data_fingerprint(X: pd.DataFrame, y: Any) -> dict[str, Any]:
    """Rows, columns and a SHA-256 of the values: which data a model was trained on."""
    h = hashlib.sha256()
    h.update(",".join(map(str, X.columns)).encode())
    h.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    h.update(np.asarray(y, dtype=np.float64).tobytes())
    return {"rows": len(X), "columns": len(X.columns), "sha256": h.hexdigest()}


def save_bundle(
    clf: ValueClassifier,
    folder: str | Path,
    *,
    label: dict[str, Any],
    fingerprint: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a fitted classifier to ``folder`` (created; written whole or not at all)."""
    if not hasattr(clf, "model_"):
        raise CustvalError("the value classifier is not fitted yet", hint="Call fit first")
    target = check_new_folder(folder)
    model = clf.model_
    filename = "model.txt" if model.name == "lightgbm" else "model.skops"
    payload = model.dumps()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "custval_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": target.name,
        "model": model.name,
        "score": model.score,
        "threshold": clf.threshold_,
        "threshold_rule": clf.threshold_rule,
        "top_share": clf.top_share,
        "label": label,
        # what the positive class is called, for reasons and outputs ("churn", "high value")
        "label_name": clf.label_name_,
        "class_names": list(clf.class_names_),
        "data": fingerprint,
        "schema": clf.schema_.to_dict(),
        "metrics": clf.oof_metrics_,
        "calibration_error": clf.calibration_error_,
        "reliability": clf.reliability_.to_dict("records"),
        "leaderboard": clf.leaderboard_.to_dict("records"),
        "selection_rows": clf.selection_rows_,
        "folds": clf.folds,
        "seed": clf.seed,
        "libraries": {lib: pkg_version(lib) for lib in _LIBRARIES},
        "files": {"model": filename, "sha256": hashlib.sha256(payload).hexdigest()},
        # the registry's record of what made this version: the code, and the training run
        "code": {"custval": __version__, "sha256": code_fingerprint()},
        "training_run": uuid.uuid4().hex,
        **(extra or {}),
    }
    manifest["content_sha256"] = _content_hash(manifest)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / filename).write_bytes(payload)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=float))
        if target.exists():
            target.rmdir()
        tmp.replace(target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CustvalError(f"cannot write the model to '{target}': {exc}") from None
    return target


@cache
def code_fingerprint() -> str:
    """A SHA-256 of custval's own source files as installed: the code that trained a model,
    exact even between releases (a checkout with local changes gets its own)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def check_new_folder(folder: str | Path) -> Path:
    """``folder`` as a path, when a bundle may be written there (absent or empty): checked
    before training, so that minutes of fitting are not lost to a taken folder."""
    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CustvalError(
            f"'{target}' exists and is not empty: a model is written to a new folder",
            source=str(target),
            hint="Choose a new folder with --out, or remove this one",
        )
    return target


def _content_hash(manifest: dict[str, Any]) -> str:
    """SHA-256 of what scoring depends on: model, score, threshold, schema and model file."""
    keys = ("model", "score", "threshold", "schema", "files")
    blob = json.dumps({k: manifest.get(k) for k in keys}, sort_keys=True, default=float)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_bundle(folder: str | Path) -> ValueClassifier:
    """A fitted classifier from a bundle folder, after checking what it holds."""
    try:
        return _load(Path(folder))
    except (KeyError, TypeError, ValueError, AttributeError, UnicodeDecodeError) as exc:
        raise CustvalError(
            f"the model in '{folder}' is damaged or incomplete ({type(exc).__name__}: {exc})",
            hint="Train the model again",
        ) from None


def bundle_parts(folder: str | Path) -> tuple[dict[str, Any], bytes]:
    """The bundle's checked manifest and model file: what a Spark job sends to its workers,
    which rebuild the classifier with :func:`classifier_from_parts`."""
    root = Path(folder)
    manifest = _manifest(root)
    return manifest, _model_file(root, manifest)


def classifier_from_parts(manifest: dict[str, Any], payload: bytes) -> ValueClassifier:
    """The fitted classifier of a bundle's manifest and model file (:func:`bundle_parts`)."""
    try:
        return _from_parts(manifest, payload)
    except (KeyError, TypeError, ValueError, AttributeError, UnicodeDecodeError) as exc:
        raise CustvalError(
            f"the model is damaged or incomplete ({type(exc).__name__}: {exc})",
            hint="Train the model again",
        ) from None


def _load(root: Path) -> ValueClassifier:
    manifest = _manifest(root)
    return _from_parts(manifest, _model_file(root, manifest))


def _from_parts(manifest: dict[str, Any], payload: bytes) -> ValueClassifier:
    name = manifest["model"]
    clf = ValueClassifier.from_fitted(
        {
            "folds": int(manifest.get("folds", 5)),
            "threshold_rule": manifest.get("threshold_rule", "top_share"),
            "top_share": float(manifest.get("top_share", 0.2)),
            "seed": int(manifest.get("seed", 0)),
            **_label_words(manifest),
        },
        schema=FeatureSchema.from_dict(manifest["schema"]),
        model=CANDIDATES[name].loads(payload),
        chosen=name,
        threshold=float(manifest["threshold"]),
        leaderboard=pd.DataFrame(manifest.get("leaderboard", [])),
        reliability=pd.DataFrame(manifest.get("reliability", [])),
        oof_metrics=manifest.get("metrics", {}),
        calibration_error=float(manifest.get("calibration_error", float("nan"))),
        manifest=manifest,
    )
    return clf


def _label_words(manifest: dict[str, Any]) -> dict[str, Any]:
    """The label's name and class words; a bundle from before they were kept is named from
    its label's definition (a column's name, else "high value")."""
    label = manifest.get("label") or {}
    name = manifest.get("label_name") or (
        label.get("column") if label.get("kind") == "column" else None
    )
    words: dict[str, Any] = {"label_name": str(name or "high value")}
    if manifest.get("class_names"):
        words["class_names"] = tuple(str(c) for c in manifest["class_names"])
    return words


def _manifest(root: Path) -> dict[str, Any]:
    """The bundle's manifest, checked: a custval value model of a format this version reads,
    unchanged since training (its content hash), naming a known model."""
    path = root / "manifest.json"
    if not path.exists():
        raise CustvalError(f"'{root}' is not a custval model: it has no manifest.json")
    try:
        manifest = dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise CustvalError(f"'{path}' cannot be read: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise CustvalError(f"'{root}' is not a custval value model")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CustvalError(
            f"'{root}' was written by a newer custval ({manifest.get('custval_version')})",
            hint="Upgrade custval to load it",
        )
    if "content_sha256" not in manifest:
        raise CustvalError(
            f"the model in '{root}' has no content hash (an early custval wrote it)",
            hint="Train the model again",
        )
    if manifest.get("content_sha256") != _content_hash(manifest):
        raise CustvalError(
            f"the manifest of '{root}' was changed after training (its schema, threshold or "
            "model no longer match their hash)",
            hint="Train the model again rather than editing its manifest",
        )
    if manifest.get("model") not in CANDIDATES:
        raise CustvalError(f"'{root}' holds an unknown model '{manifest.get('model')}'")
    return manifest


def _model_file(root: Path, manifest: dict[str, Any]) -> bytes:
    """The model file's bytes, checked against the manifest's hash; a scikit-learn model only
    under the scikit-learn minor version it was trained with."""
    filename = str(manifest["files"]["model"])
    if Path(filename).name != filename:
        raise CustvalError(f"'{root}' names a model file outside its folder: {filename!r}")
    if manifest["model"] != "lightgbm":
        trained = str(manifest.get("libraries", {}).get("scikit-learn", ""))
        here = pkg_version("scikit-learn")
        if trained.split(".")[:2] != here.split(".")[:2]:
            raise CustvalError(
                f"the model was trained with scikit-learn {trained}, this is {here}: its "
                "scikit-learn objects may not load or predict the same",
                hint="Train the model again with this installation",
            )
    model_file = root / filename
    try:
        payload = model_file.read_bytes()
    except OSError as exc:
        raise CustvalError(f"the model file '{model_file}' cannot be read: {exc}") from None
    if hashlib.sha256(payload).hexdigest() != manifest["files"]["sha256"]:
        raise CustvalError(
            f"the model file '{model_file}' does not match its manifest (changed or damaged)"
        )
    return payload


def latest_model(models_dir: Path) -> Path:
    """The newest model bundle in ``models_dir`` (versions are UTC timestamps)."""
    versions = sorted(p for p in models_dir.glob("*") if (p / "manifest.json").exists())
    if not versions:
        raise CustvalError(
            f"there is no trained model in '{models_dir}'", hint="Run 'custval train' first"
        )
    return versions[-1]
