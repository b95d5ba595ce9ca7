"""L7 flows: Envoy's gRPC access logs (ALS) decoded into flow records for subscribers."""

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


class FlowHub:
    """Fans flow records out to subscriptions and callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[FlowSubscription] = []
        self._callbacks: list[Callable[[FlowRecord], None]] = []
        self.received = 0

    def subscribe(self, maxsize: int = 10_000) -> FlowSubscription:
        """A new subscription receiving every flow from now on."""
        sub = FlowSubscription(self, maxsize)
        with self._lock:
            self._subscriptions.append(sub)
        return sub

    def on_flow(self, callback: Callable[[FlowRecord], None]) -> Callable[[], None]:
        """Call ``callback`` for every flow (from a server thread); returns a remover."""
        with self._lock:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
        return remove

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


class AlsServicer:
    """The ``envoy.service.accesslog.v3.AccessLogService`` side: decodes and publishes."""

    def __init__(self, hub: FlowHub, resolver: Resolver) -> None:
        self._hub = hub
        self._resolver = resolver

    def servicer(self) -> Any:
        """A grpcio servicer for the access log service."""
        from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

        outer = self

        class _Servicer(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
            def StreamAccessLogs(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
                node = ""
                try:
                    for message in request_iterator:
                        if message.HasField("identifier"):
                            node = message.identifier.node.id
                        if message.HasField("http_logs"):
                            for entry in message.http_logs.log_entry:
                                outer._hub.publish(decode_entry(entry, node, outer._resolver))
                except Exception:  # Envoy went away mid-stream
                    pass
                return als_pb2.StreamAccessLogsResponse()

        return _Servicer()
