"""Snapshot → Plan: a pure function of the configuration and the node."""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction

import attrs

from ..model import Backend, BackendState, RouteKind, RouteTable, Service, ServicePort, ServiceRef, Snapshot
from ._decide import decide
from ._envoy import ProxiedPort, build_envoy_plan
from ._policy import compile_policy
from ._plan import BpfBackend, BpfPlan, BpfService, Datapath, Decision, EnvoyPlan, Plan

#: Backend weights written to the kernel are scaled so one frontend's weights sum to this.
WEIGHT_SCALE = 1000


@attrs.frozen
class CompileOptions:
    """Knobs of compile; ``proxy_port_base`` is where node-proxy listener ports start."""

    proxy_enabled: bool = False
    proxy_port_base: int = 15000


def _l4_split(snapshot: Snapshot, table: RouteTable, port: ServicePort) -> tuple[Backend, ...] | None:
    """Backends for an L4 weighted split across services, or ``None`` when not applicable."""
    if table.kind is RouteKind.L4:
        if len(table.tcp) != 1 or table.tcp[0].sni:
            return None
        chosen = table.tcp[0].destinations
    else:
        # An L7 table that needs no L7 is a weighted split too: its first route matches
        # every request, so it is the only one that ever applies.
        if not table.http or table.needs_l7:
            return None
        chosen = table.http[0].destinations
    dests = [d for d in chosen if d.weight > 0]
    total = sum(d.weight for d in dests)
    out: list[Backend] = []
    for dest in dests:
        svc = snapshot.service(dest.service)
        if svc is None:
            continue
        target = svc.port(dest.port or port.port, port.protocol.transport)
        if target is None:
            continue
        live = [b for b in target.backends if b.weight > 0]
        inner = sum(b.weight for b in live)
        for b in live:
            share = Fraction(dest.weight, total) * Fraction(b.weight, inner)
            out.append(attrs.evolve(b, weight=max(1, round(share * WEIGHT_SCALE))))
    return tuple(out)


def _bpf_backends(backends: tuple[Backend, ...], family: int) -> tuple[BpfBackend, ...]:
    return tuple(
        BpfBackend(b.address, b.port, b.weight, b.state)
        for b in backends
        if b.family == family and (b.weight > 0 or b.state is BackendState.TERMINATING)
    )


def compile_plan(snapshot: Snapshot, node: str = "", options: CompileOptions | None = None) -> Plan:
    """Compile ``snapshot`` for ``node``: frontends for the kernel and the eBPF/Envoy decision."""
    options = options or CompileOptions()
    tables: dict[tuple[ServiceRef, int], list[RouteTable]] = defaultdict(list)
    for table in snapshot.routes:
        tables[(table.service, table.port)].append(table)

    frontends: list[BpfService] = []
    decisions: list[Decision] = []
    proxied: list[ProxiedPort] = []
    next_proxy_port = options.proxy_port_base
    for service in snapshot.services:
        for port in service.ports:
            port_tables = tables.get((service.ref, port.port), [])
            decision = decide(snapshot, service, port, port_tables)
            proxy_port = None
            if decision.datapath is Datapath.ENVOY:
                if options.proxy_enabled:
                    proxy_port = next_proxy_port
                    next_proxy_port += 1
                    proxied.append(ProxiedPort(service, port, proxy_port, tuple(port_tables), decision))
                else:
                    decision = attrs.evolve(
                        decision,
                        reason=f"{decision.reason}; no node proxy is running, so L7 features are not applied",
                    )
            decisions.append(decision)
            backends = port.backends
            for table in port_tables:
                split = _l4_split(snapshot, table, port)
                if split is not None:
                    backends = split
            frontends.extend(
                _frontends(service, port, backends, proxy_port)
            )
    return Plan(
        node=node,
        snapshot_hash=snapshot.content_hash,
        bpf=BpfPlan(frontends),
        envoy=build_envoy_plan(snapshot, proxied) if proxied else EnvoyPlan(),
        decisions=tuple(decisions),
        policy=compile_policy(snapshot, node),
    )


def _frontends(service: Service, port: ServicePort, backends: tuple[Backend, ...], proxy_port: int | None) -> list[BpfService]:
    out = []
    for vip in service.vips:
        family = 6 if ":" in vip else 4
        out.append(BpfService(
            vip=vip, port=port.port, protocol=port.protocol.transport, service=service.ref,
            backends=_bpf_backends(backends, family), proxy_port=proxy_port, port_name=port.name,
        ))
    return out
