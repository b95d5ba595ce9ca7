"""Ingress (networking.k8s.io/v1) with IngressClass → a gateway-like Service with L7 tables.

An Ingress is ours when its class (``spec.ingressClassName``, else the legacy
``kubernetes.io/ingress.class`` annotation, else the IngressClass annotated
``ingressclass.kubernetes.io/is-default-class: "true"``) is an IngressClass whose
``spec.controller`` is :data:`INGRESS_CONTROLLER`. It becomes a Service of the Ingress's
namespace and name with port 80 (and 443, terminating TLS, when a ``spec.tls`` entry has a
usable certificate: see ``_ingress_tls``) and one L7 table per
rule host: paths ordered longest first, ``Exact`` before ``Prefix`` on ties
(``ImplementationSpecific`` is a path-element prefix, like ``Prefix``), then the default
backend as the last, catch-all route. A backend whose Service or port does not exist is
answered with 503. An Ingress of another controller, or of no class, is reported and
skipped; one whose name a Service already has is an error.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence

import attrs

from meshcore.adapter import ObjectStatus
from meshcore.kube import FieldError, Fields, Inventory, KubeObject, Report
from meshcore.model import (
    Certificate,
    Destination,
    DirectResponse,
    HttpMatch,
    HttpRoute,
    MatchKind,
    Protocol,
    RouteKind,
    RouteTable,
    Service,
    ServicePort,
    ServiceRef,
    StringMatch,
    TlsTermination,
)

from ._codes import GatewayCode
from ._common import INGRESS_CONTROLLER, object_annotations, reporting_errors
from ._hostnames import ANY, check_hostname
from ._ingress_tls import IngressTls, assigned_addresses, ingress_status, ingress_tls
from ._matches import path_prefix
from ._precedence import L7Entry, l7_entry, ordered
from ._status import object_status

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
#: Status of requests for a backend that cannot be resolved (what ingress controllers answer).
UNAVAILABLE = 503


@attrs.frozen
class IngressClassInfo:
    """An IngressClass: its controller and whether it is the default class."""

    name: str
    controller: str
    default: bool

    @property
    def ours(self) -> bool:
        """True when meshcore is its controller."""
        return self.controller == INGRESS_CONTROLLER


def read_ingress_class(obj: KubeObject) -> IngressClassInfo:
    """Read an IngressClass."""
    spec = Fields.of(obj).map("spec", required=True)
    controller = spec.req_str("controller")
    default = object_annotations(obj).get(DEFAULT_CLASS_ANNOTATION, "").lower() == "true"
    return IngressClassInfo(obj.name, controller, default)


def ingress_class(obj: KubeObject, classes: Mapping[str, IngressClassInfo]) -> tuple[IngressClassInfo | None, str]:
    """The class of an Ingress, or ``None`` and why it has none."""
    name = Fields.of(obj).map("spec").str("ingressClassName") or object_annotations(obj).get(LEGACY_CLASS_ANNOTATION)
    if name:
        found = classes.get(name)
        return found, "" if found else f"its IngressClass {name} is not in the input"
    defaults = [c for c in classes.values() if c.default]
    if len(defaults) == 1:
        return defaults[0], ""
    if len(defaults) > 1:
        several = ", ".join(sorted(c.name for c in defaults))
        return None, f"it sets no class and several classes are the default ({several})"
    return None, "it sets no class and no IngressClass is the default"


@attrs.frozen
class _Backend:
    path: str
    destination: Destination | None
    problem: str = ""


def _backend(entry: Fields, obj: KubeObject, inventory: Inventory) -> _Backend:
    if entry.has("resource"):
        return _Backend(entry.path, None, "resource backends are not supported")
    service = entry.map("service", required=True)
    name = service.req_str("name")
    port = service.map("port", required=True)
    number = port.port("number")
    port_name = port.str("name")
    if (number is None) == (not port_name):
        raise FieldError(port.path, "exactly one of number or name must be set", GatewayCode.INVALID_VALUE)
    found = inventory.service(obj.namespace, name)
    if found is None:
        return _Backend(entry.path, None, f"Service {obj.namespace}/{name} not found")
    matched = [p for p in found.ports if (p.port == number if number is not None else p.name == port_name)]
    if not matched:
        return _Backend(entry.path, None, f"Service {obj.namespace}/{name} has no port {number or port_name}")
    return _Backend(entry.path, Destination(ServiceRef(obj.namespace, name), matched[0].port))


def _path_match(entry: Fields) -> HttpMatch:
    kind = entry.req_str("pathType", choices=PATH_TYPES)
    value = entry.str("path", "/") or "/"
    if not value.startswith("/"):
        raise FieldError(f"{entry.path}.path", f"{value!r} must start with '/'", GatewayCode.INVALID_VALUE)
    if kind == "Exact":
        return HttpMatch(path=StringMatch(MatchKind.EXACT, value))
    prefix = path_prefix(value)
    return HttpMatch() if prefix == "/" else HttpMatch(path=StringMatch(MatchKind.PATH_PREFIX, prefix))


def _route(name: str, match: HttpMatch, backend: _Backend, obj: KubeObject) -> HttpRoute:
    if backend.destination is None:
        return HttpRoute(name=name, matches=(match,), direct_response=DirectResponse(UNAVAILABLE),
                         source=obj.source_at(backend.path))
    return HttpRoute(name=name, matches=(match,), destinations=(backend.destination,),
                     source=obj.source_at(backend.path))


@attrs.frozen
class IngressResult:
    """What one Ingress contributes: its Service ports and route tables."""

    ports: tuple[ServicePort, ...]
    tables: tuple[RouteTable, ...]
    tls: IngressTls
    #: The addresses assigned in ``status.loadBalancer`` (the Service's VIPs).
    addresses: tuple[str, ...] = ()


def read_ingress(obj: KubeObject, inventory: Inventory, report: Report) -> IngressResult:
    """Translate one Ingress of ours (problems with backends are reported, not fatal)."""
    spec = Fields.of(obj).map("spec", required=True)
    ref = f"{obj.namespace}/{obj.name}"
    by_host: dict[str, list[L7Entry]] = defaultdict(list)
    unresolved: list[_Backend] = []
    default = None
    if spec.has("defaultBackend"):
        backend = _backend(spec.map("defaultBackend"), obj, inventory)
        unresolved += [backend] if backend.problem else []
        default = _route(f"{ref}.defaultBackend", HttpMatch(), backend, obj)
    for i, rule in enumerate(spec.maps("rules")):
        host = rule.str("host") or ANY
        if host:
            check_hostname(host, f"{rule.path}.host")
        by_host.setdefault(host, [])
        for j, entry in enumerate(rule.map("http").maps("paths")):
            match = _path_match(entry)
            backend = _backend(entry.map("backend", required=True), obj, inventory)
            unresolved += [backend] if backend.problem else []
            route = _route(f"{ref}.rules[{i}].http.paths[{j}]", match, backend, obj)
            by_host[host].append(l7_entry(route, ((0, 0.0), "", ""), i, j))
    for backend in unresolved:
        report.warn(obj, GatewayCode.UNRESOLVED_BACKEND, f"{backend.problem}: requests for this backend are answered "
                    f"with {UNAVAILABLE}", backend.path)
    if default is not None:
        by_host.setdefault(ANY, [])
    tls = ingress_tls(obj, inventory, report)
    # Port 443 only with a certificate that can serve it: never clear text there.
    ports = [ServicePort(80, Protocol.HTTP, "http")] + (
        [ServicePort(443, Protocol.TLS, "https")] if tls.terminations else [])
    tables = []
    for port in ports:
        for host, entries in by_host.items():
            routes: Sequence[HttpRoute] = ordered(entries) + ([default] if default is not None else [])
            tables.append(RouteTable(ServiceRef(obj.namespace, obj.name), port.port, RouteKind.L7, http=routes,
                                     hostnames=(host,) if host else (), source=obj.source))
    return IngressResult(tuple(ports), tuple(tables), tls, assigned_addresses(obj))


@attrs.frozen
class IngressTranslation:
    """What the Ingresses of meshcore's classes contribute: one Service each, with its tables,
    TLS terminations, certificates and status."""

    services: tuple[Service, ...]
    tables: tuple[RouteTable, ...]
    terminations: tuple[TlsTermination, ...]
    certificates: tuple[Certificate, ...]
    statuses: tuple[ObjectStatus, ...]


def translate_ingresses(classes: Sequence[KubeObject], ingresses: Sequence[KubeObject], inventory: Inventory,
                        report: Report) -> IngressTranslation:
    """Translate the Ingresses of meshcore's IngressClasses; problems go to ``report``.

    An Ingress with an error contributes nothing, and none of its warnings; the others
    still translate.
    """
    by_name: dict[str, IngressClassInfo] = {}
    for obj in classes:
        info = reporting_errors(obj, report, read_ingress_class)
        if info is not None:
            by_name[obj.name] = info
    services: list[Service] = []
    tables: list[RouteTable] = []
    terminations: list[TlsTermination] = []
    certificates: list[Certificate] = []
    statuses: list[ObjectStatus] = []
    for obj in ingresses:
        chosen = reporting_errors(obj, report, functools.partial(ingress_class, classes=by_name))
        if chosen is None:
            continue
        cls, why = chosen
        if cls is not None and not cls.ours:
            why = f"its IngressClass {cls.name} belongs to {cls.controller}"
        if cls is None or not cls.ours:
            report.info(obj, GatewayCode.OTHER_CONTROLLER, f"Ingress ignored: {why}", "spec")
            continue
        if inventory.service(obj.namespace, obj.name) is not None:
            report.error(obj, GatewayCode.SERVICE_NAME, f"Ingress {obj.ref} is served as a Service of the same name, "
                         f"but Service {obj.namespace}/{obj.name} already exists; rename the Ingress",
                         "metadata.name")
            continue
        sub = Report()
        result = reporting_errors(obj, report, functools.partial(read_ingress, inventory=inventory, report=sub))
        if result is None:
            continue
        ports = result.ports
        service = reporting_errors(obj, report, lambda o: Service(name=o.name, namespace=o.namespace,
                                                                  vips=result.addresses, ports=ports,
                                                                  source=o.source))
        if service is None:
            continue
        report.items += sub.items
        services.append(service)
        tables += result.tables
        terminations += result.tls.terminations
        certificates += result.tls.certificates
        statuses.append(object_status(obj, ingress_status(result.addresses)))
    return IngressTranslation(tuple(services), tuple(tables), tuple(terminations), tuple(certificates),
                              tuple(statuses))
