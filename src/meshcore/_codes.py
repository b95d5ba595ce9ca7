"""Diagnostic codes of translation itself: :class:`TranslateCode`."""

from __future__ import annotations

from collections.abc import Iterable

from .model import Diagnostic, DiagnosticCode, Severity


class TranslateCode(DiagnosticCode):
    """Translation (blocks MC02xx-MC04xx): routing objects to adapters, merging their fragments, whole-snapshot checks."""

    UNKNOWN_KIND = (
        "MC0200", Severity.WARNING,
        "An object of a kind no installed adapter handles (or whose adapter is disabled, failed to load, "
        "or handles another apiVersion: the message says which): it has no effect.",
    )
    DUPLICATE_OBJECT = (
        "MC0210", Severity.ERROR,
        "Two fragments define the same service or workload: the second is ignored, and the message names "
        "where the first was defined.",
    )
    INCONSISTENT_SNAPSHOT = (
        "MC0220", Severity.ERROR,
        "The merged configuration is inconsistent (the model rejects it): the snapshot keeps only the "
        "namespaces.",
    )
    IP_BLOCK_HOLDS_PODS = (
        "MC0230", Severity.WARNING,
        "A policy's IP block holds the addresses of pods of the mesh: IP blocks select only peers outside "
        "the mesh, so it does not select them (select pods by namespace, principal or labels).",
    )
    PORT_ROUTED_TWICE = (
        "MC0240", Severity.WARNING,
        "Route tables of two adapters for one service port: the adapter whose first routing object is the "
        "oldest routes the port; the other adapters' routes are not applied there.",
    )
    SERVICE_RANGE_FULL = (
        "MC0250", Severity.WARNING,
        "ClusterIPs were not assigned because a service range is full: Services without ClusterIPs keep "
        "none (give larger ranges).",
    )
    STRICT_WITHOUT_MTLS = (
        "MC0260", Severity.WARNING,
        "Mutual TLS required (PeerAuthentication STRICT, of the mesh, a namespace, a workload or a port) in a "
        "translation that does not know whether the node agents run mutual TLS: STRICT is enforced only where "
        "they do (`meshcore agent --ca-socket`, `meshcore lab up --mtls`); elsewhere workloads still accept "
        "plain text. One per object; a lab with mutual TLS does not report it.",
    )
    ADAPTER_FAILED = (
        "MC0300", Severity.ERROR,
        "An adapter failed (raised an exception or returned something other than a fragment): none of its "
        "objects were translated.",
    )
    NOT_SUPPORTED = (
        "MC0400", Severity.WARNING,
        "An object of a kind that is recognised but not supported (by its adapter, or by the lab, which "
        "runs only Pods and Deployments): it has no effect.",
    )


def with_mtls(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """``diagnostics`` for a node that runs mutual TLS: it enforces STRICT, so no warning that it may not."""
    return [d for d in diagnostics if d.code != TranslateCode.STRICT_WITHOUT_MTLS]
