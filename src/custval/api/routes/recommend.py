"""``POST /v1/recommend``: next best offers with reasons for customers the request describes.

The latest scoring run that made next best offers (``[actions] next_best_offers``) keeps its
ranker and its customer-independent candidate sources (co-purchase pairs, popularity, the
catalogue); :class:`custval.flows.offers.ServedOffers` ranks the candidates of the posted
customers with them, by the same candidate code as the run, at the run's as-of date. A
customer of the run posted with the purchases and features the run saw gets the stored offers.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from custval.api.deps import ServiceDep, require
from custval.api.http import ApiError, customer_error, guarded, json_response, parse_body
from custval.data.values import Amount, CustomerId, Number, ProductId
from custval.flows.offers import ServedOffers

__all__ = ["RecommendRequest", "RecommendResponse", "router"]

router = APIRouter(tags=["recommendations"])


class Purchase(BaseModel):
    """One purchase of a product (a refund is left out)."""

    model_config = ConfigDict(extra="forbid")

    product_id: ProductId
    # "day", not "date": an error's field path names pydantic's types apart by their names
    day: dt.date = Field(description="the day of the purchase, before the run's as-of date")
    amount: Amount | None = Field(None, description="what was paid (unused by the ranking)")


class RecommendCustomer(BaseModel):
    """A customer: the ranker's features (``GET /v1/recommend`` names them; null or left out
    for a missing value) and the products they bought."""

    model_config = ConfigDict(extra="forbid")

    customer_id: CustomerId
    features: dict[str, Number] = Field(default_factory=dict)
    purchases: list[Purchase] = Field(default_factory=list, max_length=100_000)


class RecommendRequest(BaseModel):
    """Customers, and how many offers each (default: as many as the run made)."""

    model_config = ConfigDict(extra="forbid")

    k: Annotated[int, Field(strict=True, ge=1, le=100)] | None = None
    customers: Annotated[list[RecommendCustomer], Field(min_length=1)]


class Offer(BaseModel):
    rank: int = Field(description="1 = the best offer")
    product_id: str
    product_name: str
    category: str | None
    score: float = Field(description="the ranker's score (higher: offered first)")
    source: str = Field(description="repurchase, co-purchase or global popularity")
    reason: str


class CustomerOffers(BaseModel):
    customer_id: str
    offers: list[Offer]


class RecommendResponse(BaseModel):
    run_id: str = Field(description="the scoring run whose ranker and sources made the offers")
    as_of: dt.date = Field(description="the run's as-of date: the offers look ahead from it")
    recommendations: list[CustomerOffers]
    warnings: list[str] = Field(default_factory=list)


class RankerInfo(BaseModel):
    run_id: str
    as_of: dt.date
    k: int = Field(description="offers per customer by default")
    features: list[str] = Field(description="the customer features the ranker reads")
    products: int = Field(description="products in the run's catalogue")


def _served(service: Any) -> ServedOffers:
    offers = service.store_state.offers
    if offers is None:
        raise ApiError(
            404,
            "no stored scoring run has next best offers: score with next_best_offers in the "
            "project's [actions] (and start the service with --store)",
        )
    return offers  # type: ignore[no-any-return]


@router.get(
    "/v1/recommend",
    response_model=RankerInfo,
    responses={404: {}},
    dependencies=[Depends(require("read"))],
)
@guarded
async def ranker(service: ServiceDep) -> Response:
    """What ``POST /v1/recommend`` uses: the run, its as-of date and the ranker's features."""
    served = _served(service)
    info = RankerInfo(
        run_id=served.run_id,
        as_of=served.as_of,
        k=served.model.k,
        features=served.features,
        products=len(served.products),
    )
    return json_response(info.model_dump(mode="json"))


@router.post(
    "/v1/recommend",
    response_model=RecommendResponse,
    responses={401: {}, 403: {}, 404: {}, 413: {}, 422: {}},
    dependencies=[Depends(require("read"))],
)
@guarded
async def recommend(request: Request, service: ServiceDep) -> Response:
    """The next best offers of each customer, each with its reason, from the customer's
    features and purchases, by the ranker of the latest scoring run with offers. At most the
    batch limit (default 1,000) customers per request."""
    served = _served(service)
    parsed = parse_body(RecommendRequest.model_validate_json, await request.body())
    service.check_batch(len(parsed.customers))
    customers, purchases, warnings = _frames(parsed, served)
    offers = await run_in_threadpool(served.recommend, customers, purchases, parsed.k)
    return json_response(_answer(served, parsed, offers, warnings))


def _frames(
    parsed: RecommendRequest, served: ServedOffers
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The customers (id and the ranker's features) and their purchases, checked: the
    features are the ranker's, the purchases before the run's as-of date, no id twice."""
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    bought: list[dict[str, Any]] = []
    for i, c in enumerate(parsed.customers):  # a loop over the request's customers
        if c.customer_id in seen:
            raise customer_error(i, "customer_id", "appears twice in the request", "duplicate")
        seen.add(c.customer_id)
        unknown = sorted(set(c.features) - set(served.features))
        if unknown:
            raise customer_error(
                i,
                f"features.{unknown[0]}",
                f"not a feature of the ranker; it reads {', '.join(served.features)}",
                "unknown_feature",
            )
        late = [p for p in c.purchases if p.day >= served.as_of]
        if late:
            raise customer_error(
                i,
                "purchases",
                f"{len(late)} purchase(s) on or after the run's as-of date {served.as_of}: the "
                "offers look ahead from that date",
                "purchase_after_as_of",
            )
        rows.append(
            {"customer_id": c.customer_id, **{f: c.features.get(f) for f in served.features}}
        )
        bought += [
            {
                "customer_id": c.customer_id,
                "product_id": p.product_id,
                "day": p.day,
                "amount": p.amount,
            }
            for p in c.purchases
        ]
    customers = pd.DataFrame(rows, columns=["customer_id", *served.features])
    for f in served.features:
        customers[f] = pd.to_numeric(customers[f], errors="coerce").astype(np.float64)
    purchases = pd.DataFrame(bought, columns=["customer_id", "product_id", "day", "amount"])
    purchases["amount"] = pd.to_numeric(purchases["amount"]).astype(np.float64).fillna(0.0)
    purchases["day"] = pd.to_datetime(purchases["day"])
    unknown_products = set(purchases["product_id"]) - served.products
    warnings = []
    if unknown_products:
        warnings.append(
            f"{len(unknown_products)} product id(s) are not in the run's catalogue: they count as "
            "purchases, with no co-purchase partners"
        )
    return customers, purchases, warnings


def _answer(
    served: ServedOffers, parsed: RecommendRequest, offers: pd.DataFrame, warnings: list[str]
) -> dict[str, Any]:
    by_customer: dict[str, list[dict[str, Any]]] = {c.customer_id: [] for c in parsed.customers}
    cols = ["rank", "product_id", "product_name", "category", "score", "source", "reason"]
    records = offers[["customer_id", *cols]].to_dict("records")
    for r in records:  # a loop over at most k offers per customer of one request
        r["category"] = None if pd.isna(r["category"]) else str(r["category"])
        by_customer[str(r.pop("customer_id"))].append(r)
    return {
        "run_id": served.run_id,
        "as_of": served.as_of.isoformat(),
        "recommendations": [{"customer_id": k, "offers": v} for k, v in by_customer.items()],
        "warnings": warnings,
    }
