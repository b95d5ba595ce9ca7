"""PolicyEnforcer: identity-based L3/L4 policy on tc hooks of pod veths, pinned in bpffs.

Maps are pinned under ``<pin_root>/<node>/policy/``; tc filters live with their
interfaces. Applying a :class:`~meshcore.compile.PolicyPlan` is a diff against what the
maps hold: only entries that differ are written, and a plan that does not fit is refused
before anything is written, so the previous policy keeps enforcing.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs

from ..compile import PolicyPlan
from ..model import ReservedIdentity, WorkloadRef
from ..observe import Flow
from . import _libbpf
from ._bpffs import default_pin_root, pins_on_bpffs
from ._btf import KIND_STRUCT, check_mirror
from ._errors import DatapathError
from ._events import EventRing, PerCpuReader
from ._flows import FlowDecoder
from ._loader import BpfObject, map_info, object_path
from ._tc import EGRESS, INGRESS, ifindex_of, in_netns, tc_attach, tc_detach
from .maps import (
    POLICY_SPECS,
    BpfMap,
    MapSpec,
    pol_endpoints,
    pol_events,
    pol_flows,
    pol_ipcache,
    pol_policy,
)
from ..observe._verdicts import EVENT_RECORD, SUM_RECORD

__all__ = ["EventStats", "PolicyEnforcer", "PolicyReport"]

log = logging.getLogger("meshcore.datapath")

OBJECT_NAME = "policy"
_NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_WRITABLE = ("pol_ipcache", "pol_policy", "pol_endpoints")


@attrs.frozen
class PolicyReport:
    """What an apply changed, per map: entries written and deleted."""

    written: dict[str, int]
    deleted: dict[str, int]

    @property
    def changed(self) -> bool:
        """True when anything was written or deleted."""
        return any(self.written.values()) or any(self.deleted.values())

    def summary(self) -> str:
        """One line: written/deleted per map."""
        parts = [f"{m}: +{self.written.get(m, 0)} -{self.deleted.get(m, 0)}" for m in _WRITABLE]
        return ", ".join(parts)


def _address_part(value: pol_endpoints.EndpointValue) -> tuple[bytes, bytes, int]:
    """An endpoint value's addresses (what tells a pod apart), without identity and policy flags."""
    return (bytes(value.addr4), bytes(value.addr6),
            value.flags & (pol_endpoints.FLAG_HAS_V4 | pol_endpoints.FLAG_HAS_V6))


@attrs.frozen
class EventStats:
    """What became of the kernel's verdicts since the node's maps were created (summed over CPUs).

    ``events``: sent one by one; ``sampled``: allowed flows past the event rate, counted
    per identity pair instead; ``ring_full``: verdicts the ring buffer had no room for,
    counted instead; ``lost``: neither sent nor counted (the sums map was full).
    """

    events: int = 0
    sampled: int = 0
    ring_full: int = 0
    lost: int = 0

    def by_outcome(self) -> dict[str, int]:
        """The counters by outcome, as the metrics name them (event, sampled, ring_full, lost)."""
        return {"event": self.events, "sampled": self.sampled, "ring_full": self.ring_full, "lost": self.lost}


