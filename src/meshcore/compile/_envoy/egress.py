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

import ipaddress
import socket
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import NamedTuple

from ...model import Direction, PolicyAction, ReservedIdentity, Snapshot, Source, Workload, WorkloadRef
from .plan import Origin, RbacAny, RbacExpr, RbacPolicy
from .rbac import ChainEndpoint
from .._policy import compile_policy
from .._policy_plan import ANY_IDENTITY, ANY_PROTOCOL, PolicyEntry, PolicyPlan, PolicyVerdict

__all__ = ["EgressIndex"]

_TCP = socket.IPPROTO_TCP
_EXEMPT = (int(ReservedIdentity.HOST), int(ReservedIdentity.NODE_PROXY))


class _Refusal(NamedTuple):
    """Why a client may not reach a destination: the RBAC policy name and the model policy behind it."""

    name: str
    policy: str  # ``ns/name`` of the egress policy
    rule: int | None


class EgressIndex:
    """The kernel's egress verdicts of every workload, computed once per snapshot on first use."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.active = any(p.direction is Direction.EGRESS for p in snapshot.policies)
        self._plan: PolicyPlan | None = None
        self._entries: dict[tuple[int, int, int], list[PolicyEntry]] = defaultdict(list)
        self._ids: dict[WorkloadRef, int] = {}
        self._default_deny: dict[int, str] = {}
        self._clients: dict[int, list[Workload]] = defaultdict(list)
        self._cache: dict[tuple[int, int, int], _Refusal | None] = {}
        self._origins: dict[int, tuple[str, int]] = {}
        self._ipcache: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int]] = []
        self._by_name = {str(w.ref): w for w in snapshot.workloads}

    def _load(self) -> None:
        """Index the kernel's egress entries by (client, protocol, remote) and the clients they govern."""
        if self._plan is not None:
            return
        plan = self._plan = compile_policy(self.snapshot)
        for e in plan.entries:
            if e.direction is Direction.EGRESS:
                self._entries[(e.endpoint, e.protocol, e.remote)].append(e)
        self._origins = {o.index: (o.policy, o.rule) for o in plan.origins}
        self._ipcache = sorted(((c.network, c.identity) for c in plan.ipcache), key=lambda x: -x[0].prefixlen)
        governed = {e.endpoint for e in plan.entries if e.direction is Direction.EGRESS}
        for ep in plan.endpoints:
            self._ids[ep.workload] = ep.identity
            if ep.egress_default_deny:
                governed.add(ep.identity)
        by_ref = {w.ref: w for w in self.snapshot.workloads}
        for ep in plan.endpoints:
            # A workload without addresses could never be told apart by the proxy (nor connect).
            if ep.identity in governed and ep.workload in by_ref and by_ref[ep.workload].addresses:
                self._clients[ep.identity].append(by_ref[ep.workload])
        for w in self.snapshot.workloads:
            ident = self._ids.get(w.ref)
            if ident is None or ident in self._default_deny:
                continue
            allows = [p for p in self.snapshot.policies if p.direction is Direction.EGRESS
                      and p.action is PolicyAction.ALLOW and p.selects(w.namespace, w.labels)]
            if allows:
                self._default_deny[ident] = f"{allows[0].namespace}/{allows[0].name}"

    def _remote(self, target: ChainEndpoint) -> int:
        """The identity the kernel would see for the destination: its workload's, else by address."""
        w = self._by_name.get(target.workload)
        if w is not None and w.ref in self._ids:
            return self._ids[w.ref]
        try:
            ip = ipaddress.ip_address(target.address)
        except ValueError:
            return int(ReservedIdentity.WORLD)  # a name the proxy resolves: an address outside the mesh
        for net, ident in self._ipcache:
            if ip.version == net.version and ip in net:
                return ident
        return int(ReservedIdentity.WORLD)

    def _verdict(self, client: int, remote: int, port: int) -> _Refusal | None:
        """The kernel's egress decision for ``client`` → ``remote`` on TCP ``port`` (``None``: allowed)."""
        key = (client, remote, port)
        if key in self._cache:
            return self._cache[key]
        found: _Refusal | None = None
        if remote not in _EXEMPT:
            deny: int | None = None
            allow = False
            for r in (remote, ANY_IDENTITY):
                for proto in (_TCP, ANY_PROTOCOL):
                    best: PolicyEntry | None = None
                    for e in self._entries.get((client, proto, r), ()):
                        lo, hi = e.port_range
                        if lo <= port <= hi and (best is None or e.port_bits > best.port_bits):
                            best = e
                    if best is None:
                        continue
                    if best.verdict is PolicyVerdict.DENY and deny is None:
                        deny = best.policy_index
                    elif best.verdict is PolicyVerdict.ALLOW:
                        allow = True
            if deny is not None:
                policy, rule = self._origins.get(deny, ("", 0))
                found = _Refusal(f"{policy}[{rule}]", policy, rule)
            elif not allow and client in self._default_deny:
                policy = self._default_deny[client]
                found = _Refusal(policy, policy, None)
        self._cache[key] = found
        return found

    def refusals(self, targets: Iterable[ChainEndpoint]) -> dict[_Refusal, list[Workload]]:
        """Per egress policy (rule), the clients it forbids reaching at least one of ``targets``."""
        if not self.active:
            return {}
        self._load()
        wanted = list(dict.fromkeys((self._remote(t), t.port) for t in targets))
        out: dict[_Refusal, list[Workload]] = {}
        for client, workloads in self._clients.items():
            for remote, port in wanted:
                refusal = self._verdict(client, remote, port)
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
