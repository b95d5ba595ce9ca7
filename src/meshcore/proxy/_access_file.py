"""L7 flows through a file: Envoy's file access logger writes one compact line per request.

Envoy formats each request (or TCP connection) as a tab-separated line with only what a
:class:`~meshcore.observe.Flow` needs, buffers the lines and writes them from its own
flush thread — no message is built or serialized on the worker that served the request,
and nothing is sent. :class:`AccessLogFollower` reads the lines as Envoy appends them and
hands them on in chunks, undecoded; :func:`decode_lines` decodes a chunk when someone
reads it, with the same names as the gRPC access log's entries (:mod:`._als`).

Line layout (fields in this order; Envoy writes ``-`` for an empty value):

- ``H`` (an HTTP request): start (Unix seconds with microseconds), client ``ip:port``,
  proxy port, upstream host ``ip:port``, protocol, status, response flags (``UF,URX``),
  microseconds to the last byte sent to the client, duration in milliseconds (when the
  former is missing), body bytes received and sent, route, cluster, access-log hint
  (``true`` when an AUDIT policy matched), response code details, the client's address
  as forwarded, the verified client certificate's URI SAN and subject, the tunnel client
  recorded for the request (:data:`~._als.TUNNEL_CLIENT_STATE`), method, authority,
  path. The path is last: whatever it holds, the fields before it stay in place.
- ``T`` (a TCP connection): start, client, proxy port, upstream host, response flags,
  duration in milliseconds, bytes received and sent, cluster, connection termination
  details, the proxy's local address, the client certificate's URI SAN and subject, the
  tunnel client, and the destination of a connection the outbound tunnel listener refused
  on its client's egress policy (:data:`~._als.TUNNEL_REFUSED_STATE`).

Mutual TLS is read as from the gRPC access log: a verified client certificate, or an
upstream reached through a tunnel (a ``tunnel|`` cluster, or an internal endpoint
``envoy://<listener>/<ip:port> <server id>`` for a recorded tunnel client) that connected.

The upstream host is the one Envoy picked, also when it could not be reached (``UF``).
Envoy names the route's cluster even when no host was picked (a request refused by
policy, or a cluster without healthy endpoints); such a flow has no cluster, as in the
gRPC access log.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ..observe import Enforcer, Flow, L7Details, Layer, Peer
from ._als import (
    _NOBODY,
    _NOT_CONNECTED,
    NO_CHAIN_DETAILS,
    TUNNEL_CLIENT_STATE,
    TUNNEL_CLUSTER_PREFIX,
    TUNNEL_ENDPOINT_SEPARATOR,
    TUNNEL_REFUSED_STATE,
    TUNNEL_ROUTE_PREFIX,
    Resolver,
    _decision,
)

__all__ = ["CHUNK_BYTES", "HTTP_FORMAT", "TCP_FORMAT", "AccessLogFollower", "decode_lines"]

#: The most a chunk handed on by :class:`AccessLogFollower` holds (whole lines; a longer line is a chunk of its own).
CHUNK_BYTES = 256 * 1024

#: Envoy's format of an HTTP request's line (see the module docstring).
HTTP_FORMAT = "\t".join((
    "H", "%START_TIME(%s.%6f)%", "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%", "%DOWNSTREAM_LOCAL_PORT%",
    "%UPSTREAM_HOST%", "%PROTOCOL%", "%RESPONSE_CODE%", "%RESPONSE_FLAGS%",
    "%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%", "%DURATION%", "%BYTES_RECEIVED%", "%BYTES_SENT%",
    "%ROUTE_NAME%", "%UPSTREAM_CLUSTER_RAW%", "%DYNAMIC_METADATA(envoy.common:access_log_hint)%",
    "%RESPONSE_CODE_DETAILS%", "%DOWNSTREAM_REMOTE_ADDRESS%", "%DOWNSTREAM_PEER_URI_SAN%",
    "%DOWNSTREAM_PEER_SUBJECT%", f"%FILTER_STATE({TUNNEL_CLIENT_STATE}:PLAIN)%",
    "%REQ(:METHOD)%", "%REQ(:AUTHORITY)%", "%REQ(:PATH)%",
)) + "\n"
#: Envoy's format of a TCP connection's line.
TCP_FORMAT = "\t".join((
    "T", "%START_TIME(%s.%6f)%", "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%", "%DOWNSTREAM_LOCAL_PORT%",
    "%UPSTREAM_HOST%", "%RESPONSE_FLAGS%", "%DURATION%", "%BYTES_RECEIVED%", "%BYTES_SENT%",
    "%UPSTREAM_CLUSTER_RAW%", "%CONNECTION_TERMINATION_DETAILS%",
    "%DOWNSTREAM_LOCAL_ADDRESS%", "%DOWNSTREAM_PEER_URI_SAN%", "%DOWNSTREAM_PEER_SUBJECT%",
    f"%FILTER_STATE({TUNNEL_CLIENT_STATE}:PLAIN)%", f"%FILTER_STATE({TUNNEL_REFUSED_STATE}:PLAIN)%",
)) + "\n"
_HTTP_FIELDS = HTTP_FORMAT.count("\t") + 1
_TCP_FIELDS = TCP_FORMAT.count("\t") + 1


def _text(value: str) -> str:
    return "" if value == "-" else value


def _number(value: str) -> int:
    return int(value) if value.isdigit() else 0


#: How Envoy writes an internal address (an endpoint reached through a tunnel).
_INTERNAL = "envoy://"


def _upstream(text: str) -> tuple[str, str]:
    """The upstream host's ``ip:port`` and, for an internal endpoint, the server identity its ID names."""
    if not text.startswith(_INTERNAL):
        return text, ""
    endpoint_id = text[len(_INTERNAL):].partition("/")[2]
    destination, _, server = endpoint_id.partition(TUNNEL_ENDPOINT_SEPARATOR)
    return destination, server


