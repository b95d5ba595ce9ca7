"""What every pinned datapath part does with its pins: open a map, detach links, remove emptied directories."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from pathlib import Path

from . import _libbpf
from ._errors import DatapathError
from ._loader import BpfLink, map_info
from .maps import BpfMap, MapSpec

__all__ = ["detach_pinned_links", "open_pinned_map", "remove_empty_dirs"]


def open_pinned_map(spec: MapSpec, pin: Path) -> BpfMap:  # type: ignore[type-arg]
    """Open the map pinned at ``pin``, refusing one whose key/value sizes differ from the mirror's."""
    fd = _libbpf.call_int(f"opening pinned map {pin}", _libbpf.lib.bpf_obj_get, os.fsencode(pin))
    info = map_info(fd)
    if info.key_size != ctypes.sizeof(spec.key) or info.value_size != ctypes.sizeof(spec.value):
        os.close(fd)
        raise DatapathError(
            f"pinned map {pin} has key/value sizes {info.key_size}/{info.value_size} but "
            f"{spec.key.__name__}/{spec.value.__name__} are {ctypes.sizeof(spec.key)}/"
            f"{ctypes.sizeof(spec.value)}: it was created by another meshcore version; "
            "destroy the node's datapath and attach again"
        )
    return BpfMap(spec, fd)


def detach_pinned_links(links: Path, programs: Iterable[str]) -> None:
    """Detach each program's link pinned in ``links`` now, and remove its pin."""
    for prog in programs:
        pin = links / prog
        if pin.exists():
            try:
                with BpfLink.open_pinned(pin) as link:
                    link.detach()
            except _libbpf.BpfError:
                pass  # its cgroup or namespace is gone: nothing is attached any more, removing the pin frees it
            pin.unlink()


def remove_empty_dirs(dirs: Iterable[Path]) -> None:
    """Remove each directory, in order, that is empty; other parts of the node may still pin in the others."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            pass
