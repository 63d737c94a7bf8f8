"""The generated company's shared parts: names, the clock, the latent customers and orders,
and fast string building.

:mod:`custval.data.synth` (the original sources) and :mod:`custval.data.synth_actions` (the
catalogue, the subscriptions and the campaign) both build on these; neither imports the other's
simulation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DAY = 86_400  # seconds
WEEK = 7 * DAY

REGIONS = ("north", "south", "east", "west", "central", "islands")
ACQUISITION_CHANNELS = ("search", "social", "referral", "partner", "direct")
PLANS = ("free", "basic", "premium")
SERVICES = ("streaming", "security", "backup", "support", "analytics")
CATEGORIES = ("electronics", "books", "home", "fashion", "sports", "grocery")
SALES_CHANNELS = ("web", "app", "branch", "phone")
SEGMENTS = ("vip", "loyal", "bargain", "occasional")
TICKET_KINDS = ("question", "complaint", "incident")
DATE_FORMATS = {
    "iso": ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"),
    "slash": ("%Y/%m/%d %H:%M", "%Y/%m/%d"),
    "dot": ("%d.%m.%Y %H:%M", "%d.%m.%Y"),
}


class DateFormatRates(Protocol):
    """The shares of rows whose dates are written in the slash and the dot formats."""

    @property
    def date_format_slash(self) -> float: ...

    @property
    def date_format_dot(self) -> float: ...


# ---------------------------------------------------------------------------------------------
# Fast fixed-width string building: rows of a uint8 matrix become an Arrow string array without
# a Python loop (numpy's string functions and pyarrow's strftime are 10x slower at 10M rows).
# ---------------------------------------------------------------------------------------------

_I4 = np.arange(10_000)
_DIGITS4 = np.stack([48 + _I4 // 1000, 48 + _I4 // 100 % 10, 48 + _I4 // 10 % 10, 48 + _I4 % 10], 1)
_DIGITS4 = _DIGITS4.astype(np.uint8)
_HEX2 = np.frombuffer(b"0123456789ABCDEF", np.uint8)[
    np.stack([np.arange(256) // 16, np.arange(256) % 16], 1)
]
_SOD = np.arange(DAY)
_CLOCK_LUT = np.stack(
    [
        48 + _SOD // 36_000,
        48 + _SOD // 3600 % 10,
        np.full(DAY, ord(":")),
        48 + _SOD // 600 % 6,
        48 + _SOD // 60 % 10,
        np.full(DAY, ord(":")),
        48 + _SOD % 60 // 10,
        48 + _SOD % 10,
    ],
    1,
).astype(np.uint8)


def _strings(
    mat: np.ndarray,
    start: np.ndarray | None = None,
    stop: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> pa.Array:
    """Row ``i`` of ``mat`` from column ``start[i]`` to ``stop[i]`` as a string; null where not
    ``valid``."""
    n, width = mat.shape
    if start is None and stop is None and valid is None:
        data = np.ascontiguousarray(mat).reshape(-1)
        lengths = None
    else:
        lo = np.zeros(n, np.int64) if start is None else start.astype(np.int64)
        hi = np.full(n, width, np.int64) if stop is None else stop.astype(np.int64)
        if valid is not None:
            hi = np.where(valid, hi, lo)
        cols = np.arange(width)
        data = mat[(cols >= lo[:, None]) & (cols < hi[:, None])]
        lengths = hi - lo
    large = data.size >= 2**31 - 1
    offsets = np.zeros(n + 1, np.int64 if large else np.int32)
    if lengths is None:
        offsets[1:] = np.arange(1, n + 1, dtype=offsets.dtype) * width
    else:
        np.cumsum(lengths, out=offsets[1:])
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    nulls = 0 if valid is None else int(n - np.count_nonzero(valid))
    arr_type = pa.large_string() if large else pa.string()
    return pa.Array.from_buffers(
        arr_type, n, [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)], null_count=nulls
    )


def _id_matrix(numbers: np.ndarray, prefix: int | np.ndarray, digits: int) -> np.ndarray:
    """``prefix`` byte followed by ``numbers`` zero-padded to ``digits`` digits, one row each."""
    mat = np.empty((numbers.size, 1 + digits), np.uint8)
    mat[:, 0] = prefix
    rest = numbers.astype(np.int64)
    pos = 1 + digits
    while pos > 1:
        width = min(4, pos - 1)
        mat[:, pos - width : pos] = _DIGITS4[rest % 10**width, 4 - width :]
        rest = rest // 10**width
        pos -= width
    return mat


def _hex_matrix(values: np.ndarray, prefix: int) -> np.ndarray:
    """``prefix`` byte followed by 8 upper-case hex digits of uint32 ``values``."""
    mat = np.empty((values.size, 9), np.uint8)
    mat[:, 0] = prefix
    v = values.astype(np.uint32)
    for k in range(4):
        mat[:, 1 + 2 * k : 3 + 2 * k] = _HEX2[(v >> (24 - 8 * k)) & 0xFF]
    return mat


def _date_lut(first_day: int, n_days: int) -> np.ndarray:
    """(3, n_days, 10) bytes: each day in the ISO, slash and dot formats."""
    days = np.arange(first_day, first_day + n_days).astype("datetime64[D]")
    iso = np.datetime_as_string(days, unit="D").astype("S10").view(np.uint8).reshape(n_days, 10)
    lut = np.empty((3, n_days, 10), np.uint8)
    lut[0] = iso
    lut[1] = iso
    lut[1][:, [4, 7]] = ord("/")
    lut[2][:, 0:2] = iso[:, 8:10]
    lut[2][:, 3:5] = iso[:, 5:7]
    lut[2][:, 6:10] = iso[:, 0:4]
    lut[2][:, [2, 5]] = ord(".")
    return lut


def _format_times(
    seconds: np.ndarray, fmt: np.ndarray, valid: np.ndarray | None = None, *, with_time: bool
) -> pa.Array:
    """Seconds since 1970 as strings, row by row in the format ``fmt`` (0 iso, 1 slash, 2 dot).

    Timestamps: ``2025-03-01 14:05:09``, ``2025/03/01 14:05``, ``01.03.2025 14:05``; dates
    without the time.
    """
    n = seconds.size
    if n == 0:
        return pa.array([], pa.string())
    secs = seconds if valid is None else np.where(valid, seconds, seconds[np.argmax(valid)])
    days = secs // DAY
    first = int(days.min())
    lut = _date_lut(first, int(days.max()) - first + 1)
    if not with_time:
        return _strings(lut[fmt, days - first], valid=valid)
    mat = np.empty((n, 19), np.uint8)
    mat[:, :10] = lut[fmt, days - first]
    mat[:, 10] = ord(" ")
    mat[:, 11:] = _CLOCK_LUT[secs - days * DAY]
    return _strings(mat, stop=np.where(fmt == 0, 19, 16), valid=valid)


def _format_amounts(cents: np.ndarray) -> pa.Array:
    """Signed cents as ``"12.30"``, ``"-1,234.50"``, ``"1,234,567.00"`` (dot decimal)."""
    width = 16
    n = cents.size
    neg = cents < 0
    mag = np.minimum(np.abs(cents), 10**11 - 1)
    whole = mag // 100
    mat = np.empty((n, width), np.uint8)
    mat[:, 14:16] = _DIGITS4[mag % 100, 2:]
    mat[:, 13] = ord(".")
    for g, pos in enumerate((10, 6, 2)):
        mat[:, pos : pos + 3] = _DIGITS4[whole // 1000**g % 1000, 1:]
    mat[:, [5, 9]] = ord(",")
    mat[:, :2] = ord(" ")
    n_digits = 1 + np.searchsorted(10 ** np.arange(1, 9), whole, side="right")
    start = 13 - n_digits - (n_digits - 1) // 3 - neg
    rows = np.flatnonzero(neg)
    mat[rows, start[rows]] = ord("-")
    return _strings(mat, start=start)


def _dirty_ids(mat: np.ndarray, rng: np.random.Generator) -> pa.Array:
    """The ids in ``mat`` lower-cased and/or padded with spaces; strip+upper gives them back."""
    m, width = mat.shape
    lower = rng.random(m) < 0.6
    pad = ~lower | (rng.random(m) < 0.4)
    side = rng.integers(0, 3, m)  # 0 leading, 1 trailing, 2 both
    big = np.full((m, width + 2), ord(" "), np.uint8)
    big[:, 1 : width + 1] = mat
    upper = (big >= ord("A")) & (big <= ord("Z")) & lower[:, None]
    big[upper] += 32
    start = np.where(pad & (side != 1), 0, 1)
    stop = np.where(pad & (side != 0), width + 2, width + 1)
    return _strings(big, start=start, stop=stop)


def _id_column(mat: np.ndarray, dirty: np.ndarray, rng: np.random.Generator) -> pa.Array:
    clean = _strings(mat)
    if not dirty.any():
        return clean
    return pc.replace_with_mask(clean, pa.array(dirty), _dirty_ids(mat[dirty], rng))


def _labels(codes: np.ndarray, names: tuple[str, ...], valid: np.ndarray | None = None) -> pa.Array:
    mask = None if valid is None else ~valid
    return pc.take(pa.array(names, pa.string()), pa.array(codes.astype(np.int32), mask=mask))


def _format_codes(rng: np.random.Generator, n: int, rates: DateFormatRates) -> np.ndarray:
    """A date format per row: 0 ISO, 1 slash, 2 dot."""
    u = rng.random(n)
    slash_or_dot = u < rates.date_format_slash + rates.date_format_dot
    return (slash_or_dot.astype(np.int8) + (u < rates.date_format_dot)).astype(np.int8)


def _format_counts(fmt: np.ndarray, valid: np.ndarray | None = None) -> dict[str, int]:
    f = fmt if valid is None else fmt[valid]
    counts = np.bincount(f, minlength=3)
    return {name: int(c) for name, c in zip(DATE_FORMATS, counts, strict=True)}


def _group_cumsum(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sums that restart at each group of ``counts`` consecutive values."""
    cs = np.cumsum(values)
    starts = np.cumsum(counts) - counts
    base = np.zeros(counts.size)
    has = counts > 0
    base[has] = cs[starts[has]] - values[starts[has]]
    return cs - np.repeat(base, counts)


