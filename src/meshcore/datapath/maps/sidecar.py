"""The maps of ``sidecar.bpf.o``; mirrors of the structs in bpf/sidecar.h.

The destination key and the original destination are bpf/lib/steer.h's, mirrored in ``_steer``.

``sc_pods``: a pod's network namespace cookie → its sidecar's cgroup, whether steering is
on and the outbound listener's port; ``sc_cookies`` / ``sc_origs``: the original
destination of steered connections, by socket cookie and then by the client's namespace,
address and port; ``sc_steer``: destinations the sidecars tunnel themselves;
``sc_inbound``: pod addresses whose inbound TCP goes to their sidecar's listener (whose
socket ``sc_listeners`` holds).
"""

from __future__ import annotations

import ctypes

from ._base import MapSpec
from ._steer import SteerDestKey, SteerOrig

__all__ = ["SC_F_CAPTURE", "SC_IN_CAPTURE", "SIDECAR_SPECS", "ScAddrKey", "ScInbound", "ScPeerKey", "ScPod", "INBOUND",
           "LISTENERS", "ORIGS", "PODS", "STEER"]

SC_F_CAPTURE = 0x1
SC_IN_CAPTURE = 0x1


class ScPod(ctypes.Structure):
    """Mirror of ``struct sc_pod``."""

    _fields_ = [("sidecar_cgroup", ctypes.c_uint64), ("flags", ctypes.c_uint32), ("outbound_port", ctypes.c_uint16),
                ("pad", ctypes.c_uint16)]


class ScPeerKey(ctypes.Structure):
    """Mirror of ``struct sc_peer_key``."""

    _fields_ = [("netns", ctypes.c_uint64), ("addr", ctypes.c_uint32 * 4), ("port", ctypes.c_uint16),
                ("pad", ctypes.c_uint16), ("pad2", ctypes.c_uint32)]


class ScAddrKey(ctypes.Structure):
    """Mirror of ``struct sc_addr_key``."""

    _fields_ = [("addr", ctypes.c_uint32 * 4)]


class ScInbound(ctypes.Structure):
    """Mirror of ``struct sc_inbound``."""

    _fields_ = [("flags", ctypes.c_uint32), ("inbound_port", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


PODS = MapSpec("sc_pods", ctypes.c_uint64, ScPod)
ORIGS = MapSpec("sc_origs", ScPeerKey, SteerOrig)
STEER = MapSpec("sc_steer", SteerDestKey, ctypes.c_uint32)
INBOUND = MapSpec("sc_inbound", ScAddrKey, ScInbound)
#: The listeners' sockets (values are socket cookies when read; written only by the kernel).
LISTENERS = MapSpec("sc_listeners", ScAddrKey, ctypes.c_uint64)
#: The maps user space writes or reads, by name.
SIDECAR_SPECS = (PODS, ORIGS, STEER, INBOUND, LISTENERS)
