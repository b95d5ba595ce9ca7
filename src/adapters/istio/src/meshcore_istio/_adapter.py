"""The istio adapter: Istio networking and security objects → model services, routes, policies.

The steps: every object's ``spec`` is parsed into its Istio API protobuf message (unknown
fields and wrong types are errors naming the field path); ServiceEntries and
WorkloadEntries add services and workloads; DestinationRules are indexed by host;
VirtualServices on the mesh gateway become route tables for the ports of the services
their hosts name; Gateways become route tables on the Service ports exposing their
workloads, from the VirtualServices bound to them; AuthorizationPolicies and
PeerAuthentications become model policies.
An object with an error contributes nothing and the others still translate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs

from meshcore.adapter import ApiKind, Fragment
from meshcore.kube import FieldError, Inventory, KubeObject, Report, field_diagnostic, unique_objects
from meshcore.model import (
    AuthorizationPolicy,
    LbPolicy,
    ModelError,
    PeerAuthentication,
    Protocol,
    RequestAuthentication,
    RouteKind,
    RouteTable,
    Service,
    ServiceRef,
    Workload,
    WorkloadSelector,
)

from ._codes import IstioCode
from ._common import ROOT_NAMESPACE, age_key
from ._admission import check_crd
from ._api import parse_spec
from ._delegate import resolve_delegates
from ._destinationrule import DestRule, read_destination_rule
from ._destinations import Resolver
from ._hosts import HostIndex, Known
from ._ingress import serve_gateways
from ._requestauthn import read_request_authentication
from ._security import read_authorization_policy, read_peer_authentications
from ._serviceentry import NamedWorkload, read_service_entry, read_workload_entry
from ._selectors import report_unselected
from ._sidecar import Sidecars, SidecarScope, read_sidecar, resolve_sidecars, sidecar_policies
from ._trafficpolicy import traffic_policies
from ._virtualservice import VirtualService, check_shadowing, read_virtual_service
from ._vs_scope import mesh_tables
from ._webhook import check_webhook

NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"

#: Every (apiVersion, kind) this adapter handles: each version Istio still serves.
KINDS: tuple[ApiKind, ...] = tuple(
    ApiKind(f"{group}/{version}", kind)
    for group, versions, kinds in (
        (NETWORKING, ("v1", "v1beta1", "v1alpha3"),
         ("VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "WorkloadEntry", "Sidecar")),
        (SECURITY, ("v1", "v1beta1"),
         ("AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication")),
    )
    for version in versions
    for kind in kinds
)

T = TypeVar("T")


def _run(obj: KubeObject, report: Report, fn: Callable[..., T], *args: Any) -> T | None:
    """Run ``fn(*args)`` for one object; an error becomes a diagnostic and ``None``."""
    try:
        return fn(*args)
    except (FieldError, ModelError) as exc:
        report.items.append(field_diagnostic(obj, exc))
        return None


def _checked(obj: KubeObject) -> bool:
    spec = obj.body.get("spec") or {}
    parse_spec(obj.kind, spec)
    check_crd(obj.kind, spec)
    check_webhook(obj.kind, spec)
    return True


class _Translation:
    """One run of the adapter over its objects (kept in one place so steps share indexes)."""

    def __init__(self, objects: Sequence[KubeObject], inventory: Inventory, root: str) -> None:
        self.inventory = inventory
        self.root = root
        self.report = Report()
        self.by_kind: dict[str, list[KubeObject]] = defaultdict(list)
        for obj in unique_objects(objects, self.report, IstioCode.DUPLICATE_OBJECT):
            if not _run(obj, self.report, _checked, obj):
                continue
            self.by_kind[obj.kind].append(obj)
        self.services: list[Service] = []
        self.workloads: list[Workload] = []
        self.tables: list[RouteTable] = []
        self.sidecars = Sidecars({}, {}, root)

    def run(self) -> Fragment:
        report = self.report
        named: list[NamedWorkload] = []
        for obj in self.by_kind["WorkloadEntry"]:
            w = _run(obj, report, read_workload_entry, obj, report)
            if isinstance(w, NamedWorkload):
                named.append(w)
            elif w is not None:
                self.workloads.append(w)
        used: set[int] = set()
        rules = [r for obj in self.by_kind["DestinationRule"]
                 if (r := _run(obj, report, read_destination_rule, obj, report)) is not None]
        known = [Known(s, s.hostnames) for s in self.inventory.services]
        taken = {s.ref for s in self.inventory.services}
        for obj in self.by_kind["ServiceEntry"]:
            entry = _run(obj, report, read_service_entry, obj, self.inventory, self.workloads,
                         self._se_lb(obj, rules), report, named, used)
            if entry is None:
                continue
            if entry.known.service.ref in taken:
                report.error(obj, IstioCode.DUPLICATE_OBJECT, f"the service {entry.known.service.ref} this "
                             "ServiceEntry would define already exists; rename the ServiceEntry")
                continue
            taken.add(entry.known.service.ref)
            self.services.append(entry.known.service)
            known.append(entry.known)
        for n in named:
            if id(n) not in used:
                report.warn(n.obj, IstioCode.NOT_SUPPORTED, f"hostname address {n.hostname} is only resolved for a "
                            "ServiceEntry with resolution DNS or DNS_ROUND_ROBIN that selects this WorkloadEntry; "
                            "none does: it is not applied", "spec.address")
        hosts = HostIndex(known)
        scopes = [scope for obj in sorted(self.by_kind["Sidecar"], key=age_key)
                  if (scope := _run(obj, report, read_sidecar, obj, report)) is not None]
        self.sidecars = resolve_sidecars(scopes, self.root, report)
        self._check_rules(rules, hosts)
        traffic = traffic_policies(rules, hosts, report)
        virtual_services = self._virtual_services(hosts, rules)
        policies = self._policies()
        errors: list[KubeObject] = []
        peer = read_peer_authentications(self.by_kind["PeerAuthentication"], report, errors, self.root)
        authns = [a for obj in self.by_kind["RequestAuthentication"]
                  if (a := _run(obj, report, read_request_authentication, obj, report, self.root)) is not None]
        served = serve_gateways(self.by_kind["Gateway"], virtual_services, self.inventory, self.workloads, report)
        self.tables += served.tables
        self._unselected(policies, peer, authns, scopes)
        policies += sidecar_policies(self.sidecars, [*self.inventory.services, *self.services],
                                     [*self.inventory.workloads, *self.workloads], hosts, report)
        return Fragment(services=self.services, workloads=self.workloads, routes=self.tables,
                        policies=policies, peer_authentications=peer, request_authentications=authns,
                        traffic_policies=traffic, diagnostics=report.items, certificates=served.certificates,
                        tls_terminations=served.terminations)

    def _se_lb(self, obj: KubeObject, rules: list[DestRule]) -> LbPolicy | None:
        hosts = obj.spec.get("hosts")
        if not isinstance(hosts, list):
            return None
        for r in rules:
            if r.host in hosts and r.lb_policy is not None and not r.selector:
                return r.lb_policy
        return None

    def _check_rules(self, rules: list[DestRule], hosts: HostIndex) -> None:
        report = self.report
        by_host: dict[tuple[str, str], DestRule] = {}
        for r in sorted(rules, key=lambda x: age_key(x.obj)):
            found = hosts.lookup(r.host, r.obj.namespace)
            if not found and not r.selector:
                report.warn(r.obj, IstioCode.HOST_NOT_FOUND, f"host {r.host} matches no Service or ServiceEntry "
                            "visible from this namespace", "spec.host")
            # Rules with a workloadSelector apply to their workloads only: they never conflict per host.
            if not r.selector:
                key = (r.obj.namespace, r.host)
                if key in by_host:
                    first = by_host[key].obj
                    report.warn(r.obj, IstioCode.CONFLICT, f"DestinationRule {first.namespace}/{first.name} for host "
                                f"{r.host} in this namespace is older; this one is ignored", "spec.host")
                    rules.remove(r)
                    continue
                by_host[key] = r
            workloads = {w.ref: w for w in (*self.inventory.workloads, *self.workloads)}
            for subset in r.subsets:
                for service in found:
                    backing = {b.workload for p in service.ports for b in p.backends if b.workload is not None}
                    if not backing:
                        continue  # a service without backends is reported where it is defined
                    labels = dict(subset.labels)
                    selected = [ref for ref in backing if ref in workloads and workloads[ref].labels.matches(labels)]
                    if not selected:
                        text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
                        report.warn(r.obj, IstioCode.SUBSET_NO_PODS, f"subset {subset.name!r} selects no workload of "
                                    f"{service.ref}: none of its backends has the labels {text}",
                                    f"{subset.path}.labels")

    def _virtual_services(self, hosts: HostIndex, rules: list[DestRule]) -> list[VirtualService]:
        report = self.report
        read: list[VirtualService] = []
        for obj in sorted(self.by_kind["VirtualService"], key=age_key):
            resolver = Resolver(obj, hosts, rules, self.inventory, report)
            vs = _run(obj, report, read_virtual_service, obj, resolver, self._gateways, report)
            if vs is not None:
                read.append(vs)
        read = resolve_delegates(read, report)
        candidates: dict[ServiceRef, list[VirtualService]] = {}
        for vs in read:
            if not vs.mesh:
                continue
            check_shadowing(vs, report)
            for i, host in enumerate(vs.hosts):
                services = hosts.lookup(host, vs.obj.namespace)
                if not services:
                    report.warn(vs.obj, IstioCode.VS_HOST_UNMATCHED, f"host {host} matches no Service or ServiceEntry: "
                                "nothing is routed for it on the mesh", f"spec.hosts[{i}]")
                for service in services:
                    listed = candidates.setdefault(service.ref, [])
                    if vs not in listed:
                        listed.append(vs)
        by_ref = {s.ref: s for s in (*self.inventory.services, *self.services)}
        namespaces = sorted({n.name for n in self.inventory.namespaces}
                            | {w.namespace for w in (*self.inventory.workloads, *self.workloads)})
        for ref, listed in sorted(candidates.items()):
            tables = _run(listed[0].obj, report, mesh_tables, listed, by_ref[ref], namespaces, report,
                          self.sidecars) or []
            self.tables += tables
            for vs in listed:
                self._unused_rules(vs, by_ref[ref])
        return read

    def _unused_rules(self, vs: VirtualService, service: Service) -> None:
        kinds = {RouteKind.L7 if p.protocol.is_http else RouteKind.L4
                 for p in service.ports if p.protocol is not Protocol.UDP}
        for key, rules, kind, what in (("http", vs.http, RouteKind.L7, "HTTP"),
                                       ("tcp", (*vs.tls, *vs.tcp), RouteKind.L4, "TCP or TLS")):
            if rules and kind not in kinds:
                self.report.warn(vs.obj, IstioCode.NO_MATCHING_PORT, f"service {service.ref} has no {what} port these "
                                 f"rules apply to (name the port {'http-*' if kind is RouteKind.L7 else 'tcp-*'} "
                                 "or set appProtocol)", f"spec.{key}")

    def _unselected(self, policies: Sequence[AuthorizationPolicy], peer: Sequence[PeerAuthentication],
                    authns: Sequence[RequestAuthentication], scopes: Sequence[SidecarScope]) -> None:
        """Report the translated policies and Sidecars whose selector selects no workload."""
        translated: list[tuple[str, Sequence[AuthorizationPolicy | PeerAuthentication | RequestAuthentication]]] = [
            ("AuthorizationPolicy", policies), ("PeerAuthentication", peer), ("RequestAuthentication", authns)]
        objects = {(o.kind, o.namespace, o.name): o for kind, _ in translated for o in self.by_kind[kind]}
        selecting = [(objects[key], "spec.selector.matchLabels", m.selector)
                     for kind, models in translated for m in models
                     if (key := (kind, m.namespace, m.name)) in objects]
        selecting += [(s.obj, "spec.workloadSelector.labels", WorkloadSelector(s.obj.namespace, dict(s.selector)))
                      for s in scopes if s.selector]
        report_unselected(selecting, [*self.inventory.workloads, *self.workloads], self.report)

    @property
    def _gateways(self) -> dict[tuple[str, str], KubeObject]:
        return {(o.namespace, o.name): o for o in self.by_kind["Gateway"]}

    def _policies(self) -> list[AuthorizationPolicy]:
        out = []
        for obj in self.by_kind["AuthorizationPolicy"]:
            p = _run(obj, self.report, read_authorization_policy, obj, self.inventory, self.report, self.root)
            if p is not None:
                out.append(p)
        return out


@attrs.frozen
class IstioAdapter:
    """Translates Istio (networking.istio.io, security.istio.io) into the meshcore model."""

    name: str = "istio"
    kinds: tuple[ApiKind, ...] = KINDS
    #: Istio's ``rootNamespace``: its policies apply mesh-wide.
    root_namespace: str = ROOT_NAMESPACE

    def translate(self, objects: Sequence[KubeObject], inventory: Inventory) -> Fragment:
        """Translate the Istio objects given against the inventory (see the module documentation)."""
        return _Translation(objects, inventory, self.root_namespace).run()


adapter = IstioAdapter()
