"""L7 flows: Envoy's gRPC access logs (ALS) as raw batches, decoded only for whoever reads them.

The receiving side does no per-request work: each ALS message arrives as bytes (no
protobuf decoding in the server), goes to raw consumers as is — the flow journal appends
it to a file with one write — and is decoded into flows only when something subscribed
to decoded flows (:meth:`FlowHub.subscribe`, :meth:`FlowHub.on_flow`,
:meth:`FlowHub.on_flow_data`), or later, when a reader of the journal asks for them
(see :mod:`._journal`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol

import attrs

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


@attrs.frozen
class FlowRecord:
    """One HTTP request through the node proxy, as Envoy logged it.

    ``listener`` is the service port (``<ns>/<svc>:<port>``), ``route`` and ``cluster``
    the Envoy route and cluster names; ``upstream_workload`` is ``ns/name`` of the backend
    that answered when the plan knows it; ``flags`` are Envoy's response flags (``UF``,
    ``URX``, ...); ``audited`` is true when an AUDIT policy matched the request.
    """

    time: datetime
    node: str
    listener: str
    method: str
    path: str
    authority: str
    status: int
    latency_ms: float
    upstream_address: str
    upstream_workload: str
    downstream_address: str
    route: str
    cluster: str
    protocol: str = ""
    flags: tuple[str, ...] = ()
    details: str = ""
    audited: bool = False
    bytes_received: int = 0
    bytes_sent: int = 0

    def __str__(self) -> str:
        upstream = self.upstream_workload or self.upstream_address or "-"
        flags = f" [{','.join(self.flags)}]" if self.flags else ""
        return (f"{self.time:%H:%M:%S.%f} {self.downstream_address} → {self.listener} {self.method} "
                f"{self.authority}{self.path} {self.status} {self.latency_ms:.1f}ms → {upstream}{flags}")


def _address(addr: Any) -> str:
    if addr.HasField("socket_address"):
        sa = addr.socket_address
        host = f"[{sa.address}]" if ":" in sa.address else sa.address
        return f"{host}:{sa.port_value}"
    if addr.HasField("pipe"):
        return str(addr.pipe.path)
    return ""


def _ms(duration: Any) -> float:
    return float(duration.seconds * 1000 + duration.nanos / 1e6)


class Resolver(Protocol):
    """Names for addresses in a node's access log, from the plan last set for the node."""

    def listener(self, node: str, local_address: str) -> str:
        """The listener (service port) owning the proxy address ``ip:port``, or ``""``."""

    def workload(self, node: str, address: str) -> str:
        """``ns/name`` of the backend at ``ip:port``, or ``""``."""


def decode_entry(entry: Any, node: str, resolver: Resolver | None = None) -> FlowRecord:
    """An ``HTTPAccessLogEntry`` of ``node``'s Envoy as a :class:`FlowRecord`."""
    from envoy.config.core.v3 import base_pb2

    common = entry.common_properties
    request = entry.request
    response = entry.response
    rf = common.response_flags
    flags = tuple(
        code for field, code in _FLAGS.items()
        if (rf.HasField(field) if field == "unauthorized_details" else getattr(rf, field, False))
    )
    upstream = _address(common.upstream_remote_address)
    local = _address(common.downstream_local_address)
    hint = common.metadata.filter_metadata.get("envoy.common")
    audited = bool(hint is not None and hint.fields.get("access_log_hint") and hint.fields["access_log_hint"].bool_value)
    latency = common.time_to_last_downstream_tx_byte if common.HasField("time_to_last_downstream_tx_byte") else common.duration
    return FlowRecord(
        time=common.start_time.ToDatetime(tzinfo=UTC),
        node=node,
        listener=resolver.listener(node, local) if resolver is not None and local else "",
        method=str(base_pb2.RequestMethod.Name(request.request_method)) if request.request_method else "",
        path=str(request.path),
        authority=str(request.authority),
        status=int(response.response_code.value) if response.HasField("response_code") else 0,
        latency_ms=_ms(latency),
        upstream_address=upstream,
        upstream_workload=resolver.workload(node, upstream) if resolver is not None and upstream else "",
        downstream_address=_address(
            common.downstream_direct_remote_address if common.HasField("downstream_direct_remote_address")
            else common.downstream_remote_address
        ),
        route=str(common.route_name),
        cluster=str(common.upstream_cluster),
        protocol=_PROTOCOLS.get(int(entry.protocol_version), ""),
        flags=flags,
        details=str(response.response_code_details),
        audited=audited,
        bytes_received=int(request.request_body_bytes),
        bytes_sent=int(response.response_body_bytes),
    )


