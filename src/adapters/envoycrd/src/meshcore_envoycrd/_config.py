"""One CiliumEnvoyConfig / CiliumClusterwideEnvoyConfig → a model EnvoyConfig, or its errors.

A config is atomic: every resource is parsed and checked (so all its errors are reported
at once), and a config with any error contributes nothing — applying the resources that
did parse would leave Envoy with dangling references (a listener whose route
configuration was refused), which is worse than keeping the previous state. Other
configs are not affected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs
from google.protobuf import json_format

from meshcore.kube import FieldCode, FieldError, Fields, Inventory, KubeObject
from meshcore.model import BackendService, EnvoyConfig, EnvoyResource, ServiceListener, ServiceRef, Severity

from ._codes import EnvoyCrdCode
from ._constraints import violations
from ._names import ENDPOINT, LISTENER, Namer, resource_name
from ._parse import parse_resource
from ._problems import Problem, ResourceError, error, warning
from ._types import SHORT_NAMES

CLUSTERWIDE = "CiliumClusterwideEnvoyConfig"
_INDEX = re.compile(r"^spec\.resources\[(\d+)\]")
#: The namespace of ``services``/``backendServices`` a clusterwide config leaves out (as Cilium).
CLUSTERWIDE_DEFAULT_NAMESPACE = "default"


@attrs.frozen
class Translated:
    """The outcome for one config: the model object (None when rejected) and the findings."""

    config: EnvoyConfig | None
    problems: tuple[Problem, ...]
    #: (service, port or None for every port) pairs this config redirects.
    redirects: tuple[tuple[ServiceRef, int | None], ...] = ()
    resources: int = 0

    @property
    def accepted(self) -> bool:
        """True when the config had no error."""
        return self.config is not None


@attrs.frozen
class _Parsed:
    index: int
    type_url: str
    message: Any


def _ports(fields: Fields, key: str, numbers_only: bool) -> list[int | str]:
    out: list[int | str] = []
    for i, item in enumerate(fields.list(key)):
        at = f"{fields.path}.{key}[{i}]"
        if isinstance(item, bool) or not isinstance(item, int | str) or (numbers_only and not isinstance(item, int)):
            raise FieldError(at, f"expected a port number, got {item!r}", FieldCode.WRONG_TYPE)
        if isinstance(item, str) and item.isdigit():
            item = int(item)
        if isinstance(item, int) and not 1 <= item <= 65535:
            raise FieldError(at, f"{item} is out of range (1..65535)", FieldCode.OUT_OF_RANGE)
        out.append(item)
    return out


class _Reader:
    def __init__(self, obj: KubeObject, inventory: Inventory) -> None:
        self.obj = obj
        self.inventory = inventory
        self.clusterwide = obj.kind == CLUSTERWIDE
        self.problems: list[Problem] = []
        #: (type URL, name) of resources that did not parse, so references to them are not
        #: also reported as undefined.
        self.unparsed: set[tuple[str, str]] = set()

    @property
    def default_namespace(self) -> str:
        return CLUSTERWIDE_DEFAULT_NAMESPACE if self.clusterwide else self.obj.namespace

    def service(self, fields: Fields, redirect: bool) -> tuple[ServiceRef, Any]:
        name = fields.req_str("name")
        namespace = fields.str("namespace") or self.default_namespace
        if redirect and not self.clusterwide and namespace != self.obj.namespace:
            self.problems.append(error(EnvoyCrdCode.SERVICE_REDIRECT, f"{fields.path}.namespace",
                                       f"a CiliumEnvoyConfig in namespace {self.obj.namespace} cannot redirect "
                                       f"service {namespace}/{name}; use a CiliumClusterwideEnvoyConfig"))
        ref = ServiceRef(namespace, name)
        found = self.inventory.service(namespace, name)
        if found is None:
            what = "no traffic is redirected" if redirect else "its endpoints are not available to Envoy"
            self.problems.append(warning(EnvoyCrdCode.MISSING_SERVICE, f"{fields.path}.name", f"service {ref} does not "
                                         f"exist; {what}"))
        return ref, found

    def check_ports(self, fields: Fields, service: Any, ports: list[int | str], key: str = "ports") -> None:
        if service is None:
            return
        for i, port in enumerate(ports):
            known = any(p.port == port or (p.name and p.name == port) for p in service.ports)
            if not known:
                names = ", ".join(p.name or str(p.port) for p in service.ports) or "none"
                self.problems.append(warning(EnvoyCrdCode.MISSING_SERVICE, f"{fields.path}.{key}[{i}]", f"service "
                                             f"{service.ref} has no port {port} (ports: {names})"))

    def backend_service(self, entry: Fields) -> BackendService:
        """A ``backendServices`` entry: the service and its ``number`` port filter (numbers or names)."""
        ref, found = self.service(entry, redirect=False)
        numbers = _ports(entry, "number", numbers_only=False)
        self.check_ports(entry, found, numbers, key="number")
        if entry.has("ports"):
            self.problems.append(warning(EnvoyCrdCode.NOT_A_FIELD, f"{entry.path}.ports", "a backendServices entry has "
                                         "no 'ports' (that is a field of services); its port filter is 'number', a "
                                         "list of port numbers or names as strings: 'ports' is ignored"))
        return BackendService(ref, tuple(str(n) for n in numbers))

    def node_selector(self, spec: Fields) -> dict[str, str]:
        selector = spec.map("nodeSelector")
        if selector.list("matchExpressions"):
            self.problems.append(error(EnvoyCrdCode.NODE_SELECTOR, f"{selector.path}.matchExpressions",
                                       "matchExpressions are not supported, only matchLabels; the config is not "
                                       "applied rather than applied to more nodes than intended"))
        return selector.str_map("matchLabels")

    def parse(self, spec: Fields) -> list[_Parsed]:
        parsed: list[_Parsed] = []
        for i, data in enumerate(spec.list("resources")):
            path = f"{spec.path}.resources[{i}]"
            try:
                type_url, message = parse_resource(data, path)
            except ResourceError as exc:
                self.problems.append(_in_resource(exc.problem, i, data))
                if isinstance(data, Mapping):
                    name = data.get("name") or data.get("cluster_name") or data.get("clusterName")
                    self.unparsed.add((str(data.get("@type")), str(name)))
                continue
            if not resource_name(type_url, message):
                field = "cluster_name" if type_url == ENDPOINT else "name"
                self.problems.append(error(EnvoyCrdCode.INVALID_NAME, f"{path}.{field}", f"resource {i} "
                                           f"({SHORT_NAMES[type_url]}): {field} is required"))
                continue
            parsed.append(_Parsed(i, type_url, message))
        return parsed

    def defined(self, parsed: list[_Parsed], spec: Fields) -> dict[str, set[str]]:
        names: dict[str, dict[str, int]] = {}
        for item in parsed:
            name = resource_name(item.type_url, item.message)
            seen = names.setdefault(item.type_url, {})
            if name in seen:
                self.problems.append(error(EnvoyCrdCode.DUPLICATE_RESOURCE, f"{spec.path}.resources[{item.index}]",
                                           f"resource {item.index}: {SHORT_NAMES[item.type_url]} {name!r} is "
                                           f"already defined by resource {seen[name]}"))
            else:
                seen[name] = item.index
        out = {t: set(n) for t, n in names.items()}
        for type_url, name in self.unparsed:
            out.setdefault(type_url, set()).add(name)
        return out


def _label(index: int, data: Any) -> str:
    if isinstance(data, Mapping):
        kind = str(data.get("@type", "")).rpartition(".")[2]
        name = data.get("name") or data.get("cluster_name") or data.get("clusterName")
        if kind and isinstance(name, str) and name:
            return f"resource {index} ({kind} {name})"
        if kind:
            return f"resource {index} ({kind})"
    return f"resource {index}"


def _resource_index(problem: Problem) -> int:
    found = _INDEX.search(problem.path)
    return int(found.group(1)) if found else -1


def _in_resource(problem: Problem, index: int, data: Any) -> Problem:
    return attrs.evolve(problem, message=f"{_label(index, data)}: {problem.message}")


def translate_config(obj: KubeObject, inventory: Inventory) -> Translated:
    """Translate one config; it is rejected (``config`` None) when any finding is an error."""
    reader = _Reader(obj, inventory)
    try:
        spec = Fields.of(obj).map("spec", required=True)
        node_labels = reader.node_selector(spec)
        parsed = reader.parse(spec)
        defined = reader.defined(parsed, spec)
        namer = Namer("" if reader.clusterwide else obj.namespace, obj.name, inventory, defined)
        listeners = [resource_name(i.type_url, i.message) for i in parsed if i.type_url == LISTENER]
        resources: list[EnvoyResource] = []
        for item in parsed:
            path = f"{spec.path}.resources[{item.index}]"
            data = spec.list("resources")[item.index]
            before = len(namer.problems)
            served = namer.rewrite(item.type_url, item.message, path)
            namer.problems[before:] = [_in_resource(p, item.index, data) for p in namer.problems[before:]]
            for at, problem in violations(item.message, path):
                reader.problems.append(error(EnvoyCrdCode.CONSTRAINT, at, f"{_label(item.index, data)}: {problem}"))
            body = json_format.MessageToDict(item.message, preserving_proto_field_name=True)
            resources.append(EnvoyResource(item.type_url, served, body))
        reader.problems.extend(namer.problems)
        services, redirects = _services(reader, spec, defined, namer, listeners)
        listed = [reader.backend_service(entry) for entry in spec.maps("backendServices")]
        backends = _merged(listed, namer.mesh_services)
    except FieldError as exc:
        return Translated(None, (*reader.problems, error(exc.code, exc.path, exc.message)))
    problems = tuple(sorted(reader.problems, key=_resource_index))
    if any(p.severity is Severity.ERROR for p in problems):
        return Translated(None, problems, resources=len(parsed))
    config = EnvoyConfig(
        name=obj.name, namespace=None if reader.clusterwide else obj.namespace, resources=sorted(resources),
        services=sorted(services), backend_services=backends, node_selector=node_labels,
        source=obj.source,
    )
    return Translated(config, problems, tuple(redirects), len(resources))


def _merged(listed: list[BackendService], referenced: set[ServiceRef]) -> list[BackendService]:
    """One entry per service, sorted, with the union of its entries' port filters (as Cilium)."""
    ports: dict[ServiceRef, set[str]] = {ref: set() for ref in referenced}
    for entry in listed:
        ports.setdefault(entry.service, set()).update(entry.ports)
    return [BackendService(ref, tuple(sorted(p, key=_port_order))) for ref, p in sorted(ports.items())]


