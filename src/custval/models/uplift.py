"""Uplift: whom an offer changes, how to tell a good uplift model, and whom to contact.

Learners (Künzel, Sekhon, Bickel & Yu 2019, "Metalearners for estimating heterogeneous
treatment effects using machine learning", PNAS 116(10)), in the paper's notation: each
customer has features ``x``, a treatment indicator ``W`` (1 = sent the offer) and an outcome
``Y`` (1 = retained, or an amount). The conditional average treatment effect, the uplift, is

    tau(x) = E[Y(1) - Y(0) | X = x].

* :class:`TLearner`: the response functions ``mu_0(x) = E[Y(0) | X = x]`` and
  ``mu_1(x) = E[Y(1) | X = x]`` are learnt separately, ``mu_0`` on the control group and
  ``mu_1`` on the treated, and ``tau_T(x) = mu_1(x) - mu_0(x)``.
* :class:`XLearner`: after the same first stage, each customer's effect is imputed with the
  other group's model: ``D1_i = Y1_i - mu_0(X1_i)`` for the treated and
  ``D0_i = mu_1(X0_i) - Y0_i`` for the controls; ``tau_1`` is learnt from ``D1`` on the treated
  and ``tau_0`` from ``D0`` on the controls, and ``tau(x) = g(x) tau_0(x) + (1 - g(x)) tau_1(x)``
  with the weight ``g`` the propensity ``e(x) = P(W = 1 | X = x)``, as the paper suggests. In a
  randomised campaign ``e`` is the known treated share (the default); a fitted logistic
  regression is an option for a log whose assignment was not random. The weight leans on
  ``tau_0`` when most customers were treated, since ``tau_0`` then rests on the large group's
  ``mu_1``.

Every model is a LightGBM booster with the same small settings (depth-3 trees, leaves of at
least 100 customers, 100 rounds; deterministic with ``seed``; threads from
:func:`custval.models.fitting.threads`). Text columns are LightGBM categories through
:class:`~custval.models.encoding.FeatureSchema`. The features are binned once, for all four
models: each model trains on a subset of one LightGBM dataset. A binary outcome (0/1) gets
classifiers in the first stage (``mu`` is a probability) and regressions for ``tau``; any other
numeric outcome regressions throughout.

Reasons: ``contributions(X)`` gives per-feature contributions that add up, with a base, to the
predicted uplift exactly, so that a targeting list can say why a customer is chosen.

* X-learner: ``tau_0`` and ``tau_1`` are regressions, so their TreeSHAP values (Lundberg et al.
  2018; :mod:`custval.models.treeshap`) are in units of uplift; the contributions are
  ``g(x) phi_0(x) + (1 - g(x)) phi_1(x)``.
* T-learner: the difference of the two models' contributions. For a binary outcome those are in
  log-odds; each model's are first rescaled by ``(p - p_base) / (s - s_base)`` (``s`` the model's
  log-odds, ``p`` its probability, ``s_base`` and ``p_base`` at the base), so that they add up
  to ``p - p_base``: exact in sum, a linear rescaling of Shapley values rather than Shapley
  values of the probability.

Evaluation on held-out customers (the definitions of causalml's ``qini_score`` and
``auuc_score`` with ``normalize=True``, so that the numbers compare; see :func:`qini_curve`):
:func:`qini_curve`, :func:`qini_coefficient`, :func:`auuc`, :func:`uplift_at_k`.

Targeting: :func:`choose_targets` (contact when uplift x value - cost > 0, highest expected
incremental profit first, within a budget; Lemmens & Gupta 2020), :func:`heuristic_targets`
(no experiment: CLV x P(churn), named a heuristic) and :func:`control_group_size` (the control
group that would let the next campaign measure uplift).

Example
-------
>>> model = XLearner().fit(features, treated, retained)  # doctest: +SKIP
>>> tau = model.predict_uplift(holdout)  # doctest: +SKIP
>>> qini_coefficient(tau, holdout_treated, holdout_retained)  # doctest: +SKIP
>>> choose_targets(tau, clv, cost=5.0, budget=10_000).table  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import expit, ndtri

from custval.errors import CustvalError, FitError
from custval.models.base import Estimator
from custval.models.encoding import FeatureSchema, infer_schema
from custval.models.explain import numbers_as_text, reason_columns
from custval.models.fitting import threads as default_threads
from custval.models.treeshap import ShallowTreeShap, supports

__all__ = [
    "TARGET_COLUMNS",
    "TLearner",
    "TargetList",
    "XLearner",
    "auuc",
    "choose_targets",
    "control_group_size",
    "heuristic_targets",
    "qini_coefficient",
    "qini_curve",
    "treatment_indicator",
    "uplift_at_k",
]

Array = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

#: each group needs at least this many customers to learn anything from
MIN_GROUP = 20
#: a fitted propensity is kept inside this band, so that neither tau model is ignored
PROPENSITY_CLIP = (0.01, 0.99)
_TREATED_WORDS = {"treatment", "treated", "t", "1", "yes", "y", "true", "contacted"}
_CONTROL_WORDS = {"control", "c", "0", "no", "n", "false", "holdout", "not contacted"}


# ---- checking the experiment ----------------------------------------------------------------


def treatment_indicator(values: Any, *, source: str | None = None, column: str = "group") -> Bools:
    """The treatment as booleans (True = treated): booleans, 0/1, or the words
    ``treatment``/``control`` (also treated, contacted, holdout, yes/no; any case).

    Example
    -------
    >>> treatment_indicator(["treatment", "Control", "treatment"]).tolist()
    [True, False, True]
    """
    s = pd.Series(values)
    if pd.api.types.is_bool_dtype(s):
        return s.to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(s):
        number = s.to_numpy(dtype=np.float64)
        treated, control = number == 1.0, number == 0.0
    else:
        text = s.astype("string").str.strip().str.lower()
        number = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        treated = text.isin(_TREATED_WORDS).to_numpy(dtype=bool) | (number == 1.0)
        control = text.isin(_CONTROL_WORDS).to_numpy(dtype=bool) | (number == 0.0)
    bad = ~(treated | control)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise CustvalError(
            f"{rows.size} row{'s have' if rows.size > 1 else ' has'} a treatment that is neither "
            "treatment nor control",
            source=source,
            column=column,
            count=int(rows.size),
            examples=[{"row": int(i), column: s.iloc[i]} for i in rows[:5]],
            hint="Write treatment or control (or 1/0) for every customer of the campaign",
        )
    return treated


def _check_experiment(n_rows: int, treated: Bools, y: Array | None, source: str | None) -> None:
    """Same lengths; a treated and a control group, the messages the issue asks for."""
    lengths = {"features": n_rows, "treatment": treated.size}
    if y is not None:
        lengths["outcome"] = y.size
    if len(set(lengths.values())) > 1:
        said = ", ".join(f"{k} {v:,}" for k, v in lengths.items())
        raise CustvalError(
            f"the rows do not match ({said})",
            source=source,
            hint="Give one row per customer in each, in the same order",
        )
    n = treated.size
    if n == 0:
        raise CustvalError("the treatment log is empty", source=source)
    n_treated = int(treated.sum())
    if n_treated == n:
        raise CustvalError(
            "the treatment log has no control group: uplift needs customers who were not "
            f"contacted (treated share 100%, {n:,} customers)",
            source=source,
            column="group",
            count=n,
            hint="Hold out a random control group in the next campaign (control_group_size "
            "says how large); until then rank by CLV x P(churn), which custval labels a "
            "heuristic",
        )
    if n_treated == 0:
        raise CustvalError(
            "the treatment log has no treated customers: uplift needs customers who were "
            f"contacted (treated share 0%, {n:,} customers)",
            source=source,
            column="group",
            count=n,
            hint="Check the group column: every row says control",
        )


def _as_outcome(y: Any, source: str | None) -> Array:
    values = pd.to_numeric(pd.Series(y), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise CustvalError(
            f"{rows.size} row{'s have' if rows.size > 1 else ' has'} no numeric outcome",
            source=source,
            column="outcome",
            count=int(rows.size),
            examples=[{"row": int(i)} for i in rows[:5]],
            hint="Give every customer of the campaign an outcome (1/0 for retained)",
        )
    return values


# ---- the learners -------------------------------------------------------------------------


class _MetaLearner(Estimator):
    """What the T- and X-learner share: settings, checks, the binned data, the boosters."""

    kind: ClassVar[str] = ""
    #: the fitted LightGBM boosters, by attribute
    boosters: ClassVar[tuple[str, ...]] = ("mu0_", "mu1_")
    #: the other learnt attributes, plain numbers (kept in the model's JSON as they are)
    learnt: ClassVar[tuple[str, ...]] = ("binary_", "treated_share_", "n_treated_", "n_control_")

    def __init__(
        self,
        *,
        outcome: str = "auto",
        rounds: int = 100,
        learning_rate: float = 0.1,
        num_leaves: int = 8,
        max_depth: int = 3,
        min_data_in_leaf: int = 100,
        lambda_l2: float = 1.0,
        seed: int = 0,
        threads: int | None = None,
    ) -> None:
        self.outcome = outcome
        self.rounds = rounds
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_data_in_leaf = min_data_in_leaf
        self.lambda_l2 = lambda_l2
        self.seed = seed
        self.threads = threads

    def lgb_params(self, objective: str) -> dict[str, Any]:
        """LightGBM's parameters for one model (the benchmark hands the same to causalml)."""
        return {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_data_in_leaf": self.min_data_in_leaf,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "num_threads": self._threads(),
            "verbosity": -1,
            "deterministic": True,
            "force_row_wise": True,
        }

    def _threads(self) -> int:
        return int(self.threads) if self.threads else default_threads()

    def _prepare(
        self, X: Any, treatment: Any, y: Any, source: str | None
    ) -> tuple[pd.DataFrame, Bools, Array, bool]:
        frame = _frame(X)
        treated = treatment_indicator(treatment, source=source)
        _check_experiment(len(frame), treated, np.asarray(y).ravel(), source)
        values = _as_outcome(y, source)
        binary = self._is_binary(values)
        for name, rows in (("control", ~treated), ("treated", treated)):
            if rows.sum() < MIN_GROUP:
                raise FitError(
                    f"the {name} group has {int(rows.sum())} customers: too few to learn how "
                    f"outcomes differ (at least {MIN_GROUP})",
                    source=source,
                    hint="Evaluate a larger campaign, or rank by CLV x P(churn) meanwhile",
                )
            if binary and np.unique(values[rows]).size < 2:
                raise FitError(
                    f"every customer of the {name} group has outcome {values[rows][0]:g}: "
                    "nothing tells who responds",
                    source=source,
                    column="outcome",
                    hint="Check the outcome column, or wait until outcomes are known",
                )
        return frame, treated, values, binary

    def _is_binary(self, y: Array) -> bool:
        zero_one = bool(np.isin(y, (0.0, 1.0)).all())
        if self.outcome == "binary" and not zero_one:
            raise CustvalError(
                "the outcome is not 0/1", column="outcome", hint="Use outcome='continuous'"
            )
        if self.outcome not in ("auto", "binary", "continuous"):
            raise CustvalError(
                f"unknown outcome kind '{self.outcome}'",
                hint="Use auto, binary or continuous",
            )
        return zero_one if self.outcome == "auto" else self.outcome == "binary"

    def _binned(self, schema: FeatureSchema, codes: Array, y: Array) -> Any:
        """One LightGBM dataset of every customer: the bins are found once, and each model
        trains on a subset of it (the histograms' bins are shared, not rebuilt four times)."""
        import lightgbm as lgb

        cats = list(range(len(schema.numeric), len(schema.columns)))
        names = [f"f{j}" for j in range(codes.shape[1])]
        params = {k: v for k, v in self.lgb_params("regression").items() if k != "objective"}
        data = lgb.Dataset(
            codes,
            label=y,
            categorical_feature=cats,
            feature_name=names,
            params=params,
            free_raw_data=True,
        )
        return data.construct()

    def _groups(
        self, schema: FeatureSchema, codes: Array, treated: Bools, y: Array
    ) -> tuple[Any, Any]:
        """The control and the treated customers as two subsets of one binned dataset; the
        second stage relabels the same subsets."""
        data = self._binned(schema, codes, y)
        # int32 row numbers: LightGBM takes them as they are, where a list would be copied
        return tuple(
            data.subset(np.flatnonzero(rows).astype(np.int32)).construct()
            for rows in (~treated, treated)
        )

    def _train_pair(
        self, parts: tuple[Any, Any], labels: tuple[Array, Array], objective: str
    ) -> list[Any]:
        """The control group's and the treated group's model, side by side.

        With two or more threads the two models train at once, each with half of them:
        LightGBM's threads share out each histogram, which on small trees costs a
        synchronisation per feature and level; two independent fits need none (LightGBM
        releases the GIL while it boosts). The models are the same either way."""
        import lightgbm as lgb

        n = self._threads()
        params = self.lgb_params(objective)

        def fit(job: tuple[Any, Array]) -> Any:
            part, label = job
            part.set_label(label)
            own = {**params, "num_threads": max(1, n // 2)}
            return lgb.train(own, part, num_boost_round=self.rounds)

        jobs = list(zip(parts, labels, strict=True))
        if n < 2:
            return [fit(job) for job in jobs]
        with ThreadPoolExecutor(2, thread_name_prefix="custval-uplift") as pool:
            return list(pool.map(fit, jobs))

    def _mu(self, booster: Any, codes: Array) -> Array:
        return np.asarray(booster.predict(codes, num_threads=self._threads()), dtype=np.float64)

    def _explain(self, booster: Any, codes: Array) -> tuple[Array, Array]:
        """TreeSHAP of one booster in its raw score (custval's fast path for shallow trees,
        built once per booster)."""
        cache = self.__dict__.setdefault("_explainers", {})
        if id(booster) not in cache:
            dumped = booster.dump_model()
            cache[id(booster)] = ShallowTreeShap(dumped) if supports(dumped) else None
        if cache[id(booster)] is not None:
            return cache[id(booster)].contributions(codes)
        contrib = np.asarray(booster.predict(codes, pred_contrib=True))
        return contrib[:, :-1], contrib[:, -1]

    def to_json(self) -> str:
        """The fitted model as JSON: its parameters, feature schema, boosters (LightGBM's text
        format) and the other learnt numbers; :meth:`from_json` rebuilds the same predictions."""
        state = {
            "kind": self.kind,
            "params": self.get_params(),
            "schema": self.schema_.to_dict(),
            "boosters": {name: getattr(self, name).model_to_string() for name in self.boosters},
            **{name: getattr(self, name) for name in self.learnt},
        }
        return json.dumps(state)

    @classmethod
    def from_json(cls, text: str) -> Self:
        import lightgbm as lgb

        state = json.loads(text)
        if state.get("kind") != cls.kind:
            raise CustvalError(
                f"the model holds a {state.get('kind', 'unknown')} model, not a {cls.kind}",
                hint="Load it with the class that wrote it",
            )
        model = cls(**state["params"])
        model.schema_ = FeatureSchema.from_dict(state["schema"])
        for name, text_model in state["boosters"].items():
            setattr(model, name, lgb.Booster(model_str=text_model))
        for name in cls.learnt:
            setattr(model, name, state[name])
        return model

    def predict_uplift(self, X: pd.DataFrame, source: str = "input") -> Array:
        raise NotImplementedError

    def contributions(self, X: pd.DataFrame, source: str = "input") -> tuple[Array, Array]:
        raise NotImplementedError

    def reasons(
        self,
        X: pd.DataFrame,
        *,
        top_k: int = 3,
        catalogue: Mapping[str, str] | None = None,
        source: str = "input",
    ) -> pd.DataFrame:
        """The uplift of every row of ``X`` and its ``top_k`` reasons (the features that move
        it most, by absolute contribution; columns as :func:`custval.models.explain.reasons`,
        contributions in units of uplift), e.g. "Days since last purchase: 40 (typical
        customer: 12) raises the effect of the offer"."""
        X = _frame(X)
        contrib, base = self.contributions(X, source)
        out = pd.DataFrame({"uplift": base + contrib.sum(axis=1)}, index=X.index)
        why = reason_columns(
            self.schema_,
            X,
            contrib,
            top_k=top_k,
            catalogue=catalogue,
            ending=" the effect of the offer",
            source=source,
        )
        return pd.concat([out, why], axis=1)


def _frame(X: Any) -> pd.DataFrame:
    """A table of features; an array's columns are named 0, 1, ... as text."""
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X))
    return frame.rename(columns=str)


