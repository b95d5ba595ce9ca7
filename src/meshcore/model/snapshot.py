"""The Snapshot: the whole mesh configuration, immutable, with a stable content hash."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from typing import Any

import attrs

from ._errors import ModelError
from ._serialize import to_data
from .authn import RequestAuthentication
from .envoy import EnvoyConfig
from .identity import Identity
from .namespace import Namespace
from .node import Node
from .policy import AuthorizationPolicy, PeerAuthentication
from .route import RouteTable
from .service import Service, ServiceRef
from .tls import Certificate, CertificateRef, TlsTermination
from .traffic import TrafficPolicy, resolve_traffic
from .workload import Workload


def _sorted(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(sorted(items))


def _unique(key: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
        seen: dict[Any, Any] = {}
        for i, item in enumerate(value):
            k = getattr(item, key)
            if k in seen:
                first = seen[k]
                raise ModelError(
                    f"{attribute.name}[{i}]",
                    f"duplicate {type(item).__name__} {k} (also defined at {first.source})",
                )
            seen[k] = item

    return check


def _by_key(items: Iterable[TrafficPolicy]) -> tuple[TrafficPolicy, ...]:
    return tuple(sorted(items, key=lambda p: p.key))


def _ns_name(obj: Any) -> tuple[str, str]:
    return (obj.namespace or "", obj.name)


@attrs.frozen
class Snapshot:
    """An immutable, validated configuration; collections are kept sorted.

    Two snapshots built from the same objects in any order are equal and have the same
    :attr:`content_hash`.
    """

    namespaces: tuple[Namespace, ...] = attrs.field(default=(), converter=_sorted, validator=_unique("name"))
    workloads: tuple[Workload, ...] = attrs.field(default=(), converter=_sorted, validator=_unique("ref"))
    services: tuple[Service, ...] = attrs.field(default=(), converter=_sorted, validator=_unique("ref"))
    routes: tuple[RouteTable, ...] = attrs.field(default=(), converter=_sorted)
    policies: tuple[AuthorizationPolicy, ...] = attrs.field(default=(), converter=_sorted)
    peer_authentications: tuple[PeerAuthentication, ...] = attrs.field(default=(), converter=_sorted)
    envoy_configs: tuple[EnvoyConfig, ...] = attrs.field(default=(), converter=_sorted)
    traffic_policies: tuple[TrafficPolicy, ...] = attrs.field(default=(), converter=_by_key, validator=_unique("key"))
    request_authentications: tuple[RequestAuthentication, ...] = attrs.field(default=(), converter=_sorted)
    nodes: tuple[Node, ...] = attrs.field(default=(), converter=_sorted, validator=_unique("name"))
    certificates: tuple[Certificate, ...] = attrs.field(default=(), converter=_sorted, validator=_unique("ref"))
    tls_terminations: tuple[TlsTermination, ...] = attrs.field(default=(), converter=_sorted, validator=_unique("key"))

    def __attrs_post_init__(self) -> None:
        known = {c.ref for c in self.certificates}
        for i, term in enumerate(self.tls_terminations):
            missing = [str(r) for r in term.certificates if r not in known]
            if missing:
                raise ModelError(f"tls_terminations[{i}]", f"TLS termination on {term.service}:{term.port} uses "
                                 f"certificate {', '.join(missing)}, which is not in the snapshot")

    @property
    def identities(self) -> tuple[Identity, ...]:
        """The distinct identities of all workloads, sorted."""
        return tuple(sorted({w.identity for w in self.workloads}))

    def node(self, name: str) -> Node | None:
        """The node with this name, if present."""
        return next((n for n in self.nodes if n.name == name), None)

    def service(self, ref: ServiceRef) -> Service | None:
        """The service with this reference, if present."""
        return self._service_index.get(ref)

    def traffic_policy(self, service: ServiceRef, port: int, subset: str = "") -> TrafficPolicy | None:
        """The traffic settings in force for ``subset`` of ``port`` of ``service`` (layered as Istio does)."""
        return resolve_traffic(self._traffic_index.get(service, ()), service, port, subset)

    def traffic_subsets(self, service: ServiceRef, port: int) -> tuple[str, ...]:
        """The subsets of ``service`` with a traffic policy that applies on ``port``, sorted."""
        return tuple(sorted({p.subset for p in self._traffic_index.get(service, ())
                             if p.subset and (p.port is None or p.port == port)}))

    def certificate(self, ref: CertificateRef) -> Certificate | None:
        """The certificate with this reference, if present."""
        return next((c for c in self.certificates if c.ref == ref), None)

    def terminations(self, service: ServiceRef, port: int) -> tuple[TlsTermination, ...]:
        """The TLS terminations on ``port`` of ``service``: those naming server names first (sorted), the catch-all last."""
        found = [t for t in self.tls_terminations if t.service == service and t.port == port]
        return tuple(sorted(found, key=lambda t: (not t.hostnames, t.hostnames)))

    @functools.cached_property
    def _traffic_index(self) -> dict[ServiceRef, list[TrafficPolicy]]:
        index: dict[ServiceRef, list[TrafficPolicy]] = {}
        for p in self.traffic_policies:
            index.setdefault(p.service, []).append(p)
        return index

    @functools.cached_property
    def _service_index(self) -> dict[ServiceRef, Service]:
        return {s.ref: s for s in self.services}

    @functools.cached_property
    def content_hash(self) -> str:
        """SHA-256 over the canonical content, ignoring sources and input order."""
        data = json.dumps(to_data(self, with_sources=False), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(data.encode()).hexdigest()

    def to_data(self, *, with_sources: bool = True) -> dict[str, Any]:
        """The snapshot as JSON-compatible data."""
        result: dict[str, Any] = to_data(self, with_sources=with_sources)
        return result