def _mutual_tls(uri_san: str, subject: str, cluster: str, server: str, tunnel_client: str,
                flags: tuple[str, ...], answered: bool = True) -> tuple[bool, str]:
    """Whether the line's connection was mutually authenticated, and the peer's identity (see the module docstring)."""
    if _text(uri_san) or _text(subject):
        return True, _text(uri_san).partition(",")[0] or _text(subject)
    if cluster.startswith(TUNNEL_CLUSTER_PREFIX):
        server = cluster.split("|")[2] if cluster.count("|") >= 3 else ""
    elif not _text(tunnel_client):
        server = ""
    if server and answered and not _NOT_CONNECTED.intersection(flags):
        return True, server
    return False, ""


def _peer(text: str, node: str, resolver: Resolver | None) -> Peer:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return _NOBODY
    host = host.strip("[]")
    return resolver.peer(node, host, int(port)) if resolver is not None else Peer(host, int(port))


def _listener(port: str, node: str, resolver: Resolver | None) -> str:
    return resolver.listener(node, int(port)) if resolver is not None and port.isdigit() else ""


def _flags(text: str) -> tuple[str, ...]:
    return () if text == "-" else tuple(text.split(","))


def _cluster(cluster: str, upstream: str) -> str:
    return "" if upstream == "-" else _text(cluster)


