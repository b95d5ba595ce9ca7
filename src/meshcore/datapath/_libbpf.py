"""ctypes bindings to libbpf.so.1, limited to what meshcore uses.

libbpf 1.x reports errors as negative errno return values (or NULL with ``errno`` set);
every wrapper here turns them into :class:`BpfError` carrying the errno and the last lines
libbpf printed while the call ran (the verifier log, a reason for a pin mismatch, ...).
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno as errno_mod
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ._errors import DatapathError

__all__ = ["BpfError", "lib", "call_int", "call_ptr", "captured"]


class BpfError(DatapathError, OSError):
    """A libbpf or bpf(2) call failed; ``errno`` is set and the message includes libbpf's log."""

    def __init__(self, err: int, message: str, log: tuple[str, ...] = ()) -> None:
        text = f"{message}: {_describe(err)}"
        if log:
            text += "\nlibbpf said:\n  " + "\n  ".join(log)
        super().__init__(err, text)
        self.log = log

    def __str__(self) -> str:
        return str(self.args[1])


_LIBBPF_ERRNO_BASE = 4000  # libbpf's own error codes (bad ELF, relocation, ...) start here


def _describe(err: int) -> str:
    if not err:
        return "failed"
    if err >= _LIBBPF_ERRNO_BASE and "lib" in globals():
        buf = ctypes.create_string_buffer(256)
        lib.libbpf_strerror(err, buf, len(buf))
        return buf.value.decode(errors="replace")
    return os.strerror(err)


# libbpf 1.1's print callback: int (*)(enum libbpf_print_level, const char *, va_list).
# On x86-64 a va_list argument decays to a pointer, and on arm64 the 32-byte va_list is
# passed by reference too, so c_void_p carries it to vsnprintf unchanged.
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_LOG_LINES = 400
_log: collections.deque[tuple[int, str]] = collections.deque(maxlen=_LOG_LINES)
_log_seq = 0
_log_lock = threading.Lock()
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_libc.vsnprintf.restype = ctypes.c_int


def _on_print(level: int, fmt: bytes | None, args: int | None) -> int:
    """Keep libbpf's messages so errors can quote them instead of printing to stderr."""
    global _log_seq
    if fmt is None:
        return 0
    buf = ctypes.create_string_buffer(2048)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    text = buf.value.decode(errors="replace")
    with _log_lock:
        for line in text.rstrip("\n").split("\n"):
            _log_seq += 1
            _log.append((_log_seq, line))
    return 0


_print_cb = _PRINT_FN(_on_print)  # kept referenced for the process lifetime


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    for candidate in ("libbpf.so.1", name):
        try:
            return ctypes.CDLL(candidate, use_errno=True)
        except OSError:
            continue
    raise BpfError(errno_mod.ENOENT, "cannot load libbpf.so.1 (install the Debian package libbpf1)")


lib = _load()

