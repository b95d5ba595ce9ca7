"""Pod → model Workload, plus what services need to know about the pod (readiness, owner).

A pod is read in two steps: its raw facts are extracted and type-checked, then checked for
meaning (names, addresses, duplicates) and turned into a workload. The facts come from
the :class:`Fields` reader, which names the exact field of any error, or — for the
well-formed plain-dict pods that make up large inventories — from a direct reader that
gives up (falling back to :class:`Fields`) on anything unusual.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import attrs

from ..model import Identity, Labels, Protocol, Workload, WorkloadPort
from ._codes import FieldCode, KubeCode
from ._fields import FieldError, Fields, Problems
from ._objects import KubeObject
from ._proxy_mode import ModeChoice, annotated_mode, resolve_mode
from ._values import (
    PORT_PROTOCOLS,
    Findings,
    Unusual,
    build,
    dicts,
    dual_stack,
    ip_address,
    is_port_name,
    opt,
    plain_str_map,
)

#: Annotation naming the object that generated a pod (``Deployment/<name>``).
OWNER_ANNOTATION = "meshcore.io/owner"

_SKIPPED_PHASES = frozenset({"Succeeded", "Failed"})
_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
_CONDITION_STATUS = ("True", "False", "Unknown")


@attrs.frozen
class PodShape:
    """What a pod spec says about a workload, shared by every replica of a template."""

    identity: Identity
    ports: tuple[WorkloadPort, ...]
    node: str
    #: The proxy mode the pod's own annotations choose (None: its namespace's or the default).
    mode: ModeChoice | None
    host_network: bool
    #: Where the pod's annotations are (for warnings about its mode).
    annotations_path: str = "metadata.annotations"

    def resolved_mode(self, namespace: ModeChoice | None, findings: Findings) -> ModeChoice:
        """The pod's mode given its namespace's choice (see :func:`resolve_mode`)."""
        return resolve_mode(self.mode, namespace, self.host_network, findings, self.annotations_path)


@attrs.frozen(eq=False)
class PodInfo:
    """A translated pod: its workload and the state that decides whether it serves."""

    workload: Workload
    labels: Mapping[str, str]
    #: False when the pod reports a Ready condition other than True.
    ready: bool = True
    #: True when ``metadata.deletionTimestamp`` is set.
    terminating: bool = False
    host_network: bool = False
    #: ``Deployment/<name>`` from the owner annotation, else "".
    owner: str = ""
    #: The name of the ReplicaSet in ``metadata.ownerReferences``, else "".
    replica_set: str = ""


class PortFacts(NamedTuple):
    """A container port as written: number, name, protocol and its input path."""

    number: int
    name: str
    protocol: str
    path: str


class SpecFacts(NamedTuple):
    """What the mesh reads from a pod spec, type-checked but not yet interpreted."""

    account: str
    host_network: bool
    node: str
    ports: list[PortFacts]


class PodFacts(NamedTuple):
    """What the mesh reads from a pod, type-checked but not yet interpreted."""

    labels: dict[str, str]
    annotations: dict[str, str]
    terminating: bool
    replica_set: str
    phase: str
    pod_ips: list[str]
    pod_ip: str | None
    ready: bool
    spec: SpecFacts


# --- facts through Fields (precise errors) ---------------------------------------------


def _containers(spec: Fields) -> list[Fields]:
    containers = spec.maps("containers", required=True)
    if not containers:
        raise FieldError(f"{spec.path}.containers", "a pod needs at least one container", FieldCode.MISSING)
    return containers


def _sidecars(spec: Fields) -> list[Fields]:
    # Sidecar containers (init containers that keep running) serve ports too.
    return [c for c in spec.maps("initContainers") if c.str("restartPolicy") == "Always"]


def spec_facts(spec: Fields, problems: Problems) -> SpecFacts:
    """Read a pod spec at ``spec`` (a Pod's ``spec`` or a template's ``spec.template.spec``).

    Errors are kept in ``problems``; the facts of the fields that read well are returned.
    """
    account = problems.read(lambda: spec.str("serviceAccountName") or spec.str("serviceAccount") or "default",
                            "default")
    host_network = problems.read(lambda: spec.bool("hostNetwork"), False)
    node = problems.read(lambda: spec.str("nodeName", "") or "", "")
    containers: list[Fields] = problems.read(lambda: _containers(spec), [])
    sidecars: list[Fields] = problems.read(lambda: _sidecars(spec), [])
    ports = []
    for container in containers + sidecars:
        with problems:
            container.str("name")
        for entry in problems.read(container.maps, [], "ports"):
            number = problems.read(entry.port, None, "containerPort", required=True)
            name = problems.read(entry.str, "", "name", "")
            protocol = problems.read(entry.str, "TCP", "protocol", "TCP", choices=PORT_PROTOCOLS)
            if number is not None:
                ports.append(PortFacts(number, name or "", protocol or "TCP", entry.path))
    return SpecFacts(account, host_network, node, ports)


def _ready(status: Fields) -> bool:
    for condition in status.maps("conditions"):
        if condition.req_str("type") == "Ready":
            return condition.req_str("status", choices=_CONDITION_STATUS) == "True"
    # A pod written by hand reports no conditions: treat it as ready.
    return True


def _replica_set(meta: Fields) -> str:
    for ref in meta.maps("ownerReferences"):
        if ref.str("kind") == "ReplicaSet" and (ref.str("apiVersion", "") or "apps/v1") == "apps/v1":
            return ref.req_str("name")
    return ""


def pod_facts(obj: KubeObject, problems: Problems | None = None) -> PodFacts:
    """Read a Pod through :class:`Fields`.

    Every bad field is kept in ``problems``; without it they are raised together
    (:class:`FieldError`, or :class:`~meshcore.kube.FieldErrors` for several).
    """
    found = problems if problems is not None else Problems()
    root = Fields.of(obj)
    meta = found.read(root.map, Fields({}, "metadata"), "metadata")
    found.read(meta.str, None, "name")
    found.read(meta.str, None, "namespace")
    labels: dict[str, str] = found.read(meta.str_map, {}, "labels")
    annotations: dict[str, str] = found.read(meta.str_map, {}, "annotations")
    terminating = found.read(lambda: meta.str("deletionTimestamp") is not None, False)
    replica_set = found.read(lambda: _replica_set(meta), "")
    status = found.read(root.map, Fields({}, "status"), "status")
    phase = found.read(status.str, "Pending", "phase", "Pending", choices=_PHASES) or "Pending"
    pod_ips = [ip for entry in found.read(status.maps, [], "podIPs")
               if (ip := found.read(entry.req_str, None, "ip")) is not None]
    pod_ip = found.read(status.str, None, "podIP")
    ready = found.read(lambda: _ready(status), True)
    spec = found.read(root.map, None, "spec", required=True)
    facts = spec_facts(spec, found) if spec is not None else SpecFacts("default", False, "", [])
    if problems is None:
        found.check()
    return PodFacts(labels, annotations, terminating, replica_set, phase, pod_ips, pod_ip, ready, facts)


# --- facts read directly (the common case, fast) --------------------------------------


def _fast_spec(spec: dict[str, Any]) -> SpecFacts:
    account = opt(spec, "serviceAccountName", str) or opt(spec, "serviceAccount", str) or "default"
    host_network = opt(spec, "hostNetwork", bool) or False
    node = opt(spec, "nodeName", str) or ""
    containers = dicts(spec, "containers")
    if not containers:
        raise Unusual
    groups = [("spec.containers", containers)]
    init = dicts(spec, "initContainers")
    if init:
        groups.append(("spec.initContainers", init))
    ports = []
    for prefix, group in groups:
        for c_index, container in enumerate(group):
            opt(container, "name", str)
            if prefix == "spec.initContainers" and opt(container, "restartPolicy", str) != "Always":
                continue
            for p_index, entry in enumerate(dicts(container, "ports")):
                number = entry.get("containerPort")
                if type(number) is not int or not 1 <= number <= 65535:
                    raise Unusual
                protocol = opt(entry, "protocol", str)
                if protocol is None:
                    protocol = "TCP"
                elif protocol not in PORT_PROTOCOLS:
                    raise Unusual
                ports.append(PortFacts(number, opt(entry, "name", str) or "", protocol,
                                       f"{prefix}[{c_index}].ports[{p_index}]"))
    return SpecFacts(account, host_network, node, ports)


def _fast_facts(body: Mapping[str, Any]) -> PodFacts:
    meta = body.get("metadata")
    spec = body.get("spec")
    status = body.get("status")
    if status is None:
        status = {}
    if type(meta) is not dict or type(spec) is not dict or type(status) is not dict:
        raise Unusual
    opt(meta, "name", str)
    opt(meta, "namespace", str)
    replica_set = ""
    for ref in dicts(meta, "ownerReferences"):
        if opt(ref, "kind", str) == "ReplicaSet" and (opt(ref, "apiVersion", str) or "apps/v1") == "apps/v1":
            name = ref.get("name")
            if type(name) is not str:
                raise Unusual
            replica_set = name
            break
    phase = opt(status, "phase", str)
    if phase is None:
        phase = "Pending"
    elif phase not in _PHASES:
        raise Unusual
    pod_ips = []
    for entry in dicts(status, "podIPs"):
        ip = entry.get("ip")
        if type(ip) is not str:
            raise Unusual
        pod_ips.append(ip)
    ready = True
    for condition in dicts(status, "conditions"):
        kind = condition.get("type")
        if type(kind) is not str:
            raise Unusual
        if kind == "Ready":
            value = condition.get("status")
            if value not in _CONDITION_STATUS:
                raise Unusual
            ready = value == "True"
            break
    return PodFacts(
        plain_str_map(meta, "labels"), plain_str_map(meta, "annotations"),
        opt(meta, "deletionTimestamp", str) is not None, replica_set, phase, pod_ips,
        opt(status, "podIP", str), ready, _fast_spec(spec),
    )


# --- interpretation ---------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _identity(namespace: str, service_account: str) -> Identity:
    # Identities repeat across thousands of pods; build each once.
    return Identity(namespace=namespace, service_account=service_account)


@functools.lru_cache(maxsize=4096)
def _workload_port(number: int, name: str, protocol: Protocol) -> WorkloadPort:
    # The same few container ports repeat across thousands of pods.
    return WorkloadPort(port=number, name=name, protocol=protocol)


def _ports(facts: list[PortFacts], findings: Findings, problems: Problems) -> tuple[WorkloadPort, ...]:
    ports: list[WorkloadPort] = []
    names: dict[str, str] = {}
    for port in facts:
        with problems:
            if port.name:
                if not is_port_name(port.name):
                    raise FieldError(
                        f"{port.path}.name",
                        f"{port.name!r} is not a valid port name (1-15 lower-case letters, digits and "
                        "'-', with at least one letter, no '--', not starting or ending with '-')",
                        KubeCode.INVALID_VALUE,
                    )
                if port.name in names:
                    raise FieldError(f"{port.path}.name",
                                     f"port name {port.name!r} is already used by {names[port.name]}",
                                     KubeCode.DUPLICATE_VALUE)
                names[port.name] = port.path
            if port.protocol == "SCTP":
                findings.warn(KubeCode.SCTP_UNSUPPORTED, "SCTP is not supported by the datapath; this port is left out",
                              f"{port.path}.protocol")
                continue
            ports.append(_workload_port(port.number, port.name,
                                        Protocol.UDP if port.protocol == "UDP" else Protocol.TCP))
    return tuple(ports)


def shape(facts: SpecFacts, spec_path: str, annotations: Mapping[str, str], annotations_path: str,
          namespace: str, findings: Findings, problems: Problems, where: str = "the pod") -> PodShape | None:
    """Interpret a pod spec: identity, ports, node and proxy mode (``None`` when the identity is bad).

    ``where`` names the object the annotations are on, in the mode's reason. Errors are
    kept in ``problems``.
    """
    identity = problems.read(lambda: build(
        {"namespace": "metadata.namespace", "service_account": f"{spec_path}.serviceAccountName"},
        spec_path, lambda: _identity(namespace, facts.account),
    ), None)
    mode = annotated_mode(annotations, annotations_path, where, findings)
    ports = _ports(facts.ports, findings, problems)
    if identity is None:
        return None
    return PodShape(identity, ports, facts.node, mode, facts.host_network, annotations_path)


def read_shape(spec: Fields, annotations: Mapping[str, str], annotations_path: str, namespace: str,
               findings: Findings, problems: Problems, where: str = "the pod") -> PodShape | None:
    """Read and interpret the pod spec at ``spec``; errors are kept in ``problems``."""
    return shape(spec_facts(spec, problems), spec.path, annotations, annotations_path, namespace, findings,
                 problems, where)


def _addresses(facts: PodFacts, problems: Problems) -> tuple[str, ...]:
    addresses = [problems.read(ip_address, None, text, f"status.podIPs[{i}].ip")
                 for i, text in enumerate(facts.pod_ips)]
    if None in addresses:
        return ()
    with problems:
        good = [a for a in addresses if a is not None]
        if facts.pod_ip:
            ip = ip_address(facts.pod_ip, "status.podIP")
            if not good:
                good = [ip]
            elif good[0] != ip:
                raise FieldError("status.podIPs[0].ip", f"must match status.podIP ({facts.pod_ip})",
                                 KubeCode.INVALID_VALUE)
        dual_stack(good, "status.podIPs")
        return tuple(good)
    return ()


_WORKLOAD_PATHS = {
    "name": "metadata.name", "namespace": "metadata.namespace", "addresses": "status.podIPs",
    "labels": "metadata.labels", "ports": "spec.containers", "node": "spec.nodeName",
}


def translate_pod(obj: KubeObject, findings: Findings,
                  namespace_modes: Mapping[str, ModeChoice] | None = None) -> PodInfo | None:
    """The pod's workload and serving state; ``None`` for a pod that has finished.

    ``namespace_modes`` are the proxy modes Namespaces choose for their pods. Every bad
    field is reported (:class:`~meshcore.kube.FieldErrors`), not only the first.
    """
    problems = Problems()
    try:
        facts = _fast_facts(obj.body)
    except Unusual:
        facts = pod_facts(obj, problems)
    pod_shape = shape(facts.spec, "spec", facts.annotations, "metadata.annotations", obj.namespace,
                      findings, problems)
    addresses = _addresses(facts, problems)
    problems.check()
    assert pod_shape is not None  # a bad identity is one of the problems
    if facts.phase in _SKIPPED_PHASES:
        return None
    mode = pod_shape.resolved_mode((namespace_modes or {}).get(obj.namespace), findings)
    workload = build(
        _WORKLOAD_PATHS, "metadata",
        lambda: Workload(
            name=obj.name, namespace=obj.namespace, identity=pod_shape.identity, addresses=addresses,
            labels=Labels(facts.labels), ports=pod_shape.ports, node=pod_shape.node,
            proxy_mode=mode.mode, proxy_mode_reason=mode.reason, source=obj.source,
        ),
    )
    return PodInfo(
        workload=workload, labels=facts.labels, ready=facts.ready, terminating=facts.terminating,
        host_network=pod_shape.host_network, owner=facts.annotations.get(OWNER_ANNOTATION, ""),
        replica_set=facts.replica_set,
    )
