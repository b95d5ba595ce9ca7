"""Pieces the benchmarks share: leftovers of killed runs, signals, and robust statistics."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import statistics
import subprocess
from collections.abc import Iterator
from pathlib import Path


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: unwind and clean up like Ctrl-C does."""


def alive(pid: int) -> bool:
    """True while a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner(prefix: str, name: str) -> int | None:
    """The pid a run embedded in a ``<prefix>-<pid>-...`` name, or ``None``."""
    m = re.match(rf"^{re.escape(prefix)}-(\d+)-", name)
    return int(m.group(1)) if m else None


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Let cleanup finish even if the user presses Ctrl-C again."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    """First quartile, median, third quartile."""
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def ratio_text(xs: list[float]) -> str:
    """Median of per-round ratios with the interquartile range."""
    q1, m, q3 = quartiles(xs)
    return f"{m:5.3f} [{q1:.3f}-{q3:.3f}]"


def compile_tool(source: Path, directory: Path) -> Path:
    """``source`` (a C file of bench/tools) built with gcc -O2 into ``directory``; the binary."""
    binary = directory / source.stem
    done = subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", str(binary), str(source)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"building {source} failed: {done.stderr}")
    return binary


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root``."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total
