"""Diagnostic codes of the lab: :class:`PlacementCode`."""

from __future__ import annotations

from ..model import DiagnosticCode, Severity


class PlacementCode(DiagnosticCode):
    """The lab's placement of pods on its nodes (block MC06xx): what it cannot honour, and where the pod runs instead."""

    NODE_NAME_UNKNOWN = (
        "MC0600", Severity.WARNING,
        "`spec.nodeName` names a node the lab does not have: the pod is placed as if it were not given.",
    )
    NODE_SELECTOR_UNMATCHED = (
        "MC0601", Severity.WARNING,
        "`spec.nodeSelector` matches no node of the lab: the pod is placed as if it were not given.",
    )
    PLACEMENT_NOT_APPLIED = (
        "MC0602", Severity.WARNING,
        "`spec.affinity.nodeAffinity` or `spec.topologySpreadConstraints`: not applied.",
    )
    NODE_UNKNOWN = (
        "MC0603", Severity.WARNING,
        "A `Node` object names a node the lab does not have: it is passed on unchanged.",
    )
