"""``custval quickstart``: from one transactions file (and perhaps a customers file) to
everything: a project file, CLV, the value class, segments and a store.

What the quickstart decides for the user is decided here, from the data alone: the as-of date
(the day after the last purchase), the CLV holdout and the label horizon of the value class
(both shortened on a short history, so that a few months of data still give every step), and
the project file that later commands (``custval score``, ``serve``, ``export``) read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from custval.config import Project, project_from_dict
from custval.data.sources import open_source, working_connection
from custval.errors import CustvalError
from custval.flows.preparation import Prepared, reading

__all__ = [
    "PROJECT_FILE",
    "Guess",
    "Periods",
    "guess_columns",
    "periods",
    "project_toml",
    "quickstart_project",
    "read_sample",
]

#: the project file the quickstart writes into its output folder
PROJECT_FILE = "custval.toml"
#: the least history that gives a calibration period and a holdout, in weeks
MIN_WEEKS = 12
#: the longest CLV holdout and value-label horizon, in weeks: half a year and a year, as the
#: demo uses
HOLDOUT_WEEKS = 26
LABEL_WEEKS = 52


@dataclass(frozen=True)
class Periods:
    """The dates every step of the quickstart uses, from the span of the transactions."""

    first: date
    as_of: date
    calibration_end: date
    label_weeks: int

    @property
    def weeks(self) -> float:
        return (self.as_of - self.first).days / 7

    @property
    def holdout_weeks(self) -> int:
        return (self.as_of - self.calibration_end).days // 7

    def summary(self) -> dict[str, Any]:
        return {
            "first_purchase": self.first.isoformat(),
            "as_of": self.as_of.isoformat(),
            "calibration_end": self.calibration_end.isoformat(),
            "holdout_end": self.as_of.isoformat(),
            "label_weeks": self.label_weeks,
        }


def periods(prepared: Prepared, as_of: date | None = None) -> Periods:
    """The as-of date (the day after the last purchase unless given), a holdout of a third of
    the history up to 26 weeks, and a label horizon of half of it up to 52 weeks."""
    tx = prepared.tables["transactions"]
    first_ts, last_ts = (
        tx.aggregate(first=tx.timestamp.min(), last=tx.timestamp.max()).to_pandas().iloc[0]
    )
    if pd.isna(first_ts):
        raise CustvalError("the transactions hold no purchase with a date", source="transactions")
    first = pd.Timestamp(first_ts).date()
    as_of = as_of or pd.Timestamp(last_ts).date() + timedelta(days=1)
    weeks = (as_of - first).days // 7
    if weeks < MIN_WEEKS:
        raise CustvalError(
            f"the transactions span {weeks} weeks ({first} to {as_of}): the quickstart needs "
            f"at least {MIN_WEEKS}, to fit the models on one part and check them on the next",
            source="transactions",
            hint="Give a longer history, or use 'custval clv -t' with your own periods",
        )
    holdout = min(HOLDOUT_WEEKS, weeks // 3)
    return Periods(
        first=first,
        as_of=as_of,
        calibration_end=as_of - timedelta(weeks=holdout),
        label_weeks=min(LABEL_WEEKS, weeks // 2),
    )


def _source(
    uri: Path, kind: str, columns: dict[str, str], csv: dict[str, Any], date_format: str | None
) -> dict[str, Any]:
    source: dict[str, Any] = {"kind": kind, "uri": str(uri.resolve())}
    renamed = {k: v for k, v in columns.items() if v and v != k}
    if renamed:
        source["columns"] = renamed
    if csv:
        source["csv"] = csv
    if date_format:
        source["date_formats"] = [date_format]
    return source


def quickstart_project(
    transactions: Path,
    *,
    columns: dict[str, str],
    customers: Path | None = None,
    customer_columns: dict[str, str] | None = None,
    csv: dict[str, Any] | None = None,
    date_format: str | None = None,
    out_dir: Path,
    as_of: date,
) -> dict[str, Any]:
    """The project, as the dict a project file holds: the transactions (and customers) source,
    the store and CLV settings, rooted in ``out_dir``."""
    sources = {
        "transactions": _source(transactions, "transactions", columns, csv or {}, date_format)
    }
    if customers is not None:
        sources["customers"] = _source(
            customers, "customers", customer_columns or {}, csv or {}, date_format
        )
    return {
        "as_of": as_of.isoformat(),
        "time_unit": "weeks",
        "store": "custval.duckdb",
        "clv": {"method": "btyd", "discount_per_year": 0.10},
        "sources": sources,
    }


def load_quickstart(data: dict[str, Any], out_dir: Path) -> Project:
    return project_from_dict(data, root=out_dir.resolve(), origin="custval quickstart")


def project_toml(data: dict[str, Any]) -> str:
    """``data`` as TOML: the few shapes a quickstart project has (strings, numbers, lists of
    strings, one level of tables and their sub-tables). JSON's string escapes are TOML's."""
    lines = [
        "# written by `custval quickstart`: edit it and rerun any command with -c on this file"
    ]
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    lines += [f"{k} = {json.dumps(v)}" for k, v in scalars.items()]
    for name, value in data.items():
        if isinstance(value, dict) and name != "sources":
            lines += ["", f"[{name}]", *(f"{k} = {json.dumps(v)}" for k, v in value.items())]
    for name, source in data.get("sources", {}).items():
        lines += ["", f"[sources.{name}]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in source.items() if not isinstance(v, dict)]
        for sub, table in source.items():
            if isinstance(table, dict):
                lines += [f"[sources.{name}.{sub}]"]
                lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


#: words in a column's name that tell its role, most telling first
ROLE_WORDS = {
    "timestamp": ("date", "timestamp", "time", "day", "ts", "datetime", "purchased", "ordered"),
    "amount": ("amount", "value", "revenue", "sales", "spend", "total", "price", "dollar", "net"),
    "customer_id": ("customer", "client", "account", "user", "member", "buyer", "cust", "id"),
}
#: the names ``custval clv -t`` takes by default for each role
DEFAULT_NAMES = {
    "customer_id": ("customer_id",),
    "timestamp": ("date", "timestamp"),
    "amount": ("amount",),
}
_SAMPLE_ROWS = 2000


def read_sample(project: Project) -> pd.DataFrame:
    """The first rows of the project's transactions as they are in the file."""
    # only the transactions: a customers file is not needed to tell the columns' roles
    spec = project.sources["transactions"]
    with reading(spec):
        raw = open_source(spec, working_connection())
        return raw.limit(_SAMPLE_ROWS).to_pandas()


