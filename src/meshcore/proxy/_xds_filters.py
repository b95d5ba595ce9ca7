"""Envoy HTTP filters for authorization and authentication: RBAC (HTTP and network) and JWT.

Translates compile's RBAC expressions into Envoy permissions and principals, with JWT
claim conditions read from the dynamic metadata the JWT filter writes: the JWT filter
stores a verified token's payload under :data:`JWT_PAYLOAD` in the namespace
:data:`JWT_FILTER`, and claim matchers read it from there, so both must agree. A network
RBAC filter refuses policies that read HTTP attributes, which a TCP connection lacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..compile import (
    EnvoyJwt,
    EnvoyRbac,
    EnvoyRoute,
    Origin,
    RbacAnd,
    RbacAny,
    RbacClaim,
    RbacExpr,
    RbacHeader,
    RbacNot,
    RbacOr,
    RbacPath,
    RbacSourceIp,
)
from ..model import MatchKind
from ._errors import ProxyConfigError
from ._xds_common import _JWT_AUTHN, _NETWORK_RBAC, _RBAC, _RBAC_PER_ROUTE, _stat_prefix
from ._xds_routes import _header_matcher, _string_matcher

#: The JWT filter's name, which is also the dynamic-metadata namespace it writes to.
JWT_FILTER = "envoy.filters.http.jwt_authn"
#: The key under which a verified token's payload is stored in that namespace.
JWT_PAYLOAD = "payload"


def _rbac_expr(expr: RbacExpr, principal: bool, where: Origin) -> dict[str, Any]:
    def sub(items: Iterable[RbacExpr]) -> list[dict[str, Any]]:
        return [_rbac_expr(i, principal, where) for i in items]

    if isinstance(expr, RbacAny):
        return {"any": True}
    if isinstance(expr, RbacAnd):
        return {"and_ids": {"ids": sub(expr.items)}} if principal else {"and_rules": {"rules": sub(expr.items)}}
    if isinstance(expr, RbacOr):
        return {"or_ids": {"ids": sub(expr.items)}} if principal else {"or_rules": {"rules": sub(expr.items)}}
    if isinstance(expr, RbacNot):
        return {"not_id" if principal else "not_rule": _rbac_expr(expr.item, principal, where)}
    if isinstance(expr, RbacHeader):
        return {"header": _header_matcher(expr.name, expr.match)}
    if isinstance(expr, RbacPath):
        return {"url_path": {"path": _string_matcher(expr.match)}}
    if isinstance(expr, RbacClaim):
        return _claim_matcher(expr)
    if not principal:
        raise ProxyConfigError("a source address condition ended up among the request permissions", where)
    address, _, length = expr.cidr.partition("/")
    return {"direct_remote_ip": {"address_prefix": address, "prefix_len": int(length)}}


def _claim_matcher(claim: RbacClaim) -> dict[str, Any]:
    """A metadata matcher on the verified JWT's payload: a string claim, or any string of a list claim."""
    path = [{"key": JWT_PAYLOAD}, *({"key": k} for k in claim.path)]
    if claim.match.kind is MatchKind.PRESENT:
        value: dict[str, Any] = {"present_match": True}
    elif claim.single:
        value = {"string_match": _string_matcher(claim.match)}
    else:
        string = {"string_match": _string_matcher(claim.match)}
        value = {"or_match": {"value_matchers": [string, {"list_match": {"one_of": string}}]}}
    return {"metadata": {"filter": JWT_FILTER, "path": path, "value": value}}


def _jwt_requirement(names: Iterable[str]) -> dict[str, Any]:
    """A present token must satisfy one of these providers (else 401); a missing one passes."""
    # requires_any plus allow_missing: a request without a token passes unauthenticated,
    # while a token that fails every provider is refused with 401 (allow_missing_or_failed
    # would let a forged token through).
    return {"requires_any": {"requirements": [*({"provider_name": n} for n in names), {"allow_missing": {}}]}}


def _jwt_requirement_name(names: Sequence[str]) -> str:
    """The key of a route's requirement (its providers) in the JWT filter's requirement map."""
    return " ".join(names)


def _jwt_per_route(names: Sequence[str]) -> dict[str, Any]:
    """A route's JWT configuration: its own requirement, or none (the filter does not run there)."""
    if not names:
        return _filter_off()
    return {"@type": _JWT_PER_ROUTE, "requirement_name": _jwt_requirement_name(names)}


