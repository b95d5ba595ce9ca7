"""Raw Envoy configs (CiliumEnvoyConfig-style) → raw resources, redirects and mesh clusters.

A node takes the configs whose ``node_selector`` its labels match (an empty selector
matches every node; a node without labels gets only those). Their resources are served
as written (names are already qualified ``<ns>/<config>/<name>``, so they cannot collide
with meshcore's ``<ns>/<svc>:<port>`` and ``<ns>/<svc>``); a Listener without an address is
bound by the node proxy on a port compile allocates. Every TCP port of each backend service,
and every ``<ns>/<svc>:<port>`` a resource mentions, becomes one of meshcore's EDS
clusters. A resource mentioning ``<ns>/<svc>`` (Cilium's name for a service's endpoints)
of one of its config's services gets a :class:`ServiceCluster`: the backends of the
service's TCP ports the config selects (``backend_services`` port filters and
``services`` ports together, as Cilium), or of all of them when it selects none. A
service port a config redirects is handed to its listener through the same eBPF hand-off
as meshcore's own L7 ports.

What cannot be applied as a config asks is a :class:`ProxyCode` warning: a name the
generated config already uses, a redirect that cannot be made, a ``<ns>/<svc>`` cluster
whose ports another config selects differently or whose traffic policies differ.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from ...model import Diagnostic, EnvoyConfig, Labels, Service, ServiceRef, Severity, Snapshot, TrafficPolicy
from .._codes import ProxyCode
from .._ports import PortAllocator
from .plan import Origin, RawOrigin, RawResource

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
_MESH_CLUSTER = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)/([a-z0-9]([-a-z0-9]*[a-z0-9])?):([0-9]{1,5})$")


@attrs.frozen
class Redirect:
    """A service port handed to a raw listener on ``proxy_port``, with the decision's reason."""

    listener: str
    proxy_port: int
    reason: str
    config: EnvoyConfig = attrs.field(eq=False)


@attrs.frozen
class ServiceCluster:
    """A ``<ns>/<svc>`` cluster a config uses: the endpoints of the service's TCP ``ports``, with ``traffic``."""

    service: ServiceRef
    ports: tuple[int, ...]
    traffic: TrafficPolicy | None
    origin: Origin
    config: EnvoyConfig = attrs.field(eq=False)


@attrs.frozen
class RawPart:
    """What the node's raw configs add to a plan."""

    resources: tuple[RawResource, ...] = ()
    redirects: Mapping[tuple[ServiceRef, int], Redirect] = attrs.field(factory=dict)
    #: Mesh clusters the configs need: (service, port, origin), in first-use order.
    mesh_clusters: tuple[tuple[ServiceRef, int, Origin], ...] = ()
    #: ``<ns>/<svc>`` clusters the configs need, in first-use order.
    service_clusters: tuple[ServiceCluster, ...] = ()
    warnings: tuple[Diagnostic, ...] = ()


def config_label(config: EnvoyConfig) -> str:
    """``CiliumEnvoyConfig ns/name`` (the input kind when known)."""
    kind = config.source.kind or ("EnvoyConfig" if config.namespace else "clusterwide EnvoyConfig")
    return f"{kind} {config.namespace}/{config.name}" if config.namespace else f"{kind} {config.name}"


def selected_configs(snapshot: Snapshot, node_labels: Mapping[str, str]) -> list[EnvoyConfig]:
    """The configs whose node selector ``node_labels`` match (empty selectors match every node)."""
    labels = Labels(dict(node_labels))
    return [c for c in snapshot.envoy_configs if labels.matches(c.node_selector)]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _listener_port(body: Mapping[str, Any]) -> int | None:
    address = body.get("address")
    if not isinstance(address, dict):
        return None
    port = address.get("socket_address", {}).get("port_value")
    return int(port) if isinstance(port, int | str) and str(port).isdigit() else None


def _selected_ports(service: Service, config: EnvoyConfig) -> tuple[int, ...]:
    """The TCP ports of ``service`` whose endpoints ``config``'s ``<ns>/<svc>`` holds (all when it names none)."""
    wanted = {p for b in config.backend_services if b.service == service.ref for p in b.ports}
    wanted.update(str(p) for s in config.services if s.service == service.ref for p in s.ports)
    tcp = [p for p in service.ports if p.protocol.transport == "TCP"]
    return tuple(p.port for p in tcp if not wanted or str(p.port) in wanted or (p.name and p.name in wanted))


def _service_cluster(snapshot: Snapshot, config: EnvoyConfig, ref: ServiceRef, origin: Origin,
                     warnings: list[Diagnostic]) -> ServiceCluster | None:
    """``config``'s ``<ns>/<svc>`` cluster of ``ref`` (None when the service does not exist)."""
    service = snapshot.service(ref)
    if service is None:
        return None
    ports = _selected_ports(service, config)
    policies = [snapshot.traffic_policy(ref, p) for p in ports]
    settings = [p.settings if p is not None else {} for p in policies]
    traffic = policies[0] if policies else None
    if any(s != settings[0] for s in settings[1:]):
        # One Envoy cluster has one load balancer and one set of limits.
        traffic = None
        warnings.append(Diagnostic(
            ProxyCode.SERVICE_CLUSTER, Severity.WARNING, f"{origin.what} uses cluster {ref}, which takes the endpoints "
            f"of ports {_listed(ports)} of service {ref}; their traffic policies differ, so none is applied to it",
            config.source, "resources"))
    return ServiceCluster(ref, ports, traffic, origin, config)


