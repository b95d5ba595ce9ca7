"""Flow records: verdict events from the kernel, decoded and resolved against the plan."""

from __future__ import annotations

import ctypes
import datetime
import socket
import time
from collections.abc import Mapping

import attrs

from ..compile import PolicyPlan
from ..model import WorkloadRef
from .maps._base import unpack_addr
from .maps.pol_events import Event

__all__ = ["Flow", "FlowDecoder", "REASONS", "VERDICTS"]

VERDICTS = {1: "FORWARDED", 2: "DROPPED"}
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
_DIRECTIONS = {1: "ingress", 2: "egress"}
_PROTOCOLS = {socket.IPPROTO_TCP: "TCP", socket.IPPROTO_UDP: "UDP", socket.IPPROTO_ICMP: "ICMP",
              socket.IPPROTO_ICMPV6: "ICMPv6", socket.IPPROTO_SCTP: "SCTP"}


@attrs.frozen
class Flow:
    """One verdict on a new flow (or a dropped packet), as ``meshcore observe`` shows it.

    ``direction`` is the local endpoint's: ``egress`` when its pod sent the packet.
    ``policy`` names the deciding model policy and rule, ``policy_source`` where it was
    defined; both are empty for default verdicts.
    """

    time: datetime.datetime
    verdict: str
    reason: str
    direction: str
    protocol: str
    src_address: str
    dst_address: str
    src_port: int
    dst_port: int
    src_identity: int
    dst_identity: int
    src_pod: str = ""
    dst_pod: str = ""
    src_namespace: str = ""
    dst_namespace: str = ""
    policy: str = ""
    policy_source: str = ""
    policy_index: int = 0
    ifindex: int = 0

    def to_data(self) -> dict[str, object]:
        """The flow as JSON-compatible data."""
        data = attrs.asdict(self)
        data["time"] = self.time.isoformat()
        return data


class FlowDecoder:
    """Turns raw ``struct pol_event`` records into :class:`Flow` using the applied plan."""

    def __init__(self, plan: PolicyPlan | None = None, interfaces: Mapping[int, WorkloadRef] | None = None) -> None:
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
            self._by_address = {a: e.workload for e in self.plan.endpoints for a in e.addresses}
        return self._by_address.get(address)

    def _namespace(self, identity: int, pod: WorkloadRef | None) -> str:
        if pod is not None:
            return pod.namespace
        ident = next((i for i in self.plan.identities if i.numeric_id == identity), None)
        return ident.namespace if ident is not None else ""

    def _default_deny(self, pod: WorkloadRef | None, direction: str) -> tuple[str, str]:
        """The ALLOW policies whose default deny dropped a flow of ``pod``, and the first one's source."""
        endpoint = self.plan.endpoint(pod) if pod is not None else None
        if endpoint is None:
            return "", ""
        names = endpoint.egress_allow_policies if direction == "egress" else endpoint.ingress_allow_policies
        if not names:
            return "", ""
        source = next((str(o.source) for o in self.plan.origins
                       if o.policy == names[0] and o.direction.value == direction), "")
        return f"{', '.join(names)} (no rule allows it)", source

    def decode(self, raw: bytes) -> Flow:
        """Decode one event record."""
        if len(raw) < ctypes.sizeof(Event):
            raise ValueError(f"event record of {len(raw)} bytes, expected {ctypes.sizeof(Event)}")
        ev = Event.from_buffer_copy(raw)
        src, _ = unpack_addr(bytes(ev.saddr))
        dst, _ = unpack_addr(bytes(ev.daddr))
        src_pod, dst_pod = self._pod(src), self._pod(dst)
        origin = self.plan.origin(int(ev.policy_index)) if ev.policy_index else None
        reason = REASONS.get(int(ev.reason), str(ev.reason))
        direction = _DIRECTIONS.get(int(ev.direction), str(ev.direction))
        policy = f"{origin.policy} rule {origin.rule} ({origin.action})" if origin else ""
        policy_source = str(origin.source) if origin else ""
        if origin is None and reason == "default-deny":
            policy, policy_source = self._default_deny(src_pod if direction == "egress" else dst_pod, direction)
        stamp = datetime.datetime.fromtimestamp((int(ev.ts_ns) + self._offset) / 1e9, tz=datetime.UTC)
        return Flow(
            time=stamp,
            verdict=VERDICTS.get(int(ev.verdict), str(ev.verdict)),
            reason=reason,
            direction=direction,
            protocol=_PROTOCOLS.get(int(ev.proto), str(ev.proto)),
            src_address=src, dst_address=dst,
            src_port=socket.ntohs(ev.sport), dst_port=socket.ntohs(ev.dport),
            src_identity=int(ev.src_identity), dst_identity=int(ev.dst_identity),
            src_pod=str(src_pod) if src_pod else "", dst_pod=str(dst_pod) if dst_pod else "",
            src_namespace=self._namespace(int(ev.src_identity), src_pod),
            dst_namespace=self._namespace(int(ev.dst_identity), dst_pod),
            policy=policy,
            policy_source=policy_source,
            policy_index=int(ev.policy_index), ifindex=int(ev.ifindex),
        )
