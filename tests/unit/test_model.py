"""The model validates on construction and names the offending field."""

from __future__ import annotations

import pytest

from meshcore.model import (
    Backend, Destination, DirectResponse, HttpMatch, HttpRoute, Identity, Labels, MatchKind,
    ModelError, Protocol, RouteKind, RouteTable, Service, ServicePort, ServiceRef, Snapshot,
    Source, StringMatch, TcpRoute, Workload,
)


def test_identity_spiffe_round_trip() -> None:
    ident = Identity("shop", "checkout")
    assert ident.spiffe_id == "spiffe://cluster.local/ns/shop/sa/checkout"
    assert Identity.from_spiffe(ident.spiffe_id) == ident
    with pytest.raises(ModelError, match="spiffe://<td>/ns/<ns>/sa/<sa>"):
        Identity.from_spiffe("spiffe://td/shop/checkout")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"name": "Bad_Name", "namespace": "ns"}, "name"),
    ({"name": "ok", "namespace": "ns", "vips": ["10.0.0.300"]}, "vips[0]"),
    ({"name": "ok", "namespace": "ns", "vips": ["fd00:0::1"]}, "vips[0]"),
    ({"name": "ok", "namespace": "ns", "hostnames": ["a..b!"]}, "hostnames[0]"),
])
def test_service_rejects_invalid_fields(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ModelError) as err:
        Service(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_port_range_and_duplicate_ports() -> None:
    with pytest.raises(ModelError, match="1..65535"):
        ServicePort(70000)
    with pytest.raises(ModelError, match="duplicate port 80/TCP"):
        Service(name="a", namespace="b", ports=[ServicePort(80), ServicePort(80, Protocol.HTTP)])
    # the same number on UDP is a different port
    Service(name="a", namespace="b", ports=[ServicePort(53), ServicePort(53, Protocol.UDP)])


def test_http_route_needs_exactly_one_outcome() -> None:
    dest = Destination(ServiceRef("ns", "svc"))
    with pytest.raises(ModelError, match="exactly one"):
        HttpRoute()
    with pytest.raises(ModelError, match="exactly one"):
        HttpRoute(destinations=[dest], direct_response=DirectResponse(200))
    assert HttpRoute(destinations=[dest]).needs_l7 is False
    assert HttpRoute(matches=[HttpMatch(path=StringMatch(MatchKind.PREFIX, "/api"))], destinations=[dest]).needs_l7


def test_invalid_regex_and_path_are_rejected() -> None:
    with pytest.raises(ModelError, match="regular expression"):
        StringMatch(MatchKind.REGEX, "([a-z")
    with pytest.raises(ModelError, match="must start with '/'"):
        HttpMatch(path=StringMatch(MatchKind.PREFIX, "api"))


def test_route_table_kind_consistency_and_reason() -> None:
    dest = Destination(ServiceRef("ns", "svc"))
    with pytest.raises(ModelError):
        RouteTable(ServiceRef("ns", "svc"), 80, RouteKind.L4, http=[HttpRoute(destinations=[dest])])
    table = RouteTable(ServiceRef("ns", "svc"), 80, RouteKind.L7, http=[
        HttpRoute(name="plain", destinations=[dest]),
        HttpRoute(name="by-user", matches=[HttpMatch(headers=[])], destinations=[dest]),
        HttpRoute(name="canary", matches=[HttpMatch(method="GET")], destinations=[dest]),
    ])
    assert table.l7_reason() == "route 2 (canary) matches on method GET"
    l4 = RouteTable(ServiceRef("ns", "svc"), 443, RouteKind.L4, tcp=[TcpRoute(sni=["a.example"], destinations=[dest])])
    assert l4.l7_reason() == "route 0 (unnamed) matches on SNI"


def _workload(name: str, ip: str) -> Workload:
    return Workload(name=name, namespace="ns", identity=Identity("ns"), addresses=[ip],
                    labels={"app": "x"}, source=Source(kind="Pod", namespace="ns", name=name, file=f"{name}.yaml", line=3))


def test_snapshot_is_order_independent_and_ignores_sources() -> None:
    a, b = _workload("a", "10.0.0.1"), _workload("b", "10.0.0.2")
    svc = Service(name="s", namespace="ns", vips=["10.96.0.1"],
                  ports=[ServicePort(80, backends=[Backend("10.0.0.2", 80), Backend("10.0.0.1", 80)])])
    one = Snapshot(workloads=[a, b], services=[svc])
    two = Snapshot(workloads=[b, a], services=[svc])
    assert one == two
    assert one.content_hash == two.content_hash
    moved = Snapshot(workloads=[Workload(**{**_as_kwargs(a), "source": Source(file="other.yaml", line=99)}), b], services=[svc])
    assert moved.content_hash == one.content_hash
    changed = Snapshot(workloads=[a, _workload("b", "10.0.0.3")], services=[svc])
    assert changed.content_hash != one.content_hash


def _as_kwargs(w: Workload) -> dict[str, object]:
    import attrs
    return attrs.asdict(w, recurse=False)


def test_snapshot_rejects_duplicates_naming_the_first() -> None:
    a = _workload("a", "10.0.0.1")
    with pytest.raises(ModelError, match=r"duplicate Workload ns/a \(also defined at a.yaml:3"):
        Snapshot(workloads=[a, _workload("a", "10.0.0.9")])


def test_labels_are_immutable_hashable_and_match() -> None:
    labels = Labels({"app": "web", "tier": "front"})
    assert hash(labels) == hash(Labels({"tier": "front", "app": "web"}))
    assert labels.matches({"app": "web"}) and not labels.matches({"app": "db"})
    with pytest.raises(TypeError):
        Labels({"app": 1})  # type: ignore[dict-item]


def test_source_renders_location_and_object() -> None:
    src = Source(kind="Service", namespace="shop", name="cart", file="apps.yaml", line=12)
    assert str(src) == "apps.yaml:12 Service shop/cart"
    assert str(Source(kind="Namespace", name="shop")) == "Namespace shop"
