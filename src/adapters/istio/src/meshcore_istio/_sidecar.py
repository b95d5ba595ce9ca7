"""Sidecar → the outbound traffic a workload may send when its registry is closed (``REGISTRY_ONLY``).

There are no sidecar proxies, so a Sidecar keeps the one meaning that does not depend on
one: which destinations its workloads may reach. Each workload takes the Sidecar Istio
would give it — the oldest one of its namespace whose ``workloadSelector`` selects it,
else its namespace's oldest one without a selector, else the root namespace's oldest one
without a selector. When that Sidecar's ``outboundTrafficPolicy.mode`` is
``REGISTRY_ONLY``, the workload gets a model egress ALLOW policy named after the Sidecar:
it may open TCP connections only to the services its ``egress`` hosts import
(``namespace/dnsName``; ``*``, ``~`` and ``.`` — the workload's namespace, also for a
root-namespace Sidecar — namespaces, ``*`` and ``*.suffix`` names; a listener's ``port``
limits its hosts to that service port) and are exported to the workload's namespace — to
their backends on their target ports, pods by identity and other endpoints (or, without
endpoints, the service's addresses) by address. UDP and SCTP stay open, as Istio's sidecars capture only TCP. ``ALLOW_ANY``,
or no ``outboundTrafficPolicy`` (the mesh default here), restricts nothing.

The ``egress`` hosts also decide which VirtualServices the workloads see, whatever the
mode (see ``_vs_scope``): a service or VirtualService not imported is reached unrouted.
Reported and not applied: ``ingress``, ``inboundConnectionPool``, ``egressProxy``, and a
listener's ``bind`` and ``captureMode``. A Sidecar without a selector applies to workloads with no selected
Sidecar: when its namespace also has selected workloads, the policy is written per label
set of the workloads it applies to, and a warning names any workload with its own Sidecar
that such a label set also selects. Imported ServiceEntries known by no address (DNS)
cannot be allowed, and are named in a warning.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from meshcore.kube import FieldError, Fields, KubeObject, Report
from meshcore.model import (
    AuthorizationPolicy,
    ClientMatch,
    Direction,
    IpBlock,
    Operation,
    PeerSelector,
    PolicyRule,
    PortRange,
    Service,
    Workload,
    WorkloadRef,
    WorkloadSelector,
)

from ._codes import IstioCode
from ._common import host_matches, model
from ._hosts import HostIndex

REGISTRY_ONLY = "REGISTRY_ONLY"


@attrs.frozen
class _Egress:
    """One ``egress`` listener: the hosts it imports, limited to ``port`` when set."""

    hosts: tuple[tuple[str, str], ...]
    port: int | None


@attrs.frozen(eq=False)
class SidecarScope:
    """A Sidecar read: whom it selects, whether its registry is closed, what it imports."""

    obj: KubeObject
    selector: tuple[tuple[str, str], ...] | None
    registry_only: bool
    egress: tuple[_Egress, ...]

    def listeners_for(self, number: int) -> tuple[_Egress, ...]:
        """The egress listeners that decide for service port ``number``: its own if one names it, else the others."""
        own = tuple(x for x in self.egress if x.port == number)
        return own or tuple(x for x in self.egress if x.port is None)

    def imports_config(self, config_namespace: str, hosts: Sequence[str], namespace: str, number: int) -> bool:
        """True when an egress host deciding for port ``number`` names ``config_namespace`` and one of ``hosts``.

        ``.`` is the workload's ``namespace``: a root-namespace Sidecar applies to each
        namespace as if written there. Without egress listeners everything is imported.
        """
        if not self.egress:
            return True
        for listener in self.listeners_for(number):
            for space, name in listener.hosts:
                wanted = namespace if space == "." else space
                if wanted == "~" or (wanted != "*" and wanted != config_namespace):
                    continue
                if any(name == "*" or host_matches(name, h) or host_matches(h, name) for h in hosts):
                    return True
        return False

    def imports(self, service: Service, number: int, namespace: str) -> bool:
        """True when an egress host imports ``service`` port ``number`` for a workload of ``namespace``."""
        return self.imports_config(service.namespace, service.hostnames, namespace, number)


def _host(value: str, path: str) -> tuple[str, str]:
    namespace, slash, name = value.partition("/")
    if not slash or not namespace or not name:
        raise FieldError(path, f"{value!r} is not namespace/dnsName (e.g. './*', 'istio-system/*', "
                         "'*/api.example.com')", IstioCode.INVALID_VALUE)
    return namespace, name


def read_sidecar(obj: KubeObject, report: Report) -> SidecarScope:
    """The scope of one Sidecar, reporting what is not applied."""
    spec = Fields.of(obj).map("spec")
    selector = None
    if spec.has("workloadSelector"):
        selector = tuple(sorted(spec.map("workloadSelector").str_map("labels").items()))
    egress = []
    for listener in spec.maps("egress"):
        hosts = tuple(_host(h, f"{listener.path}.hosts[{i}]") for i, h in enumerate(listener.strs("hosts")))
        if not hosts:
            raise FieldError(f"{listener.path}.hosts", "an egress listener needs at least one host",
                             IstioCode.INVALID_VALUE)
        port = (listener.map("port").int("number") or None) if listener.has("port") else None  # 0: any port
        for key in ("bind", "captureMode"):
            if listener.has(key):
                report.info(obj, IstioCode.NOT_CARRIED, f"{key} has no meaning without a sidecar proxy",
                            f"{listener.path}.{key}")
        egress.append(_Egress(hosts, port))
    policy = spec.map("outboundTrafficPolicy")
    registry_only = spec.has("outboundTrafficPolicy") and (policy.str("mode") or REGISTRY_ONLY) == REGISTRY_ONLY
    if policy.has("egressProxy"):
        report.warn(obj, IstioCode.NOT_SUPPORTED, "egressProxy is not supported: unknown destinations are refused, not "
                    "sent to the egress proxy" if registry_only else "egressProxy is not supported",
                    "spec.outboundTrafficPolicy.egressProxy")
    for key in ("ingress", "inboundConnectionPool"):
        if spec.has(key):
            report.info(obj, IstioCode.NOT_CARRIED, f"{key} is not applied: there is no sidecar proxy in front of the "
                        "workload", f"spec.{key}")
    return SidecarScope(obj, selector, registry_only, tuple(egress))


@attrs.frozen(eq=False)
class Sidecars:
    """The Sidecars in force: per namespace those with a selector (oldest first) and the default one."""

    selecting: dict[str, list[SidecarScope]]
    defaults: dict[str, SidecarScope]
    root: str

    @property
    def all(self) -> list[SidecarScope]:
        """Every Sidecar in force, oldest first within a namespace."""
        return [*self.defaults.values(), *(s for group in self.selecting.values() for s in group)]

    @property
    def scope_routes(self) -> bool:
        """True when some Sidecar imports only some hosts (its clients see only their routes)."""
        return any(s.egress for s in self.all)

    def default_for(self, namespace: str) -> SidecarScope | None:
        """The Sidecar of a namespace's workloads that no Sidecar selects (its own, else the root's)."""
        return self.defaults.get(namespace) or self.defaults.get(self.root)

    def client_scopes(self, namespace: str) -> list[tuple[ClientMatch, SidecarScope | None]]:
        """The namespace's clients, split by the Sidecar they take (a selected one, oldest first, else the default)."""
        chosen = self.selecting.get(namespace, [])
        out: list[tuple[ClientMatch, SidecarScope | None]] = [
            (ClientMatch((namespace,), labels=s.selector or (), exclude=[x.selector or () for x in chosen[:i]]), s)
            for i, s in enumerate(chosen)]
        out.append((ClientMatch((namespace,), exclude=[x.selector or () for x in chosen]), self.default_for(namespace)))
        return out


