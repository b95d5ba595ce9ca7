"""Envoy JSON for the mutual-TLS tunnels between node proxies (HBONE: HTTP/2 CONNECT over mutual TLS).

Outbound (``tunnel_outbound`` on the outbound port): the kernel steers meshed clients'
connections here; the original destination listener filter reads the destination back
(getsockopt SO_ORIGINAL_DST, answered by the kernel's steering program). One filter chain
per (client identity, server identity, server node), matched on the client's and the
destination's addresses, proxies the connection as a CONNECT stream to ``<dst ip>:<port>``
over a cluster presenting the *client workload's* SVID and accepting only the *server
workload's* SPIFFE ID; HTTP/2 pools the streams, so one TLS session carries many
connections. The client's address travels in ``x-forwarded-for``. The kernel saw the
client connect to the node proxy, which its egress policy exempts, so the chains refuse
what that policy refuses (the tunnel plan's per-client egress refusals, see
:func:`_client_chains`), naming the policy as flows do.

Internal (``tunnel_internal``, an Envoy internal listener): the node proxy's own upstream
connections (its L7 and TCP listeners') to an endpoint the kernel would steer are made to
this listener instead (see :func:`tunnelled_upstreams`), with the endpoint's address and
the client's (the downstream connection the proxy acts for) restored by the original
destination listener filter; the same chains then carry them as the client, adding
:data:`VIA_PROXY_HEADER`. A client that is not a meshed workload of this node is sent to
the endpoint in clear text, as before tunnels; a meshed one without an SVID is closed.

Inbound (``tunnel_inbound`` on the HBONE port): one filter chain per local identity,
chosen by the server name the client asked for (see :func:`~meshcore.compile.tunnel_sni`),
presents that identity's SVID and requires a client certificate chaining to a trust
bundle with a SPIFFE ID of a known trust domain. A CONNECT is delivered (original
destination cluster, from the node proxy's address) only to a pod of that identity, and
only when the forwarded client address belongs to a workload of the verified client
identity. Each pod's route then applies the pod's kernel ingress policy (for TCP) to the
client's address — the kernel only sees the proxy there — except for streams the client's
node proxy made itself (:data:`VIA_PROXY_HEADER`), which the kernel would admit from a
node proxy as it is: that proxy already applied the pod's policies in full.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from typing import Any

from ..compile import EnvoySecret, TunnelDestination, TunnelPlan, TunnelRefusal, TunnelRule, TunnelWorkload, tunnel_sni
from ._xds_common import (
    _DOWNSTREAM_TLS,
    _HCM,
    _HTTP_OPTIONS,
    _NETWORK_RBAC,
    _ORIGINAL_DST,
    _RBAC,
    _RBAC_PER_ROUTE,
    _ROUTER,
    _TCP_ALS,
    _TCP_PROXY,
    _TLS_INSPECTOR,
    _UPSTREAM_TLS,
    ProxySettings,
    _duration,
    _sds,
)
from ._als import (
    TUNNEL_CLIENT_STATE,
    TUNNEL_CLUSTER_PREFIX,
    TUNNEL_ENDPOINT_SEPARATOR,
    TUNNEL_REFUSED_STATE,
    TUNNEL_ROUTE_PREFIX,
)
from ._xds_clusters import _bind_config
from ._xds_listeners import _access_log, _addresses, _cidr_range

__all__ = ["ALLOW_FILTER", "DELIVER_CLUSTER", "DENY_FILTER", "EGRESS_FILTER", "egress_filters", "logging_refusals", "INBOUND_LISTENER", "INTERNAL_LISTENER",
           "OUTBOUND_LISTENER", "PASSTHROUGH_CLUSTER", "VIA_PROXY_HEADER", "bundle_secret_name", "port_regex",
           "svid_secret_name", "tunnel_resources", "tunnelled_upstreams"]

OUTBOUND_LISTENER = "tunnel_outbound"
INBOUND_LISTENER = "tunnel_inbound"
INTERNAL_LISTENER = "tunnel_internal"
DELIVER_CLUSTER = "tunnel_deliver"
#: Where the internal listener sends clients that are not meshed workloads of this node: the endpoint, in clear text.
PASSTHROUGH_CLUSTER = "tunnel_passthrough"
#: Marks a tunnel stream the client's node proxy made for a connection it proxied itself.
VIA_PROXY_HEADER = "x-meshcore-via-proxy"
_SET_FILTER_STATE = "type.googleapis.com/envoy.extensions.filters.network.set_filter_state.v3.Config"
_INTERNAL_UPSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport"
_RAW_BUFFER = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
_DIRECT_RESPONSE = "type.googleapis.com/envoy.extensions.filters.network.direct_response.v3.Config"
#: Envoy's original destination listener filter takes an internal connection's addresses from these.
_ORIGINAL_DST_METADATA = "envoy.filters.listener.original_dst"
_CLIENT_ADDRESS_STATE = "envoy.filters.listener.original_dst.remote_ip"
#: Endpoint metadata choosing the cluster's tunnel transport socket.
_TUNNEL_MATCH = "meshcore.tunnel"
DENY_FILTER = "meshcore.tunnel.deny"
#: Bulk transfers through a tunnel stall on HTTP/2 flow control at Envoy's defaults (a 256 KiB
#: stream window, 1 MiB buffers): larger windows and buffers keep a stream's pipe full (a
#: sidecar's tunnels use the same windows).
_H2_WINDOWS = {"initial_stream_window_size": 8 * 1024 * 1024, "initial_connection_window_size": 16 * 1024 * 1024}
_BUFFER_BYTES = 4 * 1024 * 1024
ALLOW_FILTER = "meshcore.tunnel.allow"
#: The outbound chains' filter refusing what the clients' own egress policy refuses.
EGRESS_FILTER = "meshcore.tunnel.egress"
#: Who the client is, as its own node proxy saw it (the kernel proved it on that node).
CLIENT_HEADER = "x-forwarded-for"


def svid_secret_name(spiffe_id: str) -> str:
    """The SDS name of an identity's SVID."""
    return f"svid/{spiffe_id}"


