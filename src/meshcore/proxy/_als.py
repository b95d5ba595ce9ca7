"""L7 flows: Envoy's gRPC access logs (ALS) as raw batches, decoded only for whoever reads them.

The receiving side does no per-request work: each ALS message arrives as bytes (no
protobuf decoding in the server), goes to raw consumers as is — the flow journal appends
it to a file with one write — and is decoded into flows only when something subscribed
to decoded flows (:meth:`FlowHub.subscribe`, :meth:`FlowHub.on_flow`,
:meth:`FlowHub.on_flow_data`), or later, when a reader of the journal asks for them
(:class:`FlowJournalReader`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol

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


# --- the flow journal ------------------------------------------------------------------
#
# A file of records, each a 5-byte header (kind, little-endian payload length) and the
# payload. Kinds: "N" — the names a node's entries are resolved with (JSON: node, proxy
# port → listener, endpoint address → workload), written at the head of every file and
# whenever a node's plan changes them; "B" — one ALS batch: 2-byte node length, node id,
# then the serialized StreamAccessLogsMessage as Envoy sent it. Entries are resolved
# with the names last written before them, i.e. the plan in force when they arrived.

JOURNAL_MAGIC = b"MCFLOWS1"
_HEADER = struct.Struct("<cI")
_NODE_LEN = struct.Struct("<H")
_NAMES_KIND = b"N"
_BATCH_KIND = b"B"
#: Size at which a journal is rotated to ``<file>.1`` (one previous file is kept).
JOURNAL_MAX_BYTES = 4 * 1024 * 1024


class NamesTable:
    """A :class:`Resolver` over plain tables: per node, proxy port → listener and address → workload."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ports: dict[str, dict[int, str]] = {}
        self._workloads: dict[str, dict[str, str]] = {}

    def set(self, node: str, ports: Mapping[int, str], workloads: Mapping[str, str]) -> None:
        """Replace ``node``'s tables."""
        with self._lock:
            self._ports[node] = dict(ports)
            self._workloads[node] = dict(workloads)

    def nodes(self) -> list[str]:
        """The nodes with tables."""
        with self._lock:
            return sorted(self._ports)

    def data(self, node: str) -> dict[str, Any]:
        """``node``'s tables as the JSON object a journal stores."""
        with self._lock:
            return {"node": node, "ports": {str(k): v for k, v in self._ports.get(node, {}).items()},
                    "workloads": dict(self._workloads.get(node, {}))}

    def load(self, data: Mapping[str, Any]) -> None:
        """Replace a node's tables from :meth:`data`'s form (unreadable parts are skipped)."""
        ports = data.get("ports") if isinstance(data.get("ports"), dict) else {}
        workloads = data.get("workloads") if isinstance(data.get("workloads"), dict) else {}
        assert isinstance(ports, dict) and isinstance(workloads, dict)
        self.set(str(data.get("node", "")), {int(k): str(v) for k, v in ports.items() if str(k).isdigit()},
                 {str(k): str(v) for k, v in workloads.items()})

    def listener(self, node: str, local_address: str) -> str:
        """The listener owning the proxy address ``ip:port`` of ``node``, or ``""``."""
        port = local_address.rpartition(":")[2]
        with self._lock:
            ports = self._ports.get(node)
        return ports.get(int(port), "") if ports is not None and port.isdigit() else ""

    def workload(self, node: str, address: str) -> str:
        """``ns/name`` of ``node``'s endpoint at ``ip:port``, or ``""``."""
        with self._lock:
            workloads = self._workloads.get(node)
        return workloads.get(address, "") if workloads is not None else ""


