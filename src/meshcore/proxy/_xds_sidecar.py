"""A SidecarPlan → the xDS resources of one workload's sidecar (served on its own node id).

Listeners (see :mod:`meshcore.compile._sidecar` for what each serves):

- ``sidecar_outbound`` on the pod's loopback addresses: the kernel steers the pod's TCP
  connections here, and the original destination listener filter reads where each was
  going (getsockopt SO_ORIGINAL_DST, answered by bpf/sidecar.bpf.c). One filter chain per
  service port the sidecar serves, matched on its virtual IPs and port, with the node
  proxy's own HTTP connection manager or TCP proxy for it; with mutual TLS one chain per
  (server identity, node) of the destinations it tunnels, carrying the connection in an
  HBONE stream with the workload's SVID; anything else passes through to its destination.
- ``sidecar_inbound`` on the pod's addresses: the kernel delivers TCP to the pod here with
  its destination intact. Node proxies' connections pass; each port the workload's own
  L7 policies or token checks cover gets an HTTP connection manager applying them; the
  rest passes through to the application.

Upstream connections to the application leave from the pod's own address, which the
kernel does not capture again.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from typing import Any

import attrs

from ..compile import (
    TUNNEL_INBOUND_PORT,
    EnvoyPlan,
    EnvoySecret,
    Origin,
    SidecarPlan,
    TunnelDestination,
    TunnelRefusal,
)
from ._als import TUNNEL_CLUSTER_PREFIX
from ._resources import CLUSTER, LISTENER, Resource, Resources, _resource, build_resources
from ._xds_common import (
    _ORIGINAL_DST,
    _TCP_ALS,
    _TCP_PROXY,
    ProxySettings,
    _duration,
)
from ._xds_listeners import _access_log, _cidr_range, _http_listener, _tcp_listener
from ._xds_tunnel import CLIENT_HEADER, egress_filters, logging_refusals, svid_secret_name, tunnel_cluster

__all__ = ["INBOUND_LISTENER", "OUTBOUND_LISTENER", "PASSTHROUGH_CLUSTER", "sidecar_resources"]

OUTBOUND_LISTENER = "sidecar_outbound"
INBOUND_LISTENER = "sidecar_inbound"
#: Connections the sidecar does not serve go on to where they were going.
PASSTHROUGH_CLUSTER = "passthrough"


def _host_range(address: str) -> dict[str, Any]:
    return _cidr_range(str(ipaddress.ip_network(address)))


def _passthrough(name: str = PASSTHROUGH_CLUSTER) -> dict[str, Any]:
    return {"name": f"{name}", "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": _TCP_PROXY, "stat_prefix": name, "cluster": PASSTHROUGH_CLUSTER}}]}


def _passthrough_cluster(settings: ProxySettings) -> dict[str, Any]:
    return {"name": PASSTHROUGH_CLUSTER, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": _duration(settings.connect_timeout_ms)}


def _bound(addresses: tuple[str, ...], port: int) -> dict[str, Any]:
    """A listener's address and additional addresses."""
    out: dict[str, Any] = {"address": {"socket_address": {"address": addresses[0], "port_value": port}}}
    if len(addresses) > 1:
        out["additional_addresses"] = [{"address": {"socket_address": {"address": a, "port_value": port}}}
                                       for a in addresses[1:]]
    return out


def _loopbacks(plan: SidecarPlan) -> tuple[str, ...]:
    """The pod's loopback addresses of the families it has."""
    families = {ipaddress.ip_address(a).version for a in plan.addresses}
    return tuple(a for a, v in (("127.0.0.1", 4), ("::1", 6)) if v in families) or ("127.0.0.1",)


