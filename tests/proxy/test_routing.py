"""The route vocabulary through a real Envoy: which backend answered, what it received."""

from __future__ import annotations

import collections
import http.client
import json
import time
from collections.abc import Callable

import pytest
from _proxy_support import NS, backends, dest, proxy_port, request, service, snapshot, table

from meshcore import model as m
from meshcore.compile import Plan

pytestmark = pytest.mark.envoy
Apply = Callable[[m.Snapshot], Plan]


def test_routes_by_path_header_query_and_method(apply: Apply) -> None:
    with backends("web", "v2", "hdr", "qry", "post", "rx") as (web, v2, hdr, qry, post, rx):
        svcs = [service(b.name, [b]) for b in (web, v2, hdr, qry, post, rx)]
        web_svc = svcs[0]
        routes = table(
            web_svc,
            m.HttpRoute("exact", matches=[m.HttpMatch(path=m.StringMatch("Exact", "/v2"))], destinations=[dest("v2")]),
            m.HttpRoute("prefix", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/v2/"))], destinations=[dest("v2")]),
            m.HttpRoute("regex", matches=[m.HttpMatch(path=m.StringMatch("RegularExpression", "/items/[0-9]+"))],
                        destinations=[dest("rx")]),
            m.HttpRoute("header", matches=[
                m.HttpMatch(headers=[m.HeaderMatch("X-User", m.StringMatch("Exact", "alice"))]),
                m.HttpMatch(headers=[m.HeaderMatch("x-team", m.StringMatch("Prefix", "ops-")),
                                     m.HeaderMatch("x-debug", m.StringMatch("Present"), invert=True)]),
            ], destinations=[dest("hdr")]),
            m.HttpRoute("query", matches=[m.HttpMatch(query=[m.QueryMatch("version", m.StringMatch("Exact", "2"))])],
                        destinations=[dest("qry")]),
            m.HttpRoute("method", matches=[m.HttpMatch(method="POST")], destinations=[dest("post")]),
            m.HttpRoute("default", destinations=[dest(web_svc)]),
        )
        plan = apply(snapshot(svcs, [routes], [b.workload() for b in (web, v2, hdr, qry, post, rx)]))
        port = proxy_port(plan, "web")
        cases = [
            ("GET", "/", {}, "web"), ("GET", "/v2", {}, "v2"), ("GET", "/v2/a", {}, "v2"),
            ("GET", "/v2x", {}, "web"), ("GET", "/items/42", {}, "rx"), ("GET", "/items/x", {}, "web"),
            ("GET", "/a", {"x-user": "alice"}, "hdr"), ("GET", "/a", {"x-user": "bob"}, "web"),
            ("GET", "/a", {"x-team": "ops-1"}, "hdr"), ("GET", "/a", {"x-team": "ops-1", "x-debug": "1"}, "web"),
            ("GET", "/a?version=2", {}, "qry"), ("GET", "/a?version=3", {}, "web"),
            ("POST", "/a", {}, "post"), ("PUT", "/a", {}, "web"),
        ]
        got = [(method, path, headers, request(port, path, method, headers).name) for method, path, headers, _ in cases]
        assert got == [(mt, p, h, want) for mt, p, h, want in cases]


def test_weighted_split_80_20(apply: Apply) -> None:
    with backends("a", "b") as (a, b):
        svc_a, svc_b = service("a", [a]), service("b", [b])
        web = service("web", [a])
        routes = table(web, m.HttpRoute("split", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/"))],
                                        destinations=[dest(svc_a, 80), dest(svc_b, 20)]))
        plan = apply(snapshot([web, svc_a, svc_b], [routes]))
        port = proxy_port(plan, "web")
        counts: collections.Counter[str] = collections.Counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(500):
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert resp.status == 200
            counts[json.loads(resp.read())["name"]] += 1
        conn.close()
        share = counts["a"] / 500
        # 500 draws at p=0.8: sigma is 1.8 points; 7 points is almost 4 sigma.
        assert 0.73 <= share <= 0.87, counts


def test_redirect_and_direct_response(apply: Apply) -> None:
    with backends("web") as (web,):
        svc = service("web", [web])
        routes = table(
            svc,
            m.HttpRoute("moved", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/old"))],
                        redirect=m.Redirect(path="/new", status=301)),
            m.HttpRoute("https", matches=[m.HttpMatch(path=m.StringMatch("Exact", "/secure"))],
                        redirect=m.Redirect(scheme="https", host="example.com", port=8443)),
            m.HttpRoute("teapot", matches=[m.HttpMatch(path=m.StringMatch("Exact", "/tea"))],
                        direct_response=m.DirectResponse(418, "short and stout\n")),
            m.HttpRoute("default", destinations=[dest(svc)]),
        )
        port = proxy_port(apply(snapshot([svc], [routes])), "web")
        moved = request(port, "/old/page", headers={"host": "shop.example"})
        assert (moved.status, moved.headers["location"]) == (301, "http://shop.example/new")
        secure = request(port, "/secure")
        assert (secure.status, secure.headers["location"]) == (302, "https://example.com:8443/secure")
        tea = request(port, "/tea")
        assert (tea.status, tea.body) == (418, b"short and stout\n")
        assert not web.seen


def test_rewrite_and_header_modifiers(apply: Apply) -> None:
    with backends("web") as (web,):
        svc = service("web", [web])
        routes = table(
            svc,
            m.HttpRoute("api", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/api/"))],
                        destinations=[dest(svc)], rewrite=m.Rewrite(prefix="/v1/", host="internal.web"),
                        request_headers=m.HeaderModifier(set=[("x-env", "prod"), ("x-share", "50% %HOSTNAME%")],
                                                         add=[("x-trace", "added")], remove=["x-secret"]),
                        response_headers=m.HeaderModifier(set=[("x-served-by", "meshcore")], remove=["content-type"])),
            m.HttpRoute("fixed", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/legacy"))],
                        destinations=[dest(svc)], rewrite=m.Rewrite(path="/modern")),
        )
        port = proxy_port(apply(snapshot([svc], [routes])), "web")
        answer = request(port, "/api/items?id=1", headers={"x-env": "dev", "x-trace": "client", "x-secret": "s"})
        seen = answer.json
        assert seen["path"] == "/v1/items?id=1"
        assert seen["headers"]["host"] == "internal.web"
        assert seen["headers"]["x-env"] == "prod"
        assert seen["headers"]["x-share"] == "50% %HOSTNAME%"  # values are literal: no Envoy commands
        assert "x-secret" not in seen["headers"]
        # The added value goes next to the client's own.
        assert "client" in seen["headers"]["x-trace"] and "added" in seen["headers"]["x-trace"]
        assert answer.headers["x-served-by"] == "meshcore" and "content-type" not in answer.headers
        assert request(port, "/legacy/a/b?q=1").json["path"] == "/modern?q=1"


def test_retries_on_5xx(apply: Apply) -> None:
    with backends("flaky", "plain") as (flaky, plain):
        svc, other = service("flaky", [flaky]), service("plain", [plain])
        retried = table(svc, m.HttpRoute("retry", destinations=[dest(svc)],
                                         retries=m.RetryPolicy(attempts=3, retry_on=["5xx"], per_try_timeout_ms=2000)))
        no_retry = table(other, m.HttpRoute("once", destinations=[dest(other)], timeout_ms=5000))
        plan = apply(snapshot([svc, other], [retried, no_retry]))
        flaky.fail_first = 2
        answer = request(proxy_port(plan, "flaky"))
        assert answer.status == 200 and len(flaky.seen) == 3
        plain.fail_first = 1
        assert request(proxy_port(plan, "plain")).status == 503 and len(plain.seen) == 1


def test_timeout(apply: Apply) -> None:
    with backends("slow") as (slow,):
        svc = service("slow", [slow])
        plan = apply(snapshot([svc], [table(svc, m.HttpRoute("t", destinations=[dest(svc)], timeout_ms=200))]))
        slow.delay_s = 1.5
        answer = request(proxy_port(plan, "slow"))
        assert answer.status == 504
        assert 0.15 <= answer.elapsed < 1.0


def test_fault_abort_and_delay(apply: Apply) -> None:
    with backends("web") as (web,):
        svc = service("web", [web])
        routes = table(
            svc,
            m.HttpRoute("abort", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/abort"))], destinations=[dest(svc)],
                        fault=m.FaultInjection(abort_status=503, abort_percent=100)),
            m.HttpRoute("delay", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/delay"))], destinations=[dest(svc)],
                        fault=m.FaultInjection(delay_ms=400, delay_percent=100)),
            m.HttpRoute("plain", destinations=[dest(svc)]),
        )
        port = proxy_port(apply(snapshot([svc], [routes])), "web")
        aborted = request(port, "/abort")
        assert aborted.status == 503 and not web.seen
        delayed = request(port, "/delay")
        assert delayed.status == 200 and delayed.elapsed >= 0.38
        plain = request(port, "/")
        assert plain.status == 200 and plain.elapsed < 0.3


def test_mirror_sends_a_copy(apply: Apply) -> None:
    with backends("web", "shadow") as (web, shadow):
        svc, shadow_svc = service("web", [web]), service("shadow", [shadow])
        routes = table(svc, m.HttpRoute("m", destinations=[dest(svc)],
                                        mirrors=[m.Mirror(m.Destination(shadow_svc.ref), 100)]))
        port = proxy_port(apply(snapshot([svc, shadow_svc], [routes])), "web")
        answer = request(port, "/copy-me?x=1", method="POST", body=b"payload")
        assert answer.name == "web"
        deadline = time.monotonic() + 3
        while not shadow.seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [(s["method"], s["path"]) for s in shadow.seen] == [("POST", "/copy-me?x=1")]
        assert "-shadow" in shadow.seen[0]["headers"]["host"]  # Envoy marks mirrored requests


def test_cors_preflight(apply: Apply) -> None:
    with backends("web") as (web,):
        svc = service("web", [web])
        routes = table(svc, m.HttpRoute("c", destinations=[dest(svc)], cors=m.CorsPolicy(
            allow_origins=["https://app.example"], allow_methods=["GET", "PUT"], allow_headers=["x-token"], max_age_s=60)))
        port = proxy_port(apply(snapshot([svc], [routes])), "web")
        pre = request(port, "/x", method="OPTIONS", headers={
            "origin": "https://app.example", "access-control-request-method": "PUT"})
        assert pre.status == 200 and pre.headers["access-control-allow-origin"] == "https://app.example"
        assert pre.headers["access-control-allow-methods"] == "GET,PUT" and not web.seen
        other = request(port, "/x", headers={"origin": "https://evil.example"})
        assert other.status == 200 and "access-control-allow-origin" not in other.headers


def test_tls_passthrough_by_sni(apply: Apply) -> None:
    """L4 routes by TLS server name: the ClientHello reaches the backend chosen for its SNI."""
    import socket
    import socketserver
    import ssl
    import threading

    class Sink(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

        def __init__(self, address: str) -> None:
            super().__init__((address, 0), Hello)
            self.hellos = 0

    class Hello(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            if self.request.recv(5)[:1] == b"\x16":  # a TLS handshake record
                self.server.hellos += 1  # type: ignore[attr-defined]

    sinks = [Sink("127.0.0.40"), Sink("127.0.0.41")]
    for s in sinks:
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        svcs = [m.Service(name, "shop", vips=(f"10.96.0.{40 + i}",), ports=(m.ServicePort(443, "TLS", "tls", backends=(
            m.Backend(str(s.server_address[0]), int(s.server_address[1])),)),)) for i, (name, s) in enumerate(zip(("edge", "old"), sinks))]
        routes = m.RouteTable(svcs[0].ref, 443, "L4", tcp=[
            m.TcpRoute("old", sni=["old.example"], destinations=[m.Destination(svcs[1].ref)]),
            m.TcpRoute("rest", destinations=[m.Destination(svcs[0].ref)]),
        ])
        port = proxy_port(apply(snapshot(svcs, [routes])), "edge", 443)

        def hello(server_name: str) -> None:
            context = ssl.create_default_context()
            with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
                try:
                    with context.wrap_socket(raw, server_hostname=server_name):
                        pass
                except (ssl.SSLError, OSError):
                    pass  # the sinks speak no TLS: the handshake is all this test needs

        hello("old.example")
        hello("new.example")
        hello("old.example")
        deadline = time.monotonic() + 3
        while sum(s.hellos for s in sinks) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [s.hellos for s in sinks] == [1, 2]
    finally:
        for s in sinks:
            s.shutdown()
            s.server_close()


def test_routes_for_some_clients_only(apply: Apply) -> None:
    # The same service port routes differently by who asks: a canary client in "front"
    # goes to v2, clients in "back" get 418, everyone else (other mesh workloads and
    # addresses outside the mesh) the default route.
    def client(name: str, namespace: str, address: str, **labels: str) -> m.Workload:
        return m.Workload(name, namespace, m.Identity(namespace, name), addresses=(address,), labels=labels)

    clients = [client("canary", "front", "127.0.0.60", tier="canary"), client("stable", "front", "127.0.0.61"),
               client("api", "back", "127.0.0.62"), client("other", NS, "127.0.0.63", tier="canary")]
    with backends("web", "v2") as (web, v2):
        svcs = [service("web", [web]), service("v2", [v2])]
        routes = table(
            svcs[0],
            m.HttpRoute("canary", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/"), clients=m.ClientMatch(
                namespaces=["front"], labels={"tier": "canary"}))], destinations=[dest("v2")]),
            m.HttpRoute("back", matches=[m.HttpMatch(clients=m.ClientMatch(namespaces=["back"]))],
                        direct_response=m.DirectResponse(418)),
            m.HttpRoute("default", destinations=[dest(svcs[0])]),
        )
        snap = m.Snapshot(namespaces=(m.Namespace(NS), m.Namespace("front"), m.Namespace("back")),
                          services=tuple(svcs), routes=(routes,),
                          workloads=(web.workload(), v2.workload(), *clients))
        plan = apply(snap)
        listener = plan.envoy.listener(f"{NS}/web:80")
        assert listener is not None
        assert sorted(v.sources for v in listener.client_views) == [("127.0.0.60/32",), ("127.0.0.62/32",)]
        port = listener.proxy_port
        got = {source: request(port, source=source) for source in ("127.0.0.60", "127.0.0.61", "127.0.0.62",
                                                                   "127.0.0.63", "127.0.0.1")}
        assert {s: (a.status, a.name if a.status == 200 else "") for s, a in got.items()} == {
            "127.0.0.60": (200, "v2"), "127.0.0.61": (200, "web"), "127.0.0.62": (418, ""),
            "127.0.0.63": (200, "web"), "127.0.0.1": (200, "web")}


