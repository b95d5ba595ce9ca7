"""Entering a network namespace from one thread (``setns`` moves only the calling thread)."""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._errors import HostError

__all__ = ["NETNS_RUN", "enter_netns", "in_netns", "netns_path", "socket_in_netns"]

#: Named network namespaces live here (as ``ip netns add`` creates them).
NETNS_RUN = Path("/run/netns")
_CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def netns_path(netns: str | os.PathLike[str]) -> Path:
    """The file of a network namespace: a name under /run/netns, or a path as given."""
    text = os.fspath(netns)
    return Path(text) if os.sep in text else NETNS_RUN / text


def _open(netns: str | os.PathLike[str]) -> int:
    path = netns_path(netns)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise HostError(exc.errno, f"network namespace {os.fspath(netns)!r} does not exist ({path}: {exc.strerror})") from None


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise HostError(err, f"cannot enter network namespace {what}: {os.strerror(err)}")


def enter_netns(netns: str | os.PathLike[str]) -> None:
    """Move the calling thread into ``netns`` for good (a child before exec, a dedicated thread)."""
    fd = _open(netns)
    try:
        _setns(fd, os.fspath(netns))
    finally:
        os.close(fd)


@contextmanager
def in_netns(netns: str | os.PathLike[str] | None) -> Iterator[None]:
    """Run the block with this thread in ``netns`` (None: stay), then return to where it was."""
    if netns is None:
        yield
        return
    target = _open(netns)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target, os.fspath(netns))
        try:
            yield
        finally:
            _setns(home, "of this thread")
    finally:
        os.close(target)
        os.close(home)


def socket_in_netns(netns: str | os.PathLike[str] | None, family: int = socket.AF_INET,
                    kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A new socket in ``netns`` (None: this one), usable from any thread afterwards.

    A short-lived thread enters the namespace and creates the socket, so the caller's
    thread never changes namespace.
    """
    if netns is None:
        return socket.socket(family, kind)
    result: list[socket.socket] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            enter_netns(netns)
            result.append(socket.socket(family, kind))
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{os.fspath(netns)}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