def _tunnel_chains(plan: SidecarPlan, secrets: tuple[EnvoySecret, ...], settings: ProxySettings,
                   service_ports: set[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """HBONE chains and clusters for the destinations the sidecar tunnels (none without its SVID and a bundle).

    Envoy picks among the chains of a connection's destination port before it looks at
    addresses, and never falls back to chains without a port: a port the service chains
    use gets its own copy of each tunnel chain.
    """
    names = {s.name for s in secrets}
    bundle = next((s.name for s in secrets if s.name.startswith("bundle/")), "")
    if not plan.tunnel or svid_secret_name(plan.spiffe_id) not in names or not bundle:
        return [], []
    groups: dict[tuple[str, str], list[TunnelDestination]] = defaultdict(list)
    for d in plan.tunnel:
        groups[(d.spiffe_id, d.node)].append(d)
    chains, clusters = [], []
    for (server, node), dests in sorted(groups.items()):
        # Named as the node proxy's tunnel clusters are (see TUNNEL_CLUSTER_PREFIX): flows read the server's identity from it.
        name = f"{TUNNEL_CLUSTER_PREFIX}{plan.spiffe_id}|{server}|{node}"
        steered = sorted({d.address for d in dests if d.steer and d.port == 0})
        # A port with an entry of its own: tunnelled or not (DISABLE) as that entry says.
        specific = {(d.address, d.port): d.steer for d in dests if d.port}
        for (address, port), steer in sorted(specific.items()):
            chains += _guarded(f"{name}|{address}:{port}", name, plan, [address], {"destination_port": port}) \
                if steer else [{**_passthrough(f"{name}|{address}:{port}"), "filter_chain_match": {
                    "prefix_ranges": [_host_range(address)], "destination_port": port}}]
        if steered:
            chains += _guarded(name, name, plan, steered, {})
        for port in sorted(service_ports):
            here = [a for a in steered if (a, port) not in specific]
            if here:
                chains += _guarded(f"{name}|:{port}", name, plan, here, {"destination_port": port})
        clusters.append(tunnel_cluster(name, dests, plan.spiffe_id, server, bundle, TUNNEL_INBOUND_PORT, settings))
    return chains, clusters


def _guarded(name: str, cluster: str, plan: SidecarPlan, addresses: list[str],
             match: dict[str, Any]) -> list[dict[str, Any]]:
    """Tunnel chains to ``addresses`` (and ``match``), refusing what the workload's egress policy refuses there.

    Addresses refused on every port get a chain of their own that never connects (see
    :func:`~._xds_tunnel.egress_filters`).
    """
    refused = [r for r in plan.egress if r.address in addresses]
    closed = sorted({r.address for r in refused if r.every_port})
    out = []
    for part, suffix in (([a for a in addresses if a not in closed], ""), (closed, "|refused")):
        if part:
            chain = _tunnel_chain(f"{name}{suffix}", cluster, plan, part[0],
                                  tuple(r for r in refused if r.address in part), closed=bool(suffix))
            out.append({**chain, "filter_chain_match": {"prefix_ranges": [_host_range(a) for a in part], **match}})
    return out


def _tunnel_chain(name: str, cluster: str, plan: SidecarPlan, sample: str,
                  refused: tuple[TunnelRefusal, ...] = (), closed: bool = False) -> dict[str, Any]:
    """A TCP proxy into the tunnel ``cluster``, naming the workload's own address as the client."""
    family = ipaddress.ip_address(sample).version
    client = next((a for a in plan.addresses if ipaddress.ip_address(a).version == family), plan.addresses[0])
    proxy: dict[str, Any] = {
        "@type": _TCP_PROXY, "stat_prefix": "sidecar_tunnel", "cluster": cluster,
        "tunneling_config": {"hostname": "%DOWNSTREAM_LOCAL_ADDRESS%",
                             "headers_to_add": [{"header": {"key": CLIENT_HEADER, "value": client}}]},
    }
    filters = egress_filters(proxy, refused, closed)
    return {"name": name, "filters": [*filters, {"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}]}


def _service_chains(plan: SidecarPlan, envoy: EnvoyPlan, settings: ProxySettings) -> list[dict[str, Any]]:
    """One chain per service port the sidecar serves: the node proxy's filters for it, matched on its VIPs and port."""
    chains = []
    for served in plan.outbound:
        listener = served.listener
        if listener.is_http:
            configs = [c for n in listener.route_configs if (c := envoy.route_config(n)) is not None]
            built = _http_listener(listener, configs, settings)
        else:
            built = _tcp_listener(listener, settings)
        chain = dict(built["filter_chains"][-1])
        chain["name"] = listener.name
        chain["filter_chain_match"] = {"prefix_ranges": [_host_range(v) for v in served.vips],
                                       "destination_port": served.port}
        chains.append(chain)
    return chains


def _inbound_chains(plan: SidecarPlan, envoy: EnvoyPlan, settings: ProxySettings) -> list[dict[str, Any]]:
    """Node proxies pass; each checked port gets its HTTP connection manager.

    Envoy picks among the chains of a connection's destination port before it looks at
    sources, so each checked port gets its own copy of the node proxies' chain.
    """
    chains: list[dict[str, Any]] = []
    if plan.trusted:
        trusted = [_host_range(a) for a in plan.trusted]
        chains.append({**_passthrough("node proxies"), "filter_chain_match": {"source_prefix_ranges": trusted}})
        for listener in plan.inbound:
            chains.append({**_passthrough(f"node proxies|{listener.port}"), "filter_chain_match": {
                "destination_port": listener.port, "source_prefix_ranges": trusted}})
    for listener in plan.inbound:
        configs = [c for n in listener.route_configs if (c := envoy.route_config(n)) is not None]
        chain = dict(_http_listener(listener, configs, settings)["filter_chains"][-1])
        chain["name"] = listener.name
        chain["filter_chain_match"] = {"destination_port": listener.port}
        chains.append(chain)
    return chains


def sidecar_resources(plan: SidecarPlan, secrets: tuple[EnvoySecret, ...] = (),
                      settings: ProxySettings | None = None) -> Resources:
    """Every resource of ``plan``'s sidecar; ``secrets`` are its SVID and trust bundle (mutual TLS)."""
    base = settings or ProxySettings()
    # Its upstream connections leave from the pod's own addresses: no source of the node's.
    # Its flows go over gRPC to the agent, whose stream names the sidecar by its node id: the
    # node Envoy's access-log file is not the sidecar's to write (nor, in a pod, reachable).
    settings = attrs.evolve(base, listen_ipv4="127.0.0.1", listen_ipv6=None, source_ipv4=None, source_ipv6=None,
                            access_log_file=None)
    envoy = EnvoyPlan(route_configs=plan.route_configs, clusters=plan.clusters,
                      secrets=tuple(s for s in secrets if s.name == svid_secret_name(plan.spiffe_id)
                                    or s.name.startswith("bundle/")))
    built = build_resources(envoy, settings)
    by_type = {t: dict(built.of(t)) for t in built.by_type}
    where = (Origin(f"sidecar of {plan.workload}"),)
    tunnel_chains, tunnel_clusters = _tunnel_chains(plan, secrets, settings, {o.port for o in plan.outbound})
    for made in (*tunnel_clusters, _passthrough_cluster(settings)):
        by_type.setdefault(CLUSTER, {})[made["name"]] = _resource(CLUSTER, made["name"], made, where)
    outbound: dict[str, Any] = {
        "name": OUTBOUND_LISTENER, **_bound(_loopbacks(plan), plan.outbound_port),
        "listener_filters": [{"name": "envoy.filters.listener.original_dst", "typed_config": {"@type": _ORIGINAL_DST}}],
        "filter_chains": [*_service_chains(plan, envoy, settings), *tunnel_chains],
        "default_filter_chain": _passthrough(),
    }
    inbound: dict[str, Any] = {
        "name": INBOUND_LISTENER, **_bound(plan.addresses, plan.inbound_port),
        # One socket, which the kernel's sk_lookup program hands the pod's connections to.
        "enable_reuse_port": False,
        # The kernel answers the destination each connection kept (SO_ORIGINAL_DST), which the
        # passthrough connects to.
        "listener_filters": [{"name": "envoy.filters.listener.original_dst", "typed_config": {"@type": _ORIGINAL_DST}}],
        "filter_chains": _inbound_chains(plan, envoy, settings),
        "default_filter_chain": _passthrough(),
    }
    access_log = _access_log(settings, _TCP_ALS)
    if access_log:
        outbound["access_log"] = logging_refusals(access_log)
        inbound["access_log"] = access_log
    needs_out = tuple(n for listener in (s.listener for s in plan.outbound) for n in listener.route_configs)
    needs_in = tuple(n for listener in plan.inbound for n in listener.route_configs)
    listeners: dict[str, Resource] = {
        OUTBOUND_LISTENER: _resource(LISTENER, OUTBOUND_LISTENER, outbound, where, needs_out),
        INBOUND_LISTENER: _resource(LISTENER, INBOUND_LISTENER, inbound, where, needs_in),
    }
    by_type[LISTENER] = listeners
    return Resources(by_type)