def _http(fields: list[str], node: str, resolver: Resolver | None) -> Flow:
    (_, start, client, port, upstream, protocol, status, flags, tx_us, duration_ms, received, sent, route, cluster,
     hint, details, forwarded, uri_san, subject, tunnel_client, method, authority, path) = fields
    details = _text(details)
    verdict, reason, policy, policy_source = _decision(details, hint == "true", node, resolver)
    latency_ms = int(tx_us) / 1000 if tx_us.isdigit() else float(_number(duration_ms))
    upstream, server = _upstream(upstream)
    flag_codes = _flags(flags)
    mtls, principal = _mutual_tls(uri_san, subject, cluster, server, tunnel_client, flag_codes,
                                  answered=details.startswith("via_upstream"))
    tunnelled_in = route.startswith(TUNNEL_ROUTE_PREFIX)
    if upstream == "-" and tunnelled_in:
        # A tunnelled connection refused before delivery: its destination is the one it asked for.
        upstream = _text(authority)
    return Flow(
        time=datetime.fromtimestamp(float(start), UTC), node=node, layer=Layer.L7, verdict=verdict,
        enforcer=Enforcer.PROXY, source=_peer(forwarded if tunnelled_in else client, node, resolver),
        destination=_peer(upstream, node, resolver), protocol=_text(protocol) or "HTTP", reason=reason,
        policy=policy, policy_source=policy_source, mtls=mtls, peer_principal=principal,
        l7=L7Details(
            method=_text(method), path=_text(path), authority=_text(authority), status=_number(status),
            latency_ms=latency_ms, listener=_listener(port, node, resolver), route=_text(route),
            cluster=_cluster(cluster, upstream), flags=flag_codes, details=details, bytes_received=_number(received),
            bytes_sent=_number(sent),
        ),
    )


def _tcp(fields: list[str], node: str, resolver: Resolver | None) -> Flow:
    (_, start, client, port, upstream, flags, duration_ms, received, sent, cluster, details, local,
     uri_san, subject, tunnel_client, refused) = fields
    upstream, server = _upstream(upstream)
    flag_codes, cluster, details = _flags(flags), _cluster(cluster, upstream), _text(details)
    if not details and "NR" in flag_codes and not cluster:
        # No filter chain admitted the client (decided on accept): closed unforwarded.
        details = NO_CHAIN_DETAILS
    verdict, reason, policy, policy_source = _decision(details, False, node, resolver)
    mtls, principal = _mutual_tls(uri_san, subject, cluster, server, tunnel_client, flag_codes)
    listener = _listener(port, node, resolver)
    if cluster.startswith(TUNNEL_CLUSTER_PREFIX) or _text(refused):
        # The upstream is the server's node (or none: refused); the connection's destination is what the client dialled.
        upstream, listener = local, ""
    return Flow(
        time=datetime.fromtimestamp(float(start), UTC), node=node, layer=Layer.L7, verdict=verdict,
        enforcer=Enforcer.PROXY, source=_peer(client, node, resolver),
        destination=_peer(upstream, node, resolver), protocol="TCP", reason=reason, policy=policy,
        policy_source=policy_source, mtls=mtls, peer_principal=principal,
        l7=L7Details(latency_ms=float(_number(duration_ms)), listener=listener,
                     cluster=cluster, flags=flag_codes, details=details, bytes_received=_number(received),
                     bytes_sent=_number(sent)),
    )


def decode_lines(raw: bytes, node: str, resolver: Resolver | None = None) -> list[Flow]:
    """The flows of access-log lines of ``node``'s Envoy (:data:`HTTP_FORMAT`, :data:`TCP_FORMAT`).

    A line that is not one of them (damaged, or of another format) is skipped.
    """
    out: list[Flow] = []
    for line in raw.decode(errors="replace").split("\n"):
        try:
            if line.startswith("H\t"):
                out.append(_http(line.split("\t", _HTTP_FIELDS - 1), node, resolver))
            elif line.startswith("T\t"):
                out.append(_tcp(line.split("\t", _TCP_FIELDS - 1), node, resolver))
        except ValueError:  # too few fields, or a number that is none
            continue
    return out