def _choice(rng: np.random.Generator, shares: Mapping[str, float], n: int) -> np.ndarray:
    probs = np.array(list(shares.values()), float)
    return rng.choice(probs.size, n, p=probs / probs.sum()).astype(np.int8)


def _lookup(table: Mapping[str, float], names: tuple[str, ...]) -> np.ndarray:
    return np.array([table[name] for name in names], float)


def _duplicate(rng: np.random.Generator, clean: np.ndarray, rate: float) -> tuple[np.ndarray, int]:
    """Row index with exact copies of some ``clean`` rows placed right after them."""
    n = clean.size
    pool = max(1, int(np.count_nonzero(clean)))
    # scaled up so that copies make about ``rate`` of all rows, not only of the clean ones
    dup = clean & (rng.random(n) < min(1.0, rate * n / pool))
    return np.repeat(np.arange(n), 1 + dup), int(np.count_nonzero(dup))


# ---------------------------------------------------------------------------------------------
# The latent history
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clock:
    start: int  # first second of the history (signups from here)
    horizon: int  # first second after end_date
    end_date: date
    start_date: date

    @staticmethod
    def from_end(end_date: date, years: int) -> _Clock:
        try:
            start_date = end_date.replace(year=end_date.year - years)
        except ValueError:  # 29 February
            start_date = end_date.replace(year=end_date.year - years, day=28)
        epoch = date(1970, 1, 1)
        return _Clock(
            start=(start_date - epoch).days * DAY,
            horizon=(end_date - epoch).days * DAY + DAY,
            end_date=end_date,
            start_date=start_date,
        )


