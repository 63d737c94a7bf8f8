"""The REST service: ``custval serve`` (:mod:`custval.api.app`)."""

from custval.api.app import ServiceSettings, create_app

__all__ = ["ServiceSettings", "create_app"]