def _probability_contributions(contrib: Array, base: Array) -> tuple[Array, Array]:
    """Log-odds contributions rescaled to add up to ``p - p_base`` (module docstring)."""
    score = base + contrib.sum(axis=1)
    p, p_base = expit(score), expit(base)
    step = score - base
    slope = p * (1.0 - p)  # the derivative, where the score is the base itself
    safe = np.abs(step) > 1e-12
    factor = np.where(safe, (p - p_base) / np.where(safe, step, 1.0), slope)
    return contrib * factor[:, None], p_base


class TLearner(_MetaLearner):
    """Two models, ``tau(x) = mu_1(x) - mu_0(x)`` (module docstring).

    Parameters
    ----------
    outcome : {"auto", "binary", "continuous"}
        "auto": binary when every outcome is 0 or 1.
    rounds, learning_rate, num_leaves, max_depth, min_data_in_leaf, lambda_l2 :
        LightGBM's settings, the same for every model.
    seed : int
        LightGBM's seed (the fits are deterministic).
    threads : int or None
        LightGBM's threads; None: :func:`custval.models.fitting.threads`.

    Learnt: ``schema_``, ``binary_``, ``mu0_``, ``mu1_`` (boosters), ``treated_share_``,
    ``n_treated_``, ``n_control_``.
    """

    kind = "t-learner"

    def fit(self, X: Any, treatment: Any, y: Any, *, source: str | None = None) -> Self:
        frame, treated, values, binary = self._prepare(X, treatment, y, source)
        schema = infer_schema(frame)
        codes = schema.codes(frame)
        parts = self._groups(schema, codes, treated, values)
        objective = "binary" if binary else "regression"
        mu0, mu1 = self._train_pair(parts, (values[~treated], values[treated]), objective)
        self.__dict__.pop("_explainers", None)
        self.schema_, self.binary_ = schema, binary
        self.mu0_, self.mu1_ = mu0, mu1
        self.treated_share_ = float(treated.mean())
        self.n_treated_, self.n_control_ = int(treated.sum()), int((~treated).sum())
        return self

    def predict_uplift(self, X: pd.DataFrame, source: str = "input") -> Array:
        """``mu_1(x) - mu_0(x)`` for every row (a difference of probabilities when binary)."""
        X = _frame(X)
        codes = self.schema_.codes(X, source)
        return self._mu(self.mu1_, codes) - self._mu(self.mu0_, codes)

    def contributions(self, X: pd.DataFrame, source: str = "input") -> tuple[Array, Array]:
        """Per-feature contributions (rows x ``schema_.columns``) and the base; their sum is
        the uplift (module docstring)."""
        X = _frame(X)
        codes = self.schema_.codes(X, source)
        c1, b1 = self._explain(self.mu1_, codes)
        c0, b0 = self._explain(self.mu0_, codes)
        if self.binary_:
            c1, b1 = _probability_contributions(c1, b1)
            c0, b0 = _probability_contributions(c0, b0)
        return c1 - c0, b1 - b0


