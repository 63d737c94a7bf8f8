"""The BTYD summary of an in-memory transaction table, for use from Python.

The CLI and the pipeline read sources through their contracts; a data scientist with a pandas
DataFrame (or an Arrow table) of transactions gets the same summary with one call:

>>> s = btyd_summary(df, customer_id="id", date="date", amount="amount",
...                  calibration_end=date(1997, 10, 1))  # doctest: +SKIP
>>> BetaGeo().fit(s.frequency, s.recency, s.T)  # doctest: +SKIP

The conventions are those of :func:`custval.features.transactions.rfm_features` and
:func:`custval.features.holdout.calibration_holdout`: same-day purchases are one transaction,
negative amounts are refunds (not purchases), ``frequency`` counts repeat purchase days,
``recency`` and ``T`` run from the first purchase to the last one and to the calibration end.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import ibis
import pandas as pd
import pyarrow as pa

from custval.errors import CustvalError, FitError
from custval.features.holdout import btyd_summary_table
from custval.features.transactions import UNIT_DAYS

__all__ = ["btyd_summary"]


def btyd_summary(
    transactions: pd.DataFrame | pa.Table,
    *,
    calibration_end: date | str,
    holdout_end: date | str | None = None,
    customer_id: str = "customer_id",
    date: str = "date",
    amount: str | None = "amount",
    time_unit: str = "weeks",
) -> pd.DataFrame:
    """One row per customer who bought before ``calibration_end``, indexed by customer id.

    Columns ``frequency``, ``recency``, ``T`` (in ``time_unit``: days, weeks, months or years)
    and ``monetary_value`` (mean spend of the repeat purchase days; 0 without ``amount``), and
    with ``holdout_end`` also ``frequency_holdout``, ``spend_holdout`` and ``duration_holdout``.
    """
    calibration_end = _as_date(calibration_end, "calibration_end")
    holdout_end = None if holdout_end is None else _as_date(holdout_end, "holdout_end")
    if time_unit not in UNIT_DAYS:
        raise CustvalError(
            f"unknown time unit '{time_unit}'", hint="Use one of " + ", ".join(UNIT_DAYS)
        )
    df = transactions.to_pandas() if isinstance(transactions, pa.Table) else transactions
    if not isinstance(df, pd.DataFrame):
        raise CustvalError(
            f"transactions must be a pandas DataFrame or an Arrow table, not {type(df).__name__}"
        )
    clean = _clean(df, customer_id, date, amount)
    con = ibis.duckdb.connect()
    try:
        tx = con.create_table("transactions", clean)
        table = btyd_summary_table(
            tx,
            calibration_end,
            holdout_end=holdout_end,
            time_unit=time_unit,
            one_row_per_order=True,
        )
        out = table.order_by("customer_id").to_pandas()
    finally:
        con.disconnect()
    if out.empty:
        raise FitError(
            f"no customer bought before the calibration end {calibration_end}",
            source="transactions",
            column=date,
        )
    # give the ids back in the caller's type (the engine works on text)
    ids = df[customer_id]
    originals = pd.Series(ids.to_numpy(), index=ids.astype(str).to_numpy())
    originals = originals[~originals.index.duplicated()]
    out["customer_id"] = originals.reindex(out["customer_id"].to_numpy()).to_numpy()
    return out.set_index("customer_id")


def _clean(df: pd.DataFrame, customer_id: str, date: str, amount: str | None) -> pd.DataFrame:
    """The caller's transactions checked (columns present, every date, amount and id
    readable) and in the cleaned sources' shape: customer_id (text), order_id, timestamp,
    amount and is_refund (a negative amount)."""
    wanted = {"customer_id": customer_id, "date": date}
    if amount is not None:
        wanted["amount"] = amount
    missing = [c for c in wanted.values() if c not in df.columns]
    if missing:
        raise CustvalError(
            f"the transactions have no column {', '.join(repr(c) for c in missing)}",
            source="transactions",
            column=missing[0],
            hint="Columns present: " + ", ".join(map(str, df.columns[:20])),
        )
    ts = pd.to_datetime(df[date], errors="coerce", format="mixed")
    if getattr(ts.dt, "tz", None) is not None:
        # the customer's local calendar day counts, not UTC's
        ts = ts.dt.tz_localize(None)
    _reject(df, ts.isna(), date, "a missing or unreadable date", customer_id, date)
    money = (
        pd.to_numeric(df[amount], errors="coerce")
        if amount is not None
        else pd.Series(0.0, index=df.index)
    )
    if amount is not None:
        _reject(df, money.isna(), amount, "a missing or non-numeric amount", customer_id, amount)
    ids = df[customer_id]
    _reject(df, ids.isna(), customer_id, "no customer id", customer_id, date)
    return pd.DataFrame(
        {
            "customer_id": ids.astype(str).to_numpy(),
            "order_id": "",
            "timestamp": ts.to_numpy(dtype="datetime64[us]"),
            "amount": money.to_numpy(dtype="float64"),
            "is_refund": (money < 0).to_numpy(),
        }
    )


def _as_date(value: Any, name: str) -> date:
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise CustvalError(
            f"{name} must be a date or a YYYY-MM-DD string, not {value!r}", column=name
        ) from None


def _reject(df: pd.DataFrame, bad: Any, column: str, problem: str, *show: str) -> None:
    if bad.any():
        rows = df.loc[bad, list(dict.fromkeys(show))].head(5)
        raise CustvalError(
            f"{int(bad.sum())} transactions have {problem}",
            source="transactions",
            column=column,
            count=int(bad.sum()),
            examples=[
                {"row": int(i), **r}
                for i, r in zip(rows.index, rows.to_dict("records"), strict=True)
            ],
            hint="Fix or drop these rows",
        )