def _listed(ports: tuple[int, ...]) -> str:
    return ", ".join(map(str, ports)) or "none"


def _add_service_cluster(taken: dict[ServiceRef, ServiceCluster], cluster: ServiceCluster,
                         warnings: list[Diagnostic]) -> None:
    """Keep the first config's ``<ns>/<svc>`` cluster; a later one selecting other ports is warned about."""
    first = taken.setdefault(cluster.service, cluster)
    if first.ports != cluster.ports:
        warnings.append(Diagnostic(
            ProxyCode.SERVICE_CLUSTER, Severity.WARNING, f"{cluster.origin.what} uses cluster {cluster.service} for "
            f"ports {_listed(cluster.ports)} of service {cluster.service}, but {config_label(first.config)} selects "
            f"ports {_listed(first.ports)} for that cluster; that one applies",
            cluster.config.source, "backendServices"))


def raw_part(snapshot: Snapshot, node_labels: Mapping[str, str], ports_for: PortAllocator) -> RawPart:
    """Raw resources of the node's configs, listener ports from ``ports_for``, redirects and clusters."""
    resources: list[RawResource] = []
    redirects: dict[tuple[ServiceRef, int], Redirect] = {}
    mesh: dict[tuple[ServiceRef, int], Origin] = {}
    whole: dict[ServiceRef, ServiceCluster] = {}
    warnings: list[Diagnostic] = []
    for config in selected_configs(snapshot, node_labels):
        label = config_label(config)
        ports: dict[str, int | None] = {}
        # Only names of the config's own services count as <ns>/<svc>: any other "a/b"
        # string (a content type, a header value) is not a cluster name.
        services = {str(r): r for r in (*(b.service for b in config.backend_services),
                                        *(s.service for s in config.services))}
        used: dict[ServiceRef, Origin] = {}
        for i, res in enumerate(config.resources):
            kind = res.type_url.rpartition(".")[2]
            written = res.name.removeprefix(f"{config.namespace}/{config.name}/")
            raw = RawOrigin(config.source.kind or "EnvoyConfig", config.namespace or "", config.name, i, kind,
                            written, res.name)
            origin = Origin(f"{label} resource {i} ({kind} {res.name})", config.source, (res.name,), raw)
            body = res.body
            proxy_port = None
            if res.type_url == LISTENER_TYPE:
                ports[res.name] = _listener_port(body)
                if ports[res.name] is None:
                    proxy_port = ports[res.name] = ports_for.take(f"raw/{res.name}")
            resources.append(RawResource(res.type_url, res.name, res.body_json, origin, proxy_port))
            for text in _strings(body):
                found = _MESH_CLUSTER.match(text)
                if found is not None and 1 <= int(found.group(5)) <= 65535:
                    key = (ServiceRef(found.group(1), found.group(3)), int(found.group(5)))
                    mesh.setdefault(key, Origin(origin.what, config.source))
                elif text in services:
                    used.setdefault(services[text], Origin(origin.what, config.source))
        for ref, where in used.items():
            cluster = _service_cluster(snapshot, config, ref, where, warnings)
            if cluster is not None:
                _add_service_cluster(whole, cluster, warnings)
        for ref in (*(b.service for b in config.backend_services), *(s.service for s in config.services)):
            service = snapshot.service(ref)
            for port in service.ports if service is not None else ():
                if port.protocol.transport == "TCP":  # Envoy proxies no UDP
                    mesh.setdefault((ref, port.port), Origin(f"{label} backend service {ref}", config.source))
        for entry in config.services:
            service = snapshot.service(entry.service)
            if service is None:
                continue
            proxy_port = ports.get(entry.listener)
            if proxy_port is None:
                warnings.append(Diagnostic(
                    ProxyCode.RAW_REDIRECT, Severity.WARNING, f"{label} redirects service {entry.service} to listener "
                    f"{entry.listener}, which has no port on this node; the service is not redirected",
                    config.source, "services"))
                continue
            for number in entry.ports or tuple(p.port for p in service.ports):
                key = (entry.service, number)
                if key in redirects:
                    warnings.append(Diagnostic(
                        ProxyCode.RAW_REDIRECT, Severity.WARNING, f"{label} redirects {entry.service}:{number}, "
                        f"already redirected by {config_label(redirects[key].config)}; that one applies",
                        config.source, "services"))
                    continue
                redirects[key] = Redirect(entry.listener, proxy_port,
                                          f"redirected to Envoy listener {entry.listener} by {label}", config)
    return RawPart(tuple(resources), redirects, tuple((s, p, o) for (s, p), o in mesh.items()),
                   tuple(whole.values()), tuple(warnings))


def drop_collisions(raw: tuple[RawResource, ...], generated: Mapping[str, set[str]]) -> tuple[
        tuple[RawResource, ...], list[Diagnostic]]:
    """Raw resources whose (type, name) meshcore does not generate, and a warning per dropped one."""
    kept: list[RawResource] = []
    warnings: list[Diagnostic] = []
    seen: set[tuple[str, str]] = set()
    for res in raw:
        key = (res.type_url, res.name)
        if res.name in generated.get(res.type_url, set()) or key in seen:
            warnings.append(Diagnostic(
                ProxyCode.RAW_NAME_TAKEN, Severity.WARNING, f"{res.origin.what}: the name {res.name} is already used "
                "by the node proxy's configuration; this resource is left out", res.origin.source, "resources"))
            continue
        seen.add(key)
        kept.append(res)
    return tuple(kept), warnings