def _record(kind: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


class FlowJournal:
    """Appends raw ALS batches to a binary file with one write each, rotating it to
    ``<file>.1`` beyond ``max_bytes``; read it back with :class:`FlowJournalReader`.

    ``names`` are the tables entries are resolved with when read; :meth:`names_changed`
    records a node's new tables (call it whenever a node's plan changes).
    """

    def __init__(self, path: Path, names: NamesTable, max_bytes: int = JOURNAL_MAX_BYTES,
                 on_error: Callable[[OSError], None] | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._names = names
        self._on_error = on_error
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._size = 0
        self._ino = 0

    def names_changed(self, node: str) -> None:
        """Record ``node``'s current tables (entries written from now on resolve with them)."""
        self._write(_record(_NAMES_KIND, json.dumps(self._names.data(node), separators=(",", ":")).encode()))

    def write_batch(self, node: str, raw: bytes) -> None:
        """Append one serialized ``StreamAccessLogsMessage`` of ``node`` (thread-safe; errors are not raised)."""
        encoded = node.encode()
        self._write(_HEADER.pack(_BATCH_KIND, _NODE_LEN.size + len(encoded) + len(raw))
                    + _NODE_LEN.pack(len(encoded)) + encoded + raw)

    def _head(self) -> bytes:
        return JOURNAL_MAGIC + b"".join(
            _record(_NAMES_KIND, json.dumps(self._names.data(n), separators=(",", ":")).encode())
            for n in self._names.nodes())

    def _open(self) -> BinaryIO:
        f = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open between batches
        st = os.fstat(f.fileno())
        self._size, self._ino = st.st_size, st.st_ino
        if self._size == 0:
            head = self._head()
            f.write(head)
            self._size = len(head)
        return f

    def _write(self, data: bytes) -> None:
        with self._lock:
            try:
                f = self._file
                if f is not None:
                    try:
                        gone = os.stat(self.path).st_ino != self._ino
                    except FileNotFoundError:
                        gone = True
                    if gone:  # removed or replaced by someone else: start a new file
                        f.close()
                        f = self._file = None
                if f is not None and self._size + len(data) > self.max_bytes:
                    f.close()
                    self._file = None
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                    f = None
                if f is None:
                    f = self._file = self._open()
                f.write(data)
                self._size += len(data)
            except OSError as exc:
                if self._file is not None:
                    with contextlib.suppress(OSError):
                        self._file.close()
                    self._file = None
                if self._on_error is not None:
                    self._on_error(exc)

    def close(self) -> None:
        """Close the file (a later batch opens it again)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class FlowJournalReader:
    """Flows from a :class:`FlowJournal`'s file, oldest first, decoded as they are read.

    :meth:`read` gives every flow now in ``<file>.1`` and the file; :meth:`poll` gives the
    flows appended since the previous call (following rotations), for a live view — its
    first call gives those already in the file with ``from_start``, none without.
    Flows are plain objects as :func:`entry_data` makes them (``kind: l7``).
    """

    def __init__(self, path: Path, from_start: bool = False) -> None:
        self.path = Path(path)
        self.from_start = from_start
        self._names = NamesTable()
        self._file: BinaryIO | None = None
        self._ino = 0
        self._pending = b""

    def read(self) -> Iterator[dict[str, Any]]:
        """Every flow in the rotated file and the current one."""
        for candidate in (self.path.with_name(self.path.name + ".1"), self.path):
            try:
                data = candidate.read_bytes()
            except FileNotFoundError:
                continue
            yield from self._records(data, final=True)[0]

    def _records(self, data: bytes, final: bool) -> tuple[list[dict[str, Any]], bytes]:
        """Flows of the complete records in ``data``, and the incomplete tail."""
        out: list[dict[str, Any]] = []
        if data.startswith(JOURNAL_MAGIC):
            data = data[len(JOURNAL_MAGIC):]
        at, size = 0, len(data)
        while at + _HEADER.size <= size:
            kind, length = _HEADER.unpack_from(data, at)
            end = at + _HEADER.size + length
            if end > size:
                break
            payload = data[at + _HEADER.size:end]
            at = end
            try:
                if kind == _NAMES_KIND:
                    names = json.loads(payload)
                    if isinstance(names, dict):
                        self._names.load(names)
                elif kind == _BATCH_KIND:
                    (n,) = _NODE_LEN.unpack_from(payload)
                    node = payload[_NODE_LEN.size:_NODE_LEN.size + n].decode(errors="replace")
                    out.extend(decode_batch(payload[_NODE_LEN.size + n:], node, self._names))
            except Exception:  # a damaged record: skip it, keep reading
                continue
        return out, (b"" if final else data[at:])

    def poll(self) -> list[dict[str, Any]]:
        """The flows appended since the last call (the first call starts at the current end)."""
        out: list[dict[str, Any]] = []
        first = self._ino == 0
        while True:
            if self._file is None:
                try:
                    self._file = open(self.path, "rb")  # noqa: SIM115 - kept open between polls
                except FileNotFoundError:
                    self._ino = -1
                    return out
                st = os.fstat(self._file.fileno())
                self._ino = st.st_ino
                self._pending = b""
                if first and not self.from_start:
                    # A live view starts now, but needs the names written so far.
                    _, self._pending = self._records(self._file.read(), final=False)
                    return out
            chunk = self._file.read()
            if chunk:
                flows, self._pending = self._records(self._pending + chunk, final=False)
                out.extend(flows)
            try:
                replaced = os.stat(self.path).st_ino != self._ino
            except FileNotFoundError:
                replaced = True
            if not replaced:
                return out
            # Rotated: finish the old file (the writer may have appended just before), then the new one.
            flows, _ = self._records(self._pending + self._file.read(), final=False)
            out.extend(flows)
            self._file.close()
            self._file = None
            if not os.path.exists(self.path):
                return out

    def follow(self, stop_after: float | None = None, interval: float = 0.2) -> Iterator[dict[str, Any]]:
        """Flows as they are appended from now on (until ``stop_after`` seconds, if given)."""
        started = time.monotonic()
        self.poll()
        while stop_after is None or time.monotonic() - started < stop_after:
            yield from self.poll()
            time.sleep(interval)

    def close(self) -> None:
        """Close the file a live view keeps open."""
        if self._file is not None:
            self._file.close()
            self._file = None


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
