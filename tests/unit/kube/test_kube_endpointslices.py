"""EndpointSlices, when a service has any, are the authority on its backends."""

from __future__ import annotations

from collections.abc import Callable

from kube_text import Translate, line_of

from meshcore.kube import Inventory
from meshcore.model import BackendState, Service, Severity, WorkloadRef

SERVICE = """
apiVersion: v1
kind: Pod
metadata: {name: selected-pod, namespace: shop, labels: {app: cart}}
spec: {containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]}
status: {podIP: 10.9.9.9}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.96.0.30
  selector: {app: cart}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: metrics, port: 9090}
---
"""


def _service(inventory: Inventory, name: str = "cart", namespace: str = "shop") -> Service:
    service = inventory.service(namespace, name)
    assert service is not None
    return service


def _backends(inventory: Inventory, number: int = 80) -> dict[tuple[str, int], BackendState]:
    port = _service(inventory).port(number)
    assert port is not None
    return {(b.address, b.port): b.state for b in port.backends}


def test_slices_replace_the_selector_and_conditions_decide_the_state(
    translate_ok: Callable[[str], Inventory],
) -> None:
    inventory = translate_ok(SERVICE + """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: cart-abc12
  namespace: shop
  labels: {kubernetes.io/service-name: cart}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.1.0.1]
  conditions: {ready: true, serving: true, terminating: false}
  targetRef: {kind: Pod, name: cart-1, namespace: shop}
- addresses: [10.1.0.2]
  conditions: {ready: false, serving: true, terminating: true}
  targetRef: {kind: Pod, name: cart-2}
- addresses: [10.1.0.3]
  conditions: {ready: false, terminating: false}
- addresses: [10.1.0.4]
  conditions: {ready: false, serving: false, terminating: true}
- addresses: [10.1.0.5]
- addresses: [10.1.0.6, 10.1.0.7]
  conditions: {}
""")
    assert _backends(inventory) == {
        ("10.1.0.1", 8080): BackendState.ACTIVE,
        ("10.1.0.2", 8080): BackendState.TERMINATING,  # draining: kept, takes no new connections
        # 10.1.0.3 is not ready, 10.1.0.4 no longer serving: left out.
        ("10.1.0.5", 8080): BackendState.ACTIVE,  # no conditions: ready
        ("10.1.0.6", 8080): BackendState.ACTIVE,  # the first of fungible addresses
    }
    port = _service(inventory).port(80)
    assert port is not None
    workloads = {b.address: b.workload for b in port.backends}
    assert workloads["10.1.0.1"] == WorkloadRef("shop", "cart-1")
    assert workloads["10.1.0.2"] == WorkloadRef("shop", "cart-2")
    assert workloads["10.1.0.5"] is None
    # The slice names no "metrics" port: that port has no backends (the selector is not used).
    assert _backends(inventory, 9090) == {}


def test_slices_of_one_service_are_merged_per_port_by_name(translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok(SERVICE + """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: cart-v4, namespace: shop, labels: {kubernetes.io/service-name: cart}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: metrics, port: 9091}]
endpoints: [{addresses: [10.1.0.1]}, {addresses: [10.1.0.2]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: cart-v6, namespace: shop, labels: {kubernetes.io/service-name: cart}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["fd00:0:0::1"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: cart-moving, namespace: shop, labels: {kubernetes.io/service-name: cart}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.1.0.2]
  conditions: {ready: false, terminating: true}
""")
    assert _backends(inventory) == {
        ("10.1.0.1", 8080): BackendState.ACTIVE,
        ("10.1.0.2", 8080): BackendState.ACTIVE,  # listed twice while moving: the active entry wins
        ("fd00::1", 8080): BackendState.ACTIVE,
    }
    assert _backends(inventory, 9090) == {("10.1.0.1", 9091): BackendState.ACTIVE,
                                          ("10.1.0.2", 9091): BackendState.ACTIVE}


def test_unnamed_single_port_matches_the_unnamed_slice_port(translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok("""
        apiVersion: v1
        kind: Service
        metadata: {name: db}
        spec: {ports: [{port: 5432}]}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: db-1, labels: {kubernetes.io/service-name: db}}
        addressType: IPv4
        ports: [{port: 5432}]
        endpoints: [{addresses: [192.168.1.10]}]
    """)
    service = inventory.service("default", "db")
    assert service is not None
    assert [(b.address, b.port) for b in service.ports[0].backends] == [("192.168.1.10", 5432)]


def test_slice_without_service_label_or_service_or_with_fqdn_is_ignored_with_a_warning(
    translate: Translate,
) -> None:
    text = SERVICE + """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: orphan, namespace: shop}
addressType: IPv4
endpoints: [{addresses: [10.1.0.1]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ghost-1, namespace: shop, labels: {kubernetes.io/service-name: ghost}}
addressType: IPv4
endpoints: [{addresses: [10.1.0.1]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: cart-fqdn, namespace: shop, labels: {kubernetes.io/service-name: cart}}
addressType: FQDN
endpoints: [{addresses: [db.example.com]}]
"""
    inventory, diagnostics = translate(text)
    assert [(d.code, d.source.name, d.severity) for d in diagnostics] == [
        ("MC1008", "orphan", Severity.WARNING),
        ("MC1009", "ghost-1", Severity.WARNING),
        ("MC1010", "cart-fqdn", Severity.WARNING),
    ]
    assert diagnostics[2].source.line == line_of(text, "addressType: FQDN")
    # The ignored FQDN slice does not take authority from the selector.
    assert _backends(inventory) == {("10.9.9.9", 8080): BackendState.ACTIVE}


def test_address_of_the_wrong_family_is_an_error_and_the_slice_is_dropped(translate: Translate) -> None:
    text = SERVICE + """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: cart-bad, namespace: shop, labels: {kubernetes.io/service-name: cart}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.1.0.1]
- addresses: ["fd00::2"]
"""
    inventory, diagnostics = translate(text)
    (error,) = diagnostics
    assert (error.code, error.field) == ("MC1006", "endpoints[1].addresses[0]")
    assert error.source.line == line_of(text, "fd00::2")
    assert "not an IPv4 address" in error.message
    # Nothing of the broken slice is used: the selector still decides.
    assert _backends(inventory) == {("10.9.9.9", 8080): BackendState.ACTIVE}


def test_wrongly_typed_condition_is_an_error_with_its_path(translate: Translate) -> None:
    text = SERVICE + """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: cart-bad, namespace: shop, labels: {kubernetes.io/service-name: cart}}
addressType: IPv4
endpoints:
- addresses: [10.1.0.1]
  conditions: {ready: "yes"}
"""
    _, diagnostics = translate(text)
    (error,) = diagnostics
    assert (error.code, error.field) == ("MC0102", "endpoints[0].conditions.ready")
    assert error.source.line == line_of(text, 'ready: "yes"')


def test_long_port_names_of_services_and_slices_match(translate_ok: Callable[[str], Inventory]) -> None:
    # Service and slice port names are DNS labels (up to 63 characters), not container port names.
    inventory = translate_ok("""
        apiVersion: v1
        kind: Service
        metadata: {name: exporter}
        spec: {ports: [{name: prometheus-metrics-endpoint, port: 9100}]}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: exporter-1, labels: {kubernetes.io/service-name: exporter}}
        addressType: IPv4
        ports: [{name: prometheus-metrics-endpoint, port: 9100}]
        endpoints: [{addresses: [10.0.0.5]}]
    """)
    service = inventory.service("default", "exporter")
    assert service is not None and [b.address for b in service.ports[0].backends] == ["10.0.0.5"]