_METHODS: dict[int, str] = {}


def record_data(flow: FlowRecord) -> dict[str, Any]:
    """A decoded flow as the plain data :func:`entry_data` produces straight from the entry (``kind: l7``)."""
    return {
        "kind": "l7", "time": flow.time.timestamp(), "node": flow.node, "listener": flow.listener,
        "source": flow.downstream_address, "method": flow.method, "path": flow.path,
        "authority": flow.authority, "status": flow.status, "latencyMs": round(flow.latency_ms, 3),
        "upstream": flow.upstream_address, "upstreamPod": flow.upstream_workload, "route": flow.route,
        "cluster": flow.cluster, "protocol": flow.protocol, "flags": list(flow.flags),
        "details": flow.details, "audited": flow.audited,
    }


def _method_name(value: int) -> str:
    if not _METHODS:
        from envoy.config.core.v3 import base_pb2

        _METHODS.update({v.number: v.name for v in base_pb2.RequestMethod.DESCRIPTOR.values})
        _METHODS[0] = ""
    return _METHODS.get(value, "")


def _address_fast(addr: Any) -> str:
    # Only socket addresses occur on proxied requests; other kinds take the full path.
    sa = addr.socket_address
    host = sa.address
    if not host:
        return _address(addr)
    return f"[{host}]:{sa.port_value}" if ":" in host else f"{host}:{sa.port_value}"


def entry_data(entry: Any, node: str, resolver: Resolver | None = None) -> dict[str, Any]:
    """An ``HTTPAccessLogEntry`` as the plain JSON object of a flow (``kind: l7``), without a :class:`FlowRecord`.

    The same fields :func:`decode_entry` gives, read with as few protobuf accesses as
    possible: this runs once per proxied request, so it must stay cheap.
    """
    common = entry.common_properties
    request = entry.request
    response = entry.response
    rf = common.response_flags
    # Most requests carry no flag and no metadata: skip the per-field walks then.
    flags = [code for field, code in _FLAGS.items()
             if (rf.HasField(field) if field == "unauthorized_details" else getattr(rf, field, False))
             ] if rf.ByteSize() else []
    audited = False
    if common.HasField("metadata"):
        hint = common.metadata.filter_metadata.get("envoy.common")
        audited = bool(hint is not None and hint.fields.get("access_log_hint")
                       and hint.fields["access_log_hint"].bool_value)
    upstream = _address_fast(common.upstream_remote_address) if common.HasField("upstream_remote_address") else ""
    local = _address_fast(common.downstream_local_address) if common.HasField("downstream_local_address") else ""
    last = common.time_to_last_downstream_tx_byte if common.HasField("time_to_last_downstream_tx_byte") \
        else common.duration
    start = common.start_time
    downstream = (common.downstream_direct_remote_address if common.HasField("downstream_direct_remote_address")
                  else common.downstream_remote_address)
    return {
        "kind": "l7", "time": start.seconds + start.nanos / 1e9, "node": node,
        "listener": resolver.listener(node, local) if resolver is not None and local else "",
        "source": _address_fast(downstream) if downstream.ByteSize() else "",
        "method": _method_name(request.request_method), "path": request.path, "authority": request.authority,
        "status": response.response_code.value, "latencyMs": round(last.seconds * 1000 + last.nanos / 1e6, 3),
        "upstream": upstream,
        "upstreamPod": resolver.workload(node, upstream) if resolver is not None and upstream else "",
        "route": common.route_name, "cluster": common.upstream_cluster,
        "protocol": _PROTOCOLS.get(entry.protocol_version, ""), "flags": flags,
        "details": response.response_code_details, "audited": audited,
    }


