"""The use cases: what the command line, the service and a notebook ask custval to do, each one
function of a project and what came before it.

* :mod:`.preparation`: open, validate, clean and link the sources; the feature table;
* :mod:`.generation`: the generated features of a project;
* :mod:`.customer_base`: the customer-base (BTYD) CLV of a project;
* :mod:`.leaderboard`: BTYD, machine-learned and hybrid CLV judged side by side;
* :mod:`.value`: train the high/low value classifier;
* :mod:`.scoring`: score every customer into the store;
* :mod:`.segmentation`: segment customers and store the segmentation.

The functions below load their module on first use (``flows.prepare(project)`` loads the
preparation alone, not the machine learning behind the leaderboard), so that a command pays
only for what it runs. The modules are named for what they do and the functions for what they
are asked: a module named like a function it exports would shadow that function once
imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: each use case and the module that owns it
_OWNERS = {
    "Prepared": "preparation",
    "prepare": "preparation",
    "validate": "preparation",
    "open_all": "preparation",
    "features": "preparation",
    "auto_features": "generation",
    "write_features": "preparation",
    "ClvResult": "customer_base",
    "clv": "customer_base",
    "ClvBoard": "leaderboard",
    "clv_leaderboard": "leaderboard",
    "ValueTraining": "value",
    "train_value": "value",
    "ScoreResult": "scoring",
    "score": "scoring",
    "score_on_spark": "spark_scoring",
    "SegmentResult": "segmentation",
    "LabelledSegments": "segmentation",
    "segment_features": "segmentation",
    "segment_table": "segmentation",
    "assign_labelled_segments": "segmentation",
    "store_segments": "segmentation",
    "TargetRun": "actions",
    "target_run": "actions",
}

__all__ = [
    "ClvBoard",
    "ClvResult",
    "LabelledSegments",
    "Prepared",
    "ScoreResult",
    "SegmentResult",
    "TargetRun",
    "ValueTraining",
    "assign_labelled_segments",
    "auto_features",
    "clv",
    "clv_leaderboard",
    "features",
    "open_all",
    "prepare",
    "score",
    "score_on_spark",
    "segment_features",
    "segment_table",
    "store_segments",
    "target_run",
    "train_value",
    "validate",
    "write_features",
]


def __getattr__(name: str) -> Any:
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module 'custval.flows' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"custval.flows.{owner}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and editors; at run time the names load lazily
    from custval.flows.actions import TargetRun, target_run
    from custval.flows.customer_base import ClvResult, clv
    from custval.flows.generation import auto_features
    from custval.flows.leaderboard import ClvBoard, clv_leaderboard
    from custval.flows.preparation import (
        Prepared,
        features,
        open_all,
        prepare,
        validate,
        write_features,
    )
    from custval.flows.scoring import ScoreResult, score
    from custval.flows.segmentation import (
        LabelledSegments,
        SegmentResult,
        assign_labelled_segments,
        segment_features,
        segment_table,
        store_segments,
    )
    from custval.flows.spark_scoring import score_on_spark
    from custval.flows.value import ValueTraining, train_value
