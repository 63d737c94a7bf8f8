"""Calibration and holdout: the BTYD summary at one date and what each customer did next.

Probabilistic customer-base models are judged the way Fader, Hardie & Lee judged BG/NBD on CDNOW:
fit on a calibration period, then compare each customer's predicted repeat purchases in a holdout
period with the actual ones. Both periods follow custval's as-of convention: the calibration
period is everything strictly before ``calibration_end``, the holdout everything from
``calibration_end`` up to, not including, ``holdout_end``. Same-day purchases are one
transaction in both, and refunds are not purchases.
"""

from __future__ import annotations

from datetime import date

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa

from custval.columns import SUMMARY_COLUMNS
from custval.errors import CustvalError
from custval.features._util import cutoff, days_between
from custval.features.transactions import UNIT_DAYS, rfm_features


def btyd_summary_table(
    tx: ir.Table,
    calibration_end: date,
    *,
    holdout_end: date | None = None,
    time_unit: str = "weeks",
    one_row_per_order: bool = False,
) -> ir.Table:
    """The BTYD summary of every customer with a purchase before ``calibration_end``:
    ``customer_id`` and :data:`custval.columns.SUMMARY_COLUMNS` (in ``time_unit``), and with
    ``holdout_end`` the holdout's columns of :func:`calibration_holdout`. The one query behind
    ``custval clv``, the scoring run's CLV and :func:`custval.features.summary.btyd_summary`."""
    if holdout_end is not None:
        return calibration_holdout(
            tx,
            calibration_end,
            holdout_end,
            time_unit=time_unit,
            one_row_per_order=one_row_per_order,
        )
    return _summary(tx, calibration_end, time_unit, one_row_per_order)


def _summary(
    tx: ir.Table, calibration_end: date, time_unit: str, one_row_per_order: bool
) -> ir.Table:
    return rfm_features(
        tx,
        calibration_end,
        time_unit=time_unit,
        rhythm=False,
        trend=False,
        one_row_per_order=one_row_per_order,
    ).select("customer_id", *SUMMARY_COLUMNS)


def calibration_holdout(
    tx: ir.Table,
    calibration_end: date,
    holdout_end: date,
    *,
    time_unit: str = "weeks",
    one_row_per_order: bool = False,
) -> ir.Table:
    """One row per customer with a purchase before ``calibration_end``.

    Columns: ``customer_id``; ``frequency``, ``recency``, ``T`` and ``monetary_value`` at
    ``calibration_end`` (BTYD convention, ``time_unit``); ``frequency_holdout``, the purchase days
    in the holdout; ``spend_holdout`` (currency); ``duration_holdout``, the holdout's length in
    ``time_unit``.

    Example
    -------
    >>> ch = calibration_holdout(tx, date(1997, 10, 1), date(1998, 7, 1))  # doctest: +SKIP
    >>> ch.frequency_holdout.sum().execute()  # CDNOW sample: 1,882
    1882
    """
    if holdout_end <= calibration_end:
        raise CustvalError(
            f"the holdout end {holdout_end} must come after the calibration end {calibration_end}"
        )
    cal = _summary(tx, calibration_end, time_unit, one_row_per_order)
    later = tx.filter(
        (tx.timestamp >= cutoff(calibration_end))
        & (tx.timestamp < cutoff(holdout_end))
        & ~tx.is_refund
    )
    days = later.group_by("customer_id", day=later.timestamp.date()).aggregate(
        spend=later.amount.sum()
    )
    hold = days.group_by("customer_id").aggregate(
        frequency_holdout=days.count(), spend_holdout=days.spend.sum()
    )
    joined = cal.left_join(hold, "customer_id").drop("customer_id_right")
    length = days_between(ibis.date(holdout_end), ibis.date(calibration_end))
    return joined.mutate(
        frequency_holdout=joined.frequency_holdout.fill_null(0),
        spend_holdout=joined.spend_holdout.fill_null(0.0),
        duration_holdout=length / UNIT_DAYS[time_unit],
    ).order_by("customer_id")


def tracking_times(
    tx: ir.Table,
    calibration_end: date,
    holdout_end: date,
    *,
    time_unit: str = "weeks",
) -> tuple[date, np.ndarray, np.ndarray]:
    """The purchase times behind a tracking table of cumulative repeat transactions.

    For the customers of :func:`calibration_holdout` (first purchase before
    ``calibration_end``), returns ``(origin, first_purchase, repeat_times)``: the day of the
    earliest first purchase, each customer's first purchase day and the day of every repeat
    purchase (a purchase day after the customer's first, before ``holdout_end``), both in
    ``time_unit`` since the origin. Same-day purchases are one transaction; refunds are not
    purchases.
    """
    buys = tx.filter((tx.timestamp < cutoff(holdout_end)) & ~tx.is_refund)
    days = buys.group_by("customer_id", day=buys.timestamp.date()).aggregate()
    first = days.group_by("customer_id").aggregate(first=days.day.min())
    first = first.filter(first.first < ibis.date(calibration_end))
    # counts per day, not a row per customer and purchase: a few thousand rows leave the
    # engine instead of tens of millions (the times are whole days anyway)
    births = first.group_by(day=first.first).aggregate(n=first.count()).to_pyarrow()
    if births.num_rows == 0:
        raise CustvalError(f"no customer bought before the calibration end {calibration_end}")
    joined = days.join(first, "customer_id")
    repeats = joined.filter(joined.day > joined.first)
    rep = repeats.group_by("day").aggregate(n=repeats.count()).to_pyarrow()
    birth_days, birth_n = _day_counts(births)
    origin = birth_days.min()
    repeat_days, repeat_n = _day_counts(rep)
    unit = UNIT_DAYS[time_unit]
    to_units = lambda d: (d - origin).astype("timedelta64[D]").astype(np.float64) / unit  # noqa: E731
    return (
        origin.astype(object),
        np.repeat(to_units(birth_days), birth_n),
        np.repeat(to_units(repeat_days), repeat_n),
    )


def _day_counts(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(days as datetime64[D], counts) of a ``day``, ``n`` table."""
    day = (
        table.column("day").cast(pa.date32()).to_numpy(zero_copy_only=False).astype("datetime64[D]")
    )
    return day, table.column("n").to_numpy().astype(np.int64)
