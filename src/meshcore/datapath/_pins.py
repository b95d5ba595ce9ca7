"""One node's pins in bpffs: loading and attaching the socket LB, re-opening, detaching.

Layout under ``<pin_root>/<node>/``: ``maps/<map>`` for every map of the object and
``links/<program>`` for every cgroup link. Pinned links keep the programs attached and the
pinned maps keep their entries when no process holds them any more.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import attrs

from . import _libbpf
from ._cgroup import cgroup_id
from ._errors import DatapathError
from ._loader import BpfLink, BpfObject, map_fd_by_id, map_info, prog_fd_by_id, prog_map_ids
from ._pinned import detach_pinned_links, open_pinned_map, remove_empty_dirs
from ._types import LbSettings
from .maps import ALL_SPECS, BpfMap, MapSpec

__all__ = ["PROGRAMS", "NodePins"]

PROGRAMS = (
    "lb_connect4", "lb_connect6", "lb_sendmsg4", "lb_sendmsg6",
    "lb_recvmsg4", "lb_recvmsg6", "lb_getpeername4", "lb_getpeername6",
)


@attrs.frozen
class NodePins:
    """The pin directory of one node and what can be done with it."""

    node: str
    root: Path

    @property
    def maps_dir(self) -> Path:
        """Where the maps are pinned."""
        return self.root / "maps"

    @property
    def links_dir(self) -> Path:
        """Where the cgroup links are pinned."""
        return self.root / "links"

    def complete(self) -> bool:
        """True if every map and every link is pinned."""
        return all((self.links_dir / p).exists() for p in PROGRAMS) and all(
            (self.maps_dir / s.name).exists() for s in ALL_SPECS
        )

    def attach(self, obj: BpfObject, cgroup: Path, settings: LbSettings) -> None:
        """Load ``obj`` with ``settings`` (reusing pinned maps) and attach or swap every link."""
        for name, raw in settings.to_globals().items():
            obj.set_global(name, raw)
        self.maps_dir.mkdir(parents=True, exist_ok=True)
        self.links_dir.mkdir(parents=True, exist_ok=True)
        for spec in ALL_SPECS:
            obj.set_pin_path(spec.name, self.maps_dir / spec.name)
        obj.load()
        for prog in PROGRAMS:
            pin = self.links_dir / prog
            if pin.exists() and self.check_link(pin, cgroup, repair=True):
                # Swap the program under the existing link: the hook is never empty.
                with BpfLink.open_pinned(pin) as link:
                    link.update_program(prog, obj)
                continue
            with obj.attach_cgroup(prog, cgroup) as link:
                link.pin(pin)

    def check_links(self, cgroup: Path) -> None:
        """Raise unless every pinned link is live on ``cgroup``."""
        for prog in PROGRAMS:
            self.check_link(self.links_dir / prog, cgroup, repair=False)

    def check_link(self, pin: Path, cgroup: Path, *, repair: bool) -> bool:
        """True if the pinned link is live on ``cgroup``; with ``repair`` a defunct one is unpinned."""
        with BpfLink.open_pinned(pin) as link:
            info = link.info()
        if info.cgroup_id == cgroup_id(cgroup):
            return True
        if info.cgroup_id == 0:  # its cgroup was deleted: the link enforces nothing
            if repair:
                pin.unlink()
                return False
            raise DatapathError(
                f"node {self.node}: pinned link {pin} belongs to a cgroup that no longer exists; "
                "call destroy() and attach again"
            )
        raise DatapathError(
            f"node {self.node} is already attached to another cgroup (id {info.cgroup_id}), "
            f"not {cgroup}: call destroy() first or use another node name"
        )

    def loaded_settings(self, obj: BpfObject) -> LbSettings | None:
        """Settings of the programs behind the pinned links, read from their ``.rodata``."""
        pin = self.links_dir / PROGRAMS[0]
        if not pin.exists():
            return None
        try:
            with BpfLink.open_pinned(pin) as link:
                prog_id = link.info().prog_id
            prog_fd = prog_fd_by_id(prog_id)
        except _libbpf.BpfError:
            return None
        try:
            for map_id in prog_map_ids(prog_fd):
                fd = map_fd_by_id(map_id)
                try:
                    info = map_info(fd)
                    if not info.name.endswith(".rodata"):
                        continue
                    buf = ctypes.create_string_buffer(info.value_size)
                    key = ctypes.c_uint32(0)
                    _libbpf.call_int("reading .rodata", _libbpf.lib.bpf_map_lookup_elem, fd, ctypes.byref(key), buf)
                    return LbSettings.from_globals(
                        {n: buf.raw[off:off + size] for n, (off, size) in obj.globals().items()}
                    )
                finally:
                    os.close(fd)
        finally:
            os.close(prog_fd)
        return None

    def open_map(self, spec: MapSpec) -> BpfMap:  # type: ignore[type-arg]
        """Open a pinned map, refusing one whose key/value sizes differ from the mirror's."""
        return open_pinned_map(spec, self.maps_dir / spec.name)

    def destroy(self) -> None:
        """Detach every link now and remove this node's pins and (empty) directories."""
        detach_pinned_links(self.links_dir, PROGRAMS)
        for spec in ALL_SPECS:
            (self.maps_dir / spec.name).unlink(missing_ok=True)
        remove_empty_dirs((self.links_dir, self.maps_dir, self.root, self.root.parent))
