"""EnvoyPlan → Envoy xDS resources (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment).

Resources are first built as Envoy's JSON form (readable, and what the golden files
show), then parsed into protobuf messages; a plan Envoy's API cannot express raises
:class:`ProxyConfigError` naming the model object, before anything is served.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs
from google.protobuf import descriptor_pool, json_format

from ..compile import (
    ClusterWeight,
    EnvoyCluster,
    EnvoyJwt,
    EnvoyListener,
    EnvoyPlan,
    EnvoyRbac,
    EnvoyRoute,
    EnvoyRouteConfig,
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
    RawResource,
    TcpChain,
)
from ..model import (
    HashAlgorithm,
    HashKey,
    HashKeyKind,
    HeaderModifier,
    HttpMatch,
    LbPolicy,
    MatchKind,
    StringMatch,
    TlsMode,
    TrafficPolicy,
    UpstreamTls,
)
from ._errors import ProxyConfigError

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
#: The xDS types in the order they are pushed: clusters before their endpoints, both
#: before the listeners and routes that use them (make before break).
TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
#: Every type served: secrets (only raw configs have them) go whenever Envoy asks for them.
ALL_TYPES = (*TYPE_ORDER, SECRET)
SHORT_TYPE = {LISTENER: "Listener", ROUTE: "RouteConfiguration", CLUSTER: "Cluster", ENDPOINT: "ClusterLoadAssignment",
              SECRET: "Secret"}

#: The bootstrap's static cluster for meshcore's gRPC server (ADS and access logs).
XDS_CLUSTER = "meshcore_xds"

_T = "type.googleapis.com/"
_HCM = _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_RBAC = _T + "envoy.extensions.filters.http.rbac.v3.RBAC"
_NETWORK_RBAC = _T + "envoy.extensions.filters.network.rbac.v3.RBAC"
_JWT_AUTHN = _T + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
_FAULT = _T + "envoy.extensions.filters.http.fault.v3.HTTPFault"
_CORS = _T + "envoy.extensions.filters.http.cors.v3.Cors"
_CORS_POLICY = _T + "envoy.extensions.filters.http.cors.v3.CorsPolicy"
_ROUTER = _T + "envoy.extensions.filters.http.router.v3.Router"
_ALS = _T + "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
_TCP_ALS = _T + "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig"
_TCP_PROXY = _T + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
_TLS_INSPECTOR = _T + "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
_HTTP_OPTIONS = _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_UPSTREAM_TLS = _T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_PREVIOUS_HOSTS = _T + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
#: The JWT filter's name, which is also the dynamic-metadata namespace it writes to.
JWT_FILTER = "envoy.filters.http.jwt_authn"
#: The key under which a verified token's payload is stored in that namespace.
JWT_PAYLOAD = "payload"

# Importing the generated modules registers their types for Any fields in JSON parsing.
_MODULES = (
    "envoy.config.listener.v3.listener_pb2",
    "envoy.config.route.v3.route_pb2",
    "envoy.config.cluster.v3.cluster_pb2",
    "envoy.config.endpoint.v3.endpoint_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.http.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.network.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.http.jwt_authn.v3.config_pb2",
    "envoy.extensions.filters.http.fault.v3.fault_pb2",
    "envoy.extensions.filters.http.cors.v3.cors_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.access_loggers.grpc.v3.als_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
    "envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2",
    "envoy.extensions.transport_sockets.tls.v3.secret_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
)
# Packages whose messages a raw resource's ``@type`` may name (imported on first use).
_TYPE_ROOTS = ("envoy.", "xds.", "udpa.", "google.protobuf.", "validate.")
_imported_packages: set[str] = set()
_MESSAGES: dict[str, Any] = {}


def _message_class(type_url: str) -> Any:
    if not _MESSAGES:
        for module in _MODULES:
            importlib.import_module(module)
        from envoy.config.cluster.v3 import cluster_pb2
        from envoy.config.endpoint.v3 import endpoint_pb2
        from envoy.config.listener.v3 import listener_pb2
        from envoy.config.route.v3 import route_pb2
        from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

        _MESSAGES.update({
            LISTENER: listener_pb2.Listener, ROUTE: route_pb2.RouteConfiguration,
            CLUSTER: cluster_pb2.Cluster, ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
            SECRET: secret_pb2.Secret,
        })
    return _MESSAGES[type_url]


def _type_urls(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "@type" and isinstance(item, str):
                yield item
            else:
                yield from _type_urls(item)
    elif isinstance(value, list):
        for item in value:
            yield from _type_urls(item)


def _register_types(body: Mapping[str, Any]) -> None:
    """Import the generated modules of the Envoy API packages a raw resource's ``@type``s name.

    JSON parsing resolves ``Any`` fields through the default descriptor pool, which knows
    a message only once its module is imported.
    """
    pool = descriptor_pool.Default()
    for url in set(_type_urls(body)):
        name = url.rpartition("/")[2]
        if not name.startswith(_TYPE_ROOTS):
            continue
        try:
            pool.FindMessageTypeByName(name)
            continue
        except KeyError:
            pass
        package = name.rpartition(".")[0]
        while package and package not in _imported_packages:
            _imported_packages.add(package)
            try:
                module = importlib.import_module(package)
            except ImportError:
                package = package.rpartition(".")[0]  # a nested message: its package is shorter
                continue
            for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
                if info.name.endswith("_pb2"):
                    try:
                        importlib.import_module(f"{package}.{info.name}")
                    except ImportError:
                        pass
            break


@attrs.frozen
class ProxySettings:
    """How plans become resources on a node: listener addresses, access logs, timeouts.

    Listeners bind ``listen_ipv4`` and/or ``listen_ipv6`` (the node proxy's addresses the
    socket-level LB sends proxied connections to) on each service port's proxy port.

    Access logs (every request, streamed to the control plane over gRPC) are sent by each
    Envoy worker once ``access_log_buffer_bytes`` of entries are buffered, or every
    ``access_log_flush_ms``. The receiving side pays per message, not per entry, so the
    buffer is twice Envoy's default (16 KiB, ~40 entries): half the messages for the
    same flows. Larger buffers save little more and lengthen the pause of the Envoy
    worker that serializes a full buffer (visible in tail latency from 256 KiB on).
    ``request_ids`` keeps Envoy's default of giving each request an ``x-request-id``
    (applications may log or propagate it); turning it off saved 0–9 µs of proxy CPU per
    request in bench/l7.py, within that machine's noise.
    """

    listen_ipv4: str | None = "127.0.0.1"
    listen_ipv6: str | None = None
    access_log: bool = True
    access_log_flush_ms: int = 1000
    access_log_buffer_bytes: int = 32 * 1024
    connect_timeout_ms: int = 1000
    request_ids: bool = True

    def __attrs_post_init__(self) -> None:
        if not self.listen_ipv4 and not self.listen_ipv6:
            raise ProxyConfigError("ProxySettings needs listen_ipv4 or listen_ipv6 (the node proxy's address)")
        if not 0 < self.access_log_buffer_bytes <= 4 * 1024 * 1024:
            raise ProxyConfigError(f"ProxySettings.access_log_buffer_bytes is {self.access_log_buffer_bytes}: "
                                   "give 1 to 4194304 bytes (gRPC's default message size limit)")


@attrs.frozen
class Resource:
    """One xDS resource: JSON body, protobuf message, digest, and where it came from.

    ``needs`` names the resources of the next type it depends on (a listener's route
    configuration, a cluster's endpoints), which Envoy then subscribes to.
    """

    type_url: str
    name: str
    body: Mapping[str, Any] = attrs.field(eq=False, repr=False)
    message: Any = attrs.field(eq=False, repr=False)
    digest: str
    origins: tuple[Origin, ...] = attrs.field(default=(), eq=False)
    needs: tuple[str, ...] = ()


@attrs.frozen
class Resources:
    """All resources for one node, by type URL and name."""

    by_type: Mapping[str, Mapping[str, Resource]] = attrs.field(eq=False)

    def of(self, type_url: str) -> Mapping[str, Resource]:
        """The resources of one type, by name."""
        return self.by_type.get(type_url, {})

    def __iter__(self) -> Iterator[Resource]:
        for type_url in ALL_TYPES:
            yield from self.of(type_url).values()

    def digest(self) -> str:
        """A digest over every resource (equal digests: nothing to push)."""
        h = hashlib.sha256()
        for r in self:
            h.update(f"{r.type_url}\0{r.name}\0{r.digest}\n".encode())
        return h.hexdigest()

    def to_json(self) -> dict[str, dict[str, Any]]:
        """``{short type name: {resource name: Envoy JSON}}`` for display and golden files."""
        return {SHORT_TYPE[t]: {n: dict(r.body) for n, r in sorted(self.of(t).items())}
                for t in ALL_TYPES if t in TYPE_ORDER or self.of(t)}


def _duration(ms: int | float) -> str:
    return f"{ms / 1000:g}s"


def _percent(value: float) -> dict[str, Any]:
    return {"numerator": round(value * 10_000), "denominator": "MILLION"}


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


def _header_options(mod: HeaderModifier) -> list[dict[str, Any]]:
    return [
        {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"} for k, v in mod.set
    ] + [
        {"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"} for k, v in mod.add
    ]


_REDIRECT_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT", 308: "PERMANENT_REDIRECT"}


def _clusters(weights: tuple[ClusterWeight, ...]) -> dict[str, Any]:
    if len(weights) == 1:
        return {"cluster": weights[0].cluster}
    return {"weighted_clusters": {"clusters": [{"name": w.cluster, "weight": w.weight} for w in weights]}}


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
        for key, value in (("scheme_redirect", r.scheme), ("host_redirect", r.host), ("port_redirect", r.port),
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
    for direction, mod in (("request", route.request_headers), ("response", route.response_headers)):
        if mod.set or mod.add:
            out[f"{direction}_headers_to_add"] = _header_options(mod)
        if mod.remove:
            out[f"{direction}_headers_to_remove"] = list(mod.remove)
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


def _jwt_filter(jwt: EnvoyJwt) -> dict[str, Any]:
    """The JWT filter: a present token must satisfy one provider (else 401); a missing one passes."""
    providers: dict[str, Any] = {}
    for p in jwt.providers:
        provider: dict[str, Any] = {
            "issuer": p.issuer,
            "local_jwks": {"inline_string": p.jwks},
            "forward": p.forward,
            # Where RBAC reads the verified claims (request principals, claim conditions).
            "payload_in_metadata": JWT_PAYLOAD,
        }
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
    # requires_any of every provider plus allow_missing: a request without a token passes
    # unauthenticated, while a token that fails every provider is refused with 401
    # (allow_missing_or_failed would let a forged token through).
    requirement = {"requires_any": {"requirements": [
        *({"provider_name": name} for name in providers), {"allow_missing": {}},
    ]}}
    return {"name": JWT_FILTER, "typed_config": {
        "@type": _JWT_AUTHN, "providers": providers,
        "rules": [{"match": {"prefix": "/"}, "requires": requirement}],
        # CORS preflights carry no credentials; the CORS filter answers them.
        "bypass_cors_preflight": True,
    }}


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


def _rbac_filter(rbac: EnvoyRbac) -> dict[str, Any]:
    return {"name": f"meshcore.rbac.{rbac.action.value.lower()}",
            "typed_config": {"@type": _RBAC, "rules": _rbac_rules(rbac)}}


def _network_rbac_filter(rbac: EnvoyRbac, chain: str) -> dict[str, Any]:
    """A network RBAC filter of a TCP chain; its counters are ``<chain>.<action>.rbac.allowed|denied``."""
    action = rbac.action.value.lower()
    return {"name": f"meshcore.rbac.{action}", "typed_config": {
        "@type": _NETWORK_RBAC, "stat_prefix": f"{_stat_prefix(chain)}.{action}.",
        "rules": _rbac_rules(rbac, network=True)}}


#: One log name for every listener, so each Envoy worker keeps a single ALS stream; the
#: listener of an entry is found from its local (proxy) address.
ACCESS_LOG_NAME = "meshcore"


def _access_log(settings: ProxySettings, kind: str = _ALS) -> list[dict[str, Any]]:
    if not settings.access_log:
        return []
    name = "envoy.access_loggers.tcp_grpc" if kind == _TCP_ALS else "envoy.access_loggers.http_grpc"
    return [{"name": name, "typed_config": {
        "@type": kind,
        "common_config": {
            "log_name": ACCESS_LOG_NAME,
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": XDS_CLUSTER}},
            "buffer_flush_interval": _duration(settings.access_log_flush_ms),
            "buffer_size_bytes": settings.access_log_buffer_bytes,
        },
    }}]


def _addresses(port: int, settings: ProxySettings) -> dict[str, Any]:
    found = [a for a in (settings.listen_ipv4, settings.listen_ipv6) if a]
    out: dict[str, Any] = {"address": {"socket_address": {"address": found[0], "port_value": port}}}
    if len(found) > 1:
        out["additional_addresses"] = [{"address": {"socket_address": {"address": found[1], "port_value": port}}}]
    return out


def _stat_prefix(name: str) -> str:
    return name.replace("/", ".").replace(":", ".")


def _http_listener(listener: EnvoyListener, route_config: EnvoyRouteConfig | None, settings: ProxySettings) -> dict[str, Any]:
    routes = list(route_config.routes()) if route_config is not None else []
    filters: list[dict[str, Any]] = []
    # CORS first so browsers' preflights are answered before authorization, as they
    # carry no credentials; then token validation, whose verified claims authorization
    # reads; fault injection only for allowed requests.
    if any(r.cors is not None for r in routes):
        filters.append({"name": CORS_FILTER, "typed_config": {"@type": _CORS}})
    if listener.jwt is not None:
        filters.append(_jwt_filter(listener.jwt))
    filters.extend(_rbac_filter(f) for f in listener.rbac)
    if any(r.fault is not None for r in routes):
        filters.append({"name": FAULT_FILTER, "typed_config": {"@type": _FAULT}})
    filters.append({"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}})
    hcm: dict[str, Any] = {
        "@type": _HCM,
        "stat_prefix": _stat_prefix(listener.name),
        "codec_type": "AUTO",
        "rds": {"route_config_name": listener.route_config,
                "config_source": {"ads": {}, "resource_api_version": "V3"}},
        "http_filters": filters,
        # Normalised paths, so path rules and policies cannot be side-stepped by spelling.
        "normalize_path": True,
        "merge_slashes": True,
    }
    if not settings.request_ids:
        hcm["generate_request_id"] = False
    access_log = _access_log(settings)
    if access_log:
        hcm["access_log"] = access_log
    return {
        "name": listener.name,
        **_addresses(listener.proxy_port, settings),
        "stat_prefix": _stat_prefix(listener.name),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }


def _tcp_chain(chain: TcpChain) -> dict[str, Any] | None:
    if not chain.clusters:
        return None
    proxy: dict[str, Any] = {"@type": _TCP_PROXY, "stat_prefix": _stat_prefix(chain.name), **_clusters(chain.clusters)}
    if chain.hash_source_ip:
        proxy["hash_policy"] = [{"source_ip": {}}]
    # Network RBAC only decides at the client's first byte, while the TCP proxy connects
    # upstream on accept (a refused client would read a server-first greeting): the
    # chain matches only the client prefixes its policies admit, so any other client
    # matches no chain and Envoy closes it on accept. RBAC stays for what it logs.
    filters = [_network_rbac_filter(f, chain.name) for f in chain.rbac]
    filters.append({"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy})
    out: dict[str, Any] = {"name": chain.name, "filters": filters}
    match: dict[str, Any] = {}
    if chain.sni:
        match["server_names"] = list(chain.sni)
    if chain.sources is not None:
        match["source_prefix_ranges"] = [_cidr_range(c) for c in chain.sources or _NOBODY]
    if match:
        out["filter_chain_match"] = match
    return out


#: The unspecified addresses, which no TCP client connects from: a chain matching only
#: them admits nobody yet keeps its server names (and the listener) in place.
_NOBODY = ("0.0.0.0/32", "::/128")


def _cidr_range(cidr: str) -> dict[str, Any]:
    address, _, length = cidr.partition("/")
    return {"address_prefix": address, "prefix_len": int(length)}


def _tcp_listener(listener: EnvoyListener, settings: ProxySettings) -> dict[str, Any]:
    chains = [c for c in (_tcp_chain(chain) for chain in listener.tcp) if c is not None]
    out: dict[str, Any] = {"name": listener.name, **_addresses(listener.proxy_port, settings),
                           "stat_prefix": _stat_prefix(listener.name), "filter_chains": chains}
    if any(c.rbac or c.sources is not None for c in listener.tcp):
        # One entry per connection, so a connection refused by policy shows as a flow:
        # naming the policy (Envoy's connection termination details) when RBAC refused
        # it, with response flag NR when its client address matched no chain.
        access_log = _access_log(settings, _TCP_ALS)
        if access_log:
            out["access_log"] = access_log
    if any(c.sni for c in listener.tcp):
        out["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector",
                                    "typed_config": {"@type": _TLS_INSPECTOR}}]
    return out


_LB = {LbPolicy.RANDOM: "RANDOM", LbPolicy.ROUND_ROBIN: "ROUND_ROBIN",
       LbPolicy.LEAST_REQUEST: "LEAST_REQUEST", LbPolicy.CONSISTENT_HASH: "RING_HASH"}
_UNLIMITED = 4_294_967_295


def _cluster(cluster: EnvoyCluster, settings: ProxySettings) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": cluster.name,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
        "connect_timeout": _duration(settings.connect_timeout_ms),
        "lb_policy": _LB[cluster.lb_policy],
        # A mesh proxy must not shed load on its own: no circuit-breaking defaults.
        "circuit_breakers": {"thresholds": [{
            "max_connections": _UNLIMITED, "max_pending_requests": _UNLIMITED,
            "max_requests": _UNLIMITED, "max_retries": _UNLIMITED,
        }]},
    }
    common: dict[str, Any] = {}
    if cluster.traffic is not None:
        common = _traffic(out, cluster.traffic)
    if cluster.http2 or (common and cluster.protocol.is_http):
        explicit: dict[str, Any] = {"http2_protocol_options": {}} if cluster.http2 else {"http_protocol_options": {}}
        options: dict[str, Any] = {"@type": _HTTP_OPTIONS, "explicit_http_config": explicit}
        if common:
            options["common_http_protocol_options"] = common
        out["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options}
    return out


def _traffic(out: dict[str, Any], traffic: TrafficPolicy) -> dict[str, Any]:
    """Apply a traffic policy to a cluster's JSON; returns its common HTTP protocol options."""
    common: dict[str, Any] = {}
    lb = traffic.lb
    if lb is not None and lb.hash_key is not None:
        if lb.algorithm is HashAlgorithm.MAGLEV:
            out["lb_policy"] = "MAGLEV"
        else:
            out["lb_policy"] = "RING_HASH"
            if lb.minimum_ring_size is not None:
                out["ring_hash_lb_config"] = {"minimum_ring_size": str(lb.minimum_ring_size)}
    pool = traffic.connection_pool
    if pool is not None:
        limits = out["circuit_breakers"]["thresholds"][0]
        for field, value in (("max_connections", pool.max_connections),
                             ("max_pending_requests", pool.http1_max_pending_requests),
                             ("max_requests", pool.http2_max_requests), ("max_retries", pool.max_retries)):
            if value is not None:
                limits[field] = value
        if pool.connect_timeout_ms is not None:
            out["connect_timeout"] = _duration(pool.connect_timeout_ms)
        if pool.tcp_keepalive is not None:
            k = pool.tcp_keepalive
            keepalive: dict[str, Any] = {}
            if k.probes is not None:
                keepalive["keepalive_probes"] = k.probes
            if k.time_ms is not None:
                keepalive["keepalive_time"] = max(1, round(k.time_ms / 1000))  # whole seconds in Envoy
            if k.interval_ms is not None:
                keepalive["keepalive_interval"] = max(1, round(k.interval_ms / 1000))
            out["upstream_connection_options"] = {"tcp_keepalive": keepalive}
        if pool.idle_timeout_ms is not None:
            common["idle_timeout"] = _duration(pool.idle_timeout_ms)
        if pool.max_requests_per_connection is not None:
            common["max_requests_per_connection"] = pool.max_requests_per_connection
    od = traffic.outlier_detection
    if od is not None:
        outlier: dict[str, Any] = {}
        # As Istio: a counter that is set is enforced (0 turns it off); gateway errors only when asked.
        if od.consecutive_5xx_errors is not None:
            outlier["consecutive_5xx"] = od.consecutive_5xx_errors
            outlier["enforcing_consecutive_5xx"] = 100 if od.consecutive_5xx_errors > 0 else 0
        if od.consecutive_gateway_errors is not None:
            outlier["consecutive_gateway_failure"] = od.consecutive_gateway_errors
            outlier["enforcing_consecutive_gateway_failure"] = 100 if od.consecutive_gateway_errors > 0 else 0
        if od.interval_ms is not None:
            outlier["interval"] = _duration(od.interval_ms)
        if od.base_ejection_time_ms is not None:
            outlier["base_ejection_time"] = _duration(od.base_ejection_time_ms)
        if od.max_ejection_percent is not None:
            outlier["max_ejection_percent"] = od.max_ejection_percent
        out["outlier_detection"] = outlier
        out["common_lb_config"] = {
            # Istio's minHealthPercent is Envoy's panic threshold, and defaults to 0 (never panic).
            "healthy_panic_threshold": {"value": float(od.min_health_percent or 0)},
            # Envoy hands only the first health change in a second to its workers at once and
            # merges later ones into the next second: a second ejection would take effect up to
            # a second late, while every request still sent to that endpoint fails.
            "update_merge_window": "0s",
        }
    tls = traffic.tls
    if tls is not None and tls.originates:
        out["transport_socket"] = _upstream_tls(tls)
    return common


def _upstream_tls(tls: UpstreamTls) -> dict[str, Any]:
    """The cluster's TLS transport socket (SIMPLE or MUTUAL origination, certificates from files)."""
    context: dict[str, Any] = {}
    if tls.ca_certificates and not tls.insecure_skip_verify:
        validation: dict[str, Any] = {"trusted_ca": {"filename": tls.ca_certificates}}
        if tls.subject_alt_names:
            validation["match_typed_subject_alt_names"] = [
                {"san_type": "DNS", "matcher": {"exact": san}} for san in tls.subject_alt_names]
        context["validation_context"] = validation
    if tls.mode is TlsMode.MUTUAL:
        context["tls_certificates"] = [{"certificate_chain": {"filename": tls.client_certificate},
                                        "private_key": {"filename": tls.private_key}}]
    body: dict[str, Any] = {"@type": _UPSTREAM_TLS, "common_tls_context": context}
    if tls.sni:
        body["sni"] = tls.sni
    return {"name": "envoy.transport_sockets.tls", "typed_config": body}


def _load_assignment(cluster: EnvoyCluster) -> dict[str, Any]:
    out: dict[str, Any] = {"cluster_name": cluster.name}
    if cluster.endpoints:
        out["endpoints"] = [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": e.address, "port_value": e.port}}},
             "load_balancing_weight": max(1, e.weight)}
            for e in cluster.endpoints
        ]}]
    return out


