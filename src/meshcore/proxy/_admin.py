"""Talking to an Envoy admin endpoint on the loopback of another network namespace.

A socket belongs to the network namespace it was created in
(:func:`meshcore.linux.socket_in_netns` creates it there); it then works from any thread.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from typing import Any

from .. import linux
from ..linux import socket_in_netns

__all__ = ["NETNS_DIR", "AdminClient", "socket_in_netns"]

NETNS_DIR = str(linux.NETNS_RUN)


class _Connection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, netns: str | None, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._netns = netns

    def connect(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket_in_netns(self._netns, family)
        sock.settimeout(self.timeout)
        try:
            sock.connect((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class AdminClient:
    """HTTP requests to an Envoy admin endpoint (``host:port``) in a network namespace."""

    def __init__(self, address: str, netns: str | None = None) -> None:
        host, _, port = address.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.netns = netns

    def request(self, method: str, path: str, timeout: float = 2.0) -> tuple[int, str]:
        """``(status, body)``; raises ``OSError`` when the endpoint does not answer."""
        conn = _Connection(self.host, self.port, self.netns, timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        except http.client.HTTPException as exc:
            raise OSError(f"admin {method} {path}: {exc}") from None
        finally:
            conn.close()

    def ready(self) -> bool:
        """True when Envoy reports LIVE (initial configuration received, listeners up)."""
        try:
            status, _ = self.request("GET", "/ready", timeout=1.0)
        except OSError:
            return False
        return status == 200

    def stats(self, filter_regex: str) -> dict[str, int]:
        """Counter and gauge values whose names match ``filter_regex``."""
        status, body = self.request("GET", f"/stats?format=json&filter={urllib.parse.quote(filter_regex)}")
        if status != 200:
            raise OSError(f"admin /stats answered {status}")
        data: dict[str, Any] = json.loads(body)
        return {s["name"]: int(s["value"]) for s in data.get("stats", []) if "value" in s}

    def active_downstream_connections(self) -> int:
        """Open client connections on the proxy's listeners (not counting the admin's)."""
        stats = self.stats(r"^listener\..*\.downstream_cx_active$")
        return sum(v for k, v in stats.items() if not k.startswith("listener.admin."))
