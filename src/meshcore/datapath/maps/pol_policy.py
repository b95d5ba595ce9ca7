"""Map ``pol_policy`` (LPM trie): (endpoint, direction, protocol, remote, port block) → verdict.

Mirrors ``struct pol_policy_key`` / ``struct pol_policy_value`` in bpf/policy.h. The first
96 bits after ``prefixlen`` are always matched in full; the port's leading bits follow.
"""

from __future__ import annotations

import ctypes
import socket

from ._base import MapSpec

__all__ = ["DENY", "ALLOW", "DIRECTION_CODES", "FIXED_BITS", "SPEC", "PolicyKey", "PolicyValue"]

ALLOW = 1
DENY = 2
DIRECTION_CODES = {"ingress": 1, "egress": 2}
FIXED_BITS = 96


class PolicyKey(ctypes.Structure):
    """Mirror of ``struct pol_policy_key``."""

    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("endpoint", ctypes.c_uint32),
        ("direction", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
        ("remote", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("pad2", ctypes.c_uint16),
    ]

    @classmethod
    def of(cls, endpoint: int, direction: str, proto: int, remote: int, port: int, port_bits: int) -> PolicyKey:
        """The key for one entry (``port_bits`` leading bits of ``port`` fixed)."""
        return cls(
            prefixlen=FIXED_BITS + port_bits, endpoint=endpoint, direction=DIRECTION_CODES[direction],
            proto=proto, remote=remote, port=socket.htons(port),
        )


class PolicyValue(ctypes.Structure):
    """Mirror of ``struct pol_policy_value``."""

    _fields_ = [("verdict", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3), ("policy_index", ctypes.c_uint32)]


SPEC = MapSpec("pol_policy", PolicyKey, PolicyValue)
