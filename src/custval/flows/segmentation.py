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
    DEFAULT_FEATURES,
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
    #: which columns were used and why, when custval chose them from one of its own outputs
    note: str | None = None
    #: for RFM segments: the column each of recency, frequency and monetary value came from
    rfm_columns: dict[str, str] | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON summary of ``custval segment --json``."""
        seg = self.segmenter
        out: dict[str, Any] = {"algorithm": self.algorithm, "customers": len(self.customers)}
        if self.note:
            out["note"] = self.note
        if self.rfm_columns:
            out["rfm_columns"] = self.rfm_columns
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
    ``"rfm"`` for RFM quintile segments), profile and name each segment
    (:mod:`custval.models.segments`).

    A feature table is segmented on :data:`~custval.models.segments.DEFAULT_FEATURES`; one of
    custval's own outputs (``custval clv``, ``score``/``export``, ``predict``) on its meaningful
    columns (:func:`output_features`), and RFM takes recency, frequency and monetary value from
    the BTYD summary (:func:`rfm_columns`). ``features`` overrides the choice; the choice is
    said in ``note``."""

    _check_ids(table, id_column)
    if algorithm != "rfm" and k != "auto":
        _check_k(int(k), len(table))
    ids = table[id_column].astype(str).to_numpy()
    if algorithm == "rfm":
        return _rfm(table, ids)
    note = None
    if features is None:
        features, note = output_features(table)
    seg = Segmenter(algorithm, k, features=features, seed=seed).fit(table)
    # a scoring run's predictions call the CLV clv_expected: the segments' share of it all the same
    clv = next((c for c in ("clv", "clv_expected") if c in table.columns), None)
    profiles = profile_segments(table, seg.labels_, features=seg.prep_.features_, clv=clv)
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
    return SegmentResult(algorithm, seg, customers, profiles, note=note)


def _check_ids(table: Any, id_column: str) -> None:
    if id_column not in table.columns:
        raise CustvalError(
            f"the table has no id column '{id_column}'",
            column=id_column,
            hint="Name the id column with --id",
        )
    if table[id_column].duplicated().any():
        dup = table[id_column][table[id_column].duplicated()].head(5).tolist()
        raise CustvalError(
            f"the id column '{id_column}' repeats customers (e.g. {', '.join(map(str, dup))})",
            column=id_column,
            hint="Segment a table with one row per customer",
        )


def _check_k(k: int, customers: int) -> None:
    """A number of segments that can be asked of ``customers`` customers: 2 to their number
    (one segment is the whole base, with nothing to compare it to)."""
    if k < 2:
        raise CustvalError(
            f"--k {k} asks for {'one segment: the whole base' if k == 1 else 'no segment'}; "
            "segments need at least 2",
            hint="Ask for 2 or more segments (--k 4), or let custval choose (--k auto)",
        )
    if k > customers:
        raise CustvalError(
            f"--k {k} asks for more segments than the table's {customers:,} customers",
            hint=f"Ask for at most {customers:,} segments, or --k auto",
        )


#: the columns of custval's own outputs worth segmenting on, in this order: custval clv's
#: BTYD summary and predictions, a scoring run's predictions (score, export) and predict's
#: probability. Left out: ids and dates, the interval bounds (they repeat their estimate),
#: expected_spend (the CLV before discounting), T (the customer's age, not behaviour) and the
#: classes (a cut of the probability).
OUTPUT_FEATURES = (
    "frequency",
    "recency",
    "monetary_value",
    "p_alive",
    "clv",
    "clv_expected",
    "value_probability",
    "probability",
)
#: which output has which columns, to say where the choice came from
_OUTPUT_KINDS = (
    ({"frequency", "recency", "T", "p_alive"}, "custval clv's output"),
    ({"value_probability", "clv_expected"}, "a scoring run's predictions (custval export)"),
    ({"probability"}, "custval predict's output"),
)


def _output_kind(columns: Any) -> str:
    """Which of custval's outputs a table with these columns is, in words."""
    cols = {str(c) for c in columns}
    labelled = any(c.startswith("predicted_") and f"p_{c[10:]}" in cols for c in cols)
    if labelled:
        return "custval predict's output"
    return next((name for need, name in _OUTPUT_KINDS if need <= cols), "custval's output")


