"""Diagnostic codes of this package: :class:`KubeSourceCode`."""

from __future__ import annotations

from ..model import DiagnosticCode, Severity


class KubeSourceCode(DiagnosticCode):
    """Live sources (block MC05xx): reading objects from a Kubernetes API server."""

    KIND_NOT_SERVED = (
        "MC0500", Severity.WARNING,
        "A kind meshcore reads is not served by the API server (its CustomResourceDefinition is not "
        "installed): it is not watched, and the source looks for it again from time to time.",
    )

    POD_NOT_ON_NODE = (
        "MC0501", Severity.WARNING,
        "A pod the API server schedules to this node was not found on it (no cgroup for its uid in the kubelet's "
        "layout yet, no process in it, no interface with its address, or no veth peer in the node's namespace): "
        "no policy is attached for it and its sidecar is not steered until a later look finds it.",
    )
