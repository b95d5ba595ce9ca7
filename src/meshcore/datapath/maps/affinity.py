"""Map ``lb_affinity`` (LRU): (socket cookie, service id) → backend id for unconnected UDP.

Keeps one UDP socket's datagrams to a service on one backend, including after that backend
starts terminating. Mirrors ``struct lb_affinity_key`` in bpf/sock_lb.h.
"""

from __future__ import annotations

import ctypes

from ._base import MapSpec

__all__ = ["SPEC", "AffinityKey", "AffinityValue"]

AffinityValue = ctypes.c_uint32


class AffinityKey(ctypes.Structure):
    """Mirror of ``struct lb_affinity_key``."""

    _fields_ = [("cookie", ctypes.c_uint64), ("service_id", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


SPEC = MapSpec("lb_affinity", AffinityKey, AffinityValue)
