"""The service's HTTP plumbing: JSON responses, one shape for every error, request bodies
validated by pydantic, and the body limit that runs before the app.

Every error is ``{"detail": message, "errors": [...]}`` with its status. Nothing of a customer
reaches an error message or the log: pydantic's inputs are not echoed back, and unexpected
errors are logged by route and type only.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from custval.api.keys import KeyRing
from custval.data.events import EVENT_KINDS
from custval.errors import CustvalError

__all__ = [
    "ERROR_HANDLERS",
    "ApiError",
    "BodyLimit",
    "customer_error",
    "guarded",
    "json_response",
    "parse_body",
]

log = logging.getLogger("custval.api")


class ApiError(Exception):
    """An answer other than 200, raised anywhere in a request: the handlers of
    :data:`ERROR_HANDLERS` turn it into the error body."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors, headers


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``data`` as JSON; NaN and infinities (a model's or a store's) become null rather than
    JSON no client can read."""
    return Response(
        pydantic_core.to_json(data, inf_nan_mode="null"),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_response(status: int, message: str, errors: Any = None, headers: Any = None) -> Response:
    """The error body: ``detail`` always, ``errors`` when there are some."""
    body: dict[str, Any] = {"detail": message}
    if errors:
        body["errors"] = errors
    return json_response(body, status, headers)


# ---- request bodies -------------------------------------------------------------------------


def parse_body(validate: Callable[[bytes], Any], body: bytes) -> Any:
    """The body validated, or a 422 naming each wrong field (and the customer's index)."""
    try:
        return validate(body)
    except ValidationError as exc:
        message, errors = _validation_errors(exc)
        raise ApiError(422, message, errors) from None


def customer_error(
    i: int, field: str, message: str, kind: str, detail: str = "", **named: str
) -> ApiError:
    """A 422 about one field of customer ``i`` of the request, in the shape of
    :func:`_validation_errors`; ``named``: more of the item (``expected``, ``got``)."""
    where = f"customers[{i}].{field}"
    item = {"field": where, "message": message, "type": kind, "customer_index": i, **named}
    return ApiError(422, detail or f"{where}: {message}", [item])


def _validation_errors(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    """Pydantic's errors as the service reports them: where (customers[3].tenure_days), what;
    the offending values are not echoed."""
    errors: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False, include_input=False, include_context=True):
        # customers[i].field, without the union members pydantic tried (float, str, ...)
        loc = tuple(p for p in err["loc"] if not _union_member(p))
        where = ""
        for part in loc:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else part)
        item: dict[str, Any] = {
            "field": where or "(body)",
            "message": err["msg"],
            "type": err["type"],
        }
        if len(loc) >= 2 and loc[0] == "customers" and isinstance(loc[1], int):
            item["customer_index"] = loc[1]
        # the strict types' errors (custval.data.values) name what was expected and what came
        ctx = err.get("ctx") or {}
        item.update({k: str(ctx[k]) for k in ("expected", "got") if k in ctx})
        if all(e["field"] != item["field"] for e in errors):  # one error per field
            errors.append(item)
    first = errors[0]
    message = f"{first['field']}: {first['message']}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return message, errors[:100]


#: the names pydantic gives the members of a union it tried, in an error's location
_MEMBERS = frozenset({"str", "int", "float", "bool", "none", "date", "list", "dict", *EVENT_KINDS})


def _union_member(part: Any) -> bool:
    return isinstance(part, str) and (part in _MEMBERS or "[" in part)


def _request_errors(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    """FastAPI's own validation errors (of the declared parameters) in the service's shape."""
    errors: list[dict[str, Any]] = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        errors.append({"field": ".".join(loc) or "(request)", "message": err.get("msg", "")})
    if not errors:
        return "the request is not valid", []
    return f"{errors[0]['field']}: {errors[0]['message']}", errors


# ---- errors ---------------------------------------------------------------------------------


def guarded(handler: Any) -> Any:
    """Unexpected errors become a 500 with a JSON body here, logged by type only: Starlette's
    outer error handler would log the exception's text, which may hold a customer's values."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except (ApiError, StarletteHTTPException):
            raise
        except CustvalError as exc:
            raise ApiError(422, str(exc)) from None
        except Exception as exc:
            log.error("error in %s: %s", handler.__name__, type(exc).__name__)
            raise ApiError(500, "internal error") from None

    return wrapper


async def _api_error(_: Request, exc: ApiError) -> Response:
    return error_response(exc.status, exc.message, exc.errors, exc.headers)


async def _request_invalid(_: Request, exc: RequestValidationError) -> Response:
    message, errors = _request_errors(exc)
    return error_response(422, message, errors)


async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
    # Starlette's own errors (404 for an unknown path, 405) in the service's shape
    return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # the last resort, outside the routes (guarded catches what the handlers raise)
    route = request.scope.get("route")
    log.error("error in %s: %s", getattr(route, "path", "?"), type(exc).__name__)
    return error_response(500, "internal error")


#: the app's exception handlers (``FastAPI(exception_handlers=...)``): every error in one shape
ERROR_HANDLERS: dict[Any, Callable[[Request, Any], Coroutine[Any, Any, Response]]] = {
    ApiError: _api_error,
    RequestValidationError: _request_invalid,
    StarletteHTTPException: _http_error,
    Exception: _unexpected,
}


# ---- the body limit -------------------------------------------------------------------------


class BodyLimit:
    """Refuses bodies over ``limit`` bytes with 413 before the app reads them (pure ASGI).
    ``keys``: the keys now; a ``/v1`` request without a valid one gets an empty body, so that
    nothing of an unauthorized client is buffered."""

    def __init__(self, app: Any, limit: int, keys: Callable[[], KeyRing] | None = None) -> None:
        self.app, self.limit, self.keys = app, limit, keys

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.keys is not None and scope["path"].startswith("/v1/"):
            auth = headers.get(b"authorization", b"").decode("latin-1")
            if auth[:7].lower() != "bearer " or self.keys().find(auth[7:].strip()) is None:
                # no valid key: answered before any of the body is read (the handler says why)
                await self.app(scope, _no_body(receive), send)
                return
        value = headers.get(b"content-length", b"")
        if value.isdigit() and int(value) > self.limit:
            await self._too_large(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _too_large(self, send: Any) -> None:
        body = json.dumps({"detail": f"the request body is over {self.limit:,} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A receive that gives the app the body already read, then the client's messages (a
    disconnect)."""
    replayed = False

    async def replay() -> dict[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return dict(await receive())

    return replay


def _no_body(receive: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A receive that gives the app an empty body and leaves the client's unread."""
    return _replay(b"", receive)
