"""Finding the cgroup v2 hierarchy and validating cgroup paths (never hard-coded)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ._errors import DatapathError

__all__ = ["cgroup2_mount", "cgroup_id", "resolve_cgroup"]


def _unescape(field: str) -> str:
    # /proc/self/mounts escapes space, tab, newline and backslash as octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _cgroup2_mounts() -> list[Path]:
    out = []
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "cgroup2":
                out.append(Path(_unescape(parts[1])))
    return out


def cgroup2_mount() -> Path:
    """Where the cgroup v2 hierarchy is mounted, from /proc/self/mounts."""
    mounts = _cgroup2_mounts()
    if not mounts:
        raise DatapathError("no cgroup2 filesystem is mounted (see /proc/self/mounts); mount one first")
    return mounts[0]


def resolve_cgroup(path: str | os.PathLike[str]) -> Path:
    """An existing cgroup v2 directory; a relative path is taken under the cgroup2 mount."""
    p = Path(path)
    if not p.is_absolute():
        p = cgroup2_mount() / p
    if not p.is_dir():
        raise DatapathError(f"cgroup {p} does not exist: create the cgroup v2 directory first")
    real = p.resolve()
    if not any(real == m or m in real.parents for m in _cgroup2_mounts()):
        raise DatapathError(
            f"{p} is not inside a cgroup v2 hierarchy (cgroup2 is mounted at "
            f"{', '.join(map(str, _cgroup2_mounts())) or 'nowhere'})"
        )
    return real


def cgroup_id(path: Path) -> int:
    """The kernel's id for a cgroup v2 directory (its inode number)."""
    return os.stat(path).st_ino
