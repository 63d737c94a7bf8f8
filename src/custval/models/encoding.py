"""The feature schema of a tabular model: which columns, their types, and how they are encoded.

A :class:`FeatureSchema` is learned from the training table and stored with the model. It makes
scoring independent of column order (columns are taken by name), refuses a table that lacks a
column (naming it), and turns a table into the matrices the candidate models need:

* :meth:`FeatureSchema.codes` for tree models: numeric columns as they are (missing stays NaN),
  categorical columns as integer codes of the training categories; a category not seen in
  training is coded as missing, never a crash.
* :meth:`FeatureSchema.design` for linear models and neural networks: numeric columns with
  missing values replaced by the training median plus a 0/1 "was missing" column where training
  had any, categorical columns one-hot encoded over the training categories (an unseen category
  counts as the average training customer), every column standardised with the training mean
  and standard deviation (or, with ``scale_indicators=False``, the 0/1 columns only centred). Each
  design column remembers the original feature it came from (``design_groups``), so that
  contributions can be summed back to it.

A column is categorical when its values are text or booleans; numeric text with blanks
(``"29.85"``, ``" "``) is numeric with missing values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from custval.errors import CustvalError

__all__ = ["FeatureSchema", "infer_schema"]

Array = npt.NDArray[np.float64]

# only the most frequent categories of a column are kept; rarer ones are treated as unseen
# (ids and free text are not features)
_MAX_CATEGORIES = 50


@dataclass
class FeatureSchema:
    """Columns, types and encodings learned from a training table (see the module docstring)."""

    numeric: list[str]
    categorical: dict[str, list[str]]
    medians: dict[str, float] = field(default_factory=dict)
    has_missing: list[str] = field(default_factory=list)
    #: the most common category of each categorical column (the "typical customer")
    modes: dict[str, str] = field(default_factory=dict)
    design_mean: list[float] = field(default_factory=list)
    design_scale: list[float] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """Feature names in the model's order: numeric, then categorical."""
        return [*self.numeric, *self.categorical]

    # ---- checking and typing -------------------------------------------------------------

    def frame(self, df: pd.DataFrame, source: str = "input") -> pd.DataFrame:
        """The features of ``df`` by name, typed; a clear error when a column is missing."""
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise CustvalError(
                f"the table lacks {len(missing)} feature column{'s' if len(missing) > 1 else ''} "
                f"the model was trained on: {', '.join(missing[:10])}",
                source=source,
                column=missing[0],
                hint="Score a table with the same features as the training table (any order)",
            )
        out = {}
        for c in self.numeric:
            values = _as_numeric(df[c])
            if values is None:
                bad = df[c][pd.to_numeric(df[c], errors="coerce").isna() & df[c].notna()]
                raise CustvalError(
                    f"column '{c}' was numeric in training but holds text",
                    source=source,
                    column=c,
                    count=int(bad.size),
                    examples=[{"row": int(i), c: v} for i, v in bad.head(5).items()],
                    hint="Fix these values or drop the rows",
                )
            out[c] = values
        for c in self.categorical:
            out[c] = _as_category_text(df[c])
        return pd.DataFrame(out, index=df.index)

    # ---- encodings -----------------------------------------------------------------------

    def codes(self, df: pd.DataFrame, source: str = "input") -> Array:
        """Numeric values and category codes (unseen or missing category: NaN), float64."""
        f = self.frame(df, source)
        cols = [f[c].to_numpy(dtype=np.float64) for c in self.numeric]
        for c, cats in self.categorical.items():
            code = _category_codes(f[c], cats).astype(np.float64)
            code[code < 0] = np.nan
            cols.append(code)
        return np.column_stack(cols) if cols else np.empty((len(df), 0))

    def design_columns(self) -> list[tuple[str, str]]:
        """(design column name, original feature) for every column of :meth:`design`."""
        out = [(c, c) for c in self.numeric]
        out += [(f"{c} (missing)", c) for c in self.has_missing]
        for c, cats in self.categorical.items():
            out += [(f"{c}={v}", c) for v in cats]
        return out

    @property
    def design_groups(self) -> list[str]:
        return [g for _, g in self.design_columns()]

    def indicator_mask(self) -> npt.NDArray[np.bool_]:
        """Which design columns are 0/1: the "was missing" indicators and the one-hot columns
        (the numeric columns come first)."""
        mask = np.ones(len(self.design_groups), dtype=bool)
        mask[: len(self.numeric)] = False
        return mask

    def design(
        self, df: pd.DataFrame, source: str = "input", *, scale_indicators: bool = True
    ) -> Array:
        """Standardised numeric + missing indicators + one-hot categories (module docstring).

        Without ``scale_indicators`` the 0/1 columns are centred but not divided by their
        standard deviation (the logistic candidate's design): dividing stretches a rare
        category's column, which lets an L2 penalty hardly restrain its coefficient; at a unit
        step each category is shrunk by the evidence it has."""
        raw = self._design_raw(self.frame(df, source))
        if not self.design_mean:
            return raw
        scale = np.asarray(self.design_scale)
        if not scale_indicators:
            scale = np.where(self.indicator_mask(), 1.0, scale)
        return (raw - np.asarray(self.design_mean)) / scale

    def _design_raw(self, f: pd.DataFrame) -> Array:
        parts = []
        for c in self.numeric:
            v = f[c].to_numpy(dtype=np.float64)
            parts.append(np.where(np.isnan(v), self.medians.get(c, 0.0), v))
        for c in self.has_missing:
            parts.append(f[c].isna().to_numpy(dtype=np.float64))
        start = len(self.numeric) + len(self.has_missing)
        for c, cats in self.categorical.items():
            code = _category_codes(f[c], cats)
            onehot = np.zeros((len(f), len(cats)))
            known = code >= 0
            onehot[np.flatnonzero(known), code[known]] = 1.0
            if self.design_mean and not known.all():
                # a missing or unseen category is the average training customer in this
                # feature: it neither raises nor lowers the score (zeros would be a category
                # of its own that the model never saw)
                onehot[~known] = self.design_mean[start : start + len(cats)]
            start += len(cats)
            parts.append(onehot)
        cols = [p if p.ndim == 2 else p[:, None] for p in parts]
        return np.hstack(cols) if cols else np.empty((len(f), 0))

    def fit_design(self, df: pd.DataFrame) -> None:
        """Learn the standardisation of :meth:`design` from the training table."""
        raw = self._design_raw(self.frame(df))
        mean = raw.mean(axis=0)
        scale = raw.std(axis=0)
        self.design_mean = mean.tolist()
        self.design_scale = np.where(scale > 0, scale, 1.0).tolist()

    def relearn(self, df: pd.DataFrame) -> FeatureSchema:
        """The same columns and types, with categories, medians and standardisation learned
        from ``df`` alone (a cross-validation fold's training rows: nothing from its test rows
        may leak into the encodings)."""
        f = self.frame(df)
        out = FeatureSchema(
            numeric=list(self.numeric),
            categorical={c: _top_categories(f[c]) for c in self.categorical},
            medians={
                c: float(f[c].median()) if f[c].notna().any() else self.medians.get(c, 0.0)
                for c in self.numeric
            },
            has_missing=list(self.has_missing),
            modes={c: _mode(f[c]) for c in self.categorical},
        )
        out.fit_design(df)
        return out

    # ---- persistence ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "medians": self.medians,
            "has_missing": self.has_missing,
            "modes": self.modes,
            "design_mean": self.design_mean,
            "design_scale": self.design_scale,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSchema:
        return cls(
            numeric=list(d["numeric"]),
            categorical={k: list(v) for k, v in d["categorical"].items()},
            medians={k: float(v) for k, v in d.get("medians", {}).items()},
            has_missing=list(d.get("has_missing", [])),
            modes=dict(d.get("modes", {})),
            design_mean=list(d.get("design_mean", [])),
            design_scale=list(d.get("design_scale", [])),
        )


