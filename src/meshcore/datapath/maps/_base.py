"""Typed access to one BPF map through its file descriptor, and address packing helpers."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
from collections.abc import Iterator
from typing import Generic, TypeVar, cast

import attrs

from .. import _libbpf

__all__ = [
    "BPF_ANY", "BPF_EXIST", "BPF_NOEXIST", "BpfMap", "MapSpec",
    "get_addr", "pack_addr", "set_addr", "unpack_addr",
]

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

K = TypeVar("K", bound="ctypes.Structure | ctypes.c_uint32 | ctypes.c_uint64")
V = TypeVar("V", bound="ctypes.Structure | ctypes.c_uint32 | ctypes.c_uint64")

_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


@attrs.frozen
class MapSpec(Generic[K, V]):
    """A map as the BPF object declares it: its name and the ctypes mirrors of key and value."""

    name: str
    key: type[K]
    value: type[V]


class BpfMap(Generic[K, V]):
    """One open map; lookups, updates and deletes go straight to bpf(2)."""

    def __init__(self, spec: MapSpec[K, V], fd: int) -> None:
        self.spec = spec
        self.fd = fd

    @property
    def name(self) -> str:
        """The map's name in the BPF object."""
        return self.spec.name

    def close(self) -> None:
        """Close this handle; a pinned map lives on."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def lookup(self, key: K) -> V | None:
        """The value stored under ``key``, or None."""
        value = self.spec.value()
        ret = _libbpf.lib.bpf_map_lookup_elem(self.fd, ctypes.byref(key), ctypes.byref(value))
        if ret == -2:  # -ENOENT
            return None
        if ret < 0:
            raise _libbpf.BpfError(-ret, f"looking up an entry of map {self.name}")
        return value

    def update(self, key: K, value: V, flags: int = BPF_ANY) -> None:
        """Create or replace one entry (atomically, as the kernel sees it)."""
        _libbpf.call_int(
            f"writing an entry of map {self.name}",
            _libbpf.lib.bpf_map_update_elem, self.fd, ctypes.byref(key), ctypes.byref(value), flags,
        )

    def delete(self, key: K) -> bool:
        """Remove one entry; False if it was not there."""
        ret = _libbpf.lib.bpf_map_delete_elem(self.fd, ctypes.byref(key))
        if ret == -2:
            return False
        if ret < 0:
            raise _libbpf.BpfError(-ret, f"deleting an entry of map {self.name}")
        return True

    def take(self, key: K) -> V | None:
        """Remove one entry and return its value (one step, as the kernel sees it), or None if it was not there."""
        value = self.spec.value()
        ret = _libbpf.lib.bpf_map_lookup_and_delete_elem(self.fd, ctypes.byref(key), ctypes.byref(value))
        if ret == -2:
            return None
        if ret < 0:
            raise _libbpf.BpfError(-ret, f"taking an entry of map {self.name}")
        return value

    def keys(self) -> list[K]:
        """All keys, read before returning so callers may delete while iterating."""
        out: list[K] = []
        cur: K | None = None
        while True:
            nxt = self.spec.key()
            ret = _libbpf.lib.bpf_map_get_next_key(
                self.fd, ctypes.byref(cur) if cur is not None else None, ctypes.byref(nxt)
            )
            if ret == -2:
                return out
            if ret < 0:
                raise _libbpf.BpfError(-ret, f"listing map {self.name}")
            out.append(nxt)
            cur = nxt

    def items(self) -> Iterator[tuple[K, V]]:
        """(key, value) pairs: batched reads where the kernel supports them, else key by key."""
        batched = self._items_batched()
        if batched is not None:
            yield from batched
            return
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def _items_batched(self, chunk: int = 4096) -> list[tuple[K, V]] | None:
        ksize, vsize = ctypes.sizeof(self.spec.key), ctypes.sizeof(self.spec.value)
        keys = (ctypes.c_uint8 * (ksize * chunk))()
        values = (ctypes.c_uint8 * (vsize * chunk))()
        token_in = (ctypes.c_uint8 * max(ksize, 8))()
        token_out = (ctypes.c_uint8 * max(ksize, 8))()
        out: list[tuple[K, V]] = []
        first = True
        while True:
            count = ctypes.c_uint32(chunk)
            ret = _libbpf.lib.bpf_map_lookup_batch(
                self.fd, None if first else token_in, token_out, keys, values, ctypes.byref(count), None
            )
            if ret < 0 and ret != -2:  # -ENOENT ends the walk; anything else: no batching here
                return None if first else self._items_fallback()
            raw_k, raw_v = bytes(keys), bytes(values)
            for i in range(count.value):
                out.append((
                    cast(K, self.spec.key.from_buffer_copy(raw_k, i * ksize)),
                    cast(V, self.spec.value.from_buffer_copy(raw_v, i * vsize)),
                ))
            if ret == -2:
                return out
            ctypes.memmove(token_in, token_out, len(token_in))
            first = False

    def _items_fallback(self) -> list[tuple[K, V]]:
        return [(k, v) for k in self.keys() if (v := self.lookup(k)) is not None]


def pack_addr(address: str) -> bytes:
    """16 bytes in network order; IPv4 becomes v4-mapped IPv6 as the BPF side expects."""
    try:
        packed = socket.inet_pton(socket.AF_INET, address)
    except OSError:
        packed = b""
    if packed and socket.inet_ntop(socket.AF_INET, packed) == address:
        return _V4_MAPPED_PREFIX + packed  # canonical IPv4, read in C (this runs per backend written)
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return _V4_MAPPED_PREFIX + ip.packed
    return ip.packed


def unpack_addr(raw: bytes) -> tuple[str, int]:
    """(address text, family 4 or 6) from 16 packed bytes."""
    if raw[:12] == _V4_MAPPED_PREFIX:
        return socket.inet_ntop(socket.AF_INET, raw[12:]), 4  # fast, and identical to ipaddress
    # ipaddress, not inet_ntop: glibc prints ::a.b.c.d forms that ipaddress (and so the
    # frontends computed from plans) never produces.
    return str(ipaddress.IPv6Address(raw)), 6


def set_addr(field: ctypes.Array[ctypes.c_uint32], address: str) -> None:
    """Fill a ``__u32 addr[4]`` member from an address."""
    ctypes.memmove(field, pack_addr(address), 16)


def get_addr(field: ctypes.Array[ctypes.c_uint32]) -> tuple[str, int]:
    """Read a ``__u32 addr[4]`` member as (address text, family)."""
    return unpack_addr(bytes(field))
