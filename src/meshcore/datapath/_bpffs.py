"""Where the datapath pins: under the BPF filesystem, mounted first when it is missing."""

from __future__ import annotations

from pathlib import Path

from .. import linux
from ._errors import DatapathError

__all__ = ["PIN_PARENT", "default_pin_root", "pins_on_bpffs"]

#: Every node's pins live under ``<bpffs>/meshcore/<node>``.
PIN_PARENT = "meshcore"


def default_pin_root() -> Path:
    """``<bpffs>/meshcore``, mounting the BPF filesystem when it is missing (as root)."""
    try:
        return linux.bpffs() / PIN_PARENT
    except linux.HostError as exc:
        raise DatapathError(str(exc)) from None


def pins_on_bpffs(pin_dir: Path) -> Path:
    """``pin_dir`` once it lies on a BPF filesystem (the default one is mounted when missing)."""
    try:
        return linux.on_bpffs(pin_dir)
    except linux.HostError as exc:
        raise DatapathError(str(exc)) from None