_P = ctypes.c_void_p
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "libbpf_set_print": (_P, [_PRINT_FN]),
    "libbpf_strerror": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]),
    "bpf_object__open_file": (_P, [ctypes.c_char_p, _P]),
    "bpf_object__load": (ctypes.c_int, [_P]),
    "bpf_object__close": (None, [_P]),
    "bpf_object__btf": (_P, [_P]),
    "bpf_object__find_map_by_name": (_P, [_P, ctypes.c_char_p]),
    "bpf_object__find_program_by_name": (_P, [_P, ctypes.c_char_p]),
    "bpf_object__next_program": (_P, [_P, _P]),
    "bpf_object__next_map": (_P, [_P, _P]),
    "bpf_map__name": (ctypes.c_char_p, [_P]),
    "bpf_map__fd": (ctypes.c_int, [_P]),
    "bpf_map__set_pin_path": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "bpf_map__max_entries": (ctypes.c_uint32, [_P]),
    "bpf_map__set_max_entries": (ctypes.c_int, [_P, ctypes.c_uint32]),
    "bpf_map__key_size": (ctypes.c_uint32, [_P]),
    "bpf_map__value_size": (ctypes.c_uint32, [_P]),
    "bpf_map__btf_key_type_id": (ctypes.c_uint32, [_P]),
    "bpf_map__btf_value_type_id": (ctypes.c_uint32, [_P]),
    "bpf_map__initial_value": (_P, [_P, ctypes.POINTER(ctypes.c_size_t)]),
    "bpf_program__name": (ctypes.c_char_p, [_P]),
    "bpf_program__attach_cgroup": (_P, [_P, ctypes.c_int]),
    "bpf_program__attach_netns": (_P, [_P, ctypes.c_int]),
    "bpf_link__pin": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "bpf_link__open": (_P, [ctypes.c_char_p]),
    "bpf_link__fd": (ctypes.c_int, [_P]),
    "bpf_link__destroy": (ctypes.c_int, [_P]),
    "bpf_link__update_program": (ctypes.c_int, [_P, _P]),
    "bpf_link_detach": (ctypes.c_int, [ctypes.c_int]),
    "bpf_map_update_elem": (ctypes.c_int, [ctypes.c_int, _P, _P, ctypes.c_uint64]),
    "bpf_map_lookup_elem": (ctypes.c_int, [ctypes.c_int, _P, _P]),
    "bpf_map_delete_elem": (ctypes.c_int, [ctypes.c_int, _P]),
    "bpf_map_lookup_and_delete_elem": (ctypes.c_int, [ctypes.c_int, _P, _P]),
    "bpf_map_get_next_key": (ctypes.c_int, [ctypes.c_int, _P, _P]),
    "bpf_map_lookup_batch": (ctypes.c_int, [ctypes.c_int, _P, _P, _P, _P, ctypes.POINTER(ctypes.c_uint32), _P]),
    "bpf_obj_get": (ctypes.c_int, [ctypes.c_char_p]),
    "bpf_map_get_fd_by_id": (ctypes.c_int, [ctypes.c_uint32]),
    "bpf_prog_get_fd_by_id": (ctypes.c_int, [ctypes.c_uint32]),
    "bpf_obj_pin": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p]),
    "bpf_obj_get_info_by_fd": (ctypes.c_int, [ctypes.c_int, _P, ctypes.POINTER(ctypes.c_uint32)]),
    "btf__parse": (_P, [ctypes.c_char_p, _P]),
    "btf__free": (None, [_P]),
    "btf__type_cnt": (ctypes.c_uint32, [_P]),
    "btf__type_by_id": (_P, [_P, ctypes.c_uint32]),
    "btf__name_by_offset": (ctypes.c_char_p, [_P, ctypes.c_uint32]),
    "btf__find_by_name_kind": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_uint32]),
    "btf__resolve_size": (ctypes.c_int64, [_P, ctypes.c_uint32]),
    "btf__resolve_type": (ctypes.c_int, [_P, ctypes.c_uint32]),
}

for _name, (_restype, _argtypes) in _SIGNATURES.items():
    _fn = getattr(lib, _name)
    _fn.restype = _restype
    _fn.argtypes = _argtypes

lib.libbpf_set_print(_print_cb)


def _log_since(mark: int, limit: int = 40) -> tuple[str, ...]:
    with _log_lock:
        lines = [line for seq, line in _log if seq > mark]
    return tuple(lines[-limit:])


def _log_mark() -> int:
    with _log_lock:
        return _log_seq


@contextmanager
def captured() -> Iterator[Callable[[], tuple[str, ...]]]:
    """Yield a function returning libbpf's messages printed inside the ``with`` block."""
    mark = _log_mark()
    yield lambda: _log_since(mark)


def call_int(what: str, fn: Callable[..., int], *args: Any) -> int:
    """Call a libbpf function returning int; a negative result raises :class:`BpfError`."""
    mark = _log_mark()
    ret = fn(*args)
    if ret < 0:
        err = -ret  # libbpf 1.x returns -errno directly
        raise BpfError(err, what, _log_since(mark))
    return ret


def call_ptr(what: str, fn: Callable[..., int | None], *args: Any) -> int:
    """Call a libbpf function returning a pointer; NULL raises :class:`BpfError` with errno."""
    mark = _log_mark()
    ctypes.set_errno(0)
    ret = fn(*args)
    if not ret:
        raise BpfError(ctypes.get_errno() or errno_mod.EINVAL, what, _log_since(mark))
    return ret
