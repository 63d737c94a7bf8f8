"""Every estimator's constructor parameters come from one place (models/base.py), so that
scikit-learn's clone makes an unfitted copy of each."""

from __future__ import annotations

import pytest
from sklearn.base import clone

from custval.errors import CustvalError
from custval.models.base import Estimator
from custval.models.btyd import BetaGeo, GammaGamma, ModifiedBetaGeo, ParetoNBD
from custval.models.btyd_discrete import BetaGeoBetaBinom, ShiftedBetaGeometric
from custval.models.candidates import CANDIDATES
from custval.models.clv_ml import SPEND_MODELS, SpendRegressor
from custval.models.segment_assign import SegmentAssigner
from custval.models.segments import Segmenter, SegmentPrep
from custval.models.value import ValueClassifier

#: each estimator with parameters other than its defaults
ESTIMATORS = [
    BetaGeo(tol=1e-8, max_iter=50),
    ModifiedBetaGeo(max_iter=10),
    ParetoNBD(tol=1e-6),
    GammaGamma(max_iter=99),
    BetaGeoBetaBinom(tol=1e-9),
    ShiftedBetaGeometric(max_iter=7),
    ValueClassifier(("logistic", "mlp"), folds=3, top_share=0.1, seed=4),
    Segmenter("gmm", 4, k_range=(2, 5), features=["revenue"], bootstrap=0, seed=2),
    SegmentPrep(["orders"], log=False),
    SegmentAssigner(rounds=20, seed=1, threads=1),
    SpendRegressor("mlp", level=0.8, seed=3, threads=1),
    *[cls(seed=5, threads=1) for cls in {**CANDIDATES, **SPEND_MODELS}.values()],
]


@pytest.mark.parametrize("model", ESTIMATORS, ids=lambda m: type(m).__name__)
def test_clone_makes_an_unfitted_copy_with_the_same_parameters(model: Estimator) -> None:
    model.learned_ = "something fitted"  # what fit sets is not a parameter
    copy = clone(model)
    assert type(copy) is type(model) and copy is not model
    assert copy.get_params() == model.get_params()
    assert not hasattr(copy, "learned_")


def test_parameters_are_read_from_the_constructor() -> None:
    assert BetaGeo().get_params() == {"tol": 1e-10, "max_iter": 2000}
    seg = Segmenter()
    assert list(seg.get_params()) == [
        "algorithm",
        "k",
        "k_range",
        "features",
        "sample_size",
        "bootstrap",
        "min_cluster_size",
        "seed",
    ]
    assert seg.set_params(k=3, seed=7) is seg and (seg.k, seg.seed) == (3, 7)
    with pytest.raises(CustvalError, match="Segmenter has no parameter colour"):
        seg.set_params(colour="red", k=4)
    assert seg.k == 3  # nothing set


class _Outer(Estimator):
    def __init__(self, inner: Estimator | None = None, scale: float = 1.0) -> None:
        self.inner = inner
        self.scale = scale


def test_nested_parameters() -> None:
    outer = _Outer(BetaGeo(max_iter=5))
    assert outer.get_params()["inner__max_iter"] == 5
    assert "inner__max_iter" not in outer.get_params(deep=False)
    outer.set_params(inner__max_iter=9, scale=2.0)
    assert outer.inner.max_iter == 9 and outer.scale == 2.0
    assert clone(outer).inner is not outer.inner


def test_an_estimator_names_every_parameter() -> None:
    class Loose(Estimator):
        def __init__(self, **kwargs: float) -> None:
            self.kwargs = kwargs

    with pytest.raises(TypeError, match=r"takes \*kwargs"):
        Loose().get_params()