#: Parsed messages by (type, canonical JSON): consecutive plans share most resources, and
#: parsing JSON into protobuf is the expensive step. Messages are never modified.
_PARSED: dict[tuple[str, str], tuple[Any, str]] = {}
_PARSED_MAX = 50_000


def _resource(type_url: str, name: str, body: dict[str, Any], origins: tuple[Origin, ...],
              needs: tuple[str, ...] = ()) -> Resource:
    key = (type_url, json.dumps(body, sort_keys=True, separators=(",", ":")))
    cached = _PARSED.get(key)
    if cached is None:
        try:
            message = json_format.ParseDict(body, _message_class(type_url)())
        except json_format.ParseError as exc:
            raise ProxyConfigError(f"{SHORT_TYPE[type_url]} {name} is not valid Envoy configuration: {exc}",
                                   origins[0] if origins else None) from None
        cached = (message, hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest())
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = cached
    message, digest = cached
    return Resource(type_url, name, body, message, digest, origins, needs)


def build_resources(plan: EnvoyPlan, settings: ProxySettings | None = None) -> Resources:
    """Every xDS resource for ``plan``; raises :class:`ProxyConfigError` naming the model object."""
    settings = settings or ProxySettings()
    by_type: dict[str, dict[str, Resource]] = {t: {} for t in TYPE_ORDER}
    for cluster in plan.clusters:
        by_type[CLUSTER][cluster.name] = _resource(CLUSTER, cluster.name, _cluster(cluster, settings),
                                                   cluster.origins, (cluster.name,))
        by_type[ENDPOINT][cluster.name] = _resource(ENDPOINT, cluster.name, _load_assignment(cluster), cluster.origins)
    route_configs = {rc.name: rc for rc in plan.route_configs}
    for rc in plan.route_configs:
        body = {
            "name": rc.name,
            "virtual_hosts": [
                {"name": v.name, "domains": list(v.domains), "routes": [_route(r) for r in v.routes]}
                for v in rc.virtual_hosts
            ],
            # The listener already identifies the service; a Host header with a port
            # must match the same virtual host as one without.
            "ignore_port_in_host_matching": True,
        }
        by_type[ROUTE][rc.name] = _resource(ROUTE, rc.name, body, rc.origins)
    for listener in plan.listeners:
        if listener.is_http:
            assert listener.route_config is not None
            body = _http_listener(listener, route_configs.get(listener.route_config), settings)
            needs: tuple[str, ...] = (listener.route_config,)
        else:
            body = _tcp_listener(listener, settings)
            needs = ()
        by_type[LISTENER][listener.name] = _resource(LISTENER, listener.name, body, listener.origins, needs)
    if plan.raw:
        by_type.setdefault(SECRET, {})
        for raw in plan.raw:
            if raw.name in by_type[raw.type_url]:
                raise ProxyConfigError(f"{SHORT_TYPE[raw.type_url]} {raw.name} is defined twice", raw.origin)
            by_type[raw.type_url][raw.name] = _raw_resource(raw, settings)
    return Resources(by_type)


