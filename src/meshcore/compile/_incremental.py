"""Recompiling what changed: a plan kept with what compile learnt, so one endpoint change costs its services.

A :class:`CompiledPlan` holds the plan, the per-snapshot context of compile and where each
service's frontends and decisions sit in the plan. :meth:`CompiledPlan.recompile` takes a snapshot derived from its own
by :meth:`~meshcore.model.Snapshot.replacing_services` and compiles again only the
replaced services and the services whose routes send to them; the plan it gives is the
one :func:`compile_plan` gives for that snapshot. Whenever what changed reaches further,
it compiles the whole snapshot instead:

- the snapshot was not derived from this one (anything but services changed);
- a replaced service changed more than its backends (addresses, ports, hostnames);
- L7 authorization policies or request authentications exist (which ports admit only
  the node proxy then depends on every service's backends);
- a port moves between the kernel and the node proxy (listener ports are allocated in
  service order).

The node proxy's plan is rebuilt only when a recompiled service is proxied or has a
cluster in it; otherwise it is reused as it is, and so is the policy plan.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from ..model import Service, ServiceRef, Snapshot
from ._compile import CompileOptions, Compiler, ServicePart
from ._diff import BpfDiff
from ._envoy.ports import ProxiedPort
from ._plan import BpfService, Plan, sorted_bpf_plan

__all__ = ["CompiledPlan"]

FrontendKey = tuple[str, int, str]


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in attrs.fields(cls))


def _service_refs(value: Any) -> Iterator[ServiceRef]:
    """Every ServiceRef inside a model value (destinations, mirrors, whatever holds one)."""
    if isinstance(value, ServiceRef):
        yield value
    elif isinstance(value, tuple):
        for item in value:
            yield from _service_refs(item)
    elif attrs.has(cls := type(value)):
        for name in _field_names(cls):
            if name != "source":
                yield from _service_refs(getattr(value, name))


def _shape(service: Service) -> tuple[object, ...]:
    """A service without its backends: what frontends are keyed by and what routes and raw configs see."""
    return (service.vips, tuple((p.port, p.protocol, p.name) for p in service.ports), service.hostnames,
            service.lb_policy)


class CompiledPlan:
    """A compiled plan that can recompile a snapshot differing in a few services (see the module doc)."""

    def __init__(self, compiler: Compiler, plan: Plan, proxied: tuple[ProxiedPort, ...],
                 bpf_diff: BpfDiff | None = None, indexes: _Indexes | None = None) -> None:
        self._compiler = compiler
        self.plan = plan
        self._proxied = proxied
        #: What changed in the kernel's frontends since the plan this one was recompiled from
        #: (None after a whole compile).
        self.bpf_diff = bpf_diff
        self._indexes = indexes or _Indexes.of(plan, compiler.snapshot, proxied)

    @classmethod
    def compile(cls, snapshot: Snapshot, node: str = "", options: CompileOptions | None = None) -> CompiledPlan:
        """Compile ``snapshot`` whole (the plan :func:`compile_plan` gives)."""
        compiler = Compiler(snapshot, node, options or CompileOptions())
        parts = [p for _, p in compiler.parts()]
        return cls(compiler, compiler.assemble(parts), tuple(i for p in parts for i in p.proxied))

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot the plan was compiled from."""
        return self._compiler.snapshot

    @property
    def options(self) -> CompileOptions:
        """The options the plan was compiled with."""
        return self._compiler.options

    def recompile(self, snapshot: Snapshot, node: str | None = None,
                  options: CompileOptions | None = None) -> CompiledPlan:
        """The plan for ``snapshot`` (for ``node`` with ``options``, by default this plan's).

        Only the services replaced since this plan's snapshot are compiled again when that
        is enough; the result is always the plan :func:`compile_plan` gives.
        """
        node = self._compiler.node if node is None else node
        options = self.options if options is None else options
        if node != self._compiler.node or options != self.options:
            return CompiledPlan.compile(snapshot, node, options)
        if snapshot is self.snapshot:
            return CompiledPlan(self._compiler, self.plan, self._proxied, BpfDiff(), self._indexes)
        return self._scoped(snapshot) or CompiledPlan.compile(snapshot, node, options)

    def _scoped(self, snapshot: Snapshot) -> CompiledPlan | None:
        """The recompiled plan when the change stays within some services, else None."""
        replaced = snapshot.replaced_since(self.snapshot)
        if replaced is None or self._compiler.l7 or snapshot.request_authentications:
            return None
        before = self.snapshot
        for ref in replaced:
            old, new = before.service(ref), snapshot.service(ref)
            if old is None or new is None or _shape(old) != _shape(new):
                return None
        indexes = self._indexes
        affected = set(replaced)
        for ref in replaced:
            affected |= indexes.dependents.get(ref, set())
        compiler = self._compiler.derived(snapshot)
        parts: dict[ServiceRef, ServicePart] = {}
        for ref in sorted(affected):
            service = snapshot.service(ref)
            assert service is not None
            part = compiler.service(service)
            if not self._same_places(ref, part):
                return None
            parts[ref] = part
        return self._derived(compiler, parts)

    def _same_places(self, ref: ServiceRef, part: ServicePart) -> bool:
        """True when ``part`` has the frontends, decisions and proxied ports ``ref`` had (only their content moved)."""
        indexes, frontends = self._indexes, self.plan.bpf.services
        if len(part.frontends) != indexes.frontend_counts.get(ref, 0):
            return False
        for f in part.frontends:
            i = indexes.frontends.get(f.key)
            if i is None or frontends[i].service != ref:
                return False
        return [_proxied_key(i) for i in part.proxied] == indexes.proxied.get(ref, [])

    def _derived(self, compiler: Compiler, changed: Mapping[ServiceRef, ServicePart]) -> CompiledPlan:
        plan, indexes = self.plan, self._indexes
        frontends = list(plan.bpf.services)
        decisions = list(plan.decisions)
        updated: list[BpfService] = []
        proxied_changed = False
        for ref, part in changed.items():
            for after in part.frontends:
                i = indexes.frontends[after.key]
                if frontends[i] != after:
                    frontends[i] = after
                    updated.append(after)
            start = indexes.decisions.get(ref)
            if start is not None:
                decisions[start:start + len(part.decisions)] = part.decisions
            proxied_changed = proxied_changed or bool(part.proxied)
        envoy, proxied = plan.envoy, self._proxied
        if proxied_changed or any(ref in indexes.envoy_services for ref in changed):
            # The same ports are proxied (checked before), each now with its service's new backends.
            fresh = {_proxied_key(i): i for part in changed.values() for i in part.proxied}
            proxied = tuple(fresh.get(_proxied_key(i), i) for i in proxied)
            envoy = compiler.envoy(proxied)
            if plan.tunnel is not None:  # workloads and peer authentication are unchanged: so is the tunnel
                envoy = attrs.evolve(envoy, tunnel=plan.tunnel)
        new_plan = attrs.evolve(
            plan, snapshot_hash=compiler.snapshot.content_hash, bpf=sorted_bpf_plan(tuple(frontends)),
            envoy=envoy, decisions=tuple(decisions))
        if plan.sidecars:
            # Sidecars serve the same backends: their clusters follow the new ones.
            new_plan = attrs.evolve(new_plan, sidecars=compiler.sidecars(new_plan.bpf, new_plan.envoy, plan.tunnel))
        if envoy is not plan.envoy:
            indexes = attrs.evolve(indexes, envoy_services=_envoy_services(new_plan))
        return CompiledPlan(compiler, new_plan, proxied, BpfDiff(changed=tuple(updated)), indexes)


