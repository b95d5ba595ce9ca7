"""Envoy Cluster and ClusterLoadAssignment JSON for one :class:`~meshcore.compile.EnvoyCluster`.

A cluster takes its endpoints over EDS (the load assignment of the same name) and has
no circuit-breaking limits unless a traffic policy sets them; the policy also chooses
hash load balancing, connection pool options, outlier detection and upstream TLS.
"""

from __future__ import annotations

from typing import Any

from ..compile import Discovery, EnvoyCluster
from ..model import HashAlgorithm, LbPolicy, TlsMode, TrafficPolicy, UpstreamTls
from ._xds_common import _HTTP_OPTIONS, _UPSTREAM_TLS, ProxySettings, _duration

_LB = {LbPolicy.RANDOM: "RANDOM", LbPolicy.ROUND_ROBIN: "ROUND_ROBIN",
       LbPolicy.LEAST_REQUEST: "LEAST_REQUEST", LbPolicy.CONSISTENT_HASH: "RING_HASH"}
_UNLIMITED = 4_294_967_295
_CARES = "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig"


def _cluster(cluster: EnvoyCluster, settings: ProxySettings) -> dict[str, Any]:
    out: dict[str, Any] = {"name": cluster.name, "type": cluster.discovery.value}
    if cluster.discovery is Discovery.EDS:
        out["eds_cluster_config"] = {"eds_config": {"ads": {}, "resource_api_version": "V3"}}
    else:
        # A DNS cluster carries its endpoints (names) and resolves them itself, honouring the TTLs.
        out["load_assignment"] = _load_assignment(cluster)
        out["respect_dns_ttl"] = True
        out["dns_lookup_family"] = "V4_PREFERRED"
        if settings.dns_resolvers:
            out["typed_dns_resolver_config"] = _dns_resolver(settings.dns_resolvers)
    out.update({
        "connect_timeout": _duration(settings.connect_timeout_ms),
        "lb_policy": _LB[cluster.lb_policy],
        # A mesh proxy must not shed load on its own: no circuit-breaking defaults.
        "circuit_breakers": {"thresholds": [{
            "max_connections": _UNLIMITED, "max_pending_requests": _UNLIMITED,
            "max_requests": _UNLIMITED, "max_retries": _UNLIMITED,
        }]},
    })
    bind = _bind_config(settings)
    if bind:
        out["upstream_bind_config"] = bind
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


def _dns_resolver(resolvers: tuple[str, ...]) -> dict[str, Any]:
    """c-ares asking these name servers (``address`` or ``address:port``) instead of /etc/resolv.conf's."""
    addresses = []
    for text in resolvers:
        host, port = text, 53
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 53
        elif text.count(":") == 1:
            host, _, number = text.partition(":")
            port = int(number)
        addresses.append({"socket_address": {"address": host, "port_value": port}})
    return {"name": "envoy.network.dns_resolver.cares", "typed_config": {
        "@type": _CARES, "resolvers": addresses, "dns_resolver_options": {"no_default_search_domain": True}}}


def _bind_config(settings: ProxySettings) -> dict[str, Any]:
    """Where upstream connections come from: the proxy's source address of the endpoint's family."""
    sources = [a for a in (settings.source_ipv4, settings.source_ipv6) if a]
    if not sources:
        return {}
    out: dict[str, Any] = {"source_address": {"address": sources[0], "port_value": 0}}
    if len(sources) > 1:
        # Envoy picks the source of the endpoint's family among these.
        out["extra_source_addresses"] = [{"address": {"address": a, "port_value": 0}} for a in sources[1:]]
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
    if (tls.ca_certificates or tls.ca_bundle) and not tls.insecure_skip_verify:
        trusted = {"inline_string": tls.ca_bundle} if tls.ca_bundle else {"filename": tls.ca_certificates}
        validation: dict[str, Any] = {"trusted_ca": trusted}
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
