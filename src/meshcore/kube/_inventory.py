"""The inventory: namespaces, workloads and services from the core Kubernetes kinds."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping

import attrs

from ..model import AuthorizationPolicy, Certificate, Namespace, Node, Service, ServiceRef, Workload, WorkloadRef
from ._secret import TlsSecret


def _namespaces(value: Iterable[Namespace]) -> tuple[Namespace, ...]:
    return tuple(value)


def _workloads(value: Iterable[Workload]) -> tuple[Workload, ...]:
    return tuple(value)


def _services(value: Iterable[Service]) -> tuple[Service, ...]:
    return tuple(value)


def _accounts(value: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(value)


@attrs.frozen
class Inventory:
    """What every adapter needs to resolve references: namespaces, workloads, services."""

    namespaces: tuple[Namespace, ...] = attrs.field(default=(), converter=_namespaces)
    workloads: tuple[Workload, ...] = attrs.field(default=(), converter=_workloads)
    services: tuple[Service, ...] = attrs.field(default=(), converter=_services)
    #: Service accounts as (namespace, name) pairs, for diagnostics about principals.
    service_accounts: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_accounts)
    #: Policies of core kinds (NetworkPolicy), in input order.
    policies: tuple[AuthorizationPolicy, ...] = ()
    #: Nodes (v1 Node objects), sorted by name.
    nodes: tuple[Node, ...] = ()
    #: Secrets as certificate sources (usable or not), in input order.
    tls_secrets: tuple[TlsSecret, ...] = ()
    #: CA bundles (PEM) of ConfigMaps with a ``ca.crt``, by (namespace, name).
    ca_bundles: tuple[tuple[tuple[str, str], str], ...] = ()

    @functools.cached_property
    def _secrets(self) -> dict[tuple[str, str], TlsSecret]:
        return {(s.namespace, s.name): s for s in self.tls_secrets}

    def certificate(self, namespace: str, name: str) -> tuple[Certificate | None, str]:
        """The certificate of Secret ``namespace/name``, or ``None`` and why it cannot serve (no key material)."""
        found = self._secrets.get((namespace, name))
        if found is None:
            return None, f"Secret {namespace}/{name} not found"
        return found.certificate, found.problem

    @functools.cached_property
    def _bundles(self) -> dict[tuple[str, str], str]:
        return dict(self.ca_bundles)

    def ca_bundle(self, namespace: str, name: str) -> str | None:
        """The ``ca.crt`` PEM of ConfigMap ``namespace/name``, if it has one."""
        return self._bundles.get((namespace, name))

    @functools.cached_property
    def _namespaces(self) -> dict[str, Namespace]:
        return {n.name: n for n in self.namespaces}

    @functools.cached_property
    def _workloads(self) -> dict[WorkloadRef, Workload]:
        return {w.ref: w for w in self.workloads}

    @functools.cached_property
    def _by_label(self) -> dict[tuple[str, str], list[Workload]]:
        # (label key, value) → workloads, so selectors do not scan every workload.
        index: dict[tuple[str, str], list[Workload]] = defaultdict(list)
        for w in self.workloads:
            for item in w.labels.items():
                index[item].append(w)
        return dict(index)

    @functools.cached_property
    def _accounts(self) -> frozenset[tuple[str, str]]:
        return frozenset(self.service_accounts)

    @functools.cached_property
    def _positions(self) -> dict[ServiceRef, int]:
        return {s.ref: i for i, s in enumerate(self.services)}

    def replacing_services(self, services: Iterable[Service]) -> Inventory:
        """This inventory with each of ``services`` in place of the service of the same reference.

        Every reference must name a service of this inventory; the other lookups carry over.
        """
        replaced = {s.ref: s for s in services}
        positions = self._positions
        items = list(self.services)
        for ref, service in replaced.items():
            items[positions[ref]] = service
        derived = attrs.evolve(self, services=tuple(items))
        object.__setattr__(derived, "_positions", positions)  # the same references in the same places
        for name in ("_namespaces", "_workloads", "_by_label", "_accounts"):
            try:
                object.__setattr__(derived, name, object.__getattribute__(self, name))
            except AttributeError:
                pass  # not computed yet: it will be, on first use
        return derived

    def service(self, namespace: str, name: str) -> Service | None:
        """The service ``namespace/name``, if present."""
        i = self._positions.get(ServiceRef(namespace, name))
        return None if i is None else self.services[i]

    def namespace(self, name: str) -> Namespace | None:
        """The namespace with this name, if declared or implied by other objects."""
        return self._namespaces.get(name)

    def workload(self, namespace: str, name: str) -> Workload | None:
        """The workload ``namespace/name``, if present."""
        return self._workloads.get(WorkloadRef(namespace, name))

    def has_service_account(self, namespace: str, name: str) -> bool:
        """True when the service account exists (every namespace has ``default``)."""
        return (namespace, name) in self._accounts

    def workloads_matching(self, namespace: str | None, selector: Mapping[str, str]) -> list[Workload]:
        """Workloads in ``namespace`` (any when ``None``) whose labels include ``selector``.

        An empty selector matches every workload (of the namespace), as in Kubernetes.
        """
        if not selector:
            return [w for w in self.workloads if namespace is None or w.namespace == namespace]
        smallest: list[Workload] | None = None
        for item in selector.items():
            candidates = self._by_label.get(item)
            if not candidates:
                return []
            if smallest is None or len(candidates) < len(smallest):
                smallest = candidates
        assert smallest is not None
        return [
            w for w in smallest
            if (namespace is None or w.namespace == namespace) and w.labels.matches(selector)
        ]
