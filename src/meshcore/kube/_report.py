"""Collecting diagnostics about input objects, for the core kinds and for adapters."""

from __future__ import annotations

from collections.abc import Sequence

from ..model import Diagnostic, Severity
from ._objects import KubeObject


class Report:
    """Collects diagnostics, each pointing at the line of an object's field."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def add(self, obj: KubeObject, severity: Severity, code: str, message: str, path: str = "") -> None:
        """Record a finding about ``obj`` (at ``path`` when given)."""
        source = obj.source_at(path) if path else obj.source
        self.items.append(Diagnostic(code, severity, message, source, path))

    def error(self, obj: KubeObject, code: str, message: str, path: str = "") -> None:
        """Record an error: the object contributes nothing."""
        self.add(obj, Severity.ERROR, code, message, path)

    def warn(self, obj: KubeObject, code: str, message: str, path: str = "") -> None:
        """Record a warning."""
        self.add(obj, Severity.WARNING, code, message, path)

    def info(self, obj: KubeObject, code: str, message: str, path: str = "") -> None:
        """Record an informational finding."""
        self.add(obj, Severity.INFO, code, message, path)


def unique_objects(objects: Sequence[KubeObject], report: Report, code: str) -> list[KubeObject]:
    """The objects with the second and later of each kind/namespace/name reported as ``code``."""
    seen: dict[tuple[str, str, str], KubeObject] = {}
    out = []
    for obj in objects:
        key = (obj.kind, obj.namespace, obj.name)
        if key in seen:
            first = seen[key].source.location or str(seen[key].source)
            report.error(obj, code, f"{obj.ref} is defined twice (first at {first}); the second is ignored")
            continue
        seen[key] = obj
        out.append(obj)
    return out
