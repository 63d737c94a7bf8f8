"""``POST /v1/predict/records``: features from a customer's raw records, by the training code.

The request carries, per customer, the rows a project's sources would hold for them, in
custval's column names (``docs/`` and :data:`custval.data.contracts.CONTRACTS`): a profile
(``signup_date``, ``region``, ``plan``...), transactions (``timestamp``, ``amount``,
``order_id``...), web sessions, product usage, interactions, subscriptions and the offers
sent (treatments). The service writes them as
JSON-lines sources of a throw-away project with the model's feature settings (time unit, trend
window, groups, from its manifest) and runs the same contracts, cleaning and feature code as
``custval train`` and ``custval score``; the result is scored like ``/v1/predict``.
"""

from __future__ import annotations

import json
import re
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from custval import flows
from custval.api.http import ApiError, customer_error
from custval.config import project_from_dict
from custval.data.contracts import CONTRACTS
from custval.data.values import AMOUNT_BOUND, FEATURE_BOUND, CustomerId, got_text
from custval.errors import CustvalError, DataValidationError

__all__ = ["RecordsCustomer", "RecordsRequest", "features_from_records"]

Value = str | float | int | bool | None
Row = dict[str, Value]

#: each kind's request field, and the placeholder row that keeps an empty kind's features
_KINDS: dict[str, dict[str, Value]] = {
    "transactions": {"timestamp": "2000-01-01T00:00:00", "amount": 1.0},
    "web_sessions": {"timestamp": "2000-01-01T00:00:00"},
    "product_usage": {"date": "2000-01-01"},
    "interactions": {"timestamp": "2000-01-01T00:00:00"},
    "subscriptions": {"started_at": "2000-01-01T00:00:00"},
    "treatments": {"sent_at": "2000-01-01T00:00:00", "group": "control"},
}
#: stands for no customer of the request; its rows keep a kind present when nobody has any
_PLACEHOLDER = "__custval_placeholder__"


class RecordsCustomer(BaseModel):
    """One customer's raw records, in custval's column names (no ``customer_id`` inside)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: CustomerId
    profile: Row | None = Field(None, description="the customer's row of the customers source")
    transactions: list[Row] = Field(default_factory=list, max_length=100_000)
    web_sessions: list[Row] = Field(default_factory=list, max_length=100_000)
    product_usage: list[Row] = Field(default_factory=list, max_length=100_000)
    interactions: list[Row] = Field(default_factory=list, max_length=100_000)
    subscriptions: list[Row] = Field(default_factory=list, max_length=1_000)
    treatments: list[Row] = Field(default_factory=list, max_length=10_000)


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
    check_values(request)
    options = model.manifest.get("features", {})
    as_of = request.as_of or datetime.now(UTC).date() + timedelta(days=1)
    try:
        table = _features(request, options, as_of)
    except CustvalError as exc:
        raise _for_clients(exc, request) from None
    return _rows(table, request, model, as_of)


def _features(request: RecordsRequest, options: dict[str, Any], as_of: date) -> Any:
    """The feature table of the request's customers, by the training code (pandas)."""
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
        return flows.features(project, prepared).to_pyarrow().to_pandas()


def _rows(table: Any, request: RecordsRequest, model: Any, as_of: date) -> list[dict[str, Any]]:
    """The model's columns of each of the request's customers, in the request's order."""
    ids = [c.customer_id for c in request.customers]
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
            raise CustvalError(
                f"customer {cid}: no record of theirs is usable before {as_of}",
                hint="Send records dated before as_of, or a later as_of",
            )
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