class XLearner(_MetaLearner):
    """The X-learner, ``tau(x) = g(x) tau_0(x) + (1 - g(x)) tau_1(x)`` (module docstring).

    Parameters
    ----------
    propensity : "share", "logistic" or a number in (0, 1)
        The weight ``g``: "share" the treated share of the training customers (a randomised
        campaign, the default); a number the known share of the design; "logistic" a logistic
        regression of the treatment on the features (clipped to [0.01, 0.99]), for a log whose
        assignment depended on the customers.
    Other parameters as :class:`TLearner`.

    Learnt: as :class:`TLearner`, plus ``tau0_``, ``tau1_`` (boosters) and
    ``propensity_coef_`` (the logistic regression's intercept and coefficients on
    ``schema_.design``, or None).
    """

    kind = "x-learner"
    boosters = ("mu0_", "mu1_", "tau0_", "tau1_")
    learnt = (*_MetaLearner.learnt, "propensity_coef_")

    def __init__(
        self,
        *,
        propensity: str | float = "share",
        outcome: str = "auto",
        rounds: int = 100,
        learning_rate: float = 0.1,
        num_leaves: int = 8,
        max_depth: int = 3,
        min_data_in_leaf: int = 100,
        lambda_l2: float = 1.0,
        seed: int = 0,
        threads: int | None = None,
    ) -> None:
        super().__init__(
            outcome=outcome,
            rounds=rounds,
            learning_rate=learning_rate,
            num_leaves=num_leaves,
            max_depth=max_depth,
            min_data_in_leaf=min_data_in_leaf,
            lambda_l2=lambda_l2,
            seed=seed,
            threads=threads,
        )
        self.propensity = propensity

    def _check_propensity(self) -> None:
        p = self.propensity
        if isinstance(p, str):
            if p not in ("share", "logistic"):
                raise CustvalError(
                    f"unknown propensity '{p}'",
                    hint="Use share, logistic or the treated share as a number",
                )
        elif not 0.0 < float(p) < 1.0:
            raise CustvalError(
                f"the propensity {p} is not a share between 0 and 1 (exclusive)",
                hint="Give the campaign's treated share, e.g. 0.8",
            )

    def fit(self, X: Any, treatment: Any, y: Any, *, source: str | None = None) -> Self:
        self._check_propensity()
        frame, treated, values, binary = self._prepare(X, treatment, y, source)
        schema = infer_schema(frame)
        codes = schema.codes(frame)
        parts = self._groups(schema, codes, treated, values)
        objective = "binary" if binary else "regression"
        # stage 1: the response functions, each on its own group
        mu0, mu1 = self._train_pair(parts, (values[~treated], values[treated]), objective)
        # stage 2: imputed effects, each group's outcome against the other group's model
        d0 = self._mu(mu1, codes[~treated]) - values[~treated]
        d1 = values[treated] - self._mu(mu0, codes[treated])
        tau0, tau1 = self._train_pair(parts, (d0, d1), "regression")
        coef = None
        if self.propensity == "logistic":
            from sklearn.linear_model import LogisticRegression

            model = LogisticRegression(max_iter=1000, random_state=self.seed)
            model.fit(schema.design(frame), treated)
            # kept as numbers: the model's file is JSON, and g(x) is one dot product
            coef = [float(model.intercept_[0]), *map(float, model.coef_[0])]
        self.__dict__.pop("_explainers", None)
        self.schema_, self.binary_ = schema, binary
        self.mu0_, self.mu1_, self.tau0_, self.tau1_ = mu0, mu1, tau0, tau1
        self.propensity_coef_ = coef
        self.treated_share_ = float(treated.mean())
        self.n_treated_, self.n_control_ = int(treated.sum()), int((~treated).sum())
        return self

    def weight(self, X: pd.DataFrame, source: str = "input") -> Array:
        """``g(x)``, the weight of ``tau_0`` for every row."""
        X = _frame(X)
        if self.propensity_coef_ is not None:
            coef = np.asarray(self.propensity_coef_)
            g = expit(coef[0] + self.schema_.design(X, source) @ coef[1:])
            return np.clip(g, *PROPENSITY_CLIP)
        share = self.treated_share_ if self.propensity == "share" else float(self.propensity)
        return np.full(len(X), share)

    def predict_uplift(self, X: pd.DataFrame, source: str = "input") -> Array:
        """``g(x) tau_0(x) + (1 - g(x)) tau_1(x)`` for every row."""
        X = _frame(X)
        codes = self.schema_.codes(X, source)
        g = self.weight(X, source)
        return g * self._mu(self.tau0_, codes) + (1.0 - g) * self._mu(self.tau1_, codes)

    def contributions(self, X: pd.DataFrame, source: str = "input") -> tuple[Array, Array]:
        """Per-feature contributions (rows x ``schema_.columns``) and the base, the weighted
        TreeSHAP values of ``tau_0`` and ``tau_1``; their sum is the uplift."""
        X = _frame(X)
        codes = self.schema_.codes(X, source)
        g = self.weight(X, source)
        c0, b0 = self._explain(self.tau0_, codes)
        c1, b1 = self._explain(self.tau1_, codes)
        return g[:, None] * c0 + (1.0 - g)[:, None] * c1, g * b0 + (1.0 - g) * b1


