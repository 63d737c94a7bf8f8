"""A model bundle ready for online requests: JSON values in, probability, class and reasons out.

Batch scoring goes through pandas and Arrow, which cost milliseconds of fixed overhead per call;
a request for one customer must take well under one. So for LightGBM models this module turns
the request's values into the model's codes directly (the same rules as
:meth:`custval.models.encoding.FeatureSchema.codes`), computes the exact TreeSHAP contributions
with the flat arrays of :class:`custval.models.treeshap.ShallowTreeShap`, and writes the reasons
with the phrases and number formatting of :mod:`custval.models.explain`: the same probabilities (to
1e-12) and the same reason texts as ``custval score``, tested. Other model kinds go through
:func:`custval.models.explain.reasons` itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from custval.data.values import Category, CustomerId, Number
from custval.models.explain import DIRECTIONS, Phrases, number_text, reasons, top_k_columns
from custval.store.bundles import load_bundle

__all__ = ["OnlineModel", "Prediction", "Reason", "as_dicts", "ignored_fields"]


class Reason(BaseModel):
    """One reason: the feature, the customer's value as text, its contribution to the score
    (log-odds; positive raises the chance of the model's label: high value, or the label of
    the table it was trained on) and the sentence."""

    feature: str
    value: str
    contribution: float
    text: str


class Prediction(BaseModel):
    """One customer's prediction."""

    customer_id: str
    value_probability: float = Field(
        description="probability of the model's label (high value, or the label of the table "
        "it was trained on, e.g. churn), 0 to 1"
    )
    value_class: int = Field(
        description="1 = the label's positive class (high value...): probability at or above "
        "the threshold"
    )
    clv: float | None = Field(
        None, description="expected CLV over a year when the store has customer-base models"
    )
    reasons: list[Reason]


