"""cgroup v2 directories for the lab, its pods and its agent."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path


def create(path: Path) -> None:
    """Create the cgroup ``path`` (and missing parents)."""
    path.mkdir(parents=True, exist_ok=True)


def pids(path: Path) -> list[int]:
    """Pids of every process in ``path`` and its descendants."""
    found: list[int] = []
    if not path.is_dir():
        return found
    for directory, _, _ in os.walk(path):
        with contextlib.suppress(FileNotFoundError):
            text = (Path(directory) / "cgroup.procs").read_text()
            found.extend(int(x) for x in text.split())
    return found


def populated(path: Path) -> bool:
    """True while any process lives in ``path`` or below."""
    try:
        for line in (path / "cgroup.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "populated":
                return value.strip() == "1"
    except FileNotFoundError:
        return False
    return bool(pids(path))


def kill(path: Path, timeout: float = 5.0) -> bool:
    """SIGKILL every process in ``path`` and below; True once the subtree is empty."""
    if not path.is_dir():
        return True
    kill_file = path / "cgroup.kill"
    deadline = time.monotonic() + timeout
    while populated(path):
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        else:  # kernels before 5.14 have no cgroup.kill
            for pid in pids(path):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def remove_tree(path: Path) -> list[str]:
    """Remove the cgroup ``path`` and its descendants (deepest first); returns failures."""
    failures: list[str] = []
    if not path.is_dir():
        return failures
    for directory, _, _ in sorted(os.walk(path), key=lambda entry: -entry[0].count("/")):
        for attempt in range(50):
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                # A process that just died may still be leaving the cgroup: retry briefly.
                if exc.errno != errno.EBUSY or attempt == 49:
                    failures.append(f"{directory}: {exc.strerror}")
                    break
                time.sleep(0.02)
    return failures
