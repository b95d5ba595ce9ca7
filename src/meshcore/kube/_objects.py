"""Kubernetes objects as read from input, with the position of every field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ..model import Source

#: Finds the 1-based (line, column) of a field path such as ``spec.ports[0].port``.
Locator = Callable[[str], "tuple[int, int] | None"]


def _nowhere(path: str) -> tuple[int, int] | None:
    return None


@attrs.frozen
class KubeObject:
    """One Kubernetes object: apiVersion, kind, metadata and body, plus where it was read.

    ``body`` is plain data (dicts, lists, scalars). Field positions are found on demand
    (only diagnostics need them), so reading large inputs stays fast and small.
    """

    api_version: str
    kind: str
    name: str
    namespace: str
    body: Mapping[str, Any]
    source: Source
    locate: Locator = attrs.field(default=_nowhere, eq=False, repr=False)

    @property
    def group(self) -> str:
        """The API group ("" for the core group)."""
        return self.api_version.rpartition("/")[0]

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The ``metadata`` mapping (empty when absent)."""
        meta = self.body.get("metadata")
        return meta if isinstance(meta, Mapping) else {}

    @property
    def spec(self) -> Mapping[str, Any]:
        """The ``spec`` mapping (empty when absent)."""
        spec = self.body.get("spec")
        return spec if isinstance(spec, Mapping) else {}

    @property
    def labels(self) -> dict[str, str]:
        """``metadata.labels`` with values as strings."""
        labels = self.metadata.get("labels")
        if not isinstance(labels, Mapping):
            return {}
        return {str(k): str(v) for k, v in labels.items()}

    @property
    def ref(self) -> str:
        """``Kind namespace/name`` (or ``Kind name`` when cluster-scoped)."""
        return self.source.object_ref

    def source_at(self, path: str) -> Source:
        """The source of this object pointing at the line of ``path`` (or the nearest parent)."""
        probe = path
        while probe:
            found = self.locate(probe)
            if found is not None:
                return attrs.evolve(self.source, line=found[0], column=found[1])
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        return self.source


def make_object(
    body: Mapping[str, Any],
    *,
    file: str = "",
    line: int = 0,
    column: int = 0,
    locate: Locator = _nowhere,
    default_namespace: str = "default",
    cluster_scoped: bool = False,
) -> KubeObject:
    """Build a :class:`KubeObject` from a parsed mapping (assumed to have apiVersion/kind)."""
    meta = body.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    kind = str(body.get("kind", ""))
    name = str(meta.get("name", "") or "")
    namespace = "" if cluster_scoped else str(meta.get("namespace") or default_namespace)
    source = Source(kind=kind, namespace=namespace, name=name, file=file, line=line, column=column)
    return KubeObject(
        api_version=str(body.get("apiVersion", "")),
        kind=kind,
        name=name,
        namespace=namespace,
        body=body,
        source=source,
        locate=locate,
    )
