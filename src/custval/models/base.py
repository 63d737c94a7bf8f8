"""Constructor parameters of every custval estimator, from one place.

scikit-learn's convention (its developer guide, "Rolling your own estimator"): ``__init__``
stores each of its arguments unchanged under the argument's name and does nothing else; what
``fit`` learns ends in ``_``. :class:`Estimator` reads the parameter names from ``__init__``'s
signature and gives every estimator of :mod:`custval.models` the same ``get_params`` and
``set_params``, so that ``sklearn.base.clone(model)`` makes an unfitted copy of any of them. It
does not import scikit-learn, whose ``BaseEstimator`` would cost a second at start-up to every
command that only fits a BTYD model.

Example
-------
>>> class Smoother(Estimator):
...     def __init__(self, span: int = 3, *, centre: bool = True) -> None:
...         self.span = span
...         self.centre = centre
>>> Smoother(5).get_params()
{'span': 5, 'centre': True}
>>> Smoother().set_params(span=7).span
7
"""

from __future__ import annotations

import inspect
from typing import Any, Self

from custval.errors import CustvalError

__all__ = ["Estimator"]


class Estimator:
    """``get_params`` and ``set_params`` over the parameters of ``__init__`` (module doc)."""

    @classmethod
    def _init_params(cls) -> list[str]:
        """The names of ``__init__``'s parameters, in their order (``self`` left out)."""
        init = cls.__init__
        if init is object.__init__:
            return []
        params = list(inspect.signature(init).parameters.values())[1:]
        loose = [p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if loose:
            # a parameter that is not named cannot be read back, nor a copy made from it
            raise TypeError(
                f"{cls.__name__}.__init__ takes *{loose[0]}: an estimator names every "
                "parameter it takes"
            )
        return [p.name for p in params]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters by name; with ``deep``, also those of parameters that
        are estimators themselves, as ``<parameter>__<its parameter>``."""
        out: dict[str, Any] = {}
        for name in self._init_params():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update({f"{name}__{k}": v for k, v in value.get_params().items()})
            out[name] = value
        return out

    def set_params(self, **params: Any) -> Self:
        """Set constructor parameters by name (``<parameter>__<its parameter>`` reaches into a
        parameter that is an estimator); an unknown name is an error, and sets nothing."""
        names = self._init_params()
        unknown = [k for k in params if k.partition("__")[0] not in names]
        if unknown:
            raise CustvalError(
                f"{type(self).__name__} has no parameter {', '.join(unknown[:5])}",
                hint="Its parameters: " + (", ".join(names) or "none"),
            )
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, _, inner = key.partition("__")
            if inner:
                nested.setdefault(name, {})[inner] = value
            else:
                setattr(self, name, value)
        for name, inner_params in nested.items():
            getattr(self, name).set_params(**inner_params)
        return self
