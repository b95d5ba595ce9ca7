"""Services: VIPs, ports and protocols, and backends resolved from selectors over pods."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import pytest
from kube_text import Translate, line_of

from meshcore.kube import Inventory
from meshcore.model import Backend, BackendState, LbPolicy, Protocol, Service, Severity, WorkloadRef

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: web-a, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: c, ports: [{containerPort: 8080, name: http}, {containerPort: 53, name: dns, protocol: UDP}]}]
status: {podIPs: [{ip: 10.1.0.1}, {ip: "fd00::1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: c, ports: [{containerPort: 9090, name: http}]}]
status: {podIP: 10.1.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: web-other-ns, namespace: other, labels: {app: web}}
spec:
  containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]
status: {podIP: 10.2.0.1}
---
"""


def _service(inventory: Inventory, name: str, namespace: str = "shop") -> Service:
    service = inventory.service(namespace, name)
    assert service is not None, f"no service {namespace}/{name}"
    return service


def _with_pods(service_yaml: str) -> str:
    return PODS + textwrap.dedent(service_yaml)


def test_dual_stack_service_has_both_vips_and_its_fqdn(translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok(_with_pods("""
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: shop}
        spec:
          clusterIP: 10.96.0.10
          clusterIPs: [10.96.0.10, "fd00:96::a"]
          ipFamilyPolicy: PreferDualStack
          selector: {app: web}
          ports: [{port: 80, targetPort: 8080}]
    """))
    service = _service(inventory, "web")
    assert service.vips == ("10.96.0.10", "fd00:96::a")
    assert service.hostnames == ("web.shop.svc.cluster.local",)
    assert service.lb_policy is LbPolicy.RANDOM
    (port,) = service.ports
    # Every address of every selected pod of the namespace, at the numbered target port.
    assert port.backends == (
        Backend("10.1.0.1", 8080, workload=WorkloadRef("shop", "web-a")),
        Backend("10.1.0.2", 8080, workload=WorkloadRef("shop", "web-b")),
        Backend("fd00::1", 8080, workload=WorkloadRef("shop", "web-a")),
    )
    assert all(b.weight == 1 and b.state is BackendState.ACTIVE for b in port.backends)


def test_target_port_defaults_to_the_port(translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok(_with_pods("""
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: shop}
        spec: {selector: {app: web}, ports: [{port: 8080}]}
    """))
    assert {b.port for b in _service(inventory, "web").ports[0].backends} == {8080}
    assert _service(inventory, "web").vips == ()


def test_named_target_port_resolves_per_pod(translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok(_with_pods("""
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: shop}
        spec:
          clusterIP: 10.96.0.10
          selector: {app: web}
          ports:
          - {name: http, port: 80, targetPort: http}
          - {name: dns, port: 53, targetPort: dns, protocol: UDP}
    """))
    service = _service(inventory, "web")
    http = service.port(80)
    dns = service.port(53, "UDP")
    assert http is not None and dns is not None
    assert {(b.address, b.port) for b in http.backends} == {
        ("10.1.0.1", 8080), ("fd00::1", 8080), ("10.1.0.2", 9090),
    }
    # web-b declares no "dns" port: it is no backend of that port.
    assert {(b.address, b.port) for b in dns.backends} == {("10.1.0.1", 53), ("fd00::1", 53)}
    assert dns.protocol is Protocol.UDP


def test_named_target_port_no_selected_pod_declares_is_a_warning(translate: Translate) -> None:
    text = _with_pods("""
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: shop}
        spec:
          selector: {app: web}
          ports:
          - {name: http, port: 80, targetPort: http}
          - {name: admin, port: 81, targetPort: admin}
    """)
    inventory, diagnostics = translate(text)
    service = _service(inventory, "web")
    assert len(service.port(80).backends) == 3  # type: ignore[union-attr]
    assert service.port(81).backends == ()  # type: ignore[union-attr]
    (warning,) = diagnostics
    assert (warning.code, warning.severity, warning.field) == ("MC1005", Severity.WARNING, "spec.ports[1].targetPort")
    assert warning.source.line == line_of(text, "targetPort: admin")


def test_selector_that_selects_no_pods_is_a_warning(translate: Translate) -> None:
    text = _with_pods("""
        apiVersion: v1
        kind: Service
        metadata: {name: api, namespace: shop}
        spec:
          selector: {app: api}
          ports: [{port: 80}]
    """)
    inventory, diagnostics = translate(text)
    assert _service(inventory, "api").ports[0].backends == ()
    (warning,) = diagnostics
    assert warning.code == "MC1004" and warning.field == "spec.selector"
    assert warning.source.line == line_of(text, "selector: {app: api}")


def test_service_without_selector_or_slices_has_no_backends(translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok(_with_pods("""
        apiVersion: v1
        kind: Service
        metadata: {name: external-db, namespace: shop}
        spec: {clusterIP: 10.96.0.20, ports: [{port: 5432}]}
    """))
    assert _service(inventory, "external-db").ports[0].backends == ()


def test_headless_service_has_no_vips_but_keeps_its_backends(translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok(_with_pods("""
        apiVersion: v1
        kind: Service
        metadata: {name: web-headless, namespace: shop}
        spec:
          clusterIP: None
          selector: {app: web}
          ports: [{name: http, port: 80, targetPort: http}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: bare-headless, namespace: shop}
        spec: {clusterIPs: ["None"], selector: {app: web}}
    """))
    service = _service(inventory, "web-headless")
    assert service.vips == ()
    assert len(service.ports[0].backends) == 3
    assert _service(inventory, "bare-headless").ports == ()


def test_not_ready_pods_are_excluded_unless_published_and_terminating_pods_drain(
    translate_ok: Callable[[str], Inventory],
) -> None:
    inventory = translate_ok("""
        apiVersion: v1
        kind: Pod
        metadata: {name: ready, labels: {app: x}}
        spec: {containers: [{name: c}]}
        status:
          podIP: 10.0.0.1
          conditions: [{type: Ready, status: "True"}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: unready, labels: {app: x}}
        spec: {containers: [{name: c}]}
        status:
          podIP: 10.0.0.2
          conditions: [{type: Ready, status: "False"}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: leaving, labels: {app: x}, deletionTimestamp: "2024-01-01T00:00:00Z"}
        spec: {containers: [{name: c}]}
        status:
          podIP: 10.0.0.3
          conditions: [{type: Ready, status: "False"}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: x}
        spec: {selector: {app: x}, ports: [{port: 80}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: x-all}
        spec: {selector: {app: x}, publishNotReadyAddresses: true, ports: [{port: 80}]}
    """)
    states = {b.address: b.state for b in _service(inventory, "x", "default").ports[0].backends}
    assert states == {"10.0.0.1": BackendState.ACTIVE, "10.0.0.3": BackendState.TERMINATING}
    published = {b.address: b.state for b in _service(inventory, "x-all", "default").ports[0].backends}
    assert published == {"10.0.0.1": BackendState.ACTIVE, "10.0.0.2": BackendState.ACTIVE,
                         "10.0.0.3": BackendState.TERMINATING}


def test_session_affinity_client_ip_means_consistent_hashing(translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok("""
        apiVersion: v1
        kind: Service
        metadata: {name: sticky}
        spec: {sessionAffinity: ClientIP, ports: [{port: 80}]}
    """)
    assert _service(inventory, "sticky", "default").lb_policy is LbPolicy.CONSISTENT_HASH


def test_external_name_service_is_kept_without_vips_or_backends_and_warned(translate: Translate) -> None:
    text = _with_pods("""
        apiVersion: v1
        kind: Service
        metadata: {name: payments, namespace: shop}
        spec:
          type: ExternalName
          externalName: payments.example.com
          selector: {app: web}
          ports: [{port: 443}]
    """)
    inventory, diagnostics = translate(text)
    service = _service(inventory, "payments")
    assert service.vips == () and service.ports[0].backends == ()
    (warning,) = diagnostics
    assert warning.code == "MC1003" and warning.field == "spec.type"
    assert "payments.example.com" in warning.message
    assert warning.source.line == line_of(text, "type: ExternalName")


@pytest.mark.parametrize(("app_protocol", "expected"), [
    ("http", Protocol.HTTP),
    ("HTTP", Protocol.HTTP),
    ("kubernetes.io/h2c", Protocol.HTTP2),
    ("http2", Protocol.HTTP2),
    ("grpc", Protocol.GRPC),
    ("tls", Protocol.TLS),
    ("https", Protocol.TLS),
    ("kubernetes.io/ws", Protocol.HTTP),
    ("kubernetes.io/wss", Protocol.TLS),
    ("mysql", Protocol.TCP),
])
def test_app_protocol_decides_the_port_protocol(
    translate_ok: Callable[[str], Inventory], app_protocol: str, expected: Protocol,
) -> None:
    inventory = translate_ok(f"""
        apiVersion: v1
        kind: Service
        metadata: {{name: s}}
        spec: {{ports: [{{name: http-web, port: 80, appProtocol: "{app_protocol}"}}]}}
    """)
    # appProtocol wins over the port name (http-web would mean HTTP).
    assert _service(inventory, "s", "default").ports[0].protocol is expected


@pytest.mark.parametrize(("name", "expected"), [
    ("http", Protocol.HTTP),
    ("http-web", Protocol.HTTP),
    ("http2-api", Protocol.HTTP2),
    ("grpc", Protocol.GRPC),
    ("grpc-web", Protocol.HTTP),
    ("tls-db", Protocol.TLS),
    ("https", Protocol.TLS),
    ("tcp-redis", Protocol.TCP),
    ("udp-x", Protocol.TCP),  # the protocol field, TCP by default, decides the transport
    ("httpx", Protocol.TCP),
    ("web", Protocol.TCP),
])
def test_port_name_prefix_decides_the_protocol_without_app_protocol(
    translate_ok: Callable[[str], Inventory], name: str, expected: Protocol,
) -> None:
    inventory = translate_ok(f"""
        apiVersion: v1
        kind: Service
        metadata: {{name: s}}
        spec: {{ports: [{{name: {name}, port: 80}}]}}
    """)
    assert _service(inventory, "s", "default").ports[0].protocol is expected


def test_udp_ports_stay_udp_and_tcp_udp_may_share_a_number(translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok("""
        apiVersion: v1
        kind: Service
        metadata: {name: dns}
        spec:
          ports:
          - {name: dns, port: 53, protocol: UDP, appProtocol: http}
          - {name: dns-tcp, port: 53, protocol: TCP}
    """)
    service = _service(inventory, "dns", "default")
    assert [(p.port, p.protocol) for p in service.ports] == [(53, Protocol.TCP), (53, Protocol.UDP)]


def test_sctp_service_ports_are_left_out_with_a_warning(translate: Translate) -> None:
    inventory, diagnostics = translate("""
        apiVersion: v1
        kind: Service
        metadata: {name: sig}
        spec:
          ports:
          - {name: a, port: 80}
          - {name: b, port: 9999, protocol: SCTP}
    """)
    assert [p.port for p in _service(inventory, "sig", "default").ports] == [80]
    assert [(d.code, d.field) for d in diagnostics] == [("MC1011", "spec.ports[1].protocol")]
