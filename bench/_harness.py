"""Pieces the benchmarks share: leftovers of killed runs, signals, and robust statistics."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import statistics
from collections.abc import Iterator


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
