"""Route references: ``parentRefs`` (Gateways and, for the mesh, Services) and ``backendRefs``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from meshcore.kube import FieldCode, FieldError, Fields

from ._codes import GatewayCode
from ._common import GATEWAY_GROUP

#: API group spellings that mean the core group (``core`` is accepted for parentRefs).
CORE_GROUPS = ("", "core")


@attrs.frozen
class ParentRef:
    """One ``parentRefs`` entry with the API defaults applied."""

    index: int
    group: str
    kind: str
    namespace: str
    name: str
    section_name: str | None
    port: int | None
    #: The entry as written (with defaulted group/kind), echoed in the route status.
    echo: Mapping[str, Any] = attrs.field(eq=False)

    @property
    def path(self) -> str:
        """The input path of this entry."""
        return f"spec.parentRefs[{self.index}]"

    @property
    def is_service(self) -> bool:
        """True for a Service parent: a mesh (GAMMA) route."""
        return self.group in CORE_GROUPS and self.kind == "Service"

    @property
    def is_gateway(self) -> bool:
        """True for a Gateway parent."""
        return self.group == GATEWAY_GROUP and self.kind == "Gateway"


def read_parent_refs(spec: Fields, route_namespace: str) -> list[ParentRef]:
    """Read ``spec.parentRefs`` (group defaults to the Gateway API group, kind to Gateway)."""
    refs = []
    seen: dict[tuple[str, str, str, str, str | None, int | None], str] = {}
    for i, entry in enumerate(spec.maps("parentRefs")):
        group = entry.str("group", GATEWAY_GROUP)
        kind = entry.str("kind", "Gateway")
        name = entry.req_str("name")
        namespace = entry.str("namespace") or route_namespace
        section = entry.str("sectionName") or None
        port = entry.port("port")
        assert group is not None and kind is not None
        key = (group, kind, namespace, name, section, port)
        if key in seen:
            raise FieldError(entry.path, f"duplicates {seen[key]}: parentRefs to one parent must differ "
                             "in sectionName or port", GatewayCode.INVALID_VALUE)
        seen[key] = entry.path
        echo: dict[str, Any] = {"group": group, "kind": kind}
        if entry.has("namespace"):
            echo["namespace"] = namespace
        echo["name"] = name
        if section:
            echo["sectionName"] = section
        if port is not None:
            echo["port"] = port
        refs.append(ParentRef(i, group, kind, namespace, name, section, port, echo))
    return refs


@attrs.frozen
class BackendRef:
    """One ``backendRefs`` entry (or a mirror's ``backendRef``) with defaults applied."""

    path: str
    group: str
    kind: str
    namespace: str
    name: str
    port: int | None
    weight: int
    #: True when the entry carries its own (backend-level) filters.
    has_filters: bool = False
    #: Those filters, read where the route kind is known (a ``BackendFilters``); None: not read.
    filters: Any = attrs.field(default=None, eq=False)

    @property
    def is_service(self) -> bool:
        """True for a core Service reference."""
        return self.group in CORE_GROUPS and self.kind == "Service"

    @property
    def label(self) -> str:
        """``Kind namespace/name`` (with the port when set), for messages."""
        port = f":{self.port}" if self.port is not None else ""
        group = f".{self.group}" if self.group not in CORE_GROUPS else ""
        return f"{self.kind}{group} {self.namespace}/{self.name}{port}"


def read_backend_ref(entry: Fields, route_namespace: str, *, weighted: bool = True) -> BackendRef:
    """Read a backend reference; a Service reference needs a port (as the API validates)."""
    group = entry.str("group", "") or ""
    kind = entry.str("kind", "Service") or "Service"
    name = entry.req_str("name")
    namespace = entry.str("namespace") or route_namespace
    port = entry.port("port")
    if group in CORE_GROUPS and kind == "Service" and port is None:
        raise FieldError(f"{entry.path}.port", "required when referring to a Service", FieldCode.MISSING)
    weight = entry.int("weight", 1, minimum=0, maximum=1_000_000) if weighted else 1
    assert weight is not None
    return BackendRef(entry.path, group, kind, namespace, name, port, weight,
                      has_filters=bool(entry.list("filters")))
