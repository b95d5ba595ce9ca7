"""Reading the BTF of a compiled object: struct layouts, data sections, mirror checks.

The check follows the kernel's own contract: a map key or value is a blob of bytes whose
layout the BPF side defines. Each Python mirror (a ctypes type) must agree with the BTF
the compiler emitted for that map, member by member, or nothing is written.
"""

from __future__ import annotations

import ctypes
from typing import Any

import attrs

from . import _libbpf
from ._errors import MirrorMismatch

__all__ = ["Btf", "BtfMember", "BtfVar", "check_mirror"]

# BTF kinds (include/uapi/linux/btf.h).
KIND_INT = 1
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_DATASEC = 15
KIND_ENUM64 = 19


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size_or_type", ctypes.c_uint32)]


class _BtfMember(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32), ("offset", ctypes.c_uint32)]


class _BtfArray(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("index_type", ctypes.c_uint32), ("nelems", ctypes.c_uint32)]


class _BtfVarSecinfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32), ("size", ctypes.c_uint32)]


@attrs.frozen
class BtfMember:
    """A struct member as the compiler laid it out."""

    name: str
    offset: int  # bytes
    size: int
    type_id: int
    bitfield: bool = False


@attrs.frozen
class BtfVar:
    """A global variable in a data section (``.rodata`` for load-time settings)."""

    name: str
    offset: int
    size: int


class Btf:
    """A view of one BTF blob; owns it only when created with :meth:`parse`."""

    def __init__(self, ptr: int, owned: bool = False) -> None:
        self._ptr = ptr
        self._owned = owned

    @classmethod
    def parse(cls, path: str) -> Btf:
        """Parse the BTF of an ELF object or raw BTF file."""
        ptr = _libbpf.call_ptr(f"reading BTF from {path}", _libbpf.lib.btf__parse, path.encode(), None)
        return cls(ptr, owned=True)

    def close(self) -> None:
        """Free the BTF if this view owns it."""
        if self._owned and self._ptr:
            _libbpf.lib.btf__free(self._ptr)
        self._ptr = 0

    def __enter__(self) -> Btf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _type(self, type_id: int) -> _BtfType:
        ptr = _libbpf.lib.btf__type_by_id(self._ptr, type_id)
        if not ptr:
            raise MirrorMismatch(f"BTF type id {type_id} does not exist")
        return _BtfType.from_address(ptr)

    def kind(self, type_id: int) -> int:
        """The BTF kind of a type."""
        return int(self._type(type_id).info >> 24) & 0x1F

    def name(self, type_id: int) -> str:
        """The type's name, '' when anonymous."""
        raw = _libbpf.lib.btf__name_by_offset(self._ptr, self._type(type_id).name_off)
        return raw.decode() if raw else ""

    def resolve(self, type_id: int) -> int:
        """Strip typedefs and qualifiers."""
        return _libbpf.call_int(f"resolving BTF type {type_id}", _libbpf.lib.btf__resolve_type, self._ptr, type_id)

    def size(self, type_id: int) -> int:
        """Size in bytes of a type."""
        return _libbpf.call_int(f"sizing BTF type {type_id}", _libbpf.lib.btf__resolve_size, self._ptr, type_id)

    def find(self, name: str, kind: int) -> int | None:
        """The id of the named type of that kind, if present."""
        ret = _libbpf.lib.btf__find_by_name_kind(self._ptr, name.encode(), kind)
        return ret if ret > 0 else None

    def members(self, type_id: int) -> tuple[BtfMember, ...]:
        """Members of a struct or union, with byte offsets."""
        t = self._type(type_id)
        vlen = t.info & 0xFFFF
        kflag = bool(t.info >> 31)
        base = ctypes.addressof(t) + ctypes.sizeof(_BtfType)
        out = []
        for i in range(vlen):
            m = _BtfMember.from_address(base + i * ctypes.sizeof(_BtfMember))
            raw = _libbpf.lib.btf__name_by_offset(self._ptr, m.name_off)
            bit_offset = m.offset & 0xFFFFFF if kflag else m.offset
            bitfield = kflag and (m.offset >> 24) != 0
            out.append(BtfMember(
                name=raw.decode() if raw else "",
                offset=bit_offset // 8,
                size=self.size(m.type),
                type_id=m.type,
                bitfield=bitfield or bit_offset % 8 != 0,
            ))
        return tuple(out)

    def array(self, type_id: int) -> tuple[int, int]:
        """(element type id, number of elements) of an array type."""
        t = self._type(type_id)
        a = _BtfArray.from_address(ctypes.addressof(t) + ctypes.sizeof(_BtfType))
        return a.type, a.nelems

    def datasec(self, name: str) -> dict[str, BtfVar]:
        """Variables of a data section such as ``.rodata`` (offsets as fixed up at open)."""
        sec = self.find(name, KIND_DATASEC)
        if sec is None:
            return {}
        t = self._type(sec)
        base = ctypes.addressof(t) + ctypes.sizeof(_BtfType)
        out = {}
        for i in range(t.info & 0xFFFF):
            v = _BtfVarSecinfo.from_address(base + i * ctypes.sizeof(_BtfVarSecinfo))
            var_name = self.name(v.type)
            out[var_name] = BtfVar(var_name, v.offset, v.size)
        return out