def bundle_secret_name(trust_domain: str) -> str:
    """The SDS name of a trust domain's bundle."""
    return f"bundle/{trust_domain}"


def _host_cidr(address: str) -> dict[str, Any]:
    return _cidr_range(str(ipaddress.ip_network(address)))


def tunnel_cluster(name: str, dests: list[TunnelDestination], client: str, server: str, bundle: str, port: int,
                   settings: ProxySettings) -> dict[str, Any]:
    """A cluster of HBONE tunnels to the node of ``dests``: ``client``'s SVID presented, ``server``'s verified."""
    target = dests[0].node_addresses
    endpoint = next((a for a in target if ":" not in a), target[0])
    return {
        "name": name, "type": "STATIC", "connect_timeout": _duration(settings.connect_timeout_ms),
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": endpoint, "port_value": port}}}}]}]},
        # Large enough that flow control, not the buffer, paces a stream.
        "per_connection_buffer_limit_bytes": _BUFFER_BYTES,
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": _HTTP_OPTIONS, "explicit_http_config": {"http2_protocol_options": _H2_WINDOWS}}},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": _UPSTREAM_TLS, "sni": tunnel_sni(server),
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [_sds(svid_secret_name(client))],
                "combined_validation_context": _validation(bundle, [_uri_san({"exact": server})]),
            },
        }},
    }


def _validation(bundle: str, sans: list[dict[str, Any]]) -> dict[str, Any]:
    return {"default_validation_context": {"match_typed_subject_alt_names": sans},
            "validation_context_sds_secret_config": _sds(bundle)}


def _uri_san(match: dict[str, str]) -> dict[str, Any]:
    return {"san_type": "URI", "matcher": match}


def _cluster_name(client: str, server: str, node: str) -> str:
    return f"{TUNNEL_CLUSTER_PREFIX}{client}|{server}|{node}"


def _groups(plan: TunnelPlan) -> dict[tuple[str, str], list[TunnelDestination]]:
    """The steered destinations by (server identity, node): one tunnel cluster each per client identity."""
    groups: dict[tuple[str, str], list[TunnelDestination]] = defaultdict(list)
    for d in plan.destinations:
        if d.steer:
            groups[(d.spiffe_id, d.node)].append(d)
    return dict(sorted(groups.items()))


def _clients(plan: TunnelPlan) -> dict[str, list[str]]:
    """This node's meshed workloads' addresses by SPIFFE ID."""
    clients: dict[str, set[str]] = defaultdict(set)
    for w in plan.workloads:
        clients[w.spiffe_id].update(w.addresses)
    return {k: sorted(v) for k, v in sorted(clients.items())}


