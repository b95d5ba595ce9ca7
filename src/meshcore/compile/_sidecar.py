"""Snapshot → a SidecarPlan per sidecar workload of the node: what its own Envoy serves (pure).

A workload in ``sidecar`` mode has an Envoy of its own, which the kernel puts in the path
of its connections both ways (see bpf/sidecar.bpf.c):

- **Outbound**, every TCP connection of the pod reaches the sidecar's listener on loopback
  (:data:`SIDECAR_OUTBOUND_PORT`) with its original destination. The sidecar serves a
  service port itself when the node proxy's listener for it would only route (its routes
  are the same, for this workload's own view of them: routes matching on the client keep
  only what it matches) or when the kernel balances it alone (a TCP proxy over the same
  backends and weights). A port whose listener checks authorization or tokens for its
  destinations (their L7 policies, JWTs, clients' egress policies), terminates TLS,
  resolves names or is a raw Envoy config's stays with the node proxy: the sidecar passes
  the connection on to its address, and the kernel hands it to the node proxy as it would
  the pod's own — so no destination's check is skipped (the hole of Istio's mix, where a
  sidecar's traffic skips the waypoint's policies). Anything else passes through to its
  destination. With mutual TLS the sidecar carries its connections to meshed destinations
  in HBONE tunnels itself, presenting its workload's SVID (:attr:`SidecarPlan.tunnel`).
- **Inbound**, TCP to the pod's addresses from outside the pod reaches the sidecar's
  listener on those addresses (:data:`SIDECAR_INBOUND_PORT`), keeping its destination. The
  HTTP ports that L7 authorization policies or request authentications select are checked
  there (the kernel no longer admits only the node proxy on them), with the client's
  address as the kernel proved it — key sets a mesh service serves (``jwks_uri``) the
  sidecar fetches itself, as the node proxy does; the rest, and connections from node proxies — which
  applied the workload's policies already (a routed request) or refuse its checked ports
  (a tunnel they deliver) — pass to the application.

A sidecar the node has not seen serve yet (``CompileOptions.sidecars_serving``) is planned,
so that it can be given its configuration, but its workload is enforced as in ``node`` mode
until it serves: make before break.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from ..model import (
    BackendState,
    Diagnostic,
    Protocol,
    ProxyMode,
    ServiceRef,
    Snapshot,
    Source,
    Workload,
    WorkloadRef,
)
from ._envoy.clusters import Clusters
from ._envoy.jwt import listener_jwt
from ._envoy.plan import (
    ClusterWeight,
    Discovery,
    EnvoyCluster,
    EnvoyEndpoint,
    EnvoyListener,
    EnvoyPlan,
    EnvoyRoute,
    EnvoyRouteConfig,
    EnvoyVirtualHost,
    Origin,
    TcpChain,
    cluster_name,
)
from ._envoy.raw import Redirect
from ._envoy.rbac import ChainEndpoint, RbacIndex, listener_rbac
from ._policy_l7 import proxy_gates
from ._tunnel import TunnelDestination, TunnelPlan, TunnelRefusal

if TYPE_CHECKING:  # the Plan holds sidecar plans: its module imports this one
    from ._plan import BpfPlan, BpfService

__all__ = [
    "SIDECAR_INBOUND_PORT", "SIDECAR_OUTBOUND_PORT", "SidecarPassed", "SidecarPlan", "SidecarService",
    "compile_sidecars", "serving_sidecars", "sidecar_gates", "sidecar_node_id",
]

#: The sidecar's outbound listener, on the pod's loopback addresses.
SIDECAR_OUTBOUND_PORT = 15001
#: The sidecar's inbound listener, on the pod's addresses.
SIDECAR_INBOUND_PORT = 15006


def sidecar_node_id(workload: WorkloadRef) -> str:
    """The Envoy node id a workload's sidecar is served as (``sidecar/<namespace>/<pod>``)."""
    return f"sidecar/{workload.namespace}/{workload.name}"


@attrs.frozen
class SidecarService:
    """A service port the sidecar serves itself: connections to its virtual IPs and port, and their listener."""

    service: ServiceRef
    port: int
    vips: tuple[str, ...]
    listener: EnvoyListener


