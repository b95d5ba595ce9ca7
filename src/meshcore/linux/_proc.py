"""Telling processes apart: a pid plus its start time names one process, never a recycled pid."""

from __future__ import annotations

__all__ = ["alive", "start_time", "stat_fields"]


def stat_fields(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a process from /proc/<pid>/stat, or ``None`` if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    rest = data[data.rindex(b")") + 2:].split()
    return rest[0].decode(), int(rest[19])


def start_time(pid: int) -> int:
    """The start time of ``pid`` in clock ticks since boot (0 when it is gone)."""
    fields = stat_fields(pid)
    return fields[1] if fields else 0


def alive(pid: int, started: int) -> bool:
    """True when ``pid`` is still the process that started at ``started`` and is not a zombie."""
    if pid <= 0:
        return False
    fields = stat_fields(pid)
    return fields is not None and fields[1] == started and fields[0] != "Z"
