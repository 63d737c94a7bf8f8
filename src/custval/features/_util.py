"""Small expression helpers shared by the feature groups."""

from __future__ import annotations

import re
from datetime import date, datetime, time

import ibis
import ibis.expr.types as ir


def cutoff(as_of: date) -> ir.TimestampScalar:
    """The first instant that features may not see: midnight at the start of ``as_of``."""
    return ibis.timestamp(datetime.combine(as_of, time()))


def days_between(later: ir.DateValue, earlier: ir.DateValue) -> ir.IntegerValue:
    """Whole calendar days from ``earlier`` to ``later``."""
    return later.delta(earlier, unit="day")


def safe_ratio(num: ir.NumericValue, den: ir.NumericValue) -> ir.FloatingValue:
    """num / den, null where den is 0 or null."""
    return ibis.ifelse(den == 0, ibis.null("float64"), num.cast("float64") / den)


def slug(value: str) -> str:
    """A column-name-safe form of a category value ("Home & Garden" -> "home_garden")."""
    s = re.sub(r"[^0-9a-z]+", "_", value.lower()).strip("_")
    return s or "blank"


def column_names(prefix: str, values: list[str]) -> dict[str, str]:
    """Column names ``<prefix><slug>`` for values, made unique where two values share a slug
    ("home & garden" and "home-garden" become ..._home_garden and ..._home_garden_2)."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for value in values:
        base = f"{prefix}{slug(value)}"
        name, i = base, 2
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        names[value] = name
    return names


def distinct_values(column: ir.Column, exclude: tuple[str, ...] = ()) -> list[str]:
    """The sorted distinct non-null values of a (small-cardinality) column."""
    values = column.name("v").as_table().distinct().to_pyarrow().column("v").to_pylist()
    return sorted(v for v in values if v is not None and v not in exclude)
