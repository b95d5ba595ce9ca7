"""The lab's echo server: HTTP requests answered with JSON, raw TCP and UDP echoed.

Run as ``python -m meshcore.lab.echo --http 8080 --tcp 9000 --udp 9001`` (each option
may repeat). Sockets are dual-stack (IPv6 with IPv4-mapped addresses) where the kernel
allows it. It needs only the standard library, so pods start it with ``python -S``.

HTTP (HTTP/1.1 with keep-alive, ``http.server``): any request gets ``200`` and a JSON body
with ``pod``, ``namespace``, ``method``, ``path`` (the request target, query included),
``host``, ``headers`` (name → list of values), ``proto`` and ``remote``. For tests of
failure handling a request may ask for:

- another status: header ``x-echo-status: 503`` or query ``echo_status=503``;
- a delay before the answer: header ``x-echo-delay-ms: 250`` or query ``echo_delay_ms=250``;
- response headers: ``x-echo-set-header: Name: value, Other: value``.

TCP and UDP: bytes are echoed as received, except a payload of exactly ``whoami``
(optionally newline-terminated), answered with a JSON line naming the pod, so a client
can tell which backend answered.

The pod and namespace come from ``--pod``/``--namespace`` or the environment
(``POD_NAME``; ``POD_NAMESPACE`` or ``NAMESPACE``).
"""

from __future__ import annotations

import argparse
import http
import http.server
import json
import os
import queue
import signal
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

MAX_BODY_BYTES = 16 * 1024 * 1024
#: The longest chunk-size or trailer line of a chunked request body.
_MAX_LINE = 64 * 1024


class Identity:
    """Who this server is, as reported in every answer."""

    def __init__(self, pod: str, namespace: str) -> None:
        self.pod = pod
        self.namespace = namespace
        self.service = os.environ.get("SERVICE_NAME", "")

    def whoami(self, protocol: str) -> bytes:
        """The JSON line answering a ``whoami`` payload."""
        data = {"pod": self.pod, "namespace": self.namespace, "protocol": protocol}
        return (json.dumps(data) + "\n").encode()


