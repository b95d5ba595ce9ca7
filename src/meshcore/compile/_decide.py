"""The eBPF-or-Envoy decision for one service port, with its reason."""

from __future__ import annotations

from collections.abc import Sequence

from ..model import AuthorizationPolicy, RouteKind, RouteTable, Service, ServicePort, Snapshot, Workload
from ._envoy.jwt import selecting
from ._envoy.tcp_checks import inexpressible_sources, serves_tcp, uneven_destinations
from ._plan import Datapath, Decision
from ._traffic import traffic_verdict


def _backend_workloads(snapshot: Snapshot, port: ServicePort) -> list[Workload]:
    """The known workloads behind the port's backends (looked up, not scanned: this runs per port)."""
    refs = dict.fromkeys(b.workload for b in port.backends if b.workload is not None)
    return [w for ref in refs if (w := snapshot.workload(ref)) is not None]


def _policies_needing_l7(snapshot: Snapshot, port: ServicePort,
                         l7_policies: Sequence[AuthorizationPolicy]) -> list[AuthorizationPolicy]:
    """The L7 authorization policies (of ``l7_policies``) that select a backend workload of this port."""
    if not l7_policies:
        return []
    workloads = _backend_workloads(snapshot, port)
    return [p for p in l7_policies if any(p.selects(w.namespace, w.labels) for w in workloads)]


def l7_policies(snapshot: Snapshot) -> list[AuthorizationPolicy]:
    """The snapshot's policies that need the node proxy, in order (found once per compile, not per port)."""
    return [p for p in snapshot.policies if p.needs_l7]


def _policy_l7_reason(policy: AuthorizationPolicy) -> str:
    """Which rule of ``policy`` needs Envoy, and on what."""
    for i, rule in enumerate(policy.rules):
        for op in rule.operations:
            for field in ("methods", "not_methods", "paths", "not_paths", "hosts", "not_hosts"):
                values = getattr(op, field)
                if values:
                    label = field.replace("not_", "excluded ").rstrip("s")
                    return f"rule {i} matches on HTTP {label}s {', '.join(values)}"
        if rule.conditions:
            return f"rule {i} has a condition on {rule.conditions[0].key}"
        if any(s.request_principals or s.not_request_principals for s in rule.sources):
            return f"rule {i} matches on request principals (JWT)"
    return "matches on HTTP attributes"


def virtual_hosts(tables: Sequence[RouteTable]) -> list[str]:
    """The request hostnames L7 tables of one port are limited to (empty: any host)."""
    return list(dict.fromkeys(
        h for t in tables if t.kind is RouteKind.L7 for h in t.hostnames if h != "*"))


def decide(snapshot: Snapshot, service: Service, port: ServicePort, tables: Sequence[RouteTable],
           l7: Sequence[AuthorizationPolicy] | None = None) -> Decision:
    """Decide whether ``port`` of ``service`` needs the node Envoy, and say why.

    ``l7`` are the snapshot's :func:`l7_policies`, when the caller decides many ports.
    """
    decision = _decide(snapshot, service, port, tables, l7_policies(snapshot) if l7 is None else l7)
    if decision.datapath is Datapath.ENVOY and serves_tcp(port, tables):
        # The node proxy's TCP listener enforces the backends' L3/L4 authorization (their
        # kernel policy exempts it), which it can do exactly only when every backend a
        # connection may go to is governed alike and the decision depends on the client's
        # address alone (it is taken on accept); otherwise the kernel keeps the port.
        uneven = uneven_destinations(snapshot, service, port, tables) or inexpressible_sources(
            snapshot, service, port, tables)
        if uneven is not None:
            return Decision(service.ref, port.port, decision.protocol, Datapath.EBPF,
                            f"{decision.reason}, but {uneven}: the kernel keeps the port and enforces each "
                            "backend's policy (what needed the node proxy is not applied)", decision.source)
    return decision


