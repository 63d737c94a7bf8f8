"""Product-category propensity: the chance that each customer buys in each category within the
horizon, the better of two LightGBM designs on a holdout, and the reasons of each prediction.

The two designs (Hastie, Tibshirani & Friedman, ch. 10, on boosting; both use the value
model's LightGBM candidate, :mod:`custval.models.candidates`, shallow trees with exact TreeSHAP
contributions):

- ``stacked``: one model over (customer x category) rows, the category a feature. Categories
  share what they have in common (a recent, frequent customer buys more of everything), and a
  rare category borrows strength from the others;
- ``per_category``: one model per category over the customers. Each category may follow its
  own rules, but learns them from its own buyers alone.

Every row holds the customer's features (any table, one row per customer) and the customer's
history in that category: ``cat_days`` (purchase days), ``cat_spend``, ``cat_days_since``
(since the last purchase there; missing when never) and ``cat_day_share`` (of the customer's
purchase days); :func:`custval.features.copurchase.category_history` computes them.

Selection: both designs are trained one horizon earlier and scored on the present (a time-based
holdout, ``earlier``), or, without an earlier period, on a random quarter of the customers held
out. Per category the holdout gives ROC AUC, log-loss and Brier score; the design with the lower
log-loss averaged over the categories wins (log-loss is a proper scoring rule: it rewards
probabilities that are right, which the playbook multiplies, not just the order that ROC AUC
measures). ``leaderboard_`` keeps both designs' figures, ``category_metrics_`` the categories'.
The chosen design is then refitted on the present.

Reasons: the model's contributions (TreeSHAP) of the row's features, the ``top_k`` largest
made into sentences by :func:`custval.models.explain.reason_columns`, ending "... the chance of
buying in shoes". The category itself (a feature of the stacked model) is never a reason.

Example
-------
>>> prop = CategoryPropensity().fit(customers, history, bought, earlier=(c0, h0, b0))
... # doctest: +SKIP
>>> prop.leaderboard_  # doctest: +SKIP
>>> prop.reasons(customers_now, history_now).head()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from custval.errors import CustvalError, FitError
from custval.models.base import Estimator
from custval.models.candidates import Candidate, LightGBM, make_candidate
from custval.models.encoding import FeatureSchema, infer_schema
from custval.models.explain import reason_columns
from custval.models.value import classification_metrics

__all__ = ["CATEGORY_FEATURES", "CategoryPropensity"]

Array = npt.NDArray[np.float64]

#: the per-category history columns, and what they mean in reasons
CATEGORY_FEATURES: dict[str, str] = {
    "cat_days": "purchase days in this category",
    "cat_spend": "spend in this category",
    "cat_days_since": "days since the last purchase in this category",
    "cat_day_share": "share of the customer's purchase days in this category",
}
STRATEGIES = ("stacked", "per_category")
#: a category needs this many buyers and non-buyers for a model of its own
MIN_CLASS = 5
#: rows of the stacked design built at once when predicting
_CHUNK_ROWS = 500_000
_CATEGORY = "category"


def _table(x: Any, needed: tuple[str, ...], what: str) -> pd.DataFrame:
    if not isinstance(x, pd.DataFrame):
        raise CustvalError(f"{what} must be a table (pandas DataFrame)")
    missing = [c for c in needed if c not in x.columns]
    if missing:
        raise CustvalError(f"{what} lack the column {missing[0]}", column=missing[0])
    return x


def _unique(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per customer (a history with repeated rows keeps each customer's first)."""
    return frame if frame.index.is_unique else frame[~frame.index.duplicated()]