def check_values(request: RecordsRequest) -> None:
    """A 422 for a number no record can hold: NaN or an infinity anywhere (JSON parsers accept
    those tokens), beyond ±1e15 anywhere, an amount that is a boolean or beyond ±1e12
    (:data:`custval.data.values.AMOUNT_BOUND`). A request's rows, one pass: the validation."""
    for i, customer in enumerate(request.customers):
        rows = [("profile", None, customer.profile)] if customer.profile else []
        rows += [(kind, j, row) for kind in _KINDS for j, row in enumerate(getattr(customer, kind))]
        for kind, j, row in rows:
            for name in _REQUIRED.get(kind, ()):
                if (row or {}).get(name) is None:  # the cleaning would drop the row silently
                    raise customer_error(i, f"{kind}[{j}].{name}", "Field required", "missing")
            for name, value in (row or {}).items():
                amount = kind == "transactions" and name == "amount"
                bound = AMOUNT_BOUND if amount else FEATURE_BOUND
                bad = isinstance(value, float) and not abs(value) <= bound
                if amount and isinstance(value, bool):
                    bad = True
                if bad:
                    where = f"{kind}[{j}].{name}" if j is not None else f"{kind}.{name}"
                    expected = f"a finite number within ±{bound:g}"
                    raise customer_error(
                        i,
                        where,
                        f"{expected} is needed, not {got_text(value)}",
                        "finite_number",
                        expected=expected,
                        got=got_text(value),
                    )


#: the columns every row of a kind must have (its contract's), the id aside
_REQUIRED = {
    kind: tuple(c.name for c in CONTRACTS[kind].required if c.name != "customer_id")
    for kind in _KINDS
}

#: the request's field of each kind of source
_FIELDS = {"customers": "profile", **{k: k for k in _KINDS}}
_COUNTED = re.compile(r"^(\d+) of (\d+) rows have (.+)$")


def _for_clients(exc: CustvalError, request: RecordsRequest) -> ApiError:
    """The training code's errors as an API client reads them: each names the request's field
    (customers[i].transactions[j].timestamp), counts the request's rows (not the throw-away
    project's, which has a placeholder row per kind) and says what to send, not what to put in
    a project file the client does not have."""
    found = exc.errors if isinstance(exc, DataValidationError) else [exc]
    errors = [_client_error(e, request) for e in found]
    message = errors[0]["message"]
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return ApiError(422, message, errors)


def _client_error(exc: CustvalError, request: RecordsRequest) -> dict[str, Any]:
    field = _FIELDS.get(exc.source or "", exc.source)
    rows = [
        (i, j, row)
        for i, c in enumerate(request.customers)
        for j, row in enumerate(
            ([c.profile] if c.profile else []) if field == "profile" else getattr(c, field, [])
        )
    ]
    spot = _spot(exc, rows, [c.customer_id for c in request.customers])
    where = "customers" if field is None else f"customers[*].{field}"
    if spot is not None:
        i, j = spot
        where = f"customers[{i}].{field}" + ("" if field == "profile" else f"[{j}]")
    if exc.column:
        where += f".{exc.column}"
    counted = _COUNTED.match(exc.problem)
    if counted and field is not None:
        n, what = int(counted.group(1)), counted.group(3)
        problem = f"{n} of the request's {len(rows)} {field} rows have {what}"
        if n > 1 and spot is not None:
            problem += " (this one first)"
        if n == 1 and spot is not None:
            problem = f"row {spot[1] + 1} of {sum(r[0] == spot[0] for r in rows)} has {what}"
    else:
        problem = exc.problem.rstrip(".")
    hint = _hint(exc, field)
    item: dict[str, Any] = {"field": where, "message": f"{where}: {problem}. {hint}"}
    if spot is not None:
        item["customer_index"] = spot[0]
    return item


def _spot(exc: CustvalError, rows: list[tuple[int, int, Row]], ids: list[str]) -> Any:
    """The (customer, row) of the error's first example in the request, or None."""
    if not exc.examples:
        return None
    example = exc.examples[0]
    cid = str(example.get("customer_id", "")).strip().upper()
    for i, j, row in rows:
        # the examples quote text as the JSON-lines file holds it ('"abc"')
        wanted = str(example.get(exc.column)).strip('"') if exc.column else None
        if ids[i] == cid and (exc.column is None or str(row.get(exc.column)) == wanted):
            return i, j
    return None


def _hint(exc: CustvalError, field: str | None) -> str:
    """What an API client can do: never a project file's setting."""
    column = exc.column or "the field"
    if "date" in (exc.hint or "") or "date" in exc.problem or "timestamp" in exc.problem:
        return f"Send {column} as an ISO 8601 date or time (2026-01-31 or 2026-01-31T10:12:00)"
    if "required column" in exc.problem:
        return f"Send {column} in every row of {field}"
    if exc.hint and "custval.toml" not in exc.hint:
        return exc.hint.rstrip(".") + "."
    return f"Fix {column} in those rows of {field}"
