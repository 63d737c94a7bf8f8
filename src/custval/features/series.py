"""Sales as regular series, for forecasting: per week (weeks start on Monday) or per calendar
month, the revenue (net of refunds, which carry negative amounts), the purchases (purchase
days of a customer, as the customer-base models count them) and the buying customers, in
total or by a column of the transactions (segment, channel, category), and the customers
acquired (first purchase) in each period.

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
import pandas as pd

from custval.errors import CustvalError
from custval.features._util import cutoff

__all__ = [
    "FREQUENCIES",
    "acquisitions",
    "period_start",
    "sales_series",
    "series_rows",
    "spend_facts",
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


def acquisitions(tx: ir.Table, end: date, *, freq: str = "week") -> pd.DataFrame:
    """``period`` and ``customers``: how many customers made their first purchase in each
    whole period before ``end``, zeros included (module docstring)."""
    buys = tx.filter((tx.timestamp < cutoff(end)) & ~tx.is_refund)
    first = buys.group_by("customer_id").aggregate(first=buys.timestamp.min())
    per = first.group_by(period=first["first"].truncate(_UNITS[freq]).date()).aggregate(
        customers=first.count()
    )
    frame = per.to_pandas()
    if frame.empty:
        raise CustvalError(f"there are no purchases before {end}")
    frame["period"] = pd.to_datetime(frame["period"])
    periods = _periods(frame["period"].min().date(), end, freq)
    full = frame.set_index("period").reindex(periods, fill_value=0)
    return full.rename_axis("period").reset_index().astype({"customers": "int64"})


def _key(tx: ir.Table, by: str | None) -> ir.Value:
    """The name of the series a transaction belongs to."""
    return tx[by].cast("string").fill_null("unknown") if by else ibis.literal("total")


def series_rows(tx: ir.Table, by: str | None, name: str) -> ir.Table:
    """The transactions of the series ``name`` of :func:`sales_series` (all of them for the
    total), so that a customer-based forecast can learn from that series alone."""
    return tx if by is None else tx.filter(_key(tx, by) == name)


def spend_facts(tx: ir.Table, end: date) -> tuple[float, float]:
    """Two figures of the transactions before ``end`` that a customer-based forecast in money
    needs: the mean spend of a customer's first purchase day, and the share of gross sales
    left after refunds (net over gross; 1 without refunds)."""
    past = tx.filter(tx.timestamp < cutoff(end))
    buys = past.filter(~past.is_refund)
    days = buys.group_by("customer_id", day=buys.timestamp.date()).aggregate(
        spend=buys.amount.sum()
    )
    # the spend of each customer's earliest day: an arg-min, no sort of every customer's days
    firsts = days.group_by("customer_id").aggregate(first=days.spend.argmin(days.day))
    money = past.aggregate(
        gross=past.amount.sum(where=~past.is_refund), net=past.amount.sum()
    ).to_pandas()
    values = (firsts["first"].mean().execute(), money["gross"].iloc[0], money["net"].iloc[0])
    first_spend, gross, net = (float(v) if pd.notna(v) else 0.0 for v in values)
    return first_spend, (net / gross if gross > 0 else 1.0)
