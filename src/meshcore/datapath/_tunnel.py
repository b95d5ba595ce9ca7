"""TunnelSteering: the kernel's half of the mutual-TLS tunnels, on one node's cgroup.

``tunnel.bpf.o``'s programs (connect4/6, sendmsg4/6, sockops, getsockopt) are attached to
the node's cgroup *after* the socket LB's, so they see the backend it chose; they send
connections to meshed destinations to the node proxy's outbound tunnel listener and answer
its ``SO_ORIGINAL_DST`` (see bpf/tunnel.bpf.c). Maps and links are pinned under
``<pin_root>/<node>/tunnel/`` and outlive the agent like the socket LB's. Calls they refuse
(UDP to a STRICT destination; TCP to one the node proxy has no address for) are counted
in the kernel and taken as :class:`TunnelRefusal` through a :class:`RefusalLog`.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
from collections.abc import Iterable
from pathlib import Path

import attrs

from ..compile import TunnelPlan
from ._bpffs import default_pin_root, pins_on_bpffs
from ._cgroup import cgroup_id, resolve_cgroup
from ._errors import DatapathError
from ._loader import BpfObject, object_path
from ._pinned import detach_pinned_links, open_pinned_map, remove_empty_dirs
from .maps import BpfMap
from .maps._base import get_addr, set_addr
from .maps._steer import SteerDestKey, pack_dest_key
from .maps.tunnel import (
    CONFIG,
    DESTS,
    EXEMPT,
    REFUSALS,
    TUN_F_STEER,
    TUN_F_STRICT,
    TUN_R_NO_PROXY,
    TUN_R_UDP_STRICT,
    TUNNEL_SPECS,
    TunConfig,
    TunDestValue,
)

__all__ = ["REFUSAL_REASONS", "RefusalLog", "TunnelChange", "TunnelRefusal", "TunnelSteering"]

#: Why the kernel refused a call, as flows say it (by TUN_R_* code).
REFUSAL_REASONS = {TUN_R_UDP_STRICT: "mtls-strict-udp", TUN_R_NO_PROXY: "mtls-strict-no-proxy"}

OBJECT_NAME = "tunnel"
PROGRAMS = ("tun_connect4", "tun_connect6", "tun_sendmsg4", "tun_sendmsg6", "tun_sockops", "tun_getsockopt")


@attrs.frozen
class TunnelChange:
    """What one apply wrote: destinations added, changed and removed."""

    added: int = 0
    updated: int = 0
    removed: int = 0

    @property
    def changed(self) -> bool:
        """True when any entry was written or removed."""
        return bool(self.added or self.updated or self.removed)

    def summary(self) -> str:
        """One line for logs and reports."""
        return f"tunnel destinations +{self.added} ~{self.updated} -{self.removed}"


@attrs.frozen
class TunnelRefusal:
    """Calls refused at a client's socket since the last take, alike in client, destination, protocol and reason.

    The client is its network namespace cookie (its pod's) and cgroup id; ``source`` and
    ``source_port`` are the last refused socket's bound address and port (empty and 0
    when unbound). ``reason`` is one of :data:`REFUSAL_REASONS`' values; ``last_ns`` is the
    last refusal's time on the kernel's monotonic clock.
    """

    netns: int
    cgroup: int
    address: str
    port: int
    protocol: int
    reason: str
    count: int
    last_ns: int
    source: str = ""
    source_port: int = 0


class RefusalLog:
    """The kernel's count of refused calls (map ``tun_refusals``), through a handle of its own."""

    def __init__(self, pin: Path) -> None:
        if not pin.exists():
            raise DatapathError(f"{pin} is missing: the node's tunnel steering was attached by an older meshcore "
                                "version; destroy the node's datapath and attach again to record refused calls")
        self._map = open_pinned_map(REFUSALS, pin)

    def take(self) -> list[TunnelRefusal]:
        """Every refusal counted since the last take, removed from the kernel as it is read.

        Each entry is read and deleted in one step; a refusal counted on another CPU in
        between may be lost, never counted twice.
        """
        out = []
        for key in self._map.keys():
            value = self._map.take(key)
            if value is None or not value.count:
                continue
            address, _ = get_addr(key.addr)
            source, _ = get_addr(value.saddr)
            unbound = not any(value.saddr)
            out.append(TunnelRefusal(
                int(key.netns), int(key.cgroup), address, socket.ntohs(key.port), int(key.proto),
                REFUSAL_REASONS.get(int(key.reason), str(key.reason)), int(value.count), int(value.last_ns),
                "" if unbound else source, int(value.sport)))
        return out

    def close(self) -> None:
        """Close the handle (the map stays pinned)."""
        self._map.close()


