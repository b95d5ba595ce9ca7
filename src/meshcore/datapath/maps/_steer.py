"""Mirrors of the structs in bpf/lib/steer.h, which ``tunnel.bpf.o`` and ``sidecar.bpf.o`` share.

``SteerDestKey`` keys the steered destinations (``tun_dests``, ``sc_steer``); ``SteerOrig``
is the original destination of a steered connection (``tun_cookies`` / ``tun_origs``,
``sc_cookies`` / ``sc_origs``).
"""

from __future__ import annotations

import ctypes
import socket

from ._base import set_addr

__all__ = ["SteerDestKey", "SteerOrig", "pack_dest_key"]


class SteerDestKey(ctypes.Structure):
    """Mirror of ``struct steer_dest_key``: an address and a port (network order; 0 for every port)."""

    _fields_ = [("addr", ctypes.c_uint32 * 4), ("port", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


class SteerOrig(ctypes.Structure):
    """Mirror of ``struct steer_orig``: an address, a port (network order) and the family (4 or 6)."""

    _fields_ = [("addr", ctypes.c_uint32 * 4), ("port", ctypes.c_uint16), ("family", ctypes.c_uint8),
                ("pad", ctypes.c_uint8)]


def pack_dest_key(address: str, port: int) -> bytes:
    """The bytes of a ``SteerDestKey`` for ``address`` and ``port`` (host order; 0 for every port)."""
    key = SteerDestKey()
    set_addr(key.addr, address)
    key.port = socket.htons(port)
    return bytes(key)
