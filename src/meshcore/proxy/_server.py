"""meshcore's gRPC server for node Envoys: ADS for configuration, ALS for access logs."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs

from ..compile import EnvoyPlan
from ._als import AlsServicer, FlowHub, FlowRecord, FlowSubscription
from ._errors import Nack, ProxyError
from ._journal import JOURNAL_MAX_BYTES, FlowJournal, NamesTable
from ._resources import ProxySettings, Resources, build_resources
from ._xds import AdsServer, NodeStatus


@attrs.frozen
class XdsEndpoint:
    """Where Envoy reaches the control plane: a Unix socket path, or host and port."""

    path: str | None = None
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, address: str) -> XdsEndpoint:
        """``unix:/path`` or ``host:port`` (``[v6]:port``)."""
        if address.startswith("unix:"):
            path = address.removeprefix("unix:").removeprefix("//")
            if not path.startswith("/"):
                raise ProxyError(f"control plane address {address!r}: give an absolute socket path (unix:/run/x.sock)")
            return cls(path=path)
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ProxyError(f"control plane address {address!r}: expected unix:/path or host:port")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ProxyError(f"control plane address {address!r}: the host must be an IP address") from None
        return cls(host=host, port=int(port))

    @property
    def grpc_target(self) -> str:
        """The form grpcio binds and dials."""
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def envoy_address(self) -> dict[str, Any]:
        """The endpoint as an Envoy ``config.core.v3.Address`` (JSON form)."""
        if self.path is not None:
            return {"pipe": {"path": self.path}}
        return {"socket_address": {"address": self.host, "port_value": self.port}}


class _Names(NamesTable):
    """Address → listener / workload lookups for access-log entries, per node, from its plan."""

    def __init__(self) -> None:
        super().__init__()
        self.journals: list[FlowJournal] = []

    def update(self, node: str, plan: EnvoyPlan) -> None:
        ports: dict[int, str] = {}
        workloads: dict[str, str] = {}
        for listener in plan.listeners:
            ports[listener.proxy_port] = listener.name
        for raw in plan.raw:
            if raw.proxy_port is not None:
                ports[raw.proxy_port] = raw.name
        for cluster in plan.clusters:
            for e in cluster.endpoints:
                if e.workload:
                    host = f"[{e.address}]" if ":" in e.address else e.address
                    workloads[f"{host}:{e.port}"] = e.workload
        before = self.data(node)
        self.set(node, ports, workloads)
        if self.data(node) != before:
            for journal in list(self.journals):
                journal.names_changed(node)


class ControlPlane:
    """The gRPC server node Envoys connect to (ADS and access logs), with per-node plans.

    ``address`` is ``unix:/path`` (reachable from any network namespace on the machine)
    or ``host:port`` (port 0 picks a free one). Use as a context manager, or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(self, address: str, *, max_workers: int = 64) -> None:
        self._requested = XdsEndpoint.parse(address)
        self._max_workers = max_workers
        self._server: Any = None
        self._endpoint: XdsEndpoint | None = None
        self.ads = AdsServer()
        self.flows = FlowHub()
        self._names = _Names()
        self._als = AlsServicer(self.flows, self._names)
        self._recorders: dict[int, Callable[[], None]] = {}

    @property
    def endpoint(self) -> XdsEndpoint:
        """The bound endpoint (with the actual port when 0 was asked for)."""
        if self._endpoint is None:
            raise ProxyError("the control plane is not started")
        return self._endpoint

    def start(self) -> ControlPlane:
        """Bind and serve; raises :class:`ProxyError` when the address cannot be bound."""
        import grpc
        from envoy.service.discovery.v3 import ads_pb2_grpc

        if self._server is not None:
            return self
        wanted = self._requested
        if wanted.path is not None:
            Path(wanted.path).parent.mkdir(parents=True, exist_ok=True)
            if os.path.exists(wanted.path):
                os.unlink(wanted.path)  # a socket left by a previous run; binding needs the name
        server = grpc.server(ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="meshcore-xds"))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.ads.servicer(), server)
        # Access logs arrive undecoded (see AlsServicer): the server does no per-request work.
        server.add_generic_rpc_handlers((self._als.handler(),))
        try:
            port = server.add_insecure_port(wanted.grpc_target)
        except RuntimeError as exc:
            raise ProxyError(f"cannot serve xDS on {wanted.grpc_target}: {exc}") from None
        if wanted.path is None and not port:
            raise ProxyError(f"cannot serve xDS on {wanted.grpc_target}: the address is in use or not local")
        self.ads.resume()
        server.start()
        self._server = server
        self._endpoint = wanted if wanted.path is not None else attrs.evolve(wanted, port=port)
        return self

    def stop(self, grace: float = 1.0) -> None:
        """End every stream and stop serving (a Unix socket file is removed)."""
        if self._server is None:
            return
        self.ads.stop()
        self.flows.close()
        for journal in self._names.journals:
            journal.close()
        self._server.stop(grace).wait()
        self._server = None
        if self._requested.path is not None and os.path.exists(self._requested.path):
            os.unlink(self._requested.path)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # --- plans ------------------------------------------------------------------------

    def set_plan(self, node: str, plan: EnvoyPlan, settings: ProxySettings | None = None) -> int:
        """Serve ``plan`` to ``node``'s Envoy; returns the snapshot version to wait for.

        The whole plan is converted first: a part Envoy's API cannot express raises
        :class:`ProxyConfigError` and the node keeps its previous snapshot.
        """
        resources = build_resources(plan, settings)
        version = self.ads.set_resources(node, resources)
        self._names.update(node, plan)
        return version

    def set_resources(self, node: str, resources: Resources) -> int:
        """Serve already-built resources to ``node``'s Envoy; returns the snapshot version."""
        return self.ads.set_resources(node, resources)

    def wait_synced(self, node: str, version: int | None = None, timeout: float = 10.0) -> None:
        """Block until ``node``'s Envoy acknowledged ``version``; see :meth:`AdsServer.wait_synced`."""
        self.ads.wait_synced(node, version, timeout)

    def status(self, node: str) -> NodeStatus:
        """What ``node``'s Envoy acknowledged, and what it rejected."""
        return self.ads.status(node)

    def nacks(self, node: str) -> tuple[Nack, ...]:
        """``node``'s recent rejections, oldest first."""
        return self.ads.nacks(node)

    def on_nack(self, callback: Callable[[Nack], None]) -> Callable[[], None]:
        """Call ``callback`` for every rejection; returns a remover."""
        return self.ads.on_nack(callback)

    # --- flows ------------------------------------------------------------------------

    def subscribe_flows(self, maxsize: int = 10_000) -> FlowSubscription:
        """L7 flows from every node's access log, from now on."""
        return self.flows.subscribe(maxsize)

    def on_flow(self, callback: Callable[[FlowRecord], None]) -> Callable[[], None]:
        """Call ``callback`` for every L7 flow; returns a remover."""
        return self.flows.on_flow(callback)

    def on_flow_data(self, callback: Callable[[list[dict[str, Any]]], None]) -> Callable[[], None]:
        """Call ``callback`` with each batch of L7 flows as plain JSON objects; returns a remover."""
        return self.flows.on_flow_data(callback)

    def on_flow_batch(self, callback: Callable[[str, bytes], None]) -> Callable[[], None]:
        """Call ``callback(node, message)`` with each ALS batch undecoded; see :meth:`FlowHub.on_flow_batch`."""
        return self.flows.on_flow_batch(callback)

    def record_flows(self, path: str | os.PathLike[str], max_bytes: int = JOURNAL_MAX_BYTES,
                     on_error: Callable[[OSError], None] | None = None) -> FlowJournal:
        """Append every ALS batch, undecoded, to the flow journal ``path`` (rotated to
        ``<path>.1`` beyond ``max_bytes``); read it with :class:`FlowJournalReader`.

        The journal also records each node's names (listeners, endpoint workloads) as its
        plan changes, so entries are resolved as they would have been when they arrived.
        """
        journal = FlowJournal(Path(path), self._names, max_bytes, on_error)
        for node in self._names.nodes():  # an existing file gets the names in force now
            journal.names_changed(node)
        self._names.journals.append(journal)
        self._recorders[id(journal)] = self.flows.on_flow_batch(journal.write_batch)
        return journal

    def stop_recording(self, journal: FlowJournal) -> None:
        """Stop appending to ``journal`` (from :meth:`record_flows`) and close it."""
        remove = self._recorders.pop(id(journal), None)
        if remove is not None:
            remove()
        if journal in self._names.journals:
            self._names.journals.remove(journal)
        journal.close()
