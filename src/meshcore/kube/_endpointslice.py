"""EndpointSlice → the endpoints of one service, with their serving state.

Conditions follow kube-proxy: a ready endpoint is active; a terminating endpoint that is
still serving (``serving`` absent or true) is kept as TERMINATING; any other endpoint is
left out. As kube-proxy does, only the first of an endpoint's (fungible) addresses is used.
"""

from __future__ import annotations

import attrs

from ..model import BackendState, Protocol, WorkloadRef
from ._codes import SLICE_FQDN, SLICE_NO_SERVICE_LABEL
from ._fields import FieldError, Fields
from ._objects import KubeObject
from ._values import Findings, ip_address, port_name, read_metadata, transport

#: The label tying an EndpointSlice to its Service.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

_ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")


@attrs.frozen
class SlicePort:
    """A port of an EndpointSlice; ``port`` is ``None`` when the slice leaves it open."""

    name: str
    transport: Protocol
    port: int | None


@attrs.frozen
class SliceEndpoint:
    """One usable endpoint: its address, state and the pod it belongs to."""

    address: str
    state: BackendState
    workload: WorkloadRef | None


@attrs.frozen
class SliceInfo:
    """The usable content of one EndpointSlice of service ``namespace/service``."""

    namespace: str
    service: str
    ports: tuple[SlicePort, ...]
    endpoints: tuple[SliceEndpoint, ...]


def _state(conditions: Fields) -> BackendState | None:
    ready = conditions.bool("ready", True)
    serving = conditions.bool("serving", True)
    terminating = conditions.bool("terminating", False)
    if terminating:
        return BackendState.TERMINATING if serving or ready else None
    return BackendState.ACTIVE if ready else None


def _target(endpoint: Fields, namespace: str) -> WorkloadRef | None:
    ref = endpoint.map("targetRef")
    kind = ref.str("kind")
    name = ref.str("name")
    if kind != "Pod" or not name:
        return None
    return WorkloadRef(ref.str("namespace") or namespace, name)


def translate_slice(obj: KubeObject, findings: Findings) -> SliceInfo | None:
    """The slice's usable endpoints and ports; ``None`` (with a warning) when it is ignored."""
    root = Fields.of(obj)
    meta = read_metadata(obj, root)
    service = meta.str_map("labels").get(SERVICE_NAME_LABEL)
    address_type = root.req_str("addressType", choices=_ADDRESS_TYPES)
    if address_type == "FQDN":
        findings.warn(SLICE_FQDN, "addressType FQDN is not supported by the datapath; "
                      "this EndpointSlice is ignored", "addressType")
        return None
    family = 4 if address_type == "IPv4" else 6
    ports = []
    for entry in root.maps("ports"):
        name = port_name(entry)
        number = entry.port("port")
        entry.str("appProtocol")
        protocol = transport(entry, findings)
        if protocol is not None:
            ports.append(SlicePort(name, protocol, number))
    endpoints = []
    for endpoint in root.maps("endpoints"):
        addresses = [
            ip_address(text, f"{endpoint.path}.addresses[{i}]", family)
            for i, text in enumerate(endpoint.strs("addresses"))
        ]
        if not addresses:
            raise FieldError(f"{endpoint.path}.addresses", "must hold at least one address", "MC0101")
        state = _state(endpoint.map("conditions"))
        target = _target(endpoint, obj.namespace)
        if state is not None:
            endpoints.append(SliceEndpoint(addresses[0], state, target))
    if service is None:
        findings.warn(
            SLICE_NO_SERVICE_LABEL,
            f"no {SERVICE_NAME_LABEL} label: this EndpointSlice belongs to no Service and is ignored",
            "metadata.labels",
        )
        return None
    return SliceInfo(obj.namespace, service, tuple(ports), tuple(endpoints))
