"""Where each pod runs: the lab plays scheduler over its nodes.

A pod runs on the node its ``spec.nodeName`` names; else on a node whose labels include
its ``spec.nodeSelector``; among those (or all nodes), on the one that is up with the
fewest pods, the first in order on a tie, so the same input places the same way. A pod
that runs keeps its node until its spec changes. Node labels are those of the input's
``Node`` object of that name plus the labels every node has (``kubernetes.io/hostname``,
``kubernetes.io/os``, ``kubernetes.io/arch``).

What cannot be honoured is a warning (a :class:`PlacementCode`) saying where the pod runs
instead.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import attrs

from ..kube import KubeObject
from ..model import Diagnostic, Severity, Source
from ._codes import PlacementCode
from ._manifest import DesiredPod

#: Reports a warning: (pod, code, field under the pod spec, message).
Warn = Callable[[DesiredPod, PlacementCode, str, str], None]

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


@attrs.frozen
class PlacementNode:
    """A node as the scheduler sees it: name, labels, and whether it is up."""

    name: str
    labels: Mapping[str, str] = attrs.field(factory=dict)
    up: bool = True


def well_known_labels(name: str) -> dict[str, str]:
    """The labels a kubelet gives every node."""
    machine = platform.machine()
    return {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": _ARCH.get(machine, machine)}


def lab_node_labels(name: str, given: KubeObject | None) -> dict[str, str]:
    """A lab node's labels: the well-known ones, then those of its Node object in the input."""
    return {**well_known_labels(name), **(dict(given.labels) if given is not None else {})}


def unknown_nodes(given: Mapping[str, KubeObject], names: Sequence[str]) -> list[Diagnostic]:
    """A warning per input Node object that names no node of the lab."""
    listed = ", ".join(names)
    return [Diagnostic(PlacementCode.NODE_UNKNOWN, Severity.WARNING,
                       f"the lab has no node {name!r} (its nodes: {listed}); this Node is passed on unchanged "
                       "(name a lab node to give it labels)", obj.source, "metadata.name")
            for name, obj in sorted(given.items()) if name not in names]


def _where(pod: DesiredPod, field: str) -> tuple[Source, str]:
    """Where a field of a pod's spec was written (in its Deployment for generated pods): source and path."""
    kind, _, owner = pod.owner.partition("/")
    path = f"spec.template.spec.{field}" if kind == "Deployment" else f"spec.{field}"
    if pod.origin is not None:
        return pod.origin.source_at(path), path
    if kind == "Deployment":
        return attrs.evolve(pod.source, kind="Deployment", name=owner), path
    return pod.source, path


def _selector(pod: DesiredPod) -> dict[str, str]:
    value = pod.spec.get("nodeSelector")
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def place(pods: Sequence[DesiredPod], nodes: Sequence[PlacementNode],
          kept: Mapping[str, str]) -> tuple[dict[str, str], list[Diagnostic]]:
    """The node of every pod (``kept``: pods that keep the node they run on) and warnings.

    Warnings about a Deployment's template are given once, for the Deployment.
    """
    names = [n.name for n in nodes]
    load = Counter(node for node in kept.values())
    placed: dict[str, str] = {}
    found: dict[tuple[str, str, str], Diagnostic] = {}

    def warn(pod: DesiredPod, code: PlacementCode, field: str, message: str) -> None:
        source, path = _where(pod, field)
        key = (code, f"{source.namespace}/{source.kind}/{source.name}", path)
        found.setdefault(key, Diagnostic(code, Severity.WARNING, message, source, path))

    for pod in pods:
        if pod.key in kept:
            placed[pod.key] = kept[pod.key]
            continue
        _check_unapplied(pod, warn)
        candidates = list(nodes)
        wanted = pod.spec.get("nodeName")
        if isinstance(wanted, str) and wanted:
            if wanted in names:
                placed[pod.key] = wanted
                load[wanted] += 1
                continue
            warn(pod, PlacementCode.NODE_NAME_UNKNOWN, "nodeName",
                 f"nodeName {wanted!r} is not a node of the lab (its nodes: {', '.join(names)}); "
                 "the pod is placed as if no node were named")
        selector = _selector(pod)
        if selector:
            matching = [n for n in nodes if all(n.labels.get(k) == v for k, v in selector.items())]
            if matching:
                candidates = matching
            else:
                warn(pod, PlacementCode.NODE_SELECTOR_UNMATCHED, "nodeSelector",
                     f"nodeSelector {selector} matches no node of the lab (nodes are labelled by Node objects "
                     "of their names); the pod is placed as if it had none")
        up = [n for n in candidates if n.up] or candidates
        chosen = min(up, key=lambda n: (load[n.name], names.index(n.name)))
        placed[pod.key] = chosen.name
        load[chosen.name] += 1
    return placed, list(found.values())


def _check_unapplied(pod: DesiredPod, warn: Warn) -> None:
    """Warn about placement rules the lab does not apply."""
    affinity = pod.spec.get("affinity")
    if isinstance(affinity, Mapping) and affinity.get("nodeAffinity"):
        warn(pod, PlacementCode.PLACEMENT_NOT_APPLIED, "affinity.nodeAffinity",
             "the lab places pods by nodeName and nodeSelector only; nodeAffinity is not applied")
    if pod.spec.get("topologySpreadConstraints"):
        warn(pod, PlacementCode.PLACEMENT_NOT_APPLIED, "topologySpreadConstraints",
             "the lab spreads pods over its nodes by count only; topologySpreadConstraints are not applied")
