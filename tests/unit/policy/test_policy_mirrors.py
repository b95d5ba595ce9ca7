"""The policy object's maps and event record match their ctypes mirrors (no root needed)."""

from __future__ import annotations

import ctypes

import pytest

from meshcore.datapath import BpfObject, MirrorMismatch, object_path
from meshcore.datapath._btf import KIND_STRUCT, check_mirror
from meshcore.datapath.maps import POLICY_SPECS, MapSpec, pol_events


def test_mirrors_match_policy_object() -> None:
    with BpfObject.open(object_path("policy")) as obj:
        for spec in POLICY_SPECS:
            obj.check_mirror(spec)
        tid = obj.btf.find(pol_events.EVENT_STRUCT, KIND_STRUCT)
        assert tid is not None
        check_mirror(obj.btf, tid, pol_events.Event, map_name="pol_events", role="record")
        assert set(obj.programs()) == {"pol_from_pod", "pol_to_pod"}


def test_wrong_mirror_is_refused() -> None:
    class Wrong(ctypes.Structure):
        _fields_ = [("prefixlen", ctypes.c_uint32), ("addr", ctypes.c_uint32 * 3)]

    spec = MapSpec("pol_ipcache", Wrong, POLICY_SPECS[0].value)
    with BpfObject.open(object_path("policy")) as obj, pytest.raises(MirrorMismatch, match="pol_ipcache_key"):
        obj.check_mirror(spec)
