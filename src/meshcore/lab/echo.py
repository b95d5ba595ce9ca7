"""The lab's echo server: HTTP requests answered with JSON, raw TCP and UDP echoed.

Run as ``python -m meshcore.lab.echo --http 8080 --tcp 9000 --udp 9001`` (each option
may repeat). Sockets are dual-stack (IPv6 with IPv4-mapped addresses) where the kernel
allows it.

HTTP: any request gets ``200`` and a JSON body with ``pod``, ``namespace``, ``method``,
``path`` (the request target, query included), ``host``, ``headers`` (name → list of
values), ``proto`` and ``remote``. For tests of failure handling a request may ask for:

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
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import typing
import urllib.parse
from collections.abc import Sequence

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
_REASONS = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved Permanently",
    302: "Found", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 408: "Request Timeout", 413: "Payload Too Large", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


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


class _Request:
    """A parsed HTTP/1.x request."""

    def __init__(self, method: str, target: str, version: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), None)

    @property
    def keep_alive(self) -> bool:
        connection = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


class _ParseError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes everything
        raise _ParseError(400, "undecodable request") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _ParseError(400, f"bad request line {lines[0][:100]!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _ParseError(400, f"bad header line {line[:100]!r}")
        headers.append((name, value.strip()))
    return parts[0], parts[1], parts[2], headers


def _dechunk(buffer: bytes, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``start``; None while incomplete."""
    body = bytearray()
    pos = start
    while True:
        end = buffer.find(b"\r\n", pos)
        if end < 0:
            return None
        try:
            size = int(buffer[pos:end].split(b";")[0].strip(), 16)
        except ValueError as exc:
            raise _ParseError(400, "bad chunk size") from exc
        pos = end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", pos - 2)
            if trailer_end < 0:
                return None
            return bytes(body), trailer_end + 4
        if len(buffer) < pos + size + 2:
            return None
        body += buffer[pos:pos + size]
        if len(body) > MAX_BODY_BYTES:
            raise _ParseError(413, "body too large")
        pos += size + 2


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; one request is answered at a time."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.closing = False
        self.continued = False
        self.remote = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            host = str(peer[0])
            self.remote = f"{host.removeprefix('::ffff:') if '.' in host else host}:{peer[1]}"

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._process()

    def _process(self) -> None:
        while not self.busy and not self.closing and self.transport is not None:
            try:
                request = self._parse()
            except _ParseError as exc:
                self._send(exc.status, {"error": str(exc)}, {}, head_only=False, keep_alive=False)
                return
            if request is None:
                return
            self._handle(request)

    def _parse(self) -> _Request | None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise _ParseError(431, "request head too large")
            return None
        method, target, version, headers = _parse_head(bytes(self.buffer[:end]))
        request = _Request(method, target, version, headers, b"")
        start = end + 4
        if "chunked" in (request.header("transfer-encoding") or "").lower():
            self._maybe_continue(request)
            decoded = _dechunk(bytes(self.buffer), start)
            if decoded is None:
                return None
            request.body, consumed = decoded
        else:
            try:
                length = int(request.header("content-length") or "0")
            except ValueError as exc:
                raise _ParseError(400, "bad Content-Length") from exc
            if length < 0 or length > MAX_BODY_BYTES:
                raise _ParseError(413, "body too large")
            if len(self.buffer) < start + length:
                self._maybe_continue(request)
                return None
            request.body = bytes(self.buffer[start:start + length])
            consumed = start + length
        del self.buffer[:consumed]
        self.continued = False
        return request

    def _maybe_continue(self, request: _Request) -> None:
        if not self.continued and (request.header("expect") or "").lower() == "100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.continued = True

    def _handle(self, request: _Request) -> None:
        url = urllib.parse.urlsplit(request.target)
        query = urllib.parse.parse_qs(url.query)
        status_text = request.header("x-echo-status") or _first(query.get("echo_status"))
        delay_text = request.header("x-echo-delay-ms") or _first(query.get("echo_delay_ms"))
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
            with contextlib.suppress(ValueError):
                delay = max(0.0, min(float(delay_text), 600_000.0)) / 1000.0
        for item in (request.header("x-echo-set-header") or "").split(","):
            name, sep, value = item.partition(":")
            if sep and name.strip():
                extra[name.strip()] = value.strip()
        headers: dict[str, list[str]] = {}
        for name, value in request.headers:
            headers.setdefault(canonical(name), []).append(value)
        body: dict[str, object] = {
            "path": request.target,
            "host": request.header("host") or "",
            "method": request.method,
            "proto": request.version,
            "headers": headers,
            "namespace": self.identity.namespace,
            "ingress": "",
            "service": self.identity.service,
            "pod": self.identity.pod,
            "remote": self.remote,
        }
        keep_alive = request.keep_alive
        head_only = request.method == "HEAD"
        if delay > 0:
            self.busy = True
            loop = asyncio.get_running_loop()
            loop.call_later(delay, self._finish_delayed, status, body, extra, head_only, keep_alive)
        else:
            self._send(status, body, extra, head_only=head_only, keep_alive=keep_alive)

    def _finish_delayed(self, status: int, body: dict[str, object], extra: dict[str, str], head_only: bool,
                        keep_alive: bool) -> None:
        self.busy = False
        self._send(status, body, extra, head_only=head_only, keep_alive=keep_alive)
        self._process()

    def _send(self, status: int, body: dict[str, object], extra: dict[str, str], *, head_only: bool,
              keep_alive: bool) -> None:
        if self.transport is None:
            return
        payload = b"" if status in (204, 304) or 100 <= status < 200 else json.dumps(body).encode()
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            "Content-Type: application/json",
            "X-Content-Type-Options: nosniff",
            f"Content-Length: {len(payload)}",
        ]
        lines += [f"{name}: {value}" for name, value in extra.items()]
        if not keep_alive:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.transport.write(data if head_only else data + payload)
        if not keep_alive:
            self.closing = True
            self.transport.close()


