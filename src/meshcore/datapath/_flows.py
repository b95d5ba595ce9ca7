"""Verdict events from the kernel's ring buffer, decoded into :class:`~meshcore.observe.Flow` against the plan."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Mapping

from ..compile import PolicyPlan
from ..model import Direction, WorkloadRef
from ..observe import Flow
from ..observe._verdicts import EVENT_RECORD, REASONS, VERDICTS, KernelNames, decode_events, decode_sums
from .maps.pol_events import Event

__all__ = ["REASONS", "VERDICTS", "FlowDecoder", "kernel_names"]

if ctypes.sizeof(Event) != EVENT_RECORD.size:  # pragma: no cover - caught by the mirror tests
    raise ImportError("the pol_event mirror and the observe record layout disagree")


def kernel_names(plan: PolicyPlan, interfaces: Mapping[int, WorkloadRef], clock_offset_ns: int) -> KernelNames:
    """The names a node's verdicts are decoded with under ``plan`` and these attachments."""
    identities = {i.numeric_id: i.namespace for i in plan.identities}
    # Other nodes' workloads first, so this node's own endpoints win on a shared address.
    addresses = {p.address: str(p.workload) for p in plan.peers}
    addresses.update({a: str(e.workload) for e in plan.endpoints for a in e.addresses})
    origins = {o.index: (f"{o.policy} rule {o.rule} ({o.action})", str(o.source)) for o in plan.origins}
    default_deny: dict[str, dict[str, tuple[str, str]]] = {}
    for endpoint in plan.endpoints:
        for direction, names in ((Direction.INGRESS, endpoint.ingress_allow_policies),
                                 (Direction.EGRESS, endpoint.egress_allow_policies)):
            if names:
                source = next((str(o.source) for o in plan.origins
                               if o.policy == names[0] and o.direction.value == direction.value), "")
                default_deny.setdefault(str(endpoint.workload), {})[direction.value] = (
                    f"{', '.join(names)} (no rule allows it)", source)
    return KernelNames(identities, addresses, {i: str(w) for i, w in interfaces.items()}, origins, default_deny,
                       clock_offset_ns)


class FlowDecoder:
    """Turns raw ``struct pol_event`` records of ``node`` into :class:`~meshcore.observe.Flow` using the applied plan."""

    def __init__(self, plan: PolicyPlan | None = None, interfaces: Mapping[int, WorkloadRef] | None = None,
                 node: str = "") -> None:
        self.node = node
        # bpf_ktime_get_ns() is CLOCK_MONOTONIC: anchor it to the wall clock once.
        self._offset = time.time_ns() - time.monotonic_ns()
        self.names = KernelNames(clock_offset_ns=self._offset)
        self.update(plan or PolicyPlan(), interfaces or {})

    def update(self, plan: PolicyPlan, interfaces: Mapping[int, WorkloadRef]) -> None:
        """Resolve later events against this plan and these attachments."""
        self.plan = plan
        self.interfaces = dict(interfaces)
        self.names = kernel_names(plan, self.interfaces, self._offset)

    def decode(self, raw: bytes) -> Flow:
        """Decode one event record; raises ValueError for a record that is not one."""
        if len(raw) < EVENT_RECORD.size:
            raise ValueError(f"event record of {len(raw)} bytes, expected {EVENT_RECORD.size}")
        flows = decode_events(raw[:EVENT_RECORD.size], self.names, self.node)
        if not flows:
            raise ValueError(f"event record with unknown verdict {raw[61]}")
        return flows[0]

    def decode_many(self, raw: bytes) -> list[Flow]:
        """The flows of concatenated event records."""
        return decode_events(raw, self.names, self.node)

    def decode_sums(self, raw: bytes) -> list[Flow]:
        """The summary flows of concatenated sum records (see :data:`~meshcore.observe._verdicts.SUM_RECORD`)."""
        return decode_sums(raw, self.names, self.node)
