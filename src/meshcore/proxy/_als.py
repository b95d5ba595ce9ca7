"""L7 flows: Envoy's gRPC access logs (ALS) as raw batches, decoded only for whoever reads them.

How Envoy sends its flows when it has no access-log file (``ProxySettings.access_log_file``,
see :mod:`._access_file`, which the node agent uses). The receiving side does no
per-request work: each ALS message arrives as bytes (no protobuf decoding in the server),
goes to raw consumers as is — a flow journal appends it to a file with one write — and is
decoded into :class:`~meshcore.observe.Flow` only when something subscribed to decoded
flows (:meth:`FlowHub.subscribe`, :meth:`FlowHub.on_flow`), or later, when a reader of the
journal asks for them (:func:`decode_batch`). The decision helpers here serve both forms.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..observe import Enforcer, Flow, L7Details, Layer, Peer, Verdict

if TYPE_CHECKING:
    from ._flowhub import FlowHub

# Envoy's short response-flag codes, by the field of envoy.data.accesslog.v3.ResponseFlags.
_FLAGS = {
    "failed_local_healthcheck": "LH", "no_healthy_upstream": "UH", "upstream_request_timeout": "UT",
    "local_reset": "LR", "upstream_remote_reset": "UR", "upstream_connection_failure": "UF",
    "upstream_connection_termination": "UC", "upstream_overflow": "UO", "no_route_found": "NR",
    "delay_injected": "DI", "fault_injected": "FI", "rate_limited": "RL", "unauthorized_details": "UAEX",
    "rate_limit_service_error": "RLSE", "downstream_connection_termination": "DC",
    "upstream_retry_limit_exceeded": "URX", "stream_idle_timeout": "SI",
    "invalid_envoy_request_headers": "IH", "downstream_protocol_error": "DPE",
    "upstream_max_stream_duration_reached": "UMSDR", "response_from_cache_filter": "RFCF",
    "no_filter_config_found": "NFCF", "duration_timeout": "DT", "upstream_protocol_error": "UPE",
    "no_cluster_found": "NC", "overload_manager": "OM", "dns_resolution_failure": "DF",
    "downstream_remote_reset": "DR",
}
_PROTOCOLS = {0: "", 1: "HTTP/1.0", 2: "HTTP/1.1", 3: "HTTP/2", 4: "HTTP/3"}


class Resolver(Protocol):
    """What a node's access log alone does not say: names of its ports, addresses and policies."""

    def listener(self, node: str, port: int) -> str:
        """The listener (service port ``<ns>/<svc>:<port>``) served on the proxy port ``port``, or ``""``."""

    def peer(self, node: str, address: str, port: int) -> Peer:
        """The workload, namespace and identity at ``address``/``port`` as far as known."""

    def policy_source(self, node: str, policy: str) -> str:
        """Where the authorization policy ``namespace/name`` was written, or ``""``."""


#: The details of a TCP connection that matched no filter chain (refused on accept).
NO_CHAIN_DETAILS = "rbac_access_denied_no_matching_filter_chain"
#: Routes of a tunnel's server side are ``tunnel_inbound/<ns>/<pod>``: their client is the
#: address the verified peer forwarded (checked against its certificate), not the peer.
TUNNEL_ROUTE_PREFIX = "tunnel_inbound/"
#: Clusters of a tunnel's client side are ``tunnel|<client id>|<server id>|<node>``.
TUNNEL_CLUSTER_PREFIX = "tunnel|"
#: An endpoint reached through a tunnel is an internal address whose ID is ``<ip>:<port> <server id>``.
TUNNEL_ENDPOINT_SEPARATOR = " "
#: Filter state (logged) naming a client the node proxy's tunnels act for: only its
#: requests to such an endpoint go through the tunnel, anyone else's in clear text.
TUNNEL_CLIENT_STATE = "meshcore.tunnel.client"
#: Filter state (logged) of a connection the outbound tunnel listener refuses on its client's
#: egress policy before choosing a tunnel: the destination the client dialled.
TUNNEL_REFUSED_STATE = "meshcore.tunnel.refused"
# Response flags saying no upstream connection was made.
_NOT_CONNECTED = frozenset({"UF", "UH", "UO", "NC", "NR", "DF"})
_RBAC_POLICY = re.compile(r"rbac_access_denied_matched_policy\[(?P<policy>[^\[\]]+)(?:\[\d+\])?\]")
_METHODS: dict[int, str] = {}
_NOBODY = Peer()


def _method_name(value: int) -> str:
    if not _METHODS:
        from envoy.config.core.v3 import base_pb2

        _METHODS.update({v.number: v.name for v in base_pb2.RequestMethod.DESCRIPTOR.values})
        _METHODS[0] = ""
    return _METHODS.get(value, "")