def infer_schema(df: pd.DataFrame, exclude: tuple[str, ...] = ()) -> FeatureSchema:
    """Learn which columns of a training table are numeric and which categorical.

    Example
    -------
    >>> s = infer_schema(pd.DataFrame({"tenure": [1, 5], "plan": ["a", "b"]}))
    >>> s.numeric, s.categorical
    (['tenure'], {'plan': ['a', 'b']})
    """
    numeric: list[str] = []
    categorical: dict[str, list[str]] = {}
    medians: dict[str, float] = {}
    has_missing: list[str] = []
    for c in df.columns:
        if c in exclude:
            continue
        s = df[c]
        values = None if s.dtype == bool else _as_numeric(s)
        if values is None:
            cats = _top_categories(_as_category_text(s))
            if cats:  # an entirely blank column carries nothing
                categorical[str(c)] = cats
            continue
        if values.notna().sum() == 0:
            continue  # an empty column carries nothing
        numeric.append(str(c))
        medians[str(c)] = float(values.median())
        if values.isna().any():
            has_missing.append(str(c))
    if not numeric and not categorical:
        raise CustvalError(
            "the table has no feature columns", hint="Pass a table with features and a label"
        )
    modes = {c: _mode(_as_category_text(df[c])) for c in categorical}
    schema = FeatureSchema(numeric, categorical, medians, has_missing, modes)
    schema.fit_design(df)
    return schema


def _category_codes(text: pd.Series, cats: list[str]) -> npt.NDArray[np.int64]:
    """Index of each value in ``cats``; -1 for a missing or unseen category."""
    return np.asarray(pd.Index(cats).get_indexer(text), dtype=np.int64)


def _mode(text: pd.Series) -> str:
    counts = text.value_counts()
    return str(counts.index[0]) if counts.size else ""


def _top_categories(text: pd.Series) -> list[str]:
    counts = text.value_counts()
    return sorted(map(str, counts.index[:_MAX_CATEGORIES]))


def _as_numeric(s: pd.Series) -> pd.Series | None:
    """The column as float64 (blanks as NaN) when it is numeric, else None."""
    if pd.api.types.is_bool_dtype(s):
        return s.astype(np.float64)
    if pd.api.types.is_numeric_dtype(s):
        return s.astype(np.float64)
    text = s.astype("string").str.strip()
    blank = text.isna() | (text == "")
    parsed = pd.to_numeric(text.where(~blank), errors="coerce")
    filled = int((~blank).sum())
    if filled == 0 or parsed.notna().sum() < filled:
        return None
    return parsed.astype(np.float64)


def _as_category_text(s: pd.Series) -> pd.Series:
    """Category labels as stripped text, missing as NaN."""
    text = s.astype("string").str.strip()
    return text.where(text.notna() & (text != ""), None).astype(object)
