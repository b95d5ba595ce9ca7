"""Pod → model Workload, plus what services need to know about the pod (readiness, owner)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import attrs

from ..model import Identity, Labels, ProxyMode, Workload, WorkloadPort
from ._codes import DUPLICATE_VALUE, INVALID_VALUE, PROXY_ANNOTATION
from ._fields import FieldError, Fields
from ._objects import KubeObject
from ._values import Findings, build, dual_stack, ip_address, port_name, read_metadata, transport

#: Annotation naming the object that generated a pod (``Deployment/<name>``).
OWNER_ANNOTATION = "meshcore.io/owner"
#: Annotation opting a pod out of the mesh (``none``) or in (``mesh``, the default).
PROXY_MODE_ANNOTATION = "meshcore.io/proxy"

_SKIPPED_PHASES = frozenset({"Succeeded", "Failed"})
_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
_CONDITION_STATUS = ("True", "False", "Unknown")


@attrs.frozen
class PodShape:
    """What a pod spec says about a workload, shared by every replica of a template."""

    identity: Identity
    ports: tuple[WorkloadPort, ...]
    node: str
    proxy_mode: ProxyMode
    host_network: bool


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


@functools.lru_cache(maxsize=4096)
def _identity(namespace: str, service_account: str) -> Identity:
    # Identities repeat across thousands of pods; build each once.
    return Identity(namespace=namespace, service_account=service_account)


def read_shape(
    spec: Fields, annotations: Mapping[str, str], annotations_path: str, namespace: str,
    findings: Findings,
) -> PodShape:
    """Read identity, ports, node and proxy mode from a pod spec at ``spec``."""
    account = spec.str("serviceAccountName") or spec.str("serviceAccount") or "default"
    identity = build(
        {"namespace": "metadata.namespace", "service_account": f"{spec.path}.serviceAccountName"},
        spec.path, lambda: _identity(namespace, account),
    )
    host_network = spec.bool("hostNetwork")
    mode = annotations.get(PROXY_MODE_ANNOTATION, "mesh")
    if mode not in ("mesh", "none"):
        findings.warn(
            PROXY_ANNOTATION,
            f"{PROXY_MODE_ANNOTATION} is {mode!r}; valid values are 'mesh' and 'none' (using 'mesh')",
            f"{annotations_path}.{PROXY_MODE_ANNOTATION}",
        )
        mode = "mesh"
    proxy_mode = ProxyMode.NONE if host_network or mode == "none" else ProxyMode.MESH
    return PodShape(identity, _ports(spec, findings), spec.str("nodeName", "") or "", proxy_mode, host_network)


def _ports(spec: Fields, findings: Findings) -> tuple[WorkloadPort, ...]:
    containers = spec.maps("containers", required=True)
    if not containers:
        raise FieldError(f"{spec.path}.containers", "a pod needs at least one container", "MC0101")
    # Sidecar containers (init containers that keep running) serve ports too.
    sidecars = [c for c in spec.maps("initContainers") if c.str("restartPolicy") == "Always"]
    ports: list[WorkloadPort] = []
    names: dict[str, str] = {}
    for container in containers + sidecars:
        container.str("name")
        for entry in container.maps("ports"):
            number = entry.port("containerPort", required=True)
            name = port_name(entry)
            protocol = transport(entry, findings)
            if name:
                if name in names:
                    raise FieldError(
                        f"{entry.path}.name", f"port name {name!r} is already used by {names[name]}",
                        DUPLICATE_VALUE,
                    )
                names[name] = entry.path
            if protocol is None:
                continue
            assert number is not None
            ports.append(WorkloadPort(port=number, name=name, protocol=protocol))
    return tuple(ports)


def _addresses(status: Fields) -> tuple[str, ...]:
    addresses = [
        ip_address(entry.req_str("ip"), f"{entry.path}.ip") for entry in status.maps("podIPs")
    ]
    single = status.str("podIP")
    if single is not None and single != "":
        ip = ip_address(single, f"{status.path}.podIP")
        if not addresses:
            addresses = [ip]
        elif addresses[0] != ip:
            raise FieldError(
                f"{status.path}.podIPs[0].ip", f"must match status.podIP ({single})", INVALID_VALUE,
            )
    dual_stack(addresses, f"{status.path}.podIPs")
    return tuple(addresses)


def _ready(status: Fields) -> bool:
    for condition in status.maps("conditions"):
        if condition.req_str("type") == "Ready":
            return condition.req_str("status", choices=_CONDITION_STATUS) == "True"
    # A pod written by hand reports no conditions: treat it as ready.
    return True


def _replica_set(meta: Fields) -> str:
    for ref in meta.maps("ownerReferences"):
        if ref.str("kind") == "ReplicaSet" and ref.str("apiVersion", "apps/v1") == "apps/v1":
            return ref.req_str("name")
    return ""


def translate_pod(obj: KubeObject, findings: Findings) -> PodInfo | None:
    """The pod's workload and serving state; ``None`` for a pod that has finished."""
    root = Fields.of(obj)
    meta = read_metadata(obj, root)
    labels = meta.str_map("labels")
    annotations = meta.str_map("annotations")
    terminating = meta.str("deletionTimestamp") is not None
    replica_set = _replica_set(meta)
    status = root.map("status")
    phase = status.str("phase", "Pending", choices=_PHASES)
    shape = read_shape(root.map("spec", required=True), annotations, "metadata.annotations",
                       obj.namespace, findings)
    addresses = _addresses(status)
    ready = _ready(status)
    if phase in _SKIPPED_PHASES:
        return None
    workload = build(
        {"name": "metadata.name", "namespace": "metadata.namespace", "addresses": "status.podIPs",
         "labels": "metadata.labels", "ports": "spec.containers", "node": "spec.nodeName"},
        "metadata",
        lambda: Workload(
            name=obj.name, namespace=obj.namespace, identity=shape.identity, addresses=addresses,
            labels=Labels(labels), ports=shape.ports, node=shape.node,
            proxy_mode=shape.proxy_mode, source=obj.source,
        ),
    )
    return PodInfo(
        workload=workload, labels=labels, ready=ready, terminating=terminating,
        host_network=shape.host_network, owner=annotations.get(OWNER_ANNOTATION, ""),
        replica_set=replica_set,
    )