def canonical(name: str) -> str:
    """``x-echo-status`` → ``X-Echo-Status`` (the form Go's net/http reports)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None


def _is_whoami(data: bytes) -> bool:
    return data.rstrip(b"\r\n") == b"whoami"


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Status"


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Serving:
    """What the echo servers add to socketserver's: whom to report as, and no noise about clients."""

    identity: Identity

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that resets or goes away is not an error of the server; anything else is printed."""
        if not isinstance(sys.exc_info()[1], OSError):
            import traceback  # only ever needed here

            traceback.print_exc()


class _ThreadsReused(socketserver.ThreadingMixIn):
    """Each connection is served by a thread of its own, reusing the threads of connections that ended.

    Starting a thread costs more than answering a request (a few hundred microseconds on a
    small VM), so a client opening one connection per request would otherwise wait mostly
    for thread starts.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._idle = 0
        self._handoff: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the connection to an idle thread, or to a new one when none is idle."""
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._handoff.put((request, client_address))
                return
        threading.Thread(target=self._serve_connections, args=(request, client_address), daemon=True).start()

    def _serve_connections(self, request: Any, client_address: Any) -> None:
        while True:
            self.process_request_thread(request, client_address)
            with self._lock:
                self._idle += 1
            request, client_address = self._handoff.get()


class _HttpServer(_Serving, _ThreadsReused, http.server.HTTPServer):
    pass


class _TcpServer(_Serving, _ThreadsReused, socketserver.TCPServer):
    pass


class _UdpServer(_Serving, socketserver.UDPServer):
    pass


class EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request, whatever its method, with the JSON description of it.

    ``http.server`` reads the request line and headers, keeps the connection alive as
    HTTP/1.1 says and answers ``Expect: 100-continue``; the body is read (and dropped)
    here, and each answer goes out in one write.
    """

    protocol_version = "HTTP/1.1"
    server: _HttpServer
    raw_requestline: bytes

    def __getattr__(self, name: str) -> Callable[[], None]:
        # http.server dispatches a request to do_<METHOD>: every method gets the same answer.
        if name.startswith("do_"):
            return self._answer
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:
        """Requests are not logged (the proxies in front of the pods log them)."""

    def parse_request(self) -> bool:
        """Only HTTP/1.x request lines (``http.server`` would take HTTP/0.9 and HTTP/2 ones too)."""
        words = self.raw_requestline.rstrip(b"\r\n").split(b" ")
        if len(words) != 3 or not words[2].startswith(b"HTTP/1."):
            line = self.raw_requestline[:100].decode("latin-1").rstrip("\r\n")
            self.send_error(400, f"bad request line {line!r}")
            return False
        return super().parse_request()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors are answered in JSON too, and end the connection."""
        self.close_connection = True
        self._send(code, {"error": message or _reason(code)}, {}, head_only=False)

    def _skip_body(self, fields: dict[str, str]) -> None:
        """Read the request body (so the next request on the connection starts in the right place)."""
        if "chunked" in fields.get("transfer-encoding", "").lower():
            self._skip_chunked()
            return
        try:
            length = int(fields.get("content-length") or "0")
        except ValueError:
            raise _BadRequest(400, "bad Content-Length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise _BadRequest(413, "body too large")
        while length > 0:
            got = len(self.rfile.read(min(length, 1 << 16)))
            if not got:
                raise _BadRequest(400, "body shorter than its Content-Length")
            length -= got

    def _skip_chunked(self) -> None:
        total = 0
        while True:
            try:
                size = int(self.rfile.readline(_MAX_LINE).split(b";")[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, "bad chunk size") from None
            if size == 0:
                break
            total += size
            if total > MAX_BODY_BYTES:
                raise _BadRequest(413, "body too large")
            self.rfile.read(size + 2)  # the chunk and its CRLF
        while self.rfile.readline(_MAX_LINE).strip():
            pass  # trailer fields, up to the empty line

    def _answer(self) -> None:
        headers: dict[str, list[str]] = {}
        fields: dict[str, str] = {}  # lower-case name → first value
        for name, value in self.headers.items():
            value = value.strip()
            headers.setdefault(canonical(name), []).append(value)
            fields.setdefault(name.lower(), value)
        try:
            self._skip_body(fields)
        except _BadRequest as exc:
            self.send_error(exc.status, str(exc))
            return
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query) if "?" in self.path else {}
        status_text = fields.get("x-echo-status") or _first(query.get("echo_status"))
        delay_text = fields.get("x-echo-delay-ms") or _first(query.get("echo_delay_ms"))
        status = 200
        extra: dict[str, str] = {}
        if status_text is not None:
            try:
                status = int(status_text)
                if not 100 <= status <= 599:
                    raise ValueError
            except ValueError:
                status = 400
                extra["X-Echo-Error"] = f"echo status {status_text!r} is not 100..599"
        delay = 0.0
        if delay_text is not None:
            try:
                delay = max(0.0, min(float(delay_text), 600_000.0)) / 1000.0
            except ValueError:
                pass
        for item in fields.get("x-echo-set-header", "").split(","):
            name, sep, value = item.partition(":")
            if sep and name.strip():
                extra[name.strip()] = value.strip()
        identity = self.server.identity
        host = str(self.client_address[0])
        body: dict[str, object] = {
            "path": self.path,
            "host": fields.get("host", ""),
            "method": self.command,
            "proto": self.request_version,
            "headers": headers,
            "namespace": identity.namespace,
            "ingress": "",
            "service": identity.service,
            "pod": identity.pod,
            "remote": f"{host.removeprefix('::ffff:') if '.' in host else host}:{self.client_address[1]}",
        }
        if delay > 0:
            time.sleep(delay)
        self._send(status, body, extra, head_only=self.command == "HEAD")

    def _send(self, status: int, body: dict[str, object], extra: dict[str, str], *, head_only: bool) -> None:
        payload = b"" if status in (204, 304) or 100 <= status < 200 else json.dumps(body).encode()
        lines = [
            f"HTTP/1.1 {status} {_reason(status)}",
            "Content-Type: application/json",
            "X-Content-Type-Options: nosniff",
            f"Content-Length: {len(payload)}",
        ]
        lines += [f"{name}: {value}" for name, value in extra.items()]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if head_only else head + payload)


class TcpEchoHandler(socketserver.BaseRequestHandler):
    """Echo every byte back; a ``whoami`` payload gets the pod's identity."""

    server: _TcpServer

    def handle(self) -> None:
        """Echo until the client closes."""
        sock: socket.socket = self.request
        while data := sock.recv(1 << 16):
            sock.sendall(self.server.identity.whoami("tcp") if _is_whoami(data) else data)


