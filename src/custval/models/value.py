"""The high/low value classifier: label, candidate models, honest selection, calibration check.

:class:`ValueClassifier` takes a customer table (one row per customer, any feature columns, text
or numeric, in any order) and a binary label, and

1. cross-validates every candidate of :mod:`custval.models.candidates` (logistic regression,
   LightGBM, random forest, a small neural network, simplest first) on the same stratified k
   folds (or folds the caller gives, ``groups``); for labels derived from a later period, a
   time-based split too (``earlier``): each candidate trained one period earlier and scored
   on this one;
2. scores each on the out-of-fold predictions: ROC AUC, PR AUC (average precision), log-loss,
   Brier score and the lift in the top decile (share of positives among the 10% highest scores
   over the overall share), and keeps the per-fold mean and standard deviation as the
   ``leaderboard_``;
3. chooses the candidate with the best ROC AUC (forward in time when there is a time split,
   else the cross-validated mean); a candidate within one standard error of it that is simpler
   (the order above) is preferred, the usual one-standard-error rule;
4. refits the chosen one on all rows; checks its probabilities on the out-of-fold predictions
   with a reliability table (``reliability_``: per decile of predicted probability, the mean
   prediction and the observed share) and the expected calibration error;
5. sets the decision threshold by a stated rule: ``"top_share"`` (the ``top_share`` of customers
   with the highest probability are "high", default 20%) or ``"best_f1"`` (the out-of-fold
   threshold with the best F1).

With more than ``max_selection_rows`` rows the candidates are compared on a stratified random
sample of that many rows (the leaderboard says so) and the chosen one is refitted on all rows:
comparing a random forest and a neural network on a million rows five times over would take
hours for no better choice.

Example
-------
>>> clf = ValueClassifier(folds=5).fit(features, labels)  # doctest: +SKIP
>>> clf.leaderboard_  # doctest: +SKIP
>>> clf.predict_proba(new_customers)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from custval.errors import CustvalError, FitError
from custval.models.base import Estimator
from custval.models.candidates import CANDIDATES, Candidate, make_candidate
from custval.models.encoding import FeatureSchema, infer_schema

__all__ = [
    "ValueClassifier",
    "binary_label",
    "classification_metrics",
    "derive_value_label",
    "label_classes",
]

Array = npt.NDArray[np.float64]

MIN_ROWS = 50
# label cells that mean "no label" rather than a class
_MISSING = {"", "na", "n/a", "nan", "null", "none", "<na>"}
_POSITIVE = {"yes", "y", "true", "t", "1", "high", "positive", "pos"}
_NEGATIVE = {"no", "n", "false", "f", "0", "low", "negative", "neg"}
METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "lift_top_decile")
# higher is better for these; lower for log-loss and Brier
_HIGHER_IS_BETTER = {
    "roc_auc": True,
    "pr_auc": True,
    "log_loss": False,
    "brier": False,
    "lift_top_decile": True,
}


def binary_label(values: Any, positive: Any = None, *, column: str = "label") -> Array:
    """A label column as 0/1 floats.

    ``positive`` names the value that means "high" (or churn, or yes); without it, a column with
    two values is read when they are yes/no, true/false, 1/0 or high/low (any case). Missing
    labels are an error naming the rows.

    Example
    -------
    >>> binary_label(["Yes", "No", "yes"]).tolist()
    [1.0, 0.0, 1.0]
    """
    s = pd.Series(values)
    text = s.astype(str).str.strip().str.lower()
    # numbers as text compare as numbers: 1, 1.0 and "1" are one value
    as_number = pd.to_numeric(text, errors="coerce")
    if as_number.notna().all():
        text = as_number.map(lambda v: f"{v:g}")
        number = pd.to_numeric(pd.Series([positive]), errors="coerce").iloc[0]
        if positive is not None and pd.notna(number):
            positive = f"{float(number):g}"
    missing = s.isna() | text.isin(_MISSING)
    if missing.any():
        raise CustvalError(
            f"{int(missing.sum())} row{'s have' if missing.sum() != 1 else ' has'} no label",
            column=column,
            count=int(missing.sum()),
            examples=[{"row": int(i)} for i in np.flatnonzero(missing.to_numpy())[:5]],
            hint="Drop the unlabelled rows or fill them",
        )
    distinct = sorted(set(text))
    if len(distinct) == 1:
        raise FitError(
            f"every row's label is '{distinct[0]}': there is nothing to tell apart",
            column=column,
            hint="A label needs both classes; check the column and the positive value",
        )
    if positive is not None:
        pos = str(positive).strip().lower()
        if pos not in distinct:
            raise CustvalError(
                f"the positive value '{positive}' does not occur in the label",
                column=column,
                hint="Values present: " + ", ".join(distinct[:10]),
            )
        y = (text == pos).to_numpy(dtype=np.float64)
    else:
        if len(distinct) > 2:
            raise CustvalError(
                f"the label has {len(distinct)} values, so it is not binary",
                column=column,
                hint="Name the value meaning high (--positive), e.g. among: "
                + ", ".join(distinct[:10]),
            )
        pos_values = [v for v in distinct if v in _POSITIVE]
        neg_values = [v for v in distinct if v in _NEGATIVE]
        if len(pos_values) != 1 or (len(distinct) == 2 and len(neg_values) != 1):
            raise CustvalError(
                f"cannot tell which label value means high among {', '.join(distinct)}",
                column=column,
                hint="Name it (--positive VALUE)",
            )
        y = (text == pos_values[0]).to_numpy(dtype=np.float64)
    if y.min() == y.max():
        which = "positive" if y[0] == 1 else "negative"
        raise FitError(
            f"every row's label is {which}: there is nothing to tell apart",
            column=column,
            hint="Check the label column and the positive value",
        )
    return y


def label_classes(values: Any, y: Array) -> tuple[str, str]:
    """The label's own words for its two classes, negative then positive, as the table spells
    them (``("No", "Yes")``): the most common spelling among the rows of each class; "not X"
    for a negative class that gathers several values (``--positive`` on a many-valued label).

    Example
    -------
    >>> label_classes(["Yes", "No", "yes"], binary_label(["Yes", "No", "yes"]))
    ('No', 'Yes')
    """
    text = pd.Series(values).astype(str).str.strip()
    yv = np.asarray(y) == 1
    positive = str(text[yv].value_counts().index[0])
    negatives = text[~yv]
    negative = (
        str(negatives.value_counts().index[0])
        if negatives.str.lower().nunique() == 1
        else f"not {positive}"
    )
    return negative, positive


def derive_value_label(value: Any, top_share: float = 0.2) -> Array:
    """1 for the customers in the top ``top_share`` of ``value`` (e.g. spend in the horizon).

    Ties at the cut are all high, so slightly more than ``top_share`` may be; customers with no
    value (0) are never high.
    """
    v = np.asarray(value, dtype=np.float64)
    if not 0 < top_share < 1:
        raise CustvalError(f"top_share must lie between 0 and 1, not {top_share}")
    if v.size < MIN_ROWS:
        raise FitError(f"{v.size} customers are too few for a value label (at least {MIN_ROWS})")
    cut = np.quantile(v, 1 - top_share)
    y = ((v >= cut) & (v > 0)).astype(np.float64)
    if y.min() == y.max():
        raise FitError(
            "the future value does not separate customers (all equal or all zero)",
            hint="Use a longer horizon or another value column",
        )
    return y


def classification_metrics(y: Array, p: Array) -> dict[str, float]:
    """ROC AUC, PR AUC, log-loss, Brier score and top-decile lift of probabilities ``p``."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    clipped = np.clip(p, 1e-12, 1 - 1e-12)
    k = max(1, round(0.1 * y.size))
    top = np.argsort(-p, kind="stable")[:k]
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "lift_top_decile": float(y[top].mean() / y.mean()),
    }


