"""Backend references → weighted model destinations, or the reason they cannot be resolved.

An unresolvable backend keeps its weight: that share of the traffic is answered with an
error instead of being redistributed (as the Gateway API requires). The reasons are the
standard ``ResolvedRefs`` reasons of route status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from meshcore.kube import Inventory
from meshcore.model import Destination, ServiceRef

from ._backendtls import SUBSET, BackendTls, applicable
from ._common import GATEWAY_GROUP
from ._referencegrant import ReferenceGrants
from ._refs import BackendRef

REF_NOT_PERMITTED = "RefNotPermitted"
BACKEND_NOT_FOUND = "BackendNotFound"
INVALID_KIND = "InvalidKind"
UNSUPPORTED_PROTOCOL = "UnsupportedProtocol"


@attrs.frozen
class Failure:
    """Why one backend reference is invalid, in the words of the route status."""

    path: str
    reason: str
    message: str
    #: What happens to the traffic because of it (for diagnostics).
    effect: str = ""


@attrs.frozen
class BackendContext:
    """What resolving depends on: who refers (route kind/namespace), mesh or Gateway, grants.

    Mesh routes may refer to Services in any namespace without a ReferenceGrant (GEP-1426);
    Gateway-bound routes need one for every cross-namespace backend.
    """

    inventory: Inventory
    grants: ReferenceGrants
    route_kind: str
    route_namespace: str
    mesh: bool
    #: What BackendTLSPolicies ask for each Service (namespace, name): TLS, or a problem.
    tls_backends: Mapping[tuple[str, str], Sequence[BackendTls]] = attrs.field(factory=dict)


def resolve(ref: BackendRef, ctx: BackendContext) -> Destination | Failure:
    """The destination of one backend reference, or why it is invalid."""
    if not ref.is_service:
        return Failure(ref.path, INVALID_KIND, f"backend {ref.label} is not a Service (only core Services are "
                       "supported)")
    if not ctx.mesh and not ctx.grants.allows(GATEWAY_GROUP, ctx.route_kind, ctx.route_namespace,
                                              "", "Service", ref.namespace, ref.name):
        return Failure(ref.path, REF_NOT_PERMITTED,
                       f"backend {ref.label}: no ReferenceGrant in namespace {ref.namespace} allows "
                       f"{ctx.route_kind}s from namespace {ctx.route_namespace} to refer to it")
    service = ctx.inventory.service(ref.namespace, ref.name)
    if service is None:
        return Failure(ref.path, BACKEND_NOT_FOUND, f"backend Service {ref.namespace}/{ref.name} not found")
    assert ref.port is not None
    if not any(p.port == ref.port for p in service.ports):
        known = ", ".join(str(p.port) for p in service.ports) or "none"
        return Failure(ref.path, BACKEND_NOT_FOUND,
                       f"backend Service {ref.namespace}/{ref.name} has no port {ref.port} (ports: {known})")
    tls = applicable(ctx.tls_backends, ref.namespace, ref.name, ref.port)
    if tls is not None and ctx.mesh:
        return Failure(ref.path, UNSUPPORTED_PROTOCOL,
                       f"backend {ref.label}: a BackendTLSPolicy asks for TLS to this Service, which meshcore "
                       "originates for Gateway routes only; mesh routes to it fail closed")
    if tls is not None and tls.problem:
        return Failure(ref.path, UNSUPPORTED_PROTOCOL, f"backend {ref.label}: its BackendTLSPolicy cannot be "
                       f"applied ({tls.problem}), so it is not sent plaintext")
    filters = ref.filters
    if ref.has_filters and (filters is None or filters.unsupported):
        kinds = ", ".join(filters.unsupported) if filters is not None else "its filters"
        return Failure(f"{ref.path}.filters", UNSUPPORTED_PROTOCOL,
                       f"backend {ref.label}: {kinds} on a backendRef {'is' if kinds.count(',') == 0 else 'are'} "
                       "not supported (only RequestHeaderModifier and ResponseHeaderModifier are)")
    subset = SUBSET if tls is not None else ""
    if filters is not None:
        return Destination(ServiceRef(ref.namespace, ref.name), ref.port, ref.weight, subset=subset,
                           request_headers=filters.request_headers, response_headers=filters.response_headers)
    return Destination(ServiceRef(ref.namespace, ref.name), ref.port, ref.weight, subset=subset)


@attrs.frozen
class Resolved:
    """The outcome of a rule's backend references."""

    destinations: tuple[Destination, ...]
    #: Total weight of the invalid references (their share gets an error).
    invalid_weight: int
    failures: tuple[Failure, ...]

    @property
    def total_weight(self) -> int:
        """Weight of valid and invalid references together."""
        return sum(d.weight for d in self.destinations) + self.invalid_weight


def resolve_all(refs: Sequence[BackendRef], ctx: BackendContext) -> Resolved:
    """Resolve a rule's backend references, keeping the weight of the invalid ones."""
    destinations: list[Destination] = []
    failures: list[Failure] = []
    invalid = 0
    total = sum(ref.weight for ref in refs)
    for ref in refs:
        result = resolve(ref, ctx)
        if isinstance(result, Failure):
            if not ref.weight:
                effect = "it has weight 0, so no traffic is affected"
            elif ref.weight == total:
                effect = "all traffic of the rule is answered with an error"
            else:
                effect = f"its share (weight {ref.weight} of {total}) is answered with an error"
            failures.append(attrs.evolve(result, effect=effect))
            invalid += ref.weight
        else:
            destinations.append(result)
    return Resolved(tuple(destinations), invalid, tuple(failures))
