"""``GET /v1/customers/{id}``: a customer's prediction and reasons in the latest stored run."""

from __future__ import annotations

import functools
import logging
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from custval.api.deps import ServiceDep, require
from custval.api.http import ApiError, guarded, json_response
from custval.data.values import normalise_id
from custval.store import open_store

__all__ = ["lookup", "router"]

log = logging.getLogger("custval.api")

router = APIRouter(tags=["stored runs"])

NO_SUCH_CUSTOMER = "the latest stored run has no such customer"


@router.get(
    "/v1/customers/{customer_id}", responses={404: {}}, dependencies=[Depends(require("read"))]
)
@guarded
async def customer(
    customer_id: str,
    service: ServiceDep,
    as_of: Annotated[
        date | None,
        Query(
            description="with --realtime: the date to answer at (default: now); after the "
            "customer's latest record"
        ),
    ] = None,
) -> Response:
    """The customer's prediction and reasons in the latest stored scoring run (the id is
    trimmed and upper-cased, as the cleaning keeps ids). With ``--realtime`` the numbers
    are as of now, from the customer's state: every event received counts (``source``
    ``state``, ``events_since_run``)."""
    realtime = service.realtime
    if realtime is None:
        if as_of is not None:
            raise ApiError(422, "as_of needs a service started with --realtime")
        return await _stored(customer_id, service, "customer")
    wanted = _wanted(customer_id)
    state = service.store_state
    answer = functools.partial(
        realtime.customer,
        wanted,
        service.registry.active,
        as_of=as_of,
        clv=state.clv,
        segments=state.segments,
    )
    # states in memory: a millisecond of computing, cheaper in the loop than a thread's hand-off
    found = answer() if realtime.in_memory else await run_in_threadpool(answer)
    if found is None:
        raise ApiError(
            404,
            "no such customer: none of their records is a purchase or a profile (events of "
            "other kinds alone do not make a customer)",
        )
    return json_response(found)


async def _stored(customer_id: str, service: Any, what: str) -> Response:
    """The answer of both routes: the store's ``what`` for the customer, or a 404 naming why."""
    store = service.settings.store
    if not store:
        raise ApiError(404, "the service has no store (start it with --store)")
    found = await run_in_threadpool(lookup, store, _wanted(customer_id), what)
    return _found(found)


def _wanted(customer_id: str) -> str:
    """The id as the cleaning kept it: trimmed and upper-cased (" c001 " is C001); an id that
    cannot be one is no customer of the run."""
    try:
        return normalise_id(customer_id)
    except PydanticCustomError:
        raise ApiError(404, NO_SUCH_CUSTOMER) from None


def _found(found: dict[str, Any] | None) -> Response:
    if found is None:
        raise ApiError(404, NO_SUCH_CUSTOMER)
    return json_response(found)


def lookup(store_url: str, key: str | None, what: str) -> dict[str, Any] | None:
    """The store's ``what`` (its method: ``customer``, ``recommendations``, ``forecast``) of
    ``key``, read in a thread (the store's drivers block); a store that cannot be read is a
    503, logged by type only."""
    try:
        with open_store(store_url, read_only=True) as store:
            return getattr(store, what)(key)
    except Exception as exc:  # e.g. a DuckDB file being written by a scoring run is locked
        # the details (paths, process ids) stay in the log, by type only
        log.error("store lookup failed: %s", type(exc).__name__)
        raise ApiError(503, "the store cannot be read now; try again shortly") from None


@router.get(
    "/v1/customers/{customer_id}/recommendations",
    responses={404: {}},
    dependencies=[Depends(require("read"))],
)
@guarded
async def recommendations(customer_id: str, service: ServiceDep) -> Response:
    """What the latest stored runs recommend for the customer: next best offers with reasons,
    category propensities, churn risk with reasons, their playbook (offer, channel, timing,
    retention) and their place in the latest targeting list; exactly as stored (`custval
    score` with [actions], `custval target`). Read from the service's snapshot of the latest
    run (:mod:`custval.store.snapshot`), which follows a new run within seconds."""
    snapshot = service.store_state.snapshot
    if snapshot is None:
        return await _stored(customer_id, service, "recommendations")
    return _found(snapshot.recommendations(_wanted(customer_id)))
