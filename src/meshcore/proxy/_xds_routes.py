"""Envoy route JSON for one :class:`~meshcore.compile.EnvoyRoute`: match, action, headers, faults.

Builds the string and header matchers (also used by the RBAC filters), the route match,
redirects and direct responses, weighted clusters (also used by TCP proxy chains),
retries, mirrors, hash policies, and the per-route fault and CORS configurations. The
listener enables the fault and CORS HTTP filters (named :data:`FAULT_FILTER` and
:data:`CORS_FILTER`) exactly when one of its routes carries such a configuration.
"""

from __future__ import annotations

from typing import Any

from ..compile import ClusterWeight, EnvoyRoute, Origin
from ..model import HashKey, HashKeyKind, HeaderModifier, HttpMatch, MatchKind, StringMatch
from ._errors import ProxyConfigError
from ._xds_common import _CORS_POLICY, _FAULT, _PREVIOUS_HOSTS, CORS_FILTER, FAULT_FILTER, _duration, _percent


def _string_matcher(match: StringMatch) -> dict[str, Any]:
    if match.kind is MatchKind.EXACT:
        return {"exact": match.value}
    if match.kind is MatchKind.PREFIX:
        return {"prefix": match.value}
    if match.kind is MatchKind.SUFFIX:
        return {"suffix": match.value}
    if match.kind is MatchKind.REGEX:
        return {"safe_regex": {"regex": match.value}}
    raise ValueError(f"a {match.kind.value} match has no string matcher")