def _port_order(port: str) -> tuple[int, str]:
    return (int(port), "") if port.isdigit() else (65536, port)


def _services(reader: _Reader, spec: Fields, defined: dict[str, set[str]], namer: Namer,
              listeners: list[str]) -> tuple[list[ServiceListener], list[tuple[ServiceRef, int | None]]]:
    services: list[ServiceListener] = []
    redirects: list[tuple[ServiceRef, int | None]] = []
    for entry in spec.maps("services"):
        ref, found = reader.service(entry, redirect=True)
        ports = [int(p) for p in _ports(entry, "ports", numbers_only=True)]
        reader.check_ports(entry, found, list(ports))
        listener = entry.str("listener") or ""
        if not listener:
            if not listeners:
                reader.problems.append(error(EnvoyCrdCode.SERVICE_REDIRECT, entry.path, f"service {ref} is redirected "
                                             "to the config's first Listener, but the config defines none"))
                continue
            listener = listeners[0]
        elif "/" in listener or listener not in defined.get(LISTENER, set()):
            known = ", ".join(dict.fromkeys(listeners)) or "none"
            reader.problems.append(error(EnvoyCrdCode.SERVICE_REDIRECT, f"{entry.path}.listener", f"Listener "
                                         f"{listener!r} is not defined in this config (its Listeners: {known})"))
            continue
        services.append(ServiceListener(ref, namer.qualify(listener), tuple(sorted(set(ports)))))
        if ports:
            redirects.extend((ref, p) for p in sorted(set(ports)))
        else:
            redirects.append((ref, None))
    return services, redirects
