"""The gateway adapter: Gateway API and Ingress objects → model Services, route tables, status.

The steps: ReferenceGrants and BackendTLSPolicies are indexed; GatewayClasses and
Gateways of meshcore's controller are validated; every route is read, attached to its
parents (Gateway listeners, or Services for mesh routes), built into model routes per
backend context, and merged into tables in precedence order; the status of every
GatewayClass, Gateway and route parent meshcore owns is computed from these findings
(``_status``); Ingresses of meshcore's IngressClasses become their own Services
(``_ingress``). An object with an error contributes nothing and the others still translate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from meshcore.adapter import ApiKind, Fragment, ObjectStatus
from meshcore.kube import FieldError, Fields, Inventory, KubeObject, Report, field_diagnostic, unique_objects
from meshcore.model import (
    Certificate,
    ModelError,
    RouteTable,
    Service,
    ServicePort,
    ServiceRef,
    TlsTermination,
    TrafficPolicy,
)

from ._attach import ListenerAttachment, ParentResult, attach_to_gateway, attach_to_service, namespace_labels
from ._backends import BackendContext, Failure
from ._backendtls import BackendTls, read_backend_tls
from ._backendtls_status import policy_status
from ._build import Built, build
from ._codes import GatewayCode
from ._common import CONTROLLER_NAME, GATEWAY_GROUP, MESH_CONTROLLER_NAME, reporting_errors
from ._gateway import PORT_PROTOCOL, ClassInfo, GatewayInfo, read_gateway, read_gateway_class
from ._grpcroute import read_grpcroute
from ._hostnames import covers
from ._httproute import read_httproute
from ._ingress import translate_ingresses
from ._l4routes import read_l4route
from ._referencegrant import Grant, ReferenceGrants, read_reference_grant
from ._refs import ParentRef, read_parent_refs
from ._routes import RouteSpec
from ._status import (
    class_status,
    gateway_status,
    invalid_gateway_status,
    invalid_route_status,
    object_status,
    route_status,
)
from ._tables import Placed, gateway_tables, mesh_tables


#: Every (apiVersion, kind) this adapter handles: each Gateway API version still served.
KINDS: tuple[ApiKind, ...] = (
    *(
        ApiKind(f"{GATEWAY_GROUP}/{version}", kind)
        for version, kinds in (
            ("v1", ("GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "ReferenceGrant", "TCPRoute", "TLSRoute",
                    "BackendTLSPolicy")),
            ("v1beta1", ("GatewayClass", "Gateway", "HTTPRoute", "ReferenceGrant")),
            ("v1alpha2", ("GRPCRoute", "TCPRoute", "TLSRoute", "UDPRoute", "ReferenceGrant", "BackendTLSPolicy")),
            ("v1alpha3", ("BackendTLSPolicy", "TLSRoute")),
        )
        for kind in kinds
    ),
    ApiKind("networking.k8s.io/v1", "Ingress"),
    ApiKind("networking.k8s.io/v1", "IngressClass"),
)

ROUTE_READERS: dict[str, Callable[[KubeObject], RouteSpec]] = {
    "HTTPRoute": read_httproute,
    "GRPCRoute": read_grpcroute,
    "TCPRoute": read_l4route,
    "TLSRoute": read_l4route,
    "UDPRoute": read_l4route,
}
CONFLICTED = "Conflicted"


def _class_name(obj: KubeObject) -> str:
    return Fields.of(obj).map("spec", required=True).req_str("gatewayClassName")


@attrs.frozen
class _Attached:
    """A route with the results of all the parents meshcore owns."""

    route: RouteSpec
    results: list[ParentResult]


class _Translation:
    """One run of the adapter over its objects (kept in one place so steps share indexes)."""

    def __init__(self, objects: Sequence[KubeObject], inventory: Inventory) -> None:
        self.inventory = inventory
        self.report = Report()
        self.statuses: list[ObjectStatus] = []
        self.services: list[Service] = []
        self.tables: list[RouteTable] = []
        self.terminations: list[TlsTermination] = []
        self.certificates: list[Certificate] = []
        self.by_kind: dict[str, list[KubeObject]] = defaultdict(list)
        for obj in unique_objects(objects, self.report, GatewayCode.DUPLICATE_OBJECT):
            self.by_kind[obj.kind].append(obj)
        self.grants = ReferenceGrants()
        self.tls_backends: dict[tuple[str, str], list[BackendTls]] = defaultdict(list)
        self.tls_policies: list[tuple[KubeObject, list[BackendTls]]] = []
        self.traffic: list[TrafficPolicy] = []
        self.classes: dict[str, ClassInfo] = {}
        self.gateways: dict[tuple[str, str], GatewayInfo] = {}
        #: Gateways of our classes that had an error (routes to them get NoMatchingParent).
        self.broken: set[tuple[str, str]] = set()
        #: Gateways in the input that belong to other controllers (routes to them are not ours).
        self.foreign: set[tuple[str, str]] = set()
        self.built: dict[tuple[int, bool], Built] = {}

    # -- indexes ---------------------------------------------------------------------------

    def read_grants(self) -> None:
        grants: list[Grant] = []
        for obj in self.by_kind["ReferenceGrant"]:
            grants += reporting_errors(obj, self.report, read_reference_grant) or []
        self.grants = ReferenceGrants(grants)

    def read_tls_policies(self) -> None:
        for obj in self.by_kind["BackendTLSPolicy"]:
            targets = reporting_errors(obj, self.report, lambda o: read_backend_tls(o, self.inventory))
            if targets is None:
                continue
            self.tls_policies.append((obj, targets))
            for target in targets:
                self.tls_backends[(target.namespace, target.name)].append(target)
                policy = target.policy()
                if policy is not None and all(p.key != policy.key for p in self.traffic):
                    self.traffic.append(policy)
            problems = dict.fromkeys(t.problem for t in targets if t.problem)
            for problem in problems:
                names = ", ".join(f"{t.namespace}/{t.name}" for t in targets)
                self.report.warn(obj, GatewayCode.UNSUPPORTED_FEATURE, f"{problem}: routes to {names} treat it as an "
                                 "invalid backend (its share is answered with an error), never plaintext", "spec")

    def read_classes(self) -> None:
        for obj in self.by_kind["GatewayClass"]:
            info = reporting_errors(obj, self.report, read_gateway_class)
            if info is None:
                continue
            self.classes[obj.name] = info
            if not info.ours:
                self.report.info(obj, GatewayCode.OTHER_CONTROLLER, f"GatewayClass {obj.name} is handled by "
                                 f"{info.controller}, not {CONTROLLER_NAME}; ignored", "spec.controllerName")
                continue
            if not info.accepted:
                self.report.warn(obj, GatewayCode.LISTENER_NOT_ACCEPTED, f"GatewayClass not accepted: {info.message}",
                                 "spec.parametersRef")
            self.statuses.append(class_status(info))

    def read_gateways(self) -> None:
        for obj in self.by_kind["Gateway"]:
            key = (obj.namespace, obj.name)
            name = reporting_errors(obj, self.report, _class_name)
            if name is None:
                continue
            cls = self.classes.get(name)
            if cls is None:
                self.report.warn(obj, GatewayCode.PARENT_NOT_FOUND, f"GatewayClass {name} is not in the input; the "
                                 "Gateway is ignored", "spec.gatewayClassName")
                self.foreign.add(key)
                continue
            if not cls.ours:
                self.report.info(obj, GatewayCode.OTHER_CONTROLLER, f"GatewayClass {name} belongs to {cls.controller}; "
                                 "the Gateway is ignored", "spec.gatewayClassName")
                self.foreign.add(key)
                continue
            try:
                info = read_gateway(obj, cls, self.grants, self.inventory)
            except (FieldError, ModelError) as exc:
                diag = field_diagnostic(obj, exc)
                self.report.items.append(diag)
                self.broken.add(key)
                self.statuses.append(invalid_gateway_status(obj, f"{diag.field}: {diag.message}"))
                continue
            problem = self._service_problem(info)
            if problem:
                self.report.error(obj, GatewayCode.SERVICE_NAME, problem, "metadata.name")
                info = attrs.evolve(info, service_problem=problem)
            self.gateways[key] = info
            self._gateway_findings(info)

    def _service_problem(self, info: GatewayInfo) -> str | None:
        if self.inventory.service(info.namespace, info.name) is not None:
            return (f"Gateway {info.namespace}/{info.name} is served as a Service of the same name, but Service "
                    f"{info.namespace}/{info.name} already exists; rename the Gateway")
        try:
            Service(name=info.name, namespace=info.namespace)
        except ModelError as exc:
            return f"Gateway name cannot be a Service name: {exc.message}"
        return None

    def _gateway_findings(self, info: GatewayInfo) -> None:
        obj = info.obj
        spec = obj.body.get("spec") or {}
        backend = (spec.get("tls") or {}).get("backend") if isinstance(spec.get("tls"), dict) else None
        if backend:
            self.report.warn(obj, GatewayCode.UNSUPPORTED_FEATURE, "spec.tls.backend is not applied: the Gateway "
                             "presents no client certificate to backends", "spec.tls.backend")
        for field, what in (("infrastructure", "labels, annotations and parametersRef for the Gateway's own "
                             "resources"), ("allowedListeners", "ListenerSets")):
            if spec.get(field):
                self.report.warn(obj, GatewayCode.UNSUPPORTED_FEATURE, f"spec.{field} is not applied ({what} are not "
                                 "supported)", f"spec.{field}")
        if not info.accepted[0]:
            self.report.warn(obj, GatewayCode.LISTENER_NOT_ACCEPTED, f"Gateway not accepted ({info.accepted[1]}): "
                             f"{info.accepted[2]}", "spec")
        for listener in info.listeners:
            if listener.serving:
                continue
            if listener.resolved[1] == "InvalidCertificateRef" and listener.cert_refs:
                self.report.warn(obj, GatewayCode.CERTIFICATE_REF, f"listener {listener.name}: {listener.resolved[2]}",
                                 f"{listener.path}.tls.certificateRefs")
                continue
            problems = [c for c in (listener.accepted, listener.resolved) if not c[0]]
            reason, message = (listener.conflict if listener.conflict else (problems[0][1], problems[0][2]))
            self.report.warn(obj, GatewayCode.LISTENER_NOT_ACCEPTED, f"listener {listener.name} does not serve traffic "
                             f"({reason}): {message}", listener.path)
        if info.accepted[0] and not info.addresses and not info.service_problem:
            self.report.info(obj, GatewayCode.NO_ADDRESS, "no IPAddress in spec.addresses or status.addresses: the "
                             "Gateway is translated but not programmed until an address is assigned", "spec")

    # -- routes ----------------------------------------------------------------------------

    def read_routes(self) -> list[_Attached]:
        attached = []
        for kind, reader in ROUTE_READERS.items():
            for obj in self.by_kind[kind]:
                try:
                    route = reader(obj)
                except (FieldError, ModelError) as exc:
                    diag = field_diagnostic(obj, exc)
                    self.report.items.append(diag)
                    self._invalid_route_status(obj, f"{diag.field}: {diag.message}")
                    continue
                self._findings(route)
                attached.append(_Attached(route, self._attach(route)))
        return attached

    def _invalid_route_status(self, obj: KubeObject, message: str) -> None:
        """Best effort: tell the parents we own that the route is not accepted."""
        try:
            refs = read_parent_refs(Fields.of(obj).map("spec"), obj.namespace)
        except FieldError:
            return
        owned = [(ref, controller) for ref in refs if (controller := self._owner(ref))]
        status = invalid_route_status(obj, owned, message)
        if status is not None:
            self.statuses.append(status)

    def _owner(self, ref: ParentRef) -> str | None:
        if ref.is_service:
            return MESH_CONTROLLER_NAME
        key = (ref.namespace, ref.name)
        if ref.is_gateway and (key in self.gateways or key in self.broken):
            return CONTROLLER_NAME
        return None

    def _findings(self, route: RouteSpec) -> None:
        obj = route.obj
        for rule in route.http:
            for kind in rule.filters.failing:
                if kind == "ExtensionRef":
                    continue  # reported as an unresolvable reference (ResolvedRefs InvalidKind)
                self.report.warn(obj, GatewayCode.UNSUPPORTED_FEATURE, f"{kind} filters are not supported; requests "
                                 "matching this rule are answered with 500", f"{rule.path}.filters")
            if rule.timing.backoff_ignored:
                self.report.warn(obj, GatewayCode.UNSUPPORTED_FEATURE, "retry.backoff is not carried by the model; the "
                                 "proxy's default backoff applies", f"{rule.path}.retry.backoff")
        for i, raw in enumerate(obj.spec.get("rules") or []):
            if isinstance(raw, dict) and raw.get("sessionPersistence") is not None:
                self.report.warn(obj, GatewayCode.UNSUPPORTED_FEATURE,
                                 "sessionPersistence is not supported yet; ignored",
                                 f"spec.rules[{i}].sessionPersistence")

    def _attach(self, route: RouteSpec) -> list[ParentResult]:
        results = []
        for ref in route.parents:
            key = (ref.namespace, ref.name)
            if ref.is_service:
                results.append(attach_to_service(route, ref, self.inventory))
            elif ref.is_gateway and key in self.gateways:
                labels = namespace_labels(self.inventory, route.namespace)
                results.append(attach_to_gateway(route, ref, self.gateways[key], labels))
            elif ref.is_gateway and key in self.broken:
                results.append(ParentResult(ref, CONTROLLER_NAME, False, "NoMatchingParent",
                                            f"Gateway {ref.namespace}/{ref.name} is invalid"))
            elif ref.is_gateway and key not in self.foreign:
                self.route_warn(route, GatewayCode.PARENT_NOT_FOUND, f"Gateway {ref.namespace}/{ref.name} is not in "
                                "the input; the route is not attached to it", ref.path)
        return results

    def route_warn(self, route: RouteSpec, code: str, message: str, path: str) -> None:
        self.report.warn(route.obj, code, message, path)

    def built_for(self, route: RouteSpec, mesh: bool) -> Built:
        key = (id(route), mesh)
        if key not in self.built:
            ctx = BackendContext(self.inventory, self.grants, route.kind, route.namespace, mesh,
                                 self.tls_backends)
            self.built[key] = build(route, ctx)
        return self.built[key]

    # -- conflicts -------------------------------------------------------------------------

    def resolve_listener_conflicts(self, attached: list[_Attached]) -> None:
        """HTTPRoute vs GRPCRoute with intersecting hostnames on one listener: the older one stays."""
        per_listener: dict[tuple[str, str, str], list[tuple[_Attached, int, ListenerAttachment]]] = defaultdict(list)
        for item in attached:
            for i, res in enumerate(item.results):
                if res.accepted and res.gateway is not None:
                    for att in res.listeners:
                        per_listener[(res.gateway.namespace, res.gateway.name, att.listener.name)].append(
                            (item, i, att))
        dropped: dict[tuple[int, int], list[tuple[ListenerAttachment, str]]] = defaultdict(list)
        for entries in per_listener.values():
            kept: list[tuple[_Attached, ListenerAttachment]] = []
            for item, i, att in sorted(entries, key=lambda e: e[0].route.order_key):
                rival = next((other for other, other_att in kept if other.route.kind != item.route.kind
                              and item.route.kind in ("HTTPRoute", "GRPCRoute")
                              and other.route.kind in ("HTTPRoute", "GRPCRoute")
                              and _overlap(att.hostnames, other_att.hostnames)), None)
                if rival is None:
                    kept.append((item, att))
                else:
                    dropped[(id(item), i)].append((att, f"{rival.route.kind} {rival.route.ref}"))
        for item in attached:
            for i, res in enumerate(item.results):
                lost = dropped.get((id(item), i))
                if not lost:
                    continue
                remaining = tuple(a for a in res.listeners if all(a is not d for d, _ in lost))
                rivals = ", ".join(sorted({who for _, who in lost}))
                self.route_warn(item.route, GatewayCode.ROUTE_CONFLICT,
                                f"{item.route.kind} shares hostnames with the older {rivals} on a listener of Gateway "
                                f"{res.ref.namespace}/{res.ref.name}; it is not attached there", res.ref.path)
                item.results[i] = (attrs.evolve(res, listeners=remaining) if remaining else
                                   res.reject(CONFLICTED, f"conflicts with {rivals}, which is older, on every "
                                              "listener (an HTTPRoute and a GRPCRoute cannot share hostnames)"))

    # -- tables ----------------------------------------------------------------------------

    def build_mesh(self, attached: list[_Attached]) -> None:
        placed: dict[Any, list[Placed]] = defaultdict(list)
        for item in attached:
            for res in item.results:
                if res.accepted and res.service is not None:
                    for port in res.ports:
                        placed[(res.service, port)].append(Placed(item.route, self.built_for(item.route, True)))
        mesh = mesh_tables(placed)
        self.tables += mesh.tables
        for route, service, port in mesh.shadowed:
            self.route_warn(route, GatewayCode.SHADOWED_L4_ROUTE,
                            f"an older {route.kind} on Service {service} port {port} takes every connection; this "
                            "route never matches there", "spec.parentRefs")
        for item in attached:
            lost = mesh.lost.get((item.route.kind, item.route.namespace, item.route.name))
            if not lost:
                continue
            lost_ports = {p for p, _ in lost}
            for i, res in enumerate(item.results):
                if res.accepted and res.service is not None and set(res.ports) <= lost_ports:
                    winners = ", ".join(sorted({w for _, w in lost}))
                    self.route_warn(item.route, GatewayCode.ROUTE_CONFLICT, f"Service {res.service} has a {winners} on "
                                    f"every port this {item.route.kind} selects; route kinds do not merge and "
                                    f"{winners} takes precedence", res.ref.path)
                    item.results[i] = res.reject(CONFLICTED, f"a {winners} attached to the same Service port takes "
                                                 "precedence")

    def build_gateways(self, attached: list[_Attached]) -> dict[tuple[str, str], dict[str, int]]:
        placed: dict[tuple[str, str], dict[str, list[Placed]]] = defaultdict(lambda: defaultdict(list))
        counts: dict[tuple[str, str], dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
        for item in attached:
            for res in item.results:
                if not res.accepted or res.gateway is None:
                    continue
                key = (res.gateway.namespace, res.gateway.name)
                for att in res.listeners:
                    counts[key][att.listener.name].add(id(item))
                    placed[key][att.listener.name].append(
                        Placed(item.route, self.built_for(item.route, False), att.hostnames, att.origins))
        for key, info in self.gateways.items():
            if not info.accepted[0] or info.service_problem:
                continue
            tables, shadowed = gateway_tables(info, placed.get(key, {}))
            self.tables += tables
            for route, listener in shadowed:
                self.route_warn(route, GatewayCode.SHADOWED_L4_ROUTE,
                                f"an older {route.kind} on listener {listener.name} of Gateway {info.namespace}/"
                                f"{info.name} takes every connection; this route never matches there",
                                "spec.parentRefs")
            ports: dict[int, ServicePort] = {}
            for listener in info.listeners:
                if listener.serving and listener.port not in ports:
                    ports[listener.port] = ServicePort(listener.port, PORT_PROTOCOL[listener.protocol], listener.name)
                if listener.serving and listener.certificates:
                    self.terminations.append(TlsTermination(
                        ServiceRef(info.namespace, info.name), listener.port,
                        (listener.hostname,) if listener.hostname else (), [c.ref for c in listener.certificates],
                        source=info.obj.source_at(f"{listener.path}.tls")))
                    self.certificates += listener.certificates
            self.services.append(Service(name=info.name, namespace=info.namespace, vips=info.addresses,
                                         ports=list(ports.values()), source=info.obj.source))
        return {key: {name: len(ids) for name, ids in per.items()} for key, per in counts.items()}

    # -- status ----------------------------------------------------------------------------

    def route_statuses(self, attached: list[_Attached]) -> None:
        for item in attached:
            failures = [self.built_for(item.route, res.mesh).failures for res in item.results]
            self._parent_findings(item, failures)
            status = route_status(item.route, zip(item.results, failures))
            if status is not None:
                self.statuses.append(status)

    def _parent_findings(self, item: _Attached, failures: Sequence[Sequence[Failure]]) -> None:
        """Warn about each parent that does not accept the route and each backend that does not resolve."""
        route = item.route
        reported: set[tuple[str, str]] = set()
        # A route no parent accepts carries no traffic, but its unresolved references are
        # still reported (as its ResolvedRefs condition says), so fixing the parent does
        # not reveal them one at a time.
        carried = any(res.accepted for res in item.results)
        for res, seen in zip(item.results, failures):
            if not res.accepted and res.reason != CONFLICTED:
                self.route_warn(route, GatewayCode.ROUTE_NOT_ACCEPTED, f"not accepted by {res.ref.kind} "
                                f"{res.ref.namespace}/{res.ref.name} ({res.reason}): {res.message}", res.ref.path)
            if res.accepted or not carried:
                for failure in seen:
                    if (failure.path, failure.message) in reported:
                        continue
                    reported.add((failure.path, failure.message))
                    effect = (failure.effect or "it is not used") if carried else (
                        "no parent accepts the route, so it carries no traffic yet")
                    self.route_warn(route, GatewayCode.UNRESOLVED_BACKEND,
                                    f"{failure.message} ({failure.reason}); {effect}", failure.path)

    def tls_policy_statuses(self, attached: list[_Attached]) -> None:
        """BackendTLSPolicy status: the Gateways whose accepted routes reach one of its Services."""
        reached: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        for item in attached:
            refs = [b for rule in item.route.http for b in rule.backends]
            refs += [b for l4 in item.route.tcp for b in l4.backends]
            services = {(b.namespace, b.name) for b in refs if b.is_service}
            for res in item.results:
                if res.accepted and res.gateway is not None:
                    for service in services:
                        reached[service].add((res.gateway.namespace, res.gateway.name))
        for obj, targets in self.tls_policies:
            ancestors = [g for t in targets for g in reached.get((t.namespace, t.name), ())]
            self.statuses.append(object_status(obj, policy_status(obj, targets, ancestors)))

    def gateway_statuses(self, attached_counts: dict[tuple[str, str], dict[str, int]]) -> None:
        for key, info in self.gateways.items():
            self.statuses.append(gateway_status(info, attached_counts.get(key, {})))

    # -- all -------------------------------------------------------------------------------

    def run(self) -> Fragment:
        handled = {k.kind for k in KINDS}
        for kind, objs in self.by_kind.items():
            if kind not in handled:
                for obj in objs:
                    self.report.error(obj, GatewayCode.NOT_OUR_KIND,
                                      f"{obj.kind} is not handled by the gateway adapter", "kind")
        self.read_grants()
        self.read_tls_policies()
        self.read_classes()
        self.read_gateways()
        attached = self.read_routes()
        self.resolve_listener_conflicts(attached)
        self.build_mesh(attached)
        counts = self.build_gateways(attached)
        self.route_statuses(attached)
        self.gateway_statuses(counts)
        self.tls_policy_statuses(attached)
        ingresses = translate_ingresses(self.by_kind["IngressClass"], self.by_kind["Ingress"], self.inventory,
                                        self.report)
        self.services += ingresses.services
        self.tables += ingresses.tables
        self.terminations += ingresses.terminations
        self.certificates += ingresses.certificates
        self.statuses += ingresses.statuses
        return Fragment(services=self.services, routes=self.tables, diagnostics=self.report.items,
                        statuses=self.statuses, certificates=self.certificates, tls_terminations=self.terminations,
                        traffic_policies=self.traffic)


def _overlap(a: Sequence[str], b: Sequence[str]) -> bool:
    return any(covers(x, y) or covers(y, x) for x in a for y in b)


@attrs.frozen
class GatewayAdapter:
    """Translates the Kubernetes Gateway API (gateways and GAMMA mesh routes) and Ingress."""

    name: str = "gateway"
    kinds: tuple[ApiKind, ...] = KINDS

    def translate(self, objects: Sequence[KubeObject], inventory: Inventory) -> Fragment:
        """Translate Gateway API and Ingress objects into Services, route tables, diagnostics and status."""
        return _Translation(objects, inventory).run()


adapter = GatewayAdapter()

