"""Map ``lb_slots``: (service id, slot index) → backend id.

A service with ``slot_count`` N uses slots 0..N-1; each active backend holds slots in
proportion to its weight, so a uniform random slot is a weighted backend choice.
Mirrors ``struct lb_slot_key`` in bpf/sock_lb.h; the value is a ``__u32`` backend id.
"""

from __future__ import annotations

import ctypes

from ._base import MapSpec

__all__ = ["SPEC", "SlotKey", "SlotValue"]

SlotValue = ctypes.c_uint32


class SlotKey(ctypes.Structure):
    """Mirror of ``struct lb_slot_key``."""

    _fields_ = [("service_id", ctypes.c_uint32), ("slot", ctypes.c_uint32)]


SPEC = MapSpec("lb_slots", SlotKey, SlotValue)