def test_a_regex_beyond_envoys_default_program_size_is_served(apply: Apply) -> None:
    # RE2 program size 1013: Envoy's own limit (100) would refuse it; the node proxy's
    # bootstrap raises the limit to what the model checks.
    pattern = "/static/[a-zA-Z0-9._-]{0,200}/file"
    with backends("web", "assets") as (web, assets):
        svcs = [service("web", [web]), service("assets", [assets])]
        routes = table(svcs[0],
                       m.HttpRoute("static", matches=[m.HttpMatch(path=m.StringMatch("RegularExpression", pattern))],
                                   destinations=[dest("assets")]),
                       m.HttpRoute("default", destinations=[dest(svcs[0])]))
        port = proxy_port(apply(snapshot(svcs, [routes])), "web")
        assert request(port, "/static/v1.2/file").name == "assets"
        assert request(port, "/static/v1.2/other").name == "web"


def test_tcp_routes_for_some_clients_only(apply: Apply) -> None:
    # A TCP port: clients of namespace "front" go to b, everyone else to a; the node
    # proxy tells them apart when they connect (HTTP is only what the backends speak).
    front = m.Workload("fe", "front", m.Identity("front", "fe"), addresses=("127.0.0.70",))
    back = m.Workload("be", "back", m.Identity("back", "be"), addresses=("127.0.0.71",))
    with backends("a", "b") as (a, b):
        db = service("db", [a], protocol="TCP")
        svc_a, svc_b = service("a", [a]), service("b", [b])
        routes = m.RouteTable(db.ref, 80, "L4", tcp=(
            m.TcpRoute("front", destinations=[dest("b")], clients=m.ClientMatch(namespaces=["front"])),
            m.TcpRoute("rest", destinations=[dest("a")]),
        ))
        snap = m.Snapshot(namespaces=(m.Namespace(NS), m.Namespace("front"), m.Namespace("back")),
                          services=(db, svc_a, svc_b), routes=(routes,),
                          workloads=(a.workload(), b.workload(), front, back))
        plan = apply(snap)
        listener = plan.envoy.listener(f"{NS}/db:80")
        assert listener is not None
        assert [(c.name, c.sources is not None and "127.0.0.70/32" in c.sources) for c in listener.tcp] == [
            (f"{NS}/db:80/front", True), (f"{NS}/db:80/rest", False)]
        port = listener.proxy_port
        assert {s: request(port, source=s).name for s in ("127.0.0.70", "127.0.0.71", "127.0.0.1")} == {
            "127.0.0.70": "b", "127.0.0.71": "a", "127.0.0.1": "a"}
