"""Reading a customer table (one row per customer) from a CSV, Excel, JSON or Parquet file.

Used by the commands that take a ready table rather than a project: ``custval evaluate``,
``train --data``, ``predict`` and ``segment --data``. Text cells are read as text, so that a
column's type is decided the same way for training and scoring
(:mod:`custval.models.encoding`): blanks are missing values, numeric text is numeric. Numbers
are first rewritten with a decimal point: with the file's decimal mark (``--decimal``, else
detected when the values leave no doubt, see :mod:`custval.data.textfiles`), ``1.234,50``
becomes ``1234.50`` and ``1,234.50`` becomes ``1234.50``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from custval.config import CsvOptions
from custval.data.textfiles import (
    AMBIGUOUS_COMMA,
    AMBIGUOUS_DOT,
    COMMA_DECIMAL,
    DOT_DECIMAL,
    GROUPED_COMMA_NUMBER,
    GROUPED_DOT_NUMBER,
    decide_decimal,
    read_xlsx,
    text_layout,
)
from custval.errors import CustvalError

__all__ = ["identifier_columns", "read_customer_table"]

log = logging.getLogger("custval.data")

_JSON = (".json", ".jsonl", ".ndjson")


def read_customer_table(
    path: str | Path, csv: CsvOptions | None = None, date_format: str | None = None
) -> pd.DataFrame:
    """The table in ``path`` (.csv, .tsv, .txt, .xlsx, .json, .jsonl, .parquet); a clear error
    when it cannot be read.

    ``csv`` says how to read a text file (delimiter, decimal mark, encoding, header, names);
    ``None`` detects them. ``date_format`` (strftime) is the format of date columns, which are
    then written as ISO dates (``2024-03-31``).

    Example
    -------
    >>> df = read_customer_table("customers.csv")  # doctest: +SKIP
    """
    p = Path(path)
    csv = csv or CsvOptions()
    if not p.exists():
        raise CustvalError(f"'{p}' does not exist", source=str(p))
    suffix = p.suffix.lower()
    separator: str | None = None
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        elif suffix == ".xlsx":
            df = read_xlsx(str(p), csv, str(p)).to_pandas().fillna("")
        elif suffix in _JSON:
            df = _read_json(p)
        else:
            df, separator = _read_text(p, csv)
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
    df = _numbers(df, csv.decimal, separator, str(p))
    return _dates(df, date_format) if date_format else df


def _read_json(p: Path) -> pd.DataFrame:
    """JSON lines (one object per line), or one JSON array of objects; values keep their
    JSON types."""
    with p.open(encoding="utf-8") as fh:
        start = fh.read(1024).lstrip()
    lines = not start.startswith("[")
    return pd.read_json(p, lines=lines, orient="records", dtype=False)


def _read_text(p: Path, csv: CsvOptions) -> tuple[pd.DataFrame, str]:
    """A delimited text file, every cell as text, by the same rules as a project's sources."""
    layout = text_layout([str(p)], csv, str(p))
    sep = "\t" if p.suffix.lower() == ".tsv" and csv.delimiter is None else layout.separator
    options: dict = {
        "dtype": str,
        "keep_default_na": False,
        "header": 0 if layout.header else None,
        "names": layout.names,
        "encoding": layout.encoding or "utf-8-sig",
    }
    if sep == "whitespace":
        # leading blanks start no empty field (CDNOW's " 00001 19970101  1   11.77")
        df = pd.read_csv(layout.files[0], sep=r"\s+", **options)
    else:
        df = pd.read_csv(layout.files[0], sep=sep, **options)
    return df, sep


def _numbers(
    df: pd.DataFrame, decimal: str | None, separator: str | None, source: str
) -> pd.DataFrame:
    """Text columns of numbers rewritten with a decimal point and without thousands
    separators, once the decimal mark is known; other columns unchanged."""
    text = [c for c in df.columns if _is_text(df[c])]
    if not text:
        return df
    cells = {c: df[c].astype("string").str.strip() for c in text}
    if decimal is None:
        decimal = _decide(cells, separator, source)
    grouped = GROUPED_COMMA_NUMBER if decimal == "," else GROUPED_DOT_NUMBER
    out = df.copy()
    for c, values in cells.items():
        filled = values[values.fillna("") != ""]
        if filled.empty or not filled.str.match(grouped).all():
            continue
        if not filled.str.contains(",", regex=False).any() and decimal == ".":
            continue
        if decimal == ",":
            rewritten = values.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
        else:
            rewritten = values.str.replace(",", "", regex=False)
        out[c] = rewritten.fillna("").astype(df[c].dtype)
    return out


def _is_text(column: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(column) or pd.api.types.is_object_dtype(column)


def _decide(cells: dict[str, pd.Series], separator: str | None, source: str) -> str:
    def count(pattern: str) -> dict[str, int]:
        return {c: int(v.str.match(pattern).fillna(False).sum()) for c, v in cells.items()}

    comma, dot = count(COMMA_DECIMAL), count(DOT_DECIMAL)
    both = {
        c: a + b
        for (c, a), b in zip(
            count(AMBIGUOUS_COMMA).items(), count(AMBIGUOUS_DOT).values(), strict=True
        )
    }
    decided = decide_decimal(sum(comma.values()), sum(dot.values()), sum(both.values()), separator)
    if decided is not None:
        return decided
    column = max(cells, key=lambda c: (both[c], comma[c]))
    values = cells[column]
    shown = values[
        values.str.match(f"{AMBIGUOUS_COMMA}|{AMBIGUOUS_DOT}|{COMMA_DECIMAL}").fillna(False)
    ]
    raise CustvalError(
        f"the numbers' decimal mark is unclear: values such as {', '.join(shown.head(3))} may be "
        "read with a decimal comma or with a thousands separator",
        source=source,
        column=column,
        count=both[column] or comma[column],
        examples=[{column: v} for v in shown.head(5)],
        hint="Say which with --decimal , (decimal comma) or --decimal . (decimal point)",
    )


def _dates(df: pd.DataFrame, date_format: str) -> pd.DataFrame:
    """Text columns whose every value is a date in ``date_format``, as ISO dates."""
    out = df.copy()
    for c in df.columns:
        if not _is_text(df[c]):
            continue
        values = df[c].astype("string").str.strip()
        filled = values[values.fillna("") != ""]
        if filled.empty:
            continue
        parsed = pd.to_datetime(filled, format=date_format, errors="coerce")
        if parsed.notna().all():
            iso = pd.to_datetime(values, format=date_format, errors="coerce").dt.strftime(
                "%Y-%m-%d"
            )
            out[c] = iso.fillna("").astype(df[c].dtype)
    return out


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
