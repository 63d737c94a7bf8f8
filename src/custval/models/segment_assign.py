"""Placing customers in segments: a classifier from features to segment, with reasons.

Trained on the segments of a :class:`custval.models.segments.Segmenter` (to place new customers
without clustering again) or on labels the company already has (a column in the CRM). The model
is LightGBM (multiclass, shallow trees); the reasons for the assigned segment are its exact
per-feature TreeSHAP contributions to that segment's score, as for the value model.

Example
-------
>>> assigner = SegmentAssigner(seed=0).fit(features, labels)  # doctest: +SKIP
>>> assigner.predict(new_customers)
>>> assigner.reasons(new_customers, top_k=3).reason_1.iloc[0]
'tenure_days: 40 raises the chance of segment "New low spenders"'
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from custval.errors import FitError
from custval.models.base import Estimator
from custval.models.encoding import FeatureSchema, infer_schema
from custval.models.explain import numbers_as_text, top_k_columns

__all__ = ["SegmentAssigner"]

Array = npt.NDArray[np.float64]


class SegmentAssigner(Estimator):
    """LightGBM from features to segment labels (any hashable labels; missing ones dropped).

    Parameters
    ----------
    rounds : int
        Boosting rounds (trees per segment).
    seed : int

    Attributes (after ``fit``): ``classes_`` (the segment labels), ``schema_``, ``model_``.
    """

    def __init__(self, *, rounds: int = 150, seed: int = 0, threads: int = 2) -> None:
        self.rounds = rounds
        self.seed = seed
        self.threads = threads

    def fit(self, X: pd.DataFrame, labels: Any, exclude: tuple[str, ...] = ()) -> SegmentAssigner:
        import lightgbm as lgb

        y_raw = pd.Series(np.asarray(labels, dtype=object), index=X.index)
        known = y_raw.notna() & (y_raw.astype(str).str.strip() != "")
        if known.sum() == 0:
            raise FitError("no customer has a segment label to learn from")
        classes = sorted(y_raw[known].astype(str).unique())
        if len(classes) < 2:
            raise FitError(
                f"every labelled customer is in segment '{classes[0]}': nothing to tell apart"
            )
        X = X.loc[known]
        schema = infer_schema(X, exclude=exclude)
        codes = schema.codes(X)
        index = {c: i for i, c in enumerate(classes)}
        y = y_raw[known].astype(str).map(index).to_numpy()
        cats = list(range(len(schema.numeric), len(schema.columns)))
        params = {
            "objective": "multiclass",
            "num_class": len(classes),
            "learning_rate": 0.1,
            "num_leaves": 8,
            "max_depth": 3,
            "min_data_in_leaf": 10,
            "lambda_l2": 1.0,
            "seed": self.seed,
            "num_threads": self.threads,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }
        data = lgb.Dataset(codes, label=y, categorical_feature=cats)
        self.model_ = lgb.train(params, data, num_boost_round=self.rounds)
        self.schema_: FeatureSchema = schema
        self.classes_ = classes
        return self

    def predict_proba(self, X: pd.DataFrame) -> Array:
        return np.asarray(self.model_.predict(self.schema_.codes(X)))

    def predict(self, X: pd.DataFrame) -> npt.NDArray[np.object_]:
        return np.asarray(self.classes_, dtype=object)[self.predict_proba(X).argmax(axis=1)]

    def reasons(self, X: pd.DataFrame, *, top_k: int = 3) -> pd.DataFrame:
        """``segment``, ``probability`` and for i = 1..top_k ``reason_i`` (the sentence),
        ``reason_i_feature`` and ``reason_i_contribution`` (to the assigned segment's score)."""
        codes = self.schema_.codes(X)
        n, p, k = codes.shape[0], len(self.schema_.columns), len(self.classes_)
        proba = np.asarray(self.model_.predict(codes))
        chosen = proba.argmax(axis=1)
        contrib = np.asarray(self.model_.predict(codes, pred_contrib=True)).reshape(n, k, p + 1)
        mine = contrib[np.arange(n), chosen, :p]
        top = min(top_k, p)
        order = top_k_columns(mine, top)
        names = np.asarray(self.schema_.columns, dtype=object)
        segment = np.asarray(self.classes_, dtype=object)[chosen]
        out = pd.DataFrame(
            {"segment": segment, "probability": proba[np.arange(n), chosen]}, index=X.index
        )
        values = self.schema_.frame(X)[self.schema_.columns].to_numpy(dtype=object)
        n_num = len(self.schema_.numeric)
        rows = np.arange(n)
        for i in range(top):  # a loop over the reasons; each is vectorised over rows
            feat = names[order[:, i]]
            value = mine[np.arange(n), order[:, i]]
            shown = values[rows, order[:, i]]
            numeric = order[:, i] < n_num
            if numeric.any():  # numbers as readers write them (1,320; 2.5)
                as_text = numbers_as_text(shown[numeric].astype(np.float64))
                shown[numeric] = np.asarray(as_text.to_pylist(), dtype=object)
            shown[pd.isna(shown)] = "missing"
            word = np.where(value > 0, "raises", np.where(value < 0, "lowers", "does not change"))
            out[f"reason_{i + 1}"] = (
                pd.Series(feat, index=X.index).astype(str)
                + ": "
                + pd.Series(shown, index=X.index).astype(str)
                + " "
                + pd.Series(word, index=X.index)
                + ' the chance of segment "'
                + pd.Series(segment, index=X.index).astype(str)
                + '"'
            )
            out[f"reason_{i + 1}_feature"] = feat
            out[f"reason_{i + 1}_contribution"] = value
        return out