class TunnelSteering:
    """Steering of meshed connections into the node proxy's tunnel, for every process under ``cgroup``.

    ``exempt_cgroup`` is the node proxy's own cgroup (its connections are never steered).
    """

    def __init__(self, node: str, cgroup: str | os.PathLike[str], pin_root: Path | None = None, *,
                 exempt_cgroup: str | os.PathLike[str] | None = None) -> None:
        self.node = node
        self.cgroup = Path(cgroup)
        self.root = Path(pin_root if pin_root is not None else default_pin_root()) / node / "tunnel"
        self.exempt_cgroup = Path(exempt_cgroup) if exempt_cgroup is not None else None
        self._maps: dict[str, BpfMap] = {}  # type: ignore[type-arg]
        self._held: dict[bytes, int] | None = None

    def open(self) -> TunnelSteering:
        """Attach the programs (the first time) and open the pinned maps."""
        if self._maps:
            return self
        cgroup = resolve_cgroup(self.cgroup)
        pins_on_bpffs(self.root.parent)
        maps_dir, links_dir = self.root / "maps", self.root / "links"
        if not all((links_dir / p).exists() for p in PROGRAMS):
            maps_dir.mkdir(parents=True, exist_ok=True)
            links_dir.mkdir(parents=True, exist_ok=True)
            with BpfObject.open(object_path(OBJECT_NAME)) as obj:
                for checked in (DESTS, CONFIG, REFUSALS):
                    obj.check_mirror(checked)
                for name in (s.name for s in TUNNEL_SPECS):
                    obj.set_pin_path(name, maps_dir / name)
                obj.load()
                for prog in PROGRAMS:
                    pin = links_dir / prog
                    if pin.exists():
                        continue
                    with obj.attach_cgroup(prog, cgroup) as link:
                        link.pin(pin)
        for spec in (DESTS, CONFIG, EXEMPT):
            self._maps[spec.name] = open_pinned_map(spec, maps_dir / spec.name)
        return self

    def refusal_log(self) -> RefusalLog:
        """A reader of the calls the kernel refused, with its own handle: it may be used from another thread,
        and outlives :meth:`close`. The steering must have been opened (by this process or an earlier one)."""
        return RefusalLog(self.root / "maps" / REFUSALS.name)

    def exempt(self, cgroups: Iterable[str | os.PathLike[str]]) -> int:
        """Never steer the connections of these cgroups (sidecars, which tunnel their own); entries written."""
        self.open()
        want = {cgroup_id(resolve_cgroup(c)) for c in cgroups}
        exempt = self._maps[EXEMPT.name]
        held = {int(k.value) for k, _ in exempt.items()}
        for cg in want - held:
            exempt.update(ctypes.c_uint64(cg), ctypes.c_uint32(1))
        for cg in held - want:
            exempt.delete(ctypes.c_uint64(cg))
        return len(want ^ held)

    def apply(self, plan: TunnelPlan | None, proxy_ipv4: str, proxy_ipv6: str) -> TunnelChange:
        """Steer exactly ``plan``'s destinations to the proxy at ``proxy_ipv4``/``proxy_ipv6`` (None: none)."""
        self.open()
        cfg = TunConfig()
        if plan is not None:
            if proxy_ipv4:
                cfg.proxy4 = int.from_bytes(ipaddress.IPv4Address(proxy_ipv4).packed, "little")
            if proxy_ipv6:
                set_addr(cfg.proxy6, proxy_ipv6)
            cfg.port = socket.htons(plan.outbound_port)
        if self.exempt_cgroup is not None:
            cfg.exempt_cgroup = cgroup_id(resolve_cgroup(self.exempt_cgroup))
        want: dict[bytes, int] = {}
        for d in plan.destinations if plan is not None else ():
            flags = (TUN_F_STEER if d.steer else 0) | (TUN_F_STRICT if d.strict else 0)
            want[pack_dest_key(d.address, d.port)] = flags
        dests = self._maps[DESTS.name]
        if self._held is None:
            self._held = {bytes(k): int(v.flags) for k, v in dests.items()}
        added = updated = removed = 0
        # Destinations first, then where the proxy is: a new destination is never steered
        # to a proxy that is not configured yet (the listener is served before this runs).
        self._maps[CONFIG.name].update(ctypes.c_uint32(0), cfg)
        for key, flags in want.items():
            if self._held.get(key) == flags:
                continue
            added, updated = (added + 1, updated) if key not in self._held else (added, updated + 1)
            dests.update(SteerDestKey.from_buffer_copy(key), TunDestValue(flags))
        for key in set(self._held) - set(want):
            dests.delete(SteerDestKey.from_buffer_copy(key))
            removed += 1
        self._held = want
        return TunnelChange(added, updated, removed)

    def close(self) -> None:
        """Close map handles; the pinned programs keep steering."""
        for m in self._maps.values():
            m.close()
        self._maps = {}
        self._held = None

    def destroy(self) -> None:
        """Detach the programs and remove the pins."""
        self.close()
        links_dir = self.root / "links"
        detach_pinned_links(links_dir, PROGRAMS)
        for spec in TUNNEL_SPECS:
            (self.root / "maps" / spec.name).unlink(missing_ok=True)
        remove_empty_dirs((links_dir, self.root / "maps", self.root))
