"""custval: customer value from raw customer data.

The path data takes: sources -> contracts -> customer 360 -> features -> models -> store/API.
The names below are the public face for notebooks and applications; they load on first use,
so that ``import custval`` (and the command line's start) stays fast:

>>> import custval  # doctest: +SKIP
>>> project = custval.load_project("custval.toml")  # doctest: +SKIP
>>> prepared = custval.prepare(project)  # validate, clean, link  # doctest: +SKIP
>>> table = custval.feature_table(project, prepared).to_pyarrow()  # doctest: +SKIP
>>> tx = prepared.tables["transactions"]  # doctest: +SKIP
>>> run = custval.forecast(tx, project.as_of, by="channel")  # sales forecasts  # doctest: +SKIP

``feature_table`` is :func:`custval.flows.preparation.features`: ``custval.features`` is the
subpackage that defines the features. The layers behind these names are described in
docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from custval.version import __version__

#: each public name and the module that owns it
_OWNERS = {
    "load_project": "custval.config",
    "prepare": "custval.flows.preparation",
    "feature_table": "custval.flows.preparation",
    "forecast": "custval.flows.forecasting",
    "btyd_summary": "custval.features.summary",
    "calibration_holdout": "custval.features.holdout",
    "BetaGeo": "custval.models.btyd",
    "ModifiedBetaGeo": "custval.models.btyd",
    "ParetoNBD": "custval.models.btyd",
    "GammaGamma": "custval.models.btyd",
    "BetaGeoBetaBinom": "custval.models.btyd_discrete",
    "ShiftedBetaGeometric": "custval.models.btyd_discrete",
    "clv_interval": "custval.models.clv",
    "compare_models": "custval.models.evaluation",
    "ValueClassifier": "custval.models.value",
    "Segmenter": "custval.models.segments",
    "open_store": "custval.store",
    "CustvalError": "custval.errors",
    "FitError": "custval.errors",
}
#: where the name is not the owner's own name for it
_OWN_NAME = {"feature_table": "features"}

__all__ = [
    "BetaGeo",
    "BetaGeoBetaBinom",
    "CustvalError",
    "FitError",
    "GammaGamma",
    "ModifiedBetaGeo",
    "ParetoNBD",
    "Segmenter",
    "ShiftedBetaGeometric",
    "ValueClassifier",
    "__version__",
    "btyd_summary",
    "calibration_holdout",
    "clv_interval",
    "compare_models",
    "feature_table",
    "forecast",
    "load_project",
    "open_store",
    "prepare",
]


def __getattr__(name: str) -> Any:
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module 'custval' has no attribute '{name}'")
    value = getattr(importlib.import_module(owner), _OWN_NAME.get(name, name))
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and editors only; at run time the names load lazily
    from custval.config import load_project
    from custval.errors import CustvalError, FitError
    from custval.features.holdout import calibration_holdout
    from custval.features.summary import btyd_summary
    from custval.flows.forecasting import forecast
    from custval.flows.preparation import features as feature_table
    from custval.flows.preparation import prepare
    from custval.models.btyd import BetaGeo, GammaGamma, ModifiedBetaGeo, ParetoNBD
    from custval.models.btyd_discrete import BetaGeoBetaBinom, ShiftedBetaGeometric
    from custval.models.clv import clv_interval
    from custval.models.evaluation import compare_models
    from custval.models.segments import Segmenter
    from custval.models.value import ValueClassifier
    from custval.store import open_store
