"""The service's strict value types: what a request may put where a number, a category or an id
goes, and the error that names the field, the expected type and what came instead.

JSON parsers (pydantic's too) accept ``NaN`` and ``Infinity`` tokens, and pydantic's lax mode
turns ``true`` into ``1.0`` and ``42`` into a category: each of those used to be scored as if
meant. Here a number is a finite JSON number within a bound, a category is text (or a boolean,
as training saw booleans), an id is text or a whole number, trimmed and upper-cased as the
cleaning does (:func:`custval.data.contracts` ``_as_id``).

What came instead is named by its JSON type; its value only when it is a boolean, a non-finite
number or a number beyond the bound, never text (which may be a customer's name or address).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

__all__ = [
    "AMOUNT_BOUND",
    "FEATURE_BOUND",
    "Amount",
    "Category",
    "CustomerId",
    "Number",
    "ProductId",
    "check_number",
    "got_text",
    "normalise_id",
]

#: beyond this a feature value is an error in the data (and, standardised, it overflows)
FEATURE_BOUND = 1e15
#: the largest amount of one transaction: a trillion in any currency is beyond any real order,
#: and spend sums of a customer's orders stay exact in float64 (well below 2**53 cents)
AMOUNT_BOUND = 1e12


#: how an error names the JSON types whose values it does not echo
_KINDS = {str: "text", list: "a list", dict: "an object", type(None): "null"}


def got_text(value: Any) -> str:
    """What a request sent, as an error names it (text is never echoed)."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, int | float):
        return f"the number {value:g}" if isinstance(value, float) else f"the number {value}"
    return _KINDS.get(type(value), type(value).__name__)


def _wrong(kind: str, expected: str, value: Any) -> PydanticCustomError:
    got = got_text(value)
    return PydanticCustomError(
        kind, "{expected} is needed, not {got}", {"expected": expected, "got": got}
    )


def _number(bound: float, expected: str) -> Any:
    def check(value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong("number_type", expected, value)
        number = float(value)
        if not math.isfinite(number):
            raise _wrong("finite_number", expected, value)
        if abs(number) > bound:
            raise PydanticCustomError(
                "number_bound",
                "{expected} is needed, not {got}: beyond ±{bound:g}",
                {"expected": expected, "got": got_text(value), "bound": bound},
            )
        return number

    return check


def _category(value: Any) -> str | bool | None:
    if value is None or isinstance(value, str | bool):
        return value  # type: ignore[no-any-return]
    raise _wrong("category_type", "text or null", value)


def normalise_id(value: Any) -> str:
    """An id as the cleaning keeps it: text trimmed and upper-cased; a whole number as its
    digits (1001.0 from a spreadsheet is 1001)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _wrong("id_type", "text or a whole number", value)
    if isinstance(value, float):
        if not math.isfinite(value) or value != math.floor(value):
            raise _wrong("id_type", "text or a whole number", value)
        value = int(value)
    text = str(value).strip().upper()
    if not text:
        raise PydanticCustomError("id_empty", "an id is needed, not empty text", {})
    return text


#: the check of a numeric feature's value, for the handlers that read free-form customers
check_number = _number(FEATURE_BOUND, "a number or null")

#: a numeric feature: a finite JSON number within ±1e15, or null for a missing value
Number = Annotated[
    float | None,
    BeforeValidator(_number(FEATURE_BOUND, "a number or null")),
    # the bound for the OpenAPI document (ge/le would be applied to null too)
    Field(json_schema_extra={"minimum": -FEATURE_BOUND, "maximum": FEATURE_BOUND}),
]
#: an amount of money: a finite JSON number within ±1e12
Amount = Annotated[
    float,
    BeforeValidator(_number(AMOUNT_BOUND, "a number")),
    Field(json_schema_extra={"minimum": -AMOUNT_BOUND, "maximum": AMOUNT_BOUND}),
]
#: a categorical feature: text (or a boolean, as training saw booleans: True/False), or null
Category = Annotated[str | bool | None, BeforeValidator(_category)]
#: a customer id: text or a whole number, trimmed and upper-cased
CustomerId = Annotated[
    str,
    BeforeValidator(normalise_id),
    Field(min_length=1, max_length=200, description="your id of the customer"),
]
#: a product's id, kept as the cleaning keeps ids (as the transactions name it)
ProductId = Annotated[
    str,
    BeforeValidator(normalise_id),
    Field(min_length=1, max_length=200, description="the product's id, as transactions name it"),
]
