"""Loading BPF objects: open → configure → load → attach → destroy, as context managers.

    with BpfObject.open(object_path("sock_lb")) as obj:
        obj.set_global("proxy_ip4", ipaddress.ip_address("10.0.0.1").packed)
        obj.check_mirror(services.SPEC)
        obj.load()
        with obj.attach_cgroup("lb_connect4", "/sys/fs/cgroup/unified/app") as link:
            link.pin("/sys/fs/bpf/meshcore/node-a/links/lb_connect4")

Leaving a ``with`` closes the Python handles only: a pinned map or link keeps working in
the kernel. :meth:`BpfLink.detach` is what stops enforcement.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from types import TracebackType

import attrs

from . import _libbpf
from ._btf import Btf, check_mirror
from ._cgroup import resolve_cgroup
from ._errors import DatapathError
from .maps import MapSpec

__all__ = [
    "BpfLink", "BpfObject", "LinkInfo", "MapInfo", "link_info", "map_info",
    "object_path", "prog_map_ids", "map_fd_by_id", "prog_fd_by_id",
]

_BPF_DIR_ENV = "MESHCORE_BPF_DIR"


def object_path(name: str) -> Path:
    """The compiled ``<name>.bpf.o`` shipped in the package (or under $MESHCORE_BPF_DIR)."""
    base = Path(os.environ.get(_BPF_DIR_ENV) or Path(__file__).parent / "_bpf")
    path = base / f"{name}.bpf.o"
    if not path.is_file():
        if os.environ.get(_BPF_DIR_ENV):
            raise DatapathError(f"BPF object {path} is missing (${_BPF_DIR_ENV} names {base}): build the "
                                "objects with `make -C bpf` in the source tree and point it at the directory "
                                "holding them, or unset it to use the installed ones")
        raise DatapathError(
            f"BPF object {path} is missing: meshcore was installed without its BPF objects "
            "(built where clang was missing, or with MESHCORE_BUILD_BPF=no). Install the Debian "
            "packages clang llvm libbpf-dev linux-libc-dev make, then run `make -C bpf` in the "
            "source tree of an editable install, or reinstall: MESHCORE_BUILD_BPF=yes "
            "pip install --force-reinstall --no-cache-dir 'meshcore[agent]'."
        )
    return path


class BpfLink:
    """An attachment of a program; pinned links outlive this handle and the process."""

    def __init__(self, ptr: int, what: str) -> None:
        self._ptr = ptr
        self.what = what

    @classmethod
    def open_pinned(cls, path: str | os.PathLike[str]) -> BpfLink:
        """Open a link pinned in bpffs."""
        ptr = _libbpf.call_ptr(f"opening pinned link {path}", _libbpf.lib.bpf_link__open, os.fsencode(path))
        return cls(ptr, str(path))

    @property
    def fd(self) -> int:
        """The link's file descriptor."""
        return int(_libbpf.lib.bpf_link__fd(self._ptr))

    def info(self) -> LinkInfo:
        """What the kernel says about this link."""
        return link_info(self.fd)

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin the link so it survives this process."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _libbpf.call_int(f"pinning {self.what} at {path}", _libbpf.lib.bpf_link__pin, self._ptr, os.fsencode(path))

    def update_program(self, program: str, obj: BpfObject) -> None:
        """Atomically replace the program behind this link (no window without enforcement)."""
        prog = obj.program(program)
        _libbpf.call_int(
            f"replacing the program of {self.what} with {program}",
            _libbpf.lib.bpf_link__update_program, self._ptr, prog,
        )

    def detach(self) -> None:
        """Detach from the hook now, even while pinned elsewhere."""
        _libbpf.call_int(f"detaching {self.what}", _libbpf.lib.bpf_link_detach, self.fd)

    def close(self) -> None:
        """Release this handle; the attachment stays if the link is pinned."""
        if self._ptr:
            _libbpf.lib.bpf_link__destroy(self._ptr)
            self._ptr = 0

    def __enter__(self) -> BpfLink:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class BpfObject:
    """A BPF ELF object opened through libbpf: configure, load, attach."""

    def __init__(self, ptr: int, path: Path) -> None:
        self._ptr = ptr
        self.path = path
        self.loaded = False

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> BpfObject:
        """Open (parse, not load) an object file."""
        p = Path(path)
        if not p.is_file():
            raise DatapathError(f"BPF object {p} does not exist")
        ptr = _libbpf.call_ptr(f"opening BPF object {p}", _libbpf.lib.bpf_object__open_file, os.fsencode(p), None)
        return cls(ptr, p)

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Free the object and its fds; pinned maps and links stay in the kernel."""
        if self._ptr:
            _libbpf.lib.bpf_object__close(self._ptr)
            self._ptr = 0

    def _need_open(self) -> int:
        if not self._ptr:
            raise DatapathError(f"BPF object {self.path} is closed")
        return self._ptr

    @property
    def btf(self) -> Btf:
        """The object's BTF (owned by the object)."""
        ptr = _libbpf.call_ptr(f"BTF of {self.path}", _libbpf.lib.bpf_object__btf, self._need_open())
        return Btf(ptr)

    def _map(self, name: str) -> int:
        ptr = _libbpf.lib.bpf_object__find_map_by_name(self._need_open(), name.encode())
        if not ptr:
            raise DatapathError(f"BPF object {self.path} has no map named {name!r}")
        return int(ptr)

    def program(self, name: str) -> int:
        """The libbpf program pointer for ``name``."""
        ptr = _libbpf.lib.bpf_object__find_program_by_name(self._need_open(), name.encode())
        if not ptr:
            raise DatapathError(f"BPF object {self.path} has no program named {name!r}")
        return int(ptr)

    def programs(self) -> list[str]:
        """Names of all programs in the object."""
        out: list[str] = []
        cur = None
        while True:
            cur = _libbpf.lib.bpf_object__next_program(self._need_open(), cur)
            if not cur:
                return out
            out.append(_libbpf.lib.bpf_program__name(cur).decode())

    def check_mirror(self, spec: MapSpec) -> None:  # type: ignore[type-arg]
        """Raise MirrorMismatch unless the spec's key and value mirrors match the map's BTF."""
        m = self._map(spec.name)
        btf = self.btf
        for role, type_id, mirror in (
            ("key", _libbpf.lib.bpf_map__btf_key_type_id(m), spec.key),
            ("value", _libbpf.lib.bpf_map__btf_value_type_id(m), spec.value),
        ):
            if not type_id:
                raise DatapathError(f"map {spec.name} in {self.path} has no BTF {role} type; build with -g")
            check_mirror(btf, type_id, mirror, map_name=spec.name, role=role)

    def set_global(self, name: str, value: bytes | int) -> None:
        """Set a ``const volatile`` global (in ``.rodata``) before load."""
        if self.loaded:
            raise DatapathError(f"cannot set {name}: {self.path} is already loaded")
        var = self.btf.datasec(".rodata").get(name)
        if var is None:
            raise DatapathError(f"BPF object {self.path} has no load-time setting {name!r}")
        raw = value.to_bytes(var.size, sys.byteorder) if isinstance(value, int) else bytes(value)
        if len(raw) != var.size:
            raise DatapathError(f"setting {name} takes {var.size} bytes, got {len(raw)}")
        size = ctypes.c_size_t()
        data = _libbpf.call_ptr(
            f"initial value of .rodata in {self.path}",
            _libbpf.lib.bpf_map__initial_value, self._map(".rodata"), ctypes.byref(size),
        )
        if var.offset + var.size > size.value:
            raise DatapathError(f"setting {name} lies outside .rodata of {self.path}")
        ctypes.memmove(data + var.offset, raw, var.size)

    def globals(self) -> dict[str, tuple[int, int]]:
        """Load-time settings: name → (offset, size) within ``.rodata``."""
        return {n: (v.offset, v.size) for n, v in self.btf.datasec(".rodata").items()}

    def set_pin_path(self, map_name: str, path: str | os.PathLike[str]) -> None:
        """Pin the map at ``path`` on load, reusing a compatible map already pinned there."""
        _libbpf.call_int(
            f"setting pin path of map {map_name}",
            _libbpf.lib.bpf_map__set_pin_path, self._map(map_name), os.fsencode(path),
        )

    def set_max_entries(self, map_name: str, n: int) -> None:
        """Size a map before load."""
        _libbpf.call_int(f"sizing map {map_name}", _libbpf.lib.bpf_map__set_max_entries, self._map(map_name), n)

    def max_entries(self, map_name: str) -> int:
        """The map's capacity."""
        return int(_libbpf.lib.bpf_map__max_entries(self._map(map_name)))

    def map_fd(self, map_name: str) -> int:
        """The loaded map's fd (owned by the object)."""
        return _libbpf.call_int(f"fd of map {map_name}", _libbpf.lib.bpf_map__fd, self._map(map_name))

    def load(self) -> None:
        """Create maps (reusing pinned ones), relocate and verify programs."""
        _libbpf.call_int(f"loading BPF object {self.path}", _libbpf.lib.bpf_object__load, self._need_open())
        self.loaded = True

    def attach_cgroup(self, program: str, cgroup: str | os.PathLike[str]) -> BpfLink:
        """Attach a loaded program to a cgroup v2 directory through a BPF link."""
        if not self.loaded:
            raise DatapathError(f"load {self.path} before attaching {program}")
        path = resolve_cgroup(cgroup)
        prog = self.program(program)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            ptr = _libbpf.call_ptr(
                f"attaching {program} to cgroup {path}", _libbpf.lib.bpf_program__attach_cgroup, prog, fd
            )
        finally:
            os.close(fd)
        return BpfLink(ptr, f"{program} on {path}")

    def attach_netns(self, program: str, netns: str | os.PathLike[str]) -> BpfLink:
        """Attach a loaded program (sk_lookup) to the network namespace file ``netns`` through a BPF link."""
        if not self.loaded:
            raise DatapathError(f"load {self.path} before attaching {program}")
        prog = self.program(program)
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise DatapathError(f"network namespace {os.fspath(netns)} cannot be opened: {exc.strerror}") from None
        try:
            ptr = _libbpf.call_ptr(
                f"attaching {program} to network namespace {os.fspath(netns)}",
                _libbpf.lib.bpf_program__attach_netns, prog, fd,
            )
        finally:
            os.close(fd)
        return BpfLink(ptr, f"{program} on {os.fspath(netns)}")