@attrs.frozen
class SidecarPassed:
    """A service port the sidecar passes on to the node proxy, and why."""

    service: ServiceRef
    port: int
    reason: str


@attrs.frozen
class SidecarPlan:
    """What one workload's sidecar serves, and whether the kernel steers the workload through it yet.

    ``outbound`` are the service ports it serves itself (``passed`` those it leaves to the
    node proxy); ``inbound`` one HTTP listener per port of its own it checks (named
    ``inbound|<port>``, ``port`` the workload's port); ``trusted`` the node proxies'
    addresses; ``tunnel`` the destinations it carries in its own HBONE tunnels, ``egress``
    those of them its workload's egress policy refuses (the kernel sees only the tunnel's
    connection to the destination's node).
    """

    workload: WorkloadRef
    addresses: tuple[str, ...]
    spiffe_id: str
    serving: bool = True
    outbound: tuple[SidecarService, ...] = ()
    passed: tuple[SidecarPassed, ...] = ()
    inbound: tuple[EnvoyListener, ...] = ()
    route_configs: tuple[EnvoyRouteConfig, ...] = ()
    clusters: tuple[EnvoyCluster, ...] = ()
    trusted: tuple[str, ...] = ()
    tunnel: tuple[TunnelDestination, ...] = ()
    egress: tuple[TunnelRefusal, ...] = ()
    inbound_port: int = SIDECAR_INBOUND_PORT
    outbound_port: int = SIDECAR_OUTBOUND_PORT
    warnings: tuple[Diagnostic, ...] = attrs.field(default=(), eq=False)

    @property
    def node_id(self) -> str:
        """The Envoy node id this sidecar is served as."""
        return sidecar_node_id(self.workload)


