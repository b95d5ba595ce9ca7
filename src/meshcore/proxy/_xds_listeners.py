"""Envoy Listener JSON: the HTTP connection manager with its filter chain, and TCP proxy chains.

An HTTP listener's filters run in the order of :data:`._xds_http_filters.HTTP_FILTERS`
(CORS, JWT, RBAC, fault, router), and name
its route configuration over RDS; a listener that terminates TLS has those chains once
per set of server names, each with a TLS transport socket whose certificates come over
SDS on the ADS stream, and no chain without TLS; a TCP listener has one filter chain per
:class:`~meshcore.compile.TcpChain`, matched by server name and client prefix. Both bind
the node proxy's addresses (:func:`_addresses`, also applied to raw listeners) and log
every request: to the settings' access-log file in meshcore's line format, or streamed
under :data:`ACCESS_LOG_NAME` to the control-plane cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..compile import EnvoyListener, EnvoyRouteConfig, ServerTls, TcpChain
from ._access_file import HTTP_FORMAT, TCP_FORMAT
from ._xds_common import (
    _ALS,
    _DOWNSTREAM_TLS,
    _FILE_LOG,
    _HCM,
    _TCP_ALS,
    _TCP_PROXY,
    _TLS_INSPECTOR,
    XDS_CLUSTER,
    ProxySettings,
    _duration,
    _sds,
    _stat_prefix,
)
from ._xds_filters import _network_rbac_filters
from ._xds_http_filters import http_filters
from ._xds_routes import _clusters

#: One log name for every listener, so each Envoy worker keeps a single ALS stream; the
#: listener of an entry is found from its local (proxy) address.
ACCESS_LOG_NAME = "meshcore"


def _access_log(settings: ProxySettings, kind: str = _ALS) -> list[dict[str, Any]]:
    if not settings.access_log:
        return []
    if settings.access_log_file is not None:
        # Every listener names the same file: Envoy opens it once and buffers all workers' lines.
        return [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": _FILE_LOG, "path": settings.access_log_file,
            "log_format": {"text_format_source": {"inline_string": TCP_FORMAT if kind == _TCP_ALS else HTTP_FORMAT}},
        }}]
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


def _http_listener(listener: EnvoyListener, route_configs: Sequence[EnvoyRouteConfig],
                   settings: ProxySettings) -> dict[str, Any]:
    routes = [r for rc in route_configs for r in rc.routes()]
    # In the one order stated in HTTP_FILTERS (authentication before authorization, router last).
    filters = http_filters(listener, routes)

    def chain(route_config: str) -> dict[str, Any]:
        hcm: dict[str, Any] = {
            "@type": _HCM,
            "stat_prefix": _stat_prefix(listener.name),
            "codec_type": "AUTO",
            "rds": {"route_config_name": route_config,
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
        return {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}

    assert listener.route_config is not None
    # Clients whose routes differ (routes matching on the client) are told apart by
    # address when they connect: one chain per view; everyone else gets the default.
    chains = [{**chain(view.route_config), "name": view.route_config,
               "filter_chain_match": {"source_prefix_ranges": [_cidr_range(c) for c in view.sources]}}
              for view in listener.client_views]
    chains.append(chain(listener.route_config))
    out: dict[str, Any] = {
        "name": listener.name,
        **_addresses(listener.proxy_port, settings),
        "stat_prefix": _stat_prefix(listener.name),
        "filter_chains": chains,
    }
    if listener.tls:
        # Every chain once per set of server names, behind TLS; none in clear text.
        out["filter_chains"] = [_with_tls(c, tls, listener.name) for tls in listener.tls for c in chains]
        out["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector",
                                    "typed_config": {"@type": _TLS_INSPECTOR}}]
    return out


def _with_tls(chain: dict[str, Any], tls: ServerTls, listener: str) -> dict[str, Any]:
    """``chain`` for the connections whose server name ``tls`` takes, terminating TLS with its certificates."""
    match = dict(chain.get("filter_chain_match") or {})
    if tls.server_names:
        match["server_names"] = list(tls.server_names)
    label = ",".join(tls.server_names) or "*"
    out = {**chain, "name": f"{chain.get('name', listener)}/tls:{label}", "transport_socket": _tls_socket(tls)}
    if match:
        out["filter_chain_match"] = match
    return out


def _tls_socket(tls: ServerTls, alpn: bool = True) -> dict[str, Any]:
    """A downstream TLS transport socket with ``tls``'s certificates over SDS (HTTP listeners offer h2 and http/1.1)."""
    context: dict[str, Any] = {"tls_certificate_sds_secret_configs": [_sds(name) for name in tls.secrets]}
    if alpn:
        context["alpn_protocols"] = ["h2", "http/1.1"]
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": _DOWNSTREAM_TLS, "common_tls_context": context}}


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
    filters = _network_rbac_filters(chain.rbac, chain.name)
    filters.append({"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy})
    out: dict[str, Any] = {"name": chain.name, "filters": filters}
    if chain.tls is not None:
        out["transport_socket"] = _tls_socket(chain.tls, alpn=False)
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