class PolicyEnforcer:
    """L3/L4 policy for pods whose host-side veths live in ``netns`` (None: this namespace).

    Entering loads the programs (reusing the node's pinned maps and their entries);
    leaving closes handles only: filters and pinned maps keep enforcing. ``capacities``
    sizes maps (by name) when they are first created. ``host_addresses`` (the node's, where
    its proxy listens) get the HOST identity and ``proxy_addresses`` (where the node's proxy
    connects from, when it has addresses of its own) the NODE_PROXY identity, which policy
    never blocks; both override what the plan says of these addresses.
    """

    def __init__(
        self,
        node: str,
        pin_root: Path | None = None,
        *,
        netns: str | os.PathLike[str] | None = None,
        bpf_object: Path | None = None,
        capacities: dict[str, int] | None = None,
        host_addresses: tuple[str, ...] = (),
        proxy_addresses: tuple[str, ...] = (),
    ) -> None:
        if not _NODE_RE.match(node):
            raise DatapathError(f"node name {node!r} is not valid: use 1-63 letters, digits, '.', '_' or '-'")
        self.node = node
        self.netns = netns
        self.pin_dir = Path(pin_root if pin_root is not None else default_pin_root()) / node / "policy"
        self._bpf_object = bpf_object
        self._capacities = dict(capacities or {})
        self.host_addresses = tuple(a for a in host_addresses if a)
        self.proxy_addresses = tuple(a for a in proxy_addresses if a)
        self._obj: BpfObject | None = None
        self._maps: dict[str, BpfMap] = {}  # type: ignore[type-arg]
        self._events_fd = -1
        self._percpu: PerCpuReader | None = None
        self._lock = threading.RLock()
        self._current: dict[str, dict[bytes, bytes]] = {}
        self._attached: dict[int, tuple[str, WorkloadRef]] = {}
        self.plan = PolicyPlan()
        self._applied = False
        self.decoder = FlowDecoder(node=node)

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> PolicyEnforcer:
        self.open()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Load the programs against the pinned maps (creating them the first time)."""
        with self._lock:
            if self._obj is not None:
                return
            obj = BpfObject.open(self._bpf_object or object_path(OBJECT_NAME))
            try:
                for spec in POLICY_SPECS:
                    obj.check_mirror(spec)
                btf = obj.btf
                tid = btf.find(pol_events.EVENT_STRUCT, KIND_STRUCT)
                if tid is None:
                    raise DatapathError(f"{obj.path} has no struct {pol_events.EVENT_STRUCT}; rebuild it (make -C bpf)")
                check_mirror(btf, tid, pol_events.Event, map_name=pol_events.MAP_NAME, role="record")
                pins_on_bpffs(self.pin_dir)
                self.pin_dir.mkdir(parents=True, exist_ok=True)
                for name in (*(s.name for s in POLICY_SPECS), pol_events.MAP_NAME):
                    if name in self._capacities:
                        obj.set_max_entries(name, self._capacities[name])
                    obj.set_pin_path(name, self.pin_dir / name)
                obj.load()
                for spec in POLICY_SPECS:
                    fd = os.dup(obj.map_fd(spec.name))
                    self._maps[spec.name] = BpfMap(spec, fd)
                self._events_fd = os.dup(obj.map_fd(pol_events.MAP_NAME))
                self._percpu = PerCpuReader()
            except BaseException:
                obj.close()
                self._close_maps()
                raise
            self._obj = obj
            self._recover()

    def _close_maps(self) -> None:
        for m in self._maps.values():
            m.close()
        self._maps = {}
        if self._events_fd >= 0:
            os.close(self._events_fd)
            self._events_fd = -1

    def close(self) -> None:
        """Close handles; attached filters and pinned maps keep enforcing."""
        with self._lock:
            self._close_maps()
            if self._obj is not None:
                self._obj.close()
                self._obj = None

    def destroy(self) -> None:
        """Detach from every interface this instance attached, and remove the pinned maps."""
        with self._lock:
            for ifindex in list(self._attached):
                self._detach_ifindex(ifindex)
            self.close()
            for name in (*(s.name for s in POLICY_SPECS), pol_events.MAP_NAME):
                (self.pin_dir / name).unlink(missing_ok=True)
            # The node's and the shared root directory go too once nothing else pins there.
            for d in (self.pin_dir, self.pin_dir.parent, self.pin_dir.parent.parent):
                try:
                    d.rmdir()
                except OSError:
                    pass

    def _need_open(self) -> BpfObject:
        if self._obj is None:
            raise DatapathError(f"PolicyEnforcer for node {self.node} is not open: use it in a `with` block")
        return self._obj

    def _recover(self) -> None:
        self._current = {name: {bytes(k): bytes(v) for k, v in self._maps[name].items()} for name in _WRITABLE}

    # --- attaching ------------------------------------------------------------------------

    @property
    def interfaces(self) -> dict[int, WorkloadRef]:
        """ifindex → workload of every interface this instance attached."""
        return {i: w for i, (_, w) in self._attached.items()}

    def attach(self, interface: str, workload: WorkloadRef) -> int:
        """Enforce ``workload``'s policy on its host-side ``interface``; returns the ifindex.

        The endpoint entry is written first when the applied plan knows the workload, so
        the pod is never judged as unknown; otherwise its traffic is dropped until a plan
        naming it is applied (fail closed).
        """
        with self._lock:
            obj = self._need_open()
            with in_netns(self.netns):
                ifindex = ifindex_of(interface)
                self._attached[ifindex] = (interface, workload)
                self._write_endpoint(ifindex, workload)
                tc_attach(ifindex, INGRESS, obj.program("pol_from_pod"), f"pol_from_pod on {interface}")
                tc_attach(ifindex, EGRESS, obj.program("pol_to_pod"), f"pol_to_pod on {interface}")
            self.decoder.update(self.plan, self.interfaces)
            return ifindex

    def detach(self, interface: str) -> None:
        """Stop enforcing on ``interface`` and forget its endpoint."""
        with self._lock:
            ifindex = next((i for i, (n, _) in self._attached.items() if n == interface), None)
            if ifindex is None:
                with in_netns(self.netns):
                    ifindex = ifindex_of(interface)
            self._detach_ifindex(ifindex)

    def forget(self, workload: WorkloadRef) -> None:
        """Stop enforcing for a workload whose interface may already be gone (pod deleted)."""
        with self._lock:
            for ifindex in [i for i, (_, w) in self._attached.items() if w == workload]:
                self._detach_ifindex(ifindex)

    def _detach_ifindex(self, ifindex: int) -> None:
        with in_netns(self.netns):
            tc_detach(ifindex, INGRESS)
            tc_detach(ifindex, EGRESS)
        self._attached.pop(ifindex, None)
        key = bytes(pol_endpoints.EndpointKey(ifindex))
        if self._maps and key in self._current.get("pol_endpoints", {}):
            self._maps["pol_endpoints"].delete(pol_endpoints.EndpointKey(ifindex))
            del self._current["pol_endpoints"][key]

    def _write_endpoint(self, ifindex: int, workload: WorkloadRef) -> None:
        ep = self.plan.endpoint(workload)
        key = bytes(pol_endpoints.EndpointKey(ifindex))
        if ep is None:
            if not self._applied:
                return  # a restarted agent keeps what the maps hold until it applies a plan
            # Not in the plan: no entry, so the interface fails closed until it is.
            if key in self._current["pol_endpoints"]:
                self._maps["pol_endpoints"].delete(pol_endpoints.EndpointKey(ifindex))
                del self._current["pol_endpoints"][key]
            return
        value = pol_endpoints.EndpointValue.of(ep.identity, ep.addresses, ep.ingress_default_deny, ep.egress_default_deny)
        self._maps["pol_endpoints"].update(pol_endpoints.EndpointKey(ifindex), value)
        self._current["pol_endpoints"][bytes(pol_endpoints.EndpointKey(ifindex))] = bytes(value)

    # --- applying -------------------------------------------------------------------------

    def desired(self, plan: PolicyPlan) -> dict[str, dict[bytes, bytes]]:
        """The exact map contents ``plan`` means for the attached interfaces."""
        ipcache = {
            bytes(pol_ipcache.IpcacheKey.of(e.prefix)): bytes(pol_ipcache.IpcacheValue(identity=e.identity))
            for e in plan.ipcache
        }
        for addresses, identity in ((self.host_addresses, ReservedIdentity.HOST),
                                    (self.proxy_addresses, ReservedIdentity.NODE_PROXY)):
            for address in addresses:
                prefix = pol_ipcache.IpcacheKey.of(str(ipaddress.ip_network(address)))
                ipcache[bytes(prefix)] = bytes(pol_ipcache.IpcacheValue(identity=int(identity)))
        policy = {}
        for e in plan.entries:
            key = pol_policy.PolicyKey.of(e.endpoint, str(e.direction), e.protocol, e.remote, e.port, e.port_bits)
            verdict = pol_policy.DENY if e.verdict == "DENY" else pol_policy.ALLOW
            policy[bytes(key)] = bytes(pol_policy.PolicyValue(verdict=verdict, policy_index=e.policy_index))
        endpoints = {}
        for ifindex, (_, workload) in self._attached.items():
            ep = plan.endpoint(workload)
            if ep is None:
                continue  # not in the plan: no entry, so its traffic is dropped
            value = pol_endpoints.EndpointValue.of(ep.identity, ep.addresses, ep.ingress_default_deny, ep.egress_default_deny)
            endpoints[bytes(pol_endpoints.EndpointKey(ifindex))] = bytes(value)
        return {"pol_ipcache": ipcache, "pol_policy": policy, "pol_endpoints": endpoints}

    def apply(self, plan: PolicyPlan) -> PolicyReport:
        """Make the maps enforce ``plan``, writing only what differs.

        Capacity is checked before any write: a plan that does not fit raises
        :class:`DatapathError` and the previous policy stays in force. Additions and
        changes are written before deletions, so identities and entries a new endpoint
        needs exist before it points at them.
        """
        with self._lock:
            self._need_open()
            # Checked on the plan before building anything, so an oversized plan fails fast.
            self._check_capacity("pol_ipcache", len({e.prefix for e in plan.ipcache}) + len(self.host_addresses)
                                 + len(self.proxy_addresses))
            self._check_capacity("pol_policy", len({e.key for e in plan.entries}))
            if not self._applied:
                self._adopt(plan)
            want = self.desired(plan)
            self._check_capacity("pol_endpoints", len(want["pol_endpoints"]))
            written = {n: 0 for n in _WRITABLE}
            deleted = {n: 0 for n in _WRITABLE}
            try:
                for name in _WRITABLE:
                    self._upsert(name, want[name], written)
                for name in reversed(_WRITABLE):
                    self._delete(name, want[name], deleted)
            except _libbpf.BpfError as e:
                self._recover()
                raise DatapathError(f"node {self.node}: applying the policy stopped part-way ({e}); "
                                    "the next apply reconciles from the maps") from e
            self.plan = plan
            self._applied = True
            self.decoder.update(plan, self.interfaces)
            return PolicyReport(written, deleted)

    def _adopt(self, plan: PolicyPlan) -> None:
        """Take over the interfaces an earlier process attached, by the endpoint addresses the maps hold.

        The pinned endpoint entries outlive the agent and its programs stay on the veths, so
        a restarted agent that applies before (or without) attaching must not delete them.
        """
        by_addresses = {_address_part(pol_endpoints.EndpointValue.of(0, ep.addresses, False, False)): ep.workload
                        for ep in plan.endpoints}
        for key, raw in self._current.get("pol_endpoints", {}).items():
            ifindex = pol_endpoints.EndpointKey.from_buffer_copy(key).value
            workload = by_addresses.get(_address_part(pol_endpoints.EndpointValue.from_buffer_copy(raw)))
            if workload is None or ifindex in self._attached:
                continue
            with in_netns(self.netns):
                try:
                    interface = socket.if_indextoname(ifindex)
                except OSError:
                    continue  # the interface is gone: its entry goes with the next apply
            self._attached[ifindex] = (interface, workload)

    def _check_capacity(self, name: str, need: int) -> None:
        cap = map_info(self._maps[name].fd).max_entries
        if need > cap:
            raise DatapathError(
                f"node {self.node}: the policy needs {need} entries in map {name}, which holds {cap}; "
                "nothing was written and the previous policy stays in force"
            )

    def _upsert(self, name: str, want: dict[bytes, bytes], count: dict[str, int]) -> None:
        m, cur = self._maps[name], self._current[name]
        spec: MapSpec[Any, Any] = m.spec
        for k, v in want.items():
            if cur.get(k) == v:
                continue
            m.update(spec.key.from_buffer_copy(k), spec.value.from_buffer_copy(v))
            cur[k] = v
            count[name] += 1

    def _delete(self, name: str, want: dict[bytes, bytes], count: dict[str, int]) -> None:
        m, cur = self._maps[name], self._current[name]
        for k in [k for k in cur if k not in want]:
            m.delete(m.spec.key.from_buffer_copy(k))
            del cur[k]
            count[name] += 1

    def counts(self) -> dict[str, int]:
        """Entries held per writable map (occupancy, for metrics)."""
        with self._lock:
            return {n: len(self._current.get(n, {})) for n in _WRITABLE}

    # --- events ---------------------------------------------------------------------------

    def set_event_rate(self, per_second: int | None) -> None:
        """Let through at most ``per_second`` allowed-flow events per second (None: every one).

        The budget is split over the CPUs; past it, allowed flows are counted per identity
        pair (:meth:`drain_sums`). Drops are always events.
        """
        with self._lock:
            self._need_open()
            assert self._percpu is not None
            if per_second is None:
                settings = pol_flows.Settings(0, 0)
            elif per_second < 0:
                raise DatapathError(f"flow event rate {per_second}: must be 0 or more")
            else:
                per_cpu = min(-(-per_second // self._percpu.cpus), 0xFFFFFFFF)
                settings = pol_flows.Settings(pol_flows.LIMIT_ALLOWED, per_cpu)
            self._maps["pol_settings"].update(pol_flows.SettingsKey(0), settings)

    def event_ring(self) -> EventRing:
        """A consumer of the verdict events (close it when done); one consumer at a time."""
        with self._lock:
            self._need_open()
            return EventRing(self._events_fd, map_info(self._events_fd).max_entries, EVENT_RECORD.size)

    def drain_sums(self) -> bytes:
        """The flows counted since the last drain, as concatenated sum records stamped now."""
        with self._lock:
            self._need_open()
            assert self._percpu is not None
            drained = self._percpu.drain(self._maps["pol_flow_sums"])
        now = time.monotonic_ns()
        out = bytearray()
        for key, flows in drained:
            k = pol_flows.FlowSumKey.from_buffer_copy(key)
            out += SUM_RECORD.pack(now, k.src_identity, k.dst_identity, k.policy_index, k.ifindex, k.dport, k.proto,
                                   k.direction, k.verdict, k.reason, 0, flows)
        return bytes(out)

    def event_stats(self) -> EventStats:
        """The kernel's counters of sent, summarised and lost verdicts."""
        with self._lock:
            self._need_open()
            assert self._percpu is not None
            stats = self._maps["pol_event_stats"]
            read = self._percpu.total
            return EventStats(read(stats, pol_flows.STAT_EVENTS), read(stats, pol_flows.STAT_SAMPLED),
                              read(stats, pol_flows.STAT_RING_FULL), read(stats, pol_flows.STAT_LOST))

    def flows(self, timeout: float = 0.1, *, follow: bool = False) -> Iterator[Flow]:
        """Flows from the ring buffer: what is there now (waiting up to ``timeout`` seconds),
        or, with ``follow``, forever. Summaries of counted flows are not included (see :meth:`drain_sums`)."""
        ring = self.event_ring()
        try:
            while True:
                raw = ring.read()
                if not raw:
                    ring.wait(timeout)
                    raw = ring.read()
                yield from self.decoder.decode_many(raw)
                if not follow and not raw:
                    return
        finally:
            ring.close()