class UdpEchoHandler(socketserver.BaseRequestHandler):
    """Send every datagram back to its sender; a ``whoami`` datagram gets the pod's identity."""

    server: _UdpServer

    def handle(self) -> None:
        """Answer one datagram."""
        data, sock = self.request
        sock.sendto(self.server.identity.whoami("udp") if _is_whoami(data) else data, self.client_address)


def bind_socket(port: int, kind: int, host: str | None = None) -> socket.socket:
    """A socket bound to ``port`` on all addresses, dual-stack when IPv6 is available."""
    families = [socket.AF_INET6, socket.AF_INET] if host is None or ":" in host else [socket.AF_INET]
    error: OSError | None = None
    for family in families:
        sock = socket.socket(family, kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
            if kind == socket.SOCK_STREAM:
                sock.listen(4096)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    assert error is not None
    raise error


class EchoServers:
    """The HTTP, TCP and UDP servers of one echo process, each served by a thread of its own."""

    def __init__(self, identity: Identity, http_ports: Sequence[int], tcp_ports: Sequence[int],
                 udp_ports: Sequence[int], host: str | None = None) -> None:
        self.servers: list[_HttpServer | _TcpServer | _UdpServer] = []
        try:
            for port in http_ports:
                self._add(_HttpServer, EchoHandler, identity, bind_socket(port, socket.SOCK_STREAM, host))
            for port in tcp_ports:
                self._add(_TcpServer, TcpEchoHandler, identity, bind_socket(port, socket.SOCK_STREAM, host))
            for port in udp_ports:
                self._add(_UdpServer, UdpEchoHandler, identity, bind_socket(port, socket.SOCK_DGRAM, host))
        except OSError:
            self.close()
            raise
        described = ", ".join([f"http {p}" for p in http_ports] + [f"tcp {p}" for p in tcp_ports]
                              + [f"udp {p}" for p in udp_ports])
        print(f"echo server for {identity.namespace}/{identity.pod} listening: {described or 'nothing'}",
              file=sys.stderr, flush=True)

    def _add(self, kind: type[_HttpServer | _TcpServer | _UdpServer], handler: type[socketserver.BaseRequestHandler],
             identity: Identity, sock: socket.socket) -> None:
        # The socket is bound here (dual-stack, with a fallback to IPv4), not by socketserver.
        server = kind(sock.getsockname()[:2], handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.identity = identity
        self.servers.append(server)
        threading.Thread(target=server.serve_forever, name=f"echo {sock.getsockname()[1]}", daemon=True).start()

    def close(self) -> None:
        """Stop serving and close the listening sockets (connections being served finish on their own)."""
        stoppers = [threading.Thread(target=server.shutdown) for server in self.servers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        for server in self.servers:
            server.server_close()


async def serve(identity: Identity, http_ports: Sequence[int], tcp_ports: Sequence[int], udp_ports: Sequence[int],
                stop: asyncio.Event, host: str | None = None) -> None:
    """Serve until ``stop`` is set (for callers running an event loop)."""
    servers = EchoServers(identity, http_ports, tcp_ports, udp_ports, host)
    try:
        await stop.wait()
    finally:
        servers.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m meshcore.lab.echo",
                                     description="HTTP/TCP/UDP echo server of the meshcore lab.")
    parser.add_argument("--http", type=int, action="append", default=[], metavar="PORT",
                        help="answer HTTP on PORT with JSON (repeatable)")
    parser.add_argument("--tcp", type=int, action="append", default=[], metavar="PORT",
                        help="echo raw TCP on PORT (repeatable)")
    parser.add_argument("--udp", type=int, action="append", default=[], metavar="PORT",
                        help="echo UDP datagrams on PORT (repeatable)")
    parser.add_argument("--pod", default=os.environ.get("POD_NAME", socket.gethostname()))
    parser.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE") or os.environ.get("NAMESPACE", ""))
    parser.add_argument("--bind", default=None, help="address to bind (default: all, dual-stack)")
    args = parser.parse_args(argv)
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    # Blocked before the server threads start (they inherit the mask), so only sigwait sees them.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        servers = EchoServers(Identity(args.pod, args.namespace), args.http, args.tcp, args.udp, args.bind)
    except OSError as exc:
        print(f"echo server: {exc}", file=sys.stderr)
        return 1
    signal.sigwait(stop_signals)
    servers.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
