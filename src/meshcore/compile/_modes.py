"""Each workload's proxy mode on the node, and why: what ``meshcore plan`` shows per workload.

The model gives a workload's mode and the annotation that chose it (see
:class:`~meshcore.model.ProxyMode`); compile states it for every workload of the node it
compiles for (every workload when no node is given).
"""

from __future__ import annotations

import attrs

from ..model import ProxyMode, Snapshot, Source, Workload, WorkloadRef

__all__ = ["WorkloadMode", "mode_reason", "workload_modes"]


@attrs.frozen(order=True)
class WorkloadMode:
    """A workload's proxy mode and why it has it."""

    workload: WorkloadRef
    mode: ProxyMode
    reason: str
    source: Source = attrs.field(default=Source(), eq=False, order=False)


def mode_reason(workload: Workload) -> str:
    """Why ``workload`` has its mode: the annotation that chose it, or that nothing did."""
    if workload.proxy_mode_reason:
        return workload.proxy_mode_reason
    return "the default" if workload.proxy_mode is ProxyMode.NODE else "set on the workload"


def workload_modes(snapshot: Snapshot, node: str,
                   serving: frozenset[WorkloadRef] | None = None) -> tuple[WorkloadMode, ...]:
    """The mode of every workload on ``node`` or on no node yet (all when ``node`` is ''), in snapshot order.

    ``serving`` are the sidecars seen serving on the node (None: every one): a workload
    whose sidecar does not serve yet is in ``node`` mode until it does.
    """
    out = []
    for w in snapshot.workloads:
        if node and w.node and w.node != node:
            continue
        mode, reason = w.proxy_mode, mode_reason(w)
        if mode is ProxyMode.SIDECAR and serving is not None and w.ref not in serving:
            mode, reason = ProxyMode.NODE, f"{reason} asks for a sidecar, which does not serve yet: node until it does"
        out.append(WorkloadMode(w.ref, mode, reason, w.source))
    return tuple(out)
