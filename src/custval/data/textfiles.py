"""Text files as people have them: their encoding, field separator, header and decimal mark.

Exports from spreadsheets and old systems arrive in cp1252 rather than UTF-8, separated by ``;``
with decimal commas (``11,77``), by runs of blanks (CDNOW's ``" 00001 19970101  1   11.77"``),
or without a header. :func:`text_layout` settles how to read a set of files before DuckDB
sees them, and says what it decided (a note in the ``custval.data`` log, shown on stderr);
:func:`decide_decimal` settles the decimal mark from counts of telling values. What is not
clear is an error that names the flag to give, never a silent guess that scales amounts.

Example
-------
>>> import pyarrow as pa

from custval.config import CsvOptions
>>> layout = text_layout(["sales.csv"], CsvOptions(), "sales")  # doctest: +SKIP
>>> layout.delimiter, layout.header  # doctest: +SKIP
(';', True)
"""

from __future__ import annotations

import atexit
import codecs
import csv
import gzip
import io
import logging
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from custval.config import CsvOptions
from custval.errors import CustvalError

__all__ = [
    "AMBIGUOUS_COMMA",
    "AMBIGUOUS_DOT",
    "COMMA_DECIMAL",
    "DOT_DECIMAL",
    "GROUPED_COMMA_NUMBER",
    "GROUPED_DOT_NUMBER",
    "TextLayout",
    "decide_decimal",
    "looks_like_data",
    "read_xlsx",
    "text_layout",
]

log = logging.getLogger("custval.data")

# The decimal mark. Each pattern matches one trimmed value; RE2 (DuckDB) and Python read them
# alike. A comma is surely decimal after 1-2 or 4+ digits' worth of fraction, after a leading 0,
# after 4+ integer digits, or after dots that group thousands ("1.234,50"); the dot likewise.
_SIGN = r"^\s*[-+]?"
COMMA_DECIMAL = _SIGN + r"(\d{1,3}(\.\d{3})+,\d+|\d+,(\d{1,2}|\d{4,})|0,\d+|\d{4,},\d+)\s*$"
DOT_DECIMAL = _SIGN + r"(\d{1,3}(,\d{3})+\.\d+|\d+\.(\d{1,2}|\d{4,})|0\.\d+|\d{4,}\.\d+)\s*$"
# "1,234" is 1234 with a decimal point and 1.234 with a decimal comma: alone, it says nothing
AMBIGUOUS_COMMA = _SIGN + r"[1-9]\d{0,2}(,\d{3})+\s*$"
AMBIGUOUS_DOT = _SIGN + r"[1-9]\d{0,2}(\.\d{3})+\s*$"
# what a number may look like once its decimal mark is known (thousands grouped by the other)
GROUPED_COMMA_NUMBER = _SIGN + r"(\d{1,3}(\.\d{3})+|\d+)(,\d+)?\s*$"
GROUPED_DOT_NUMBER = _SIGN + r"(\d{1,3}(,\d{3})+|\d+)(\.\d+)?\s*$"

_DATA_FIELD = re.compile(
    r"^\s*[-+]?(\d+([.,]\d+)*|\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T]\d{1,2}:\d{2}(:\d{2})?)?)\s*$"
)
_CANDIDATES = (",", ";", "\t", "|")
_HEAD_BYTES = 64 * 1024
_CHUNK = 1 << 20


@dataclass(frozen=True)
class TextLayout:
    """How to read a set of text files: the files to give DuckDB (UTF-8 copies of files in
    cp1252), the encoding DuckDB reads natively (None for UTF-8), the field separator
    (``"whitespace"`` for runs of blanks; None for DuckDB to detect), the header and names."""

    files: list[str]
    encoding: str | None
    delimiter: str | None
    separator: str
    header: bool
    names: list[str] | None


def decide_decimal(comma: int, dot: int, ambiguous: int, separator: str | None) -> str | None:
    """The decimal mark told by counts of values that are surely decimal commas, surely
    decimal points, and ambiguous (``1,234``); None when nothing settles it.

    In a comma-separated file a comma inside a value is quoted, and the convention there is
    the decimal point; in a ``;``- or tab-separated export the comma may be either.

    >>> decide_decimal(12, 0, 3, ";"), decide_decimal(0, 0, 3, ","), decide_decimal(0, 0, 3, ";")
    (',', '.', None)
    """
    if comma and not dot:
        return ","
    if dot and not comma:
        return "."
    if comma and dot:
        return None
    if ambiguous and separator not in {",", None}:
        return None
    return "."


