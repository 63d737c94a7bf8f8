"""Sales as regular series, for forecasting: per week (weeks start on Monday) or per calendar
month, the revenue (net of refunds, which carry negative amounts), the purchases (purchase
days of a customer, as the customer-base models count them) and the buying customers, in
total or by a column of the transactions (segment, channel, category), and the customers
acquired (first purchase) in each period, from the customers' summary.

The engine aggregates; the result is small (periods × series) and is completed in pandas: a
period without a sale is a row of zeros, never a missing row, so that every series has every
period from its first to the last whole period before the end date. Only whole periods count:
the period holding ``end`` (the project's as-of date, exclusive) is left out when ``end`` does
not start it.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from custval.columns import SUMMARY_COLUMNS
from custval.errors import CustvalError
from custval.features._util import cutoff
from custval.features.transactions import rfm_features

__all__ = [
    "FREQUENCIES",
    "acquisitions",
    "forecast_summary",
    "net_share",
    "period_start",
    "sales_series",
    "series_rows",
]

Frequency = Literal["week", "month"]
#: the frequencies and the number of periods in their yearly season
FREQUENCIES: dict[str, int] = {"week": 52, "month": 12}
_UNITS = {"week": "W", "month": "M"}


def period_start(day: date, freq: str) -> date:
    """The first day of the period holding ``day``: its week's Monday, or its month's 1st."""
    if freq == "week":
        return day - timedelta(days=day.weekday())
    if freq == "month":
        return day.replace(day=1)
    raise CustvalError(f"unknown frequency '{freq}'", hint="week or month")


def _periods(first: date, end: date, freq: str) -> pd.DatetimeIndex:
    """The whole periods from the one holding ``first`` to the last one ending by ``end``."""
    last = period_start(end, freq)
    step = "W-MON" if freq == "week" else "MS"
    # the period holding ``end`` is whole only when ``end`` starts the next one
    return pd.date_range(period_start(first, freq), last, freq=step, inclusive="left")


def sales_series(
    tx: ir.Table, end: date, *, freq: str = "week", by: str | None = None
) -> pd.DataFrame:
    """Long table ``series``, ``period`` (its first day), ``revenue``, ``purchases`` and
    ``customers``, every whole period before ``end`` from the series' first sale (module
    docstring). ``by``: a column of the transactions whose values name the series (missing
    values: "unknown"); None: one series, "total"."""
    if by is not None and by not in tx.columns:
        known = ", ".join(c for c in tx.columns if c not in ("customer_id", "timestamp"))
        raise CustvalError(
            f"the transactions have no column '{by}' to split the forecast by",
            column=by,
            hint=f"--by takes one of: {known}",
        )
    past = tx.filter(tx.timestamp < cutoff(end))
    key = _key(past, by)
    rows = past.mutate(
        series=key, period=past.timestamp.truncate(_UNITS[freq]).date(), day=past.timestamp.date()
    )
    buys = rows.filter(~rows.is_refund)
    money = rows.group_by("series", "period").aggregate(revenue=rows.amount.sum())
    days = buys.group_by("series", "period", "customer_id", "day").aggregate()
    counts = days.group_by("series", "period").aggregate(
        purchases=days.count(), customers=days.customer_id.nunique()
    )
    found = money.left_join(counts, ["series", "period"]).select(
        "series", "period", "revenue", "purchases", "customers"
    )
    frame = found.to_pandas()
    if frame.empty:
        raise CustvalError(f"there are no transactions before {end} to forecast from")
    return _complete(frame, end, freq)


def _complete(frame: pd.DataFrame, end: date, freq: str) -> pd.DataFrame:
    """Every series with every whole period from its first one, zeros where nothing sold."""
    frame["period"] = pd.to_datetime(frame["period"])
    parts = []
    for name, rows in frame.groupby("series", sort=True):  # a loop over a few series
        periods = _periods(rows["period"].min().date(), end, freq)
        full = rows.set_index("period").reindex(periods)
        full = full.drop(columns="series").fillna(0.0).rename_axis("period").reset_index()
        parts.append(full.assign(series=str(name)))
    out = pd.concat(parts, ignore_index=True)[
        ["series", "period", "revenue", "purchases", "customers"]
    ]
    return out.astype({"revenue": "float64", "purchases": "int64", "customers": "int64"})


def _key(tx: ir.Table, by: str | None) -> ir.Value:
    """The name of the series a transaction belongs to."""
    return tx[by].cast("string").fill_null("unknown") if by else ibis.literal("total")


def series_rows(tx: ir.Table, by: str | None, name: str) -> ir.Table:
    """The transactions of the series ``name`` of :func:`sales_series` (all of them for the
    total), so that a customer-based forecast can learn from that series alone."""
    return tx if by is None else tx.filter(_key(tx, by) == name)


def forecast_summary(tx: ir.Table, end: date, *, one_row_per_order: bool = False) -> ir.Table:
    """The customers' BTYD summary at ``end`` (:data:`custval.columns.SUMMARY_COLUMNS`, in
    weeks) with what a customer-based forecast needs beside it, from the same query: the spend
    of each customer's first purchase day (``first_spend``) and the days from it to ``end``
    (``days_since_first_purchase``: :func:`acquisitions` counts them by period), and a hash of
    the id (``sample_key``), by which a sample is drawn that does not depend on the rows' order."""
    rfm = rfm_features(
        tx, end, time_unit="weeks", rhythm=False, trend=False, one_row_per_order=one_row_per_order
    )
    gross = rfm.revenue + rfm.refund_amount
    return rfm.select(
        "customer_id",
        *SUMMARY_COLUMNS,
        "days_since_first_purchase",
        # monetary_value is the mean spend of the repeat days: the rest of the gross is the first
        first_spend=gross - rfm.monetary_value * rfm.frequency,
        sample_key=rfm.customer_id.hash(),
    )


