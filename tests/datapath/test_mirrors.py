"""The ctypes mirrors of map keys/values are checked against the compiled object's BTF."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from meshcore.datapath import BpfError, BpfObject, DatapathError, MirrorMismatch, SocketLB, object_path
from meshcore.datapath import _socket_lb
from meshcore.datapath.maps import ALL_SPECS, MapSpec, services
from meshcore.datapath.maps import tunnel as tunnel_maps
from meshcore.datapath.maps.sidecar import SIDECAR_SPECS
from meshcore.datapath.maps.tunnel import TUNNEL_SPECS

pytestmark = pytest.mark.root


class SwappedValue(ctypes.Structure):
    """ServiceValue with two members swapped: same size, wrong offsets."""

    _fields_ = [
        ("id", ctypes.c_uint32),
        ("slot_count", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("backend_count", ctypes.c_uint32),
        ("proxy_port", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    ]


class ShortKey(ctypes.Structure):
    """ServiceKey without its padding byte."""

    _pack_ = 1
    _fields_ = [("addr", ctypes.c_uint32 * 4), ("port", ctypes.c_uint16), ("proto", ctypes.c_uint8)]


def test_every_shipped_mirror_matches_the_object() -> None:
    with BpfObject.open(object_path("sock_lb")) as obj:
        for spec in ALL_SPECS:
            obj.check_mirror(spec)


@pytest.mark.parametrize(("name", "specs"), [("tunnel", TUNNEL_SPECS), ("sidecar", SIDECAR_SPECS)])
def test_every_steering_mirror_matches_its_object(name: str, specs: tuple[MapSpec, ...]) -> None:  # type: ignore[type-arg]
    # The destination key and original destination mirrors are shared: both objects must agree with them.
    with BpfObject.open(object_path(name)) as obj:
        for spec in specs:
            obj.check_mirror(spec)


class RefusalKeyWithoutCgroup(ctypes.Structure):
    """TunRefusalKey as it would be had the cgroup id been forgotten: every later member moves."""

    _fields_ = [("netns", ctypes.c_uint64), ("addr", ctypes.c_uint32 * 4), ("port", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("reason", ctypes.c_uint8), ("pad", ctypes.c_uint32),
                ("spare", ctypes.c_uint64)]


def test_a_tunnel_refusal_key_out_of_step_is_refused() -> None:
    with BpfObject.open(object_path("tunnel")) as obj:
        with pytest.raises(MirrorMismatch, match=r"map tun_refusals: key: struct tun_refusal_key member 'cgroup'"):
            obj.check_mirror(MapSpec("tun_refusals", RefusalKeyWithoutCgroup, tunnel_maps.TunRefusal))


def test_a_member_at_the_wrong_offset_names_map_struct_and_member() -> None:
    with BpfObject.open(object_path("sock_lb")) as obj:
        with pytest.raises(MirrorMismatch) as err:
            obj.check_mirror(MapSpec("lb_services", services.ServiceKey, SwappedValue))
    msg = str(err.value)
    assert "map lb_services: value" in msg
    assert "struct lb_service_value member 'backend_count' is at offset 8 size 4" in msg
    assert "SwappedValue.backend_count is at offset 12" in msg


def test_a_wrong_size_is_reported() -> None:
    with BpfObject.open(object_path("sock_lb")) as obj:
        with pytest.raises(MirrorMismatch, match=r"map lb_services: key: struct lb_service_key is 20 bytes .* ShortKey is 19"):
            obj.check_mirror(MapSpec("lb_services", ShortKey, services.ServiceValue))


def test_socket_lb_refuses_to_attach_with_a_bad_mirror(
    monkeypatch: pytest.MonkeyPatch, cgroup: Path, pin_root: Path
) -> None:
    bad = tuple(MapSpec("lb_services", s.key, SwappedValue) if s.name == "lb_services" else s for s in ALL_SPECS)
    monkeypatch.setattr(_socket_lb, "ALL_SPECS", bad)
    with pytest.raises(MirrorMismatch, match="lb_service_value"):
        with SocketLB("mcdp-mirror", cgroup, pin_root):
            pass
    assert not pin_root.exists(), "nothing may be pinned or attached after a mismatch"


def test_a_missing_object_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MESHCORE_BPF_DIR", str(tmp_path))
    with pytest.raises(DatapathError, match=r"make -C bpf"):
        object_path("sock_lb")


def test_libbpf_errors_carry_errno_and_libbpf_log(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.bpf.o"
    bogus.write_bytes(b"\x7fELF" + b"\0" * 60)
    with pytest.raises(BpfError) as err:
        BpfObject.open(bogus)
    assert err.value.errno > 0
    assert f"opening BPF object {bogus}" in str(err.value)
    assert "libbpf said:" in str(err.value) and err.value.log