class _Period:
    """One period's customers, category history and purchases in the horizon (the label)."""

    def __init__(
        self, customers: Any, history: Any, bought: Any | None, categories: list[str]
    ) -> None:
        customers = _table(customers, ("customer_id",), "the customers")
        history = _table(history, ("customer_id", "category"), "the category history")
        self.customers = customers.reset_index(drop=True)
        self.ids = pd.Index(self.customers["customer_id"].astype(str))
        self.features = self.customers.drop(columns="customer_id")
        self.categories = categories
        cols = [c for c in CATEGORY_FEATURES if c in history.columns]
        cat = history["category"].astype(str)
        # per category, the history indexed by customer: one lookup per block
        self.history = {
            c: _unique(part.set_index(part["customer_id"].astype(str))[cols])
            for c, part in history[cat.isin(categories)].groupby(cat, sort=False)
        }
        self.bought: dict[str, pd.Index] | None = None
        if bought is not None:
            bought = _table(bought, ("customer_id", "category"), "the purchases in the horizon")
            b_cat = bought["category"].astype(str)
            self.bought = {
                c: pd.Index(part["customer_id"].astype(str))
                for c, part in bought.groupby(b_cat, sort=False)
            }

    def block(self, category: str, rows: npt.NDArray[np.int64] | None = None) -> pd.DataFrame:
        """The customers' features (``rows`` of them) with their history in ``category``."""
        ids = self.ids if rows is None else self.ids[rows]
        feats = self.features if rows is None else self.features.iloc[rows]
        out = feats.reset_index(drop=True).copy()
        part = self.history.get(category)
        for c in CATEGORY_FEATURES:
            if part is None or c not in part.columns:
                continue
            v = part[c].reindex(ids).to_numpy(dtype=np.float64)
            out[c] = v if c == "cat_days_since" else np.nan_to_num(v)
        return out

    def label(self, category: str, rows: npt.NDArray[np.int64] | None = None) -> Array:
        assert self.bought is not None
        ids = self.ids if rows is None else self.ids[rows]
        buyers = self.bought.get(category)
        if buyers is None:
            return np.zeros(len(ids))
        return np.asarray(ids.isin(buyers), dtype=np.float64)

    def stacked(
        self, rows: npt.NDArray[np.int64] | None = None, *, labels: bool = True
    ) -> tuple[pd.DataFrame, Array | None]:
        """(customer x category) rows, category after category, and their labels."""
        blocks = [self.block(c, rows).assign(**{_CATEGORY: c}) for c in self.categories]
        y = np.concatenate([self.label(c, rows) for c in self.categories]) if labels else None
        return pd.concat(blocks, ignore_index=True), y