def output_features(table: Any) -> tuple[list[str] | None, str | None]:
    """The columns to segment one of custval's own outputs on, and a sentence saying so; (None,
    None) for any other table (a feature table has RFM columns of its own: the defaults)."""
    own = [c for c in DEFAULT_FEATURES if c in table.columns and c != "clv"]
    chosen = [c for c in OUTPUT_FEATURES if c in table.columns]
    # custval predict names a labelled model's probability after its label: p_churn beside
    # predicted_churn
    chosen += [
        c
        for c in table.columns
        if str(c).startswith("p_") and f"predicted_{str(c)[2:]}" in table.columns
    ]
    if own or not chosen or chosen == ["clv"]:
        return None, None
    # without the BTYD summary, the expected purchases are the only purchase rate there is
    if "frequency" not in chosen and "expected_purchases" in table.columns:
        chosen.insert(0, "expected_purchases")
    source = _output_kind(table.columns)
    return chosen, (
        f"segmenting on {', '.join(chosen)}: the meaningful columns of {source}, leaving out "
        "its ids, interval bounds and repeats of the same estimate (--features chooses others)"
    )


#: RFM's recency, frequency and monetary value in a feature table, and in custval clv's output
#: (the BTYD summary: recency there is the time from the first to the last purchase, so the
#: time since the last purchase is T - recency)
RFM_FEATURE_TABLE = {"recency": "recency_days", "frequency": "orders", "monetary": "revenue"}
RFM_BTYD = {
    "recency": "T - recency",
    "frequency": "frequency",
    "monetary": "monetary_value",
}


def rfm_columns(table: Any) -> tuple[pd.DataFrame, dict[str, str]]:
    """Recency (time since the last purchase), frequency and monetary value of each customer,
    from a feature table's recency_days, orders and revenue or from the BTYD summary of custval
    clv's output; with the column each came from. A table with neither is a clear error."""
    cols = set(table.columns)
    if set(RFM_FEATURE_TABLE.values()) <= cols:
        rfm = pd.DataFrame(
            {k: pd.to_numeric(table[c], errors="coerce") for k, c in RFM_FEATURE_TABLE.items()}
        )
        return rfm, dict(RFM_FEATURE_TABLE)
    if {"frequency", "recency", "T", "monetary_value"} <= cols:
        num = {c: pd.to_numeric(table[c], errors="coerce") for c in ("frequency", "recency", "T")}
        rfm = pd.DataFrame(
            {
                "recency": num["T"] - num["recency"],
                "frequency": num["frequency"],
                "monetary": pd.to_numeric(table["monetary_value"], errors="coerce"),
            }
        )
        return rfm, dict(RFM_BTYD)
    raise CustvalError(
        "RFM segments need recency, frequency and monetary value: the columns recency_days, "
        "orders and revenue (a feature table) or frequency, recency, T and monetary_value "
        "(custval clv's output); the table has " + ", ".join(sorted(map(str, cols))[:12]),
        column="recency_days",
        hint="Segment custval clv's output, or cluster this table (--algorithm kmeans)",
    )


def _rfm(table: Any, ids: Any) -> SegmentResult:
    """RFM quintile segments, profiled on the three columns they came from."""
    rfm, used = rfm_columns(table)
    scored = rfm_segments(
        *(rfm[c].to_numpy(dtype=np.float64) for c in ("recency", "frequency", "monetary"))
    )
    names = sorted(set(scored["segment"]))
    code = {n: i for i, n in enumerate(names)}
    labels = scored["segment"].map(code).to_numpy()
    # the profile names the columns as the table has them; a derived recency gets its own name
    shown = {k: (c if c in table.columns else "since_last_purchase") for k, c in used.items()}
    frame = table.assign(**{shown[k]: rfm[k].to_numpy() for k in rfm.columns})
    profiles = profile_segments(frame, labels, features=list(shown.values()))
    profiles.insert(1, "name", [names[s] for s in profiles["segment"]])
    profiles.insert(2, "rule", [_rfm_rule(names[s]) for s in profiles["segment"]])
    customers = pd.DataFrame(
        {"customer_id": ids, "segment": labels, "segment_name": scored["segment"].to_numpy()}
    )
    note = "RFM from " + ", ".join(f"{k} = {c}" for k, c in used.items())
    if used == RFM_BTYD:
        note += (
            " (custval clv's output: the time since the last purchase, repeat purchases and "
            "mean repeat spend)"
        )
    return SegmentResult("rfm", None, customers, profiles, note=note, rfm_columns=used)


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


def store_segments(result: SegmentResult, url: str, as_of: Any, *, wait: float = 0.0) -> str:
    """Write a segmentation to the store as one run of kind ``segment``: each customer's
    segment, the profiles, and (for a clustering) the centres that place new customers; returns
    the run id. ``wait``: seconds to wait for a DuckDB store another process holds."""
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
    with open_store(url, wait=wait) as s:
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
