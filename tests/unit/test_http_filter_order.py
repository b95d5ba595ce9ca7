"""The HTTP filters of a node proxy listener: which it gets, and the order Envoy runs them in."""

from __future__ import annotations

from meshcore.compile import (
    EnvoyJwt,
    EnvoyListener,
    EnvoyRbac,
    EnvoyRoute,
    JwtProvider,
    RbacAction,
)
from meshcore.model import CorsPolicy, FaultInjection, Protocol, ServiceRef
from meshcore.proxy._xds_http_filters import HTTP_FILTERS, http_filters

_JWT = EnvoyJwt((JwtProvider("shop/auth", "https://issuer.example", '{"keys": []}'),))


def _listener(jwt: EnvoyJwt | None = None, rbac: tuple[EnvoyRbac, ...] = ()) -> EnvoyListener:
    return EnvoyListener("shop/web:80", ServiceRef("shop", "web"), 80, Protocol.HTTP, 15001,
                         route_config="shop/web:80", rbac=rbac, jwt=jwt)


def _names(listener: EnvoyListener, routes: list[EnvoyRoute]) -> list[str]:
    return [f["name"] for f in http_filters(listener, routes)]


def test_a_listener_without_checks_or_route_features_gets_only_the_router() -> None:
    assert _names(_listener(), [EnvoyRoute("shop/web:80/default")]) == ["envoy.filters.http.router"]


def test_cors_then_authentication_then_authorization_then_fault_and_the_router_last() -> None:
    listener = _listener(jwt=_JWT, rbac=(EnvoyRbac(RbacAction.DENY), EnvoyRbac(RbacAction.ALLOW)))
    routes = [EnvoyRoute("shop/web:80/a", cors=CorsPolicy(allow_origins=("*",))),
              EnvoyRoute("shop/web:80/b", fault=FaultInjection(abort_status=503))]
    assert _names(listener, routes) == [
        "envoy.filters.http.cors", "envoy.filters.http.jwt_authn", "meshcore.rbac.deny", "meshcore.rbac.allow",
        "envoy.filters.http.fault", "envoy.filters.http.router",
    ]


def test_the_order_is_stated_once_with_the_router_last() -> None:
    assert [f.name for f in HTTP_FILTERS] == [
        "envoy.filters.http.cors", "envoy.filters.http.jwt_authn", "meshcore.rbac", "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
