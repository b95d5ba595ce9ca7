"""Map ``lb_services``: frontend (VIP, port, protocol) → service entry.

Mirrors ``struct lb_service_key`` / ``struct lb_service_value`` in bpf/sock_lb.h.
"""

from __future__ import annotations

import ctypes
import socket

from ._base import MapSpec, get_addr, set_addr

__all__ = ["FLAG_PROXY", "PROTOCOLS", "SPEC", "ServiceKey", "ServiceValue"]

FLAG_PROXY = 0x1  # LB_SVC_F_PROXY: hand new connections to the node proxy
PROTOCOLS = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP}
_PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}


class ServiceKey(ctypes.Structure):
    """Mirror of ``struct lb_service_key``."""

    _fields_ = [
        ("addr", ctypes.c_uint32 * 4),
        ("port", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]

    @classmethod
    def of(cls, vip: str, port: int, protocol: str) -> ServiceKey:
        """The key for a frontend."""
        key = cls()
        set_addr(key.addr, vip)
        key.port = socket.htons(port)
        key.proto = PROTOCOLS[protocol]
        return key

    def frontend(self) -> tuple[str, int, str]:
        """(vip, port, protocol) this key stands for."""
        vip, _ = get_addr(self.addr)
        proto = _PROTOCOL_NAMES.get(self.proto, str(self.proto))
        return vip, socket.ntohs(self.port), proto


class ServiceValue(ctypes.Structure):
    """Mirror of ``struct lb_service_value``."""

    _fields_ = [
        ("id", ctypes.c_uint32),
        ("slot_count", ctypes.c_uint32),
        ("backend_count", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("proxy_port", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    ]


SPEC = MapSpec("lb_services", ServiceKey, ServiceValue)
