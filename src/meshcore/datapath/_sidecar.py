"""SidecarSteering: the kernel's half of sidecars, per pod, on one node.

``sidecar.bpf.o`` is loaded once per node (maps pinned under ``<pin_root>/<node>/sidecar/maps``).
For each pod with a sidecar its connect4/6, sockops and getsockopt programs are attached at
the pod's cgroup — programs of a cgroup run before those of its ancestors, so they see a
connection before the node's socket LB and tunnel steering do — and its sk_lookup program
to the pod's network namespace; the links are pinned under ``pods/<namespace>_<pod>/`` and
what was attached for each pod is recorded in a JSON file its owner names (bpffs holds no
regular files).
Steering itself is a flag in the maps (see bpf/sidecar.bpf.c): a pod is attached first,
with steering off, so its sidecar's listeners are recorded as they open, and its
connections are steered only once its sidecar serves.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from .. import linux
from . import _libbpf
from ._bpffs import default_pin_root, pins_on_bpffs
from ._cgroup import cgroup_id, resolve_cgroup
from ._loader import BpfLink, BpfObject, object_path
from ._pinned import detach_pinned_links, open_pinned_map, remove_empty_dirs
from .maps import BpfMap
from .maps._base import set_addr
from .maps._steer import SteerDestKey, pack_dest_key
from .maps.sidecar import (
    INBOUND,
    PODS,
    SC_F_CAPTURE,
    SC_IN_CAPTURE,
    SIDECAR_SPECS,
    STEER,
    ScAddrKey,
    ScInbound,
    ScPod,
)

__all__ = ["SidecarChange", "SidecarPod", "SidecarSteering", "netns_cookie"]

OBJECT_NAME = "sidecar"
CGROUP_PROGRAMS = ("sc_connect4", "sc_connect6", "sc_sockops", "sc_getsockopt")
NETNS_PROGRAM = "sc_lookup"
#: Every map of the object, pinned (the cookie map is the kernel's own scratch space).
_MAP_NAMES = ("sc_pods", "sc_cookies", "sc_origs", "sc_steer", "sc_inbound", "sc_listeners")
_SO_NETNS_COOKIE = 71


def netns_cookie(netns: str | os.PathLike[str]) -> int:
    """The kernel's cookie of a network namespace (what BPF programs running in it see)."""
    with linux.socket_in_netns(netns) as sock:
        return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8), "little")


@attrs.frozen
class SidecarPod:
    """A pod with a sidecar: where it lives, its sidecar's listeners, and whether steering is on.

    ``cgroup`` is the pod's cgroup (its processes' and its sidecar's, below it),
    ``sidecar_cgroup`` the sidecar's own; ``netns`` the pod's network namespace file.
    """

    key: str
    cgroup: Path = attrs.field(converter=Path)
    sidecar_cgroup: Path = attrs.field(converter=Path)
    netns: Path = attrs.field(converter=Path)
    addresses: tuple[str, ...]
    outbound_port: int
    inbound_port: int
    capture: bool = False


@attrs.frozen
class SidecarChange:
    """What one apply did: pods attached and detached, pods whose steering turned on or off."""

    attached: tuple[str, ...] = ()
    detached: tuple[str, ...] = ()
    capturing: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    steer_changed: int = 0

    @property
    def changed(self) -> bool:
        """True when anything was attached, detached, switched or rewritten."""
        return bool(self.attached or self.detached or self.capturing or self.released or self.steer_changed)

    def summary(self) -> str:
        """One line for logs and reports."""
        return (f"sidecars +{len(self.attached)} -{len(self.detached)}, steering on {len(self.capturing)} "
                f"off {len(self.released)}, tunnel destinations ~{self.steer_changed}")


def _addr_key(address: str) -> ScAddrKey:
    key = ScAddrKey()
    set_addr(key.addr, address)
    return key


def _pod_dir(key: str) -> str:
    namespace, _, name = key.partition("/")
    return f"{namespace}_{name}"  # '_' occurs in neither a namespace nor a pod name