def _proxied_key(item: ProxiedPort) -> tuple[ServiceRef, int, str]:
    return (item.service.ref, item.port.port, item.port.protocol.transport)


def _envoy_services(plan: Plan) -> frozenset[ServiceRef]:
    """The services whose backends the node proxy's plan holds (clusters name their service)."""
    return frozenset(c.service for c in plan.envoy.clusters)


@attrs.frozen
class _Indexes:
    """Where each service's frontends and decisions sit in a plan, and which services read which."""

    frontends: Mapping[FrontendKey, int]
    frontend_counts: Mapping[ServiceRef, int]
    decisions: Mapping[ServiceRef, int]
    proxied: Mapping[ServiceRef, list[tuple[ServiceRef, int, str]]]
    #: Service → the services whose route tables send to it (their frontends read its backends).
    dependents: Mapping[ServiceRef, set[ServiceRef]]
    envoy_services: frozenset[ServiceRef]

    @classmethod
    def of(cls, plan: Plan, snapshot: Snapshot, proxied: tuple[ProxiedPort, ...]) -> _Indexes:
        frontends: dict[FrontendKey, int] = {}
        counts: dict[ServiceRef, int] = defaultdict(int)
        for i, s in enumerate(plan.bpf.services):
            frontends[(s.vip, s.port, s.protocol)] = i
            counts[s.service] += 1
        decisions: dict[ServiceRef, int] = {}
        for i, d in enumerate(plan.decisions):
            decisions.setdefault(d.service, i)
        by_service: dict[ServiceRef, list[tuple[ServiceRef, int, str]]] = defaultdict(list)
        for item in proxied:
            by_service[item.service.ref].append(_proxied_key(item))
        dependents: dict[ServiceRef, set[ServiceRef]] = {}
        for table in snapshot.routes:
            for ref in _service_refs((table.http, table.tcp)):
                if ref != table.service:
                    dependents.setdefault(ref, set()).add(table.service)
        return cls(frontends, dict(counts), decisions, dict(by_service), dependents, _envoy_services(plan))
