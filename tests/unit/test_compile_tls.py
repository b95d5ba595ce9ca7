"""Compile: TLS terminations make a port the node proxy's, with certificates by server name; never clear text."""

from __future__ import annotations

import functools

import pytest
from testcerts import Authority, Pem

from meshcore import model as m
from meshcore.compile import Datapath, compile_plan

NS = "edge"
GW = m.ServiceRef(NS, "gw")


@functools.cache
def _pem(name: str) -> Pem:
    return Authority().issue([f"{name}.example.com"])


def _cert(name: str) -> m.Certificate:
    return m.Certificate(NS, name, _pem(name).cert, _pem(name).key)


def _snapshot(port: int, kind: str, terminations: list[tuple[tuple[str, ...], str]],
              tcp: tuple[m.TcpRoute, ...] = ()) -> m.Snapshot:
    web = m.Service("web", NS, vips=("10.96.0.2",), ports=(m.ServicePort(80, "HTTP", "http", backends=(
        m.Backend("10.244.0.9", 8080),)),))
    gw = m.Service("gw", NS, vips=("10.96.0.1",), ports=(m.ServicePort(port, "TLS", "tls"),))
    if kind == "L7":
        table = m.RouteTable(GW, port, "L7", http=(m.HttpRoute("all", destinations=(m.Destination(web.ref, 80),)),))
    else:
        table = m.RouteTable(GW, port, "L4", tcp=tcp)
    names = {n for _, n in terminations}
    return m.Snapshot(namespaces=(m.Namespace(NS),), services=(web, gw), routes=(table,),
                      certificates=tuple(_cert(n) for n in sorted(names)),
                      tls_terminations=tuple(m.TlsTermination(GW, port, hosts, (m.CertificateRef(NS, n),))
                                             for hosts, n in terminations))


def test_a_terminated_port_goes_to_the_node_proxy_even_with_one_plain_route() -> None:
    plan = compile_plan(_snapshot(443, "L7", [((), "a")]))
    decision = next(d for d in plan.decisions if d.service == GW)
    assert decision.datapath is Datapath.ENVOY
    assert decision.reason == "terminates TLS with the certificate of Secret edge/a"


def test_each_termination_is_a_server_name_set_with_its_certificates_most_specific_first() -> None:
    plan = compile_plan(_snapshot(443, "L7", [((), "any"), (("*.example.com",), "wild"), (("a.example.com",), "a")]))
    listener = plan.envoy.listener("edge/gw:443")
    assert listener is not None and listener.is_http
    assert [(t.server_names, t.secrets) for t in listener.tls] == [
        (("*.example.com",), ("tls/edge/wild",)), (("a.example.com",), ("tls/edge/a",)), ((), ("tls/edge/any",))]
    assert [s.name for s in plan.envoy.secrets] == ["tls/edge/a", "tls/edge/any", "tls/edge/wild"]
    assert plan.envoy.secrets[0].private_key.reveal() == _pem("a").key
    assert "PRIVATE KEY" not in repr(plan.envoy.secrets)


def test_a_server_name_two_terminations_name_goes_to_the_first_in_order_only() -> None:
    # Envoy refuses two filter chains matching one server name: the later termination loses it.
    snap = _snapshot(443, "L7", [(("a.example.com", "b.example.com"), "a"), (("b.example.com", "c.example.com"), "b")])
    plan = compile_plan(snap)
    listener = plan.envoy.listener("edge/gw:443")
    assert listener is not None
    assert [(t.server_names, t.secrets) for t in listener.tls] == [
        (("a.example.com", "b.example.com"), ("tls/edge/a",)), (("c.example.com",), ("tls/edge/b",))]


@pytest.mark.parametrize(("terminated", "passed"), [("term.example.com", "pass.example.com")])
def test_tls_routes_are_terminated_only_under_a_termination_and_passed_through_otherwise(
        terminated: str, passed: str) -> None:
    web = m.ServiceRef(NS, "web")
    tcp = (m.TcpRoute("term", sni=(terminated,), destinations=(m.Destination(web, 80),)),
           m.TcpRoute("pass", sni=(passed,), destinations=(m.Destination(web, 80),)))
    listener = compile_plan(_snapshot(9443, "L4", [((terminated,), "term")], tcp)).envoy.listener("edge/gw:9443")
    assert listener is not None and not listener.is_http
    chains = {c.sni: c.tls for c in listener.tcp}
    term = chains[(terminated,)]
    assert term is not None and term.secrets == ("tls/edge/term",)
    assert chains[(passed,)] is None
