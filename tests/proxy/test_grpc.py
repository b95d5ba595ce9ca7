"""gRPC through the node proxy: HTTP/2 to the backends, routing on gRPC metadata."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from _proxy_support import NS, dest, proxy_port, snapshot, table

from meshcore import model as m
from meshcore.compile import Plan

pytestmark = pytest.mark.envoy
Apply = Callable[[m.Snapshot], Plan]
METHOD = "/meshcore.test.Echo/Say"


def _server(name: str, address: str) -> tuple[Any, int]:
    def say(request: bytes, context: Any) -> bytes:
        return name.encode() + b":" + request

    handler = grpc.method_handlers_generic_handler("meshcore.test.Echo", {
        "Say": grpc.unary_unary_rpc_method_handler(say),  # raw bytes both ways: no .proto needed
    })
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{address}:0")
    server.start()
    return server, port


@pytest.fixture
def greeters() -> Iterator[list[tuple[str, str, int]]]:
    made = [("greeter", "127.0.0.30"), ("canary", "127.0.0.31")]
    servers = []
    try:
        out = []
        for name, address in made:
            server, port = _server(name, address)
            servers.append(server)
            out.append((name, address, port))
        yield out
    finally:
        for s in servers:
            s.stop(0)


def test_grpc_routes_on_metadata_over_http2(apply: Apply, greeters: list[tuple[str, str, int]]) -> None:
    services = [
        m.Service(name, NS, vips=(f"10.96.0.{30 + i}",), ports=(m.ServicePort(
            50051, "GRPC", "grpc", backends=(m.Backend(address, port, workload=m.WorkloadRef(NS, name)),)),))
        for i, (name, address, port) in enumerate(greeters)
    ]
    routes = table(
        services[0],
        m.HttpRoute("canary", matches=[m.HttpMatch(headers=[m.HeaderMatch("x-canary", m.StringMatch("Exact", "yes"))])],
                    destinations=[dest("canary")]),
        m.HttpRoute("all", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/meshcore.test.Echo/"))],
                    destinations=[dest("greeter")]),
        port=50051,
    )
    plan = apply(snapshot(services, [routes]))
    cluster = plan.envoy.cluster("shop/greeter:50051")
    assert cluster is not None and cluster.http2
    with grpc.insecure_channel(f"127.0.0.1:{proxy_port(plan, 'greeter', 50051)}") as channel:
        say = channel.unary_unary(METHOD)
        assert say(b"hi", timeout=5) == b"greeter:hi"
        assert say(b"hi", timeout=5, metadata=[("x-canary", "yes")]) == b"canary:hi"
        with pytest.raises(grpc.RpcError) as missing:
            channel.unary_unary("/other.Service/Call")(b"x", timeout=5)
        assert missing.value.code() is grpc.StatusCode.UNIMPLEMENTED  # Envoy's 404 as gRPC sees it
