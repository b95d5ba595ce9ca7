"""Status: the conditions and reasons of GatewayClasses, Gateways, listeners and route parents."""

from __future__ import annotations

from typing import Any

import meshcore
from _gateway_support import CLASS, conditions, gateway, parent, service, status, translate
from meshcore.model import ServiceRef
from meshcore_gateway import stamp_transition_times


def listener_conditions(result: meshcore.Translation, name: str, namespace: str = "default",
                        gw: str = "gw") -> tuple[dict[str, tuple[str, str]], dict[str, Any]]:
    entries = {x["name"]: x for x in status(result, "Gateway", namespace, gw)["listeners"]}
    return conditions(entries[name]), entries[name]


def route(name: str, parents: str, namespace: str = "default", kind: str = "HTTPRoute",
          extra: str = "", backends: str = "[{name: app, port: 80}]") -> str:
    return f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: {kind}
    metadata: {{name: {name}, namespace: {namespace}}}
    spec:
      parentRefs: {parents}
      {extra}
      rules: [{{backendRefs: {backends}}}]
    """


def test_gateway_class_of_ours_is_accepted_and_others_get_no_status() -> None:
    other = """
    apiVersion: gateway.networking.k8s.io/v1
    kind: GatewayClass
    metadata: {name: other}
    spec: {controllerName: example.com/controller}
    """
    result = translate(CLASS, other)
    assert conditions(status(result, "GatewayClass", "", "meshcore")) == {"Accepted": ("True", "Accepted")}
    assert not [s for s in result.statuses if s.name == "other"]


def test_accepted_gateway_is_programmed_with_its_address_and_counts_attached_routes() -> None:
    result = translate(CLASS, service("app"), gateway(), route("a", "[{name: gw}]"), route("b", "[{name: gw}]"))
    gw = status(result, "Gateway", "default", "gw")
    assert conditions(gw) == {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")}
    assert gw["addresses"] == [{"type": "IPAddress", "value": "192.0.2.1"}]
    conds, entry = listener_conditions(result, "http")
    assert conds == {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed"),
                     "ResolvedRefs": ("True", "ResolvedRefs"), "Conflicted": ("False", "NoConflicts")}
    assert entry["attachedRoutes"] == 2
    assert entry["supportedKinds"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
                                       {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}]


def test_a_gateway_without_address_is_accepted_but_not_programmed() -> None:
    doc = gateway().replace("addresses: [{value: 192.0.2.1}]", "")
    result = translate(CLASS, doc)
    assert conditions(status(result, "Gateway", "default", "gw"))["Programmed"] == ("False", "AddressNotAssigned")


def test_listener_conflicts_and_unsupported_values() -> None:
    listeners = """
      - {name: a, port: 80, protocol: HTTP, hostname: x.example.com}
      - {name: b, port: 80, protocol: HTTP, hostname: x.example.com}
      - {name: c, port: 81, protocol: HTTP}
      - {name: d, port: 81, protocol: UDP}
      - {name: e, port: 82, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: UDPRoute}]}}
      - {name: f, port: 83, protocol: QUIC}
      - {name: g, port: 84, protocol: http}
    """
    result = translate(CLASS, gateway(listeners=listeners))
    a, _ = listener_conditions(result, "a")
    assert a["Conflicted"] == ("True", "HostnameConflict") and a["Accepted"] == ("False", "HostnameConflict")
    assert listener_conditions(result, "b")[0]["Conflicted"] == ("True", "HostnameConflict")
    assert listener_conditions(result, "c")[0]["Conflicted"] == ("True", "ProtocolConflict")
    e, entry = listener_conditions(result, "e")
    assert e["ResolvedRefs"] == ("False", "InvalidRouteKinds") and e["Programmed"] == ("False", "Invalid")
    assert entry["supportedKinds"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]
    assert listener_conditions(result, "f")[0]["Accepted"] == ("False", "UnsupportedProtocol")
    # Core protocol names are case-insensitive.
    assert listener_conditions(result, "g")[0]["Accepted"] == ("True", "Accepted")
    assert conditions(status(result, "Gateway", "default", "gw"))["Accepted"] == ("True", "ListenersNotValid")


def test_route_accepted_reasons() -> None:
    listeners = """
      - {name: same-only, port: 80, protocol: HTTP, hostname: a.example.com}
    """
    docs = [
        CLASS, service("app"), gateway(listeners=listeners),
        route("ok", "[{name: gw}]"),
        route("no-section", "[{name: gw, sectionName: nope}]"),
        route("other-ns", "[{name: gw, namespace: default}]", namespace="elsewhere"),
        route("no-host", "[{name: gw}]", extra="hostnames: [b.example.com]"),
        route("tls-on-http", "[{name: gw}]", kind="TLSRoute", extra="hostnames: [a.example.com]"),
    ]
    result = translate(*docs)
    assert parent(result, "HTTPRoute", "default", "ok")["Accepted"] == ("True", "Accepted")
    assert parent(result, "HTTPRoute", "default", "no-section")["Accepted"] == ("False", "NoMatchingParent")
    assert parent(result, "HTTPRoute", "elsewhere", "other-ns")["Accepted"] == ("False", "NotAllowedByListeners")
    assert parent(result, "HTTPRoute", "default", "no-host")["Accepted"] == ("False", "NoMatchingListenerHostname")
    assert parent(result, "TLSRoute", "default", "tls-on-http")["Accepted"] == ("False", "UnsupportedValue")


def test_route_resolved_refs_reasons() -> None:
    docs = [CLASS, service("app"), service("far", "other", vip="10.96.0.7"), gateway(),
            route("missing", "[{name: gw}]", backends="[{name: nope, port: 80}]"),
            route("kind", "[{name: gw}]", backends="[{group: example.com, kind: Bucket, name: b}]"),
            route("denied", "[{name: gw}]", backends="[{name: far, namespace: other, port: 80}]")]
    result = translate(*docs)
    assert parent(result, "HTTPRoute", "default", "missing")["ResolvedRefs"] == ("False", "BackendNotFound")
    assert parent(result, "HTTPRoute", "default", "kind")["ResolvedRefs"] == ("False", "InvalidKind")
    assert parent(result, "HTTPRoute", "default", "denied")["ResolvedRefs"] == ("False", "RefNotPermitted")
    # Unresolved references do not detach the route.
    assert parent(result, "HTTPRoute", "default", "missing")["Accepted"] == ("True", "Accepted")


def test_parent_status_echoes_the_parent_ref_with_controller_and_generation() -> None:
    doc = route("r", "[{name: gw, sectionName: http}]")
    doc = doc.replace("namespace: default}", "namespace: default, generation: 4}")
    result = translate(CLASS, service("app"), gateway(), doc)
    entry = status(result, "HTTPRoute", "default", "r")["parents"][0]
    assert entry["parentRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw",
                                  "sectionName": "http"}
    assert entry["controllerName"] == "meshcore.io/gateway-controller"
    assert {c["observedGeneration"] for c in entry["conditions"]} == {4}
    assert all("lastTransitionTime" not in c for c in entry["conditions"])


def test_routes_for_gateways_of_other_controllers_get_no_status() -> None:
    other = """
    apiVersion: gateway.networking.k8s.io/v1
    kind: GatewayClass
    metadata: {name: other}
    spec: {controllerName: example.com/controller}
    """
    foreign = gateway("theirs").replace("gatewayClassName: meshcore", "gatewayClassName: other")
    result = translate(other, foreign, service("app"), route("r", "[{name: theirs}]"))
    assert not [s for s in result.statuses if s.kind == "HTTPRoute"]
    assert result.snapshot.routes == ()


def test_stamp_transition_times_keeps_unchanged_conditions() -> None:
    before = {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                              "lastTransitionTime": "2024-01-01T00:00:00Z"},
                             {"type": "Programmed", "status": "False", "reason": "Pending",
                              "lastTransitionTime": "2024-01-01T00:00:00Z"}],
              "listeners": [{"name": "http", "conditions": [{"type": "Accepted", "status": "True",
                                                              "lastTransitionTime": "2024-01-02T00:00:00Z"}]}]}
    now = {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"},
                          {"type": "Programmed", "status": "True", "reason": "Programmed"}],
           "listeners": [{"name": "http", "conditions": [{"type": "Accepted", "status": "True"}]},
                         {"name": "new", "conditions": [{"type": "Accepted", "status": "True"}]}]}
    stamped = stamp_transition_times(now, "2024-05-05T05:05:05Z", before)
    assert [c["lastTransitionTime"] for c in stamped["conditions"]] == ["2024-01-01T00:00:00Z", "2024-05-05T05:05:05Z"]
    assert stamped["listeners"][0]["conditions"][0]["lastTransitionTime"] == "2024-01-02T00:00:00Z"
    assert stamped["listeners"][1]["conditions"][0]["lastTransitionTime"] == "2024-05-05T05:05:05Z"
    assert "lastTransitionTime" not in now["conditions"][0]


def test_a_gateway_without_requested_address_is_served_on_its_assigned_status_address() -> None:
    doc = gateway().replace("addresses: [{value: 192.0.2.1}]", "") + """
    status:
      addresses: [{type: Hostname, value: lb.example.com}, {type: IPAddress, value: 10.96.0.10}]
    """
    result = translate(CLASS, doc)
    svc = result.snapshot.service(ServiceRef("default", "gw"))
    assert svc is not None and svc.vips == ("10.96.0.10",)
    written = status(result, "Gateway", "default", "gw")
    assert conditions(written)["Programmed"] == ("True", "Programmed")
    assert written["addresses"] == [{"type": "IPAddress", "value": "10.96.0.10"}]


def test_requested_addresses_win_over_status_addresses() -> None:
    doc = gateway() + """
    status:
      addresses: [{type: IPAddress, value: 10.96.0.10}]
    """
    svc = translate(CLASS, doc).snapshot.service(ServiceRef("default", "gw"))
    assert svc is not None and svc.vips == ("192.0.2.1",)
