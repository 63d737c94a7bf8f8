"""What every command shares: the consoles, the error wrapper and exit codes, the progress bar,
the project loader and the output writers.

Every command exits 0 on success, 1 when validation finds errors in the data, and 2 on bad input
(missing file, unreachable database, invalid project file...), with a one-paragraph message and
no traceback. Set CUSTVAL_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from custval.errors import CustvalError, format_examples

if TYPE_CHECKING:
    from custval.config import Project

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.

out = Console()
err = Console(stderr=True)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn custval's errors into a one-paragraph message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CustvalError as exc:
            if os.environ.get("CUSTVAL_DEBUG"):
                raise
            # messages quote the user's data, which may hold rich markup such as "[/b]"
            err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; nothing was written")
            raise typer.Exit(130) from None

    return wrapper


@contextmanager
def steps(total: int, quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """A rich progress bar advanced by calling the yielded function with a step's name."""
    if quiet or (not err.is_terminal and not os.environ.get("CUSTVAL_PROGRESS")):
        yield lambda _step: None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<40}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=total)

        def advance(step: str) -> None:
            bar.update(task, description=step, advance=1)

        yield advance
        bar.update(task, completed=total)


# the flags several commands share, declared once so that their help stays the same everywhere
ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="The project file.", show_default=True)
]
SeedOpt = Annotated[int, typer.Option(help="Random seed.")]
TopKOpt = Annotated[int, typer.Option(help="Reasons per customer.", min=1)]
JsonSummaryOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary.")]

# how a table file is read: the same flags on every command that reads one (clv -t, evaluate,
# train --data, segment --data, predict, quickstart), shown under one heading in --help
FILE_PANEL = "Reading the file"
DelimiterOpt = Annotated[
    str | None,
    typer.Option(
        "--delimiter",
        help="Field separator of a text file: a character, 'tab', or 'whitespace' for runs of "
        "blanks (default: detected).",
        rich_help_panel=FILE_PANEL,
    ),
]
DecimalOpt = Annotated[
    str | None,
    typer.Option(
        "--decimal",
        help="Decimal mark of the numbers: '.' or ',' (default: detected when the file leaves "
        "no doubt, else an error asks for this flag).",
        rich_help_panel=FILE_PANEL,
    ),
]
EncodingOpt = Annotated[
    str | None,
    typer.Option(
        "--encoding",
        help="Text encoding: utf-8, cp1252 or latin-1 (default: UTF-8, else cp1252 when "
        "detected, with a note).",
        rich_help_panel=FILE_PANEL,
    ),
]
NoHeaderOpt = Annotated[
    bool,
    typer.Option(
        "--no-header",
        help="The file has no header row: its columns are named by --names "
        "(else column1, column2...).",
        rich_help_panel=FILE_PANEL,
    ),
]
NamesOpt = Annotated[
    str | None,
    typer.Option(
        "--names",
        help="Column names in order, comma-separated, for a file without a header row.",
        rich_help_panel=FILE_PANEL,
    ),
]
DateFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--date-format",
        help="Format of the dates, as in strftime: %d/%m/%Y, %Y%m%d... (default: ISO dates "
        "and the common formats whose day/month order is not in doubt).",
        rich_help_panel=FILE_PANEL,
    ),
]


@dataclass(frozen=True)
class FileOptions:
    """How to read a table file, from the flags above; ``None`` means detect."""

    delimiter: str | None = None
    decimal: str | None = None
    encoding: str | None = None
    header: bool = True
    names: tuple[str, ...] | None = None
    date_format: str | None = None