def _decide(snapshot: Snapshot, service: Service, port: ServicePort, tables: Sequence[RouteTable],
            l7: Sequence[AuthorizationPolicy]) -> Decision:
    transport = port.protocol.transport
    terminations = snapshot.terminations(service.ref, port.port)
    if terminations:
        names = ", ".join(dict.fromkeys(str(c) for t in terminations for c in t.certificates))
        return Decision(service.ref, port.port, transport, Datapath.ENVOY,
                        f"terminates TLS with the certificate of Secret {names}", terminations[0].source)
    if service.resolved_by_dns:
        names = ", ".join(dict.fromkeys(h.hostname for h in port.hostname_backends)) or "none"
        if transport == "UDP":
            return Decision(service.ref, port.port, transport, Datapath.EBPF,
                            f"backends are names ({names}), which only the node proxy resolves, and it cannot "
                            "proxy UDP: the port has no backends", service.source)
        return Decision(service.ref, port.port, transport, Datapath.ENVOY,
                        f"backends are names the node proxy resolves by DNS ({names})", service.source)
    for table in tables:
        reason = table.l7_reason()
        if reason:
            return Decision(service.ref, port.port, transport, Datapath.ENVOY, reason, table.source)
    hosts = virtual_hosts(tables)
    if hosts:
        first = next(t for t in tables if t.kind is RouteKind.L7 and t.hostnames)
        return Decision(service.ref, port.port, transport, Datapath.ENVOY,
                        f"serves hostnames {', '.join(hosts)} (a virtual host per route table)", first.source)
    for table in tables:
        for i, route in enumerate(table.tcp if table.kind is RouteKind.L4 else ()):
            if not route.invalid_weight:
                continue
            why = f"route {i} ({route.name or 'unnamed'}) refuses a share of connections (invalid backends)"
            if transport == "UDP":
                return Decision(service.ref, port.port, transport, Datapath.EBPF,
                                f"{why}, which neither the socket-level balancer nor the node proxy can do "
                                "for UDP: that share goes to the valid backends", table.source)
            return Decision(service.ref, port.port, transport, Datapath.ENVOY,
                            f"{why}, which the socket-level balancer cannot express", table.source)
    policies = _policies_needing_l7(snapshot, port, l7)
    if policies:
        p = policies[0]
        why = f"authorization policy {p.namespace}/{p.name} {_policy_l7_reason(p)}"
        if not port.protocol.is_http:
            # An HTTP listener would break a non-HTTP protocol (and UDP cannot be proxied).
            # A port proxied for another reason gets a TCP listener, which applies the
            # policy as Istio does for TCP traffic.
            traffic = traffic_verdict(snapshot, service, port, tables)
            if traffic is not None and traffic.envoy_reason:
                return Decision(service.ref, port.port, transport, Datapath.ENVOY, traffic.envoy_reason,
                                traffic.source)
            return Decision(service.ref, port.port, transport, Datapath.EBPF,
                            f"{why}, but the port speaks {port.protocol.value}, not HTTP, so the node proxy "
                            "cannot check it there (the kernel admits only the node proxy for that rule, so it "
                            "allows nothing on this port)", p.source)
        return Decision(service.ref, port.port, transport, Datapath.ENVOY, why, p.source)
    if snapshot.request_authentications and port.protocol.is_http:
        # JWTs travel in HTTP requests: on other ports a request authentication has no
        # effect (as in Istio, where TCP traffic passes it untouched).
        authns = selecting(snapshot.request_authentications, _backend_workloads(snapshot, port))
        if authns:
            a = authns[0]
            issuers = ", ".join(dict.fromkeys(r.issuer for r in a.jwt_rules))
            return Decision(service.ref, port.port, transport, Datapath.ENVOY,
                            f"request authentication {a.namespace}/{a.name} validates JWTs (issuer {issuers})",
                            a.source)
    traffic = traffic_verdict(snapshot, service, port, tables)
    if traffic is not None and traffic.envoy_reason:
        return Decision(service.ref, port.port, transport, Datapath.ENVOY, traffic.envoy_reason, traffic.source)
    notes = "".join(f"; {n}" for n in traffic.notes) if traffic is not None else ""
    if tables:
        return Decision(service.ref, port.port, transport, Datapath.EBPF,
                        f"routes only split traffic by weight at L4{notes}", tables[0].source)
    if traffic is not None and traffic.notes:
        return Decision(service.ref, port.port, transport, Datapath.EBPF,
                        f"no route or policy needs L7{notes}", traffic.source)
    return Decision(service.ref, port.port, transport, Datapath.EBPF,
                    "no route or policy needs L7", service.source)