def _rds_names(value: Any) -> Iterator[str]:
    """Route configuration names of the RDS blocks inside a listener's JSON."""
    if isinstance(value, dict):
        rds = value.get("rds")
        if isinstance(rds, dict) and isinstance(rds.get("route_config_name"), str):
            yield rds["route_config_name"]
        for item in value.values():
            yield from _rds_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _rds_names(item)


def _raw_needs(type_url: str, body: Mapping[str, Any]) -> tuple[str, ...]:
    """What Envoy subscribes to for a raw resource: a listener's RDS names, an EDS cluster's endpoints."""
    if type_url == LISTENER:
        return tuple(dict.fromkeys(_rds_names(body)))
    if type_url == CLUSTER and (body.get("type") == "EDS" or "eds_cluster_config" in body):
        eds = body.get("eds_cluster_config") or {}
        return (str(eds.get("service_name") or body.get("name", "")),)
    return ()


def _raw_resource(raw: RawResource, settings: ProxySettings) -> Resource:
    """A raw config's resource as served; an address-less listener is bound on its proxy port."""
    body = json.loads(raw.body_json)
    if raw.type_url == LISTENER and raw.proxy_port is not None:
        body.update(_addresses(raw.proxy_port, settings))
    _register_types(body)
    return _resource(raw.type_url, raw.name, body, (raw.origin,), _raw_needs(raw.type_url, body))


def canonical_json(resources: Resources) -> str:
    """The resources as stable, indented JSON."""
    return json.dumps(resources.to_json(), indent=2, sort_keys=True) + "\n"