class AccessLogFollower:
    """Reads the lines Envoy appends to ``path`` and hands them to ``deliver`` in chunks of whole lines
    (at most :data:`CHUNK_BYTES` each).

    :meth:`poll` reads what was appended since the previous call; :meth:`start` polls every
    ``interval`` seconds on a thread until :meth:`stop` (which reads what is left). The
    file is kept below about ``max_bytes``: beyond that it is renamed to ``<path>.old``
    and ``reopen`` asks Envoy to reopen its access logs (True when the request was
    taken); the renamed file is read to its end and deleted once Envoy writes to a new
    ``path``. A file removed or replaced by someone else is handled the same way.
    """

    def __init__(self, path: Path, deliver: Callable[[bytes], None], reopen: Callable[[], bool], *,
                 interval: float = 0.25, max_bytes: int = 8 * 1024 * 1024, reopen_retry_s: float = 5.0) -> None:
        self.path = Path(path)
        self.old_path = self.path.with_name(self.path.name + ".old")
        self._deliver = deliver
        self._reopen = reopen
        self.interval = interval
        self.max_bytes = max_bytes
        self._reopen_retry_s = reopen_retry_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd = -1
        self._ino = 0
        self._size = 0
        self._pending = b""
        self._old_fd = -1
        self._old_ino = 0
        self._old_pending = b""
        self._asked = 0.0
        #: Bytes of lines handed on so far.
        self.bytes = 0

    def start(self) -> AccessLogFollower:
        """Poll on a thread of its own."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"access-log {self.path.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, hand on what was written until now, and close the files."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        with self._lock:
            self._poll()
            for fd in (self._fd, self._old_fd):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._old_fd = -1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        """Hand on every whole line appended since the previous call."""
        with self._lock:
            self._poll()

    def _poll(self) -> None:
        if self._old_fd >= 0 and not self._finish_old():
            return  # Envoy still writes to the moved-aside file: its lines come first
        if self._fd < 0 and not self._open():
            return
        self._read_current()
        if self._size > self.max_bytes or self._replaced():
            self._rotate()

    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        self._fd, self._ino, self._size, self._pending = fd, os.fstat(fd).st_ino, 0, b""
        return True

    def _read_current(self) -> None:
        data = self._pending + _read_all(self._fd)
        end = data.rfind(b"\n") + 1
        self._size += len(data) - len(self._pending)
        self._pending = data[end:]
        self._hand_on(data[:end])

    def _hand_on(self, lines: bytes) -> None:
        # Chunks of at most CHUNK_BYTES (whole lines), so one record of whoever stores them stays small.
        at = 0
        while at < len(lines):
            end = len(lines) if len(lines) - at <= CHUNK_BYTES else lines.rfind(b"\n", at, at + CHUNK_BYTES) + 1
            if end <= at:  # one line longer than a chunk
                end = lines.index(b"\n", at) + 1
            self.bytes += end - at
            self._deliver(lines[at:end])
            at = end

    def _replaced(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self._ino
        except FileNotFoundError:
            return True

    def _rotate(self) -> None:
        """Move the current file aside and ask Envoy for a new one; the old one is read until Envoy left it."""
        if not self._replaced():
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path, self.old_path)
        self._old_fd, self._old_ino, self._old_pending = self._fd, self._ino, self._pending
        self._fd, self._pending = -1, b""
        self._ask_reopen()

    def _ask_reopen(self) -> None:
        self._asked = time.monotonic()
        try:
            self._reopen()
        except Exception:  # noqa: BLE001, S110 - retried; Envoy may be restarting
            pass

    def _finish_old(self) -> bool:
        """Read the moved-aside file; once Envoy writes to a new file, to its end, then delete it (True)."""
        switched = self.path.exists()  # looked at first: Envoy closes the old file before creating the new one
        data = self._old_pending + _read_all(self._old_fd)
        end = data.rfind(b"\n") + 1
        self._old_pending = data[end:]
        self._hand_on(data[:end])
        if not switched:
            if time.monotonic() - self._asked > self._reopen_retry_s:
                self._ask_reopen()
            return False
        os.close(self._old_fd)
        self._old_fd, self._old_pending = -1, b""
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.old_path).st_ino == self._old_ino:  # else someone else's file under that name
                os.unlink(self.old_path)
        return True


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