class CategoryPropensity(Estimator):
    """Per-category purchase propensity (module docstring).

    Parameters
    ----------
    strategy:
        "auto" (the better of the two on the holdout), "stacked" or "per_category".
    top_k:
        Reasons per prediction.
    max_customers:
        At most this many customers (a random sample) train and compare the models.
    holdout_share:
        Share of customers held out when no earlier period is given.
    seed, threads:
        Of the sample, the holdout and LightGBM.
    """

    def __init__(
        self,
        strategy: str = "auto",
        *,
        top_k: int = 3,
        max_customers: int = 100_000,
        holdout_share: float = 0.25,
        seed: int = 0,
        threads: int = 2,
    ) -> None:
        self.strategy = strategy
        self.top_k = top_k
        self.max_customers = max_customers
        self.holdout_share = holdout_share
        self.seed = seed
        self.threads = threads

    # ---- fitting ---------------------------------------------------------------------------

    def fit(
        self,
        customers: pd.DataFrame,
        history: pd.DataFrame,
        bought: pd.DataFrame,
        *,
        earlier: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None = None,
    ) -> Self:
        """Compare, choose and refit on ``customers`` (customer_id and features, one row per
        customer), their category ``history`` before the cutoff (customer_id, category and
        :data:`CATEGORY_FEATURES`) and ``bought``: the (customer_id, category) bought in the
        horizon after it. ``earlier``: the same three one horizon earlier, for the time-based
        holdout."""
        if self.strategy not in ("auto", *STRATEGIES):
            raise CustvalError(
                f"unknown propensity strategy '{self.strategy}'",
                hint="auto, stacked or per_category",
            )
        start = time.perf_counter()
        categories = _categories(history, bought, earlier)
        now = _Period(customers, history, bought, categories)
        if earlier is not None:
            train, test, kind = _Period(*earlier, categories), now, "time"
            train_rows, test_rows = self._sample(train.ids.size), None
        else:
            train = test = now
            train_rows, test_rows = self._split(now.ids.size)
            kind = "customers"
        tried = STRATEGIES if self.strategy == "auto" else (self.strategy,)
        board, per_category = self._compare(tried, train, train_rows, test, test_rows)
        board["holdout"] = kind
        ok = board[board.error.isna()]
        if ok.empty:
            raise FitError(
                "no propensity model could be trained: " + "; ".join(board.error.astype(str)),
                hint="Use more customers or a longer horizon",
            )
        chosen = str(ok.sort_values("log_loss", kind="stable").iloc[0].strategy)
        models, schema = self._train(chosen, now, self._sample(now.ids.size))
        # the learned state, all at once
        self.categories_, self.chosen_, self.models_, self.schema_ = (
            categories,
            chosen,
            models,
            schema,
        )
        self.leaderboard_ = board.reset_index(drop=True)
        self.category_metrics_ = per_category
        self.base_rates_ = {c: float(now.label(c).mean()) for c in categories}
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _sample(self, n: int) -> npt.NDArray[np.int64]:
        if n <= self.max_customers:
            return np.arange(n)
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(n, self.max_customers, replace=False))

    def _split(self, n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        rows = self._sample(n)
        rng = np.random.default_rng(self.seed + 1)
        held = rng.random(rows.size) < self.holdout_share
        return rows[~held], rows[held]

    def _compare(
        self,
        tried: tuple[str, ...],
        train: _Period,
        train_rows: npt.NDArray[np.int64],
        test: _Period,
        test_rows: npt.NDArray[np.int64] | None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Each design trained on ``train`` and scored per category on ``test``."""
        board, per_category = [], []
        for strategy in tried:  # a loop over the two designs
            t = time.perf_counter()
            try:
                models, schema = self._train(strategy, train, train_rows)
            except FitError as exc:
                board.append({"strategy": strategy, "error": exc.problem})
                continue
            rows = []
            for c in test.categories:  # a loop over the categories
                y = test.label(c, test_rows)
                p = _predict(strategy, models, schema, test.block(c, test_rows), c)
                rows.append({"strategy": strategy, "category": c, **_metrics(y, p)})
            frame = pd.DataFrame(rows)
            per_category.append(frame)
            board.append(
                {
                    "strategy": strategy,
                    "roc_auc": float(frame.roc_auc.mean()),
                    "log_loss": float(frame.log_loss.mean()),
                    "brier": float(frame.brier.mean()),
                    "categories": len(frame),
                    "seconds": time.perf_counter() - t,
                    "error": None,
                }
            )
        out = pd.DataFrame(board)
        for col in ("roc_auc", "log_loss", "brier", "categories", "seconds", "error"):
            if col not in out:
                out[col] = None if col == "error" else np.nan
        frames = [f for f in per_category if not f.empty]
        return out, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _train(
        self, strategy: str, period: _Period, rows: npt.NDArray[np.int64]
    ) -> tuple[dict[str, Candidate], dict[str, FeatureSchema]]:
        """The design's model(s) and schema(s): one under "" (stacked) or one per category."""
        if strategy == "stacked":
            X, y = period.stacked(rows)
            assert y is not None
            _check_classes(y, "the stacked rows")
            schema = infer_schema(X)
            model = make_candidate("lightgbm", self.seed, self.threads).fit(schema, X, y)
            return {"": model}, {"": schema}
        models, schemas = {}, {}
        for c in period.categories:  # a loop over the categories
            X, y = period.block(c, rows), period.label(c, rows)
            _check_classes(y, f"category '{c}'")
            schemas[c] = infer_schema(X)
            models[c] = make_candidate("lightgbm", self.seed, self.threads).fit(schemas[c], X, y)
        return models, schemas

    # ---- persistence -----------------------------------------------------------------------

    def dumps(self) -> bytes:
        """The fitted model as JSON text: its parameters, the choice, the leaderboard, the
        schemas and the LightGBM models as text (no pickle)."""
        self._fitted()
        return json.dumps(
            {
                "kind": "custval.CategoryPropensity",
                "params": self.get_params(),
                "categories": self.categories_,
                "chosen": self.chosen_,
                "base_rates": self.base_rates_,
                "leaderboard": json.loads(self.leaderboard_.to_json(orient="records")),
                "category_metrics": json.loads(self.category_metrics_.to_json(orient="records")),
                "schemas": {k: s.to_dict() for k, s in self.schema_.items()},
                "models": {k: m.dumps().decode() for k, m in self.models_.items()},
            }
        ).encode()

    @classmethod
    def loads(cls, data: bytes) -> CategoryPropensity:
        """A propensity model from :meth:`dumps`' bytes, ready to predict."""
        try:
            d = json.loads(data)
            if not isinstance(d, dict) or d.get("kind") != "custval.CategoryPropensity":
                raise ValueError("not a propensity model")
        except (ValueError, UnicodeDecodeError) as exc:
            raise CustvalError(f"not a propensity model file: {exc}") from None
        out = cls(**d["params"])
        out.categories_, out.chosen_ = list(d["categories"]), str(d["chosen"])
        out.base_rates_ = {k: float(v) for k, v in d["base_rates"].items()}
        out.leaderboard_ = pd.DataFrame(d["leaderboard"])
        out.category_metrics_ = pd.DataFrame(d["category_metrics"])
        out.schema_ = {k: FeatureSchema.from_dict(v) for k, v in d["schemas"].items()}
        out.models_ = {k: LightGBM.loads(v.encode()) for k, v in d["models"].items()}
        return out

    # ---- prediction ------------------------------------------------------------------------

    def _fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise CustvalError("the propensity model is not fitted yet", hint="Call fit first")

    def _blocks(
        self, customers: pd.DataFrame, history: pd.DataFrame
    ) -> Iterator[tuple[str, npt.NDArray[np.int64], pd.DataFrame]]:
        """(category, customer rows, design) in parts of bounded size."""
        period = _Period(customers, history, None, self.categories_)
        n = period.ids.size
        step = max(1, _CHUNK_ROWS // max(1, len(self.categories_)))
        for lo in range(0, n, step):  # a loop over parts of the customers
            rows = np.arange(lo, min(n, lo + step))
            for c in self.categories_:  # and over the categories
                yield c, rows, period.block(c, rows)

    def predict_proba(self, customers: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
        """customer_id, category and probability of buying there within the horizon, for
        every customer and category (customers in their order, categories sorted)."""
        self._fitted()
        return self.reasons(customers, history, top_k=0)

    def reasons(
        self,
        customers: pd.DataFrame,
        history: pd.DataFrame,
        *,
        top_k: int | None = None,
        catalogue: Mapping[str, str] | None = None,
    ) -> pd.DataFrame:
        """:meth:`predict_proba` with the ``top_k`` reasons of every probability (columns
        ``reason_i``, ``reason_i_feature``, ``reason_i_value``, ``reason_i_contribution`` as
        in :func:`custval.models.explain.reason_columns`); ``catalogue`` describes the
        customer features (name to description)."""
        self._fitted()
        k = self.top_k if top_k is None else top_k
        described = {**dict(catalogue or {}), **CATEGORY_FEATURES}
        ids = _table(customers, ("customer_id",), "the customers")["customer_id"].astype(str)
        parts = []
        for c, rows, X in self._blocks(customers, history):
            part = pd.DataFrame({"customer_id": ids.to_numpy()[rows], "category": c})
            key = "" if self.chosen_ == "stacked" else c
            model, schema = self.models_[key], self.schema_[key]
            design = X.assign(**{_CATEGORY: c}) if key == "" else X
            if k == 0:
                part["probability"] = model.predict_proba(schema, design)
            else:
                contrib, base = model.contributions(schema, design)
                part["probability"] = 1 / (1 + np.exp(-(base + contrib.sum(axis=1))))
                if _CATEGORY in schema.columns:  # the category is never a reason
                    contrib[:, schema.columns.index(_CATEGORY)] = np.nan
                why = reason_columns(
                    schema,
                    design,
                    contrib,
                    top_k=k,
                    catalogue=described,
                    ending=f" the chance of buying in {c}",
                )
                part = pd.concat([part, why.reset_index(drop=True)], axis=1)
            parts.append(part)
        out = pd.concat(parts, ignore_index=True)
        order = np.lexsort((out["category"].to_numpy(), pd.factorize(out["customer_id"])[0]))
        return out.iloc[order].reset_index(drop=True)


def _categories(history: Any, bought: Any, earlier: Any) -> list[str]:
    """The categories seen (history or purchases, now or earlier); at least two."""
    seen: set[str] = set()
    tables = [history, bought, *(earlier[1:] if earlier is not None else [])]
    for t in tables:  # a loop over the (up to four) tables
        t = _table(t, ("category",), "the category tables")
        seen |= set(t["category"].dropna().astype(str))
    seen.discard("unknown")
    if len(seen) < 2:
        which = f"one product category only ('{next(iter(seen))}')" if seen else "no category"
        raise FitError(
            f"the transactions have {which}: propensity per category needs two at least",
            column="category",
            hint='Map a category column with [sources.X.columns] category = "<your column>"',
        )
    return sorted(seen)


def _check_classes(y: Array, what: str) -> None:
    buyers = int(y.sum())
    if min(buyers, y.size - buyers) < MIN_CLASS:
        raise FitError(
            f"{what} has {buyers} buyers among {y.size} rows: too few of a class to learn from",
            hint=f"Each needs at least {MIN_CLASS} buyers and non-buyers",
        )


def _predict(
    strategy: str,
    models: dict[str, Candidate],
    schemas: dict[str, FeatureSchema],
    X: pd.DataFrame,
    category: str,
) -> Array:
    if strategy == "stacked":
        return models[""].predict_proba(schemas[""], X.assign(**{_CATEGORY: category}))
    return models[category].predict_proba(schemas[category], X)


def _metrics(y: Array, p: Array) -> dict[str, float]:
    """ROC AUC (NaN when the holdout has one class), log-loss and Brier score."""
    if 0 < y.sum() < y.size:
        m = classification_metrics(y, p)
        return {"roc_auc": m["roc_auc"], "log_loss": m["log_loss"], "brier": m["brier"]}
    clipped = np.clip(p, 1e-12, 1 - 1e-12)
    log_loss = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))
    return {"roc_auc": float("nan"), "log_loss": log_loss, "brier": float(np.mean((p - y) ** 2))}
