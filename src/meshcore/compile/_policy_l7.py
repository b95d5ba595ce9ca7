"""Rules the node Envoy checks (L7 parts, JWT validation) as the kernel enforces them.

The datapath never blocks the node proxy, and what only the proxy can check must not be
skipped by dialling a pod directly, so compile (see :mod:`._policy`) turns them into:
proxy-only gates on the HTTP backend ports of the selected workloads, an ALLOW rule's
ports for the proxy alone, a DENY rule without its L7 parts, and conditions on the peer's
namespace or principal or the destination port folded into peers and ports.
"""

from __future__ import annotations

from collections import defaultdict

import attrs

from ..model import (
    Condition,
    Direction,
    Operation,
    PeerSelector,
    PolicyAction,
    PolicyRule,
    PortRange,
    Snapshot,
    Source,
    WorkloadRef,
)

__all__ = ["MATCHES_NOTHING", "fold_conditions", "ports_only", "proxy_gates", "proxy_only_ports", "without_l7"]


def ports_only(rule: PolicyRule) -> PolicyRule:
    """The rule's ports alone (its peers are replaced by the node proxy at L4)."""
    return PolicyRule(operations=[Operation(ports=o.ports, not_ports=o.not_ports) for o in rule.operations])


@attrs.frozen
class _Gate:
    """Ports of selected workloads where only the node proxy is admitted, and why."""

    ref: str
    source: Source
    why: str
    ports: dict[WorkloadRef, set[int]]


def proxy_gates(snapshot: Snapshot) -> list[_Gate]:
    """The HTTP backend ports of workloads selected by L7 policies or RequestAuthentications."""
    l7_policies = [p for p in snapshot.policies
                   if p.direction is Direction.INGRESS and p.action in (PolicyAction.ALLOW, PolicyAction.DENY)
                   and any(r.needs_l7 for r in p.rules)]
    if not l7_policies and not snapshot.request_authentications:
        return []
    by_ref = {w.ref: w for w in snapshot.workloads}
    http_ports: dict[WorkloadRef, set[int]] = defaultdict(set)
    other_ports: dict[WorkloadRef, set[int]] = defaultdict(set)
    for service in snapshot.services:
        for sp in service.ports:
            for b in sp.backends:
                if b.workload is not None and b.workload in by_ref:
                    (http_ports if sp.protocol.is_http else other_ports)[b.workload].add(b.port)
    # A target port a non-HTTP service port also reaches is not gated: that port is not
    # proxied as HTTP, so gating would shut it for every client.
    http_ports = {ref: ports - other_ports[ref] for ref, ports in http_ports.items() if ports - other_ports[ref]}
    gates = []
    for policy in l7_policies:
        ports = {ref: p for ref, p in http_ports.items() if policy.selects(by_ref[ref].namespace, by_ref[ref].labels)}
        if ports:
            gates.append(_Gate(f"{policy.namespace}/{policy.name}", policy.source,
                               f"{policy.action} authorization policy with L7 rules", ports))
    for authn in snapshot.request_authentications:
        if not authn.jwt_rules:
            continue  # no rule: nothing is validated (and compile does not proxy for it)
        ports = {ref: p for ref, p in http_ports.items()
                 if authn.selects(by_ref[ref].namespace, by_ref[ref].labels)}
        if ports:
            gates.append(_Gate(f"{authn.namespace}/{authn.name}", authn.source, "RequestAuthentication (JWT)", ports))
    return gates


def proxy_only_ports(snapshot: Snapshot) -> set[tuple[WorkloadRef, int]]:
    """(workload, port) pairs where the kernel admits only the node proxy (L7 policies, JWT checks)."""
    return {(ref, p) for gate in proxy_gates(snapshot) for ref, ports in gate.ports.items() for p in ports}


#: ``fold_conditions`` result for a rule no peer or port can satisfy.
MATCHES_NOTHING = PolicyRule(conditions=[Condition("meshcore.matches-nothing")])


def fold_conditions(rule: PolicyRule) -> PolicyRule | None:
    """The rule with its conditions on the peer's namespace or principal and the destination
    port folded into its sources and operations, keeping any other condition; ``None`` when
    they cannot be folded exactly, ``MATCHES_NOTHING`` when nothing can satisfy them."""
    if not rule.conditions:
        return rule
    sources = list(rule.sources) or [PeerSelector()]
    operations = list(rule.operations) or [Operation()]
    kept: list[Condition] = []
    for cond in rule.conditions:
        if cond.key == "source.namespace":
            sources = [attrs.evolve(
                s, namespaces=[n for n in s.namespaces if n in cond.values] if s.namespaces and cond.values
                else (cond.values or s.namespaces),
                not_namespaces=(*s.not_namespaces, *cond.not_values)) for s in sources]
            sources = [s for s in sources if not (cond.values and not s.namespaces)]
        elif cond.key == "source.principal":
            if any(s.principals for s in sources) and cond.values:
                return None  # two sets of patterns: no exact intersection
            sources = [attrs.evolve(s, principals=cond.values or s.principals,
                                    not_principals=(*s.not_principals, *cond.not_values)) for s in sources]
        elif cond.key == "destination.port":
            try:
                wanted = [PortRange.single(int(v)) for v in cond.values]
                unwanted = [PortRange.single(int(v)) for v in cond.not_values]
            except ValueError:
                return None
            if wanted and any(o.ports for o in operations):
                numbers = {int(v) for v in cond.values}
                operations = [attrs.evolve(o, ports=[r for r in o.ports if r.first == r.last and r.first in numbers]
                                           if o.ports else wanted) for o in operations]
                if any(o.ports and any(r.first != r.last for r in o.ports) for o in rule.operations):
                    return None  # ranges against a port list: not folded here
                operations = [o for o in operations if o.ports]
            elif wanted:
                operations = [attrs.evolve(o, ports=wanted) for o in operations]
            operations = [attrs.evolve(o, not_ports=(*o.not_ports, *unwanted)) for o in operations]
        else:
            kept.append(cond)
        if not sources or not operations:
            return MATCHES_NOTHING
    return PolicyRule(sources=sources, operations=operations, conditions=kept)


def without_l7(rule: PolicyRule) -> PolicyRule:
    """The rule with its L7 parts removed (sources and ports only)."""
    return PolicyRule(
        sources=[attrs.evolve(s, request_principals=(), not_request_principals=()) for s in rule.sources],
        operations=[Operation(ports=o.ports, not_ports=o.not_ports) for o in rule.operations],
    )
