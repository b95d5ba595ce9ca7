"""Helpers for the node-proxy tests: loopback backends, model builders, clients.

Backends are small HTTP/1.1 servers on 127.0.0.x answering JSON (their name, method,
path, headers); they can be told to fail the first N requests or to answer slowly, and
they record what they received. The Envoy under test listens on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

from meshcore import model as m
from meshcore.compile import CompileOptions, Plan, compile_plan
from meshcore.proxy import ControlPlane, EnvoySupervisor, ProxySettings

NS = "shop"
PROXY_HOST = "127.0.0.1"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes
    server: Backend

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        srv = self.server
        headers = {k.lower(): ", ".join(self.headers.get_all(k) or []) for k in self.headers}
        with srv.lock:
            srv.seen.append({"method": self.command, "path": self.path, "headers": headers})
            count = len(srv.seen)
        if srv.delay_s:
            time.sleep(srv.delay_s)
        status = srv.fail_status if count <= srv.fail_first else 200
        payload = json.dumps({
            "name": srv.name, "method": self.command, "path": self.path,
            "headers": headers, "body": body.decode(errors="replace"),
        }).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except OSError:
            pass  # the proxy gave up on this request (a timeout test)

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Backend(ThreadingHTTPServer):
    """One echo backend; ``fail_first`` requests get ``fail_status``; ``delay_s`` slows answers."""

    daemon_threads = True

    def __init__(self, name: str, address: str) -> None:
        super().__init__((address, 0), _Handler)
        self.name = name
        self.address = address
        self.lock = threading.Lock()
        self.seen: list[dict[str, Any]] = []
        self.fail_first = 0
        self.fail_status = 503
        self.delay_s = 0.0
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def backend(self, weight: int = 1) -> m.Backend:
        return m.Backend(self.address, self.port, weight, workload=m.WorkloadRef(NS, self.name))

    def workload(self, **labels: str) -> m.Workload:
        return m.Workload(self.name, NS, m.Identity(NS, self.name), addresses=(self.address,),
                          labels={"app": self.name, **labels})

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # connections the proxy resets are expected in timeout tests

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def free_port_block(count: int, host: str = PROXY_HOST) -> int:
    """The first of ``count`` consecutive ports free on ``host`` (chosen at random, checked)."""
    for _ in range(200):
        base = random.randrange(20000, 30000 - count)
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                s.bind((host, p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports found")


def service(name: str, backends: Sequence[Backend], port: int = 80, protocol: str = "HTTP",
            vip: str = "10.96.0.1") -> m.Service:
    return m.Service(name, NS, vips=(vip,), ports=(m.ServicePort(port, protocol, "http", backends=tuple(
        b.backend() for b in backends)),))


def dest(svc: m.Service | str, weight: int = 1) -> m.Destination:
    ref = svc.ref if isinstance(svc, m.Service) else m.ServiceRef(NS, svc)
    return m.Destination(ref, weight=weight)


def snapshot(services: Sequence[m.Service], routes: Sequence[m.RouteTable] = (),
             workloads: Sequence[m.Workload] = (), policies: Sequence[m.AuthorizationPolicy] = ()) -> m.Snapshot:
    return m.Snapshot(namespaces=(m.Namespace(NS),), services=tuple(services), routes=tuple(routes),
                      workloads=tuple(workloads), policies=tuple(policies))


def table(svc: m.Service, *routes: m.HttpRoute, port: int = 80) -> m.RouteTable:
    return m.RouteTable(svc.ref, port, "L7", http=routes, source=m.Source("HTTPRoute", NS, svc.name))


#: Listener ports are hashed into this many ports from the base (a block tests reserve).
PORT_BLOCK = 16


def compile_for(snap: m.Snapshot, node: str, port_base: int) -> Plan:
    return compile_plan(snap, node, CompileOptions(proxy_enabled=True, proxy_port_base=port_base,
                                                   proxy_port_range=PORT_BLOCK))


def proxy_port(plan: Plan, svc: str, port: int = 80) -> int:
    listener = plan.envoy.listener(f"{NS}/{svc}:{port}")
    assert listener is not None, f"no listener for {svc}:{port} in {[x.name for x in plan.envoy.listeners]}"
    return listener.proxy_port


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    @property
    def name(self) -> str:
        return str(self.json["name"])


def request(port: int, path: str = "/", method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes | None = None, source: str | None = None, host: str = PROXY_HOST, timeout: float = 5.0) -> Answer:
    """One request to the proxy on ``port`` (from ``source`` address when given)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    start = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, time.monotonic() - start)
    finally:
        conn.close()


@contextmanager
def backends(*names: str, first_address: int = 2) -> Iterator[list[Backend]]:
    """Start backends named ``names`` on 127.0.0.<first_address>, .<+1>, ...; stop them after."""
    made = [Backend(n, f"127.0.0.{first_address + i}") for i, n in enumerate(names)]
    try:
        yield made
    finally:
        for b in made:
            b.stop()


SETTINGS = ProxySettings(listen_ipv4="127.0.0.1", access_log_flush_ms=100)


@attrs.define
class ProxyEnv:
    """The session's control plane and Envoy, for node ``node``."""

    cp: ControlPlane
    envoy: EnvoySupervisor
    node: str
    work: Path

    def apply(self, snap: m.Snapshot, port_base: int, timeout: float = 10.0) -> Plan:
        plan = compile_for(snap, self.node, port_base)
        version = self.cp.set_plan(self.node, plan.envoy, SETTINGS)
        self.cp.wait_synced(self.node, version, timeout)
        return plan
