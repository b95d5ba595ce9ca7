"""meshcore's gRPC server for node Envoys: ADS for configuration, ALS for access logs; access-log files followed."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import attrs

from ..compile import EnvoyPlan, EnvoySecret, SidecarPlan
from ..observe import Flow
from ._access_file import AccessLogFollower
from ._als import AlsServicer
from ._flowhub import FlowHub, FlowSubscription
from ._errors import Nack, ProxyError
from ._names import NamesTable, plan_names
from ._resources import ProxySettings, Resources, build_resources
from ._xds import AdsServer, NodeStatus
from ._xds_sidecar import sidecar_resources


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


class FlowRecorder(Protocol):
    """Stores a control plane's access logs undecoded: every ALS batch and chunk of access-log
    lines, and each node's names as they change."""

    def add_batch(self, node: str, raw: bytes) -> None:
        """One serialized ``StreamAccessLogsMessage`` of ``node``'s Envoy, as Envoy sent it."""

    def add_lines(self, node: str, lines: bytes) -> None:
        """Whole lines of ``node``'s access-log file, as Envoy wrote them."""

    def names_changed(self, node: str, names: Mapping[str, Any]) -> None:
        """``node``'s names (JSON form, see :class:`NamesTable`) from now on, until the next change."""


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
        self._names = NamesTable()
        self._als = AlsServicer(self.flows, self._names)
        self._recorders: list[FlowRecorder] = []
        self._followers: dict[str, AccessLogFollower] = {}

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
        """End every stream, read what access-log files hold, and stop serving (a Unix socket file is removed)."""
        for node in list(self._followers):
            self.unfollow_access_log(node)
        if self._server is None:
            return
        self.ads.stop()
        self.flows.close()
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
        names = plan_names(plan)
        # Recorded before Envoy can log a request through the new plan.
        if self._names.update(node, names):
            for recorder in list(self._recorders):
                recorder.names_changed(node, names)
        return self.ads.set_resources(node, resources)

    def set_sidecar(self, plan: SidecarPlan, secrets: tuple[EnvoySecret, ...] = (),
                    settings: ProxySettings | None = None) -> int:
        """Serve a workload's sidecar its resources (on its own node id, :attr:`SidecarPlan.node_id`); the version.

        ``secrets`` are its SVID and trust bundle; ``settings`` the node's (access logs, timeouts).
        """
        resources = sidecar_resources(plan, secrets, settings)
        names = plan_names(EnvoyPlan(listeners=plan.inbound, clusters=plan.clusters))
        if self._names.update(plan.node_id, names):
            for recorder in list(self._recorders):
                recorder.names_changed(plan.node_id, names)
        return self.ads.set_resources(plan.node_id, resources)

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

    def on_flow(self, callback: Callable[[Flow], None]) -> Callable[[], None]:
        """Call ``callback`` for every L7 flow; returns a remover."""
        return self.flows.on_flow(callback)

    def on_flow_batch(self, callback: Callable[[str, bytes], None]) -> Callable[[], None]:
        """Call ``callback(node, message)`` with each ALS batch undecoded; see :meth:`FlowHub.on_flow_batch`."""
        return self.flows.on_flow_batch(callback)

    def on_flow_lines(self, callback: Callable[[str, bytes], None]) -> Callable[[], None]:
        """Call ``callback(node, lines)`` with each chunk of access-log lines; see :meth:`FlowHub.on_flow_lines`."""
        return self.flows.on_flow_lines(callback)

    def record_flows(self, recorder: FlowRecorder) -> Callable[[], None]:
        """Hand every ALS batch and chunk of access-log lines, undecoded, to ``recorder``, with
        each node's names first and on every change, so the entries can be resolved later as
        they would have been when they arrived; returns a function that stops recording.

        :class:`meshcore.agent.FlowJournal` is such a recorder (a bounded file read back
        as :class:`~meshcore.observe.Flow`); :func:`decode_batch` and :func:`decode_lines`
        decode what it stored.
        """
        for node in self._names.nodes():
            recorder.names_changed(node, self._names.data(node))
        self._recorders.append(recorder)
        remove_batches = self.flows.on_flow_batch(recorder.add_batch)
        remove_lines = self.flows.on_flow_lines(recorder.add_lines)

        def stop() -> None:
            remove_batches()
            remove_lines()
            if recorder in self._recorders:
                self._recorders.remove(recorder)
        return stop

    def follow_access_log(self, node: str, path: Path, reopen: Callable[[], bool], *,
                          interval: float = 0.25, max_bytes: int = 8 * 1024 * 1024) -> None:
        """Take ``node``'s flows from the access-log file ``path`` (``ProxySettings.access_log_file``).

        The lines Envoy appends are read every ``interval`` seconds and delivered like ALS
        batches (undecoded to :meth:`record_flows` recorders, decoded to subscribers);
        ``reopen`` asks that Envoy to reopen its access logs
        (:meth:`EnvoySupervisor.reopen_access_logs`), which keeps the file below about
        ``max_bytes``. Following again replaces the previous follower of ``node``.
        """
        self.unfollow_access_log(node)
        names, publish = self._names, self.flows.publish_lines
        follower = AccessLogFollower(Path(path), lambda lines: publish(lines, node, names), reopen,
                                     interval=interval, max_bytes=max_bytes)
        self._followers[node] = follower.start()

    def unfollow_access_log(self, node: str) -> None:
        """Stop following ``node``'s access-log file, after reading what it holds now."""
        follower = self._followers.pop(node, None)
        if follower is not None:
            follower.stop()
