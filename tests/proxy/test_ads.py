"""The ADS protocol as Envoy sees it, driven step by step by a scripted client (no Envoy).

Checks the push order (clusters → endpoints → listeners → routes), that nothing is sent
before what it builds on is acknowledged, make-before-break for removed clusters, NACK
attribution, stale nonces, and a reconnecting Envoy getting everything again.
"""

from __future__ import annotations

import time

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _proxy_support import NS, compile_for, snapshot
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from meshcore import model as m
from meshcore.proxy import CLUSTER, ENDPOINT, LISTENER, ROUTE, ControlPlane, Nack, NackError

NODE = "fake-node"
WEB, V2, B = "shop/web:80", "shop/v2:80", "shop/b:80"


class FakeEnvoy:
    """One ADS stream whose requests the test writes and whose responses it reads."""

    def __init__(self, target: str) -> None:
        self._requests: queue.Queue[Any] = queue.Queue()
        self._responses: queue.Queue[Any] = queue.Queue()
        self._channel = grpc.insecure_channel(target)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        self._call = stub.StreamAggregatedResources(iter(self._requests.get, None))
        self._first = True
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self._call:
                self._responses.put(response)
        except grpc.RpcError:
            pass

    def send(self, type_url: str, names: tuple[str, ...] = (), nonce: str = "", version: str = "",
             error: str | None = None) -> None:
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names,
                                                 response_nonce=nonce, version_info=version)
        if self._first:
            request.node.id = NODE
            self._first = False
        if error is not None:
            request.error_detail.code = 3
            request.error_detail.message = error
        self._requests.put(request)

    def recv(self, timeout: float = 3.0) -> Any:
        return self._responses.get(timeout=timeout)

    def quiet(self, seconds: float = 0.15) -> bool:
        """True when nothing arrives for ``seconds``."""
        try:
            extra = self._responses.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected {extra.type_url.rsplit('.', 1)[-1]} response {names(extra)}")

    def ack(self, response: Any, subscribed: tuple[str, ...] = ()) -> None:
        self.send(response.type_url, subscribed, response.nonce, response.version_info)

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()
        self._channel.close()


def names(response: Any) -> list[str]:
    out = []
    for item in response.resources:
        body = item.value
        # Every resource type meshcore serves has its name as field 1 (a string).
        assert body[0] == 0x0A
        length = body[1]
        out.append(body[2:2 + length].decode())
    return sorted(out)


@pytest.fixture
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with ControlPlane("127.0.0.1:0") as plane:
        yield plane


@pytest.fixture
def envoy(cp: ControlPlane) -> Iterator[FakeEnvoy]:
    fake = FakeEnvoy(cp.endpoint.grpc_target)
    try:
        yield fake
    finally:
        fake.close()


def _services(*names_: str) -> list[m.Service]:
    return [m.Service(n, NS, vips=(f"10.96.0.{i + 1}",), ports=(m.ServicePort(80, "HTTP", backends=(
        m.Backend(f"10.0.0.{i + 1}", 8080),)),)) for i, n in enumerate(names_)]


def _plan(route_to: str, *services: str, regex: str | None = None, where: m.Source | None = None) -> Any:
    svcs = _services(*services)
    match = m.HttpMatch(path=m.StringMatch("RegularExpression", regex) if regex else m.StringMatch("Prefix", "/x"))
    table = m.RouteTable(m.ServiceRef(NS, "web"), 80, "L7", http=(
        m.HttpRoute("x", matches=[match], destinations=[m.Destination(m.ServiceRef(NS, route_to))],
                    source=where or m.Source()),
        m.HttpRoute("rest", destinations=[m.Destination(m.ServiceRef(NS, "web"))]),
    ))
    return compile_for(snapshot(svcs, [table]), NODE, 30000).envoy


def _sync_from_scratch(cp: ControlPlane, envoy: FakeEnvoy, version: int) -> None:
    envoy.send(CLUSTER)
    envoy.send(LISTENER)
    cds = envoy.recv()
    assert (cds.type_url, names(cds)) == (CLUSTER, [V2, WEB])
    assert envoy.quiet(), "listeners must wait until the clusters are acknowledged"
    envoy.send(ENDPOINT, (WEB, V2))
    eds = envoy.recv()  # while the clusters warm (Envoy holds their ACK until then)
    assert (eds.type_url, names(eds)) == (ENDPOINT, [V2, WEB])
    envoy.ack(cds)
    assert envoy.quiet()
    envoy.ack(eds, (WEB, V2))
    lds = envoy.recv()
    assert (lds.type_url, names(lds)) == (LISTENER, [WEB])
    envoy.ack(lds)
    with pytest.raises(TimeoutError, match="RouteConfiguration not subscribed"):
        cp.wait_synced(NODE, version, timeout=0.15)
    envoy.send(ROUTE, (WEB,))
    rds = envoy.recv()
    assert (rds.type_url, names(rds)) == (ROUTE, [WEB])
    envoy.ack(rds, (WEB,))
    cp.wait_synced(NODE, version, timeout=2)


