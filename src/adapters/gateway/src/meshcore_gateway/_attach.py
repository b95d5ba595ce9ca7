"""Route attachment: which parents (Gateway listeners, Service ports) accept a route, and why not.

Gateway parents: ``sectionName``/``port`` select listeners (none → ``NoMatchingParent``);
the listeners' allowed kinds and namespaces must admit the route
(``NotAllowedByListeners``); listener and route hostnames must intersect
(``NoMatchingListenerHostname``). Service parents (GAMMA mesh routes): the Service and the
selected port must exist (``NoMatchingParent``); a route in another namespace than its
Service is a consumer route, for the clients of its own namespace (see ``_tables``).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from meshcore.kube import Inventory
from meshcore.model import Service, ServiceRef

from ._common import MESH_CONTROLLER_NAME, CONTROLLER_NAME
from ._gateway import GatewayInfo, Listener
from ._hostnames import intersect_origins
from ._refs import ParentRef
from ._routes import RouteSpec

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@attrs.frozen
class ListenerAttachment:
    """A route attached to one listener, with the hostnames it serves there (``""``: any)."""

    listener: Listener
    hostnames: tuple[str, ...]
    #: For each of ``hostnames``, the route hostname it comes from (``""``: none set).
    origins: tuple[str, ...] = ()


@attrs.frozen
class ParentResult:
    """How one parent treats a route: acceptance and where the route attaches."""

    ref: ParentRef
    controller: str
    accepted: bool
    reason: str
    message: str
    gateway: GatewayInfo | None = None
    listeners: tuple[ListenerAttachment, ...] = ()
    service: ServiceRef | None = None
    ports: tuple[int, ...] = ()

    @property
    def mesh(self) -> bool:
        """True for a Service parent."""
        return self.service is not None or self.ref.is_service

    def reject(self, reason: str, message: str) -> ParentResult:
        """This result, not accepted."""
        return attrs.evolve(self, accepted=False, reason=reason, message=message)


def _hostname_family(listener: Listener) -> bool:
    return listener.protocol in ("HTTP", "HTTPS", "TLS")


def attach_to_gateway(route: RouteSpec, ref: ParentRef, gateway: GatewayInfo,
                      namespace_labels: Mapping[str, str]) -> ParentResult:
    """Attach ``route`` to the listeners of ``gateway`` that ``ref`` selects."""
    result = ParentResult(ref, CONTROLLER_NAME, True, "Accepted", "accepted", gateway=gateway)
    if not gateway.accepted[0]:
        return result.reject("NoMatchingParent", f"Gateway {gateway.namespace}/{gateway.name} is not accepted")
    selected = [x for x in gateway.listeners
                if (ref.section_name is None or x.name == ref.section_name)
                and (ref.port is None or x.port == ref.port)]
    if not selected:
        what = " and ".join(p for p in (f"sectionName {ref.section_name}" if ref.section_name else "",
                                        f"port {ref.port}" if ref.port is not None else "") if p)
        return result.reject("NoMatchingParent", f"Gateway {gateway.namespace}/{gateway.name} has no listener "
                             f"with {what}")
    allowed = [x for x in selected if x.allows_kind(route.kind)
               and x.allows_namespace(route.namespace, gateway.namespace, namespace_labels)]
    if not allowed:
        if route.kind == "TLSRoute" and not any(x.protocol == "TLS" for x in selected):
            return result.reject("UnsupportedValue", "a TLSRoute attaches only to listeners of protocol TLS")
        return result.reject("NotAllowedByListeners", f"no listener of Gateway {gateway.namespace}/{gateway.name} "
                             f"allows {route.kind}s from namespace {route.namespace}")
    attached = []
    for listener in allowed:
        if not _hostname_family(listener):
            attached.append(ListenerAttachment(listener, ("",), ("",)))
            continue
        pairs = intersect_origins(listener.hostname, route.hostnames)
        if pairs:
            attached.append(ListenerAttachment(listener, tuple(h for h, _ in pairs), tuple(o for _, o in pairs)))
    if not attached:
        return result.reject("NoMatchingListenerHostname", f"no listener hostname of Gateway {gateway.namespace}/"
                             f"{gateway.name} intersects the route hostnames {', '.join(route.hostnames)}")
    return attrs.evolve(result, listeners=tuple(attached))


def _transport(route: RouteSpec) -> str:
    return "UDP" if route.kind == "UDPRoute" else "TCP"


def attach_to_service(route: RouteSpec, ref: ParentRef, inventory: Inventory) -> ParentResult:
    """Attach a mesh route to the ports of the Service ``ref`` names."""
    service_ref = ServiceRef(ref.namespace, ref.name)
    result = ParentResult(ref, MESH_CONTROLLER_NAME, True, "Accepted", "accepted", service=service_ref)
    service: Service | None = inventory.service(ref.namespace, ref.name)
    if service is None:
        return result.reject("NoMatchingParent", f"Service {service_ref} not found")
    transport = _transport(route)
    ports = [p for p in service.ports if p.protocol.transport == transport
             and (ref.port is None or p.port == ref.port)
             and (ref.section_name is None or p.name == ref.section_name)]
    if not ports:
        what = [f"port {ref.port}" if ref.port is not None else "", f"port name {ref.section_name}"
                if ref.section_name else ""]
        detail = " and ".join(w for w in what if w) or f"{transport} ports"
        return result.reject("NoMatchingParent", f"Service {service_ref} has no {detail}")
    return attrs.evolve(result, ports=tuple(p.port for p in ports))


def namespace_labels(inventory: Inventory, namespace: str) -> Mapping[str, str]:
    """The labels of a namespace (just its name label when it is not declared)."""
    declared = inventory.namespace(namespace)
    if declared is not None:
        return declared.labels
    return {NAMESPACE_NAME_LABEL: namespace}
