"""Reading the policy programs' reports in batches: the event ring buffer through its memory
mapping, and the per-CPU flow sums and counters.

The ring buffer is read the way the kernel lays it out for consumers: a writable page
with the consumer position, a read-only page with the producer position, then the data
pages, mapped twice in a row so a record that wraps reads as one slice. Each read takes
everything committed since the last one as one ``bytes`` of concatenated records — no
callback and no Python object per record.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import struct
from typing import Any

from . import _libbpf
from .maps._base import BpfMap
from .maps.pol_flows import FlowSumKey, StatKey

__all__ = ["EventRing", "PerCpuReader"]

_POS = struct.Struct("<Q")
_HEADER = struct.Struct("<II")
_BUSY = 1 << 31
_DISCARD = 1 << 30
_HEADER_SIZE = 8

_lib = _libbpf.lib
_lib.libbpf_num_possible_cpus.restype = ctypes.c_int
_lib.libbpf_num_possible_cpus.argtypes = []
_lib.bpf_map_lookup_and_delete_batch.restype = ctypes.c_int
_lib.bpf_map_lookup_and_delete_batch.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                                 ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p]


class EventRing:
    """A consumer of one BPF ring buffer of fixed-size records (``record_size`` bytes each)."""

    def __init__(self, map_fd: int, size: int, record_size: int) -> None:
        self.fd = os.dup(map_fd)
        self.size = size
        self.record_size = record_size
        self._page = mmap.PAGESIZE
        try:
            self._consumer = mmap.mmap(self.fd, self._page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._producer = mmap.mmap(self.fd, self._page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                       offset=self._page)
        except OSError as exc:
            os.close(self.fd)
            raise _libbpf.BpfError(exc.errno or 0, "mapping the event ring buffer") from exc
        self._poll = select.epoll()
        self._poll.register(self.fd, select.EPOLLIN)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the kernel to signal records (drops do); True if it did."""
        return bool(self._poll.poll(timeout))

    def pending(self) -> int:
        """Bytes committed or being written that have not been read."""
        (consumer,) = _POS.unpack_from(self._consumer, 0)
        (producer,) = _POS.unpack_from(self._producer, 0)
        return int(producer - consumer)

    def read(self) -> bytes:
        """Every record committed since the last read, concatenated (records are ``record_size`` bytes)."""
        (consumer,) = _POS.unpack_from(self._consumer, 0)
        (producer,) = _POS.unpack_from(self._producer, 0)
        if producer == consumer:
            return b""
        mask = self.size - 1
        data = self._producer
        base = self._page
        fast = self._read_whole(consumer, producer)
        if fast is not None:
            _POS.pack_into(self._consumer, 0, producer)
            return fast
        out: list[bytes] = []
        at = consumer
        # Records are read a pass (0.2 s) after most were committed; the busy bit, cleared by
        # the kernel after the record is written, is what says a record is complete.
        while at < producer:
            offset = base + (at & mask)
            length, _ = _HEADER.unpack_from(data, offset)
            if length & _BUSY:
                break  # still being written: the next read takes it
            size = length & ~(_BUSY | _DISCARD)
            if not length & _DISCARD and size == self.record_size:
                out.append(data[offset + _HEADER_SIZE:offset + _HEADER_SIZE + size])
            at += (size + _HEADER_SIZE + 7) & ~7
        _POS.pack_into(self._consumer, 0, at)
        return b"".join(out)

    def _read_whole(self, consumer: int, producer: int) -> bytes | None:
        """All records between the positions, when every one is complete and of the expected size; else None.

        Each header is checked with strided slices (in C) instead of one step per record.
        """
        step = (self.record_size + _HEADER_SIZE + 7) & ~7
        span = producer - consumer
        if span % step or span > self.size:
            return None
        count = span // step
        start = self._page + (consumer & (self.size - 1))
        chunk = self._producer[start:start + span]
        length = self.record_size.to_bytes(4, "little")
        for i in range(4):  # the length word of each header: the record size, no busy or discard bit
            if chunk[i::step] != length[i:i + 1] * count:
                return None
        return b"".join(chunk[at + _HEADER_SIZE:at + _HEADER_SIZE + self.record_size] for at in range(0, span, step))

    def close(self) -> None:
        """Unmap and close."""
        if self.fd >= 0:
            self._poll.close()
            self._consumer.close()
            self._producer.close()
            os.close(self.fd)
            self.fd = -1


class PerCpuReader:
    """Reads per-CPU maps whose values are one ``__u64`` per CPU (or a struct of one), summed over CPUs."""

    def __init__(self) -> None:
        self.cpus = int(_lib.libbpf_num_possible_cpus())
        if self.cpus <= 0:
            raise _libbpf.BpfError(-self.cpus, "counting the possible CPUs")

    def total(self, counters: BpfMap[Any, Any], index: int) -> int:
        """The sum over CPUs of one entry of a per-CPU array of ``__u64``."""
        values = (ctypes.c_uint64 * self.cpus)()
        key = StatKey(index)
        ret = _lib.bpf_map_lookup_elem(counters.fd, ctypes.byref(key), values)
        if ret < 0:
            raise _libbpf.BpfError(-ret, f"reading map {counters.name}")
        return sum(values)

    def drain(self, sums: BpfMap[Any, Any], chunk: int = 1024) -> list[tuple[bytes, int]]:
        """Take every entry out of a per-CPU hash of flow sums: (key bytes, flows summed over CPUs).

        The kernel reads and deletes each bucket under its lock, so a flow is counted in
        exactly one drain (an update racing the deletion on another CPU may be lost).
        """
        ksize = ctypes.sizeof(FlowSumKey)
        keys = (ctypes.c_uint8 * (ksize * chunk))()
        values = (ctypes.c_uint64 * (self.cpus * chunk))()
        token_in = (ctypes.c_uint8 * 8)()
        token_out = (ctypes.c_uint8 * 8)()
        out: list[tuple[bytes, int]] = []
        first = True
        while True:
            count = ctypes.c_uint32(chunk)
            ret = _lib.bpf_map_lookup_and_delete_batch(sums.fd, None if first else token_in, token_out, keys, values,
                                                       ctypes.byref(count), None)
            if ret < 0 and ret != -2:
                raise _libbpf.BpfError(-ret, f"draining map {sums.name}")
            raw = bytes(keys)
            for i in range(count.value):
                total = sum(values[i * self.cpus:(i + 1) * self.cpus])
                if total:
                    out.append((raw[i * ksize:(i + 1) * ksize], total))
            if ret == -2:
                return out
            ctypes.memmove(token_in, token_out, 8)
            first = False
