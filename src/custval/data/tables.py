"""Reading a customer table (one row per customer) from a CSV or Parquet file.

Used by the commands that take a ready table rather than a project: ``custval evaluate`` and
``custval predict``. CSV cells are read as text, so that a column's type is decided the same way
for training and scoring (:mod:`custval.models.encoding`): blanks are missing values, numeric
text is numeric.
"""

from __future__ import annotations

import re
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
            sep = "\t" if p.suffix.lower() == ".tsv" else _delimiter(p)
            df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise CustvalError(f"'{p}' cannot be read as a table: {exc}", source=str(p)) from None
    if df.empty:
        raise CustvalError(f"'{p}' has no rows", source=str(p))
    names = [str(c).strip() for c in df.columns]
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise CustvalError(
            f"the table has {len(dupes)} column name{'s' if len(dupes) > 1 else ''} twice: "
            + ", ".join(repr(c) for c in dupes[:5]),
            source=str(p),
            column=dupes[0],
            hint="Give every column its own name",
        )
    df.columns = names
    return df


def _delimiter(path: Path) -> str:
    """The separator of a delimited text file: whichever of , ; tab | its header holds most."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
    counts = {sep: header.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] else ","


_ID_WORDS = ("id", "key", "code", "number", "no", "account", "customer", "client", "uuid")


def identifier_columns(df: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    """Columns that identify rows rather than describe them, left out of the features: a
    different value on every row, and either text that is not a number, or whole numbers in a
    column whose name says it is an id (``customer_id``, ``account_no``...). A count or an
    amount in cents may well be unique on a small table and stays a feature."""
    out = []
    for c in df.columns:
        if c in exclude:
            continue
        s = df[c]
        if s.nunique(dropna=False) != len(s) or len(s) < 20:
            continue
        if pd.api.types.is_datetime64_any_dtype(s):
            continue
        numeric = pd.to_numeric(s, errors="coerce")
        if numeric.notna().all():
            words = [w for w in re.split(r"[^a-z0-9]+", str(c).lower()) if w]
            values = numeric.to_numpy(dtype=np.float64)
            whole = bool(np.all(values == np.round(values)))
            if not (whole and any(w in _ID_WORDS for w in words)):
                continue
        out.append(str(c))
    return out