# --- object info (bpf_obj_get_info_by_fd) -------------------------------------------------


@attrs.frozen
class LinkInfo:
    """A link's program and, for cgroup links, the cgroup id and attach type."""

    id: int
    prog_id: int
    cgroup_id: int
    attach_type: int


@attrs.frozen
class MapInfo:
    """A map's shape as the kernel knows it."""

    id: int
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


def _u32(raw: bytes, off: int) -> int:
    return int.from_bytes(raw[off:off + 4], sys.byteorder)


def _info(fd: int, size: int, what: str) -> bytes:
    buf = ctypes.create_string_buffer(size)
    length = ctypes.c_uint32(size)
    _libbpf.call_int(what, _libbpf.lib.bpf_obj_get_info_by_fd, fd, buf, ctypes.byref(length))
    return buf.raw


def link_info(fd: int) -> LinkInfo:
    """struct bpf_link_info: type, id, prog_id, then (8-aligned) cgroup_id, attach_type."""
    raw = _info(fd, 64, "reading link info")
    return LinkInfo(
        id=_u32(raw, 4), prog_id=_u32(raw, 8),
        cgroup_id=int.from_bytes(raw[16:24], sys.byteorder), attach_type=_u32(raw, 24),
    )


def map_info(fd: int) -> MapInfo:
    """struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags, name."""
    raw = _info(fd, 88, "reading map info")
    return MapInfo(
        id=_u32(raw, 4), type=_u32(raw, 0), key_size=_u32(raw, 8), value_size=_u32(raw, 12),
        max_entries=_u32(raw, 16), flags=_u32(raw, 20), name=raw[24:40].split(b"\0", 1)[0].decode(errors="replace"),
    )


