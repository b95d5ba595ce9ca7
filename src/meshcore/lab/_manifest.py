"""From input objects to what the lab runs, and back to objects enriched with what it assigned.

The lab plays API server, scheduler and IPAM: Deployments become pods, pods get
addresses and a node, Services get ClusterIPs. The enriched objects (pods with
``status.podIPs``, services with ``spec.clusterIPs``) are what the node agent translates,
exactly as it would translate objects read from a cluster.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..kube import (
    CLUSTER_SCOPED_KINDS,
    KubeObject,
    ServiceRangeFull,
    expand_deployment,
    given_cluster_ips,
    with_cluster_ips,
)
from ..kube import assign_cluster_ips as kube_assign_cluster_ips
from ..agent import object_entry, write_objects_file
from ..model import Diagnostic, Source, WorkloadRef
from . import _procs as procs
from ._errors import LabError
from ._gateways import enrich_gateway, enrich_ingress, our_gateways, our_ingresses
from ._ipam import LabRanges
from ._state import LabState, ServiceRecord

#: Kinds the lab turns into running things; every other kind is passed to the agent as is.
POD_KINDS = frozenset({("v1", "Pod"), ("apps/v1", "Deployment")})
UNSUPPORTED_WORKLOADS = frozenset({"StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"})


@attrs.frozen
class DesiredPod:
    """A pod the input asks for: its body (without status) and where it came from."""

    namespace: str
    name: str
    body: Mapping[str, Any]
    source: Source
    owner: str = ""
    ordinal: int = 0

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def spec(self) -> Mapping[str, Any]:
        """The pod spec."""
        spec = self.body.get("spec")
        return spec if isinstance(spec, Mapping) else {}

    @property
    def labels(self) -> dict[str, str]:
        """The pod's labels."""
        meta = self.body.get("metadata")
        labels = meta.get("labels") if isinstance(meta, Mapping) else None
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}

    @property
    def spec_hash(self) -> str:
        """A digest of what decides the pod's processes (its spec); labels are not part of it."""
        text = json.dumps({"name": self.name, "spec": self.spec}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@attrs.frozen
class Desired:
    """Everything the input asks for, split into pods, services and the rest."""

    pods: tuple[DesiredPod, ...]
    services: tuple[KubeObject, ...]
    others: tuple[KubeObject, ...]
    diagnostics: tuple[Diagnostic, ...]


def desired_state(objects: Sequence[KubeObject]) -> Desired:
    """Expand Deployments into pods and split the input by what the lab does with it."""
    pods: list[DesiredPod] = []
    services: list[KubeObject] = []
    others: list[KubeObject] = []
    diagnostics: list[Diagnostic] = []
    for obj in objects:
        key = (obj.api_version, obj.kind)
        if key == ("v1", "Pod"):
            pods.append(DesiredPod(obj.namespace, obj.name, obj.body, obj.source))
        elif key == ("apps/v1", "Deployment"):
            bodies, found = expand_deployment(obj)
            diagnostics.extend(found)
            for ordinal, body in enumerate(bodies):
                name = str(body["metadata"]["name"])
                pods.append(DesiredPod(obj.namespace, name, body, attrs.evolve(obj.source, kind="Pod", name=name),
                                       owner=f"Deployment/{obj.name}", ordinal=ordinal))
            others.append(obj)
        elif key == ("v1", "Service"):
            services.append(obj)
        else:
            if obj.kind in UNSUPPORTED_WORKLOADS and obj.group in ("apps", "batch"):
                diagnostics.append(Diagnostic(
                    "MC0400", "warning", f"the lab does not run {obj.kind}s (only Pods and "
                    "Deployments); it was passed on unchanged", obj.source, "kind"))
            others.append(obj)
    seen: dict[str, DesiredPod] = {}
    for pod in pods:
        first = seen.setdefault(pod.key, pod)
        if first is not pod:
            raise LabError(f"pod {pod.key} is defined twice: {first.source} and {pod.source}")
    return Desired(tuple(pods), tuple(services), tuple(others), tuple(diagnostics))


def assign_cluster_ips(services: Sequence[KubeObject], existing: Mapping[str, ServiceRecord],
                       ranges: LabRanges) -> dict[str, ServiceRecord]:
    """ClusterIPs for every service: given ones kept, earlier ones reused, the rest allocated."""
    taken: dict[str, str] = {}
    for obj in services:
        for address in given_cluster_ips(obj) or ():
            if address in taken:
                raise LabError(f"{obj.ref}: ClusterIP {address} is also given to Service {taken[address]}")
            taken[address] = f"{obj.namespace}/{obj.name}"
    try:
        assigned = kube_assign_cluster_ips(services, ranges.services,
                                           {key: record.cluster_ips for key, record in existing.items()})
    except ServiceRangeFull as exc:
        raise LabError(str(exc)) from None
    return {
        f"{obj.namespace}/{obj.name}": ServiceRecord(
            obj.namespace, obj.name, assigned.get(f"{obj.namespace}/{obj.name}", ()), _ports(obj))
        for obj in services
    }


def _ports(obj: KubeObject) -> tuple[dict[str, Any], ...]:
    out = []
    for entry in obj.spec.get("ports") or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("port"), int):
            out.append({"name": str(entry.get("name") or ""), "port": entry["port"],
                        "protocol": str(entry.get("protocol") or "TCP"),
                        "targetPort": entry.get("targetPort") or entry["port"]})
    return tuple(out)