def looks_like_data(fields: list[str]) -> bool:
    """Whether every field of a first line is a number or a date: a row, not a header."""
    return (
        bool(fields)
        and all(_DATA_FIELD.match(f) for f in fields if f.strip())
        and any(f.strip() for f in fields)
    )


def text_layout(files: list[str], options: CsvOptions, source: str) -> TextLayout:
    """How to read ``files`` (one source's), from ``options`` and a look at the files.

    - encoding: UTF-8 unless ``options`` say otherwise; a file that is not valid UTF-8 is read
      as cp1252 (a superset of Latin-1's printable characters), with a note.
    - separator: a line without any of , ; tab | whose fields are separated by runs of blanks
      is read as ``whitespace``, with a note.
    - header: a first line whose every field is a number or a date is a row, and the columns
      are called column1..N (or ``options.names``), with a note.
    - a header naming a column twice is an error naming both.
    """
    files, encoding = _encoding(files, options, source)
    lines = _first_lines(files[0], encoding)
    delimiter = options.delimiter
    if delimiter is None and all(Path(f).suffix.lower() == ".tsv" for f in files):
        delimiter = "\t"
    if delimiter is None and _is_whitespace(lines):
        delimiter = "whitespace"
        log.warning("%s: fields separated by runs of blanks (as --delimiter whitespace)", source)
    separator = delimiter or _most_frequent(lines[0] if lines else "")
    first = _split(lines[0], separator) if lines else []
    header, names = options.header, options.names
    if header and not names and looks_like_data(first):
        header = False
        names = [f"column{i + 1}" for i in range(len(first))]
        log.warning(
            "%s: the first line holds only numbers and dates, so the file has no header; its "
            "columns are called %s (name them with --names)",
            source,
            ", ".join(names),
        )
    elif header and not names:
        _refuse_duplicates(first, files[0], source)
    elif not header and not names and first:
        names = [f"column{i + 1}" for i in range(len(first))]
    return TextLayout(files, encoding, delimiter, separator, header, names)


def _split(line: str, separator: str) -> list[str]:
    if separator == "whitespace":
        return line.split()
    return next(csv.reader([line], delimiter=separator), [])


def _most_frequent(line: str) -> str:
    counts = {sep: line.count(sep) for sep in _CANDIDATES}
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] else ","


def _is_whitespace(lines: list[str]) -> bool:
    """Fields separated by runs of blanks: no usual separator on the first lines, and each
    splits into the same number (2 or more) of fields."""
    if not lines or any(sep in line for line in lines for sep in _CANDIDATES):
        return False
    widths = {len(line.split()) for line in lines}
    return len(widths) == 1 and widths.pop() >= 2


def _refuse_duplicates(header: list[str], path: str, source: str) -> None:
    seen: dict[str, str] = {}
    for name in (h.strip() for h in header):
        # DuckDB's names are case-insensitive: "Amount" and "amount" would be renamed too
        key = name.casefold()
        if name and key in seen:
            raise CustvalError(
                f"the header of '{path}' names the column '{name}' twice (a second one would "
                f"be read as '{name}_1' and the wrong one used)",
                source=source,
                column=name,
                hint="Rename or remove one of the two columns",
            )
        seen[key] = name


def _open_binary(path: str) -> io.BufferedIOBase:
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return Path(path).open("rb")


def _first_lines(path: str, encoding: str | None, limit: int = 20) -> list[str]:
    """The first non-blank lines of a file, decoded."""
    if path.lower().endswith(".zst"):
        return []  # no zstd reader in the standard library; DuckDB detects for itself
    with _open_binary(path) as fh:
        head = fh.read(_HEAD_BYTES)
    text = head.decode(_PYTHON_CODECS.get(encoding or "utf-8", "utf-8"), errors="replace")
    text = text.removeprefix("\ufeff")
    lines = [line for line in text.splitlines() if line.strip()]
    # the last line of a truncated head may be cut in the middle
    if len(head) == _HEAD_BYTES and len(lines) > 1:
        lines = lines[:-1]
    return lines[:limit]