def file_options(
    delimiter: str | None = None,
    decimal: str | None = None,
    encoding: str | None = None,
    no_header: bool = False,
    names: str | None = None,
    date_format: str | None = None,
) -> FileOptions:
    """The flags of :data:`FILE_PANEL`, checked; a clear error names the flag at fault."""
    if delimiter is not None:
        delimiter = {"tab": "\t", "\\t": "\t", "space": " "}.get(delimiter.lower(), delimiter)
        if delimiter != "whitespace" and len(delimiter) != 1:
            raise CustvalError(
                f"--delimiter '{delimiter}' is not one character",
                hint="Give one character such as ';', or 'tab' or 'whitespace'",
            )
    if decimal is not None and decimal not in {".", ","}:
        raise CustvalError(f"--decimal '{decimal}' is not '.' or ','")
    if encoding is not None:
        encoding = encoding.lower().replace("_", "-")
        encoding = {"utf8": "utf-8", "latin1": "latin-1", "iso-8859-1": "latin-1"}.get(
            encoding, encoding
        )
        encoding = {"windows-1252": "cp1252"}.get(encoding, encoding)
        if encoding not in {"utf-8", "cp1252", "latin-1"}:
            raise CustvalError(
                f"--encoding '{encoding}' is not one custval reads",
                hint="Give utf-8, cp1252 or latin-1",
            )
    listed = tuple(n.strip() for n in names.split(",")) if names else None
    if listed is not None and (not all(listed) or len(set(listed)) != len(listed)):
        raise CustvalError(
            f"--names '{names}' must list distinct, non-empty names separated by commas"
        )
    if date_format is not None and "%" not in date_format:
        raise CustvalError(
            f"--date-format '{date_format}' has no % directive",
            hint="Write it as in strftime, e.g. %d/%m/%Y or %Y%m%d",
        )
    return FileOptions(delimiter, decimal, encoding, not no_header, listed, date_format)


def load(config: Path) -> Project:
    from custval.config import load_project

    return load_project(config)


def print_reports(reports: list) -> int:
    """One line per source, then one indented paragraph per finding; returns the error count."""
    n_errors = 0
    for rep in reports:
        errors = sum(f.severity == "error" for f in rep.findings)
        n_errors += errors
        mark = "[red]x[/]" if errors else ("[yellow]![/]" if rep.findings else "[green]ok[/]")
        out.print(f"{mark} {escape(rep.source)} ({rep.kind}): {rep.rows:,} rows", highlight=False)
        for f in rep.findings:
            style = "red" if f.severity == "error" else "yellow"
            text = f"{f.column}: {f.problem}" if f.column else f.problem
            if f.examples:
                text += f". Examples: {examples(f.examples)}"
            if f.hint:
                text += f". {f.hint}"
            out.print(
                f"    [{style}]{f.severity}[/] {escape(text)}", highlight=False, soft_wrap=True
            )
    return n_errors


def examples(rows: list[dict]) -> str:
    return format_examples(rows)


def print_rules(prepared: Any) -> None:
    table = Table(title="cleaning and identity (rows changed / dropped)")
    table.add_column("source")
    table.add_column("rule")
    table.add_column("changed", justify="right")
    table.add_column("dropped", justify="right")
    for r in prepared.rules:
        if r.changed or r.dropped:
            table.add_row(escape(r.source), escape(r.rule), f"{r.changed:,}", f"{r.dropped:,}")
    out.print(table)


def check_output(path: Path) -> None:
    """Refuse an output path that cannot be written before any work is done."""
    if path.is_dir():
        raise CustvalError(
            f"--out '{path}' is a folder", hint="Name a file such as features.parquet"
        )
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CustvalError(f"--out '{path}': '{parent}' is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise CustvalError(f"--out '{path}': '{parent}' is not writable")


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CustvalError(f"--as-of '{text}' is not a date like 2025-06-30") from None


def plain(record: dict[str, Any]) -> dict[str, Any]:
    """A record with NumPy scalars and NaN made JSON-friendly."""

    out: dict[str, Any] = {}
    for k, v in record.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def write_table(table: Any, path: Path) -> None:
    """Parquet or CSV by the file's extension; readers see the whole file or none."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if path.suffix.lower() == ".csv":
            pacsv.write_csv(table, tmp)
        else:
            pq.write_table(table, tmp)
        tmp.replace(path)
    except OSError as exc:
        raise CustvalError(f"cannot write '{path}': {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return escape(str(value))
