"""tc attachment (libbpf's bpf_tc_*), ring buffers and entering a network namespace.

libbpf 1.1 attaches tc programs through netlink in the calling thread's network
namespace, so :func:`in_netns` switches only this thread into the target namespace for
the duration of a ``with`` block. Filters live as long as their interface: no process or
pin needs to hold them.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .. import linux
from . import _libbpf
from ._errors import DatapathError

__all__ = ["INGRESS", "EGRESS", "RingBuffer", "in_netns", "tc_attach", "tc_detach", "ifindex_of"]

INGRESS = 1  # BPF_TC_INGRESS
EGRESS = 2   # BPF_TC_EGRESS
_F_REPLACE = 1  # BPF_TC_F_REPLACE
_HANDLE = 0x4D43  # "MC": our filters' handle on every hook
_PRIORITY = 1


class _TcHook(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("ifindex", ctypes.c_int), ("attach_point", ctypes.c_int),
                ("parent", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class _TcOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("prog_fd", ctypes.c_int), ("flags", ctypes.c_uint32),
                ("prog_id", ctypes.c_uint32), ("handle", ctypes.c_uint32), ("priority", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_P = ctypes.c_void_p
for _name, _res, _args in (
    ("bpf_tc_hook_create", ctypes.c_int, [ctypes.POINTER(_TcHook)]),
    ("bpf_tc_attach", ctypes.c_int, [ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts)]),
    ("bpf_tc_detach", ctypes.c_int, [ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts)]),
    ("bpf_program__fd", ctypes.c_int, [_P]),
    ("ring_buffer__new", _P, [ctypes.c_int, _SAMPLE_FN, _P, _P]),
    ("ring_buffer__poll", ctypes.c_int, [_P, ctypes.c_int]),
    ("ring_buffer__free", None, [_P]),
):
    _fn = getattr(_libbpf.lib, _name)
    _fn.restype = _res
    _fn.argtypes = _args

@contextmanager
def in_netns(netns: str | os.PathLike[str] | None) -> Iterator[None]:
    """Run the block with this thread in ``netns`` (a name under /run/netns or a path)."""
    try:
        with linux.in_netns(netns):
            yield
    except linux.HostError as exc:
        raise DatapathError(str(exc)) from None


def ifindex_of(interface: str) -> int:
    """The index of ``interface`` in this thread's network namespace."""
    try:
        return socket.if_nametoindex(interface)
    except OSError as e:
        raise DatapathError(f"interface {interface!r} does not exist in this network namespace") from e


def _hook(ifindex: int, point: int) -> _TcHook:
    return _TcHook(sz=ctypes.sizeof(_TcHook), ifindex=ifindex, attach_point=point)


def tc_attach(ifindex: int, point: int, prog: int, what: str) -> None:
    """Attach (or atomically replace) our filter on the clsact hook of ``ifindex``."""
    hook = _hook(ifindex, point)
    ret = _libbpf.lib.bpf_tc_hook_create(ctypes.byref(hook))
    if ret < 0 and ret != -errno_mod.EEXIST:
        raise _libbpf.BpfError(-ret, f"creating the clsact qdisc for {what}")
    fd = _libbpf.call_int(f"fd of program for {what}", _libbpf.lib.bpf_program__fd, prog)
    opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), prog_fd=fd, flags=_F_REPLACE, handle=_HANDLE, priority=_PRIORITY)
    _libbpf.call_int(f"attaching {what}", _libbpf.lib.bpf_tc_attach, ctypes.byref(hook), ctypes.byref(opts))


def tc_detach(ifindex: int, point: int) -> bool:
    """Remove our filter from the hook; False if it (or the interface) is gone."""
    hook = _hook(ifindex, point)
    opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), handle=_HANDLE, priority=_PRIORITY)
    ret = _libbpf.lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts))
    if ret in (-errno_mod.ENOENT, -errno_mod.ENODEV, -errno_mod.EINVAL):
        return False
    if ret < 0:
        raise _libbpf.BpfError(-ret, f"detaching the policy filter from ifindex {ifindex}")
    return True


class RingBuffer:
    """A libbpf ring buffer consumer calling ``on_sample(bytes)`` for each record."""

    def __init__(self, map_fd: int, on_sample: Callable[[bytes], None]) -> None:
        def sample(_ctx: int | None, data: int | None, size: int) -> int:
            on_sample(ctypes.string_at(data or 0, size))
            return 0

        self._cb = _SAMPLE_FN(sample)  # referenced for as long as the buffer lives
        self._ptr: int = _libbpf.call_ptr("opening the event ring buffer", _libbpf.lib.ring_buffer__new,
                                          map_fd, self._cb, None, None)

    def poll(self, timeout_ms: int) -> int:
        """Deliver available records, waiting up to ``timeout_ms``; returns how many."""
        ret = int(_libbpf.lib.ring_buffer__poll(self._ptr, timeout_ms))
        if ret < 0 and ret != -errno_mod.EINTR:
            raise _libbpf.BpfError(-ret, "polling the event ring buffer")
        return max(ret, 0)

    def close(self) -> None:
        """Free the consumer."""
        if self._ptr:
            _libbpf.lib.ring_buffer__free(self._ptr)
            self._ptr = 0
