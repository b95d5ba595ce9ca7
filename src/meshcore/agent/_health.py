"""The agent's HTTP endpoint: its Prometheus metrics, and whether it is alive and ready."""

from __future__ import annotations

import socket
import threading
import wsgiref.simple_server
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from ..observe import parse_address

__all__ = ["AgentEndpoint", "Readiness"]

#: Whether the agent is ready, and a line saying why (or why not).
Readiness = Callable[[], tuple[bool, str]]

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - probes every few seconds are not news
        pass


class _Server4(ThreadingWSGIServer):
    address_family = socket.AF_INET


class _Server6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class AgentEndpoint:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` on one address, from daemon threads.

    ``/healthz`` answers 200 while the agent's process serves at all (liveness);
    ``/readyz`` answers 200 once ``ready()`` says the agent enforces a configuration, and
    503 with the reason until then (a readiness probe); ``/metrics`` is the agent's
    Prometheus registry. Everything else is 404.
    """

    def __init__(self, registry: CollectorRegistry, ready: Readiness) -> None:
        self.ready = ready
        self._metrics = make_wsgi_app(registry)
        self._server: wsgiref.simple_server.WSGIServer | None = None
        self._thread: threading.Thread | None = None
        #: Where it listens once serving (HOST, PORT).
        self.address: tuple[str, int] | None = None

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI application."""
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return self._metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok")
        if path == "/readyz":
            ok, why = self.ready()
            return _text(start_response, "200 OK" if ok else "503 Service Unavailable", why)
        return _text(start_response, "404 Not Found", "not found: /metrics, /healthz and /readyz are served here")

    def serve(self, address: str) -> tuple[str, int]:
        """Listen on ``address`` (HOST:PORT); returns where it listens."""
        host, port = parse_address(address)
        server_class = _Server6 if ":" in host else _Server4
        self._server = wsgiref.simple_server.make_server(host, port, self.app, server_class, _QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="agent-endpoint", daemon=True)
        self._thread.start()
        bound: tuple[str, int] = self._server.server_address[:2]  # type: ignore[assignment]
        self.address = bound
        return bound

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _text(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    body = (text + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
