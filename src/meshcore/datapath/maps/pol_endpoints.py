"""Map ``pol_endpoints``: host-side interface index → the endpoint (identity, flags, addresses).

Mirrors ``struct pol_endpoint_value`` in bpf/policy.h; the key is a ``__u32`` ifindex.
"""

from __future__ import annotations

import ctypes
import ipaddress

from ._base import MapSpec, set_addr

__all__ = ["FLAG_EGRESS_DENY", "FLAG_HAS_V4", "FLAG_HAS_V6", "FLAG_INGRESS_DENY", "SPEC", "EndpointKey", "EndpointValue"]

FLAG_INGRESS_DENY = 0x1
FLAG_EGRESS_DENY = 0x2
FLAG_HAS_V4 = 0x4
FLAG_HAS_V6 = 0x8

EndpointKey = ctypes.c_uint32


class EndpointValue(ctypes.Structure):
    """Mirror of ``struct pol_endpoint_value``."""

    _fields_ = [
        ("identity", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("addr4", ctypes.c_uint32 * 4),
        ("addr6", ctypes.c_uint32 * 4),
    ]

    @classmethod
    def of(cls, identity: int, addresses: tuple[str, ...], ingress_deny: bool, egress_deny: bool) -> EndpointValue:
        """The value for an endpoint; only its first address of each family is its own."""
        value = cls(identity=identity)
        flags = (FLAG_INGRESS_DENY if ingress_deny else 0) | (FLAG_EGRESS_DENY if egress_deny else 0)
        for address in addresses:
            if ipaddress.ip_address(address).version == 4 and not flags & FLAG_HAS_V4:
                set_addr(value.addr4, address)
                flags |= FLAG_HAS_V4
            elif ipaddress.ip_address(address).version == 6 and not flags & FLAG_HAS_V6:
                set_addr(value.addr6, address)
                flags |= FLAG_HAS_V6
        value.flags = flags
        return value


SPEC = MapSpec("pol_endpoints", EndpointKey, EndpointValue)
