"""Map ``pol_ct`` (LRU hash): connections an endpoint already allowed, one entry each, either end first.

Mirrors ``struct pol_ct_key`` / ``struct pol_ct_value`` in bpf/policy.h.
"""

from __future__ import annotations

import ctypes

from ._base import MapSpec

__all__ = ["SPEC", "CtKey", "CtValue"]


class CtKey(ctypes.Structure):
    """Mirror of ``struct pol_ct_key``."""

    _fields_ = [
        ("addr_lo", ctypes.c_uint32 * 4),
        ("addr_hi", ctypes.c_uint32 * 4),
        ("port_lo", ctypes.c_uint16),
        ("port_hi", ctypes.c_uint16),
        ("ifindex", ctypes.c_uint32),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


class CtValue(ctypes.Structure):
    """Mirror of ``struct pol_ct_value``."""

    _fields_ = [("created_ns", ctypes.c_uint64), ("policy_index", ctypes.c_uint32), ("direction", ctypes.c_uint8),
                ("pad", ctypes.c_uint8 * 3)]


SPEC = MapSpec("pol_ct", CtKey, CtValue)
