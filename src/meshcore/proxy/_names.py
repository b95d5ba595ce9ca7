"""What a node's access log does not say, per node: names of proxy ports, addresses and policies.

Access-log entries carry addresses and ports only. A :class:`NamesTable` resolves them
(it is the decoders' :class:`~meshcore.proxy._als.Resolver`) from tables in a plain JSON
form, so whoever stores raw entries can store the tables in force beside them:

- ``listeners``: proxy port → listener (``<ns>/<svc>:<port>``);
- ``endpoints``: ``ip:port`` (``[v6]:port``) of a cluster endpoint → ``ns/name`` of its workload;
- ``policies``: authorization policy ``ns/name`` → where it was written;
- ``peers``: a workload address → ``[ns/name, identity, namespace]`` (filled by the node
  agent from the policy plan; the control plane alone does not know identities).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import attrs

from ..compile import EnvoyPlan, EnvoyRbac
from ..model import WorkloadRef
from ..observe import Peer

__all__ = ["TABLES", "NamesTable", "plan_names"]

#: The tables a node's names hold (see the module docstring).
TABLES = ("listeners", "endpoints", "policies", "peers")


def _workload(text: object) -> WorkloadRef | None:
    namespace, sep, name = str(text or "").partition("/")
    return WorkloadRef(namespace, name) if sep and namespace and name else None


def _host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


@attrs.frozen
class _Tables:
    """One node's tables, parsed for lookups (replaced whole, never changed in place)."""

    data: Mapping[str, Any]
    listeners: Mapping[int, str]
    endpoints: Mapping[tuple[str, int], WorkloadRef]
    policies: Mapping[str, str]
    peers: Mapping[str, tuple[WorkloadRef | None, int, str]]

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> _Tables:
        """Tables from their JSON form; entries that do not parse are left out."""
        def table(name: str) -> Mapping[str, Any]:
            value = data.get(name)
            return value if isinstance(value, Mapping) else {}

        endpoints: dict[tuple[str, int], WorkloadRef] = {}
        for address, workload in table("endpoints").items():
            key, ref = _host_port(str(address)), _workload(workload)
            if key is not None and ref is not None:
                endpoints[key] = ref
        peers: dict[str, tuple[WorkloadRef | None, int, str]] = {}
        for address, peer in table("peers").items():
            if isinstance(peer, list) and len(peer) == 3 and isinstance(peer[1], int):
                peers[str(address)] = (_workload(peer[0]), peer[1], str(peer[2]))
        return cls(
            {name: dict(table(name)) for name in TABLES},
            {int(k): str(v) for k, v in table("listeners").items() if str(k).isdigit()},
            endpoints, {str(k): str(v) for k, v in table("policies").items()}, peers)


_EMPTY = _Tables.parse({})


class NamesTable:
    """Per node, the tables access-log entries are resolved with (a decoder's ``Resolver``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, _Tables] = {}

    def update(self, node: str, tables: Mapping[str, Any]) -> bool:
        """Replace the tables of ``node`` that ``tables`` (JSON form) gives; True when anything changed."""
        with self._lock:
            before = self._nodes.get(node, _EMPTY)
            merged = {**before.data, **{k: v for k, v in tables.items() if k in TABLES}}
            if merged == before.data:
                return False
            self._nodes[node] = _Tables.parse(merged)
            return True

    def nodes(self) -> list[str]:
        """The nodes with tables."""
        with self._lock:
            return sorted(self._nodes)

    def data(self, node: str) -> dict[str, Any]:
        """Every table of ``node`` in JSON form."""
        with self._lock:
            return dict(self._nodes.get(node, _EMPTY).data)

    def listener(self, node: str, port: int) -> str:
        """The listener served on ``node``'s proxy port ``port``, or ``""``."""
        return self._nodes.get(node, _EMPTY).listeners.get(port, "")

    def peer(self, node: str, address: str, port: int) -> Peer:
        """The endpoint or workload at ``address``/``port`` of ``node``, with its identity when known."""
        tables = self._nodes.get(node, _EMPTY)
        endpoint = tables.endpoints.get((address, port))
        known = tables.peers.get(address)
        if known is not None:
            workload, identity, namespace = known
            workload = endpoint or workload
            return Peer(address, port, workload, workload.namespace if workload else namespace, identity)
        if endpoint is not None:
            return Peer(address, port, endpoint, endpoint.namespace)
        return Peer(address, port)

    def policy_source(self, node: str, policy: str) -> str:
        """Where ``node``'s authorization policy ``ns/name`` was written, or ``""``."""
        return self._nodes.get(node, _EMPTY).policies.get(policy, "")


def _policy_sources(filters: tuple[EnvoyRbac, ...], into: dict[str, str]) -> None:
    for rbac in filters:
        for policy in rbac.policies:
            source = policy.origins[0].source if policy.origins else None
            if source is not None and (source.location or source.object_ref):
                # RBAC policies are named <ns>/<policy>[<rule>]; a denial's details name that.
                into.setdefault(policy.name.partition("[")[0], str(source))


def plan_names(plan: EnvoyPlan) -> dict[str, Any]:
    """The ``listeners``, ``endpoints`` and ``policies`` tables of an Envoy plan, in JSON form."""
    listeners: dict[str, str] = {}
    endpoints: dict[str, str] = {}
    policies: dict[str, str] = {}
    for listener in plan.listeners:
        listeners[str(listener.proxy_port)] = listener.name
        _policy_sources(listener.rbac, policies)
        for chain in listener.tcp:
            _policy_sources(chain.rbac, policies)
    if plan.tunnel is not None:  # the tunnels refuse what clients' egress policies refuse
        for workload in plan.tunnel.workloads:
            for refusal in workload.egress:
                if refusal.source.location or refusal.source.object_ref:
                    policies.setdefault(refusal.policy.partition("[")[0], str(refusal.source))
    for raw in plan.raw:
        if raw.proxy_port is not None:
            listeners[str(raw.proxy_port)] = raw.name
    for cluster in plan.clusters:
        for e in cluster.endpoints:
            if e.workload:
                host = f"[{e.address}]" if ":" in e.address else e.address
                endpoints[f"{host}:{e.port}"] = e.workload
    return {"listeners": listeners, "endpoints": endpoints, "policies": policies}