def _destinations_match(dests: list[TunnelDestination]) -> list[dict[str, Any]]:
    return [_host_cidr(a) for a in sorted({d.address for d in dests})]


def _tunnel_chain(name: str, sources: list[str], dests: list[TunnelDestination], stat_prefix: str,
                  via_proxy: bool, refused: tuple[TunnelRefusal, ...] = (), closed: bool = False) -> dict[str, Any]:
    """A chain carrying connections from ``sources`` to ``dests`` as CONNECT streams over the tunnel cluster ``name``.

    ``refused`` (the clients' egress refusals) are denied by a network RBAC filter, which
    decides at the client's first byte, naming the policy; ``closed`` (every port of every
    destination refused) waits for that byte before connecting, so nothing reaches the
    destination, not even the connection.
    """
    headers = [{"header": {"key": CLIENT_HEADER, "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}]
    if via_proxy:
        headers.append({"header": {"key": VIA_PROXY_HEADER, "value": "1"}})
    proxy: dict[str, Any] = {
        "@type": _TCP_PROXY, "stat_prefix": stat_prefix, "cluster": name,
        "tunneling_config": {"hostname": "%DOWNSTREAM_LOCAL_ADDRESS%", "headers_to_add": headers},
    }
    filters = egress_filters(proxy, refused, closed)
    filters.append({"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy})
    return {
        "name": name,
        "filter_chain_match": {"source_prefix_ranges": [_host_cidr(a) for a in sources],
                               "prefix_ranges": _destinations_match(dests)},
        "filters": filters,
    }


def egress_filters(proxy: dict[str, Any], refused: tuple[TunnelRefusal, ...], closed: bool) -> list[dict[str, Any]]:
    """The filters before the TCP proxy ``proxy`` (changed in place) refusing ``refused`` (see :func:`_tunnel_chain`)."""
    filters = [_egress_filter(refused)] if refused else []
    if closed:
        proxy["upstream_connect_mode"] = "ON_DOWNSTREAM_DATA"
        proxy["max_early_data_bytes"] = 65536
        # The TCP proxy names no cluster before it connects: the flow's destination is recorded here.
        filters.insert(0, {"name": "envoy.filters.network.set_filter_state", "typed_config": {
            "@type": _SET_FILTER_STATE, "on_new_connection": [{
                "object_key": TUNNEL_REFUSED_STATE, "factory_key": "envoy.string",
                "format_string": {"text_format_source": {"inline_string": "%DOWNSTREAM_LOCAL_ADDRESS%"}}}]}})
    return filters


def logging_refusals(access_log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``access_log`` with its gRPC logs naming the destination of a connection refused before connecting."""
    out = []
    for log in access_log:
        config = log["typed_config"]
        if "common_config" in config:  # the file format names it itself
            config = {**config, "common_config": {**config["common_config"],
                                                  "filter_state_objects_to_log": [TUNNEL_REFUSED_STATE]}}
        out.append({**log, "typed_config": config})
    return out


def _refusal_permission(refusal: TunnelRefusal) -> dict[str, Any]:
    target = {"destination_ip": _host_cidr(refusal.address)}
    if refusal.every_port:
        return target
    port: dict[str, Any] = ({"destination_port": refusal.first} if refusal.first == refusal.last
                            else {"destination_port_range": {"start": refusal.first, "end": refusal.last + 1}})
    return {"and_rules": {"rules": [target, port]}}


def _egress_filter(refused: tuple[TunnelRefusal, ...]) -> dict[str, Any]:
    """Network RBAC denying the refused destinations, one policy per egress policy (rule), named as flows name it."""
    policies: dict[str, dict[str, Any]] = {}
    for r in refused:
        policies.setdefault(r.policy, {"permissions": [], "principals": [{"any": True}]})["permissions"].append(
            _refusal_permission(r))
    return {"name": EGRESS_FILTER, "typed_config": {
        "@type": _NETWORK_RBAC, "stat_prefix": f"{OUTBOUND_LISTENER}.egress.",
        "rules": {"action": "DENY", "policies": dict(sorted(policies.items()))}}}


def _client_chains(name: str, plan: TunnelPlan, client: str, sources: list[str],
                   dests: list[TunnelDestination]) -> list[dict[str, Any]]:
    """The outbound chains of one client identity to one destination group, per its clients' egress refusals.

    Clients refused nothing there share the chain ``name``. Clients with the same refusals
    share a chain denying them (``<name>|egress-<n>``), and one for the destinations they
    may not reach on any port (``…|refused``), which never connects.
    """
    addresses = {d.address for d in dests}
    refusals: dict[str, tuple[TunnelRefusal, ...]] = {}
    for w in plan.workloads:
        if w.spiffe_id == client:
            for a in w.addresses:
                refusals[a] = tuple(r for r in w.egress if r.address in addresses)
    by_refusals: dict[tuple[TunnelRefusal, ...], list[str]] = defaultdict(list)
    for a in sources:
        by_refusals[refusals.get(a, ())].append(a)
    chains = []
    if () in by_refusals:
        chains.append(_tunnel_chain(name, by_refusals.pop(()), dests, OUTBOUND_LISTENER, via_proxy=False))
    for n, (refused, clients) in enumerate(sorted(by_refusals.items())):
        closed = {r.address for r in refused if r.every_port}
        open_dests = [d for d in dests if d.address not in closed]
        if open_dests:
            chains.append({**_tunnel_chain(name, clients, open_dests, OUTBOUND_LISTENER, via_proxy=False,
                                           refused=tuple(r for r in refused if r.address not in closed)),
                           "name": f"{name}|egress-{n}"})
        if closed:
            chains.append({**_tunnel_chain(name, clients, [d for d in dests if d.address in closed],
                                           OUTBOUND_LISTENER, via_proxy=False,
                                           refused=tuple(r for r in refused if r.address in closed), closed=True),
                           "name": f"{name}|egress-{n}|refused"})
    return chains


def _outbound(plan: TunnelPlan, settings: ProxySettings, available: set[str],
              bundle: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The outbound listener and one cluster per (client identity, server identity, node)."""
    chains, clusters = [], []
    for client, sources in _clients(plan).items():
        if client not in available:
            continue  # no SVID (refused or not yet issued): its connections match no chain and are closed
        for (server, node), dests in _groups(plan).items():
            name = _cluster_name(client, server, node)
            chains += _client_chains(name, plan, client, sources, dests)
            clusters.append(tunnel_cluster(name, dests, client, server, bundle, plan.inbound_port, settings))
    listener = {
        "name": OUTBOUND_LISTENER, **_addresses(plan.outbound_port, settings),
        "per_connection_buffer_limit_bytes": _BUFFER_BYTES,
        "listener_filters": [{"name": "envoy.filters.listener.original_dst",
                              "typed_config": {"@type": _ORIGINAL_DST}}],
        "filter_chains": chains,
    }
    access_log = logging_refusals(_access_log(settings, _TCP_ALS))
    if access_log:
        listener["access_log"] = access_log
    return listener, clusters


def _internal(plan: TunnelPlan, available: set[str]) -> dict[str, Any]:
    """The internal listener the node proxy's own upstream connections to steered endpoints go through.

    Per destination group: each client identity with an SVID tunnels (as on the outbound
    listener, the same clusters), one without is closed, anyone else passes in clear text.
    """
    closed = {"name": "envoy.filters.network.direct_response", "typed_config": {"@type": _DIRECT_RESPONSE}}
    chains = []
    for (server, node), dests in _groups(plan).items():
        for client, sources in _clients(plan).items():
            name = _cluster_name(client, server, node)
            if client in available:
                chains.append(_tunnel_chain(name, sources, dests, INTERNAL_LISTENER, via_proxy=True))
            else:
                chains.append({"name": f"{name}|no-svid", "filters": [closed], "filter_chain_match": {
                    "source_prefix_ranges": [_host_cidr(a) for a in sources],
                    "prefix_ranges": _destinations_match(dests)}})
        chains.append({
            "name": f"{PASSTHROUGH_CLUSTER}|{server}|{node}",
            "filter_chain_match": {"prefix_ranges": _destinations_match(dests)},
            "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": _TCP_PROXY, "stat_prefix": PASSTHROUGH_CLUSTER, "cluster": PASSTHROUGH_CLUSTER}}],
        })
    return {
        "name": INTERNAL_LISTENER, "internal_listener": {},
        "listener_filters": [{"name": "envoy.filters.listener.original_dst",
                              "typed_config": {"@type": _ORIGINAL_DST}}],
        "filter_chains": chains,
    }


def _authority_prefix(address: str) -> str:
    return f"[{address}]:" if ":" in address else f"{address}:"


def _digits_regex(low: str, high: str) -> list[str]:
    """Alternatives matching every decimal number from ``low`` to ``high`` (same length, low <= high)."""
    if low == high:
        return [low]
    i = next(i for i, (a, b) in enumerate(zip(low, high, strict=True)) if a != b)
    prefix, rest = low[:i], len(low) - i - 1
    lo_digit, hi_digit = int(low[i]), int(high[i])
    if low[i + 1:] == "0" * rest and high[i + 1:] == "9" * rest:
        return [prefix + (f"[{lo_digit}-{hi_digit}]" if lo_digit != hi_digit else str(lo_digit)) + r"\d" * rest]
    out = _digits_regex(low, prefix + str(lo_digit) + "9" * rest)
    if hi_digit - lo_digit > 1:
        middle = f"[{lo_digit + 1}-{hi_digit - 1}]" if hi_digit - lo_digit > 2 else str(lo_digit + 1)
        out.append(prefix + middle + r"\d" * rest)
    out += _digits_regex(prefix + str(hi_digit) + "0" * rest, high)
    return out


def port_regex(first: int, last: int) -> str:
    """A regular expression matching exactly the decimal ports ``first``..``last``."""
    parts: list[str] = []
    low = first
    while low <= last:
        top = min(last, 10 ** len(str(low)) - 1)
        parts += _digits_regex(str(low), str(top))
        low = top + 1
    return "|".join(parts)


def _address_regex(address: str) -> str:
    return re.escape(f"[{address}]") if ":" in address else re.escape(address)


def _rule_policy(rule: TunnelRule, addresses: list[str]) -> dict[str, Any]:
    """An RBAC policy: CONNECT to one of ``addresses`` on the rule's ports, from the rule's sources."""
    target = "|".join(_address_regex(a) for a in addresses)
    permission = {"header": {"name": ":authority", "string_match": {"safe_regex": {
        "regex": f"^({target}):({port_regex(rule.first, rule.last)})$"}}}}
    if not rule.sources:
        principal: dict[str, Any] = {"any": True}
    else:
        principal = {"or_ids": {"ids": [{"remote_ip": _cidr_range(str(ipaddress.ip_network(p)))}
                                        for p in rule.sources]}}
    return {"permissions": [permission], "principals": [principal]}


def _admit_all() -> dict[str, Any]:
    """Per-route overrides of the deny and allow filters admitting every stream (as the kernel admits a node proxy)."""
    return {DENY_FILTER: {"@type": _RBAC_PER_ROUTE, "rbac": {"rules": {"action": "DENY", "policies": {}}}},
            ALLOW_FILTER: {"@type": _RBAC_PER_ROUTE, "rbac": {"rules": {
                "action": "ALLOW", "policies": {"node-proxy": {"permissions": [{"any": True}],
                                                               "principals": [{"any": True}]}}}}}}


def _access(workload: TunnelWorkload) -> dict[str, Any]:
    """Per-route overrides of the deny and allow filters: the workload's kernel ingress policy."""
    addresses = sorted(set(workload.addresses))
    deny = {f"deny-{i}": _rule_policy(r, addresses) for i, r in enumerate(workload.deny)}
    out: dict[str, Any] = {DENY_FILTER: {"@type": _RBAC_PER_ROUTE, "rbac": {"rules": {
        "action": "DENY", "policies": deny}}}}
    if workload.allow is None:
        out[ALLOW_FILTER] = {"@type": _RBAC_PER_ROUTE, "rbac": {"rules": {
            "action": "ALLOW", "policies": {"no-allow-policy": {"permissions": [{"any": True}],
                                                               "principals": [{"any": True}]}}}}}
    else:
        allow = {f"allow-{i}": _rule_policy(r, addresses) for i, r in enumerate(workload.allow)}
        out[ALLOW_FILTER] = {"@type": _RBAC_PER_ROUTE, "rbac": {"rules": {"action": "ALLOW", "policies": allow}}}
    return out


def _client_guard(plan: TunnelPlan, peers: dict[str, list[str]]) -> dict[str, Any]:
    """RBAC: the forwarded client address must be one of the verified client identity's workloads."""
    policies = {}
    for spiffe_id, addresses in sorted(peers.items()):
        policies[spiffe_id] = {
            "permissions": [{"any": True}],
            "principals": [{"and_ids": {"ids": [
                {"authenticated": {"principal_name": {"exact": spiffe_id}}},
                {"or_ids": {"ids": [{"header": {"name": CLIENT_HEADER, "string_match": {"exact": a}}}
                                    for a in sorted(set(addresses))]}},
            ]}}],
        }
    return {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": _RBAC, "rules": {"action": "ALLOW", "policies": policies}}}


def _inbound(plan: TunnelPlan, settings: ProxySettings, peers: dict[str, list[str]],
             available: set[str], bundle: str) -> dict[str, Any]:
    servers: dict[str, list[TunnelWorkload]] = defaultdict(list)
    for w in plan.workloads:
        servers[w.spiffe_id].append(w)
    domains = [_uri_san({"prefix": f"spiffe://{td}/"}) for td in plan.trust_domains]
    chains = []
    for server, workloads in sorted(servers.items()):
        if server not in available:
            continue
        def route(workload: TunnelWorkload, address: str, via_proxy: bool) -> dict[str, Any]:
            headers: list[dict[str, Any]] = [{"name": ":authority", "string_match": {"prefix": _authority_prefix(address)}}]
            if via_proxy:
                headers.append({"name": VIA_PROXY_HEADER, "present_match": True})
            return {
                "name": f"{TUNNEL_ROUTE_PREFIX}{workload.workload}",
                "match": {"connect_matcher": {}, "headers": headers},
                "route": {"cluster": DELIVER_CLUSTER, "upgrade_configs": [{"upgrade_type": "CONNECT",
                                                                           "connect_config": {}}]},
                "typed_per_filter_config": _admit_all() if via_proxy else _access(workload),
            }
        routes = [route(w, a, via) for w in workloads for a in sorted(set(w.addresses)) for via in (True, False)]
        hcm: dict[str, Any] = {
            "@type": _HCM, "stat_prefix": "tunnel_inbound", "codec_type": "HTTP2",
            "http2_protocol_options": {"allow_connect": True, **_H2_WINDOWS},
            "upgrade_configs": [{"upgrade_type": "CONNECT"}],
            "route_config": {"name": f"tunnel_inbound|{server}", "virtual_hosts": [
                {"name": "pods", "domains": ["*"], "routes": routes}]},
            # The client address is the forwarded one (use_remote_address off, no trusted hops), so
            # policy's source prefixes match the client pod, once the guard checked it against the certificate.
            "use_remote_address": False,
            "http_filters": [_client_guard(plan, peers),
                             {"name": DENY_FILTER, "typed_config": {"@type": _RBAC, "rules": {
                                 "action": "DENY", "policies": {}}}},
                             # Routes override it with each pod's policy; a CONNECT no route names is refused.
                             {"name": ALLOW_FILTER, "typed_config": {"@type": _RBAC, "rules": {
                                 "action": "ALLOW", "policies": {}}}},
                             {"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}],
        }
        access_log = _access_log(settings)
        if access_log:
            hcm["access_log"] = access_log
        chains.append({
            "name": server,
            "filter_chain_match": {"server_names": [tunnel_sni(server)]},
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": _DOWNSTREAM_TLS, "require_client_certificate": True,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_certificate_sds_secret_configs": [_sds(svid_secret_name(server))],
                    "combined_validation_context": _validation(bundle, domains),
                },
            }},
            "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}],
        })
    return {
        "name": INBOUND_LISTENER, **_addresses(plan.inbound_port, settings),
        "per_connection_buffer_limit_bytes": _BUFFER_BYTES,
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector",
                              "typed_config": {"@type": _TLS_INSPECTOR}}],
        "filter_chains": chains,
    }


def _deliver_cluster(settings: ProxySettings) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": DELIVER_CLUSTER, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
        "per_connection_buffer_limit_bytes": _BUFFER_BYTES,
        "connect_timeout": _duration(settings.connect_timeout_ms),
        "original_dst_lb_config": {"use_http_header": True, "http_header_name": ":authority"},
    }
    bind = _bind_config(settings)
    if bind:
        out["upstream_bind_config"] = bind
    return out


