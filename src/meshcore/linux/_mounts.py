"""Finding, and when missing mounting, the BPF filesystem and the cgroup v2 hierarchy."""

from __future__ import annotations

import ctypes
import os
import re
from pathlib import Path

import attrs

from ._errors import HostError

__all__ = ["BPFFS_DEFAULT", "CGROUP2_FALLBACK", "Mount", "bpffs", "cgroup2", "cgroup2_mounts", "mounts", "on_bpffs"]

#: Where the BPF filesystem is mounted when no mount exists (the kernel's documented place).
BPFFS_DEFAULT = Path("/sys/fs/bpf")
#: Where a cgroup v2 hierarchy is mounted when the host has none (v1-only hosts).
CGROUP2_FALLBACK = Path("/run/meshcore/cgroupv2")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.mount.restype = ctypes.c_int


@attrs.frozen
class Mount:
    """One line of /proc/self/mounts: where, and which filesystem type."""

    point: Path
    fstype: str


def _unescape(field: str) -> str:
    # /proc/self/mounts escapes space, tab, newline and backslash as octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts() -> list[Mount]:
    """Every mount this process sees, in mount order."""
    found = []
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                found.append(Mount(Path(_unescape(parts[1])), parts[2]))
    return found


def _mount(fstype: str, target: Path, options: str) -> None:
    """mount(2) a pseudo filesystem of ``fstype`` on ``target`` (created if missing)."""
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HostError(exc.errno, f"cannot create {target} to mount {fstype} on it: {exc.strerror}") from None
    if _libc.mount(fstype.encode(), str(target).encode(), fstype.encode(), 0, options.encode()) != 0:
        err = ctypes.get_errno()
        raise HostError(err, f"cannot mount {fstype} on {target}: {os.strerror(err)}")


def _covering(path: Path, fstype: str) -> Mount | None:
    """The innermost mount holding ``path``, if it is of type ``fstype``."""
    best: Mount | None = None
    for m in mounts():
        if path == m.point or m.point in path.parents:
            if best is None or len(m.point.parts) >= len(best.point.parts):
                best = m
    return best if best is not None and best.fstype == fstype else None


def _found_or_mounted(fstype: str, what: str, preferred: Path, source: str, options: str, mount: bool) -> Path:
    """The mount point of ``fstype`` (``preferred`` first); mounted at ``preferred`` when missing, as root."""
    points = [m.point for m in mounts() if m.fstype == fstype]
    if points:
        return preferred if preferred in points else points[0]
    if not mount or os.geteuid() != 0:
        raise HostError(
            f"{what} is not mounted and meshcore is not running as root to mount it; "
            f"run as root, or mount it with `mount -t {fstype} {source} {preferred}`"
        )
    _mount(fstype, preferred, options)
    return preferred


def bpffs(*, mount: bool = True) -> Path:
    """Where the BPF filesystem is mounted (``/sys/fs/bpf`` preferred).

    With none mounted, mounts one at ``/sys/fs/bpf`` when running as root and ``mount``
    is true; otherwise raises :class:`HostError` saying how to mount it.
    """
    return _found_or_mounted("bpf", "the BPF filesystem", BPFFS_DEFAULT, "bpf", "mode=0700", mount)


def on_bpffs(path: Path) -> Path:
    """Return ``path`` once it lies on a BPF filesystem, mounting the default one if it is missing.

    Pins can only be created on bpffs; a path elsewhere gets a :class:`HostError` naming
    where the BPF filesystem is mounted.
    """
    path = Path(path)
    if _covering(path, "bpf") is None and (path == BPFFS_DEFAULT or BPFFS_DEFAULT in path.parents):
        bpffs()
    if _covering(path, "bpf") is None:
        where = ", ".join(str(m.point) for m in mounts() if m.fstype == "bpf") or "nowhere"
        raise HostError(f"{path} is not on a BPF filesystem (bpffs is mounted at: {where}); "
                        "BPF maps and links can only be pinned there")
    return path


def cgroup2_mounts() -> list[Path]:
    """Every mount point of the cgroup v2 hierarchy this process sees."""
    return [m.point for m in mounts() if m.fstype == "cgroup2"]


def cgroup2(*, mount: bool = True) -> Path:
    """Where the cgroup v2 hierarchy is mounted; mounts it at ``/run/meshcore/cgroupv2`` when missing (as root)."""
    return _found_or_mounted("cgroup2", "the cgroup v2 hierarchy", CGROUP2_FALLBACK, "none", "", mount)