def prog_map_ids(fd: int) -> list[int]:
    """Ids of the maps a loaded program uses (struct bpf_prog_info nr_map_ids/map_ids)."""
    ids = (ctypes.c_uint32 * 64)()
    buf = ctypes.create_string_buffer(64)
    ctypes.memmove(ctypes.addressof(buf) + 52, (64).to_bytes(4, sys.byteorder), 4)
    ctypes.memmove(ctypes.addressof(buf) + 56, ctypes.addressof(ids).to_bytes(8, sys.byteorder), 8)
    length = ctypes.c_uint32(64)
    _libbpf.call_int("reading program info", _libbpf.lib.bpf_obj_get_info_by_fd, fd, buf, ctypes.byref(length))
    n = int.from_bytes(buf.raw[52:56], sys.byteorder)
    return list(ids[: min(n, 64)])


def map_fd_by_id(map_id: int) -> int:
    """An fd for a map given its id."""
    return _libbpf.call_int(f"opening map id {map_id}", _libbpf.lib.bpf_map_get_fd_by_id, map_id)


def prog_fd_by_id(prog_id: int) -> int:
    """An fd for a program given its id."""
    return _libbpf.call_int(f"opening program id {prog_id}", _libbpf.lib.bpf_prog_get_fd_by_id, prog_id)