class FlowSubscription:
    """Flows as they arrive: iterate (blocks), or :meth:`get` with a timeout; close when done.

    At most ``maxsize`` records wait; when a reader falls behind, the oldest are dropped
    and counted in :attr:`dropped`.
    """

    def __init__(self, hub: FlowHub, maxsize: int) -> None:
        self._hub = hub
        self._queue: queue.Queue[FlowRecord | None] = queue.Queue(maxsize)
        self.dropped = 0
        self.closed = False

    def _put(self, record: FlowRecord) -> None:
        while True:
            try:
                self._queue.put_nowait(record)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def get(self, timeout: float | None = None) -> FlowRecord | None:
        """The next flow, or ``None`` after ``timeout`` seconds (or once closed)."""
        if self.closed and self._queue.empty():
            return None
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self) -> list[FlowRecord]:
        """Every flow waiting now, without blocking."""
        out: list[FlowRecord] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out
            if item is not None:
                out.append(item)

    def __iter__(self) -> Iterator[FlowRecord]:
        while True:
            item = self.get()
            if item is None:
                return
            yield item

    def close(self) -> None:
        """Stop receiving; a blocked iteration ends."""
        if not self.closed:
            self.closed = True
            self._hub._remove(self)
            self._put_end()

    def _put_end(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    def __enter__(self) -> FlowSubscription:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


RawCallback = Callable[[str, bytes], None]


def _log_message(raw: bytes) -> Any:
    from envoy.service.accesslog.v3 import als_pb2

    return als_pb2.StreamAccessLogsMessage.FromString(raw)


class FlowHub:
    """Fans flows out to raw consumers (one call per ALS batch, bytes as received), and
    decoded flows to subscriptions and callbacks — decoding only when someone wants them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[FlowSubscription] = []
        self._callbacks: list[Callable[[FlowRecord], None]] = []
        self._data_callbacks: list[Callable[[list[dict[str, Any]]], None]] = []
        self._raw_callbacks: list[RawCallback] = []
        #: Access-log batches (ALS messages) and their bytes received so far.
        self.batches = 0
        self.bytes = 0
        #: Flows decoded for subscribers and callbacks so far (0 while only raw consumers listen).
        self.received = 0

    def subscribe(self, maxsize: int = 10_000) -> FlowSubscription:
        """A new subscription receiving every flow from now on."""
        sub = FlowSubscription(self, maxsize)
        with self._lock:
            self._subscriptions.append(sub)
        return sub

    def _add(self, registry: list[Any], callback: Any) -> Callable[[], None]:
        with self._lock:
            registry.append(callback)

        def remove() -> None:
            with self._lock:
                if callback in registry:
                    registry.remove(callback)
        return remove

    def on_flow(self, callback: Callable[[FlowRecord], None]) -> Callable[[], None]:
        """Call ``callback`` for every flow (from a server thread); returns a remover."""
        return self._add(self._callbacks, callback)

    def on_flow_data(self, callback: Callable[[list[dict[str, Any]]], None]) -> Callable[[], None]:
        """Call ``callback`` once per batch of access-log entries, as plain flow objects (see
        :func:`entry_data`); returns a remover.

        Cheaper than :meth:`on_flow` (no :class:`FlowRecord` is built), but every entry is
        still decoded: consumers that only store flows should use :meth:`on_flow_batch`.
        """
        return self._add(self._data_callbacks, callback)

    def on_flow_batch(self, callback: RawCallback) -> Callable[[], None]:
        """Call ``callback(node, message)`` once per ALS batch with the serialized
        ``StreamAccessLogsMessage`` exactly as Envoy sent it; returns a remover.

        Nothing is decoded for it: the cheap path for storing or forwarding flows (see
        :class:`FlowJournal`, and :func:`decode_batch` to read them later).
        """
        return self._add(self._raw_callbacks, callback)

    def publish_raw(self, raw: bytes, node: str, resolver: Resolver | None = None) -> None:
        """Deliver one serialized ``StreamAccessLogsMessage``: as is to raw consumers, decoded to the others."""
        with self._lock:
            self.batches += 1
            self.bytes += len(raw)
            raw_callbacks = list(self._raw_callbacks)
            decode = bool(self._subscriptions or self._callbacks or self._data_callbacks)
        for callback in raw_callbacks:
            try:
                callback(node, raw)
            except Exception:  # one consumer's failure must not stop the others
                pass
        if decode:
            message = _log_message(raw)
            if message.HasField("http_logs"):
                self._deliver(message.http_logs.log_entry, node, resolver)

    def publish_entries(self, entries: Any, node: str, resolver: Resolver | None = None) -> None:
        """Deliver a batch of ``HTTPAccessLogEntry`` messages, decoding only into the forms someone wants."""
        self._deliver(entries, node, resolver)

    def _deliver(self, entries: Any, node: str, resolver: Resolver | None) -> None:
        with self._lock:
            wants_records = bool(self._subscriptions or self._callbacks)
            data_callbacks = list(self._data_callbacks)
        if wants_records:
            for entry in entries:
                self.publish(decode_entry(entry, node, resolver))
        else:
            with self._lock:
                self.received += len(entries)
        if data_callbacks:
            batch = [entry_data(entry, node, resolver) for entry in entries]
            for callback in data_callbacks:
                try:
                    callback(batch)
                except Exception:  # one consumer's failure must not stop the others
                    pass

    def publish(self, record: FlowRecord) -> None:
        """Deliver one flow to every subscriber."""
        with self._lock:
            self.received += 1
            subs = list(self._subscriptions)
            callbacks = list(self._callbacks)
        for sub in subs:
            sub._put(record)
        for callback in callbacks:
            try:
                callback(record)
            except Exception:  # one consumer's failure must not stop the others
                pass

    def close(self) -> None:
        """End every subscription."""
        with self._lock:
            subs = list(self._subscriptions)
        for sub in subs:
            sub.close()

    def _remove(self, sub: FlowSubscription) -> None:
        with self._lock:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)


def decode_batch(raw: bytes, node: str, resolver: Resolver | None = None) -> list[dict[str, Any]]:
    """The flows of one serialized ``StreamAccessLogsMessage`` as plain flow objects (see :func:`entry_data`)."""
    message = _log_message(raw)
    if message.HasField("tcp_logs"):
        return [tcp_entry_data(entry, node, resolver) for entry in message.tcp_logs.log_entry]
    if not message.HasField("http_logs"):
        return []
    return [entry_data(entry, node, resolver) for entry in message.http_logs.log_entry]


#: The details of a TCP connection that matched no filter chain (refused on accept).
NO_CHAIN_DETAILS = "rbac_access_denied_no_matching_filter_chain"


def tcp_entry_data(entry: Any, node: str, resolver: Resolver | None = None) -> dict[str, Any]:
    """A ``TCPAccessLogEntry`` (one connection through a TCP listener) as a flow object like :func:`entry_data`'s.

    ``protocol`` is ``TCP``; ``details`` are Envoy's connection termination details
    (``rbac_access_denied_matched_policy[...]`` for a connection refused by policy), or
    :data:`NO_CHAIN_DETAILS` for one whose client no filter chain admits (flag ``NR``).
    """
    common = entry.common_properties
    rf = common.response_flags
    flags = [code for field, code in _FLAGS.items()
             if (rf.HasField(field) if field == "unauthorized_details" else getattr(rf, field, False))
             ] if rf.ByteSize() else []
    upstream = _address(common.upstream_remote_address) if common.HasField("upstream_remote_address") else ""
    local = _address(common.downstream_local_address) if common.HasField("downstream_local_address") else ""
    downstream = (common.downstream_direct_remote_address if common.HasField("downstream_direct_remote_address")
                  else common.downstream_remote_address)
    start = common.start_time
    details = common.connection_termination_details
    if not details and "NR" in flags and not common.upstream_cluster:
        # No filter chain matched: the TCP listener admits no chain for this client's
        # address (authorization decided on accept) or server name; closed unforwarded.
        details = NO_CHAIN_DETAILS
    return {
        "kind": "l7", "time": start.seconds + start.nanos / 1e9, "node": node,
        "listener": resolver.listener(node, local) if resolver is not None and local else "",
        "source": _address(downstream) if downstream.ByteSize() else "",
        "method": "", "path": "", "authority": "", "status": 0, "latencyMs": round(_ms(common.duration), 3),
        "upstream": upstream,
        "upstreamPod": resolver.workload(node, upstream) if resolver is not None and upstream else "",
        "route": "", "cluster": common.upstream_cluster, "protocol": "TCP", "flags": flags,
        "details": details, "audited": False,
    }


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
