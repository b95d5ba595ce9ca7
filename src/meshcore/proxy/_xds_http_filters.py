"""The HTTP filters of a node proxy listener: one interface, and their order stated once.

Compile decides which checks a listener needs (its ``jwt`` providers and ``rbac``
filters, see :mod:`meshcore.compile`); the order Envoy runs filters in is decided here,
in :data:`HTTP_FILTERS`. Each filter looks at the listener and the routes of its route
configurations and yields its entries in the chain, none when the listener needs none.
Routes' overrides of these filters (``typed_per_filter_config``) are made with the routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..compile import EnvoyListener, EnvoyRoute
from ._xds_common import _CORS, _FAULT, _ROUTER, CORS_FILTER, FAULT_FILTER
from ._xds_filters import JWT_FILTER, _jwt_filter, _rbac_filters

ROUTER_FILTER = "envoy.filters.http.router"


class HttpFilter(Protocol):
    """One kind of HTTP filter a listener may get."""

    @property
    def name(self) -> str:
        """Envoy's name of the filter (the RBAC filters' common prefix, as there is one per action)."""
        ...

    def entries(self, listener: EnvoyListener, routes: Sequence[EnvoyRoute]) -> list[dict[str, Any]]:
        """The filter's entries in ``listener``'s chain; empty when neither it nor its ``routes`` need it."""
        ...


class _Cors:
    """Answers browsers' preflights, and adds CORS headers, for the routes with a CORS policy."""

    name = CORS_FILTER

    def entries(self, listener: EnvoyListener, routes: Sequence[EnvoyRoute]) -> list[dict[str, Any]]:
        if not any(r.cors is not None for r in routes):
            return []
        return [{"name": CORS_FILTER, "typed_config": {"@type": _CORS}}]


class _Jwt:
    """Validates tokens for the providers of the workloads the listener reaches."""

    name = JWT_FILTER

    def entries(self, listener: EnvoyListener, routes: Sequence[EnvoyRoute]) -> list[dict[str, Any]]:
        return [] if listener.jwt is None else [_jwt_filter(listener.jwt, routes)]


class _Rbac:
    """One RBAC filter per action of the authorization policies of the workloads the listener reaches."""

    name = "meshcore.rbac"

    def entries(self, listener: EnvoyListener, routes: Sequence[EnvoyRoute]) -> list[dict[str, Any]]:
        return _rbac_filters(listener.rbac)


class _Fault:
    """Injects delays and aborts for the routes with a fault configuration."""

    name = FAULT_FILTER

    def entries(self, listener: EnvoyListener, routes: Sequence[EnvoyRoute]) -> list[dict[str, Any]]:
        if not any(r.fault is not None for r in routes):
            return []
        return [{"name": FAULT_FILTER, "typed_config": {"@type": _FAULT}}]


class _Router:
    """Sends the request upstream; every listener has it."""

    name = ROUTER_FILTER

    def entries(self, listener: EnvoyListener, routes: Sequence[EnvoyRoute]) -> list[dict[str, Any]]:
        return [{"name": ROUTER_FILTER, "typed_config": {"@type": _ROUTER}}]


#: Every HTTP filter a listener may get, in the order Envoy runs them. CORS first, so
#: browsers' preflights, which carry no credentials, are answered before any check;
#: then authentication (JWT), whose verified claims authorization reads; then
#: authorization (RBAC); fault injection only for the requests allowed through; the
#: router last, as it ends the chain by sending the request on.
HTTP_FILTERS: tuple[HttpFilter, ...] = (_Cors(), _Jwt(), _Rbac(), _Fault(), _Router())


def http_filters(listener: EnvoyListener, routes: Sequence[EnvoyRoute]) -> list[dict[str, Any]]:
    """The ``http_filters`` of ``listener``'s connection manager, in :data:`HTTP_FILTERS` order."""
    return [entry for f in HTTP_FILTERS for entry in f.entries(listener, routes)]