# ---- evaluation ---------------------------------------------------------------------------


def _experiment(uplift: Any, treatment: Any, y: Any) -> tuple[Array, Bools, Array]:
    """The held-out customers' arrays, checked."""
    u = np.asarray(uplift, dtype=np.float64).ravel()
    treated = treatment_indicator(np.asarray(treatment).ravel())
    values = np.asarray(y).ravel()
    _check_experiment(u.size, treated, values, None)
    outcome = _as_outcome(values, None)
    if not np.isfinite(u).all():
        bad = int((~np.isfinite(u)).sum())
        raise CustvalError(f"{bad} predicted uplifts are not numbers", column="uplift", count=bad)
    return u, treated, outcome


def _cumulative(u: Array, treated: Bools, y: Array) -> dict[str, Array]:
    """Counts and outcome sums of each group among the top k customers, k = 0..n, by
    descending uplift; ``end`` marks the k at which a group of tied uplifts ends."""
    order = np.argsort(-u, kind="stable")
    t = treated[order].astype(np.float64)
    ys = y[order]
    zero = np.zeros(1)
    n_t = np.concatenate([zero, np.cumsum(t)])
    k = np.arange(u.size + 1, dtype=np.float64)
    s = u[order]
    end = np.concatenate([[True], s[1:] != s[:-1], [True]])
    return {
        "k": k,
        "n_t": n_t,
        "n_c": k - n_t,
        "y_t": np.concatenate([zero, np.cumsum(ys * t)]),
        "y_c": np.concatenate([zero, np.cumsum(ys * (1.0 - t))]),
        "end": end,
    }


