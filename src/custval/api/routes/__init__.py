"""The service's endpoints, one router per kind of resource (the endpoints are listed in
:mod:`custval.api.app`). Every ``/v1`` route declares the scope its key needs
(:func:`custval.api.deps.require`) and reaches the shared state through
:data:`custval.api.deps.ServiceDep`; none holds state of its own."""

from custval.api.routes import (
    customers,
    events,
    forecasts,
    health,
    models,
    predictions,
    recommend,
    segments,
)

__all__ = ["ROUTERS"]

#: the routers in the order of the OpenAPI document
ROUTERS = (
    health.router,
    predictions.router,
    recommend.router,
    segments.router,
    customers.router,
    events.router,
    forecasts.router,
    models.router,
)
