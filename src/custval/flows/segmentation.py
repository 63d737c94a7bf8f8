"""Segmenting customers: a project's features with their CLV, or any customer table; profiles,
names and rules; segments learnt from labels; a segmentation run written to the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.model_selection import train_test_split

from custval.columns import SCORED_CLV
from custval.config import Project
from custval.errors import CustvalError
from custval.flows.preparation import Prepared, features
from custval.flows.scoring import score_clv
from custval.models.segment_assign import SegmentAssigner
from custval.models.segments import (
    RFM_SEGMENTS,
    Segmenter,
    centroid_model,
    name_segments,
    profile_segments,
    rfm_segments,
)
from custval.store import open_store


@dataclass
class SegmentResult:
    """A segmentation of a customer table: per customer its segment and name, per segment its
    profile, name and rule, and the fitted segmenter (None for RFM segments)."""

    algorithm: str
    segmenter: Any
    customers: Any  # customer_id, segment, segment_name
    profiles: Any  # segment, name, rule, customers, share, ..., distinctive

    def summary(self) -> dict[str, Any]:
        """The JSON summary of ``custval segment --json``."""
        seg = self.segmenter
        out: dict[str, Any] = {"algorithm": self.algorithm, "customers": len(self.customers)}
        if seg is not None:
            out.update(
                {
                    "k": seg.k_,
                    "silhouette": seg.silhouette_,
                    "calinski_harabasz": seg.calinski_harabasz_,
                    "stability_ari": seg.stability_,
                    "preparation": seg.prep_.record(),
                }
            )
            if hasattr(seg, "scores_"):
                out["k_scores"] = seg.scores_.to_dict("records")
        profiles = self.profiles.drop(columns=["_gaps"], errors="ignore")
        out["segments"] = json.loads(profiles.to_json(orient="records"))
        return out


def segment_features(project: Project, prepared: Prepared) -> Any:
    """The project's feature table at its as-of date with each customer's predicted CLV
    (``clv``, as ``custval score`` predicts it: by the project's ``[clv]`` method; with btyd,
    missing for customers who never bought): what ``custval segment --config`` segments."""
    table = features(project, prepared).to_pyarrow().to_pandas()
    if "transactions" in prepared.tables:
        clv_columns, _, _ = score_clv(project, prepared, table)
        table["clv"] = clv_columns[SCORED_CLV["clv"]]
    return table


def segment_table(
    table: Any,
    *,
    id_column: str = "customer_id",
    features: list[str] | None = None,
    algorithm: str = "kmeans",
    k: str | int = "auto",
    seed: int = 0,
) -> SegmentResult:
    """Segment a customer table (one row per customer): cluster with ``algorithm`` (or
    ``"rfm"`` for RFM quintile segments on recency_days, orders and revenue), profile and name
    each segment (:mod:`custval.models.segments`)."""

    if id_column not in table.columns:
        raise CustvalError(f"the table has no id column '{id_column}'", column=id_column)
    if table[id_column].duplicated().any():
        dup = table[id_column][table[id_column].duplicated()].head(5).tolist()
        raise CustvalError(
            f"the id column '{id_column}' repeats customers (e.g. {', '.join(map(str, dup))})",
            column=id_column,
            hint="Segment a table with one row per customer",
        )
    ids = table[id_column].astype(str).to_numpy()
    if algorithm == "rfm":
        need = ["recency_days", "orders", "revenue"]
        lacking = [c for c in need if c not in table.columns]
        if lacking:
            raise CustvalError(
                f"RFM segments need the columns {', '.join(need)}; the table lacks "
                f"{', '.join(lacking)}",
                column=lacking[0],
            )
        rfm = rfm_segments(*(table[c].to_numpy(dtype=np.float64) for c in need))
        names = sorted(set(rfm["segment"]))
        code = {n: i for i, n in enumerate(names)}
        labels = rfm["segment"].map(code).to_numpy()
        profiles = profile_segments(table, labels, features=need)
        profiles.insert(1, "name", [names[s] for s in profiles["segment"]])
        profiles.insert(2, "rule", [_rfm_rule(names[s]) for s in profiles["segment"]])
        customers = pd.DataFrame(
            {"customer_id": ids, "segment": labels, "segment_name": rfm["segment"].to_numpy()}
        )
        return SegmentResult("rfm", None, customers, profiles)
    seg = Segmenter(algorithm, k, features=features, seed=seed).fit(table)
    profiles = profile_segments(table, seg.labels_, features=seg.prep_.features_)
    named = name_segments(profiles)
    profiles.insert(1, "name", named["name"].to_numpy())
    profiles.insert(2, "rule", named["rule"].to_numpy())
    name_of = dict(zip(named["segment"], named["name"], strict=True))
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "segment": seg.labels_,
            "segment_name": pd.Series(seg.labels_).map(name_of).to_numpy(),
        }
    )
    return SegmentResult(algorithm, seg, customers, profiles)


def _rfm_rule(name: str) -> str:

    return dict(RFM_SEGMENTS).get(name, "no rule matched")


@dataclass
class LabelledSegments:
    """Segments learnt from labels the company has: the held-out accuracy, and every
    customer's segment (the label where there is one, else the model's) with reasons."""

    accuracy: float
    held_out: int
    customers: Any  # customer_id, segment, source ("label" or "model"), probability, reasons


def assign_labelled_segments(
    table: Any, *, id_column: str, labels: str, seed: int = 0, top_k: int = 3
) -> LabelledSegments:
    """Learn the segments of column ``labels`` (blank where unknown) from the other columns,
    judge the model on a fifth of the labelled customers held out, refit on all of them, and
    place every unlabelled customer, with the reasons for its segment."""

    for col in (id_column, labels):
        if col not in table.columns:
            raise CustvalError(f"the table has no column '{col}'", column=col)
    y = table[labels].astype("string").str.strip()
    known = (y.notna() & (y != "")).to_numpy()
    if known.sum() < 20:
        raise CustvalError(
            f"only {int(known.sum())} customers have a label in '{labels}': too few to learn from",
            column=labels,
        )
    features = table.drop(columns=[labels])
    exclude = (id_column,)
    idx = np.flatnonzero(known)
    counts = y[known].value_counts()
    stratify = y[known].to_numpy() if counts.min() >= 2 else None
    train, test = train_test_split(idx, test_size=0.2, random_state=seed, stratify=stratify)
    judge = SegmentAssigner(seed=seed).fit(
        features.iloc[train], y.iloc[train].to_numpy(), exclude=exclude
    )
    accuracy = float((judge.predict(features.iloc[test]) == y.iloc[test].to_numpy()).mean())
    model = SegmentAssigner(seed=seed).fit(
        features.iloc[idx], y.iloc[idx].to_numpy(), exclude=exclude
    )
    why = model.reasons(features, top_k=top_k)
    out = pd.DataFrame(
        {
            "customer_id": table[id_column].astype(str).to_numpy(),
            "segment": np.where(known, y.fillna("").to_numpy(dtype=object), why["segment"]),
            "source": np.where(known, "label", "model"),
            "probability": why["probability"].to_numpy(),
        }
    )
    for i in range(1, top_k + 1):
        if f"reason_{i}" in why:
            out[f"reason_{i}"] = why[f"reason_{i}"].to_numpy()
    return LabelledSegments(accuracy, len(test), out)


def store_segments(result: SegmentResult, url: str, as_of: Any) -> str:
    """Write a segmentation to the store as one run of kind ``segment``: each customer's
    segment, the profiles, and (for a clustering) the centres that place new customers; returns
    the run id."""
    customers = result.customers
    profiles = result.profiles.drop(columns=["_gaps"], errors="ignore")
    profile_rows = pa.table(
        {
            "segment": pa.array(profiles["segment"].to_numpy(), pa.int32()),
            "name": pa.array(profiles["name"].astype(str).tolist()),
            "rule": pa.array(profiles["rule"].astype(str).tolist()),
            "customers": pa.array(profiles["customers"].to_numpy(), pa.int64()),
            "share": pa.array(profiles["share"].to_numpy(dtype=float)),
            "revenue_share": pa.array(
                profiles.get("revenue_share", profiles["share"] * float("nan")).to_numpy(float)
            ),
            "clv_share": pa.array(
                profiles.get("clv_share", profiles["share"] * float("nan")).to_numpy(float)
            ),
            "distinctive": pa.array(["; ".join(d) for d in profiles["distinctive"]]),
            "profile": pa.array([json.dumps(r, default=str) for r in profiles.to_dict("records")]),
        }
    )
    model = None
    if result.segmenter is not None:
        names = dict(
            zip(profiles["segment"].astype(int), profiles["name"].astype(str), strict=True)
        )
        model = centroid_model(result.segmenter, names)
    with open_store(url) as s:
        return s.write_run(
            kind="segment",
            segment_model=model,
            predictions=pa.table(
                {
                    "customer_id": pa.array(customers["customer_id"].astype(str).tolist()),
                    "segment": pa.array(customers["segment_name"].astype(str).tolist()),
                }
            ),
            as_of=as_of,
            extra={
                "segments": pa.table(
                    {
                        "customer_id": pa.array(customers["customer_id"].astype(str).tolist()),
                        "segment": pa.array(customers["segment"].to_numpy(), pa.int32()),
                        "segment_name": pa.array(customers["segment_name"].astype(str).tolist()),
                    }
                ),
                "segment_profiles": profile_rows,
            },
        )
