"""Clients' egress policies → DENY rules of the node proxy for the workloads a listener sends to.

A client's connection to a proxied service goes to the node proxy, which the kernel
exempts from policy in both directions, so the client's egress policy never sees the
workload the proxy then connects to. The proxy applies it instead: for every destination
endpoint a listener (or TCP filter chain) may send to, each client's egress verdict is
computed from the kernel's own policy entries (:func:`compile_policy` over the whole
snapshot) with the kernel's lookup (DENY anywhere wins, then ALLOW, then the default),
on TCP and the destination's target port, towards the destination's identity. A client
refused for any one destination is refused by the listener (fail closed: the proxy
decides before it picks a backend). As in the kernel, an egress DENY rule with L7 parts
applies without them and an egress ALLOW rule with L7 parts allows nothing but the node
proxy, so it does not let a client reach a destination.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from ...model import Direction, PolicyAction, Snapshot, Source, Workload, WorkloadRef
from .plan import Origin, RbacAny, RbacExpr, RbacPolicy
from .rbac import ChainEndpoint
from .._egress import EgressLookup, EgressRefusal
from .._policy import compile_policy

__all__ = ["EgressIndex"]


class EgressIndex:
    """The kernel's egress verdicts of every workload, computed once per snapshot on first use."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.active = any(p.direction is Direction.EGRESS for p in snapshot.policies)
        self._lookup: EgressLookup | None = None
        self._ids: dict[WorkloadRef, int] = {}
        self._clients: dict[int, list[Workload]] = defaultdict(list)
        self._by_name = {str(w.ref): w for w in snapshot.workloads}

    def _load(self) -> EgressLookup:
        """The kernel's egress lookup over the whole snapshot, and the clients it governs."""
        if self._lookup is not None:
            return self._lookup
        plan = compile_policy(self.snapshot)
        default_deny: dict[int, str] = {}
        for ep in plan.endpoints:
            self._ids[ep.workload] = ep.identity
        for w in self.snapshot.workloads:
            ident = self._ids.get(w.ref)
            if ident is None or ident in default_deny:
                continue
            allows = [p for p in self.snapshot.policies if p.direction is Direction.EGRESS
                      and p.action is PolicyAction.ALLOW and p.selects(w.namespace, w.labels)]
            if allows:
                default_deny[ident] = f"{allows[0].namespace}/{allows[0].name}"
        lookup = self._lookup = EgressLookup(plan, default_deny)
        by_ref = {w.ref: w for w in self.snapshot.workloads}
        for ep in plan.endpoints:
            # A workload without addresses could never be told apart by the proxy (nor connect).
            if lookup.governs(ep.identity) and ep.workload in by_ref and by_ref[ep.workload].addresses:
                self._clients[ep.identity].append(by_ref[ep.workload])
        return lookup

    def _remote(self, lookup: EgressLookup, target: ChainEndpoint) -> int:
        """The identity the kernel would see for the destination: its workload's, else by address."""
        w = self._by_name.get(target.workload)
        if w is not None and w.ref in self._ids:
            return self._ids[w.ref]
        return lookup.remote(target.address)

    def refusals(self, targets: Iterable[ChainEndpoint]) -> dict[EgressRefusal, list[Workload]]:
        """Per egress policy (rule), the clients it forbids reaching at least one of ``targets``."""
        if not self.active:
            return {}
        lookup = self._load()
        wanted = list(dict.fromkeys((self._remote(lookup, t), t.port) for t in targets))
        out: dict[EgressRefusal, list[Workload]] = {}
        for client, workloads in self._clients.items():
            for remote, port in wanted:
                refusal = lookup.verdict(client, remote, port)
                if refusal is not None:
                    out.setdefault(refusal, []).extend(workloads)
                    break
        return out

    def deny_policies(self, targets: Iterable[ChainEndpoint],
                      peers: Callable[[Iterable[Workload]], RbacExpr]) -> tuple[RbacPolicy, ...]:
        """DENY RBAC policies (principal: the refused clients' addresses), one per egress policy rule.

        They join the DENY filter of the destinations' ingress policies, whose names are
        ``<ns>/<name>[<rule>]`` too: an egress policy sharing its name with an ingress DENY
        policy is called ``<ns>/<name>-egress`` there.
        """
        sources = {f"{p.namespace}/{p.name}": p.source for p in self.snapshot.policies
                   if p.direction is Direction.EGRESS}
        ingress = {f"{p.namespace}/{p.name}" for p in self.snapshot.policies
                   if p.direction is Direction.INGRESS and p.action is PolicyAction.DENY}
        out: list[RbacPolicy] = []
        for refusal, clients in sorted(self.refusals(targets).items(), key=lambda item: item[0].name):
            name = refusal.name
            if refusal.policy in ingress:
                name = f"{refusal.policy}-egress" + (f"[{refusal.rule}]" if refusal.rule is not None else "")
            what = (f"rule {refusal.rule} of egress authorization policy {refusal.policy}" if refusal.rule is not None
                    else f"egress authorization policy {refusal.policy} (no rule allows this destination)")
            origin = Origin(what, sources.get(refusal.policy, Source()))
            out.append(RbacPolicy(name, peers(clients), RbacAny(), (origin,)))
        return tuple(out)
