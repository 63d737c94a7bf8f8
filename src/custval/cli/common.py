"""What every command shares: the consoles, the error wrapper and exit codes, --quiet and
--verbose, the progress, the project loader and the output writers.

Every command exits 0 on success, 1 when validation finds errors in the data, and 2 on bad input
(missing file, unreachable database, invalid project file...), with a one-paragraph message and
no traceback. Set CUSTVAL_DEBUG=1 to see tracebacks; docs/environment.md lists every variable.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from custval.errors import CustvalError, format_examples

if TYPE_CHECKING:
    from custval.config import CsvOptions, Project

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.

out = Console()
err = Console(stderr=True)
log = logging.getLogger("custval.cli")

# --quiet and --verbose, added to every command by `friendly` and shown under this heading
OUTPUT_PANEL = "Output"
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Print only errors and the result (or --json): no progress, notes or warnings.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Also print each step with its time, and custval's debug log lines "
        "(CUSTVAL_LOG_LEVEL=DEBUG for this run).",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass
class Verbosity:
    """How much a command prints besides its result; set by --quiet and --verbose."""

    quiet: bool = False
    verbose: bool = False


#: the running command's verbosity: `steps`, `note` and the log read it
verbosity = Verbosity()


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn custval's errors into a one-paragraph message and exit code 2, and give the command
    --quiet and --verbose (under the "Output" heading of its --help)."""
    return _Friendly(fn)


class _Friendly:
    """A command as :func:`friendly` makes it: Typer reads its ``__signature__``, which adds
    --quiet and --verbose to the command's own flags."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn

    @functools.cached_property
    def __signature__(self) -> inspect.Signature:
        # computed when Typer builds the command, once the command's module is complete
        return _with_output_flags(self._fn)

    def __call__(
        self, *args: Any, quiet: bool | None = None, verbose: bool | None = None, **kwargs: Any
    ) -> Any:
        before = Verbosity(verbosity.quiet, verbosity.verbose)
        try:
            # a command called by another (demo) keeps its caller's verbosity
            if quiet is not None or verbose is not None:
                set_verbosity(bool(quiet), bool(verbose))
            if log.isEnabledFor(logging.DEBUG):
                _log_call(self._fn.__name__, kwargs)
            return self._fn(*args, **kwargs)
        except CustvalError as exc:
            if os.environ.get("CUSTVAL_DEBUG"):
                raise
            # messages quote the user's data, which may hold rich markup such as "[/b]"
            err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; nothing was written")
            raise typer.Exit(130) from None
        finally:
            verbosity.quiet, verbosity.verbose = before.quiet, before.verbose


def _log_call(name: str, flags: dict[str, Any]) -> None:
    """The command and its flags as a debug line; passwords in URLs hidden."""
    from custval.config import mask_url

    shown = {k: mask_url(v) if isinstance(v, str) else str(v) for k, v in flags.items()}
    log.debug("custval %s %s", name, shown)


def _with_output_flags(fn: Callable[..., Any]) -> inspect.Signature:
    """``fn``'s signature plus --quiet and --verbose, which Typer reads to build the command."""
    # Typer reads __signature__ as it is, so the string annotations are evaluated here
    sig = inspect.signature(fn, eval_str=True)
    taken = {"quiet", "verbose"} & set(sig.parameters)
    if taken:
        raise TypeError(f"{fn.__name__} has its own {taken}: friendly adds them to every command")
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False, annotation=kind)
        for name, kind in (("quiet", QuietOpt), ("verbose", VerboseOpt))
    ]
    return sig.replace(parameters=[*sig.parameters.values(), *added])


