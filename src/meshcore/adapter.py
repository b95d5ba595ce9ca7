"""The adapter contract: how a control-plane API is translated into the meshcore model.

An adapter is an object with three attributes:

``name``
    A short unique name (``istio``, ``gateway``, ``envoycrd``, or your own); users disable
    adapters by this name with ``MESHCORE_DISABLE_ADAPTERS=name,other``.
``kinds``
    The :class:`ApiKind` pairs (apiVersion, kind) it handles. Every version an API still
    serves should be listed; an object whose kind no adapter handles is reported as
    unknown, naming the installed adapter that handles the same kind in another version
    when there is one.
``translate(objects, inventory) -> Fragment``
    Receives every input object of its kinds (already read, with sources and field
    positions) and the :class:`~meshcore.kube.Inventory` (namespaces, workloads, services
    from the core kinds). Returns a :class:`Fragment`: model objects plus diagnostics.
    It must be pure: no I/O, no global state. An object with an error contributes nothing
    (never half-translated) and yields an error diagnostic naming its source and field.
    Exceptions escaping ``translate`` are caught, reported against the adapter, and its
    whole fragment is discarded.

Adapters are published through the entry-point group ``meshcore.adapters``; the entry
point names either an adapter object or a zero-argument callable returning one::

    [project.entry-points."meshcore.adapters"]
    myapi = "myapi_meshcore:adapter"

A platform can also pass adapter objects directly to :func:`meshcore.translate`, or
register them in code with :func:`meshcore.registry.register`.

Adapters may import :mod:`meshcore.model`, :mod:`meshcore.kube` and this module only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from ._codes import TranslateCode
from .kube import Fields, FieldError, Inventory, KubeObject, field_diagnostic
from .model import (
    AuthorizationPolicy,
    Certificate,
    Diagnostic,
    Severity,
    Source,
    EnvoyConfig,
    PeerAuthentication,
    RequestAuthentication,
    RouteTable,
    Service,
    TlsTermination,
    TrafficPolicy,
    Workload,
)

GROUP = "meshcore.adapters"


@attrs.frozen(order=True)
class ApiKind:
    """An ``apiVersion``/``kind`` pair such as ``networking.istio.io/v1`` / ``VirtualService``."""

    api_version: str
    kind: str

    @property
    def group(self) -> str:
        """The API group ("" for the core group)."""
        return self.api_version.rpartition("/")[0]

    def __str__(self) -> str:
        return f"{self.kind}.{self.api_version}"


def _to_tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


@attrs.frozen
class ObjectStatus:
    """The status an adapter computed for one input object, ready to write back.

    ``status`` is the object's ``status`` stanza as the API defines it (for the Gateway
    API: ``conditions``, ``listeners``, ``parents`` with their reasons).
    """

    api_version: str
    kind: str
    namespace: str
    name: str
    status: Mapping[str, Any]
    source: Source = Source()


@attrs.frozen
class Fragment:
    """What an adapter contributes: model objects and diagnostics.

    ``services`` and ``workloads`` add to the inventory (e.g. ServiceEntry, WorkloadEntry).
    ``tls_terminations`` are where the node proxy terminates TLS; ``certificates`` are the
    ones they use (from :meth:`~meshcore.kube.Inventory.certificate`).
    """

    services: tuple[Service, ...] = attrs.field(default=(), converter=_to_tuple)
    workloads: tuple[Workload, ...] = attrs.field(default=(), converter=_to_tuple)
    routes: tuple[RouteTable, ...] = attrs.field(default=(), converter=_to_tuple)
    policies: tuple[AuthorizationPolicy, ...] = attrs.field(default=(), converter=_to_tuple)
    peer_authentications: tuple[PeerAuthentication, ...] = attrs.field(default=(), converter=_to_tuple)
    envoy_configs: tuple[EnvoyConfig, ...] = attrs.field(default=(), converter=_to_tuple)
    request_authentications: tuple[RequestAuthentication, ...] = attrs.field(default=(), converter=_to_tuple)
    traffic_policies: tuple[TrafficPolicy, ...] = attrs.field(default=(), converter=_to_tuple)
    certificates: tuple[Certificate, ...] = attrs.field(default=(), converter=_to_tuple)
    tls_terminations: tuple[TlsTermination, ...] = attrs.field(default=(), converter=_to_tuple)
    diagnostics: tuple[Diagnostic, ...] = attrs.field(default=(), converter=_to_tuple)
    statuses: tuple[ObjectStatus, ...] = attrs.field(default=(), converter=_to_tuple)


@runtime_checkable
class Adapter(Protocol):
    """The interface every adapter provides (see the module documentation)."""

    name: str
    kinds: Sequence[ApiKind]

    def translate(self, objects: Sequence[KubeObject], inventory: Inventory) -> Fragment:
        """Translate this adapter's objects into model fragments and diagnostics."""
        ...


def unsupported(adapter: str, objects: Sequence[KubeObject], what: str = "not yet supported") -> Fragment:
    """A fragment with one warning per object an adapter recognises but does not translate."""
    diagnostics = [
        Diagnostic(
            TranslateCode.NOT_SUPPORTED, Severity.WARNING,
            f"{o.kind}.{o.api_version} is recognised by adapter {adapter!r} but {what}; it has no effect",
            o.source, "kind",
        )
        for o in objects
    ]
    return Fragment(diagnostics=diagnostics)


__all__ = [
    "unsupported",
    "GROUP", "Adapter", "ApiKind", "ObjectStatus", "FieldError", "Fields", "Fragment", "Inventory",
    "KubeObject", "TranslateCode", "field_diagnostic",
]