def _passthrough_cluster(settings: ProxySettings) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": PASSTHROUGH_CLUSTER, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": _duration(settings.connect_timeout_ms),
    }
    bind = _bind_config(settings)
    if bind:
        out["upstream_bind_config"] = bind
    return out


def tunnel_resources(plan: TunnelPlan, settings: ProxySettings,
                     secrets: tuple[EnvoySecret, ...]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(listeners, clusters) of the tunnels; identities without an SVID among ``secrets`` get no chain."""
    peers = {spiffe_id: list(addresses) for spiffe_id, addresses in plan.peers}
    available = {s.name.removeprefix("svid/") for s in secrets if s.name.startswith("svid/")}
    # The bundle's name (bundle/<trust domain>, possibly with a digest of its content): without
    # one no peer can be verified, so no identity gets a chain.
    bundle = next((s.name for s in secrets if s.name.startswith("bundle/")), "")
    if not bundle:
        available = set()
    outbound, clusters = _outbound(plan, settings, available, bundle)
    listeners = [outbound, _inbound(plan, settings, peers, available, bundle), _internal(plan, available)]
    return listeners, [*clusters, _deliver_cluster(settings), _passthrough_cluster(settings)]


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class _Steered:
    """Which endpoints of this node proxy's clusters the kernel would steer into a tunnel (on other nodes)."""

    def __init__(self, plan: TunnelPlan) -> None:
        local = {w.workload for w in plan.workloads}
        # Same-node destinations are reached directly: the kernel admits the node proxy even where STRICT.
        self._by = {(d.address, d.port): d for d in plan.destinations if d.workload not in local}

    def __bool__(self) -> bool:
        return bool(self._by)

    def server(self, address: str, port: int) -> str | None:
        """The SPIFFE ID the endpoint must present when it is tunnelled, else None."""
        found = self._by.get((address, port)) or self._by.get((address, 0))
        return found.spiffe_id if found is not None and found.steer else None


def _tunnelled_endpoint(endpoint: dict[str, Any], steered: _Steered) -> dict[str, Any]:
    """An lb endpoint of a load assignment, as the internal listener's address when it is tunnelled."""
    socket = endpoint.get("endpoint", {}).get("address", {}).get("socket_address")
    if socket is None:
        return endpoint
    server = steered.server(socket["address"], socket["port_value"])
    if server is None:
        return endpoint
    destination = _host_port(socket["address"], socket["port_value"])
    return {**endpoint,
            "endpoint": {"address": {"envoy_internal_address": {
                "server_listener_name": INTERNAL_LISTENER,
                "endpoint_id": f"{destination}{TUNNEL_ENDPOINT_SEPARATOR}{server}"}}},
            "metadata": {"filter_metadata": {"envoy.transport_socket_match": {_TUNNEL_MATCH: True},
                                             _ORIGINAL_DST_METADATA: {"local": destination}}}}


def _client_address_filter(family: int) -> dict[str, Any]:
    """Records the client's address (port 0: one upstream pool per client, not per connection) for the internal listener."""
    text = "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
    value = f"[{text}]:0" if family == 6 else f"{text}:0"
    return {"name": "envoy.filters.network.set_filter_state", "typed_config": {
        "@type": _SET_FILTER_STATE, "on_new_connection": [{
            "object_key": _CLIENT_ADDRESS_STATE, "format_string": {"text_format_source": {"inline_string": value}},
            # Shared with the upstream connection: part of its pool's key, and handed to the internal listener.
            "shared_with_upstream": "ONCE",
        }, {
            # The same, as text the access log can carry (the address object has no protobuf form).
            "object_key": TUNNEL_CLIENT_STATE, "factory_key": "envoy.string",
            "format_string": {"text_format_source": {"inline_string": text}},
        }]}}


def _recording(chain: dict[str, Any], ranges: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    """``chain`` for the clients in ``ranges``, once per address family, each recording the client's address first."""
    out = []
    for family in (4, 6):
        mine = [r for r in ranges if (":" in r["address_prefix"]) == (family == 6)]
        if mine:
            named = {"name": f"{chain['name']}|{suffix}ipv{family}"} if "name" in chain else {}
            out.append({**chain, **named,
                        "filter_chain_match": {**(chain.get("filter_chain_match") or {}), "source_prefix_ranges": mine},
                        "filters": [_client_address_filter(family), *_logging_client_addresses(chain["filters"])]})
    return out


def _logging_client_addresses(value: Any) -> Any:
    """``value`` (a chain or listener JSON) with its gRPC access logs also logging the recorded client address."""
    if isinstance(value, dict):
        out = {k: _logging_client_addresses(v) for k, v in value.items()}
        common = out.get("common_config")
        if isinstance(common, dict) and "log_name" in common:
            out["common_config"] = {**common, "filter_state_objects_to_log": [TUNNEL_CLIENT_STATE]}
        return out
    if isinstance(value, list):
        return [_logging_client_addresses(v) for v in value]
    return value


def _unmatched(match: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in match.items() if k != "source_prefix_ranges"}


def _with_client_addresses(chains: list[dict[str, Any]], clients: list[str]) -> list[dict[str, Any]]:
    """A listener's chains recording the address of each client that may need the tunnel (see :func:`tunnelled_upstreams`).

    A chain for given clients records it for all of them. A chain for everyone gets a
    sibling for this node's meshed workloads (those no other chain of the same match
    names: they keep their own chain) that records it, and serves everyone else as it
    was, so clients that never tunnel keep sharing upstream connections.
    """
    out = []
    for chain in chains:
        match = chain.get("filter_chain_match") or {}
        sources = match.get("source_prefix_ranges")
        if sources is not None:
            out += _recording(chain, sources, "")
            continue
        taken = [ipaddress.ip_network(f"{r['address_prefix']}/{r['prefix_len']}")
                 for other in chains if other is not chain
                 and _unmatched(other.get("filter_chain_match") or {}) == _unmatched(match)
                 for r in (other.get("filter_chain_match") or {}).get("source_prefix_ranges", [])]
        meshed = [_host_cidr(a) for a in clients
                  if not any(ipaddress.ip_address(a) in net for net in taken)]
        out += [*_recording(chain, meshed, "meshed|"), chain]
    return out
def tunnelled_upstreams(plan: TunnelPlan, listeners: dict[str, dict[str, Any]], clusters: dict[str, dict[str, Any]],
                        assignments: dict[str, dict[str, Any]]) -> None:
    """Route the node proxy's own upstream connections to steered endpoints through the internal listener (in place).

    The listeners' chains record the address of clients that may be meshed workloads of
    this node (split per address family, the form the internal listener restores it from
    needs one); the clusters get a transport socket that hands it over, and the steered
    endpoints of the load assignments become internal addresses naming the destination
    and the identity it must present. A client whose address is not recorded is not one
    of this node's meshed workloads and reaches the endpoint in clear text.
    """
    steered = _Steered(plan)
    if not steered:
        return
    clients = sorted({a for addresses in _clients(plan).values() for a in addresses})
    for name, listener in listeners.items():
        listeners[name] = {**listener, "filter_chains": _with_client_addresses(listener.get("filter_chains", []), clients)}
        if "access_log" in listener:  # a TCP listener's, for every connection
            listeners[name]["access_log"] = _logging_client_addresses(listener["access_log"])
    for name, assignment in assignments.items():
        tunnelled = [{**group, "lb_endpoints": [_tunnelled_endpoint(e, steered) for e in group.get("lb_endpoints", [])]}
                     for group in assignment.get("endpoints", [])]
        if tunnelled:
            assignments[name] = {**assignment, "endpoints": tunnelled}
    for name, cluster in clusters.items():
        if "eds_cluster_config" not in cluster:
            continue  # a DNS cluster's endpoints are names, never steered
        inner = cluster.get("transport_socket") or {"name": "envoy.transport_sockets.raw_buffer",
                                                    "typed_config": {"@type": _RAW_BUFFER}}
        clusters[name] = {**cluster, "transport_socket_matches": [{
            "name": "tunnel", "match": {_TUNNEL_MATCH: True},
            "transport_socket": {"name": "envoy.transport_sockets.internal_upstream", "typed_config": {
                "@type": _INTERNAL_UPSTREAM,
                "passthrough_metadata": [{"kind": {"host": {}}, "name": _ORIGINAL_DST_METADATA}],
                "transport_socket": inner}},
        }]}
