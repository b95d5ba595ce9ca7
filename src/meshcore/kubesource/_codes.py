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