def _ctype_fields(ctype: Any) -> list[tuple[str, Any, int, int]]:
    """(name, type, offset, size) of each field of a ctypes Structure."""
    out = []
    for field in ctype._fields_:
        name, ftype = field[0], field[1]
        descr = getattr(ctype, name)
        out.append((name, ftype, descr.offset, descr.size))
    return out


def check_mirror(btf: Btf, type_id: int, mirror: Any, *, map_name: str, role: str) -> None:
    """Raise :class:`MirrorMismatch` unless ``mirror`` lays out exactly like BTF ``type_id``."""
    _check(btf, btf.resolve(type_id), mirror, f"map {map_name}: {role}", mirror.__name__)


def _fail(where: str, detail: str) -> MirrorMismatch:
    return MirrorMismatch(
        f"{where}: {detail} — the ctypes mirror under src/meshcore/datapath/maps/ and "
        "bpf/sock_lb.h must describe the same layout; rebuild the BPF object (make -C bpf) "
        "or fix the mirror"
    )


def _check(btf: Btf, tid: int, mirror: Any, where: str, py_name: str) -> None:
    kind = btf.kind(tid)
    btf_size = btf.size(tid)
    c_name = btf.name(tid) or "(anonymous)"
    py_size = ctypes.sizeof(mirror)
    if isinstance(mirror, type) and issubclass(mirror, ctypes.Structure):
        if kind != KIND_STRUCT:
            raise _fail(where, f"{py_name} is a struct but the BPF object has a non-struct type {c_name}")
        label = f"struct {c_name}"
        if btf_size != py_size:
            raise _fail(where, f"{label} is {btf_size} bytes in the BPF object but {py_name} is {py_size}")
        members = btf.members(tid)
        fields = _ctype_fields(mirror)
        names_c = [m.name for m in members]
        names_py = [f[0] for f in fields]
        for m in members:
            if m.name not in names_py:
                raise _fail(where, f"{label} member {m.name!r} is missing from {py_name}")
        for f in fields:
            if f[0] not in names_c:
                raise _fail(where, f"{py_name}.{f[0]} has no member of that name in {label}")
        by_name = {f[0]: f for f in fields}
        for m in members:
            _, ftype, off, size = by_name[m.name]
            if m.bitfield:
                raise _fail(where, f"{label} member {m.name!r} is a bitfield, which mirrors cannot express")
            if m.offset != off or m.size != size:
                raise _fail(
                    where,
                    f"{label} member {m.name!r} is at offset {m.offset} size {m.size} in the BPF "
                    f"object but {py_name}.{m.name} is at offset {off} size {size}",
                )
            _check(btf, btf.resolve(m.type_id), ftype, where, f"{py_name}.{m.name}")
        return
    if isinstance(mirror, type) and issubclass(mirror, ctypes.Array):
        if kind != KIND_ARRAY:
            raise _fail(where, f"{py_name} is an array but the BPF object has {c_name} (kind {kind})")
        elem, nelems = btf.array(tid)
        length = int(getattr(mirror, "_length_"))
        if nelems != length:
            raise _fail(where, f"{py_name} has {length} elements but the BPF object has {nelems}")
        _check(btf, btf.resolve(elem), getattr(mirror, "_type_"), where, f"{py_name}[]")
        return
    if kind not in (KIND_INT, KIND_ENUM, KIND_ENUM64):
        raise _fail(where, f"{py_name} is a scalar but the BPF object has {c_name} (kind {kind})")
    if btf_size != py_size:
        raise _fail(where, f"{py_name} is {py_size} bytes but {c_name} is {btf_size} in the BPF object")