def acquisitions(days_since_first: np.ndarray, end: date, *, freq: str = "week") -> pd.DataFrame:
    """``period`` and ``customers``: how many customers made their first purchase in each whole
    period before ``end``, zeros included, from each customer's days between her first purchase
    and ``end`` (:func:`forecast_summary`). Vectorised: a day number's period is found by
    arithmetic on the calendar, not per customer in Python."""
    days = np.asarray(days_since_first, dtype=np.int64)
    if days.size == 0:
        raise CustvalError(f"there are no purchases before {end}")
    first = np.datetime64(end, "D") - days
    if freq == "week":
        # 1970-01-01 was a Thursday: a day number + 3 counts from a Monday
        start = first - (first.astype(np.int64) + 3) % 7
    elif freq == "month":
        start = first.astype("datetime64[M]").astype("datetime64[D]")
    else:
        raise CustvalError(f"unknown frequency '{freq}'", hint="week or month")
    values, counts = np.unique(start, return_counts=True)
    found = pd.Series(counts, index=pd.DatetimeIndex(values.astype("datetime64[ns]")))
    periods = _periods(found.index.min().date(), end, freq)
    full = found.reindex(periods, fill_value=0).astype("int64")
    return pd.DataFrame({"period": periods, "customers": full.to_numpy()})


def net_share(tx: ir.Table, end: date) -> float:
    """The share of gross sales before ``end`` left after refunds: net over gross (1 without
    refunds), every transaction counted, a refund-only customer's too. One scan, no grouping."""
    past = tx.filter(tx.timestamp < cutoff(end))
    money = past.aggregate(
        gross=past.amount.sum(where=~past.is_refund), net=past.amount.sum()
    ).to_pandas()
    gross, net = (float(v) if pd.notna(v) else 0.0 for v in money.iloc[0])
    return net / gross if gross > 0 else 1.0
