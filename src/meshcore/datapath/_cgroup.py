"""Finding the cgroup v2 hierarchy and validating cgroup paths (never hard-coded)."""

from __future__ import annotations

import os
from pathlib import Path

from .. import linux
from ._errors import DatapathError

__all__ = ["cgroup2_mount", "cgroup_id", "resolve_cgroup"]


def cgroup2_mount() -> Path:
    """Where the cgroup v2 hierarchy is mounted (mounted first when missing and running as root)."""
    try:
        return linux.cgroup2()
    except linux.HostError as exc:
        raise DatapathError(str(exc)) from None


def resolve_cgroup(path: str | os.PathLike[str]) -> Path:
    """An existing cgroup v2 directory; a relative path is taken under the cgroup2 mount."""
    p = Path(path)
    if not p.is_absolute():
        p = cgroup2_mount() / p
    if not p.is_dir():
        raise DatapathError(f"cgroup {p} does not exist: create the cgroup v2 directory first")
    real = p.resolve()
    mounts = linux.cgroup2_mounts()
    if not any(real == m or m in real.parents for m in mounts):
        raise DatapathError(
            f"{p} is not inside a cgroup v2 hierarchy (cgroup2 is mounted at "
            f"{', '.join(map(str, mounts)) or 'nowhere'})"
        )
    return real


def cgroup_id(path: Path) -> int:
    """The kernel's id for a cgroup v2 directory (its inode number)."""
    return os.stat(path).st_ino