def enrich_service(obj: KubeObject, record: ServiceRecord) -> dict[str, Any]:
    """The Service body with the ClusterIPs the lab assigned."""
    return copy.deepcopy(dict(with_cluster_ips(obj, record.cluster_ips).body))


def enrich_pod(pod: DesiredPod, *, uid: str, node_name: str, addresses: Sequence[str],
               host_addresses: Sequence[str], phase: str, ready: bool, started: str) -> dict[str, Any]:
    """The Pod body as a kubelet would report it: node, addresses, phase, readiness."""
    body = copy.deepcopy(dict(pod.body))
    meta = body.setdefault("metadata", {})
    meta["namespace"] = pod.namespace
    meta.setdefault("uid", uid)
    spec = body.setdefault("spec", {})
    spec["nodeName"] = node_name
    body["status"] = {
        "phase": phase,
        "hostIP": host_addresses[0],
        "hostIPs": [{"ip": a} for a in host_addresses],
        "podIP": addresses[0],
        "podIPs": [{"ip": a} for a in addresses],
        "startTime": started,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    return body


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_objects(state: LabState, desired: Desired, ranges: LabRanges) -> int:
    """Write the enriched objects for the node agent as the next generation; that generation."""
    gateways = {id(o) for o in our_gateways(desired.others)}
    ingresses = {id(o) for o in our_ingresses(desired.others)}
    entries = []
    for o in desired.others:
        assigned = state.services.get(f"{o.namespace}/{o.name}")
        body = (enrich_gateway(o, assigned) if id(o) in gateways
                else enrich_ingress(o, assigned) if id(o) in ingresses else o.body)
        entries.append(object_entry(body, o.source))
    for obj in desired.services:
        service = state.services[f"{obj.namespace}/{obj.name}"]
        entries.append(object_entry(enrich_service(obj, service), obj.source))
    for pod in desired.pods:
        record = state.pods[pod.key]
        running = bool(record.processes) and all(procs.alive(p.pid, p.start_time) for p in record.processes)
        body = enrich_pod(
            pod, uid=record.uid, node_name=state.node_name, addresses=record.addresses,
            host_addresses=(ranges.node_ipv4, ranges.node_ipv6),
            # Ready as a kubelet without probes reports it: once the containers run.
            phase="Running" if running else "Failed", ready=running,
            started=datetime.datetime.fromtimestamp(record.created_at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        entries.append(object_entry(body, pod.source))
    state.generation += 1
    # Each pod's node-side veth, where the agent attaches L3/L4 policy.
    interfaces = {WorkloadRef(pod.namespace, pod.name): state.pods[pod.key].host_veth for pod in desired.pods}
    write_objects_file(state.objects_path, state.generation, entries, interfaces, lab=state.name, written=_now())
    state.save()
    return state.generation