def _peer(addr: Any, node: str, resolver: Resolver | None) -> Peer:
    # Socket addresses occur on proxied requests, internal ones on those sent through a
    # tunnel (their ID names the destination); a pipe has a path and no port.
    sa = addr.socket_address
    host, port = sa.address, sa.port_value
    if not host:
        if addr.HasField("envoy_internal_address"):
            destination = addr.envoy_internal_address.endpoint_id.partition(TUNNEL_ENDPOINT_SEPARATOR)[0]
            host, _, number = destination.rpartition(":")
            host, port = host.strip("[]"), int(number) if number.isdigit() else 0
            if not host:
                return _NOBODY
        else:
            return Peer(str(addr.pipe.path)) if addr.HasField("pipe") else _NOBODY
    return resolver.peer(node, host, port) if resolver is not None else Peer(host, port)


def _mutual_tls(common: Any, flags: tuple[str, ...], answered: bool = True) -> tuple[bool, str]:
    """Whether the entry's connection was mutually authenticated, and the peer's identity.

    The downstream's: a verified client certificate (its URI SAN, else its subject). The
    upstream's: sent through a tunnel, which verified the server's SPIFFE ID (named by
    the tunnel's cluster, or the internal endpoint's ID for a client the tunnels act
    for), when it connected (and, for a request, the answer came through it).
    """
    if common.HasField("tls_properties") and common.tls_properties.HasField("peer_certificate_properties"):
        certificate = common.tls_properties.peer_certificate_properties
        return True, next((san.uri for san in certificate.subject_alt_name if san.uri), certificate.subject)
    server = ""
    cluster = common.upstream_cluster
    if cluster.startswith(TUNNEL_CLUSTER_PREFIX):
        server = cluster.split("|")[2] if cluster.count("|") >= 3 else ""
    elif common.upstream_remote_address.HasField("envoy_internal_address") and \
            TUNNEL_CLIENT_STATE in common.filter_state_objects:
        server = common.upstream_remote_address.envoy_internal_address.endpoint_id.partition(
            TUNNEL_ENDPOINT_SEPARATOR)[2]
    if server and answered and not _NOT_CONNECTED.intersection(flags):
        return True, server
    return False, ""


def _flags(rf: Any) -> tuple[str, ...]:
    # Most requests carry no flag: skip the per-field walk then.
    if not rf.ByteSize():
        return ()
    return tuple(code for field, code in _FLAGS.items()
                 if (rf.HasField(field) if field == "unauthorized_details" else getattr(rf, field, False)))


def _common(common: Any, node: str, resolver: Resolver | None) -> tuple[datetime, Peer, Peer, str]:
    """Start time, source (the client), destination (the upstream) and listener of an entry."""
    start = common.start_time
    forwarded = common.route_name.startswith(TUNNEL_ROUTE_PREFIX)
    downstream = (common.downstream_direct_remote_address
                  if common.HasField("downstream_direct_remote_address") and not forwarded
                  else common.downstream_remote_address)
    source = _peer(downstream, node, resolver) if downstream.ByteSize() else _NOBODY
    upstream = (_peer(common.upstream_remote_address, node, resolver)
                if common.HasField("upstream_remote_address") else _NOBODY)
    port = common.downstream_local_address.socket_address.port_value \
        if common.HasField("downstream_local_address") else 0
    listener = resolver.listener(node, port) if resolver is not None and port else ""
    return datetime.fromtimestamp(start.seconds + start.nanos / 1e9, UTC), source, upstream, listener


def _decision(details: str, audited: bool, node: str, resolver: Resolver | None) -> tuple[Verdict, str, str, str]:
    """Verdict, reason, policy and its source of a request with these response details."""
    if "rbac_access_denied" not in details:
        return (Verdict.AUDIT if audited else Verdict.FORWARDED), "", "", ""
    found = _RBAC_POLICY.search(details)
    policy = found.group("policy") if found is not None and found.group("policy") != "none" else ""
    source = resolver.policy_source(node, policy) if policy and resolver is not None else ""
    return Verdict.DROPPED, "policy-denied", policy, source


def decode_http_entry(entry: Any, node: str, resolver: Resolver | None = None) -> Flow:
    """An ``HTTPAccessLogEntry`` of ``node``'s Envoy as a :class:`~meshcore.observe.Flow`.

    Read with as few protobuf accesses as possible: whoever reads flows runs this once
    per proxied request, so it must stay cheap. A request Envoy's RBAC refused is
    ``DROPPED`` (``policy-denied``, naming the policy its details name); one an AUDIT
    policy matched is ``AUDIT``.
    """
    common = entry.common_properties
    request = entry.request
    response = entry.response
    audited = False
    if common.HasField("metadata"):
        hint = common.metadata.filter_metadata.get("envoy.common")
        audited = bool(hint is not None and hint.fields.get("access_log_hint")
                       and hint.fields["access_log_hint"].bool_value)
    time, source, upstream, listener = _common(common, node, resolver)
    last = common.time_to_last_downstream_tx_byte if common.HasField("time_to_last_downstream_tx_byte") \
        else common.duration
    details = response.response_code_details
    verdict, reason, policy, policy_source = _decision(details, audited, node, resolver)
    flags = _flags(common.response_flags)
    mtls, principal = _mutual_tls(common, flags, answered=details.startswith("via_upstream"))
    if not upstream.address and common.route_name.startswith(TUNNEL_ROUTE_PREFIX):
        # A tunnelled connection refused before delivery: its destination is the one it asked for.
        host, _, port = request.authority.rpartition(":")
        if host and port.isdigit():
            host = host.strip("[]")
            upstream = resolver.peer(node, host, int(port)) if resolver is not None else Peer(host, int(port))
    return Flow(
        time=time, node=node, layer=Layer.L7, verdict=verdict, enforcer=Enforcer.PROXY, source=source,
        destination=upstream, protocol=_PROTOCOLS.get(entry.protocol_version, "") or "HTTP", reason=reason,
        policy=policy, policy_source=policy_source, mtls=mtls, peer_principal=principal,
        l7=L7Details(
            method=_method_name(request.request_method), path=request.path, authority=request.authority,
            status=response.response_code.value, latency_ms=last.seconds * 1000 + last.nanos / 1e6,
            listener=listener, route=common.route_name, cluster=common.upstream_cluster,
            flags=flags, details=details,
            bytes_received=request.request_body_bytes, bytes_sent=response.response_body_bytes,
        ),
    )


