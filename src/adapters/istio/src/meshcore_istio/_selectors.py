"""Workload selectors that select no workload (MC7024), as ``istioctl analyze`` reports them.

An AuthorizationPolicy, PeerAuthentication or RequestAuthentication with a ``selector``,
or a Sidecar with a ``workloadSelector``, applies only to the workloads carrying its labels
in the namespaces it reaches (its own; every namespace for an AuthorizationPolicy or
RequestAuthentication in the root namespace). When no pod or WorkloadEntry there has them,
it applies to nothing — typically a mistyped label — and a warning points at the labels.
An object without a selector applies to every workload of its namespace and is never
reported, even when the namespace has none yet (policies are often written before the
workloads they protect).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from meshcore.kube import KubeObject, Report
from meshcore.model import Workload, WorkloadSelector

from ._codes import IstioCode


def _labels_text(selector: WorkloadSelector) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.labels.items()))


def report_unselected(selecting: Iterable[tuple[KubeObject, str, WorkloadSelector]], workloads: Sequence[Workload],
                      report: Report) -> None:
    """Warn about each (object, labels field, selector) whose non-empty selector selects none of ``workloads``."""
    for obj, path, selector in selecting:
        if not selector.labels or any(selector.selects(w.namespace, w.labels) for w in workloads):
            continue
        where = "in any namespace" if selector.namespace is None else f"in namespace {selector.namespace}"
        report.warn(obj, IstioCode.SELECTOR_NO_WORKLOAD, f"no workload {where} has the labels "
                    f"{_labels_text(selector)}: this {obj.kind} applies to no workload", path)