def _host_prefix(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def _why_not(listener: EnvoyListener, plan: EnvoyPlan) -> str:
    """Why the node proxy keeps a port (its listener checks something for its destinations), or ''."""
    if listener.tls:
        return "the node proxy terminates TLS on it"
    if listener.jwt is not None:
        return "the node proxy validates JWTs for its destinations"
    if listener.rbac:
        return "the node proxy checks authorization for its destinations (their policies, clients' egress policies)"
    if any(c.rbac or c.sources is not None or c.tls is not None for c in listener.tcp):
        return "the node proxy checks authorization for its destinations (their policies, clients' egress policies)"
    configs = [plan.route_config(n) for n in listener.route_configs]
    routes = [r for rc in configs if rc is not None for r in rc.routes()]
    if any(r.rbac or r.jwt for r in routes):
        return "the node proxy checks authorization for its destinations (their policies, clients' egress policies)"
    for name in _clusters_of(listener, routes):
        cluster = plan.cluster(name)
        if cluster is not None and cluster.discovery is not Discovery.EDS:
            return "the node proxy resolves its backends' names"
    return ""


def _clusters_of(listener: EnvoyListener, routes: Iterable[EnvoyRoute]) -> list[str]:
    names = [w.cluster for r in routes for w in r.clusters] + [m.cluster for r in routes for m in r.mirrors]
    names += [w.cluster for c in listener.tcp for w in c.clusters]
    return list(dict.fromkeys(names))


def _own_view(listener: EnvoyListener, workload: Workload) -> EnvoyListener:
    """The listener as this workload sees it: the route configuration of its client view, no checks."""
    mine = {_host_prefix(a) for a in workload.addresses}
    chosen = next((v.route_config for v in listener.client_views if mine & set(v.sources)), listener.route_config)
    return attrs.evolve(listener, route_config=chosen, client_views=(), rbac=(), jwt=None)


def _l4_listener(service: ServiceRef, port: int, cluster: str, origin: Origin) -> EnvoyListener:
    return EnvoyListener(cluster, service, port, Protocol.TCP, 0,
                         tcp=(TcpChain(cluster, (), (ClusterWeight(cluster, 1),), (origin,)),), origins=(origin,))


def _l4_cluster(name: str, service: ServiceRef, port: int, fronts: Sequence[BpfService], origin: Origin) -> EnvoyCluster:
    """The kernel's backends and weights of a port (its frontends of every family), as one cluster."""
    endpoints: dict[tuple[str, int], EnvoyEndpoint] = {}
    for front in fronts:
        for b in front.backends:
            if b.weight > 0 and b.state is BackendState.ACTIVE:
                endpoints.setdefault((b.address, b.port), EnvoyEndpoint(b.address, b.port, b.weight))
    return EnvoyCluster(name, service, port, Protocol.TCP, endpoints=tuple(endpoints.values()), origins=(origin,))


def _outbound(workload: Workload, bpf: BpfPlan, envoy: EnvoyPlan, snapshot: Snapshot,
              redirects: Mapping[tuple[ServiceRef, int], Redirect],
              ) -> tuple[list[SidecarService], list[SidecarPassed], list[EnvoyRouteConfig], list[EnvoyCluster]]:
    by_port: dict[tuple[ServiceRef, int], list[BpfService]] = {}
    for front in bpf.services:
        if front.protocol == "TCP":
            by_port.setdefault((front.service, front.port), []).append(front)
    served: list[SidecarService] = []
    passed: list[SidecarPassed] = []
    configs: dict[str, EnvoyRouteConfig] = {}
    clusters: dict[str, EnvoyCluster] = {}
    for (ref, port), fronts in by_port.items():
        vips = tuple(f.vip for f in fronts)
        name = cluster_name(ref, port)
        service = snapshot.service(ref)
        origin = Origin(f"service {ref} port {port}", service.source if service is not None else Source())
        if fronts[0].proxy_port is None:
            clusters[name] = _l4_cluster(name, ref, port, fronts, origin)
            served.append(SidecarService(ref, port, vips, _l4_listener(ref, port, name, origin)))
            continue
        redirect = redirects.get((ref, port))
        if redirect is not None:
            # A raw config programs the node proxy as written: its listener is the node's to run.
            passed.append(SidecarPassed(ref, port, f"{redirect.reason}, which the node proxy runs"))
            continue
        listener = envoy.listener(name)
        if listener is None:
            passed.append(SidecarPassed(ref, port, "the node proxy has no listener of its own for it"))
            continue
        why = _why_not(listener, envoy)
        if why:
            passed.append(SidecarPassed(ref, port, why))
            continue
        mine = _own_view(listener, workload)
        config = envoy.route_config(mine.route_config) if mine.route_config is not None else None
        routes = list(config.routes()) if config is not None else []
        if config is not None:
            configs[config.name] = config
        for cluster in _clusters_of(mine, routes):
            found = envoy.cluster(cluster)
            if found is not None:
                clusters[cluster] = found
        served.append(SidecarService(ref, port, vips, mine))
    return served, passed, list(configs.values()), list(clusters.values())


def sidecar_gates(snapshot: Snapshot) -> dict[WorkloadRef, set[int]]:
    """Each workload's ports that L7 policies or request authentications check (its gated HTTP ports)."""
    out: dict[WorkloadRef, set[int]] = {}
    for gate in proxy_gates(snapshot):
        for ref, ports in gate.ports.items():
            out.setdefault(ref, set()).update(ports)
    return out


def _inbound(workload: Workload, ports: Iterable[int], index: RbacIndex, snapshot: Snapshot,
             warnings: list[Diagnostic]) -> tuple[list[EnvoyListener], list[EnvoyRouteConfig], list[EnvoyCluster]]:
    """An HTTP listener per checked port, applying the workload's policies and token checks, to the application.

    Key sets given by the URI of a mesh service are fetched by the sidecar itself, through
    that service port's cluster (made as the node proxy's), among the returned clusters.
    """
    listeners, configs, clusters = [], [], []
    keys = Clusters(snapshot, index.workloads, warnings)
    for port in sorted(ports):
        name = f"inbound|{port}"
        endpoints = [ChainEndpoint(str(workload.ref), a, port) for a in workload.addresses]
        jwt = listener_jwt(snapshot.request_authentications, [workload], 1, warnings, key_clusters=keys.key_cluster)
        issuers = tuple(p.issuer for p in jwt.providers) if jwt is not None else ()
        rbac = listener_rbac(index, endpoints, warnings, issuers)
        origin = Origin(f"port {port} of {workload.ref}", workload.source)
        clusters.append(EnvoyCluster(name, ServiceRef(workload.namespace, workload.name), port, Protocol.HTTP,
                                     endpoints=tuple(EnvoyEndpoint(a, port) for a in workload.addresses[:1]),
                                     origins=(origin,)))
        route = EnvoyRoute(name=f"{name}/app", clusters=(ClusterWeight(name, 1),), origins=(origin,))
        configs.append(EnvoyRouteConfig(name, (EnvoyVirtualHost(name, ("*",), (route,)),), (origin,)))
        listeners.append(EnvoyListener(
            name, ServiceRef(workload.namespace, workload.name), port, Protocol.HTTP, port, route_config=name,
            rbac=rbac, jwt=jwt, origins=(origin, *(o for f in rbac for p in f.policies for o in p.origins))))
    return listeners, configs, [*clusters, *keys.by_name.values()]


def _tunnel(workload: Workload, tunnel: TunnelPlan | None) -> tuple[TunnelDestination, ...]:
    """The destinations the workload's sidecar tunnels itself: those the node steers (its own addresses aside)."""
    if tunnel is None:
        return ()
    own = set(workload.addresses)
    return tuple(d for d in tunnel.destinations if d.address not in own)


def _egress(workload: Workload, tunnel: TunnelPlan | None) -> tuple[TunnelRefusal, ...]:
    """What the workload's egress policy refuses among the destinations its sidecar tunnels."""
    if tunnel is None:
        return ()
    own = set(workload.addresses)
    mine = next((w for w in tunnel.workloads if w.workload == workload.ref), None)
    return tuple(r for r in mine.egress if r.address not in own) if mine is not None else ()


def _merged(outbound: Iterable[EnvoyCluster], inbound: Iterable[EnvoyCluster]) -> list[EnvoyCluster]:
    """Every cluster once by name, sorted; the outbound one wins (a key set's service port the sidecar serves
    is fetched through the cluster its own connections there use)."""
    by_name: dict[str, EnvoyCluster] = {}
    for cluster in (*outbound, *inbound):
        by_name.setdefault(cluster.name, cluster)
    return sorted(by_name.values(), key=lambda c: c.name)


def compile_sidecars(snapshot: Snapshot, node: str, bpf: BpfPlan, envoy: EnvoyPlan, tunnel: TunnelPlan | None,
                     serving: frozenset[WorkloadRef] | None,
                     redirects: Mapping[tuple[ServiceRef, int], Redirect] | None = None) -> tuple[SidecarPlan, ...]:
    """A plan for each workload of ``node`` in sidecar mode (``serving`` None: every one serves).

    ``redirects`` are the service ports the node's raw Envoy configs redirect to their listeners.
    """
    mine = [w for w in snapshot.workloads
            if w.proxy_mode is ProxyMode.SIDECAR and w.addresses and (not node or w.node == node)]
    if not mine:
        return ()
    gates = sidecar_gates(snapshot)
    index = RbacIndex(snapshot)
    trusted = tuple(sorted({a for n in snapshot.nodes for a in n.proxy_addresses}))
    out = []
    for w in mine:
        warnings: list[Diagnostic] = []
        served, passed, configs, clusters = _outbound(w, bpf, envoy, snapshot, redirects or {})
        inbound, in_configs, in_clusters = _inbound(w, gates.get(w.ref, ()), index, snapshot, warnings)
        out.append(SidecarPlan(
            w.ref, w.addresses, w.identity.spiffe_id, serving is None or w.ref in serving,
            outbound=tuple(served), passed=tuple(passed), inbound=tuple(inbound),
            route_configs=tuple(sorted([*configs, *in_configs], key=lambda c: c.name)),
            clusters=tuple(_merged(clusters, in_clusters)),
            trusted=trusted, tunnel=_tunnel(w, tunnel), egress=_egress(w, tunnel),
            warnings=tuple(warnings),
        ))
    return tuple(out)


def serving_sidecars(snapshot: Snapshot, node: str, serving: frozenset[WorkloadRef] | None) -> frozenset[WorkloadRef]:
    """The workloads of ``node`` in sidecar mode whose sidecars serve (all of them when ``serving`` is None)."""
    return frozenset(w.ref for w in snapshot.workloads
                     if w.proxy_mode is ProxyMode.SIDECAR and w.addresses and (not node or w.node == node)
                     and (serving is None or w.ref in serving))

