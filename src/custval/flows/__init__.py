"""The use cases: what the command line, the service and a notebook ask custval to do, each one
function of a project and what came before it.

* :mod:`.prepare`: open, validate, clean and link the sources; the feature table;
* :mod:`.clv`: the customer-base (BTYD) CLV of a project;
* :mod:`.clv_leaderboard`: BTYD, machine-learned and hybrid CLV judged side by side;
* :mod:`.value`: train the high/low value classifier;
* :mod:`.score`: score every customer into the store;
* :mod:`.segment`: segment customers and store the segmentation.
"""

from custval.flows.clv import ClvResult, clv
from custval.flows.clv_leaderboard import ClvBoard, clv_leaderboard
from custval.flows.prepare import (
    Prepared,
    features,
    open_all,
    prepare,
    validate,
    write_features,
)
from custval.flows.score import ScoreResult, score
from custval.flows.segment import (
    LabelledSegments,
    SegmentResult,
    assign_labelled_segments,
    segment_features,
    segment_table,
    store_segments,
)
from custval.flows.value import ValueTraining, train_value

__all__ = [
    "ClvBoard",
    "ClvResult",
    "LabelledSegments",
    "Prepared",
    "ScoreResult",
    "SegmentResult",
    "ValueTraining",
    "assign_labelled_segments",
    "clv",
    "clv_leaderboard",
    "features",
    "open_all",
    "prepare",
    "score",
    "segment_features",
    "segment_table",
    "store_segments",
    "train_value",
    "validate",
    "write_features",
]