def _category_text(value: Any) -> str | None:
    """A categorical value as training saw it: stripped text; booleans as True/False."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class OnlineModel:
    """A loaded model version, its request schema and its fast scoring path.

    Example
    -------
    >>> model = OnlineModel(Path("models/20260101T000000Z"))  # doctest: +SKIP
    >>> model.score([{"customer_id": "C1", "tenure_days": 400, ...}])[0]["value_probability"]
    """

    def __init__(self, folder: Path, *, top_k: int = 3) -> None:
        self.folder = folder
        self.version = folder.name
        self.clf = load_bundle(folder)
        self.manifest = self.clf.manifest_
        self.schema = self.clf.schema_
        self.top_k = min(top_k, len(self.schema.columns))
        self.catalogue: dict[str, str] = self.manifest.get("catalogue", {})
        # a model trained on a labelled table speaks its label ("the chance of churn")
        self.phrases = Phrases.of(
            self.schema, self.catalogue, outcome=getattr(self.clf, "label_name_", "high value")
        )
        self.threshold = float(self.clf.threshold_)
        self.log_odds = self.clf.score_kind_ == "log-odds"
        self._numeric = list(self.schema.numeric)
        self._categorical = list(self.schema.categorical)
        self._codes = {
            c: {v: i for i, v in enumerate(cats)} for c, cats in self.schema.categorical.items()
        }
        candidate = self.clf._fitted()
        explainer = None
        if candidate.name == "lightgbm":
            candidate.contributions(self.schema, _empty_frame(self.schema))  # builds it
            explainer = getattr(candidate, "_explainer", None) or None
        self._explainer = explainer
        self.request_type = _request_type(self.schema, self.version)
        self.adapter = TypeAdapter(self.request_type)

    def score(self, customers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Predictions for validated customers (dicts of feature values), as plain dicts."""
        if self._explainer is None:
            return self._score_generic(customers)
        n_num = len(self._numeric)
        codes = np.full((len(customers), len(self.schema.columns)), np.nan)
        labels: list[list[str | None]] = []
        # the request's values are Python objects already: one pass over the (at most a few
        # hundred) customers of a request is the conversion itself
        for i, row in enumerate(customers):
            for j, c in enumerate(self._numeric):
                v = row[c]
                if v is not None:
                    codes[i, j] = v
            texts = []
            for j, c in enumerate(self._categorical):
                label = _category_text(row[c])
                code = self._codes[c].get(label) if label is not None else None
                if code is not None:
                    codes[i, n_num + j] = code
                texts.append(label)
            labels.append(texts)
        contrib, base = self._explainer.contributions(codes)
        raw = base + contrib.sum(axis=1)
        proba = 1.0 / (1.0 + np.exp(-raw)) if self.log_odds else raw
        order = top_k_columns(contrib, self.top_k)
        names = self.schema.columns
        before, after, ending = self.phrases.before, self.phrases.after, self.phrases.ending
        out = []
        for i, row in enumerate(customers):  # building the answer: per customer by nature
            reasons_i = []
            for j in order[i]:
                c = float(contrib[i, j])
                word = DIRECTIONS[(c > 0) - (c < 0) + 1]
                # only the values that become reasons are written as text
                text = number_text(codes[i, j]) if j < n_num else labels[i][j - n_num]
                value = text or "missing"
                reasons_i.append(
                    {
                        "feature": names[j],
                        "value": value,
                        "contribution": c,
                        "text": f"{before[j]}{value}{after[j]}{word}{ending}",
                    }
                )
            p = float(proba[i])
            out.append(
                {
                    "customer_id": row["customer_id"],
                    "value_probability": p,
                    "value_class": int(p >= self.threshold),
                    "clv": None,
                    "reasons": reasons_i,
                }
            )
        return out

    def _score_generic(self, customers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # typed columns: a numeric feature that is null for every customer stays numeric
        data: dict[str, Any] = {
            c: np.array([np.nan if r[c] is None else r[c] for r in customers], dtype=np.float64)
            for c in self._numeric
        }
        data.update(
            {c: np.array([r[c] for r in customers], dtype=object) for c in self._categorical}
        )
        frame = pd.DataFrame(data)
        explained = reasons(self.clf, frame, top_k=self.top_k, catalogue=self.catalogue)
        out = []
        for i, row in enumerate(customers):
            r = explained.iloc[i]
            out.append(
                {
                    "customer_id": row["customer_id"],
                    "value_probability": float(r["probability"]),
                    "value_class": int(r["predicted_class"]),
                    "clv": None,
                    "reasons": [
                        {
                            "feature": str(r[f"reason_{k}_feature"]),
                            "value": str(r[f"reason_{k}_value"]),
                            "contribution": float(r[f"reason_{k}_contribution"]),
                            "text": str(r[f"reason_{k}"]),
                        }
                        for k in range(1, self.top_k + 1)
                    ],
                }
            )
        return out


def _empty_frame(schema: Any) -> Any:
    data: dict[str, Any] = {c: np.zeros(0) for c in schema.numeric}
    data.update({c: np.array([], dtype=object) for c in schema.categorical})
    return pd.DataFrame(data)


def _request_type(schema: Any, version: str) -> type[BaseModel]:
    """The request body for this model: ``{"customers": [...]}``, each customer an object with
    ``customer_id`` and every feature of the model (null for a missing value), in strict types
    (:mod:`custval.data.values`). Other fields are kept aside, not scored: a row of the feature
    table carries the columns training dropped, and the answer lists them as warnings. A
    misspelt feature still fails, as the feature it stands for is then missing."""
    fields: dict[str, Any] = {"customer_id": (CustomerId, ...)}
    for c in schema.numeric:
        fields[c] = (Number, ...)
    for c, cats in schema.categorical.items():
        listed = f"{', '.join(cats[:20])}{'...' if len(cats) > 20 else ''}"
        fields[c] = (Annotated[Category, Field(description=f"one of {listed}")], ...)
    customer = create_model(  # type: ignore[call-overload]
        "Customer",
        __config__=ConfigDict(extra="allow"),
        __doc__=f"One customer's features for model {version}.",
        **fields,
    )
    return create_model(  # type: ignore[call-overload,no-any-return]
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        customers=(Annotated[list[customer], Field(min_length=1)], ...),  # type: ignore[valid-type]
    )


def as_dicts(request: BaseModel) -> list[dict[str, Any]]:
    """The validated customers as dicts of the model's fields, booleans as training saw them
    (the fields the model does not take are left out: :func:`ignored_fields`)."""
    out = []
    for customer in request.customers:  # type: ignore[attr-defined]
        row = dict(customer.__dict__)
        for k, v in row.items():
            if isinstance(v, bool):
                row[k] = str(v)
        out.append(row)
    return out


def ignored_fields(request: BaseModel, model: OnlineModel) -> list[dict[str, Any]]:
    """The warnings for the fields of the request the model does not take, one per field: a
    feature the model dropped in training, or a name that is no feature at all."""
    seen: dict[str, int] = {}
    for customer in request.customers:  # type: ignore[attr-defined]
        for name in customer.__pydantic_extra__ or {}:
            seen[name] = seen.get(name, 0) + 1
    warnings = []
    for name, count in seen.items():
        if name in model.catalogue:
            why = f"a feature model {model.version} does not use (dropped in training): ignored"
        else:
            why = "not a feature of the feature table: ignored (check its spelling)"
        warnings.append({"field": name, "customers": count, "message": why})
    return warnings
