"""Node-proxy listener ports follow their listener: adding one moves no other."""

from __future__ import annotations

import pytest

from meshcore import model as m
from meshcore.compile import CompileOptions, compile_plan
from meshcore.compile._ports import PortAllocator


def _l7_service(name: str) -> tuple[m.Service, m.RouteTable]:
    svc = m.Service(name=name, namespace="shop", vips=["10.96.0.1"], ports=[m.ServicePort(80, "HTTP")])
    route = m.HttpRoute(matches=[m.HttpMatch(path=m.StringMatch(m.MatchKind.PREFIX, "/api"))],
                        destinations=[m.Destination(svc.ref)])
    return svc, m.RouteTable(svc.ref, 80, m.RouteKind.L7, http=[route])


def _ports(names: list[str]) -> dict[str, int]:
    pairs = [_l7_service(n) for n in names]
    vips = {n: f"10.96.0.{i + 1}" for i, n in enumerate(sorted(names))}
    services = [m.Service(name=s.name, namespace=s.namespace, vips=[vips[s.name]], ports=s.ports) for s, _ in pairs]
    plan = compile_plan(m.Snapshot(services=services, routes=[t for _, t in pairs]), "n",
                        CompileOptions(proxy_enabled=True))
    return {f.service.name: f.proxy_port for f in plan.bpf.services if f.proxy_port is not None}


def test_adding_a_proxied_service_keeps_the_others_ports() -> None:
    before = _ports(["cart", "web"])
    after = _ports(["api", "cart", "web", "zoo"])
    assert before["cart"] == after["cart"] and before["web"] == after["web"]
    assert len(set(after.values())) == 4
    assert all(25000 <= p < 30000 for p in after.values())


def test_allocator_probes_past_collisions_and_refuses_when_full() -> None:
    ports = PortAllocator(20000, 2)
    assert sorted([ports.take("a"), ports.take("b")]) == [20000, 20001]
    with pytest.raises(ValueError, match="more than 2"):
        ports.take("c")
    with pytest.raises(ValueError, match="no room"):
        PortAllocator(65000, 10_000)
