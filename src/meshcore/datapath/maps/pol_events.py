"""Ring buffer ``pol_events``: one ``struct pol_event`` per verdict on a new flow or drop.

A ring buffer has no key or value type; the mirror is checked against the BTF struct by
name (``EVENT_STRUCT``) instead.
"""

from __future__ import annotations

import ctypes

__all__ = ["EVENT_STRUCT", "MAP_NAME", "Event"]

MAP_NAME = "pol_events"
EVENT_STRUCT = "pol_event"


class Event(ctypes.Structure):
    """Mirror of ``struct pol_event``."""

    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("saddr", ctypes.c_uint32 * 4),
        ("daddr", ctypes.c_uint32 * 4),
        ("src_identity", ctypes.c_uint32),
        ("dst_identity", ctypes.c_uint32),
        ("policy_index", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("verdict", ctypes.c_uint8),
        ("reason", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
    ]
