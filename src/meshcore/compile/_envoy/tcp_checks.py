"""Which proxied TCP ports the node Envoy can authorize exactly (else they stay in the kernel).

A TCP filter chain's authorization runs before the TCP proxy picks a backend and is
decided on the client's address when the connection is accepted (see
:mod:`.rbac` and :mod:`.sources`). That is exact only when every backend a
chain may send to is governed by the same ingress policies on the same port, and when
every ALLOW rule reduces to a set of client addresses; compile keeps a port in the
kernel, with the reason these functions give, when it is not.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from ...model import (
    BackendState,
    Direction,
    PolicyAction,
    RouteKind,
    RouteTable,
    Service,
    ServicePort,
    ServiceRef,
    Snapshot,
    Workload,
)
from .rbac import ChainEndpoint, RbacIndex, address_in, tcp_chain_rbac
from .sources import NotASourceSet, admitted_sources
from .._traffic import uses_tcp_proxy

__all__ = ["governing", "inexpressible_sources", "serves_tcp", "uneven_destinations"]


def governing(snapshot: Snapshot, workload: Workload | None) -> frozenset[str]:
    """``ns/name`` of the ingress ALLOW and DENY policies selecting ``workload`` (what decides its connections)."""
    if workload is None:
        return frozenset()
    return frozenset(
        f"{p.namespace}/{p.name}" for p in snapshot.policies
        if p.direction is Direction.INGRESS and p.action is not PolicyAction.AUDIT and p.selects(workload.namespace, workload.labels)
    )


def serves_tcp(port: ServicePort, tables: Sequence[RouteTable]) -> bool:
    """True when a proxied port gets a TCP listener: it does not speak HTTP, or it only routes by SNI or refuses a share."""
    if uses_tcp_proxy(port, tables):
        return True  # a port that does not speak HTTP (proxied for its traffic policy)
    kinds = {t.kind for t in tables}
    return RouteKind.L7 not in kinds and any(
        t.kind is RouteKind.L4 and (t.needs_l7 or any(r.invalid_weight for r in t.tcp)) for t in tables)


_ChainBackend = tuple[Workload | None, str, str, int]  # (workload, name for messages, address, target port)


def _chain_backends(snapshot: Snapshot, service: Service, port: ServicePort,
                    tables: Sequence[RouteTable]) -> list[tuple[str, list[_ChainBackend]]]:
    """Per TCP filter chain of a port (a label for messages), the active backends it may send to."""
    workloads = {w.ref: w for w in snapshot.workloads}
    chains: list[tuple[str, list[tuple[ServiceRef, int, tuple[tuple[str, str], ...]]]]] = []
    for table in tables:
        if table.kind is not RouteKind.L4:
            continue
        for i, route in enumerate(table.tcp):
            chains.append((f"route {i} ({route.name or 'unnamed'})",
                           [(d.service, d.port or table.port, d.subset_labels) for d in route.destinations if d.weight > 0]))
    if not chains:
        chains.append(("the port", [(service.ref, port.port, ())]))
    out: list[tuple[str, list[_ChainBackend]]] = []
    for label, dests in chains:
        found: list[_ChainBackend] = []
        for ref, number, subset in dests:
            svc = snapshot.service(ref)
            sp = svc.port(number) if svc is not None else None
            for b in sp.backends if sp is not None else ():
                if b.state is not BackendState.ACTIVE or b.weight <= 0:
                    continue
                w = workloads.get(b.workload) if b.workload is not None else None
                if subset and (w is None or not all(w.labels.get(k) == v for k, v in subset)):
                    continue
                found.append((w, str(b.workload or b.address), b.address, b.port))
        out.append((label, found))
    return out


def uneven_destinations(snapshot: Snapshot, service: Service, port: ServicePort,
                        tables: Sequence[RouteTable]) -> str | None:
    """Why one TCP filter chain of this port could not check authorization exactly, or ``None``.

    A chain's network RBAC runs before the TCP proxy picks a backend, so it is exact only
    when every backend the chain may pick is selected by the same ingress ALLOW/DENY
    policies and listens on the same port (port rules are decided per listener).
    """
    for label, backends in _chain_backends(snapshot, service, port, tables):
        keys: dict[tuple[frozenset[str], int], str] = {}
        for w, name, _, number in backends:
            keys.setdefault((governing(snapshot, w), number), name)
        if len(keys) > 1:
            (first, a), (second, b_) = list(keys.items())[:2]
            if first[0] != second[0]:
                differ = sorted(first[0] ^ second[0])[0]
                held_by = a if differ in first[0] else b_
                other = b_ if held_by == a else a
                why = f"authorization policy {differ} selects backend {held_by} but not {other}"
            else:
                why = f"backends {a} and {b_} listen on different ports ({first[1]}, {second[1]})"
            return (f"{why} among those {label} may send to; the node proxy checks a TCP connection before it "
                    "picks a backend, so it could not apply each backend's policy")
    return None


def inexpressible_sources(snapshot: Snapshot, service: Service, port: ServicePort,
                          tables: Sequence[RouteTable]) -> str | None:
    """Why a TCP filter chain of this port could not decide authorization from the client's address alone, or ``None``.

    The node proxy refuses a connection when it is accepted, by the client prefixes its
    chain admits (Envoy's RBAC would decide only at the first byte, after the TCP proxy
    has connected upstream), so every ALLOW rule must reduce to a set of client
    addresses for the chain. A ``destination.ip`` condition holding for some of the
    chain's backends but not others does not; the kernel then keeps the port (it admits
    only the node proxy for such a rule, so it fails closed).
    """
    index = RbacIndex(snapshot)
    for label, backends in _chain_backends(snapshot, service, port, tables):
        workloads = list(dict.fromkeys(w for w, _, _, _ in backends if w is not None))
        for policy in snapshot.policies:
            if (policy.direction is not Direction.INGRESS or policy.action is not PolicyAction.ALLOW
                    or not any(policy.selects(w.namespace, w.labels) for w in workloads)):
                continue
            for i, rule in enumerate(policy.rules):
                for cond in rule.conditions:
                    if cond.key != "destination.ip":
                        continue
                    nets = [ipaddress.ip_network(v, strict=False) for v in (*cond.values, *cond.not_values)]
                    held = {any(address_in(a, n) for n in nets) for _, _, a, _ in backends}
                    if len(held) > 1:
                        return (f"rule {i} of authorization policy {policy.namespace}/{policy.name} has a "
                                f"destination.ip condition holding for some backends {label} may send to but not "
                                "others; the node proxy refuses connections by the client's address before it "
                                "picks a backend, so it could not apply it")
        endpoints = [ChainEndpoint(str(w.ref) if w is not None else "", address, number)
                     for w, _, address, number in backends]
        try:
            admitted_sources(tcp_chain_rbac(index, endpoints, []))
        except NotASourceSet as e:
            return (f"{e} (among the policies of what {label} may send to); the node proxy refuses "
                    "connections by the client's address alone")
    return None
