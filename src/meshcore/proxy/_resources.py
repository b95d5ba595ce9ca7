"""EnvoyPlan → Envoy xDS resources (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment).

Resources are first built as Envoy's JSON form (readable, and what the golden files
show), then parsed into protobuf messages; a plan Envoy's API cannot express raises
:class:`ProxyConfigError` naming the model object, before anything is served.
The JSON of each kind is built by ``_xds_routes``, ``_xds_filters``, ``_xds_listeners``
and ``_xds_clusters`` (sharing ``_xds_common``); this module assembles, parses and
digests it, and serves raw resources as given.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
from google.protobuf import descriptor_pool, json_format

from ..compile import Discovery, EnvoyListener, EnvoyPlan, EnvoyRoute, EnvoySecret, Origin, RawResource
from ._errors import ProxyConfigError
from ._xds_clusters import _cluster, _load_assignment
from ._xds_common import XDS_CLUSTER, ProxySettings
from ._xds_filters import JWT_FILTER, _jwt_per_route, _rbac_per_route
from ._xds_listeners import ACCESS_LOG_NAME, _addresses, _http_listener, _tcp_listener
from ._xds_routes import _route
from ._xds_tunnel import tunnel_resources, tunnelled_upstreams

# What the rest of the package imports from here (ProxySettings, XDS_CLUSTER and
# ACCESS_LOG_NAME are defined with the builders that read them).
__all__ = [
    "ACCESS_LOG_NAME", "ALL_TYPES", "CLUSTER", "ENDPOINT", "LISTENER", "ROUTE", "SECRET", "SHORT_TYPE",
    "TYPE_ORDER", "XDS_CLUSTER", "ProxySettings", "Resource", "Resources", "build_resources", "canonical_json",
]

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
#: The xDS types in the order they are pushed: clusters before their endpoints, both
#: before the listeners and routes that use them (make before break).
TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
#: Every type served: secrets (certificates of TLS terminations, and raw configs' own)
#: go whenever Envoy asks for them.
ALL_TYPES = (*TYPE_ORDER, SECRET)
SHORT_TYPE = {LISTENER: "Listener", ROUTE: "RouteConfiguration", CLUSTER: "Cluster", ENDPOINT: "ClusterLoadAssignment",
              SECRET: "Secret"}

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
    "envoy.extensions.access_loggers.file.v3.file_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
    "envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2",
    "envoy.extensions.network.dns_resolver.cares.v3.cares_dns_resolver_pb2",
    "envoy.extensions.transport_sockets.tls.v3.secret_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.filters.listener.original_dst.v3.original_dst_pb2",
    "envoy.extensions.filters.network.set_filter_state.v3.set_filter_state_pb2",
    "envoy.extensions.filters.network.direct_response.v3.config_pb2",
    "envoy.extensions.transport_sockets.internal_upstream.v3.internal_upstream_pb2",
    "envoy.extensions.transport_sockets.raw_buffer.v3.raw_buffer_pb2",
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


def _route_with_checks(route: EnvoyRoute, listener: EnvoyListener | None) -> dict[str, Any]:
    """A route's JSON with its overrides of the listener's JWT and RBAC filters, when it has them."""
    out = _route(route)
    if listener is None:
        return out
    per_filter: dict[str, Any] = {}
    if route.jwt is not None and listener.jwt is not None:
        per_filter[JWT_FILTER] = _jwt_per_route(route.jwt)
    if route.rbac is not None and listener.rbac:
        where = route.origins[0] if route.origins else Origin(f"route {route.name}")
        per_filter.update(_rbac_per_route(route.rbac, listener.rbac, where))
    if per_filter:
        out.setdefault("typed_per_filter_config", {}).update(per_filter)
    return out


def build_resources(plan: EnvoyPlan, settings: ProxySettings | None = None) -> Resources:
    """Every xDS resource for ``plan``; raises :class:`ProxyConfigError` naming the model object."""
    settings = settings or ProxySettings()
    by_type: dict[str, dict[str, Resource]] = {t: {} for t in TYPE_ORDER}
    cluster_bodies = {cluster.name: _cluster(cluster, settings) for cluster in plan.clusters}
    # A DNS cluster carries its own endpoints.
    assignments = {c.name: _load_assignment(c) for c in plan.clusters if c.discovery is Discovery.EDS}
    listener_bodies: dict[str, dict[str, Any]] = {}
    route_configs = {rc.name: rc for rc in plan.route_configs}
    for listener in plan.listeners:
        if listener.is_http:
            listener_bodies[listener.name] = _http_listener(
                listener, [route_configs[n] for n in listener.route_configs if n in route_configs], settings)
        else:
            listener_bodies[listener.name] = _tcp_listener(listener, settings)
    if plan.tunnel is not None:
        tunnelled_upstreams(plan.tunnel, listener_bodies, cluster_bodies, assignments)
    for cluster in plan.clusters:
        eds = cluster.name in assignments
        by_type[CLUSTER][cluster.name] = _resource(CLUSTER, cluster.name, cluster_bodies[cluster.name],
                                                   cluster.origins, (cluster.name,) if eds else ())
        if eds:
            by_type[ENDPOINT][cluster.name] = _resource(ENDPOINT, cluster.name, assignments[cluster.name],
                                                        cluster.origins)
    listeners = {name: x for x in plan.listeners for name in x.route_configs}
    for rc in plan.route_configs:
        body = {
            "name": rc.name,
            "virtual_hosts": [
                {"name": v.name, "domains": list(v.domains),
                 "routes": [_route_with_checks(r, listeners.get(rc.name)) for r in v.routes]}
                for v in rc.virtual_hosts
            ],
            # The listener already identifies the service; a Host header with a port
            # must match the same virtual host as one without.
            "ignore_port_in_host_matching": True,
        }
        by_type[ROUTE][rc.name] = _resource(ROUTE, rc.name, body, rc.origins)
    for listener in plan.listeners:
        by_type[LISTENER][listener.name] = _resource(LISTENER, listener.name, listener_bodies[listener.name],
                                                     listener.origins, listener.route_configs)
    if plan.tunnel is not None:
        tunnel_listeners, tunnel_clusters = tunnel_resources(plan.tunnel, settings, plan.secrets)
        where = (Origin("mutual TLS tunnels"),)
        for made in tunnel_clusters:
            by_type[CLUSTER][made["name"]] = _resource(CLUSTER, made["name"], made, where)
        for made in tunnel_listeners:
            by_type[LISTENER][made["name"]] = _resource(LISTENER, made["name"], made, where)
    for secret in plan.secrets:
        by_type.setdefault(SECRET, {})[secret.name] = _secret_resource(secret)
    if plan.raw:
        by_type.setdefault(SECRET, {})
        for raw in plan.raw:
            if raw.name in by_type[raw.type_url]:
                raise ProxyConfigError(f"{SHORT_TYPE[raw.type_url]} {raw.name} is defined twice", raw.origin)
            by_type[raw.type_url][raw.name] = _raw_resource(raw, settings)
    return Resources(by_type)


def _secret_resource(secret: EnvoySecret) -> Resource:
    """A certificate as an SDS Secret; its JSON form (what output and golden files show) has the key redacted."""
    if secret.trusted_ca and not secret.chain:
        bundle = {"name": secret.name, "validation_context": {"trusted_ca": {"inline_string": secret.trusted_ca}}}
        return _resource(SECRET, secret.name, bundle, secret.origins)
    def body(key: str) -> dict[str, Any]:
        return {"name": secret.name, "tls_certificate": {"certificate_chain": {"inline_string": secret.chain},
                                                         "private_key": {"inline_string": key}}}
    resource = _resource(SECRET, secret.name, body(secret.private_key.reveal()), secret.origins)
    return attrs.evolve(resource, body=body(secret.private_key.placeholder))


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
