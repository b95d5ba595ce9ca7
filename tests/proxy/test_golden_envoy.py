"""Golden Envoy resources: model objects built here → ``tests/golden/envoy/<case>.json``.

The files show exactly what the node Envoy receives for a plan. Regenerate with
``pytest tests/proxy/test_golden_envoy.py --update-golden`` and read the diff.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshcore import model as m
from meshcore.compile import CompileOptions, compile_plan
from meshcore.proxy import ProxySettings, build_resources, canonical_json

GOLDEN = Path(__file__).parent.parent / "golden" / "envoy"
NS = "shop"


def _workload(name: str, address: str, **labels: str) -> m.Workload:
    return m.Workload(name, NS, m.Identity(NS, name), addresses=(address,), labels={"app": "web", **labels})


def _http() -> m.Snapshot:
    v1, v2 = _workload("web-v1", "10.244.1.1", version="v1"), _workload("web-v2", "10.244.1.2", version="v2")
    client = m.Workload("client", NS, m.Identity(NS, "client"), addresses=("10.244.2.1",), labels={"app": "client"})
    web = m.Service("web", NS, vips=("10.96.0.10",), ports=(m.ServicePort(80, "HTTP", "http", backends=(
        m.Backend("10.244.1.1", 8080, workload=v1.ref), m.Backend("10.244.1.2", 8080, 3, workload=v2.ref))),))
    grpc = m.Service("ratings", NS, vips=("10.96.0.11",), ports=(m.ServicePort(9000, "GRPC", "grpc", backends=(
        m.Backend("10.244.1.3", 9000),)),))
    src = m.Source("HTTPRoute", NS, "web", file="web.yaml", line=1)
    web_v = m.ServiceRef(NS, "web")
    routes = m.RouteTable(web.ref, 80, "L7", source=src, http=[
        m.HttpRoute("canary", matches=[m.HttpMatch(headers=[m.HeaderMatch("x-canary", m.StringMatch("Present"))])],
                    destinations=[m.Destination(web_v, subset="v2", subset_labels={"version": "v2"})]),
        m.HttpRoute("ratings", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/ratings/"))],
                    destinations=[m.Destination(grpc.ref, port=9000)], rewrite=m.Rewrite(prefix="/"),
                    retries=m.RetryPolicy(attempts=3, per_try_timeout_ms=500), timeout_ms=2000),
        m.HttpRoute("per-backend", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/set"))], destinations=[
            m.Destination(web_v, request_headers=m.HeaderModifier(set=[("x-header-set", "v1")],
                                                                  remove=["x-debug"])),
            m.Destination(web_v, subset="v2", subset_labels={"version": "v2"},
                          response_headers=m.HeaderModifier(add=[("x-served-by", "v2")]))]),
        m.HttpRoute("old", matches=[m.HttpMatch(path=m.StringMatch("Exact", "/old"))],
                    redirect=m.Redirect(path="/new", status=308)),
        m.HttpRoute("health", matches=[m.HttpMatch(path=m.StringMatch("Exact", "/healthz"), method="GET")],
                    direct_response=m.DirectResponse(200, "ok\n")),
        m.HttpRoute("rest", destinations=[m.Destination(web_v, weight=90), m.Destination(web_v, weight=10, subset="v2",
                                                                                       subset_labels={"version": "v2"})],
                    mirrors=[m.Mirror(m.Destination(grpc.ref, port=9000), 5.0)],
                    fault=m.FaultInjection(delay_ms=50, delay_percent=1.0),
                    request_headers=m.HeaderModifier(set=[("x-mesh", "meshcore")]),
                    response_headers=m.HeaderModifier(remove=["server"])),
    ])
    policies = [
        m.AuthorizationPolicy("read-only", NS, m.WorkloadSelector(NS, {"app": "web"}), "ALLOW", [m.PolicyRule(
            sources=[m.PeerSelector(workload_labels={"app": "client"})],
            operations=[m.Operation(methods=["GET", "HEAD"])])]),
        m.AuthorizationPolicy("no-admin", NS, m.WorkloadSelector(NS, {"app": "web"}), "DENY", [m.PolicyRule(
            operations=[m.Operation(paths=["/admin*"])])]),
    ]
    return m.Snapshot(namespaces=(m.Namespace(NS),), workloads=(v1, v2, client), services=(web, grpc),
                      routes=(routes,), policies=tuple(policies))


def _tls() -> m.Snapshot:
    tls = m.Service("edge", NS, vips=("10.96.0.20",), ports=(m.ServicePort(443, "TLS", "tls", backends=(
        m.Backend("10.244.3.1", 8443),)),))
    other = m.Service("legacy", NS, vips=("10.96.0.21",), ports=(m.ServicePort(443, "TLS", "tls", backends=(
        m.Backend("10.244.3.2", 8443),)),))
    routes = m.RouteTable(tls.ref, 443, "L4", tcp=[
        m.TcpRoute("legacy", sni=["old.example.com"], destinations=[m.Destination(other.ref)]),
        m.TcpRoute("edge", destinations=[m.Destination(tls.ref)]),
    ])
    return m.Snapshot(services=(tls, other), routes=(routes,))


def _jwt() -> m.Snapshot:
    web = _workload("web-v1", "10.244.1.1")
    svc = m.Service("web", NS, vips=("10.96.0.10",), ports=(m.ServicePort(80, "HTTP", "http", backends=(
        m.Backend("10.244.1.1", 8080, workload=web.ref),)),))
    sel = m.WorkloadSelector(NS, {"app": "web"})
    authn = m.RequestAuthentication("tokens", NS, sel, [
        m.JwtRule("https://issuer.example.com", audiences=["web"],
                  jwks='{"keys": [{"kty": "oct", "alg": "HS256", "k": "c2VjcmV0"}]}',
                  from_headers=[m.JwtHeader("x-token", "Bearer ")], from_params=["token"],
                  output_payload_to_header="x-jwt-payload",
                  output_claim_to_headers=[m.ClaimToHeader("x-jwt-sub", "sub")]),
        m.JwtRule("https://accounts.example.org", jwks_uri="https://accounts.example.org/keys.json"),
    ])
    policy = m.AuthorizationPolicy("web", NS, sel, "ALLOW", [
        m.PolicyRule(sources=[m.PeerSelector(request_principals=["https://issuer.example.com/alice"],
                                             not_request_principals=["*/mallory"])]),
        m.PolicyRule(conditions=[m.Condition("request.auth.claims[group]", ["admins"])]),
    ])
    return m.Snapshot(namespaces=(m.Namespace(NS),), workloads=(web,), services=(svc,), policies=(policy,),
                      request_authentications=(authn,))


def _tcp_rbac() -> m.Snapshot:
    """A TCP listener with authorization per chain: TLS passthrough by SNI to one service, the rest to another."""
    db, vault = _workload("db-1", "10.244.4.1", role="db"), _workload("vault-1", "10.244.4.2", role="vault")
    client = m.Workload("client", NS, m.Identity(NS, "client"), addresses=("10.244.2.1",), labels={"app": "client"})
    pg = m.Service("db", NS, vips=("10.96.0.30",), ports=(m.ServicePort(443, "TLS", "tls", backends=(
        m.Backend("10.244.4.1", 5432, workload=db.ref),)),))
    edge = m.Service("vault", NS, vips=("10.96.0.31",), ports=(m.ServicePort(443, "TLS", "tls", backends=(
        m.Backend("10.244.4.2", 8443, workload=vault.ref),)),))
    routes = m.RouteTable(edge.ref, 443, "L4", tcp=[
        m.TcpRoute("vault", sni=["vault.example.com"], destinations=[m.Destination(edge.ref)]),
        m.TcpRoute("db", destinations=[m.Destination(pg.ref)])])
    policies = [
        m.AuthorizationPolicy("db-clients", NS, m.WorkloadSelector(NS, {"role": "db"}), "ALLOW", [
            m.PolicyRule(sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/client"])],
                         operations=[m.Operation(ports=[m.PortRange.single(5432)])]),
            m.PolicyRule(operations=[m.Operation(methods=["GET"])])]),  # HTTP only: matches no connection
        m.AuthorizationPolicy("no-outsiders", NS, m.WorkloadSelector(NS, {"app": "web"}), "DENY", [
            m.PolicyRule(sources=[m.PeerSelector(not_namespaces=[NS])])]),
        m.AuthorizationPolicy("vault-net", NS, m.WorkloadSelector(NS, {"role": "vault"}), "ALLOW", [
            # Outside the mesh: an ipBlock selects no pod (a pod is its workload identity).
            m.PolicyRule(sources=[m.PeerSelector(ip_blocks=[m.IpBlock("192.168.0.0/24", ["192.168.0.128/25"])])])]),
    ]
    other = m.Workload("outsider", "other", m.Identity("other", "x"), addresses=("10.244.9.1",), labels={"app": "x"})
    return m.Snapshot(namespaces=(m.Namespace(NS), m.Namespace("other")), workloads=(db, vault, client, other),
                      services=(pg, edge), routes=(routes,), policies=tuple(policies))


def _golden_certificate(namespace: str, name: str) -> m.Certificate:
    """The test-only certificate of the golden inputs (valid 2024-2099), so the output is stable."""
    import base64

    import yaml

    docs = yaml.safe_load_all((GOLDEN.parent / "gateway" / "https-certificates.in.yaml").read_text())
    data = next(d for d in docs if d and d.get("kind") == "Secret" and d["metadata"]["name"] == "shop")["data"]
    return m.Certificate(namespace, name, base64.b64decode(data["tls.crt"]).decode(),
                         base64.b64decode(data["tls.key"]).decode())


def _terminating(port: int, table: m.RouteTable | None, terminations: list[tuple[list[str], str]]) -> m.Snapshot:
    web = m.Service("web", NS, vips=("10.96.0.40",), ports=(m.ServicePort(80, "HTTP", "http", backends=(
        m.Backend("10.244.5.1", 8080),)),))
    gw = m.Service("gw", NS, vips=("10.96.0.41",), ports=(m.ServicePort(port, "TLS", "tls"),))
    certificates = {name: _golden_certificate(NS, name) for _, name in terminations}
    return m.Snapshot(namespaces=(m.Namespace(NS),), services=(web, gw), routes=(table,) if table else (),
                      certificates=tuple(certificates.values()),
                      tls_terminations=tuple(m.TlsTermination(gw.ref, port, hosts, [certificates[n].ref])
                                             for hosts, n in terminations))


def _https_termination() -> m.Snapshot:
    """An HTTPS port with a certificate per server name (the key redacted in what is shown)."""
    gw, web = m.ServiceRef(NS, "gw"), m.ServiceRef(NS, "web")
    table = m.RouteTable(gw, 443, "L7", http=[m.HttpRoute("web", destinations=[m.Destination(web, 80)])])
    return _terminating(443, table, [(["shop.example.com"], "shop"), (["*.example.com"], "wild")])


def _tls_termination() -> m.Snapshot:
    """A TLS port terminating one server name and passing another through."""
    gw, web = m.ServiceRef(NS, "gw"), m.ServiceRef(NS, "web")
    table = m.RouteTable(gw, 9443, "L4", tcp=[
        m.TcpRoute("terminated", sni=["shop.example.com"], destinations=[m.Destination(web, 80)]),
        m.TcpRoute("passed", sni=["db.example.com"], destinations=[m.Destination(web, 80)])])
    return _terminating(9443, table, [(["shop.example.com"], "shop")])


def _dns() -> m.Snapshot:
    """Services whose backends are names: an HTTP port (every address) and a TCP port (one address at a time)."""
    api = m.Service("api", NS, vips=("240.0.0.10",), resolution="dns", ports=(m.ServicePort(
        80, "HTTP", "http", hostname_backends=(m.HostnameBackend("api.example.test", 8080),
                                               m.HostnameBackend("192.0.2.7", 8080, 2))),))
    db = m.Service("db", NS, vips=("240.0.0.11",), resolution="dns-round-robin", ports=(m.ServicePort(
        5432, "TCP", "pg", hostname_backends=(m.HostnameBackend("db.example.test", 5432),)),))
    client = m.Workload("client", NS, m.Identity(NS, "client"), addresses=("10.244.2.1",), labels={"app": "client"})
    return m.Snapshot(namespaces=(m.Namespace(NS),), workloads=(client,), services=(api, db))


CASES: dict[str, Callable[[], m.Snapshot]] = {"http-routes-and-rbac": _http, "jwt-authn": _jwt, "tls-by-sni": _tls,
                                              "tcp-rbac": _tcp_rbac, "https-termination": _https_termination,
                                              "tls-termination": _tls_termination, "dns-clusters": _dns}
#: Proxy settings beyond the listener address, per case.
SETTINGS: dict[str, dict[str, Any]] = {"dns-clusters": {"dns_resolvers": ("10.244.0.1", "[fd00::1]:5353")}}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_envoy(case: str, request: pytest.FixtureRequest) -> None:
    plan = compile_plan(CASES[case](), "node-1", CompileOptions(proxy_enabled=True, proxy_port_base=15001,
                                                                proxy_port_range=2 if case == "dns-clusters" else 1))
    settings = ProxySettings(listen_ipv4="10.244.0.1", **SETTINGS.get(case, {}))
    actual = canonical_json(build_resources(plan.envoy, settings))
    path = GOLDEN / f"{case}.json"
    if request.config.getoption("--update-golden"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"{path.name} is missing: run pytest {__file__} --update-golden"
    assert actual == path.read_text(), (
        f"{case} no longer renders to {path.name}; if intended, regenerate with --update-golden and read the diff"
    )
