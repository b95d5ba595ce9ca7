"""Verdict events from the kernel's ring buffer, decoded into :class:`~meshcore.observe.Flow` against the plan."""

from __future__ import annotations

import ctypes
import datetime
import socket
import time
from collections.abc import Mapping

from ..compile import PolicyPlan
from ..model import Direction, WorkloadRef
from ..observe import Enforcer, Flow, Layer, Peer, Verdict
from .maps._base import unpack_addr
from .maps.pol_events import Event

__all__ = ["REASONS", "VERDICTS", "FlowDecoder"]

#: Must match POL_FORWARDED / POL_DROPPED in bpf/policy.h.
VERDICTS = {1: Verdict.FORWARDED, 2: Verdict.DROPPED}
#: Must match POL_R_* in bpf/policy.h.
REASONS = {
    1: "policy-allowed",
    2: "no-policy",
    3: "policy-denied",
    4: "default-deny",
    5: "spoofed-source",
    6: "unknown-endpoint",
    7: "from-host",
}
_DIRECTIONS = {1: Direction.INGRESS, 2: Direction.EGRESS}
_PROTOCOLS = {socket.IPPROTO_TCP: "TCP", socket.IPPROTO_UDP: "UDP", socket.IPPROTO_ICMP: "ICMP",
              socket.IPPROTO_ICMPV6: "ICMPv6", socket.IPPROTO_SCTP: "SCTP"}


class FlowDecoder:
    """Turns raw ``struct pol_event`` records of ``node`` into :class:`~meshcore.observe.Flow` using the applied plan."""

    def __init__(self, plan: PolicyPlan | None = None, interfaces: Mapping[int, WorkloadRef] | None = None,
                 node: str = "") -> None:
        self.node = node
        self.plan = plan or PolicyPlan()
        self.interfaces = dict(interfaces or {})
        # bpf_ktime_get_ns() is CLOCK_MONOTONIC: anchor it to the wall clock once.
        self._offset = time.time_ns() - time.monotonic_ns()

    def update(self, plan: PolicyPlan, interfaces: Mapping[int, WorkloadRef]) -> None:
        """Resolve later events against this plan and these attachments."""
        self.plan = plan
        self.interfaces = dict(interfaces)
        self._by_address = None

    _by_address: dict[str, WorkloadRef] | None = None

    def _pod(self, address: str) -> WorkloadRef | None:
        if self._by_address is None:
            self._by_address = {p.address: p.workload for p in self.plan.peers}
            self._by_address.update({a: e.workload for e in self.plan.endpoints for a in e.addresses})
        return self._by_address.get(address)

    def _namespace(self, identity: int, pod: WorkloadRef | None) -> str:
        if pod is not None:
            return pod.namespace
        ident = next((i for i in self.plan.identities if i.numeric_id == identity), None)
        return ident.namespace if ident is not None else ""

    def _default_deny(self, pod: WorkloadRef | None, direction: Direction | None) -> tuple[str, str]:
        """The ALLOW policies whose default deny dropped a flow of ``pod``, and the first one's source."""
        endpoint = self.plan.endpoint(pod) if pod is not None else None
        if endpoint is None or direction is None:
            return "", ""
        names = endpoint.egress_allow_policies if direction is Direction.EGRESS else endpoint.ingress_allow_policies
        if not names:
            return "", ""
        source = next((str(o.source) for o in self.plan.origins
                       if o.policy == names[0] and o.direction.value == direction.value), "")
        return f"{', '.join(names)} (no rule allows it)", source

    def _peer(self, address: str, port: int, identity: int) -> Peer:
        pod = self._pod(address)
        return Peer(address, port, pod, self._namespace(identity, pod), identity)

    def decode(self, raw: bytes) -> Flow:
        """Decode one event record; raises ValueError for a record that is not one."""
        if len(raw) < ctypes.sizeof(Event):
            raise ValueError(f"event record of {len(raw)} bytes, expected {ctypes.sizeof(Event)}")
        ev = Event.from_buffer_copy(raw)
        verdict = VERDICTS.get(int(ev.verdict))
        if verdict is None:
            raise ValueError(f"event record with unknown verdict {int(ev.verdict)}")
        src, _ = unpack_addr(bytes(ev.saddr))
        dst, _ = unpack_addr(bytes(ev.daddr))
        source = self._peer(src, socket.ntohs(ev.sport), int(ev.src_identity))
        destination = self._peer(dst, socket.ntohs(ev.dport), int(ev.dst_identity))
        origin = self.plan.origin(int(ev.policy_index)) if ev.policy_index else None
        reason = REASONS.get(int(ev.reason), str(ev.reason))
        direction = _DIRECTIONS.get(int(ev.direction))
        policy = f"{origin.policy} rule {origin.rule} ({origin.action})" if origin else ""
        policy_source = str(origin.source) if origin else ""
        if origin is None and reason == "default-deny":
            local = source if direction is Direction.EGRESS else destination
            policy, policy_source = self._default_deny(local.workload, direction)
        stamp = datetime.datetime.fromtimestamp((int(ev.ts_ns) + self._offset) / 1e9, tz=datetime.UTC)
        return Flow(
            time=stamp, node=self.node, layer=Layer.L4, verdict=verdict, enforcer=Enforcer.KERNEL,
            source=source, destination=destination, protocol=_PROTOCOLS.get(int(ev.proto), str(ev.proto)),
            direction=direction, reason=reason, policy=policy, policy_source=policy_source,
        )