def _fill(values: Array, c: dict[str, Array]) -> Array:
    """Linear interpolation over the points that are undefined (a group still empty) or
    inside a group of tied uplifts, whose order among themselves means nothing."""
    known = c["end"] & np.isfinite(values)
    known[0] = True
    return np.interp(c["k"], c["k"][known], values[known])


def _qini_points(c: dict[str, Array]) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        q = c["y_t"] - c["y_c"] * c["n_t"] / c["n_c"]
    q[0] = 0.0
    return _fill(q, c)


def _gain_points(c: dict[str, Array]) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        g = c["k"] * (c["y_t"] / c["n_t"] - c["y_c"] / c["n_c"])
    g[0] = 0.0
    return _fill(g, c)


def qini_curve(uplift: Any, treatment: Any, y: Any, *, points: int | None = None) -> pd.DataFrame:
    """Radcliffe's (2007) Qini curve of a ranking, on held-out customers of a campaign.

    Customers are sorted by predicted uplift, highest first. Among the first ``k``,
    ``N_T(k)`` and ``N_C(k)`` are the treated and control counts and ``Y_T(k)``, ``Y_C(k)``
    the sums of their outcomes. The curve is the incremental outcome among the treated of the
    top ``k``,

        Q(k) = Y_T(k) - Y_C(k) N_T(k) / N_C(k),    Q(0) = 0,

    and a random ranking's is the straight line ``R(k) = (k / n) Q(n)``. Where ``Q`` is
    undefined (no control customer yet) or inside a group of tied predictions, it is
    interpolated linearly (causalml interpolates the first the same way and breaks ties by
    sort order; on predictions without ties the curves are identical).

    Columns: ``customers`` (k), ``share`` (k / n), ``qini`` (Q(k)), ``random`` (R(k)) and
    ``gain``, the cumulative gain ``G(k) = k (Y_T(k) / N_T(k) - Y_C(k) / N_C(k))`` of
    :func:`auuc`. ``points`` keeps that many evenly spaced rows (for a chart), else all n + 1.
    """
    u, treated, outcome = _experiment(uplift, treatment, y)
    c = _cumulative(u, treated, outcome)
    q = _qini_points(c)
    out = pd.DataFrame(
        {
            "customers": c["k"].astype(np.int64),
            "share": c["k"] / u.size,
            "qini": q,
            "random": c["k"] / u.size * q[-1],
            "gain": _gain_points(c),
        }
    )
    if points is not None and points < len(out):
        keep = np.unique(np.round(np.linspace(0, u.size, max(points, 2))).astype(np.int64))
        out = out.iloc[keep].reset_index(drop=True)
    return out


