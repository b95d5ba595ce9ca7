"""Map ``lb_backends``: backend id → address, port, family, state, owning service, weight.

Mirrors ``struct lb_backend_value`` in bpf/sock_lb.h; the key is a ``__u32`` backend id.
"""

from __future__ import annotations

import ctypes
import socket

from ._base import MapSpec, get_addr, set_addr

__all__ = ["SPEC", "STATE_ACTIVE", "STATE_TERMINATING", "BackendId", "BackendValue"]

STATE_ACTIVE = 0
STATE_TERMINATING = 1

BackendId = ctypes.c_uint32


class BackendValue(ctypes.Structure):
    """Mirror of ``struct lb_backend_value``."""

    _fields_ = [
        ("addr", ctypes.c_uint32 * 4),
        ("port", ctypes.c_uint16),
        ("family", ctypes.c_uint8),
        ("state", ctypes.c_uint8),
        ("service_id", ctypes.c_uint32),
        ("weight", ctypes.c_uint32),
    ]

    @classmethod
    def of(cls, address: str, port: int, service_id: int, weight: int, state: int) -> BackendValue:
        """The value for one backend of one service."""
        value = cls()
        set_addr(value.addr, address)
        value.port = socket.htons(port)
        value.family = get_addr(value.addr)[1]
        value.state = state
        value.service_id = service_id
        value.weight = weight
        return value

    def endpoint(self) -> tuple[str, int]:
        """(address, port) of the backend."""
        return get_addr(self.addr)[0], socket.ntohs(self.port)


SPEC = MapSpec("lb_backends", BackendId, BackendValue)