class TcpEchoProtocol(asyncio.Protocol):
    """Echo every byte back; a ``whoami`` payload gets the pod's identity."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(self.identity.whoami("tcp") if _is_whoami(data) else data)


class UdpEchoProtocol(asyncio.DatagramProtocol):
    """Send every datagram back to its sender; a ``whoami`` datagram gets the pod's identity."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not derive from DatagramTransport.
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.transport is not None:
            self.transport.sendto(self.identity.whoami("udp") if _is_whoami(data) else data, addr)


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
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    assert error is not None
    raise error


async def serve(identity: Identity, http: Sequence[int], tcp: Sequence[int], udp: Sequence[int],
                stop: asyncio.Event, host: str | None = None) -> None:
    """Serve until ``stop`` is set."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.base_events.Server] = []
    transports: list[asyncio.DatagramTransport] = []
    for port in http:
        servers.append(await loop.create_server(lambda: HttpProtocol(identity),
                                                sock=bind_socket(port, socket.SOCK_STREAM, host)))
    for port in tcp:
        servers.append(await loop.create_server(lambda: TcpEchoProtocol(identity),
                                                sock=bind_socket(port, socket.SOCK_STREAM, host)))
    for port in udp:
        endpoint, _proto = await loop.create_datagram_endpoint(lambda: UdpEchoProtocol(identity),
                                                               sock=bind_socket(port, socket.SOCK_DGRAM, host))
        transports.append(endpoint)
    described = ", ".join([f"http {p}" for p in http] + [f"tcp {p}" for p in tcp] + [f"udp {p}" for p in udp])
    print(f"echo server for {identity.namespace}/{identity.pod} listening: {described or 'nothing'}",
          file=sys.stderr, flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    for endpoint in transports:
        endpoint.close()


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
    identity = Identity(args.pod, args.namespace)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(identity, args.http, args.tcp, args.udp, stop, args.bind)

    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"echo server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
