"""Map ``pol_ct`` (LRU hash): flows an endpoint already allowed, keyed by their first packet.

Mirrors ``struct pol_ct_key`` / ``struct pol_ct_value`` in bpf/policy.h.
"""

from __future__ import annotations

import ctypes

from ._base import MapSpec

__all__ = ["SPEC", "CtKey", "CtValue"]


class CtKey(ctypes.Structure):
    """Mirror of ``struct pol_ct_key``."""

    _fields_ = [
        ("saddr", ctypes.c_uint32 * 4),
        ("daddr", ctypes.c_uint32 * 4),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("ifindex", ctypes.c_uint32),
        ("proto", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
    ]


class CtValue(ctypes.Structure):
    """Mirror of ``struct pol_ct_value``."""

    _fields_ = [("created_ns", ctypes.c_uint64), ("policy_index", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


SPEC = MapSpec("pol_ct", CtKey, CtValue)