_PYTHON_CODECS = {"utf-8": "utf-8", "utf-16": "utf-16", "latin-1": "latin-1", "cp1252": "cp1252"}


def _chunks(path: str) -> Iterator[bytes]:
    with _open_binary(path) as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


def _first_invalid_utf8(path: str) -> int | None:
    """The offset of the first byte that is not UTF-8, read in chunks; None if all is."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        for chunk in _chunks(path):
            decoder.decode(chunk)
            offset += len(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        return offset + exc.start
    return None


def _encoding(files: list[str], options: CsvOptions, source: str) -> tuple[list[str], str | None]:
    """The files for DuckDB and the encoding it reads them in. DuckDB reads UTF-8, UTF-16 and
    Latin-1 itself; cp1252 (its extension would be downloaded) is copied to UTF-8 here."""
    if options.encoding in {"utf-16", "latin-1"}:
        return files, options.encoding
    if options.encoding == "utf-8" or any(f.lower().endswith(".zst") for f in files):
        return files, None
    if options.encoding == "cp1252":
        return [_to_utf8(f, source) for f in files], None
    out = []
    for f in files:
        bad = _first_invalid_utf8(f)
        if bad is None:
            out.append(f)
            continue
        log.warning(
            "%s: read '%s' as cp1252: not valid UTF-8 (byte %d); give --encoding if it is another",
            source,
            f,
            bad,
        )
        out.append(_to_utf8(f, source))
    return out, None


_TEMP: list[Path] = []


def _temp_dir() -> Path:
    if not _TEMP:
        _TEMP.append(Path(tempfile.mkdtemp(prefix="custval-text-")))
        atexit.register(shutil.rmtree, _TEMP[0], ignore_errors=True)
    return _TEMP[0]


def _to_utf8(path: str, source: str) -> str:
    """A UTF-8 copy of a cp1252 file, written in chunks (memory stays flat). The five bytes
    cp1252 leaves undefined are read as Latin-1's control characters."""
    target = _temp_dir() / f"{len(list(_temp_dir().iterdir()))}-{Path(path).name}"
    target = target.with_suffix(".csv") if target.suffix.lower() == ".gz" else target
    decoder = codecs.getincrementaldecoder("cp1252")(errors="custval-latin1")
    with target.open("w", encoding="utf-8", newline="") as out:
        for chunk in _chunks(path):
            out.write(decoder.decode(chunk))
        out.write(decoder.decode(b"", final=True))
    return str(target)


def _latin1_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start : exc.end].decode("latin-1"), exc.end


codecs.register_error("custval-latin1", _latin1_fallback)


def read_xlsx(path: str, options: CsvOptions, source: str) -> pa.Table:
    """The first sheet of an Excel workbook as a table of text, like a CSV file's: numbers as
    written by Python (``11.77``, whole numbers without ``.0``), dates in ISO format, empty
    cells missing. The header and names follow ``options`` and the same detection as
    :func:`text_layout`."""
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CustvalError(
            f"cannot read '{path}' as an Excel workbook: {exc}", source=source
        ) from None
    try:
        rows = [
            [_cell_text(v) for v in row] for row in book.worksheets[0].iter_rows(values_only=True)
        ]
    finally:
        book.close()
    rows = [r for r in rows if any(v is not None for v in r)]
    if not rows:
        raise CustvalError(f"the first sheet of '{path}' is empty", source=source)
    width = max(len(r) for r in rows)
    header, names = options.header, options.names
    first = [v or "" for v in rows[0]]
    if header and not names and looks_like_data(first):
        header = False
        log.warning(
            "%s: the first row holds only numbers and dates, so the sheet has no header", source
        )
    if header:
        _refuse_duplicates(first, path, source)
        names = names or [v.strip() or f"column{i + 1}" for i, v in enumerate(first)]
        rows = rows[1:]
    names = list(names or [f"column{i + 1}" for i in range(width)])
    if len(names) < width:
        names += [f"column{i + 1}" for i in range(len(names), width)]
    columns = {n: [r[i] if i < len(r) else None for r in rows] for i, n in enumerate(names)}
    return pa.table({n: pa.array(v, type=pa.string()) for n, v in columns.items()})


def _cell_text(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat()
    return str(value)
