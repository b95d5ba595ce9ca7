"""Provenance: where a model object came from."""

from __future__ import annotations

import attrs

#: How a finding without a file or an object is placed: it is about the input as a whole.
NO_SOURCE = "<input>"


@attrs.frozen(order=True)
class Source:
    """The input location and Kubernetes object that produced a model object.

    ``file``/``line``/``column`` are set for objects read from files (1-based line and
    column); ``kind``/``namespace``/``name`` name the input object.
    """

    kind: str = ""
    namespace: str = ""
    name: str = ""
    file: str = ""
    line: int = 0
    column: int = 0

    @property
    def object_ref(self) -> str:
        """``Kind namespace/name`` (or ``Kind name`` for cluster-scoped objects)."""
        name = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {name}".strip()

    @property
    def location(self) -> str:
        """``file:line`` when known, else the empty string."""
        if not self.file:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        parts = [p for p in (self.location, self.object_ref) if p]
        return " ".join(parts) if parts else NO_SOURCE


UNKNOWN = Source()
