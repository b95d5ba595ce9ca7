"""The lab as a Gateway address manager: which Gateways get a VIP, which one, and where it is written."""

from __future__ import annotations

from meshcore import translate
from meshcore.kube import KubeObject, load_text
from meshcore.lab import LabRanges
from meshcore.lab._gateways import assign_gateway_addresses, enrich_gateway, our_gateways
from meshcore.lab._state import ServiceRecord
from meshcore.model import ServiceRef

INPUT = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: meshcore}
spec: {controllerName: meshcore.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: a, namespace: default}
spec:
  gatewayClassName: meshcore
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: b, namespace: default}
spec:
  gatewayClassName: meshcore
  addresses: [{type: IPAddress}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: given, namespace: default}
spec:
  gatewayClassName: meshcore
  addresses: [{value: 10.96.255.253}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign, namespace: default}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""


def _gateways() -> list[KubeObject]:
    objects, diagnostics = load_text(INPUT)
    assert not diagnostics
    return our_gateways(objects)


def test_only_our_gateways_without_a_requested_ip_get_one_from_the_top_of_the_service_range() -> None:
    gateways = _gateways()
    assert [g.name for g in gateways] == ["a", "b", "given"]
    services = {"default/web": ServiceRecord("default", "web", ("10.96.255.254",))}
    records = assign_gateway_addresses(gateways, services, {}, LabRanges())
    # .254 is a ClusterIP and .253 is requested by Gateway "given": both are skipped.
    assert {k: r.cluster_ips for k, r in records.items()} == {
        "default/a": ("10.96.255.252",), "default/b": ("10.96.255.251",)}


def test_an_assigned_address_is_kept_across_runs_unless_a_service_now_holds_it() -> None:
    gateways = _gateways()
    previous = {"default/a": ServiceRecord("default", "a", ("10.96.1.1",)),
                "default/b": ServiceRecord("default", "b", ("10.96.1.2",))}
    services = {"default/web": ServiceRecord("default", "web", ("10.96.1.2",))}
    records = assign_gateway_addresses(gateways, services, previous, LabRanges())
    assert records["default/a"].cluster_ips == ("10.96.1.1",)
    assert records["default/b"].cluster_ips == ("10.96.255.254",)


def test_the_enriched_gateway_is_served_on_the_assigned_address_and_programmed() -> None:
    gateways = _gateways()
    records = assign_gateway_addresses(gateways, {}, {}, LabRanges())
    entries = [{"body": enrich_gateway(g, records.get(f"{g.namespace}/{g.name}"))} for g in gateways]
    objects, _ = load_text(INPUT.split("---")[0])
    result = translate(objects=[*objects, *(e["body"] for e in entries)])
    svc = result.snapshot.service(ServiceRef("default", "a"))
    assert svc is not None and svc.vips == ("10.96.255.254",)
    status = next(s.status for s in result.statuses if s.kind == "Gateway" and s.name == "a")
    assert status["addresses"] == [{"type": "IPAddress", "value": "10.96.255.254"}]
    programmed = next(c for c in status["conditions"] if c["type"] == "Programmed")
    assert programmed["status"] == "True"
