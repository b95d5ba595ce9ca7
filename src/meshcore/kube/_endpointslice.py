"""EndpointSlice → the endpoints of one service, with their serving state.

Conditions follow kube-proxy: a ready endpoint is active; a terminating endpoint that is
still serving (``serving`` absent or true) is kept as TERMINATING; any other endpoint is
left out. As kube-proxy does, only the first of an endpoint's (fungible) addresses is used.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any, NamedTuple

import attrs

from ..model import BackendState, Protocol, WorkloadRef
from ._codes import FieldCode, KubeCode
from ._fields import FieldError, Fields, Problems
from ._objects import KubeObject
from ._values import Findings, Unusual, ip_address, opt, port_name, read_metadata, transport

#: The label tying an EndpointSlice to its Service.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

_ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")


@attrs.frozen
class SlicePort:
    """A port of an EndpointSlice; ``port`` is ``None`` when the slice leaves it open."""

    name: str
    transport: Protocol
    port: int | None


class SliceEndpoint(NamedTuple):
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


def _state(ready: bool, serving: bool, terminating: bool) -> BackendState | None:
    if terminating:
        return BackendState.TERMINATING if serving or ready else None
    return BackendState.ACTIVE if ready else None


def _endpoint(endpoint: Fields, namespace: str, family: int) -> SliceEndpoint | None:
    """Read one endpoint through :class:`Fields` (the reference reader, with precise errors)."""
    addresses = [
        ip_address(text, f"{endpoint.path}.addresses[{i}]", family)
        for i, text in enumerate(endpoint.strs("addresses"))
    ]
    if not addresses:
        raise FieldError(f"{endpoint.path}.addresses", "must hold at least one address", FieldCode.MISSING)
    conditions = endpoint.map("conditions")
    state = _state(conditions.bool("ready", True), conditions.bool("serving", True),
                   conditions.bool("terminating", False))
    ref = endpoint.map("targetRef")
    kind, name, ref_namespace = ref.str("kind"), ref.str("name"), ref.str("namespace")
    if state is None:
        return None
    target = WorkloadRef(ref_namespace or namespace, name) if kind == "Pod" and name else None
    return SliceEndpoint(addresses[0], state, target)


def _fast_endpoint(raw: Any, namespace: str, family: int) -> SliceEndpoint | None:
    """The common, well-formed endpoint read without cursors.

    Large clusters have hundreds of thousands of endpoints: this path avoids per-field
    cursor objects. Anything unusual (wrong types, IPv6, non-dict mappings) raises
    :class:`Unusual` and is left to :func:`_endpoint`, which yields the same result or
    the precise error.
    """
    if type(raw) is not dict or family != 4:
        raise Unusual
    addresses = raw.get("addresses")
    if type(addresses) is not list or not addresses:
        raise Unusual
    for text in addresses:
        if type(text) is not str:
            raise Unusual
        try:
            socket.inet_pton(socket.AF_INET, text)
        except OSError:
            raise Unusual from None
    conditions = raw.get("conditions")
    state: BackendState | None
    if conditions is None:
        state = BackendState.ACTIVE
    elif type(conditions) is dict:
        # Inlined: this runs once per endpoint of the cluster.
        ready = conditions.get("ready")
        serving = conditions.get("serving")
        terminating = conditions.get("terminating")
        if ready is None:
            ready = True
        if serving is None:
            serving = True
        if terminating is None:
            terminating = False
        if ready.__class__ is not bool or serving.__class__ is not bool or terminating.__class__ is not bool:
            raise Unusual
        state = _state(ready, serving, terminating)
    else:
        raise Unusual
    target = raw.get("targetRef")
    ref = None
    if target is not None:
        if type(target) is not dict:
            raise Unusual
        kind, name = opt(target, "kind", str), opt(target, "name", str)
        ref_namespace = opt(target, "namespace", str)
        if kind == "Pod" and name:
            ref = WorkloadRef(ref_namespace or namespace, name)
    if state is None:
        return None
    first: str = addresses[0]
    return SliceEndpoint(first, state, ref)


def _slow_endpoint(raw: Any, index: int, namespace: str, family: int) -> SliceEndpoint | None:
    path = f"endpoints[{index}]"
    if not isinstance(raw, Mapping):
        raise FieldError(path, "expected a mapping", FieldCode.WRONG_TYPE)
    return _endpoint(Fields(raw, path), namespace, family)


def _port(entry: Fields, findings: Findings) -> list[SlicePort]:
    name = port_name(entry)
    number = entry.port("port")
    entry.str("appProtocol")
    protocol = transport(entry, findings)
    return [SlicePort(name, protocol, number)] if protocol is not None else []


def translate_slice(obj: KubeObject, findings: Findings) -> SliceInfo | None:
    """The slice's usable endpoints and ports; ``None`` (with a warning) when it is ignored.

    Every bad field is reported (:class:`~meshcore.kube.FieldErrors`), not only the first.
    """
    problems = Problems()
    root = Fields.of(obj)
    meta = problems.read(read_metadata, Fields({}, "metadata"), obj, root)
    service = problems.read(meta.str_map, {}, "labels").get(SERVICE_NAME_LABEL)
    address_type = root.req_str("addressType", choices=_ADDRESS_TYPES)
    if address_type == "FQDN":
        problems.check()
        findings.warn(KubeCode.SLICE_FQDN, "addressType FQDN is not supported by the datapath; "
                      "this EndpointSlice is ignored", "addressType")
        return None
    family = 4 if address_type == "IPv4" else 6
    ports = []
    for entry in problems.read(root.maps, [], "ports"):
        ports += problems.read(_port, [], entry, findings)
    endpoints = []
    for index, raw in enumerate(problems.read(root.list, [], "endpoints")):
        try:
            endpoint = _fast_endpoint(raw, obj.namespace, family)
        except Unusual:
            endpoint = problems.read(_slow_endpoint, None, raw, index, obj.namespace, family)
        if endpoint is not None:
            endpoints.append(endpoint)
    problems.check()
    if service is None:
        findings.warn(
            KubeCode.SLICE_NO_SERVICE_LABEL,
            f"no {SERVICE_NAME_LABEL} label: this EndpointSlice belongs to no Service and is ignored",
            "metadata.labels",
        )
        return None
    return SliceInfo(obj.namespace, service, tuple(ports), tuple(endpoints))
