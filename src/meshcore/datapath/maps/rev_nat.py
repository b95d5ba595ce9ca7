"""Map ``lb_rev_nat`` (LRU): (socket cookie, real address, port) → the VIP the socket asked for.

Written by unconnected UDP sendmsg (connected sockets use ``lb_rev_sock``), read by
getpeername and UDP recvmsg. Mirrors
``struct lb_rev_nat_key`` / ``struct lb_rev_nat_value`` in bpf/sock_lb.h.
"""

from __future__ import annotations

import ctypes

from ._base import MapSpec

__all__ = ["SPEC", "RevNatKey", "RevNatValue"]


class RevNatKey(ctypes.Structure):
    """Mirror of ``struct lb_rev_nat_key``."""

    _fields_ = [
        ("cookie", ctypes.c_uint64),
        ("addr", ctypes.c_uint32 * 4),
        ("port", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
        ("pad2", ctypes.c_uint32),
    ]


class RevNatValue(ctypes.Structure):
    """Mirror of ``struct lb_rev_nat_value``."""

    _fields_ = [
        ("addr", ctypes.c_uint32 * 4),
        ("port", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    ]


SPEC = MapSpec("lb_rev_nat", RevNatKey, RevNatValue)
