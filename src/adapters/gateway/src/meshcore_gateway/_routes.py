"""The parsed form shared by every route kind: parents, hostnames, rules, age."""

from __future__ import annotations

import attrs

from meshcore.kube import KubeObject
from meshcore.model import HttpMatch

from ._common import Meta
from ._filters import FilterSet, Timing
from ._refs import BackendRef, ParentRef

#: Route kinds carried at L7 (HTTP/gRPC tables); the others (TCP/TLS/UDP) are L4.
L7_KINDS = ("HTTPRoute", "GRPCRoute")
#: Route kinds on one Service port in mesh precedence order (GEP-1426): the first present wins.
MESH_KIND_ORDER = ("GRPCRoute", "HTTPRoute", "TLSRoute", "TCPRoute")


@attrs.frozen
class L7Rule:
    """One HTTPRoute or GRPCRoute rule: matches (OR), filters, backends, timing."""

    index: int
    matches: tuple[HttpMatch, ...]
    filters: FilterSet
    backends: tuple[BackendRef, ...]
    timing: Timing = Timing()
    name: str | None = None

    @property
    def path(self) -> str:
        """The input path of this rule."""
        return f"spec.rules[{self.index}]"


@attrs.frozen
class L4Rule:
    """One TCPRoute, TLSRoute or UDPRoute rule: weighted backends."""

    index: int
    backends: tuple[BackendRef, ...]
    name: str | None = None

    @property
    def path(self) -> str:
        """The input path of this rule."""
        return f"spec.rules[{self.index}]"


@attrs.frozen
class RouteSpec:
    """A route read and validated, before it is attached to any parent."""

    obj: KubeObject = attrs.field(eq=False)
    kind: str
    namespace: str
    name: str
    meta: Meta
    hostnames: tuple[str, ...]
    parents: tuple[ParentRef, ...]
    http: tuple[L7Rule, ...] = ()
    tcp: tuple[L4Rule, ...] = ()

    @property
    def is_l7(self) -> bool:
        """True for HTTPRoute and GRPCRoute."""
        return self.kind in L7_KINDS

    @property
    def is_grpc(self) -> bool:
        """True for GRPCRoute."""
        return self.kind == "GRPCRoute"

    @property
    def order_key(self) -> tuple[tuple[int, float], str, str]:
        """Route precedence on ties: the oldest first, then ``namespace/name`` alphabetically."""
        return (self.meta.age_key, self.namespace, self.name)

    @property
    def ref(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"
