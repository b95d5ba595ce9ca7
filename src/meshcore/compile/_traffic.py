"""Traffic policies in the eBPF-or-Envoy decision: which settings the socket-level balancer cannot honour.

The kernel picks a backend at random, by weight, once per connection; it counts nothing
and never looks inside a connection. So on an HTTP port a consistent hash, any
connection-pool limit, outlier ejection or TLS origination needs the node Envoy. A
plain ``simple`` load balancer (ROUND_ROBIN, LEAST_REQUEST, RANDOM) alone does not: the
port stays in the kernel, and the reason says that it balances at random per connection
(moving every request of a port through a proxy only to change the balancing order
would cost more than users of a ``simple`` policy expect to pay). On a TCP port Envoy's
TCP proxy honours what needs no HTTP: a source-IP hash, the TCP connection limits and
timeouts, outlier ejection on failed connections and TLS origination; HTTP-only settings
there are ignored, as Istio ignores them. UDP cannot be proxied.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ..model import (
    HttpRoute,
    LbPolicy,
    RouteKind,
    RouteTable,
    Service,
    ServicePort,
    Snapshot,
    Source,
    TcpRoute,
    TlsMode,
    TrafficPolicy,
)


@attrs.frozen
class TrafficVerdict:
    """What a port's traffic policies ask of the datapath: a reason for Envoy, or notes for eBPF."""

    envoy_reason: str | None
    notes: tuple[str, ...]
    source: Source


def _who(policy: TrafficPolicy) -> str:
    ref = policy.source.object_ref
    what = ref if policy.source.kind else f"the traffic policy of {policy.service}"
    return f"{what} (subset {policy.subset})" if policy.subset else what


def _names(fields: Sequence[str]) -> str:
    return ", ".join(f.removesuffix("_ms") for f in fields)


def port_policies(snapshot: Snapshot, service: Service, port: ServicePort,
                  tables: Sequence[RouteTable]) -> list[TrafficPolicy]:
    """The effective policies for the port and for each of its subsets that a route sends to."""
    out = []
    whole = snapshot.traffic_policy(service.ref, port.port)
    if whole is not None:
        out.append(whole)
    routes: list[HttpRoute | TcpRoute] = [*(r for t in tables for r in t.http), *(r for t in tables for r in t.tcp)]
    named = {d.subset for r in routes for d in r.destinations if d.service == service.ref and d.subset}
    for subset in snapshot.traffic_subsets(service.ref, port.port):
        if subset in named:
            found = snapshot.traffic_policy(service.ref, port.port, subset)
            if found is not None:
                out.append(found)
    return out


def _http_needs(p: TrafficPolicy) -> list[str]:
    needs = []
    if p.lb is not None and p.lb.hash_key is not None:
        needs.append(f"consistent hashing on {p.lb.hash_key}")
    if p.connection_pool is not None:
        fields = p.connection_pool.tcp_settings() + p.connection_pool.http_settings()
        if fields:
            needs.append(f"connection pool limits ({_names(fields)})")
    if p.outlier_detection is not None:
        needs.append("outlier detection")
    if p.tls is not None and p.tls.originates:
        needs.append(f"TLS origination ({p.tls.mode.value})")
    return needs


def _tcp_needs(p: TrafficPolicy, notes: list[str]) -> list[str]:
    needs = []
    who = _who(p)
    if p.lb is not None and p.lb.hash_key is not None:
        if p.lb.hash_key.needs_http:
            notes.append(f"{who}: consistent hashing on {p.lb.hash_key} needs HTTP; ignored on this TCP port")
        else:
            needs.append("consistent hashing on the source IP")
    if p.connection_pool is not None:
        tcp, http = p.connection_pool.tcp_settings(), p.connection_pool.http_settings()
        if tcp:
            needs.append(f"connection pool limits ({_names(tcp)})")
        if http:
            notes.append(f"{who}: HTTP connection pool settings ({_names(http)}) do not apply to a TCP port")
    if p.outlier_detection is not None:
        needs.append("outlier detection (on failed connections)")
    if p.tls is not None and p.tls.originates:
        needs.append(f"TLS origination ({p.tls.mode.value})")
    return needs


def _simple_notes(policies: Sequence[TrafficPolicy], notes: list[str]) -> None:
    for p in policies:
        if p.lb is not None and p.lb.hash_key is None and p.lb.policy is not LbPolicy.RANDOM:
            notes.append(f"{_who(p)} asks for {p.lb.policy.value} load balancing; the kernel picks a backend at "
                         "random by weight for each connection")
        if p.tls is not None and p.tls.mode is TlsMode.ISTIO_MUTUAL:
            notes.append(f"{_who(p)} asks for ISTIO_MUTUAL TLS, which is not implemented: traffic stays plain text")


def traffic_verdict(snapshot: Snapshot, service: Service, port: ServicePort,
                    tables: Sequence[RouteTable]) -> TrafficVerdict | None:
    """What the port's traffic policies need (``None`` when no policy applies to the port)."""
    policies = port_policies(snapshot, service, port, tables)
    if not policies:
        return None
    notes: list[str] = []
    transport = port.protocol.transport
    for p in policies:
        if port.protocol.is_http:
            needs = _http_needs(p)
        elif transport == "UDP":
            needs = _tcp_needs(p, [])
            if needs:
                notes.append(f"{_who(p)} asks for {needs[0]}, but UDP cannot be proxied; ignored")
            needs = []
        else:
            # The node proxy's TCP listener checks the backends' authorization policies itself.
            needs = _tcp_needs(p, notes)
        if needs:
            return TrafficVerdict(f"{_who(p)} sets {', '.join(needs)}", (), p.source)
    _simple_notes(policies, notes)
    return TrafficVerdict(None, tuple(dict.fromkeys(notes)), policies[0].source)


def uses_tcp_proxy(port: ServicePort, tables: Sequence[RouteTable]) -> bool:
    """True when a proxied port is served by Envoy's TCP proxy (it does not speak HTTP)."""
    return not port.protocol.is_http and all(t.kind is not RouteKind.L7 for t in tables)