def set_verbosity(quiet: bool, verbose: bool) -> None:
    """Apply --quiet / --verbose and CUSTVAL_LOG_LEVEL: custval's log lines go to stderr, one
    line each, at DEBUG with --verbose, ERROR with --quiet, else the variable's level (WARNING
    by default)."""
    if quiet and verbose:
        raise CustvalError("--quiet and --verbose contradict each other", hint="Give one of them")
    verbosity.quiet, verbosity.verbose = quiet, verbose
    name = os.environ.get("CUSTVAL_LOG_LEVEL", "").strip().upper() or "WARNING"
    if name not in LOG_LEVELS:
        raise CustvalError(
            f"CUSTVAL_LOG_LEVEL '{name}' is not a log level",
            hint=f"Set it to one of {', '.join(LOG_LEVELS)}, or unset it",
        )
    level = logging.DEBUG if verbose else logging.ERROR if quiet else getattr(logging, name)
    logger = logging.getLogger("custval")
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        logger.addHandler(handler)
        # the handler is custval's own line on stderr; the root's handlers would print it twice
        logger.propagate = False
    if quiet:
        # "only errors": library warnings (convergence, deprecations) are not errors
        warnings.simplefilter("ignore")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to whatever ``sys.stderr`` is at the time (tests swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def note(text: str) -> None:
    """A remark on stderr (what was detected, assumed or skipped), silenced by --quiet."""
    if not verbosity.quiet:
        err.print(f"[dim]note:[/] {escape(text)}", highlight=False, soft_wrap=True)


@contextmanager
def steps(total: int, quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """Progress through ``total`` steps: call the yielded function with each step's name as it
    starts.

    On a terminal, a rich bar (with --verbose, also a line per finished step with its time); on
    anything else (a log, a pipe), one line per finished step on stderr, such as
    ``[2/5] fitting the purchase model ... 1.2 s``; nothing with --quiet or ``quiet``.
    CUSTVAL_PROGRESS chooses: ``bar``, ``lines`` or ``off`` (1 means bar).
    """
    mode = _progress_mode()
    if quiet or verbosity.quiet or mode == "off":
        yield lambda _step: None
        return
    clock = _StepClock(total, lines=mode == "lines" or verbosity.verbose)
    if mode == "lines":
        yield clock.start
        clock.finish()
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
            clock.start(step)
            bar.update(task, description=step, completed=clock.done, total=clock.total)

        yield advance
        clock.finish()
        bar.update(task, completed=clock.total)


def _progress_mode() -> str:
    """``bar``, ``lines`` or ``off``: CUSTVAL_PROGRESS, else a bar on a terminal."""
    chosen = os.environ.get("CUSTVAL_PROGRESS", "").strip().lower()
    if chosen in {"off", "0", "no", "none", "false"}:
        return "off"
    if chosen == "lines":
        return "lines"
    if chosen or err.is_terminal:
        return "bar"
    return "lines"


class _StepClock:
    """Times the steps; with ``lines``, prints ``[i/n] step ... 1.2 s`` as each one ends."""

    def __init__(self, total: int, lines: bool) -> None:
        self.total, self.lines = total, lines
        self.done = 0
        self._step: str | None = None
        self._began = time.perf_counter()

    def start(self, step: str) -> None:
        self.finish()
        self._step, self._began = step, time.perf_counter()

    def finish(self) -> None:
        if self._step is None:
            return
        self.done += 1
        # flows may take a step more than the command planned for: the count stays true
        self.total = max(self.total, self.done)
        seconds = time.perf_counter() - self._began
        if not self.lines:
            log.debug("step %s took %.3f s", self._step, seconds)
        else:
            err.print(
                f"[{self.done}/{self.total}] {self._step} ... {seconds:.1f} s",
                highlight=False,
                soft_wrap=True,
                markup=False,
            )
        self._step = None


class FlagsCommand(TyperCommand):
    """A command whose --help shows a flag as a flag: Typer's rich help labels every option
    with its type, so that ``--compare <bool>`` read as if it took a value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            self.help = reflow(self.help)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _untyped_flags(super().get_params(ctx))


def reflow(text: str) -> str:
    """A docstring's paragraphs each as one line, so that the help fills the terminal's width
    (Typer re-wraps the first paragraph alone and keeps the later ones' line breaks, which
    then break again mid-line); a paragraph of a list or of indented lines keeps its lines."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    kept = []
    for para in paragraphs:
        lines = para.splitlines()
        listed = any(line.startswith((" ", "-", "*", "\b")) for line in lines)
        kept.append(para if listed else " ".join(line.strip() for line in lines))
    return "\n\n".join(kept)


class FlagsGroup(TyperGroup):
    """The app and its sub-apps (api-key), with flags shown as flags like :class:`FlagsCommand`."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _untyped_flags(super().get_params(ctx))


def _untyped_flags(params: list[click.Parameter]) -> list[click.Parameter]:
    # an empty metavar is what the help prints in place of the type; a flag takes no value
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


# the flags several commands share, declared once so that their help stays the same everywhere
ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="The project file.", show_default=True)
]
SeedOpt = Annotated[int, typer.Option(help="Random seed.")]
TopKOpt = Annotated[int, typer.Option(help="Reasons per customer.", min=1)]
JsonSummaryOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary.")]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="Where the sources are read and the features computed: duckdb (this process), "
        "postgres (the database of \\[engine] url) or spark (default: the project's \\[engine] "
        "kind; docs/scale.md).",
    ),
]
#: the models folder of the registry's commands (monitor, retrain, models ...)
ModelsFolderOpt = Annotated[
    Path | None,
    typer.Option("--models", help="The models folder (default: models/ beside the project)."),
]

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

    def csv(self) -> CsvOptions:
        """These options as the project file's ``[sources.X.csv]`` settings."""
        from custval.config import CsvOptions

        return CsvOptions(
            delimiter=self.delimiter,
            header=self.header,
            names=list(self.names) if self.names else None,
            encoding=self.encoding,  # type: ignore[arg-type]
            decimal=self.decimal,  # type: ignore[arg-type]
        )


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


def load(config: Path, engine: str | None = None) -> Project:
    """The project file, with the engine of ``--engine`` when given."""
    from custval.config import load_project, with_engine

    project = load_project(config)
    return project if engine is None else with_engine(project, engine, flag="--engine")


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


#: the table formats :func:`write_table` writes, by extension
TABLE_FORMATS = {".parquet": "Parquet", ".csv": "CSV"}


def check_output(path: Path, flag: str = "--out") -> None:
    """Refuse an output path that cannot be written before any work is done: a folder, a
    file type custval does not write (``-o x.xlsx`` must not be Parquet under that name), or
    a place that is not writable."""
    if path.is_dir():
        raise CustvalError(
            f"{flag} '{path}' is a folder", hint="Name a file such as features.parquet"
        )
    if path.suffix.lower() not in TABLE_FORMATS:
        what = f"'{path.suffix}' files" if path.suffix else "a file without an extension"
        raise CustvalError(
            f"{flag} '{path}': custval writes tables as .parquet or .csv, not {what}",
            hint=f"Name it {path.stem or 'out'}.parquet or {path.stem or 'out'}.csv"
            + (" (spreadsheets open .csv files)" if path.suffix.lower() in _SHEETS else ""),
        )
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CustvalError(f"{flag} '{path}': '{parent}' is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise CustvalError(f"{flag} '{path}': '{parent}' is not writable")


_SHEETS = {".xlsx", ".xls", ".ods", ".xlsm"}


def parse_date(text: str, flag: str = "--as-of") -> date:
    """The date of ``flag``'s value, YYYY-MM-DD; the error names the flag that was given."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CustvalError(f"{flag} '{text}' is not a date like 2025-06-30 (YYYY-MM-DD)") from None


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
    """Parquet or CSV by the file's extension (see :func:`check_output`); readers see the
    whole file or none."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if path.suffix.lower() == ".csv":
            pacsv.write_csv(table, tmp)
        else:
            # dictionaries pay for repeated values only: on a million distinct amounts they
            # cost 40% of the write and save little
            words = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
            pq.write_table(table, tmp, use_dictionary=words)
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


#: --report on the commands whose results are worth a picture (clv, evaluate, train, segment,
#: quickstart)
ReportOpt = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Also write a one-file HTML report of the results: charts and tables, the "
        "scripts inside, no request when opened (send it, open it offline).",
        metavar="FILE.html",
    ),
]


def check_report(path: Path | None, flag: str = "--report") -> None:
    """Refuse a report path that cannot be written, before any work is done."""
    if path is None:
        return
    if path.is_dir():
        raise CustvalError(f"{flag} '{path}' is a folder", hint="Name a file such as report.html")
    if path.suffix.lower() not in (".html", ".htm"):
        raise CustvalError(
            f"{flag} '{path}': a report is an HTML file",
            hint=f"Name it {path.stem or 'report'}.html",
        )
    if not path.parent.exists():
        raise CustvalError(
            f"{flag} '{path}': the folder '{path.parent}' does not exist",
            hint="Create it first, or write the report elsewhere",
        )


def write_html_report(
    path: Path | None, title: str, sections: list[Any], subtitle: str = ""
) -> None:
    """The report, written all at once (a failure leaves no half file), and its path said."""
    if path is None:
        return
    from custval.flows.html import render_report, write_report

    command = "custval " + " ".join(sys.argv[1:])
    write_report(path, render_report(title, sections, subtitle=subtitle, command=command))
    size = path.stat().st_size / 2**20
    out.print(f"report: {path} ({size:.1f} MB)", highlight=False)
