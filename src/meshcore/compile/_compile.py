"""Snapshot → Plan: a pure function of the configuration and the node."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction

import attrs

from ..model import (
    Backend, BackendState, Labels, RouteKind, RouteTable, Service, ServicePort, ServiceRef, Snapshot, VipAssignment,
    WorkloadRef,
)
from ..model._gc import gc_paused
from ._decide import decide, l7_policies, virtual_hosts
from ._envoy.build import build_envoy_plan
from ._envoy.ports import ProxiedPort
from ._envoy.raw import raw_part
from ._modes import workload_modes
from ._sidecar import SidecarPlan, compile_sidecars, serving_sidecars, sidecar_gates
from ._policy import compile_policy
from ._policy_l7 import proxy_only_ports
from ._tunnel import TunnelPlan, compile_tunnel, strict_gates, with_access, with_egress
from ._ports import PROXY_PORT_BASE, PROXY_PORT_RANGE, PortAllocator
from ._plan import BpfBackend, BpfPlan, BpfService, Datapath, Decision, EnvoyPlan, Plan

#: Backend weights written to the kernel are scaled so one frontend's weights sum to this.
WEIGHT_SCALE = 1000


def _refs(value: Iterable[WorkloadRef] | None) -> frozenset[WorkloadRef] | None:
    return None if value is None else frozenset(value)


def _labels(value: Mapping[str, str]) -> Labels:
    return value if isinstance(value, Labels) else Labels(dict(value))


@attrs.frozen
class CompileOptions:
    """Knobs of compile; node-proxy listener ports are hashed into ``proxy_port_base`` + ``[0, proxy_port_range)``.

    ``proxy_enabled`` says the node runs the node proxy (Envoy): ports that need L7 are
    handed to it. Without it those ports stay in the kernel, their L7 features are not
    applied and their decisions say so.

    ``mtls`` tunnels meshed traffic between nodes and enforces PeerAuthentication (see
    :mod:`._tunnel`); it takes effect only with ``proxy_enabled``.

    ``node_labels`` are the node's labels, matched against raw Envoy configs' node
    selectors: a config with an empty selector applies to every node, one with a
    selector only to nodes carrying all its labels (so with no labels given, only
    configs without a selector apply — never more nodes than a selector intends).
    """

    proxy_enabled: bool = True
    #: Mutual TLS between meshed workloads (tunnels between node proxies, PeerAuthentication
    #: enforced); needs the node proxy and SVIDs from a CA.
    mtls: bool = False
    proxy_port_base: int = attrs.field(default=PROXY_PORT_BASE)
    proxy_port_range: int = attrs.field(default=PROXY_PORT_RANGE)
    node_labels: Labels = attrs.field(factory=Labels, converter=_labels)
    #: The node's sidecars seen serving (their Envoy acknowledged its configuration): only
    #: their workloads are enforced in sidecar mode, the others in node mode until theirs
    #: serve. None (planning offline): every sidecar is taken to serve.
    sidecars_serving: frozenset[WorkloadRef] | None = attrs.field(default=None, converter=_refs)

    def __attrs_post_init__(self) -> None:
        if self.proxy_port_range < 1 or not 1 <= self.proxy_port_base <= 65536 - self.proxy_port_range:
            raise ValueError(
                f"node-proxy ports {self.proxy_port_base}-{self.proxy_port_base + self.proxy_port_range - 1} "
                "are not a range of valid ports: the base must be at least 1 and the last port at most 65535")


def _l4_split(snapshot: Snapshot, table: RouteTable, port: ServicePort) -> tuple[Backend, ...] | None:
    """Backends for an L4 weighted split across services, or ``None`` when not applicable."""
    if table.kind is RouteKind.L4:
        if len(table.tcp) != 1 or table.tcp[0].sni or table.tcp[0].clients:
            return None
        chosen = table.tcp[0].destinations
    else:
        # An L7 table that needs no L7 is a weighted split too: its first route matches
        # every request, so it is the only one that ever applies (unless it is limited to
        # some hostnames: then the port is a set of virtual hosts in the node proxy).
        if not table.http or table.needs_l7 or virtual_hosts([table]):
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
    return Compiler(snapshot, node, options or CompileOptions()).plan()


@attrs.frozen
class ServicePart:
    """What one service compiles to: its frontends, the decision per port, the ports handed to the node proxy."""

    frontends: tuple[BpfService, ...]
    decisions: tuple[Decision, ...]
    proxied: tuple[ProxiedPort, ...]


class Compiler:
    """The per-snapshot context of compile (route tables by port, raw configs, proxy ports) and its steps.

    :meth:`plan` compiles every service; :class:`~meshcore.compile.CompiledPlan` reuses
    the steps to recompile a few services against the same context.
    """

    def __init__(self, snapshot: Snapshot, node: str, options: CompileOptions) -> None:
        self.snapshot = snapshot
        self.node = node
        self.options = options
        self.tables: dict[tuple[ServiceRef, int], list[RouteTable]] = defaultdict(list)
        for table in snapshot.routes:
            self.tables[(table.service, table.port)].append(table)
        self.ports = PortAllocator(options.proxy_port_base, options.proxy_port_range)
        self.raw = raw_part(snapshot, options.node_labels, self.ports)
        self.gated = proxy_only_ports(snapshot)
        self.l7 = l7_policies(snapshot)
        #: The listener port given to each proxied service port (by :func:`proxy_port_key`).
        self.proxy_ports: dict[str, int] = {}

    def derived(self, snapshot: Snapshot) -> Compiler:
        """This context for ``snapshot``, which differs from this one's only in some services' backends.

        Route tables, raw configs and gates are kept; a proxied port keeps its listener port.
        """
        other = copy.copy(self)
        other.snapshot = snapshot
        other.ports = self.ports.copy()
        other.proxy_ports = dict(self.proxy_ports)
        return other

    def plan(self) -> Plan:
        """The whole plan (see :func:`compile_plan`)."""
        return self.assemble(part for _, part in self.parts())

    def parts(self) -> list[tuple[Service, ServicePart]]:
        """Every service compiled, in snapshot order."""
        with gc_paused():
            return [(s, self.service(s)) for s in self.snapshot.services]

    def assemble(self, parts: Iterable[ServicePart]) -> Plan:
        """The plan of the services' parts (given in snapshot order)."""
        with gc_paused():
            chosen = list(parts)
            options = self.options
            tunnel = compile_tunnel(self.snapshot, self.node) if options.mtls and options.proxy_enabled else None
            serving = serving_sidecars(self.snapshot, self.node, options.sidecars_serving)
            policy = compile_policy(self.snapshot, self.node, strict_gates(self.snapshot) if tunnel is not None else (),
                                    serving)
            if tunnel is not None:
                tunnel = with_access(tunnel, policy, {r: p for r, p in sidecar_gates(self.snapshot).items()
                                                      if r in serving})
                tunnel = with_egress(tunnel, policy)
            envoy = self.envoy([i for p in chosen for i in p.proxied])
            bpf = BpfPlan([f for p in chosen for f in p.frontends])
            return Plan(
                node=self.node,
                snapshot_hash=self.snapshot.content_hash,
                bpf=bpf,
                envoy=attrs.evolve(envoy, tunnel=tunnel) if tunnel is not None else envoy,
                decisions=tuple(d for p in chosen for d in p.decisions),
                policy=policy,
                tunnel=tunnel,
                modes=workload_modes(self.snapshot, self.node, options.sidecars_serving),
                sidecars=self.sidecars(bpf, envoy, tunnel),
            )

    def sidecars(self, bpf: BpfPlan, envoy: EnvoyPlan, tunnel: TunnelPlan | None) -> tuple[SidecarPlan, ...]:
        """The plans of the node's sidecars, from the node's frontends and node proxy plan."""
        return compile_sidecars(self.snapshot, self.node, bpf, envoy, tunnel, self.options.sidecars_serving,
                                self.raw.redirects)

    def envoy(self, proxied: Sequence[ProxiedPort]) -> EnvoyPlan:
        """The node proxy's plan for the proxied ports and the node's raw configs."""
        if self.options.proxy_enabled and (proxied or self.raw.resources):
            return build_envoy_plan(self.snapshot, proxied, self.raw, self.node)
        return EnvoyPlan()

    def service(self, service: Service) -> ServicePart:
        """Compile one service: a decision per port and its frontends (listener ports taken in service order)."""
        snapshot, options = self.snapshot, self.options
        frontends: list[BpfService] = []
        decisions: list[Decision] = []
        proxied: list[ProxiedPort] = []
        for port in service.ports:
            port_tables = self.tables.get((service.ref, port.port), [])
            redirect = self.raw.redirects.get((service.ref, port.port))
            proxy_port = None
            if redirect is not None:
                decision = Decision(service.ref, port.port, port.protocol.transport, Datapath.ENVOY,
                                    redirect.reason, redirect.config.source)
                if options.proxy_enabled:
                    proxy_port = redirect.proxy_port
                else:
                    decision = attrs.evolve(
                        decision, reason=f"{decision.reason}; no node proxy is running, so it is not applied")
            else:
                decision = decide(snapshot, service, port, port_tables, self.l7)
                if decision.datapath is Datapath.ENVOY:
                    if options.proxy_enabled:
                        key = proxy_port_key(service.ref, port)
                        proxy_port = self.proxy_ports.get(key)
                        if proxy_port is None:
                            proxy_port = self.proxy_ports[key] = self.ports.take(key)
                        proxied.append(ProxiedPort(service, port, proxy_port, tuple(port_tables), decision))
                    else:
                        decision = attrs.evolve(
                            decision,
                            reason=f"{decision.reason}; no node proxy is running, so L7 features are not applied",
                        )
            # A service whose VIPs are still to be assigned gets them before any client dials it.
            if proxy_port is None or not (service.vips or service.vip_assignment is VipAssignment.PENDING):
                decision = _fails_closed(decision, service, port, self.gated)
            decisions.append(decision)
            backends = port.backends
            for table in port_tables:
                split = _l4_split(snapshot, table, port)
                if split is not None:
                    backends = split
            frontends.extend(_frontends(service, port, backends, proxy_port))
        return ServicePart(tuple(frontends), tuple(decisions), tuple(proxied))


