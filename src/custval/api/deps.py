"""What the route handlers declare with ``Depends``: the shared :class:`Service`, and the scope
their API key must have.

``Depends(require("read"))`` checks the key before the handler runs, so before it reads any of
the body (the handlers read their bodies themselves; :class:`custval.api.http.BodyLimit` has
already given a request without a valid key an empty one).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request

from custval.api.http import ApiError
from custval.api.keys import ApiKey
from custval.api.state import Service

__all__ = ["ServiceDep", "get_service", "require"]

#: the header that tells a client without a valid key how to authenticate
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def get_service(request: Request) -> Service:
    """The service ``create_app`` keeps in ``app.state`` (async: no thread for a lookup)."""
    service: Service = request.app.state.service
    return service


#: a handler's parameter for the shared service
ServiceDep = Annotated[Service, Depends(get_service)]


def require(scope: str) -> Callable[[Request], Coroutine[Any, Any, ApiKey]]:
    """A dependency that lets through a request whose ``Authorization: Bearer <key>`` is a
    valid key allowing ``scope`` (:mod:`custval.api.keys`): 401 without one, 403 when its scope
    does not allow ``scope``."""

    async def authorized(request: Request) -> ApiKey:
        header = request.headers.get("authorization", "")
        if not header[:7].lower() == "bearer " or not header[7:].strip():
            raise ApiError(
                401,
                "an API key is needed: send 'Authorization: Bearer <key>'",
                headers=_CHALLENGE,
            )
        service: Service = request.app.state.service
        key = service.store_state.key_ring().find(header[7:].strip())
        if key is None:
            raise ApiError(401, "the API key is not valid", headers=_CHALLENGE)
        if not key.allows(scope):
            raise ApiError(403, f"the key '{key.name}' has scope '{key.scope}', not '{scope}'")
        return key

    return authorized