def _jwt_filter(jwt: EnvoyJwt, routes: Iterable[EnvoyRoute] = ()) -> dict[str, Any]:
    """The JWT filter: a present token must satisfy one provider (else 401); a missing one passes.

    Routes validating tokens with only some of the providers name their requirement in
    the filter's requirement map (see :func:`_jwt_per_route`).
    """
    providers: dict[str, Any] = {}
    for p in jwt.providers:
        provider: dict[str, Any] = {
            "issuer": p.issuer,
            "forward": p.forward,
            # Where RBAC reads the verified claims (request principals, claim conditions).
            "payload_in_metadata": JWT_PAYLOAD,
        }
        if p.jwks_cluster:
            # Fetched when a token first needs them, then cached (Envoy's default, 10 minutes).
            provider["remote_jwks"] = {"http_uri": {"uri": p.jwks_uri, "cluster": p.jwks_cluster,
                                                    "timeout": f"{p.jwks_timeout_ms / 1000:.3f}s"}}
        else:
            provider["local_jwks"] = {"inline_string": p.jwks}
        if p.audiences:
            provider["audiences"] = list(p.audiences)
        if p.from_headers:
            provider["from_headers"] = [
                {"name": name, "value_prefix": prefix} if prefix else {"name": name} for name, prefix in p.from_headers
            ]
        if p.from_params:
            provider["from_params"] = list(p.from_params)
        if p.from_cookies:
            provider["from_cookies"] = list(p.from_cookies)
        if p.forward_payload_header:
            provider["forward_payload_header"] = p.forward_payload_header
        if p.claim_to_headers:
            provider["claim_to_headers"] = [{"header_name": h, "claim_name": c} for h, c in p.claim_to_headers]
        providers[p.name] = provider
    config: dict[str, Any] = {
        "@type": _JWT_AUTHN, "providers": providers,
        "rules": [{"match": {"prefix": "/"}, "requires": _jwt_requirement(providers)}],
        # CORS preflights carry no credentials; the CORS filter answers them.
        "bypass_cors_preflight": True,
    }
    own = {_jwt_requirement_name(r.jwt): _jwt_requirement(r.jwt) for r in routes if r.jwt}
    if own:
        config["requirement_map"] = dict(sorted(own.items()))
    return {"name": JWT_FILTER, "typed_config": config}


def _rbac_rules(rbac: EnvoyRbac, network: bool = False) -> dict[str, Any]:
    policies = {}
    for p in rbac.policies:
        where = p.origins[0] if p.origins else Origin(f"RBAC policy {p.name}")
        if network and not (_connection_only(p.permission) and _connection_only(p.principal)):
            raise ProxyConfigError(f"RBAC policy {p.name} of a TCP listener matches HTTP attributes", where)
        policies[p.name] = {
            "permissions": [_rbac_expr(p.permission, False, where)],
            "principals": [_rbac_expr(p.principal, True, where)],
        }
    rules: dict[str, Any] = {"action": rbac.action.value}
    if policies:
        rules["policies"] = policies
    return rules


def _connection_only(expr: RbacExpr) -> bool:
    """True when ``expr`` reads only what a TCP connection has (no headers, path or JWT claims)."""
    if isinstance(expr, (RbacAnd, RbacOr)):
        return all(_connection_only(i) for i in expr.items)
    if isinstance(expr, RbacNot):
        return _connection_only(expr.item)
    return isinstance(expr, (RbacAny, RbacSourceIp))


def _filter_names(filters: Sequence[EnvoyRbac]) -> list[str]:
    """``allow``/``deny``/``log`` per filter; a repeated action (one ALLOW filter per group of backends) gets ``allow.2``…"""
    seen: dict[str, int] = {}
    out = []
    for rbac in filters:
        action = rbac.action.value.lower()
        seen[action] = seen.get(action, 0) + 1
        out.append(action if seen[action] == 1 else f"{action}.{seen[action]}")
    return out


def _rbac_filters(filters: Sequence[EnvoyRbac]) -> list[dict[str, Any]]:
    """The HTTP RBAC filters of a listener, in order (Envoy requires a request to pass each)."""
    return [{"name": f"meshcore.rbac.{name}", "typed_config": {"@type": _RBAC, "rules": _rbac_rules(rbac)}}
            for rbac, name in zip(filters, _filter_names(filters), strict=True)]


_JWT_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig"
_FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"


def _filter_off() -> dict[str, Any]:
    """A route's configuration of a listener filter it needs none of: the filter is not even created
    for its requests (a filter present but told to pass costs ~1–2 µs per request in Envoy)."""
    return {"@type": _FILTER_CONFIG, "disabled": True}


def _rbac_per_route(route: Sequence[EnvoyRbac], listener: Sequence[EnvoyRbac], where: Origin) -> dict[str, Any]:
    """A route's override of each of the listener's RBAC filters: its own filter of that action, or none.

    The route's filters take the listener's filters of the same action in order; a
    listener filter left over does not run for the route (see :func:`_filter_off`).
    """
    spare: dict[str, list[EnvoyRbac]] = {}
    for rbac in route:
        spare.setdefault(rbac.action.value, []).append(rbac)
    out: dict[str, Any] = {}
    for rbac, name in zip(listener, _filter_names(listener), strict=True):
        own = spare.get(rbac.action.value)
        out[f"meshcore.rbac.{name}"] = (
            {"@type": _RBAC_PER_ROUTE, "rbac": {"rules": _rbac_rules(own.pop(0))}} if own else _filter_off())
    if any(spare.values()):
        raise ProxyConfigError("a route needs an RBAC filter its listener does not have", where)
    return out


def _network_rbac_filters(filters: Sequence[EnvoyRbac], chain: str) -> list[dict[str, Any]]:
    """The network RBAC filters of a TCP chain; their counters are ``<chain>.<action>.rbac.allowed|denied``."""
    return [{"name": f"meshcore.rbac.{name}", "typed_config": {
        "@type": _NETWORK_RBAC, "stat_prefix": f"{_stat_prefix(chain)}.{name}.",
        "rules": _rbac_rules(rbac, network=True)}}
        for rbac, name in zip(filters, _filter_names(filters), strict=True)]
