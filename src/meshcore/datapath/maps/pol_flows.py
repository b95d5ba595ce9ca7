"""Maps of flow reporting: ``pol_settings`` (the agent's event rate), ``pol_flow_sums`` (flows counted
per identity pair instead of sent) and ``pol_event_stats`` (what became of each verdict).

Mirrors ``struct pol_settings``, ``struct pol_flow_key`` and ``struct pol_flow_sum`` in
bpf/policy.h. ``pol_flow_sums`` and ``pol_event_stats`` are per-CPU: user space reads one
value per possible CPU and adds them up.
"""

from __future__ import annotations

import ctypes

from ._base import MapSpec

__all__ = [
    "LIMIT_ALLOWED", "SETTINGS", "STATS", "STAT_EVENTS", "STAT_LOST", "STAT_RING_FULL", "STAT_SAMPLED", "SUMS",
    "FlowSumKey", "FlowSumValue", "Settings", "SettingsKey", "StatKey", "StatValue",
]

#: pol_settings.flags: allowed_events_per_cpu applies (unset: every allowed flow is an event).
LIMIT_ALLOWED = 0x1

#: pol_event_stats indexes: must match POL_STAT_* in bpf/policy.h.
STAT_EVENTS = 0
STAT_SAMPLED = 1
STAT_RING_FULL = 2
STAT_LOST = 3

SettingsKey = ctypes.c_uint32
StatKey = ctypes.c_uint32
StatValue = ctypes.c_uint64


class Settings(ctypes.Structure):
    """Mirror of ``struct pol_settings``."""

    _fields_ = [("flags", ctypes.c_uint32), ("allowed_events_per_cpu", ctypes.c_uint32)]


class FlowSumKey(ctypes.Structure):
    """Mirror of ``struct pol_flow_key``."""

    _fields_ = [
        ("src_identity", ctypes.c_uint32),
        ("dst_identity", ctypes.c_uint32),
        ("policy_index", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("verdict", ctypes.c_uint8),
        ("reason", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
    ]


class FlowSumValue(ctypes.Structure):
    """Mirror of ``struct pol_flow_sum`` (one CPU's share)."""

    _fields_ = [("flows", ctypes.c_uint64)]


SETTINGS = MapSpec("pol_settings", SettingsKey, Settings)
SUMS = MapSpec("pol_flow_sums", FlowSumKey, FlowSumValue)
STATS = MapSpec("pol_event_stats", StatKey, StatValue)