def _header_matcher(name: str, match: StringMatch, invert: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if match.kind is MatchKind.PRESENT:
        out["present_match"] = True
    else:
        out["string_match"] = _string_matcher(match)
    if invert:
        out["invert_match"] = True
    return out


def _route_match(match: HttpMatch) -> dict[str, Any]:
    out: dict[str, Any]
    path = match.path
    if path is None:
        out = {"prefix": "/"}
    elif path.kind is MatchKind.EXACT:
        out = {"path": path.value}
    elif path.kind is MatchKind.PREFIX:
        out = {"prefix": path.value}
    elif path.kind is MatchKind.PATH_PREFIX:
        # Whole path elements: /v2 matches /v2, /v2/ and /v2/x, not /v2x (Gateway API
        # PathPrefix). A trailing "/" is ignored and "/" matches every path (Envoy refuses
        # both in path_separated_prefix).
        value = path.value.rstrip("/")
        out = {"path_separated_prefix": value} if value else {"prefix": "/"}
    else:
        out = {"safe_regex": {"regex": path.value}}
    headers = [_header_matcher(h.name, h.match, h.invert) for h in match.headers]
    if match.method:
        headers.append(_header_matcher(":method", StringMatch(MatchKind.EXACT, match.method)))
    if match.authority is not None:
        headers.append(_header_matcher(":authority", match.authority))
    if headers:
        out["headers"] = headers
    if match.query:
        out["query_parameters"] = [
            {"name": q.name, "present_match": True} if q.match.kind is MatchKind.PRESENT
            else {"name": q.name, "string_match": _string_matcher(q.match)}
            for q in match.query
        ]
    return out


def _literal(value: str) -> str:
    """``value`` as an Envoy header format string that yields it unchanged (``%`` starts a command there)."""
    return value.replace("%", "%%")


def _header_options(mod: HeaderModifier) -> list[dict[str, Any]]:
    return [
        {"header": {"key": k, "value": _literal(v)}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for k, v in mod.set
    ] + [
        {"header": {"key": k, "value": _literal(v)}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
        for k, v in mod.add
    ]


_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT", 308: "PERMANENT_REDIRECT"}


def _header_changes(request: HeaderModifier | None, response: HeaderModifier | None) -> dict[str, Any]:
    """The ``*_headers_to_add``/``*_headers_to_remove`` fields of a route or weighted cluster."""
    out: dict[str, Any] = {}
    for direction, mod in (("request", request), ("response", response)):
        if mod is None:
            continue
        if mod.set or mod.add:
            out[f"{direction}_headers_to_add"] = _header_options(mod)
        if mod.remove:
            out[f"{direction}_headers_to_remove"] = list(mod.remove)
    return out


def _clusters(weights: tuple[ClusterWeight, ...]) -> dict[str, Any]:
    per_cluster = any(w.request_headers or w.response_headers for w in weights)
    if len(weights) == 1 and not per_cluster:
        return {"cluster": weights[0].cluster}
    # A cluster's own header changes need the weighted form, even for a single cluster.
    return {"weighted_clusters": {"clusters": [
        {"name": w.cluster, "weight": w.weight, **_header_changes(w.request_headers, w.response_headers)}
        for w in weights]}}


def _route(route: EnvoyRoute) -> dict[str, Any]:
    where = route.origins[0] if route.origins else Origin(f"route {route.name}")
    out: dict[str, Any] = {"name": route.name, "match": _route_match(route.match)}
    if route.per_million is not None:
        out["match"]["runtime_fraction"] = {
            "default_value": {"numerator": route.per_million, "denominator": "MILLION"}}
    if route.redirect is not None:
        r = route.redirect
        if r.status not in _REDIRECT_CODES:
            raise ProxyConfigError(
                f"redirect status {r.status} cannot be sent by Envoy (use one of {', '.join(map(str, _REDIRECT_CODES))})",
                where,
            )
        redirect: dict[str, Any] = {"response_code": _REDIRECT_CODES[r.status]}
        # The scheme's own port is left out of Location (https://host/, not https://host:443/):
        # without port_redirect Envoy drops the request's port when it changes the scheme.
        port = None if r.scheme is not None and _DEFAULT_PORTS.get(r.scheme) == r.port else r.port
        for key, value in (("scheme_redirect", r.scheme), ("host_redirect", r.host), ("port_redirect", port),
                           ("path_redirect", r.path), ("prefix_rewrite", r.prefix_replace)):
            if value is not None:
                redirect[key] = value
        out["redirect"] = redirect
    elif route.direct_response is not None:
        direct: dict[str, Any] = {"status": route.direct_response.status}
        if route.direct_response.body:
            direct["body"] = {"inline_string": route.direct_response.body}
        out["direct_response"] = direct
    else:
        out["route"] = _route_action(route, where)
    out.update(_header_changes(route.request_headers, route.response_headers))
    per_filter: dict[str, Any] = {}
    if route.fault is not None:
        per_filter[FAULT_FILTER] = _fault(route)
    if route.cors is not None:
        c = route.cors
        cors: dict[str, Any] = {
            "@type": _CORS_POLICY,
            "allow_origin_string_match": [
                {"safe_regex": {"regex": ".*"}} if o == "*" else {"exact": o} for o in c.allow_origins
            ],
        }
        for key, values in (("allow_methods", c.allow_methods), ("allow_headers", c.allow_headers),
                            ("expose_headers", c.expose_headers)):
            if values:
                cors[key] = ",".join(values)
        if c.max_age_s is not None:
            cors["max_age"] = str(c.max_age_s)
        if c.allow_credentials:
            cors["allow_credentials"] = True
        per_filter[CORS_FILTER] = cors
    if per_filter:
        out["typed_per_filter_config"] = per_filter
    return out


def _route_action(route: EnvoyRoute, where: Origin) -> dict[str, Any]:
    action = _clusters(route.clusters)
    # No timeout unless the model sets one: Envoy's default (15 s) would cut streams.
    action["timeout"] = _duration(route.timeout_ms or 0)
    rewrite = route.rewrite
    if rewrite is not None:
        if rewrite.path is not None and rewrite.prefix is not None:
            raise ProxyConfigError("a rewrite sets both a full path and a prefix; Envoy can do only one", where)
        if rewrite.host:
            action["host_rewrite_literal"] = rewrite.host
        if rewrite.prefix is not None:
            action["prefix_rewrite"] = rewrite.prefix
        if rewrite.path is not None:
            # The whole path (the query string is kept: Envoy rewrites only the path part).
            action["regex_rewrite"] = {"pattern": {"regex": "^.*$"}, "substitution": rewrite.path}
    if route.retries is not None:
        r = route.retries
        on = list(r.retry_on)
        if r.status_codes and "retriable-status-codes" not in on:
            on.append("retriable-status-codes")
        retry: dict[str, Any] = {
            "retry_on": ",".join(on),
            "num_retries": r.attempts,
            # Prefer another endpoint for each retry, as a mesh client would.
            "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                      "typed_config": {"@type": _PREVIOUS_HOSTS}}],
            "host_selection_retry_max_attempts": 3,
        }
        if r.per_try_timeout_ms:
            retry["per_try_timeout"] = _duration(r.per_try_timeout_ms)
        if r.status_codes:
            retry["retriable_status_codes"] = list(r.status_codes)
        action["retry_policy"] = retry
    if route.mirrors:
        action["request_mirror_policies"] = [
            {"cluster": m.cluster, "runtime_fraction": {"default_value": _percent(m.percent)}} for m in route.mirrors
        ]
    if route.hash_policy:
        action["hash_policy"] = [_hash_policy(k) for k in route.hash_policy]
    return action


def _hash_policy(key: HashKey) -> dict[str, Any]:
    """A route's hash policy entry for one consistent-hash key."""
    if key.kind is HashKeyKind.HEADER:
        return {"header": {"header_name": key.name}}
    if key.kind is HashKeyKind.QUERY_PARAMETER:
        return {"query_parameter": {"name": key.name}}
    if key.kind is HashKeyKind.SOURCE_IP:
        return {"connection_properties": {"source_ip": True}}
    cookie: dict[str, Any] = {"name": key.name}
    if key.path:
        cookie["path"] = key.path
    if key.ttl_ms is not None:
        cookie["ttl"] = _duration(key.ttl_ms)  # with a ttl Envoy sets the cookie when it is missing
    return {"cookie": cookie}


def _fault(route: EnvoyRoute) -> dict[str, Any]:
    fault = route.fault
    assert fault is not None
    out: dict[str, Any] = {"@type": _FAULT}
    if fault.delay_ms is not None:
        out["delay"] = {"fixed_delay": _duration(fault.delay_ms), "percentage": _percent(fault.delay_percent)}
    if fault.abort_status is not None or fault.abort_grpc_status is not None:
        abort: dict[str, Any] = {"percentage": _percent(fault.abort_percent)}
        if fault.abort_grpc_status is not None:
            abort["grpc_status"] = fault.abort_grpc_status
        else:
            abort["http_status"] = fault.abort_status
        out["abort"] = abort
    return out
