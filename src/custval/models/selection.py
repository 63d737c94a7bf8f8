"""Which generated features to keep: the ones that help a value model predict, by evidence.

:class:`FeatureSelector` takes a training table, its labels, the features always kept (the
hand-built ones) and the candidates (the generated ones), and keeps candidates in four steps,
each recorded with its reason for every feature it drops:

1. **near-constant**: a candidate whose most frequent value (missing counted as a value) covers
   at least ``near_constant`` of the rows says nothing;
2. **correlated**: of two candidates with ``|correlation| > max_correlation`` (Pearson, on the
   numeric ones, on at most ``sample_rows`` rows) the one ranked lower in step 3 goes;
3. **ranked against noise**: LightGBM's gain importance in each of ``folds`` cross-validation
   folds, with the features always kept; the same models fitted to permuted labels give the
   gain that noise earns. A candidate stays in the running when its gain beats the largest
   noise gain of any candidate in every fold (importance that holds in every fold, not a lucky
   split);
4. **forward, in blocks**: the survivors, best first, in blocks of ``block``; a block is added
   when it raises the cross-validated ROC AUC by at least ``min_gain`` over the features kept
   so far, and selection stops at the first block that does not.

The model is a small LightGBM (the value model's settings), the folds stratified and seeded:
the same data give the same choice. Learned state: ``kept_`` (always kept + chosen),
``chosen_``, ``dropped_`` (feature: reason), ``steps_`` (each block's ROC AUC), ``base_auc_``
and ``auc_``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from custval.errors import CustvalError
from custval.models.candidates import LightGBM
from custval.models.encoding import infer_schema

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Step:
    """One block tried in the forward step: its features, the ROC AUC with them, kept or not."""

    features: tuple[str, ...]
    auc: float
    kept: bool


class FeatureSelector:
    """Keep the candidate features that improve a cross-validated ROC AUC (module docstring)."""

    def __init__(
        self,
        *,
        near_constant: float = 0.99,
        max_correlation: float = 0.95,
        folds: int = 3,
        block: int = 10,
        min_gain: float = 0.0005,
        rounds: int = 100,
        sample_rows: int = 200_000,
        seed: int = 0,
        threads: int = 2,
    ) -> None:
        self.near_constant = near_constant
        self.max_correlation = max_correlation
        self.folds = folds
        self.block = block
        self.min_gain = min_gain
        self.rounds = rounds
        self.sample_rows = sample_rows
        self.seed = seed
        self.threads = threads

    # ---- fitting --------------------------------------------------------------------------

    def fit(self, X: pd.DataFrame, y: Any, base: list[str], candidates: list[str]) -> Self:
        """Choose among ``candidates`` (columns of ``X``) given the ``base`` features and the
        0/1 labels ``y``."""
        labels = np.asarray(y, dtype=np.float64)
        self._check(X, labels, base, candidates)
        dropped: dict[str, str] = {}
        varied = self._varied(X, candidates, dropped)
        gains, noise = self._gains(X, labels, base, varied)
        ranked = sorted(varied, key=lambda c: -float(np.min(gains[c])))
        uncorrelated = self._uncorrelated(X, ranked, dropped)
        beating = []
        for c in uncorrelated:
            if np.all(gains[c] > noise):
                beating.append(c)
            else:
                dropped[c] = "gain below the permuted-label baseline in a fold"
        chosen, steps, base_auc, auc = self._forward(X, labels, base, beating, dropped)
        self.chosen_ = chosen
        self.kept_ = [*base, *chosen]
        self.dropped_ = dropped
        self.steps_ = steps
        self.base_auc_ = base_auc
        self.auc_ = auc
        self.noise_gain_ = [float(v) for v in noise]
        return self

    def _check(self, X: pd.DataFrame, y: Array, base: list[str], candidates: list[str]) -> None:
        missing = [c for c in [*base, *candidates] if c not in X.columns]
        if missing:
            raise CustvalError(
                f"the training table lacks {len(missing)} feature columns: "
                + ", ".join(missing[:5]),
                column=missing[0],
            )
        positives = int(y.sum())
        if min(positives, y.size - positives) < 5 * self.folds:
            raise CustvalError(
                f"feature selection needs at least {5 * self.folds} customers of each class "
                f"for {self.folds} folds ({positives} of {y.size} are positive)",
                hint="Train on more customers, or without --auto-features",
            )

    def _varied(self, X: pd.DataFrame, candidates: list[str], dropped: dict[str, str]) -> list[str]:
        """The candidates whose most frequent value covers less than ``near_constant``."""
        kept = []
        for c in candidates:
            top = X[c].value_counts(dropna=False, normalize=True).iloc[0] if len(X) else 1.0
            if top >= self.near_constant:
                dropped[c] = f"near-constant: one value in {top:.1%} of the rows"
            else:
                kept.append(c)
        return kept

    def _uncorrelated(
        self, X: pd.DataFrame, ranked: list[str], dropped: dict[str, str]
    ) -> list[str]:
        """``ranked`` without each numeric candidate correlated beyond ``max_correlation``
        with a better-ranked one."""
        rows = X.sample(n=min(len(X), self.sample_rows), random_state=self.seed)
        numeric = [c for c in ranked if pd.api.types.is_numeric_dtype(rows[c])]
        values = rows[numeric].astype(np.float64)
        values = values.fillna(values.median()).to_numpy()
        centred = values - values.mean(axis=0)
        scale = np.sqrt((centred**2).sum(axis=0))
        scale[scale == 0] = np.inf
        corr = (centred.T @ centred) / np.outer(scale, scale)
        position = {c: k for k, c in enumerate(numeric)}
        kept: list[str] = []
        for c in ranked:
            if c in position:
                twin = next(
                    (
                        k
                        for k in kept
                        if k in position
                        and abs(corr[position[c], position[k]]) > self.max_correlation
                    ),
                    None,
                )
                if twin is not None:
                    dropped[c] = f"correlated with {twin} (|r| > {self.max_correlation})"
                    continue
            kept.append(c)
        return kept

    # ---- the model ------------------------------------------------------------------------

    def _splits(self, y: Array) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
        from sklearn.model_selection import StratifiedKFold

        folds = StratifiedKFold(self.folds, shuffle=True, random_state=self.seed)
        return list(folds.split(np.zeros(y.size), y))

    def _boost(self, X: pd.DataFrame, y: Array, columns: list[str], rows: Any) -> tuple[Any, Any]:
        import lightgbm as lgb

        schema = infer_schema(X[columns].iloc[rows])
        codes = schema.codes(X.iloc[rows])
        cats = list(range(len(schema.numeric), len(schema.columns)))
        data = lgb.Dataset(codes, label=y[rows], categorical_feature=cats, free_raw_data=True)
        # the value model's settings (shallow trees), a fixed number of them
        params = LightGBM(self.seed, self.threads).params()
        return lgb.train(params, data, num_boost_round=self.rounds), schema

    def _gains(
        self, X: pd.DataFrame, y: Array, base: list[str], candidates: list[str]
    ) -> tuple[dict[str, Array], Array]:
        """Each candidate's gain per fold, and per fold the largest gain of any candidate on
        permuted labels."""
        splits = self._splits(y)
        permuted = np.random.default_rng(self.seed).permutation(y)
        gains = {c: np.zeros(len(splits)) for c in candidates}
        noise = np.zeros(len(splits))
        for k, (train, _) in enumerate(splits):
            for labels, into in ((y, gains), (permuted, None)):
                model, schema = self._boost(X, labels, [*base, *candidates], train)
                found = dict(zip(schema.columns, model.feature_importance("gain"), strict=True))
                if into is None:
                    noise[k] = max((found[c] for c in candidates), default=0.0)
                else:
                    for c in candidates:
                        into[c][k] = found[c]
        return gains, noise

    def _auc(self, X: pd.DataFrame, y: Array, columns: list[str]) -> float:
        from sklearn.metrics import roc_auc_score

        scores = np.zeros(y.size)
        for train, test in self._splits(y):
            model, schema = self._boost(X, y, columns, train)
            scores[test] = model.predict(schema.codes(X.iloc[test]), raw_score=True)
        return float(roc_auc_score(y, scores))

    def _forward(
        self, X: pd.DataFrame, y: Array, base: list[str], ranked: list[str], dropped: dict[str, str]
    ) -> tuple[list[str], list[Step], float, float]:
        base_auc = self._auc(X, y, base)
        chosen: list[str] = []
        steps: list[Step] = []
        best = base_auc
        blocks = [ranked[i : i + self.block] for i in range(0, len(ranked), self.block)]
        for n, block in enumerate(blocks):
            auc = self._auc(X, y, [*base, *chosen, *block])
            kept = auc >= best + self.min_gain
            steps.append(Step(tuple(block), auc, kept))
            if not kept:
                for rest in blocks[n:]:
                    for c in rest:
                        dropped[c] = "its block did not raise the cross-validated ROC AUC"
                break
            chosen += block
            best = auc
        return chosen, steps, base_auc, best

    # ---- the record -----------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        """What was chosen and why, for the model bundle."""
        if not hasattr(self, "kept_"):
            raise CustvalError("the feature selection is not determined: call fit first")
        return {
            "chosen": list(self.chosen_),
            "dropped": dict(self.dropped_),
            "steps": [
                {"features": list(s.features), "roc_auc": s.auc, "kept": s.kept}
                for s in self.steps_
            ],
            "base_roc_auc": self.base_auc_,
            "roc_auc": self.auc_,
            "noise_gain": self.noise_gain_,
            "settings": {
                "near_constant": self.near_constant,
                "max_correlation": self.max_correlation,
                "folds": self.folds,
                "block": self.block,
                "min_gain": self.min_gain,
                "seed": self.seed,
            },
        }
