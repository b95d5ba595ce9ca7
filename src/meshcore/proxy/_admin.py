"""Talking to an Envoy admin endpoint on the loopback of another network namespace.

A socket belongs to the network namespace it was created in, so a short-lived thread
enters the namespace (setns affects only the calling thread), creates the socket and
exits; the socket then works from any thread of this process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import http.client
import json
import os
import socket
import threading
import urllib.parse
from typing import Any

_CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def socket_in_netns(netns: str | None, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A new socket in network namespace ``netns`` (``ip netns`` name; ``None``: this one)."""
    if netns is None:
        return socket.socket(family, kind)
    result: list[socket.socket] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            errors.append(OSError(exc.errno, f"network namespace {netns!r}: {exc.strerror}"))
            return
        try:
            _setns(fd)
            result.append(socket.socket(family, kind))
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)
        finally:
            os.close(fd)

    thread = threading.Thread(target=run, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


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