@dataclass
class _Customers:
    """Per-customer arrays in crm_id order (crm number = index + 1)."""

    n: int
    signup: np.ndarray  # seconds
    birth_day: np.ndarray  # days since 1970
    age: np.ndarray  # years at end_date
    region: np.ndarray
    channel: np.ndarray
    plan: np.ndarray
    services: np.ndarray  # bit mask over SERVICES
    engagement: np.ndarray
    lam: np.ndarray  # purchases per week while alive
    p_drop: np.ndarray
    nu: np.ndarray  # Gamma-Gamma spend rate
    has_account: np.ndarray
    has_visitor: np.ndarray
    buyer: np.ndarray
    first: np.ndarray  # seconds of the first purchase, -1 when none before the horizon
    death: np.ndarray  # seconds of the last purchase when it was fatal, -1 otherwise
    alive: np.ndarray
    n_purchases: np.ndarray
    total_cents: np.ndarray
    # the purchase habits, set with the orders: the favourite category, the chance of choosing
    # it, the favourite sales channel
    fav_cat: np.ndarray | None = None
    cat_loyalty: np.ndarray | None = None
    fav_chan: np.ndarray | None = None


@dataclass
class _Orders:
    """The true orders (no dirt), in no particular order."""

    cust: np.ndarray
    ts: np.ndarray
    cents: np.ndarray
    category: np.ndarray
    channel: np.ndarray


def _active_until(cust: _Customers, clock: _Clock, after_death: int) -> np.ndarray:
    """End of a customer's activity (seconds): ``after_death`` seconds past a dropout, else the
    horizon."""
    return np.where(
        cust.death >= 0, np.minimum(clock.horizon, cust.death + after_death), clock.horizon
    )


def _uniform_times(
    rng: np.random.Generator, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``counts[i]`` uniform seconds in ``[lo[i], hi[i])`` for each i, with their owner index."""
    owner = np.repeat(np.arange(counts.size), counts)
    width = np.maximum(hi - lo, 1)[owner]
    return owner, lo[owner] + (rng.random(owner.size) * width).astype(np.int64)


@dataclass
class _Ids:
    crm: np.ndarray  # (n, 8) bytes "C0000042"
    account: np.ndarray  # (n, 9) bytes "A00001234"
    visitor: np.ndarray  # (n, 9) bytes "V1A2B3C4D"
