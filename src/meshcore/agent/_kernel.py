"""The real kernel enforcers: the socket LB (applied as diffs) and L3/L4 policy on interfaces."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ..compile import BpfDiff, BpfIndex, BpfPlan, PolicyPlan
from ..datapath import ApplyReport, LbSettings, PolicyEnforcer, PolicyReport, SocketLB
from ..model import WorkloadRef
from ..observe import Flow
from ._facts import NodeFacts

__all__ = ["KernelLoadBalancer", "KernelPolicy"]


class KernelLoadBalancer:
    """The node's :class:`~meshcore.datapath.SocketLB`, each new plan applied as a diff of the last.

    :meth:`apply` finds the diff in one pass over the plan; :meth:`apply_change` is told
    it, so an endpoint change costs the changed frontends alone. After a failed write the
    next apply reconciles everything from what the kernel holds.
    """

    def __init__(self, lb: SocketLB) -> None:
        self.lb = lb
        self._index: BpfIndex | None = None
        self._plan: BpfPlan | None = None
        self.lb.open()

    @classmethod
    def for_node(cls, facts: NodeFacts) -> KernelLoadBalancer:
        """The node's socket LB on its cgroup; services handed to the proxy go to the node's addresses."""
        settings = LbSettings(proxy_ipv4=facts.ipv4 or None, proxy_ipv6=facts.ipv6 or None)
        return cls(SocketLB(facts.name, facts.cgroup, facts.pin_root, settings=settings))

    def apply(self, plan: BpfPlan) -> ApplyReport:
        """Write what differs from the last plan applied (everything the first time)."""
        index, self._index, self._plan = self._index, None, None
        if index is None:
            report = self.lb.apply(plan)
            self._index = BpfIndex(plan)
            self._plan = plan
            return report
        return self._write(index, plan, index.diff(plan))

    def apply_change(self, plan: BpfPlan, since: BpfPlan, diff: BpfDiff) -> ApplyReport:
        """Write ``diff``, which turns ``since`` into ``plan``, if ``since`` is what was applied last; else :meth:`apply`."""
        index = self._index
        if index is None or since is not self._plan:
            return self.apply(plan)
        self._index, self._plan = None, None
        return self._write(index, plan, diff)

    def _write(self, index: BpfIndex, plan: BpfPlan, diff: BpfDiff) -> ApplyReport:
        """Write ``diff`` and move the index to ``plan`` (left unset when the write fails)."""
        report = self.lb.apply_diff(diff)
        index.commit(diff)
        self._index, self._plan = index, plan
        return report

    def counts(self) -> dict[str, int]:
        """Entries in the service, backend and slot maps, read back from the kernel."""
        state = self.lb.state()
        return {"lb_services": len(state.services),
                "lb_backends": sum(len(s.backends) for s in state.services) + state.orphan_backends,
                "lb_slots": sum(s.slot_count for s in state.services) + state.orphan_slots}

    def close(self) -> None:
        """Release handles; the pinned programs keep enforcing."""
        self.lb.close()


class KernelPolicy:
    """The node's :class:`~meshcore.datapath.PolicyEnforcer`, attached to each workload's interface.

    A generation that brings the plan and interfaces applied last (an endpoint change
    does) writes nothing and is not examined again.
    """

    def __init__(self, enforcer: PolicyEnforcer) -> None:
        self.enforcer = enforcer
        self._applied: tuple[PolicyPlan, dict[WorkloadRef, str] | None] | None = None
        self.enforcer.open()

    @classmethod
    def for_node(cls, facts: NodeFacts) -> KernelPolicy:
        """The node's policy enforcer; the node's own addresses are the host, its proxy's the node proxy."""
        return cls(PolicyEnforcer(facts.name, facts.pin_root, netns=facts.netns, host_addresses=facts.addresses,
                                  proxy_addresses=facts.proxy_addresses))

    def apply(self, plan: PolicyPlan, interfaces: Mapping[WorkloadRef, str] | None) -> PolicyReport:
        """Write the plan, then attach to new interfaces and forget workloads that are gone.

        Interfaces attached by an earlier agent process are adopted by the first apply, so
        ``None`` (interfaces unknown) keeps enforcing on them. An identical plan with the
        same interfaces writes nothing.
        """
        applied, self._applied = self._applied, None
        wanted = None if interfaces is None else dict(interfaces)
        if applied is not None and applied[0] is plan and applied[1] == wanted:
            self._applied = applied
            return PolicyReport({}, {})
        report = self._apply(plan, interfaces)
        self._applied = (plan, wanted)
        return report

    def _apply(self, plan: PolicyPlan, interfaces: Mapping[WorkloadRef, str] | None) -> PolicyReport:
        report = self.enforcer.apply(plan)
        if interfaces is None:
            return report
        attached = set(self.enforcer.interfaces.values())
        for ref in attached - interfaces.keys():
            self.enforcer.forget(ref)
        for ref, interface in sorted(interfaces.items()):
            if ref not in attached:
                self.enforcer.attach(interface, ref)
        return report

    def flows(self, timeout: float, *, follow: bool) -> Iterator[Flow]:
        """Verdicts from the ring buffer."""
        return self.enforcer.flows(timeout=timeout, follow=follow)

    def counts(self) -> dict[str, int]:
        """Entries per policy map."""
        return self.enforcer.counts()

    def close(self) -> None:
        """Release handles; filters and pins keep enforcing."""
        self.enforcer.close()
