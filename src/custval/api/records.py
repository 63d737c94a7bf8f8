"""``POST /v1/predict/records``: features from a customer's raw records, by the training code.

The request carries, per customer, the rows a project's sources would hold for them, in
custval's column names (``docs/`` and :data:`custval.data.contracts.CONTRACTS`): a profile
(``signup_date``, ``region``, ``plan``...), transactions (``timestamp``, ``amount``,
``order_id``...), web sessions, product usage and interactions. The service writes them as
JSON-lines sources of a throw-away project with the model's feature settings (time unit, trend
window, groups, from its manifest) and runs the same contracts, cleaning and feature code as
``custval train`` and ``custval score``; the result is scored like ``/v1/predict``.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from custval import flows
from custval.config import project_from_dict
from custval.errors import CustvalError

__all__ = ["RecordsCustomer", "RecordsRequest", "features_from_records"]

Value = str | float | int | bool | None
Row = dict[str, Value]

#: each kind's request field, and the placeholder row that keeps an empty kind's features
_KINDS: dict[str, dict[str, Value]] = {
    "transactions": {"timestamp": "2000-01-01T00:00:00", "amount": 1.0},
    "web_sessions": {"timestamp": "2000-01-01T00:00:00"},
    "product_usage": {"date": "2000-01-01"},
    "interactions": {"timestamp": "2000-01-01T00:00:00"},
}
#: stands for no customer of the request; its rows keep a kind present when nobody has any
_PLACEHOLDER = "__custval_placeholder__"


class RecordsCustomer(BaseModel):
    """One customer's raw records, in custval's column names (no ``customer_id`` inside)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Annotated[str, Field(min_length=1, max_length=200)]
    profile: Row | None = Field(None, description="the customer's row of the customers source")
    transactions: list[Row] = Field(default_factory=list, max_length=100_000)
    web_sessions: list[Row] = Field(default_factory=list, max_length=100_000)
    product_usage: list[Row] = Field(default_factory=list, max_length=100_000)
    interactions: list[Row] = Field(default_factory=list, max_length=100_000)


class RecordsRequest(BaseModel):
    """Customers' raw records and the date to compute their features at (default: today)."""

    model_config = ConfigDict(extra="forbid")

    as_of: date | None = Field(None, description="features use the records before this date")
    customers: Annotated[list[RecordsCustomer], Field(min_length=1)]


def features_from_records(request: RecordsRequest, model: Any) -> list[dict[str, Any]]:
    """Each customer's feature values (dicts in the model's columns), in the request's order."""

    ids = [c.customer_id for c in request.customers]
    if len(set(ids)) != len(ids):
        raise CustvalError("the same customer_id appears twice in the request")
    if _PLACEHOLDER in ids:
        raise CustvalError(f"'{_PLACEHOLDER}' is reserved")
    options = model.manifest.get("features", {})
    as_of = request.as_of or datetime.now(UTC).date() + timedelta(days=1)
    with tempfile.TemporaryDirectory(prefix="custval-records-") as tmp:
        folder = Path(tmp)
        sources: dict[str, Any] = {}
        profiles = [{**(c.profile or {}), "customer_id": c.customer_id} for c in request.customers]
        if any(c.profile for c in request.customers):
            sources["customers"] = {
                "kind": "customers",
                "uri": _write(folder, "customers", profiles),
            }
        for kind, placeholder in _KINDS.items():
            rows = [
                {**row, "customer_id": c.customer_id}
                for c in request.customers
                for row in getattr(c, kind)
            ]
            # the placeholder keeps this kind's features when none of these customers has any
            rows.append({**placeholder, "customer_id": _PLACEHOLDER})
            sources[kind] = {"kind": kind, "uri": _write(folder, kind, rows)}
        raw = {
            "as_of": as_of.isoformat(),
            "time_unit": options.get("time_unit", "weeks"),
            "features": {
                "trend_window_days": options.get("trend_window_days", 90),
                **({"groups": options["groups"]} if "groups" in options else {}),
            },
            "store": str(folder / "unused.duckdb"),
            "sources": sources,
            "identity": {"map_source": None},
        }
        project = project_from_dict(raw, root=folder, origin="the request's records")
        prepared = flows.prepare(project)
        table = flows.features(project, prepared).to_pyarrow().to_pandas()
    table = table.set_index(table["customer_id"].astype(str))
    _fill_absent_levels(table, model.schema.columns)
    missing = [c for c in model.schema.columns if c not in table.columns]
    if missing:
        raise CustvalError(
            f"the records give no {', '.join(missing[:5])}: the model needs them",
            hint="Send the kinds of records the model was trained on",
        )
    out = []
    for cid in ids:  # the request's customers, in order
        if cid not in table.index:
            raise CustvalError(f"customer {cid}: no record of theirs is usable before {as_of}")
        row = table.loc[cid]
        values: dict[str, Any] = {"customer_id": cid}
        for c in model.schema.numeric:
            v = row[c]
            values[c] = None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)
        for c in model.schema.categorical:
            v = row[c]
            values[c] = None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
        out.append(values)
    return out


#: features with a column per level seen in the data (a service, a product category, a
#: channel), and the column that says whether a customer has the data they are shares of
_LEVELS = {"service_": "n_services", "share_spend_": "T", "share_orders_": "T"}


def _fill_absent_levels(table: Any, columns: list[str]) -> None:
    """A model column for a level none of these customers has (service_analytics when nobody
    here subscribes to it) is 0 for the customers with such data and missing for the others,
    as it is in the whole company's table."""
    for c in columns:
        if c in table.columns:
            continue
        basis = next((b for prefix, b in _LEVELS.items() if c.startswith(prefix)), None)
        if basis is not None and basis in table.columns:
            table[c] = np.where(table[basis].notna(), 0.0, np.nan)


def _write(folder: Path, name: str, rows: list[dict[str, Any]]) -> str:
    path = folder / f"{name}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
    return str(path)
