"""Removing a lab node's eBPF datapath: its programs detached, its pins gone (the agent applies it)."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from ..datapath import SocketLB


def destroy(node: str, cgroup: str, pin_dir: str) -> list[str]:
    """Detach the lab's programs and remove its pins; returns what could not be removed."""
    problems = []
    try:
        SocketLB(node, cgroup, Path(pin_dir).parent).destroy()
    except Exception as exc:  # noqa: BLE001 - whatever failed, the pins are removed below
        problems.append(f"datapath destroy: {exc}")
    pins = Path(pin_dir)
    if pins.exists():
        # Unpinning is unlinking: programs, maps and links go once nothing else holds them.
        shutil.rmtree(pins, ignore_errors=True)
    if pins.exists():
        problems.append(f"{pins}: could not be removed")
    else:
        problems.clear()
        with contextlib.suppress(OSError):
            pins.parent.rmdir()  # the shared meshcore directory, once no other node pins there
    return problems