def resolve_sidecars(scopes: Sequence[SidecarScope], root: str, report: Report) -> Sidecars:
    """Index the Sidecars (oldest first); a later one without selector in a namespace that has one is reported."""
    defaults: dict[str, SidecarScope] = {}
    selecting: dict[str, list[SidecarScope]] = {}
    for s in scopes:
        if s.selector is not None:
            selecting.setdefault(s.obj.namespace, []).append(s)
            continue
        first = defaults.setdefault(s.obj.namespace, s)
        if first is not s:
            report.warn(s.obj, IstioCode.CONFLICT, f"Sidecar {first.obj.namespace}/{first.obj.name} is older and also "
                        "has no workloadSelector; this one is ignored", "spec")
    return Sidecars(selecting, defaults, root)


def _effective(sidecars: Sidecars, workload: Workload, report: Report,
               reported: set[tuple[str, str]]) -> SidecarScope | None:
    selecting = [s for s in sidecars.selecting.get(workload.namespace, [])
                 if workload.labels.matches(dict(s.selector or ()))]
    if selecting:
        if len(selecting) > 1 and (workload.namespace, workload.name) not in reported:
            reported.add((workload.namespace, workload.name))
            report.warn(selecting[1].obj, IstioCode.CONFLICT,
                        f"Sidecar {selecting[0].obj.namespace}/{selecting[0].obj.name} is older and also selects "
                        f"{workload.namespace}/{workload.name}; this one is ignored for it",
                        "spec.workloadSelector")
        return selecting[0]
    return sidecars.default_for(workload.namespace)