def test_first_push_follows_the_dependency_order(cp: ControlPlane, envoy: FakeEnvoy) -> None:
    version = cp.set_plan(NODE, _plan("v2", "web", "v2"))
    _sync_from_scratch(cp, envoy, version)
    status = cp.status(NODE)
    assert status.synced and status.types["Cluster"].resources == (V2, WEB)
    assert cp.set_plan(NODE, _plan("v2", "web", "v2")) == version, "the same plan is the same version"


def test_removed_clusters_stay_until_routes_moved(cp: ControlPlane, envoy: FakeEnvoy) -> None:
    _sync_from_scratch(cp, envoy, cp.set_plan(NODE, _plan("v2", "web", "v2")))
    version = cp.set_plan(NODE, _plan("b", "web", "b"))
    cds = envoy.recv()
    assert (names(cds), cds.version_info) == ([B, V2, WEB], f"{version}-keep")
    envoy.send(ENDPOINT, (WEB, V2, B), nonce="", version="")  # Envoy subscribes to the new cluster
    eds = envoy.recv()
    assert names(eds) == [B, V2, WEB]
    envoy.ack(cds)
    envoy.ack(eds, (WEB, V2, B))
    rds = envoy.recv()  # the listener did not change; its routes did
    assert rds.type_url == ROUTE
    envoy.ack(rds, (WEB,))
    final = envoy.recv()
    assert (final.type_url, names(final), final.version_info) == (CLUSTER, [B, WEB], str(version))
    envoy.ack(final)
    envoy.send(ENDPOINT, (WEB, B), eds.nonce, eds.version_info)  # Envoy drops the removed cluster's endpoints
    assert envoy.quiet(), "dropping names needs no response (absence deletes nothing)"
    cp.wait_synced(NODE, version, timeout=2)
    envoy.send(CLUSTER, (), cds.nonce, cds.version_info, error="late")  # a stale nonce counts for nothing
    assert envoy.quiet(0.2) and cp.status(NODE).errors == () and cp.nacks(NODE) == ()


def test_nack_names_the_route_and_stops_the_push(cp: ControlPlane, envoy: FakeEnvoy) -> None:
    _sync_from_scratch(cp, envoy, cp.set_plan(NODE, _plan("v2", "web", "v2")))
    where = m.Source("VirtualService", NS, "web", file="vs.yaml", line=9)
    version = cp.set_plan(NODE, _plan("v2", "web", "v2", regex="/x[0-9]+y", where=where))
    rds = envoy.recv()
    assert rds.type_url == ROUTE
    seen: list[Nack] = []
    cp.on_nack(seen.append)
    envoy.send(ROUTE, (WEB,), rds.nonce, "1",
               error="regex '/x[0-9]+y' RE2 program size of 70000 > max program size of 65536")
    with pytest.raises(NackError) as raised:
        cp.wait_synced(NODE, version, timeout=2)
    (nack,) = raised.value.nacks
    assert nack.resources == (WEB,) and [o.source for o in nack.origins] == [where]
    assert seen == [nack]
    assert envoy.quiet(0.3), "rejected content is not sent again"
    fixed = cp.set_plan(NODE, _plan("v2", "web", "v2", regex="/x[^y]"))
    envoy.ack(envoy.recv(), (WEB,))
    cp.wait_synced(NODE, fixed, timeout=2)
    assert cp.status(NODE).errors == () and cp.nacks(NODE) == (nack,)


def test_a_new_stream_gets_everything_again(cp: ControlPlane, envoy: FakeEnvoy) -> None:
    version = cp.set_plan(NODE, _plan("v2", "web", "v2"))
    _sync_from_scratch(cp, envoy, version)
    envoy.close()
    # The server learns of the closed stream asynchronously; only then is nothing synced.
    deadline = time.monotonic() + 5
    while cp.status(NODE).connected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not cp.status(NODE).connected
    again = FakeEnvoy(cp.endpoint.grpc_target)
    try:
        with pytest.raises(TimeoutError):
            cp.wait_synced(NODE, version, timeout=0.2)
        _sync_from_scratch(cp, again, version)
    finally:
        again.close()


def test_unix_socket_endpoint(tmp_path: Path) -> None:
    path = Path("/tmp") / f"mcpx-ads-{tmp_path.name[-8:]}.sock"
    with ControlPlane(f"unix:{path}") as plane:
        assert path.exists() and plane.endpoint.envoy_address() == {"pipe": {"path": str(path)}}
        fake = FakeEnvoy(plane.endpoint.grpc_target)
        try:
            fake.send(CLUSTER)
            assert names(fake.recv()) == []
        finally:
            fake.close()
    assert not path.exists()
