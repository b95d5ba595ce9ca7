"""The Snapshot: the whole mesh configuration, immutable, with a stable content hash."""

from __future__ import annotations

import functools
import hashlib
import json
import weakref
from collections.abc import Iterable
from typing import Any

import attrs

from ._errors import ModelError
from ._gc import gc_paused
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
from .workload import Workload, WorkloadRef


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


#: Object digests per chunk of the content hash.
_CHUNK = 256


@attrs.frozen
class _Chunk:
    """The digests of up to :data:`_CHUNK` consecutive objects of a collection, and theirs together."""

    items: tuple[bytes, ...]
    digest: bytes

    @classmethod
    def of(cls, items: tuple[bytes, ...]) -> _Chunk:
        return cls(items, hashlib.sha256(b"".join(items)).digest())


def _digest(item: Any) -> bytes:
    """SHA-256 of one object's canonical content (sources left out)."""
    data = json.dumps(to_data(item, with_sources=False), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).digest()


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
        i = self._service_positions.get(ref)
        return None if i is None else self.services[i]

    def workload(self, ref: WorkloadRef) -> Workload | None:
        """The workload with this reference, if present."""
        return self._workload_index.get(ref)

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
    def _workload_index(self) -> dict[WorkloadRef, Workload]:
        return {w.ref: w for w in self.workloads}

    @functools.cached_property
    def content_hash(self) -> str:
        """SHA-256 over the canonical content, ignoring sources and input order.

        It is built from a digest per object (hashed in chunks per collection), so a
        snapshot derived with :meth:`replacing_services` hashes only the services it
        replaced and the chunks holding them.
        """
        whole = hashlib.sha256()
        for name in _COLLECTIONS:
            chunks = self._digests[name]
            whole.update(f"{name}:{sum(len(c.items) for c in chunks)}:".encode())
            whole.update(hashlib.sha256(b"".join(c.digest for c in chunks)).digest())
        return whole.hexdigest()

    @functools.cached_property
    def _digests(self) -> dict[str, tuple[_Chunk, ...]]:
        """Per collection, the digests of its objects' canonical content, in chunks of :data:`_CHUNK`."""
        with gc_paused():
            out = {}
            for name in _COLLECTIONS:
                items = tuple(_digest(item) for item in getattr(self, name))
                out[name] = tuple(_Chunk.of(items[i:i + _CHUNK]) for i in range(0, len(items), _CHUNK))
            return out

    @functools.cached_property
    def _service_positions(self) -> dict[ServiceRef, int]:
        return {s.ref: i for i, s in enumerate(self.services)}

    @functools.cached_property
    def _lineage(self) -> tuple[weakref.ReferenceType[Snapshot], frozenset[ServiceRef]] | None:
        """The snapshot this one was derived from by :meth:`replacing_services`, and the services replaced."""
        return None

    def replacing_services(self, services: Iterable[Service]) -> Snapshot:
        """This snapshot with each of ``services`` in place of the service of the same reference.

        Every reference must name a service of this snapshot. Nothing else is copied or
        re-validated, so the cost is that of the services replaced (plus copying the
        tuple of references); :meth:`replaced_since` tells a later stage what changed.
        """
        replaced = {s.ref: s for s in services}
        positions = self._service_positions
        missing = [str(ref) for ref in replaced if ref not in positions]
        if missing:
            raise ModelError("services", f"no service {', '.join(sorted(missing))} to replace")
        items = list(self.services)
        chunks = list(self._digests["services"])
        touched: dict[int, list[bytes]] = {}
        for ref, service in replaced.items():
            i = positions[ref]
            items[i] = service
            chunk = touched.setdefault(i // _CHUNK, list(chunks[i // _CHUNK].items))
            chunk[i % _CHUNK] = _digest(service)
        for c, digests in touched.items():
            chunks[c] = _Chunk.of(tuple(digests))
        derived = _trusted(self, services=tuple(items))
        # What does not depend on the services' content carries over (computing it is a pass over everything).
        for name in ("_workload_index", "_traffic_index"):
            value = _computed(self, name)
            if value is not None:
                object.__setattr__(derived, name, value)
        object.__setattr__(derived, "_service_positions", positions)  # the same references in the same places
        object.__setattr__(derived, "_digests", {**self._digests, "services": tuple(chunks)})
        object.__setattr__(derived, "_lineage", (weakref.ref(self), frozenset(replaced)))
        return derived

    def replaced_since(self, base: Snapshot) -> frozenset[ServiceRef] | None:
        """The services replaced when this snapshot was derived from ``base``; None when it was not."""
        lineage = self._lineage
        if lineage is None or lineage[0]() is not base:
            return None
        return lineage[1]

    def to_data(self, *, with_sources: bool = True) -> dict[str, Any]:
        """The snapshot as JSON-compatible data."""
        result: dict[str, Any] = to_data(self, with_sources=with_sources)
        return result


#: The Snapshot's collections, in the order the content hash covers them.
_COLLECTIONS = tuple(f.name for f in attrs.fields(Snapshot))


def _computed(snapshot: Snapshot, name: str) -> Any:
    """A cached property's value when it was computed already, else None (never computes it)."""
    try:
        return object.__getattribute__(snapshot, name)
    except AttributeError:
        return None


def _trusted(base: Snapshot, **changes: Any) -> Snapshot:
    """A copy of ``base`` with ``changes``, which must already be sorted and valid (nothing is re-checked)."""
    derived = object.__new__(Snapshot)
    for name in _COLLECTIONS:
        object.__setattr__(derived, name, changes.get(name, getattr(base, name)))
    return derived
