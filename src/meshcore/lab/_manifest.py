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

from .._codes import TranslateCode
from ..kube import (
    CLUSTER_SCOPED_KINDS,
    PROXY_ADDRESSES_ANNOTATION,
    KubeObject,
    ServiceRangeFull,
    expand_deployment,
    given_cluster_ips,
    with_cluster_ips,
)
from ..kube import assign_cluster_ips as kube_assign_cluster_ips
from ..agent import PodSandbox, object_entry, write_objects_file
from ..model import Diagnostic, Source, WorkloadRef
from . import _netns as netns
from . import _procs as procs
from ._ca import write_ca_objects
from ._errors import LabError, lab_command
from ._gateways import enrich_gateway, enrich_ingress, our_gateways, our_ingresses
from ._ipam import LabRanges
from ._state import LabState, NodeRecord, PodRecord, ServiceRecord

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
    #: The input object its spec was written in (the Pod, or its Deployment), for positions.
    origin: KubeObject | None = attrs.field(default=None, eq=False, repr=False)

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
            pods.append(DesiredPod(obj.namespace, obj.name, obj.body, obj.source, origin=obj))
        elif key == ("apps/v1", "Deployment"):
            bodies, found = expand_deployment(obj)
            diagnostics.extend(found)
            for ordinal, body in enumerate(bodies):
                name = str(body["metadata"]["name"])
                pods.append(DesiredPod(obj.namespace, name, body, attrs.evolve(obj.source, kind="Pod", name=name),
                                       owner=f"Deployment/{obj.name}", ordinal=ordinal, origin=obj))
            others.append(obj)
        elif key == ("v1", "Service"):
            services.append(obj)
        else:
            if obj.kind in UNSUPPORTED_WORKLOADS and obj.group in ("apps", "batch"):
                diagnostics.append(Diagnostic(
                    TranslateCode.NOT_SUPPORTED, "warning", f"the lab does not run {obj.kind}s (only Pods and "
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


def input_nodes(others: Sequence[KubeObject]) -> dict[str, KubeObject]:
    """The input's v1 Node objects by name."""
    return {o.name: o for o in others if o.api_version == "v1" and o.kind == "Node"}


def enrich_node(node: NodeRecord, labels: Mapping[str, str], given: KubeObject | None) -> dict[str, Any]:
    """The lab node as a Node object: the input's of that name (if any) with labels, addresses and readiness."""
    body: dict[str, Any] = copy.deepcopy(dict(given.body)) if given is not None else {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": node.name}}
    meta = body.setdefault("metadata", {})
    meta["labels"] = dict(labels)
    if node.ranges.proxy_addresses:
        annotations = meta.get("annotations") if isinstance(meta.get("annotations"), Mapping) else {}
        meta["annotations"] = {**annotations, PROXY_ADDRESSES_ANNOTATION: ",".join(node.ranges.proxy_addresses)}
    spec = dict(body["spec"]) if isinstance(body.get("spec"), Mapping) else {}
    spec["podCIDR"] = node.ranges.pod_ipv4
    spec["podCIDRs"] = [node.ranges.pod_ipv4, node.ranges.pod_ipv6]
    body["spec"] = spec
    body["status"] = {
        "addresses": [*({"type": "InternalIP", "address": a} for a in node.ranges.node_addresses),
                      {"type": "Hostname", "address": node.name}],
        "conditions": [{"type": "Ready", "status": "False" if node.down else "True",
                        "reason": "NodeDown" if node.down else "KubeletReady"}],
    }
    return body


def write_objects(state: LabState, desired: Desired, node_labels: Mapping[str, Mapping[str, str]]) -> int:
    """Write the enriched objects for every node's agent as the next generation; that generation.

    Every agent gets the same objects (the lab's Node objects among them) and the
    interfaces of its own node's pods. Pods of a node that is down are not ready, so no
    node sends them traffic.
    """
    gateways = {id(o) for o in our_gateways(desired.others)}
    given_nodes = input_nodes(desired.others)
    enriched = {id(o) for name, o in given_nodes.items() if name in state.nodes}
    ingresses = {id(o) for o in our_ingresses(desired.others)}
    entries = []
    for o in desired.others:
        if id(o) in enriched:
            continue
        assigned = state.services.get(f"{o.namespace}/{o.name}")
        body = (enrich_gateway(o, assigned) if id(o) in gateways
                else enrich_ingress(o, assigned) if id(o) in ingresses else o.body)
        entries.append(object_entry(body, o.source))
    for node in state.nodes.values():
        given = given_nodes.get(node.name)
        entries.append(object_entry(enrich_node(node, node_labels[node.name], given),
                                    given.source if given is not None else Source(kind="Node", name=node.name)))
    for obj in desired.services:
        service = state.services[f"{obj.namespace}/{obj.name}"]
        entries.append(object_entry(enrich_service(obj, service), obj.source))
    for pod in desired.pods:
        record = state.pods[pod.key]
        node = state.node_of(record)
        phase, ready = pod_status(state, record)
        body = enrich_pod(
            pod, uid=record.uid, node_name=node.name, addresses=record.addresses,
            host_addresses=node.ranges.node_addresses, phase=phase, ready=ready,
            started=datetime.datetime.fromtimestamp(record.created_at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        entries.append(object_entry(body, pod.source))
    return _write_generation(state, entries, [state.pods[p.key] for p in desired.pods])


def pod_status(state: LabState, record: PodRecord) -> tuple[str, bool]:
    """The phase and readiness a kubelet would report for the pod now.

    Without probes a pod is ready once its containers run; a node that is down reports
    nothing, and the lab, as a node controller, marks its pods not ready (phase Unknown).
    """
    if state.node_of(record).down:
        return "Unknown", False
    running = bool(record.processes) and all(procs.alive(p.pid, p.start_time) for p in record.processes)
    return ("Running" if running else "Failed"), running


def sandboxes(state: LabState, node: str) -> dict[WorkloadRef, PodSandbox]:
    """Where each pod of ``node`` lives: its cgroup, its sidecar's and its network namespace."""
    return {WorkloadRef(r.namespace, r.name): PodSandbox(r.cgroup, r.sidecar_cgroup, str(netns.path(r.netns)))
            for r in state.pods.values() if r.node == node}


def _write_generation(state: LabState, entries: Sequence[Mapping[str, Any]], pods: Sequence[PodRecord]) -> int:
    """Write ``entries`` as the next generation to every node, each with its own pods' interfaces."""
    state.generation += 1
    written = _now()
    if state.mtls:
        write_ca_objects(state, entries)
    for node in state.nodes.values():
        # Each pod's node-side veth, where the node's agent attaches L3/L4 policy.
        interfaces = {WorkloadRef(r.namespace, r.name): r.host_veth for r in pods if r.node == node.name}
        write_objects_file(node.objects_path, state.generation, entries, interfaces, sandboxes(state, node.name),
                           lab=state.name, node=node.name, written=written)
    state.save()
    return state.generation


def last_objects(state: LabState) -> list[dict[str, Any]]:
    """The entries of the last generation written (every node has the same)."""
    path = state.first_node.objects_path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return list(data["objects"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabError(f"cannot read the objects of lab {state.name!r} ({path}: {exc}); run "
                       f"`{lab_command(state.name, 'up', '-f', 'FILES')}` again") from exc


def rewrite_statuses(state: LabState) -> int:
    """The last generation again with every pod's and lab node's status as it is now; the new generation.

    What a node controller does when a node goes away or comes back: its pods turn not
    ready (or ready again) in what every agent reads, while the rest stays as it was.
    """
    entries = last_objects(state)
    pods: list[PodRecord] = []
    for entry in entries:
        body = entry.get("body") or {}
        meta = body.get("metadata") or {}
        if body.get("apiVersion") == "v1" and body.get("kind") == "Node" and meta.get("name") in state.nodes:
            node = state.nodes[meta["name"]]
            body["status"]["conditions"] = enrich_node(node, {}, None)["status"]["conditions"]
        elif body.get("apiVersion") == "v1" and body.get("kind") == "Pod":
            record = state.pods.get(f"{meta.get('namespace')}/{meta.get('name')}")
            if record is None:
                continue
            phase, ready = pod_status(state, record)
            body["status"]["phase"] = phase
            body["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
            pods.append(record)
    return _write_generation(state, entries, pods)


def desired_pods_of(entries: Sequence[Mapping[str, Any]], state: LabState) -> list[DesiredPod]:
    """The lab's pods as the last generation describes them (their specs, as `lab up` read them)."""
    out = []
    for entry in entries:
        body = entry.get("body") or {}
        meta = body.get("metadata") or {}
        record = state.pods.get(f"{meta.get('namespace')}/{meta.get('name')}")
        if body.get("apiVersion") != "v1" or body.get("kind") != "Pod" or record is None:
            continue
        source = entry.get("source") or {}
        out.append(DesiredPod(record.namespace, record.name, body,
                              Source(kind="Pod", namespace=record.namespace, name=record.name,
                                     file=str(source.get("file", "")), line=int(source.get("line", 0)),
                                     column=int(source.get("column", 0))),
                              owner=record.owner, ordinal=record.ordinal))
    return out