def _normaliser(last: float, what: str) -> float:
    if last == 0.0:
        raise CustvalError(
            f"the treated and control groups have the same outcome overall: the {what} "
            "normalised by the total uplift is undefined",
            hint="Use normalize=False for the curve's area in outcome units",
        )
    return abs(last)


def qini_coefficient(uplift: Any, treatment: Any, y: Any, *, normalize: bool = True) -> float:
    """The area between the Qini curve and the random line, per customer: causalml's
    ``qini_score`` (``normalize=True``, its default), to floating point on tie-free scores.

        q = 1 / (n + 1) * sum over k = 0..n of (Q(k) - R(k)) / |Q(n)|

    (:func:`qini_curve` defines Q and R). 0 for a random ranking; positive when the customers
    an offer changes come first; in units of the total incremental outcome ``|Q(n)|``, so that
    campaigns of different size and response compare. Radcliffe's (2007) own Qini coefficient
    divides the same area by the optimal ranking's instead, which needs the true effects: it is
    ``q / q*`` with ``q*`` this number for the perfect ranking. ``normalize=False`` leaves out
    the division by ``|Q(n)|`` (outcome units).
    """
    u, treated, outcome = _experiment(uplift, treatment, y)
    q = _qini_points(_cumulative(u, treated, outcome))
    random = np.linspace(0.0, q[-1], q.size)
    area = float(np.mean(q - random))
    return area / _normaliser(float(q[-1]), "Qini coefficient") if normalize else area


def auuc(uplift: Any, treatment: Any, y: Any, *, normalize: bool = True) -> float:
    """Area under the uplift (cumulative gain) curve: causalml's ``auuc_score``
    (``normalize=True``).

        a = 1 / (n + 1) * sum over k = 0..n of G(k) / |G(n)|,
        G(k) = k (Y_T(k) / N_T(k) - Y_C(k) / N_C(k))

    (undefined points interpolated as in :func:`qini_curve`). About 0.5 for a random ranking
    when the overall uplift is positive; higher is better. Unlike the Qini curve, ``G`` scales
    each group's mean by ``k``, so it does not depend on the groups' sizes in the top k.
    """
    u, treated, outcome = _experiment(uplift, treatment, y)
    g = _gain_points(_cumulative(u, treated, outcome))
    area = float(np.mean(g))
    return area / _normaliser(float(g[-1]), "AUUC") if normalize else area


def uplift_at_k(uplift: Any, treatment: Any, y: Any, k: float = 0.1) -> float:
    """The observed uplift among the share ``k`` of customers with the highest predicted
    uplift: the treated's mean outcome minus the controls' (ties at the cut in input order).
    """
    if not 0.0 < k <= 1.0:
        raise CustvalError(f"k must be a share in (0, 1], not {k}", hint="e.g. 0.1 for 10%")
    u, treated, outcome = _experiment(uplift, treatment, y)
    top = np.argsort(-u, kind="stable")[: max(1, math.ceil(k * u.size))]
    t = treated[top]
    if t.all() or not t.any():
        group = "control" if t.all() else "treated"
        raise CustvalError(
            f"the top {k:.0%} ({top.size:,} customers) holds no {group} customers: its uplift "
            "cannot be measured",
            hint="Use a larger k or more held-out customers",
        )
    return float(outcome[top][t].mean() - outcome[top][~t].mean())


# ---- targeting ----------------------------------------------------------------------------

#: the columns of a targeting list, both methods alike (a store table can keep either)
TARGET_COLUMNS = (
    "customer_id",
    "uplift",
    "value",
    "cost",
    "expected_profit",
    "p_churn",
    "value_at_risk",
    "rank",
    "contact",
    "reason",
    "method",
)


@dataclass
class TargetList:
    """Whom to contact and why.

    ``table`` has one row per customer, best first, with the columns of ``TARGET_COLUMNS``:
    ``customer_id``, ``uplift`` (the predicted effect on retention; NaN for the heuristic),
    ``value`` (CLV), ``cost`` (of one contact), ``expected_profit`` (uplift x value - cost; NaN
    for the heuristic), ``p_churn`` and ``value_at_risk`` (CLV x P(churn); NaN when the uplift
    list was given no churn probabilities), ``rank`` (1 = first), ``contact`` (bool),
    ``reason`` (the rule and the numbers) and ``method`` ("uplift" or "heuristic"). The other
    fields sum it up: the budget, what the chosen contacts cost, how many, their expected
    incremental profit (None for the heuristic), a note in plain words, and for the heuristic
    the control-group size suggested for the next campaign.
    """

    table: pd.DataFrame
    method: str
    budget: float | None
    spent: float
    contacted: int
    expected_profit: float | None
    note: str
    control_group: int | None = None


