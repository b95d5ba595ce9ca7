"""Stable node-proxy listener ports: a port follows its listener, not its position."""

from __future__ import annotations

import hashlib

#: The first node-proxy listener port: meshcore's own range sits above Istio's reserved
#: 15000-15100 and Consul's 19000-19999, and below Kubernetes NodePorts (30000-32767) and
#: the kernel's ephemeral ports (32768-60999 on Linux).
PROXY_PORT_BASE = 25000
#: How many ports from the base the allocator spreads listeners over ([25000, 30000)).
PROXY_PORT_RANGE = 5000


class PortAllocator:
    """Hands out ports in ``[base, base + size)`` by a hash of a stable key, probing upward.

    Sequential numbering would renumber every later listener when one is added, moving
    traffic between Envoy listeners on unrelated changes; a hashed port changes only for
    the (rare) keys that collide with a new one.
    """

    def __init__(self, base: int = PROXY_PORT_BASE, size: int = PROXY_PORT_RANGE) -> None:
        if not 1 <= base <= 65535 - size + 1:
            raise ValueError(f"proxy port base {base} leaves no room for {size} ports below 65536")
        self.base = base
        self.size = size
        self._used: set[int] = set()

    def copy(self) -> PortAllocator:
        """An allocator with the same ports taken, taking further ports on its own."""
        other = PortAllocator(self.base, self.size)
        other._used = set(self._used)
        return other

    def take(self, key: str) -> int:
        """The port for ``key`` (the same key always asks for the same slot first)."""
        if len(self._used) >= self.size:
            raise ValueError(f"more than {self.size} node-proxy listeners")
        slot = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % self.size
        while self.base + slot in self._used:
            slot = (slot + 1) % self.size
        port = self.base + slot
        self._used.add(port)
        return port
