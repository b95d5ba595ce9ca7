"""Map ``lb_rev_sock`` (array): the reverse translation of connected sockets, one slot per socket cookie.

Slot ``cookie % SLOTS`` holds what that socket really talks to and the VIP it asked for;
written by connect, read by getpeername and recvmsg (unconnected UDP sends use
``lb_rev_nat``). Mirrors ``struct lb_rev_sock_value`` in bpf/sock_lb.h; the key is a
``__u32`` slot.
"""

from __future__ import annotations

import ctypes

from ._base import MapSpec

__all__ = ["SLOTS", "SPEC", "RevSockSlot", "RevSockValue"]

#: ``LB_REV_SOCK_SLOTS`` in bpf/sock_lb.h.
SLOTS = 131072

RevSockSlot = ctypes.c_uint32


class RevSockValue(ctypes.Structure):
    """Mirror of ``struct lb_rev_sock_value``."""

    _fields_ = [
        ("cookie", ctypes.c_uint64),
        ("real", ctypes.c_uint32 * 4),
        ("real_port", ctypes.c_uint16),
        ("vip_port", ctypes.c_uint16),
        ("vip", ctypes.c_uint32 * 4),
        ("pad", ctypes.c_uint32),
    ]


SPEC = MapSpec("lb_rev_sock", RevSockSlot, RevSockValue)