def reliability_table(y: Array, p: Array, bins: int = 10) -> pd.DataFrame:
    """Per decile of predicted probability: customers, mean prediction, observed share."""
    order = np.argsort(p, kind="stable")
    groups = np.array_split(order, bins)
    rows = [
        {
            "bin": i + 1,
            "customers": int(g.size),
            "mean_predicted": float(p[g].mean()),
            "observed": float(y[g].mean()),
        }
        for i, g in enumerate(groups)  # a loop over ten bins
        if g.size
    ]
    return pd.DataFrame(rows)


#: what fit learns: cleared when a fit starts, set together when it succeeds
_LEARNED = (
    "schema_",
    "model_",
    "chosen_",
    "leaderboard_",
    "selection_rows_",
    "oof_metrics_",
    "oof_proba_",
    "reliability_",
    "calibration_error_",
    "refit_seconds_",
    "threshold_",
    "n_customers_",
    "positive_share_",
    "label_name_",
    "class_names_",
)


class ValueClassifier(Estimator):
    """High/low value classifier with model selection (see the module docstring).

    Parameters
    ----------
    candidates:
        Names of the candidate models, in order of simplicity (ties go to the first).
    folds:
        Number of cross-validation folds.
    threshold_rule:
        "top_share" or "best_f1".
    top_share:
        Share of customers called high under "top_share".
    max_selection_rows:
        Above this many rows the candidates are compared on a stratified sample of this size.
    seed:
        Seed of the folds, the sample and the models.
    threads:
        Threads the models may use.
    label_name:
        What the positive class is called in reasons and outputs: "high value" for the derived
        label, the label column's name ("churn") for a labelled table.
    class_names:
        The two classes' words, negative then positive (``("No", "Yes")``).
    """

    #: what the messages call this classifier (a subclass names itself)
    _what: ClassVar[str] = "value classifier"

    def __init__(
        self,
        candidates: tuple[str, ...] = ("logistic", "lightgbm", "random_forest", "mlp"),
        *,
        folds: int = 5,
        threshold_rule: str = "top_share",
        top_share: float = 0.2,
        max_selection_rows: int = 100_000,
        seed: int = 0,
        threads: int = 2,
        label_name: str = "high value",
        class_names: tuple[str, str] = ("low value", "high value"),
    ) -> None:
        self.candidates = candidates
        self.folds = folds
        self.threshold_rule = threshold_rule
        self.top_share = top_share
        self.max_selection_rows = max_selection_rows
        self.seed = seed
        self.threads = threads
        self.label_name = label_name
        self.class_names = class_names

    # ---- fitting ---------------------------------------------------------------------------

    def fit(
        self,
        X: pd.DataFrame,
        y: Any,
        *,
        groups: Any = None,
        earlier: tuple[pd.DataFrame, Any] | None = None,
    ) -> Self:
        """Select, refit and calibrate-check on a customer table ``X`` and 0/1 labels ``y``.

        ``groups`` (optional) gives each row's fold (0 .. folds-1). ``earlier`` (optional) is
        the same kind of table and label one period earlier, for a time-based split: each
        candidate is then also trained on it and scored on ``(X, y)``, a period it has not seen,
        as a deployed model is; those figures (``time_split_*`` in the leaderboard) choose the
        model, the cross-validation still giving each one's spread.
        """
        self._check_settings()
        y = np.asarray(y, dtype=np.float64).ravel()
        if not isinstance(X, pd.DataFrame):
            raise CustvalError("X must be a pandas DataFrame with one row per customer")
        if len(X) != y.size:
            raise CustvalError(f"X has {len(X)} rows but the label {y.size}")
        if y.size < MIN_ROWS:
            raise FitError(
                f"{y.size} customers are too few to train and cross-validate a model",
                hint=f"Use at least {MIN_ROWS} labelled customers",
            )
        if not np.isin(y, (0.0, 1.0)).all():
            raise CustvalError("the label must be 0/1", hint="Use binary_label to convert it")
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == y.size:
            raise FitError("the label has one class only: there is nothing to tell apart")
        rarer = min(n_pos, y.size - n_pos)
        if rarer < 2 * self.folds:
            raise FitError(
                f"the rarer class has {rarer} customers: with {self.folds} folds some training "
                "parts would hold too few of them to learn from",
                hint=f"Use at least {2 * self.folds} customers of each class, or fewer folds",
            )
        X = X.reset_index(drop=True)
        for name in _LEARNED:  # a refit that fails must not leave the previous fit's state
            self.__dict__.pop(name, None)
        schema = infer_schema(X)
        sel = self._selection_rows(y)
        fold_of = self._folds(y, sel, groups)
        board, oof = self._cross_validate(X, y, sel, fold_of, schema)
        if earlier is not None:
            board = self._time_split(board, earlier, X, y, schema)
        chosen = self._choose(board)
        p_oof, y_sel = oof[chosen], y[sel]
        reliability = reliability_table(y_sel, p_oof)
        start = time.perf_counter()
        model = make_candidate(chosen, self.seed, self.threads).fit(schema, X, y)
        refit_seconds = time.perf_counter() - start
        threshold = self._threshold(y_sel, p_oof, model.predict_proba(schema, X))
        # the chosen candidate's out-of-fold probabilities, NaN outside the selection sample:
        # what a baseline is compared with on the same customers
        oof_all = np.full(y.size, np.nan)
        oof_all[sel] = p_oof
        # the learned state, all at once
        self.schema_, self.model_, self.chosen_ = schema, model, chosen
        self.leaderboard_, self.selection_rows_ = board, int(sel.size)
        self.oof_metrics_ = classification_metrics(y_sel, p_oof)
        self.oof_proba_ = oof_all
        self.reliability_ = reliability
        self.calibration_error_ = float(
            np.average(
                np.abs(reliability.mean_predicted - reliability.observed),
                weights=reliability.customers,
            )
        )
        self.refit_seconds_, self.threshold_ = refit_seconds, threshold
        self.n_customers_, self.positive_share_ = int(y.size), float(y.mean())
        self.label_name_, self.class_names_ = self.label_name, tuple(self.class_names)
        return self

    @classmethod
    def from_fitted(
        cls,
        settings: dict[str, Any],
        *,
        schema: FeatureSchema,
        model: Candidate,
        chosen: str,
        threshold: float,
        leaderboard: pd.DataFrame,
        reliability: pd.DataFrame,
        oof_metrics: dict[str, float],
        calibration_error: float,
        manifest: dict[str, Any] | None = None,
    ) -> Self:
        """A classifier that predicts with what an earlier fit learned (a model bundle's
        manifest and model file, :mod:`custval.store.bundles`), its constructor ``settings``
        restored too; ``manifest_`` keeps what the bundle says besides (the label, the feature
        catalogue, the high-value profile)."""
        clf = cls(**settings)
        clf.schema_, clf.model_, clf.chosen_ = schema, model, chosen
        clf.threshold_, clf.leaderboard_, clf.reliability_ = threshold, leaderboard, reliability
        clf.oof_metrics_, clf.calibration_error_ = oof_metrics, calibration_error
        clf.manifest_ = manifest or {}
        clf.label_name_, clf.class_names_ = clf.label_name, tuple(clf.class_names)
        return clf

    def _check_settings(self) -> None:
        unknown = [c for c in self.candidates if c not in CANDIDATES]
        if unknown or not self.candidates:
            raise CustvalError(
                f"unknown candidate models: {', '.join(unknown) or '(none given)'}",
                hint="Use some of " + ", ".join(CANDIDATES),
            )
        if self.folds < 2:
            raise CustvalError(f"at least 2 folds are needed, not {self.folds}")
        if self.threshold_rule not in ("top_share", "best_f1"):
            raise CustvalError(
                f"unknown threshold rule '{self.threshold_rule}'", hint="top_share or best_f1"
            )

    def _selection_rows(self, y: Array) -> npt.NDArray[np.int64]:
        n = y.size
        if n <= self.max_selection_rows:
            return np.arange(n)
        from sklearn.model_selection import train_test_split

        sel, _ = train_test_split(
            np.arange(n),
            train_size=self.max_selection_rows,
            stratify=y,
            random_state=self.seed,
        )
        return np.sort(sel)

    def _folds(self, y: Array, sel: npt.NDArray[np.int64], groups: Any) -> npt.NDArray[np.int64]:
        if groups is not None:
            g = np.asarray(groups).ravel()
            if g.size != y.size:
                raise CustvalError(f"groups has {g.size} values for {y.size} rows")
            codes = pd.factorize(g[sel], sort=True)[0]
            return codes.astype(np.int64)
        from sklearn.model_selection import StratifiedKFold

        fold_of = np.empty(sel.size, dtype=np.int64)
        skf = StratifiedKFold(n_splits=self.folds, shuffle=True, random_state=self.seed)
        for k, (_, test) in enumerate(skf.split(np.zeros(sel.size), y[sel])):
            fold_of[test] = k
        return fold_of

    def _cross_validate(
        self,
        X: pd.DataFrame,
        y: Array,
        sel: npt.NDArray[np.int64],
        fold_of: npt.NDArray[np.int64],
        full: FeatureSchema,
    ) -> tuple[pd.DataFrame, dict[str, Array]]:
        Xs = X.iloc[sel].reset_index(drop=True)
        ys = y[sel]
        rows = []
        oof: dict[str, Array] = {}
        for name in self.candidates:  # a loop over four candidates and their folds
            p = np.empty(ys.size)
            per_fold = []
            start = time.perf_counter()
            for k in np.unique(fold_of):
                test = fold_of == k
                train = ~test
                if len(np.unique(ys[train])) < 2 or len(np.unique(ys[test])) < 2:
                    raise FitError(
                        f"fold {k + 1} has one class only",
                        hint="Use fewer folds, or groups with both classes in each",
                    )
                # the encodings are learned on the training part only
                schema = full.relearn(Xs[train])
                model = make_candidate(name, self.seed, self.threads)
                model.fit(schema, Xs[train], ys[train])
                p[test] = model.predict_proba(schema, Xs[test])
                per_fold.append(classification_metrics(ys[test], p[test]))
            seconds = time.perf_counter() - start
            oof[name] = p
            row: dict[str, Any] = {"model": name}
            for m in METRICS:
                values = np.array([f[m] for f in per_fold])
                row[f"{m}_mean"] = float(values.mean())
                row[f"{m}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
            row["seconds"] = seconds
            rows.append(row)
        board = pd.DataFrame(rows)
        board = board.sort_values("roc_auc_mean", ascending=False, kind="stable")
        return board.reset_index(drop=True), oof

    def _time_split(
        self,
        board: pd.DataFrame,
        earlier: tuple[pd.DataFrame, Any],
        X: pd.DataFrame,
        y: Array,
        full: FeatureSchema,
    ) -> pd.DataFrame:
        """Each candidate trained on the earlier period and scored on this one."""
        X_old, y_old = earlier
        y_old = np.asarray(y_old, dtype=np.float64).ravel()
        X_old = X_old.reset_index(drop=True)
        # a feature that did not exist yet (a category first sold later) is missing then
        absent = [c for c in full.columns if c not in X_old.columns]
        if absent:
            X_old = X_old.assign(**{c: np.nan for c in absent})
        if len(X_old) != y_old.size:
            raise CustvalError(
                f"the earlier period's table has {len(X_old)} rows but its label {y_old.size}"
            )
        if len(np.unique(y_old)) < 2:
            raise FitError("the earlier period's label holds one class: nothing to learn from")
        schema = full.relearn(X_old)
        rows = {}
        for name in board.model:  # a loop over the candidates
            model = make_candidate(name, self.seed, self.threads).fit(schema, X_old, y_old)
            metrics = classification_metrics(y, model.predict_proba(schema, X))
            rows[name] = {f"time_split_{k}": v for k, v in metrics.items()}
        extra = pd.DataFrame.from_dict(rows, orient="index")
        board = board.join(extra, on="model")
        return board.sort_values("time_split_roc_auc", ascending=False, kind="stable").reset_index(
            drop=True
        )

    def _choose(self, board: pd.DataFrame) -> str:
        """Best ROC AUC (forward in time when there is a time split, else the cross-validated
        mean); the simplest candidate within one standard error of it."""
        key = "time_split_roc_auc" if "time_split_roc_auc" in board else "roc_auc_mean"
        best = board.sort_values(key, ascending=False, kind="stable").iloc[0]
        se = best["roc_auc_std"] / np.sqrt(self.folds)
        close = board[board[key] >= best[key] - se]
        order = {name: i for i, name in enumerate(self.candidates)}
        return str(min(close.model, key=lambda m: order[m]))

    def _threshold(self, y_oof: Array, p_oof: Array, p_all: Array) -> float:
        if self.threshold_rule == "top_share":
            return float(np.quantile(p_all, 1 - self.top_share))
        order = np.argsort(-p_oof, kind="stable")
        tp = np.cumsum(y_oof[order])
        k = np.arange(1, y_oof.size + 1)
        f1 = 2 * tp / (k + y_oof.sum())
        return float(p_oof[order][int(np.argmax(f1))])

    # ---- prediction ------------------------------------------------------------------------

    def _fitted(self) -> Candidate:
        if not hasattr(self, "model_"):
            raise CustvalError(f"the {self._what} is not fitted yet", hint="Call fit first")
        return self.model_

    def predict_proba(self, X: pd.DataFrame, source: str = "input") -> Array:
        """Probability of the positive class (``label_name_``) per row (features taken by
        name, in any order)."""
        model = self._fitted()
        return model.predict_proba(self.schema_, as_frame(X, source))

    def predict(self, X: pd.DataFrame, source: str = "input") -> Array:
        """1 (positive) where the probability reaches ``threshold_``, else 0."""
        return (self.predict_proba(X, source) >= self.threshold_).astype(np.int64)

    def contributions(self, X: pd.DataFrame, source: str = "input") -> tuple[Array, Array]:
        """Per-feature contributions (rows x ``schema_.columns``) and the base value per row.

        base + contributions.sum(axis=1) equals the model's raw score (``score_kind_``).
        """
        model = self._fitted()
        return model.contributions(self.schema_, as_frame(X, source))

    def raw_score(self, X: pd.DataFrame, source: str = "input") -> Array:
        return self._fitted().raw_score(self.schema_, as_frame(X, source))

    @property
    def score_kind_(self) -> str:
        """What raw scores and contributions are in: "log-odds" or "probability"."""
        return self._fitted().score


def as_frame(X: Any, source: str) -> pd.DataFrame:
    """``X`` when it is a table of customers; a clear error naming ``source`` when not."""
    if not isinstance(X, pd.DataFrame):
        raise CustvalError(f"{source} must be a table (pandas DataFrame)")
    return X
