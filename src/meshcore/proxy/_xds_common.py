"""What every xDS builder module shares: node settings, extension type URLs, small encoders.

:class:`ProxySettings` (listener addresses, access logs, timeouts) is read by the
listener and cluster builders; :data:`XDS_CLUSTER` is the bootstrap's control-plane
cluster that access logs stream to. Every extension ``@type`` below must have its
generated module in ``_resources._MODULES``, or JSON parsing cannot resolve it. This
module imports no other builder, so each of them (and ``_resources``) may import it.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._errors import ProxyConfigError

#: The bootstrap's static cluster for meshcore's gRPC server (ADS and access logs).
XDS_CLUSTER = "meshcore_xds"

_T = "type.googleapis.com/"
_HCM = _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_RBAC = _T + "envoy.extensions.filters.http.rbac.v3.RBAC"
_RBAC_PER_ROUTE = _T + "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
_NETWORK_RBAC = _T + "envoy.extensions.filters.network.rbac.v3.RBAC"
_JWT_AUTHN = _T + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
_FAULT = _T + "envoy.extensions.filters.http.fault.v3.HTTPFault"
_CORS = _T + "envoy.extensions.filters.http.cors.v3.Cors"
_CORS_POLICY = _T + "envoy.extensions.filters.http.cors.v3.CorsPolicy"
_ROUTER = _T + "envoy.extensions.filters.http.router.v3.Router"
_ALS = _T + "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
_TCP_ALS = _T + "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig"
_FILE_LOG = _T + "envoy.extensions.access_loggers.file.v3.FileAccessLog"
_TCP_PROXY = _T + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
_TLS_INSPECTOR = _T + "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
_ORIGINAL_DST = _T + "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
_HTTP_OPTIONS = _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_UPSTREAM_TLS = _T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_DOWNSTREAM_TLS = _T + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_PREVIOUS_HOSTS = _T + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
#: HTTP filter names: a route keys its per-filter config by them, a listener names its filters.
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"


@attrs.frozen
class ProxySettings:
    """How plans become resources on a node: listener addresses, access logs, timeouts.

    Listeners bind ``listen_ipv4`` and/or ``listen_ipv6`` (the node proxy's addresses the
    socket-level LB sends proxied connections to) on each service port's proxy port.

    Access logs record every request. With ``access_log_file`` set, Envoy's file logger
    writes one compact line per request to that file (see :mod:`._access_file`; read
    with :meth:`ControlPlane.follow_access_log`): the cheapest way out of Envoy, the
    line being formatted on the worker and written by Envoy's flush thread. Without it
    they are streamed to the control plane over gRPC, sent by each Envoy worker once
    ``access_log_buffer_bytes`` of entries are buffered, or every
    ``access_log_flush_ms``. The receiving side pays per message, not per entry, so the
    buffer is twice Envoy's default (16 KiB, ~40 entries): half the messages for the
    same flows. Larger buffers save little more and lengthen the pause of the Envoy
    worker that serializes a full buffer (visible in tail latency from 256 KiB on).
    ``source_ipv4`` / ``source_ipv6``, when set, are the addresses Envoy connects to
    endpoints from (the node proxy's own, which policy on every node recognises), instead of
    whatever the route to the endpoint chooses.
    ``request_ids`` keeps Envoy's default of giving each request an ``x-request-id``
    (applications may log or propagate it); turning it off saved 0–9 µs of proxy CPU per
    request in bench/l7.py, within that machine's noise.
    """

    listen_ipv4: str | None = "127.0.0.1"
    listen_ipv6: str | None = None
    access_log: bool = True
    access_log_file: str | None = None
    access_log_flush_ms: int = 1000
    access_log_buffer_bytes: int = 32 * 1024
    connect_timeout_ms: int = 1000
    request_ids: bool = True
    source_ipv4: str | None = None
    source_ipv6: str | None = None
    #: Name servers (``address`` or ``address:port``) the DNS clusters of DNS-resolved services
    #: ask; empty: the system's (/etc/resolv.conf).
    dns_resolvers: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not self.listen_ipv4 and not self.listen_ipv6:
            raise ProxyConfigError("ProxySettings needs listen_ipv4 or listen_ipv6 (the node proxy's address)")
        if not 0 < self.access_log_buffer_bytes <= 4 * 1024 * 1024:
            raise ProxyConfigError(f"ProxySettings.access_log_buffer_bytes is {self.access_log_buffer_bytes}: "
                                   "give 1 to 4194304 bytes (gRPC's default message size limit)")
        if self.access_log_file is not None and not self.access_log_file.startswith("/"):
            raise ProxyConfigError(f"ProxySettings.access_log_file is {self.access_log_file!r}: give an absolute path "
                                   "(Envoy resolves a relative one against its own working directory)")


def _sds(name: str) -> dict[str, Any]:
    """An SDS reference to secret ``name``, fetched over the ADS stream (never from a file)."""
    return {"name": name, "sds_config": {"ads": {}, "resource_api_version": "V3"}}


def _duration(ms: int | float) -> str:
    return f"{ms / 1000:g}s"


def _percent(value: float) -> dict[str, Any]:
    return {"numerator": round(value * 10_000), "denominator": "MILLION"}


def _stat_prefix(name: str) -> str:
    return name.replace("/", ".").replace(":", ".")