def _rules(scope: SidecarScope, namespace: str, services: Sequence[Service], hosts: HostIndex,
           workloads: dict[WorkloadRef, Workload], unreachable: set[str]) -> tuple[PolicyRule, ...]:
    """What the scope's workloads of ``namespace`` may reach: imported services' backends (TCP), anything over UDP/SCTP.

    Imported services that have neither backends nor addresses (ServiceEntries resolved
    by DNS) are added to ``unreachable``.
    """
    by_workload: dict[WorkloadRef, set[int]] = {}
    by_address: dict[str, set[int]] = {}
    for service in services:
        # Visible from the workload's namespace: this very service, not another of the same name.
        if service.hostnames and not any(service in hosts.lookup(h, namespace) for h in service.hostnames):
            continue
        for port in service.ports:
            if port.protocol.transport != "TCP" or not scope.imports(service, port.port, namespace):
                continue
            for backend in port.backends:
                if backend.workload is not None and backend.workload in workloads:
                    by_workload.setdefault(backend.workload, set()).add(backend.port)
                else:
                    by_address.setdefault(backend.address, set()).add(backend.port)
            if not port.backends:
                # An external service known by its addresses (no endpoints): those, on its port.
                for address in service.vips:
                    by_address.setdefault(address, set()).add(port.port)
                if not service.vips:
                    unreachable.add(str(service.ref))
    rules = [PolicyRule(operations=(Operation(ports=(PortRange(1, 65535, "UDP"), PortRange(1, 65535, "SCTP"))),))]
    for ref, ports in sorted(by_workload.items()):
        w = workloads[ref]
        rules.append(PolicyRule(
            sources=(PeerSelector(namespaces=(w.namespace,), workload_labels=dict(w.labels)),),
            operations=(Operation(ports=tuple(PortRange.single(p) for p in sorted(ports))),),
        ))
    for address, ports in sorted(by_address.items()):
        prefix = 128 if ":" in address else 32
        rules.append(PolicyRule(
            sources=(PeerSelector(ip_blocks=(IpBlock(f"{address}/{prefix}"),)),),
            operations=(Operation(ports=tuple(PortRange.single(p) for p in sorted(ports))),),
        ))
    return tuple(rules)


def sidecar_policies(sidecars: Sidecars, services: Sequence[Service], workloads: Sequence[Workload],
                     hosts: HostIndex, report: Report) -> list[AuthorizationPolicy]:
    """The egress ALLOW policies of the workloads whose Sidecar closes the registry."""
    scopes = sidecars.all
    if not any(s.registry_only for s in scopes):
        return []
    index = {w.ref: w for w in workloads}
    reported: set[tuple[str, str]] = set()
    effective = {w.ref: _effective(sidecars, w, report, reported) for w in workloads}
    out: list[AuthorizationPolicy] = []
    for scope in scopes:
        members = [index[ref] for ref, s in effective.items() if s is scope]
        if not scope.registry_only or not members:
            continue
        selectors = _selectors(scope, members, effective, index, report)
        unreachable: set[str] = set()
        rules_of: dict[str, tuple[PolicyRule, ...]] = {}
        for i, selector in enumerate(selectors):
            namespace = selector.namespace or scope.obj.namespace
            if namespace not in rules_of:
                rules_of[namespace] = _rules(scope, namespace, services, hosts, index, unreachable)
            several = sum(1 for x in selectors if x.namespace == selector.namespace) > 1
            # Not a name Kubernetes allows (":"), so no AuthorizationPolicy can share it.
            name = f"sidecar:{scope.obj.namespace}.{scope.obj.name}" + (f".{i}" if several else "")

            def build(sel: WorkloadSelector = selector, ns: str = namespace, n: str = name) -> AuthorizationPolicy:
                return AuthorizationPolicy(n, ns, sel, "ALLOW", rules_of[ns], Direction.EGRESS,
                                           source=scope.obj.source)
            out.append(model("spec", build))
        if unreachable:
            report.warn(scope.obj, IstioCode.NOT_SUPPORTED, f"imported services known by no address (resolved by DNS, "
                        "or by CIDR addresses, which are not carried): "
                        f"{', '.join(sorted(unreachable))}; with REGISTRY_ONLY their connections are refused",
                        "spec.egress" if scope.egress else "spec")
    return out


def _selectors(scope: SidecarScope, members: Sequence[Workload], effective: dict[WorkloadRef, SidecarScope | None],
               index: dict[WorkloadRef, Workload], report: Report) -> list[WorkloadSelector]:
    """Selectors choosing exactly the scope's workloads (per namespace; per label set when the namespace is shared)."""
    out = []
    for namespace in sorted({w.namespace for w in members}):
        here = [w for w in members if w.namespace == namespace]
        others = [w for w in index.values() if w.namespace == namespace and effective[w.ref] is not scope]
        if scope.selector is not None:
            out.append(WorkloadSelector(namespace, dict(scope.selector)))
            continue
        if not others:
            out.append(WorkloadSelector(namespace))
            continue
        for labels in sorted({tuple(sorted(w.labels.items())) for w in here}):
            selector = WorkloadSelector(namespace, dict(labels))
            shared = [o for o in others if selector.selects(o.namespace, o.labels)]
            if shared:
                report.warn(scope.obj, IstioCode.CONFLICT,
                            f"workloads {', '.join(f'{o.namespace}/{o.name}' for o in shared)} have their own Sidecar "
                            f"but carry all the labels of workloads this one applies to ({dict(labels) or 'none'}): "
                            "this Sidecar restricts them too", "spec")
            out.append(selector)
    return out
