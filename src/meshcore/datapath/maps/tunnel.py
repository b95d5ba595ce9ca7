"""The tunnel steering maps of ``tunnel.bpf.o``; mirrors of the structs in bpf/tunnel.h.

The destination key and the original destination are bpf/lib/steer.h's, mirrored in ``_steer``.

``tun_dests``: meshed destinations (address, port or 0) → flags (steer TCP, strict);
``tun_config``: the node proxy's outbound tunnel listener and the cgroup exempt from
steering; ``tun_exempt``: other cgroups never steered (sidecars); ``tun_cookies`` / ``tun_origs``: the original destination of steered connections,
by socket cookie and then by the client's address and port; ``tun_refusals``: calls to STRICT
destinations refused at the client's socket, counted by client, destination and reason.
"""

from __future__ import annotations

import ctypes

from ._base import MapSpec
from ._steer import SteerDestKey, SteerOrig

__all__ = ["CONFIG", "COOKIES", "DESTS", "EXEMPT", "ORIGS", "REFUSALS", "TUNNEL_SPECS", "TUN_F_STEER", "TUN_F_STRICT",
           "TUN_R_NO_PROXY", "TUN_R_UDP_STRICT", "TunConfig", "TunDestValue", "TunPeerKey", "TunRefusal",
           "TunRefusalKey"]

TUN_F_STEER = 0x1
TUN_F_STRICT = 0x2

#: tun_refusal_key.reason: must match TUN_R_* in bpf/tunnel.h.
TUN_R_UDP_STRICT = 1
TUN_R_NO_PROXY = 2


class TunDestValue(ctypes.Structure):
    """Mirror of ``struct tun_dest_value``."""

    _fields_ = [("flags", ctypes.c_uint32)]


class TunConfig(ctypes.Structure):
    """Mirror of ``struct tun_config``."""

    _fields_ = [("proxy4", ctypes.c_uint32), ("proxy6", ctypes.c_uint32 * 4), ("port", ctypes.c_uint16),
                ("pad", ctypes.c_uint16), ("exempt_cgroup", ctypes.c_uint64)]


class TunPeerKey(ctypes.Structure):
    """Mirror of ``struct tun_peer_key``."""

    _fields_ = [("addr", ctypes.c_uint32 * 4), ("port", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


class TunRefusalKey(ctypes.Structure):
    """Mirror of ``struct tun_refusal_key``."""

    _fields_ = [("netns", ctypes.c_uint64), ("cgroup", ctypes.c_uint64), ("addr", ctypes.c_uint32 * 4),
                ("port", ctypes.c_uint16), ("proto", ctypes.c_uint8), ("reason", ctypes.c_uint8),
                ("pad", ctypes.c_uint32)]


class TunRefusal(ctypes.Structure):
    """Mirror of ``struct tun_refusal``."""

    _fields_ = [("count", ctypes.c_uint64), ("last_ns", ctypes.c_uint64), ("saddr", ctypes.c_uint32 * 4),
                ("sport", ctypes.c_uint16), ("pad", ctypes.c_uint16), ("pad2", ctypes.c_uint32)]


DESTS = MapSpec("tun_dests", SteerDestKey, TunDestValue)
CONFIG = MapSpec("tun_config", ctypes.c_uint32, TunConfig)
COOKIES = MapSpec("tun_cookies", ctypes.c_uint64, SteerOrig)
ORIGS = MapSpec("tun_origs", TunPeerKey, SteerOrig)
#: Cgroup ids never steered (sidecars): value 1.
EXEMPT = MapSpec("tun_exempt", ctypes.c_uint64, ctypes.c_uint32)
REFUSALS = MapSpec("tun_refusals", TunRefusalKey, TunRefusal)
TUNNEL_SPECS = (DESTS, CONFIG, COOKIES, ORIGS, EXEMPT, REFUSALS)