def proxy_port_key(service: ServiceRef, port: ServicePort) -> str:
    """The key a proxied service port's listener port is allocated by."""
    return f"service/{service}:{port.port}/{port.protocol.transport}"


def _fails_closed(decision: Decision, service: Service, port: ServicePort,
                  gated: set[tuple[WorkloadRef, int]]) -> Decision:
    """Say so when the port's connections are not handed to the node proxy but its backends admit only it."""
    if not any((b.workload, b.port) in gated for b in port.backends if b.workload is not None):
        return decision
    why = "the service has no virtual IP, so clients dial the pods directly" if not service.vips else (
        "connections to this port are not handed to the node proxy")
    return attrs.evolve(decision, reason=(
        f"{decision.reason}; {why}, and the backends admit only the node proxy on this port (L7 policy or "
        "JWT checks, see PolicyPlan.l7): such connections are refused"))


def _frontends(service: Service, port: ServicePort, backends: tuple[Backend, ...], proxy_port: int | None) -> list[BpfService]:
    out = []
    for vip in service.vips:
        family = 6 if ":" in vip else 4
        out.append(BpfService(
            vip=vip, port=port.port, protocol=port.protocol.transport, service=service.ref,
            backends=_bpf_backends(backends, family), proxy_port=proxy_port, port_name=port.name,
        ))
    return out
