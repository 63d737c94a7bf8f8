"""Errors that users see.

Every error is one paragraph that names what went wrong and where: the source, the column, how
many rows, and up to five example rows, so that the fix can start without a debugger. The CLI
prints the message and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MAX_EXAMPLES = 5


def _fmt_value(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_examples(rows: Sequence[Mapping[str, Any]]) -> str:
    """Render example rows as ``{col=value, ...}; {...}`` (at most five)."""
    parts = []
    for row in list(rows)[:MAX_EXAMPLES]:
        parts.append("{" + ", ".join(f"{k}={_fmt_value(v)}" for k, v in row.items()) + "}")
    return "; ".join(parts)


class CustvalError(Exception):
    """Base of every error custval reports to users.

    Parameters
    ----------
    problem:
        What is wrong, as a sentence fragment ("3 rows have an unparseable date").
    source:
        Name of the source (as in ``custval.toml``) the problem was found in.
    column:
        The user's column name, when one column is at fault.
    count:
        How many rows are affected.
    examples:
        Up to five example rows (mappings of column name to value).
    hint:
        What the user can do about it.

    Example
    -------
    >>> str(CustvalError("2 rows have no id", source="crm", column="crm_id", count=2))
    "source 'crm', column 'crm_id': 2 rows have no id."
    """

    exit_code = 2

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        column: str | None = None,
        count: int | None = None,
        examples: Sequence[Mapping[str, Any]] | None = None,
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.column = column
        self.count = count
        self.examples = list(examples or [])[:MAX_EXAMPLES]
        self.hint = hint
        super().__init__(self.message)

    @property
    def where(self) -> str:
        parts = []
        if self.source:
            parts.append(f"source '{self.source}'")
        if self.column:
            parts.append(f"column '{self.column}'")
        return ", ".join(parts)

    @property
    def message(self) -> str:
        text = self.problem.rstrip(".")
        if self.where:
            text = f"{self.where}: {text}"
        text += "."
        if self.examples:
            text += f" Examples: {format_examples(self.examples)}."
        if self.hint:
            text += f" {self.hint.rstrip('.')}."
        return text


class ConfigError(CustvalError):
    """The project file is missing, unreadable or inconsistent."""


class SourceError(CustvalError):
    """A source cannot be opened or read (missing file, unreachable database, failing API)."""


class EngineError(CustvalError):
    """The engine the project runs on cannot be used: Spark unreachable or refusing the
    session, a pyspark outside the supported range, no address to reach it."""


class ContractError(CustvalError):
    """A source's data breaks its contract (missing column, wrong type, out of range)."""


class FitError(CustvalError):
    """The data do not determine a model: too few customers, no repeat buyers, a likelihood with
    no interior maximum. Code that can go on without the model (a leaderboard candidate, the
    BTYD columns beside a machine-learned CLV) catches this, and only this."""


class IdentityError(CustvalError):
    """The id map is inconsistent (one id linked to two customers)."""


class DataValidationError(CustvalError):
    """Several contract errors found at once; each keeps its own message."""

    def __init__(self, errors: Sequence[CustvalError]) -> None:
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(
            first.problem,
            source=first.source,
            column=first.column,
            count=first.count,
            examples=first.examples,
            hint=first.hint,
        )

    @property
    def message(self) -> str:
        if len(self.errors) == 1:
            return self.errors[0].message
        return f"{len(self.errors)} problems in the data: " + " ".join(
            f"({i}) {e.message}" for i, e in enumerate(self.errors, 1)
        )


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A database or library error as one line for a message, without SQL excerpts and caret
    markers, at most ``limit`` characters."""
    lines = []
    for raw in str(exc).splitlines():
        line = raw.strip()
        if line.startswith("Possible Solution"):
            break
        # "LINE 1: ..." and carets point into SQL the user may not have written; DuckDB's
        # "Original Line" is a row of the user's data, which may name a person.
        if not line or line.startswith(("LINE ", "Original Line")) or set(line) <= {"^", " "}:
            continue
        lines.append(" ".join(line.split()))
    # The message goes inside a sentence that the error ends with a full stop.
    text = " ".join(lines).rstrip(" .!?") or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
