"""Map ``pol_ipcache`` (LPM trie): address prefix → numeric identity.

Mirrors ``struct pol_ipcache_key`` / ``struct pol_ipcache_value`` in bpf/policy.h. IPv4
prefixes are stored v4-mapped, so their prefix length is 96 + the IPv4 length.
"""

from __future__ import annotations

import ctypes
import ipaddress

from ._base import MapSpec, pack_addr, unpack_addr

__all__ = ["SPEC", "IpcacheKey", "IpcacheValue"]


class IpcacheKey(ctypes.Structure):
    """Mirror of ``struct pol_ipcache_key``."""

    _fields_ = [("prefixlen", ctypes.c_uint32), ("addr", ctypes.c_uint32 * 4)]

    @classmethod
    def of(cls, prefix: str) -> IpcacheKey:
        """The key for a prefix such as ``10.0.0.0/8`` or ``fd00::1/128``."""
        net = ipaddress.ip_network(prefix, strict=False)
        key = cls()
        key.prefixlen = net.prefixlen + (96 if net.version == 4 else 0)
        ctypes.memmove(key.addr, pack_addr(str(net.network_address)), 16)
        return key

    def prefix(self) -> str:
        """The prefix this key stands for."""
        address, family = unpack_addr(bytes(self.addr))
        length = self.prefixlen - 96 if family == 4 else self.prefixlen
        return str(ipaddress.ip_network(f"{address}/{length}"))


class IpcacheValue(ctypes.Structure):
    """Mirror of ``struct pol_ipcache_value``."""

    _fields_ = [("identity", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


SPEC = MapSpec("pol_ipcache", IpcacheKey, IpcacheValue)