def decode_tcp_entry(entry: Any, node: str, resolver: Resolver | None = None) -> Flow:
    """A ``TCPAccessLogEntry`` (one connection through a TCP listener) as a :class:`~meshcore.observe.Flow`.

    ``protocol`` is ``TCP``; ``details`` are Envoy's connection termination details
    (``rbac_access_denied_matched_policy[...]`` for a connection refused by policy), or
    :data:`NO_CHAIN_DETAILS` for one whose client no filter chain admits (flag ``NR``).
    """
    common = entry.common_properties
    flags = _flags(common.response_flags)
    details = common.connection_termination_details
    if not details and "NR" in flags and not common.upstream_cluster:
        # No filter chain matched: the TCP listener admits no chain for this client's
        # address (authorization decided on accept) or server name; closed unforwarded.
        details = NO_CHAIN_DETAILS
    time, source, upstream, listener = _common(common, node, resolver)
    verdict, reason, policy, policy_source = _decision(details, False, node, resolver)
    mtls, principal = _mutual_tls(common, flags)
    if common.upstream_cluster.startswith(TUNNEL_CLUSTER_PREFIX) or TUNNEL_REFUSED_STATE in common.filter_state_objects:
        # The upstream is the server's node (or none: refused); the connection's destination is what the client dialled.
        upstream, listener = _peer(common.downstream_local_address, node, resolver), ""
    duration = common.duration
    return Flow(
        time=time, node=node, layer=Layer.L7, verdict=verdict, enforcer=Enforcer.PROXY, source=source,
        destination=upstream, protocol="TCP", reason=reason, policy=policy, policy_source=policy_source,
        mtls=mtls, peer_principal=principal,
        l7=L7Details(latency_ms=duration.seconds * 1000 + duration.nanos / 1e6, listener=listener,
                     cluster=common.upstream_cluster, flags=flags, details=details,
                     bytes_received=entry.connection_properties.received_bytes,
                     bytes_sent=entry.connection_properties.sent_bytes),
    )


def decode_batch(raw: bytes, node: str, resolver: Resolver | None = None) -> list[Flow]:
    """The flows of one serialized ``StreamAccessLogsMessage`` (HTTP or TCP entries) of ``node``'s Envoy."""
    message = _log_message(raw)
    if message.HasField("http_logs"):
        return [decode_http_entry(entry, node, resolver) for entry in message.http_logs.log_entry]
    if message.HasField("tcp_logs"):
        return [decode_tcp_entry(entry, node, resolver) for entry in message.tcp_logs.log_entry]
    return []


def _log_message(raw: bytes) -> Any:
    from envoy.service.accesslog.v3 import als_pb2

    return als_pb2.StreamAccessLogsMessage.FromString(raw)


class AlsServicer:
    """The ``envoy.service.accesslog.v3.AccessLogService`` side: raw messages to the hub."""

    SERVICE = "envoy.service.accesslog.v3.AccessLogService"

    def __init__(self, hub: FlowHub, resolver: Resolver) -> None:
        self._hub = hub
        self._resolver = resolver

    def stream(self, request_iterator: Iterator[bytes], context: Any) -> bytes:
        """One Envoy worker's stream: the node from the first message, then every message as bytes."""
        node = ""
        publish = self._hub.publish_raw
        resolver = self._resolver
        try:
            for raw in request_iterator:
                if not node:
                    # Only the first message of a stream carries the identifier.
                    message = _log_message(raw)
                    if message.HasField("identifier"):
                        node = message.identifier.node.id
                publish(raw, node, resolver)
        except Exception:  # Envoy went away mid-stream
            pass
        return b""  # an empty StreamAccessLogsResponse

    def handler(self) -> Any:
        """A grpcio generic handler serving the access log service without decoding requests."""
        import grpc

        def identity(data: bytes) -> bytes:
            return data

        method = grpc.stream_unary_rpc_method_handler(
            self.stream, request_deserializer=None, response_serializer=identity)
        return grpc.method_handlers_generic_handler(self.SERVICE, {"StreamAccessLogs": method})