class SidecarSteering:
    """The node's sidecar pods in the kernel: attached programs, steering flags and tunnel destinations.

    ``records`` is the file recording what was attached for each pod.
    """

    def __init__(self, node: str, records: Path, pin_root: Path | None = None) -> None:
        self.node = node
        self.records = Path(records)
        self.root = Path(pin_root if pin_root is not None else default_pin_root()) / node / "sidecar"
        self._obj: BpfObject | None = None
        self._maps: dict[str, BpfMap] = {}  # type: ignore[type-arg]
        self._steer: dict[bytes, int] | None = None

    def open(self) -> SidecarSteering:
        """Load the object (reusing pinned maps) and open the maps; attaching pods needs it loaded."""
        if self._obj is not None:
            return self
        pins_on_bpffs(self.root.parent)
        maps_dir = self.root / "maps"
        maps_dir.mkdir(parents=True, exist_ok=True)
        obj = BpfObject.open(object_path(OBJECT_NAME))
        try:
            for checked in (PODS, STEER, INBOUND):
                obj.check_mirror(checked)
            for name in _MAP_NAMES:
                obj.set_pin_path(name, maps_dir / name)
            obj.load()
        except BaseException:
            obj.close()
            raise
        self._obj = obj
        for spec in SIDECAR_SPECS:
            self._maps[spec.name] = open_pinned_map(spec, maps_dir / spec.name)
        return self

    # ------------------------------------------------------------------ pods

    def held(self) -> dict[str, dict[str, object]]:
        """The pods attached now, by key, with what was recorded when they were."""
        try:
            data = json.loads(self.records.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}

    def _save(self, held: dict[str, dict[str, object]]) -> None:
        tmp = self.records.with_name(f".{self.records.name}.tmp")
        tmp.write_text(json.dumps(held, sort_keys=True), encoding="utf-8")
        tmp.replace(self.records)

    def apply(self, pods: Sequence[SidecarPod]) -> SidecarChange:
        """Make exactly ``pods`` attached, each steered or not as it says; others are detached.

        A pod is attached (programs, its addresses' inbound entries, its namespace's entry)
        before its steering is turned on, and its steering off before it is detached.
        """
        self.open()
        held = self.held()
        wanted = {p.key: p for p in pods}
        attached, capturing, released = [], [], []
        for pod in pods:
            before = held.get(pod.key)
            cookie = netns_cookie(pod.netns)
            fresh = self._attach(pod, before, cookie)
            if fresh:
                attached.append(pod.key)
            was = bool(before and before.get("capture")) and not fresh
            held[pod.key] = self._write(pod, cookie)
            self._save(held)
            if pod.capture and not was:
                capturing.append(pod.key)
            elif was and not pod.capture:
                released.append(pod.key)
        detached = []
        for key, record in list(held.items()):
            if key not in wanted:
                self._detach(key, record)
                del held[key]
                self._save(held)
                detached.append(key)
        return SidecarChange(tuple(attached), tuple(detached), tuple(capturing), tuple(released))

    def _attach(self, pod: SidecarPod, before: dict[str, object] | None, cookie: int) -> bool:
        """Attach the pod's programs unless they are attached to this very cgroup and namespace; True when attached now."""
        assert self._obj is not None
        cgroup = resolve_cgroup(pod.cgroup)
        links = self.root / "pods" / _pod_dir(pod.key)
        same = (before is not None and before.get("cgroup_id") == cgroup_id(cgroup) and before.get("netns") == cookie
                and all((links / p).exists() for p in (*CGROUP_PROGRAMS, NETNS_PROGRAM)))
        if same and self._links_live(links, cgroup_id(cgroup)):
            return False
        if before is not None:
            self._detach(pod.key, before)
        self._detach_pins(links)  # left by an attach that did not finish
        links.mkdir(parents=True, exist_ok=True)
        for prog in CGROUP_PROGRAMS:
            with self._obj.attach_cgroup(prog, cgroup) as link:
                link.pin(links / prog)
        with self._obj.attach_netns(NETNS_PROGRAM, pod.netns) as link:
            link.pin(links / NETNS_PROGRAM)
        return True

    @staticmethod
    def _links_live(links: Path, cgroup: int) -> bool:
        """True when the pinned cgroup links still hold the pod's cgroup (a removed cgroup leaves them defunct)."""
        for prog in CGROUP_PROGRAMS:
            try:
                with BpfLink.open_pinned(links / prog) as link:
                    if link.info().cgroup_id != cgroup:
                        return False
            except _libbpf.BpfError:
                return False
        return True

    def _write(self, pod: SidecarPod, cookie: int) -> dict[str, object]:
        """The pod's inbound entries, then its namespace's (steering last, on or off as it says); its record."""
        inbound = self._maps[INBOUND.name]
        for address in pod.addresses:
            inbound.update(_addr_key(address), ScInbound(SC_IN_CAPTURE if pod.capture else 0, pod.inbound_port))
        # The sidecar's cgroup appears with the sidecar; steering needs it (its own connections are exempt).
        sidecar = cgroup_id(resolve_cgroup(pod.sidecar_cgroup)) if pod.capture or pod.sidecar_cgroup.is_dir() else 0
        value = ScPod(sidecar, SC_F_CAPTURE if pod.capture else 0, socket.htons(pod.outbound_port))
        self._maps[PODS.name].update(ctypes.c_uint64(cookie), value)
        return {"netns": cookie, "cgroup_id": cgroup_id(resolve_cgroup(pod.cgroup)),
                "addresses": list(pod.addresses), "capture": pod.capture}

    def _detach(self, key: str, record: dict[str, object]) -> None:
        """Steering off, entries removed, links detached and unpinned."""
        cookie = record.get("netns")
        if isinstance(cookie, int):
            self._maps[PODS.name].delete(ctypes.c_uint64(cookie))
        addresses = record.get("addresses")
        for address in addresses if isinstance(addresses, list) else ():
            if isinstance(address, str):
                self._maps[INBOUND.name].delete(_addr_key(address))
        self._detach_pins(self.root / "pods" / _pod_dir(key))

    @staticmethod
    def _detach_pins(links: Path) -> None:
        """Detach and unpin every link pinned in ``links``, then remove it."""
        detach_pinned_links(links, (*CGROUP_PROGRAMS, NETNS_PROGRAM))
        remove_empty_dirs((links,))

    # ------------------------------------------------------------------ tunnels

    def steer(self, destinations: Iterable[tuple[str, int, bool]]) -> int:
        """Make exactly these the destinations sidecars tunnel (address, port or 0 for every port, steered or an
        exception); entries written."""
        self.open()
        want = {pack_dest_key(a, p): 1 if steered else 0 for a, p, steered in destinations}
        steer = self._maps[STEER.name]
        if self._steer is None:
            self._steer = {bytes(k): int(v.value) for k, v in steer.items()}
        changed = 0
        for key, value in want.items():
            if self._steer.get(key) != value:
                steer.update(SteerDestKey.from_buffer_copy(key), ctypes.c_uint32(value))
                changed += 1
        for key in set(self._steer) - set(want):
            steer.delete(SteerDestKey.from_buffer_copy(key))
            changed += 1
        self._steer = want
        return changed

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close handles; attached pods keep being steered."""
        for m in self._maps.values():
            m.close()
        self._maps = {}
        self._steer = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def destroy(self) -> None:
        """Detach every pod and remove the pins and the record."""
        if (self.root / "maps" / PODS.name).exists():
            self.open()
            for key, record in self.held().items():
                self._detach(key, record)
        pods = self.root / "pods"
        for links in pods.iterdir() if pods.is_dir() else ():
            self._detach_pins(links)
        self.close()
        self.records.unlink(missing_ok=True)
        for name in _MAP_NAMES:
            (self.root / "maps" / name).unlink(missing_ok=True)
        # The node's directory too, once nothing else of the node is pinned there.
        remove_empty_dirs((pods, self.root / "maps", self.root, self.root.parent))