@dataclass
class Guess:
    """The columns the quickstart takes for each role, and how it knows."""

    columns: dict[str, str]
    date_format: str | None = None
    notes: list[str] = field(default_factory=list)


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def _is_compact_date(text: pd.Series) -> bool:
    """Every value is eight digits that read as a date: 19970101."""
    if not text.str.fullmatch(r"\d{8}").all():
        return False
    return pd.to_datetime(text, format="%Y%m%d", errors="coerce").notna().all()


def _is_date(text: pd.Series) -> bool:
    return _is_compact_date(text) or bool(
        pd.to_datetime(text, errors="coerce", format="ISO8601").notna().mean() > 0.95
    )


def _is_amount(text: pd.Series) -> bool:
    numbers = pd.to_numeric(text.str.replace(",", "", regex=False), errors="coerce")
    return bool(numbers.notna().mean() > 0.95 and (numbers != numbers.round()).any())


_CHECKS = {"timestamp": _is_date, "amount": _is_amount, "customer_id": lambda _t: True}


def _by_name(role: str, free: list[str], sample: pd.DataFrame) -> str | None:
    for word in ROLE_WORDS[role]:
        for column in free:
            if word in _words(column) and _CHECKS[role](sample[column]):
                return column
    return None


def _by_content(role: str, free: list[str], sample: pd.DataFrame) -> str | None:
    fits = [c for c in free if _CHECKS[role](sample[c])]
    return fits[0] if fits else None


def guess_columns(sample: pd.DataFrame, given: dict[str, str | None]) -> Guess:
    """The column of each role (customer_id, timestamp, amount): the one named on the command
    line, else one under custval's name, else one whose name says it (``dollar_value`` is an
    amount) and whose values fit, else the first whose values fit (dates, amounts with
    cents, then the first column left for the id). ``sample`` holds the file's first rows as
    text."""
    sample = sample.head(_SAMPLE_ROWS).astype("string").fillna("").apply(lambda s: s.str.strip())
    chosen = {role: name for role, name in given.items() if name}
    notes = []
    for role in ("timestamp", "amount", "customer_id"):
        if role in chosen:
            continue
        default = next((n for n in DEFAULT_NAMES[role] if n in sample.columns), None)
        if default is not None:
            chosen[role] = default
            continue
        free = [c for c in sample.columns if c not in chosen.values()]
        column = _by_name(role, free, sample) or _by_content(role, free, sample)
        if column is None:
            raise CustvalError(
                f"no column of the transactions looks like the {role.replace('_', ' ')}: "
                f"the columns are {', '.join(map(str, sample.columns))}",
                source="transactions",
                hint=f"Name it with {_FLAGS[role]}",
            )
        chosen[role] = column
        notes.append(f"{_FLAGS[role]} {column}")
    date_format = "%Y%m%d" if _is_compact_date(sample[chosen["timestamp"]]) else None
    return Guess(chosen, date_format, notes)


_FLAGS = {"customer_id": "--customer-id", "timestamp": "--date", "amount": "--amount"}