def _targeting_inputs(
    score: Any,
    value: Any,
    cost: Any,
    budget: float | None,
    customer_id: Any,
    names: tuple[str, str],
) -> tuple[Array, Array, Array, Any]:
    s = np.asarray(score, dtype=np.float64).ravel()
    v = np.asarray(value, dtype=np.float64).ravel()
    c = np.broadcast_to(np.asarray(cost, dtype=np.float64), s.shape).astype(np.float64)
    ids = np.arange(s.size) if customer_id is None else np.asarray(customer_id).ravel()
    sizes = {names[0]: s.size, names[1]: v.size, "cost": c.size, "customer_id": ids.size}
    if len(set(sizes.values())) > 1:
        said = ", ".join(f"{k} {n:,}" for k, n in sizes.items())
        raise CustvalError(f"the rows do not match ({said})", hint="Give one row per customer")
    for name, arr in ((names[0], s), (names[1], v), ("cost", c)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise CustvalError(
                f"{bad.size} customers have no {name}",
                column=name,
                count=int(bad.size),
                examples=[{"customer_id": ids[i]} for i in bad[:5]],
                hint=f"Give every customer a {name}, or leave them out",
            )
    if (c < 0).any():
        raise CustvalError("a contact cannot cost less than 0", column="cost")
    if budget is not None:
        total = float(c.sum())
        if not budget >= 0:
            raise CustvalError(f"the budget {budget} is not an amount of 0 or more")
        if budget > total:
            raise CustvalError(
                f"the budget {budget:,.2f} is larger than the base: contacting every one of "
                f"the {s.size:,} customers costs {total:,.2f}",
                hint=f"Give a budget of at most {total:,.2f}, or none to contact every "
                "customer the rule picks",
            )
    return s, v, c, ids


def _within_budget(cost: Array, eligible: Bools, budget: float | None) -> Bools:
    """In ranking order: the eligible customers (a prefix of the order) whose cumulative cost
    stays within the budget. Nobody is contacted before someone ranked higher."""
    if budget is None:
        return eligible.copy()
    spent = np.cumsum(np.where(eligible, cost, 0.0))
    # a relative tolerance, so that a budget of exactly the total is never missed by rounding
    return eligible & (spent <= budget * (1 + 1e-12) + 1e-9)


def _join(*parts: Any) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _probabilities(values: Any, n: int) -> Array:
    p = np.asarray(values, dtype=np.float64).ravel()
    if p.size != n:
        raise CustvalError(f"the rows do not match (customers {n:,}, p_churn {p.size:,})")
    bad = ~((p >= 0) & (p <= 1))
    if bad.any():
        raise CustvalError(
            f"{int(bad.sum())} churn probabilities are not between 0 and 1",
            column="p_churn",
            count=int(bad.sum()),
        )
    return p


def _target_table(
    ids: Any,
    uplift: Array,
    value: Array,
    cost: Array,
    profit: Array,
    p_churn: Array,
    order: npt.NDArray[np.int64],
    contact: Bools,
) -> pd.DataFrame:
    """The columns of ``TARGET_COLUMNS`` up to ``contact``, in ranking order."""
    return pd.DataFrame(
        {
            "customer_id": ids[order],
            "uplift": uplift[order],
            "value": value[order],
            "cost": cost[order],
            "expected_profit": profit[order],
            "p_churn": p_churn[order],
            "value_at_risk": (p_churn * value)[order],
            "rank": np.arange(1, order.size + 1),
            "contact": contact,
        }
    )


def _finish(table: pd.DataFrame, rule: pa.Array, verdict: Any, method: str) -> None:
    """The reason (the rule's numbers, then the verdict) and the method, in place."""
    reason = _join(rule, pa.array(verdict, pa.string()))
    table["reason"] = pd.array(reason, dtype=pd.StringDtype("pyarrow"))
    table["method"] = method


def choose_targets(
    uplift: Any,
    value: Any,
    cost: Any,
    budget: float | None = None,
    *,
    customer_id: Any = None,
    p_churn: Any = None,
) -> TargetList:
    """Contact customer i when ``uplift_i x value_i - cost_i > 0`` (the expected incremental
    profit of the contact; Lemmens & Gupta 2020), highest expected profit first, for as long
    as the total cost stays within ``budget`` (None: every profitable customer).

    The chosen customers are a prefix of the ranking: once a contact no longer fits, nobody
    ranked below it is contacted, even a cheaper one, so a customer is never passed over for
    one with a lower expected profit. A budget larger than the cost of contacting the whole
    base is an error naming both numbers; one that exceeds the cost of the profitable
    customers alone is spent only on them, and the note says how much is left and why.
    ``cost`` is one number or one per customer; ``value`` is the customer's value at stake
    (CLV) in the unit of ``cost``. ``p_churn``, when given, is only shown beside (with the
    value at risk), to show how far the choice is from ranking by risk.
    """
    u, v, c, ids = _targeting_inputs(uplift, value, cost, budget, customer_id, ("uplift", "value"))
    profit = u * v - c
    order = np.argsort(-profit, kind="stable")
    profitable = profit[order] > 0
    contact = _within_budget(c[order], profitable, budget)
    churn = np.full(u.size, np.nan) if p_churn is None else _probabilities(p_churn, u.size)
    table = _target_table(ids, u, v, c, profit, churn, order, contact)
    rule = _join(
        "uplift ",
        numbers_as_text(table["uplift"].to_numpy()),
        " x value ",
        numbers_as_text(table["value"].to_numpy()),
        " - cost ",
        numbers_as_text(table["cost"].to_numpy()),
        " = ",
        numbers_as_text(table["expected_profit"].to_numpy()),
    )
    verdict = np.where(
        contact,
        ": expected incremental profit, contact",
        np.where(
            profitable,
            ": profitable, but the budget goes to customers with a higher expected profit",
            ": not above 0, an offer is expected to lose money",
        ),
    )
    _finish(table, rule, verdict, "uplift")
    spent = float(c[order][contact].sum())
    gain = float(profit[order][contact].sum())
    note = (
        f"{int(contact.sum()):,} of {u.size:,} customers contacted for {spent:,.2f}, "
        f"expected incremental profit {gain:,.2f} (uplift x value - cost, highest first)"
    )
    all_profitable = float(c[order][profitable].sum())
    if budget is not None and budget > all_profitable:
        note += (
            f"; the budget exceeds the cost of contacting every profitable customer "
            f"({all_profitable:,.2f}): {budget - spent:,.2f} is left unspent, since every "
            "further contact is expected to lose money"
        )
    return TargetList(table, "uplift", budget, spent, int(contact.sum()), gain, note)


def heuristic_targets(
    p_churn: Any,
    clv: Any,
    cost: Any,
    budget: float | None = None,
    *,
    customer_id: Any = None,
    uplift_to_detect: float = 0.05,
    power: float = 0.8,
    alpha: float = 0.05,
) -> TargetList:
    """Without a treatment log: rank by the value at risk, ``CLV x P(churn)``, a heuristic.

    With no experiment the effect of an offer is unknown: the value at risk is what a customer
    who leaves takes away, not what an offer wins back, and the customers most at risk are
    often those an offer changes least (Ascarza 2018, "Retention futility"). So the list says
    it is a heuristic and why, and suggests the control group that the next campaign should
    hold out (:func:`control_group_size`, to detect an uplift of ``uplift_to_detect`` in
    retention with the given power and significance, at the base's mean churn probability).

    Contact rule: highest value at risk first, within ``budget``; customers whose value at
    risk does not exceed the cost are never contacted, since even an offer that kept every
    one of them would not pay for itself.
    """
    p, v, c, ids = _targeting_inputs(p_churn, clv, cost, budget, customer_id, ("p_churn", "clv"))
    p = _probabilities(p, p.size)
    risk = p * v
    order = np.argsort(-risk, kind="stable")
    worth = risk[order] > c[order]
    contact = _within_budget(c[order], worth, budget)
    unknown = np.full(p.size, np.nan)
    table = _target_table(ids, unknown, v, c, unknown, p, order, contact)
    rule = _join(
        "heuristic: P(churn) ",
        numbers_as_text(p[order]),
        " x CLV ",
        numbers_as_text(v[order]),
        " = value at risk ",
        numbers_as_text(risk[order]),
    )
    verdict = np.where(
        contact,
        "; contact (no experiment: the effect of an offer is unknown)",
        np.where(worth, "; beyond the budget", "; not above the cost of a contact"),
    )
    _finish(table, rule, verdict, "heuristic")
    spent = float(c[order][contact].sum())
    note = (
        "heuristic: no experiment, so the effect of an offer is unknown; customers are ranked "
        "by CLV x P(churn), the value at risk, which is not what an offer wins back"
    )
    # an offer cannot lower churn below 0: with little churn, half of it is the effect sought
    churn = float(p.mean())
    effect = min(uplift_to_detect, churn / 2)
    size = None
    if effect > 0:
        size = control_group_size(1.0 - churn, effect, power, alpha)
        note += (
            f". Next campaign: hold out a random control group of at least {size:,} customers "
            f"(and treat as many) to detect an uplift of {100 * effect:.1f} points in retention "
            f"with {power:.0%} power at {alpha:.0%} significance; then custval targets by uplift"
        )
    return TargetList(table, "heuristic", budget, spent, int(contact.sum()), None, note, size)


def control_group_size(
    base_rate: float,
    uplift: float = 0.05,
    power: float = 0.8,
    alpha: float = 0.05,
    *,
    treated_per_control: float = 1.0,
) -> int:
    """The control-group size at which a two-sided two-proportion z-test at significance
    ``alpha`` detects an uplift of ``uplift`` on a base rate ``base_rate`` with probability
    ``power`` (the usual normal approximation, with the pooled rate under the null hypothesis
    and unequal groups allowed):

        n_C = ( z_(1-alpha/2) sqrt(p_bar (1 - p_bar) (1 + 1/r))
                + z_(power) sqrt(p_1 (1 - p_1) + p_2 (1 - p_2) / r) )^2 / (p_2 - p_1)^2

    with ``p_1 = base_rate`` (the control group's rate, e.g. retention), ``p_2 = p_1 + uplift``,
    ``r = treated_per_control`` (treated customers per control) and
    ``p_bar = (p_1 + r p_2) / (1 + r)``. The treated group needs ``r n_C``. Rounded up.

    Example
    -------
    >>> control_group_size(0.80, 0.05)
    906
    """
    p1, p2, r = float(base_rate), float(base_rate) + float(uplift), float(treated_per_control)
    if not (0.0 < p1 < 1.0 and 0.0 < p2 < 1.0):
        raise CustvalError(
            f"a base rate of {p1:g} and an uplift of {uplift:g} are not two rates between 0 and 1",
            hint="Give the control group's expected rate (e.g. 0.8 retained) and the effect",
        )
    if uplift == 0 or not (0 < power < 1 and 0 < alpha < 1 and r > 0):
        raise CustvalError(
            "the uplift must not be 0, power and alpha must be in (0, 1), and the ratio > 0"
        )
    p_bar = (p1 + r * p2) / (1.0 + r)
    z_a, z_b = ndtri(1.0 - alpha / 2.0), ndtri(power)  # standard normal quantiles
    root = z_a * math.sqrt(p_bar * (1 - p_bar) * (1 + 1 / r)) + z_b * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2) / r
    )
    return math.ceil(root**2 / (p2 - p1) ** 2)
