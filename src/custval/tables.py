"""Reading a customer table (one row per customer) from a CSV or Parquet file.

Used by the commands that take a ready table rather than a project: ``custval evaluate`` and
``custval predict``. CSV cells are read as text, so that a column's type is decided the same way
for training and scoring (:mod:`custval.models.encoding`): blanks are missing values, numeric
text is numeric.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from custval.errors import CustvalError

__all__ = ["identifier_columns", "read_customer_table"]


def read_customer_table(path: str | Path) -> pd.DataFrame:
    """The table in ``path`` (.csv, .tsv, .txt, .parquet); a clear error when it cannot be read.

    Example
    -------
    >>> df = read_customer_table("customers.csv")  # doctest: +SKIP
    """
    p = Path(path)
    if not p.exists():
        raise CustvalError(f"'{p}' does not exist", source=str(p))
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            sep = "\t" if p.suffix.lower() == ".tsv" else None
            df = pd.read_csv(
                p,
                sep=sep,
                engine="python" if sep is None else "c",
                dtype=str,
                keep_default_na=False,
            )
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise CustvalError(f"'{p}' cannot be read as a table: {exc}", source=str(p)) from None
    if df.empty:
        raise CustvalError(f"'{p}' has no rows", source=str(p))
    df.columns = [str(c).strip() for c in df.columns]
    return df


def identifier_columns(df: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    """Columns that identify rows rather than describe them: a different value on every row,
    and text or whole numbers (a measurement such as a total charge may also be unique but has
    decimals). They are left out of the features."""
    out = []
    for c in df.columns:
        if c in exclude:
            continue
        s = df[c]
        if s.nunique(dropna=False) != len(s) or len(s) < 20:
            continue
        numeric = pd.to_numeric(s, errors="coerce")
        if numeric.notna().all():
            values = numeric.to_numpy(dtype=np.float64)
            if not np.all(values == np.round(values)):
                continue
        out.append(str(c))
    return out
