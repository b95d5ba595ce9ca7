"""ServiceEntry, WorkloadEntry and DestinationRule traffic policy."""

from __future__ import annotations

from _istio_support import codes, find, http, istio, pod, service, translate
from meshcore.model import HostnameBackend, LbPolicy, Protocol, Resolution, ServiceRef


def test_static_service_entry_becomes_a_service_with_backends() -> None:
    result = translate(istio("ServiceEntry", "ext.api", """
        hosts: [api.example.com]
        addresses: [203.0.113.10]
        resolution: STATIC
        ports: [{number: 443, name: https, protocol: HTTPS, targetPort: 8443}]
        endpoints:
        - {address: 192.0.2.1}
        - {address: 192.0.2.2, weight: 2, ports: {https: 9443}}
    """))
    svc = result.snapshot.service(ServiceRef("default", "ext-api"))
    assert svc is not None and svc.vips == ("203.0.113.10",) and svc.hostnames == ("api.example.com",)
    [port] = svc.ports
    assert port.protocol is Protocol.TLS
    assert sorted((b.address, b.port, b.weight) for b in port.backends) == [
        ("192.0.2.1", 8443, 1), ("192.0.2.2", 9443, 2)]


def test_dns_resolution_without_endpoints_resolves_the_hosts() -> None:
    result = translate(istio("ServiceEntry", "ext", """
        hosts: [ext.example.com]
        addresses: [240.0.0.5]
        resolution: DNS
        ports: [{number: 80, name: http}, {number: 8443, name: tls, protocol: TLS, targetPort: 443}]
    """))
    svc = result.snapshot.service(ServiceRef("default", "ext"))
    assert svc is not None and svc.resolution is Resolution.DNS
    assert [(p.port, p.backends, p.hostname_backends) for p in svc.ports] == [
        (80, (), (HostnameBackend("ext.example.com", 80),)),
        (8443, (), (HostnameBackend("ext.example.com", 443),))]
    assert not result.diagnostics


def test_dns_endpoints_and_round_robin() -> None:
    result = translate(istio("ServiceEntry", "ext", """
        hosts: [api.example.com]
        resolution: DNS
        ports: [{number: 80, name: http}]
        endpoints:
        - {address: US.api.example.com., ports: {http: 8080}, weight: 3}
        - {address: 192.0.2.9}
    """), istio("ServiceEntry", "one", """
        hosts: [one.example.com]
        resolution: DNS_ROUND_ROBIN
        ports: [{number: 80, name: http}]
        endpoints: [{address: lb.example.com}]
    """))
    ext = result.snapshot.service(ServiceRef("default", "ext"))
    one = result.snapshot.service(ServiceRef("default", "one"))
    assert ext is not None and one is not None
    assert ext.ports[0].hostname_backends == (HostnameBackend("us.api.example.com", 8080, 3),
                                              HostnameBackend("192.0.2.9", 80))
    assert one.resolution is Resolution.DNS_ROUND_ROBIN
    assert one.ports[0].hostname_backends == (HostnameBackend("lb.example.com", 80),)


def test_hostname_workload_entries_are_backends_of_the_dns_service_entries_selecting_them() -> None:
    result = translate(
        istio("WorkloadEntry", "vm", "address: vm1.corp.example\nlabels: {app: legacy}\nports: {http: 8080}"),
        istio("WorkloadEntry", "stray", "address: vm2.corp.example\nlabels: {app: nobody}"),
        istio("ServiceEntry", "legacy", """
            hosts: [legacy.corp.example]
            resolution: DNS
            ports: [{number: 80, name: http}]
            workloadSelector: {labels: {app: legacy}}
        """))
    svc = result.snapshot.service(ServiceRef("default", "legacy"))
    assert svc is not None and svc.ports[0].hostname_backends == (HostnameBackend("vm1.corp.example", 8080),)
    [warning] = [d for d in result.diagnostics if d.code == "MC7014"]
    assert (warning.source.name, warning.field) == ("stray", "spec.address")
    assert "only resolved for a ServiceEntry with resolution DNS" in warning.message
    assert not [d for d in result.diagnostics if d.severity.value == "error"]


def test_workload_entries_are_workloads_selected_by_service_entries() -> None:
    result = translate(
        istio("WorkloadEntry", "vm1", "address: 10.5.0.1\nlabels: {app: db}\nserviceAccount: db\nports: {pg: 6432}"),
        istio("ServiceEntry", "db", """
            hosts: [db.internal]
            resolution: STATIC
            location: MESH_INTERNAL
            ports: [{number: 5432, name: pg, protocol: TCP}]
            workloadSelector: {labels: {app: db}}
        """))
    [w] = result.snapshot.workloads
    assert w.identity.service_account == "db" and w.addresses == ("10.5.0.1",)
    svc = result.snapshot.service(ServiceRef("default", "db"))
    assert svc is not None and [(b.address, b.port) for b in svc.ports[0].backends] == [("10.5.0.1", 6432)]


def test_invalid_combinations_of_service_entries() -> None:
    result = translate(istio("ServiceEntry", "a", """
        hosts: [a.example.com]
        resolution: NONE
        ports: [{number: 80, name: http}]
        endpoints: [{address: 192.0.2.1}]
    """))
    assert find(result, "MC7010").field == "spec.endpoints"


def test_destination_rule_load_balancer_applies_to_service_entries() -> None:
    result = translate(istio("ServiceEntry", "ext", """
        hosts: [ext.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http}]
        endpoints: [{address: 192.0.2.1}]
    """), istio("DestinationRule", "ext", """
        host: ext.example.com
        trafficPolicy:
          loadBalancer: {consistentHash: {httpHeaderName: x-user}}
          outlierDetection: {consecutive5xxErrors: 5, interval: 10s}
          tls: {mode: SIMPLE}
    """))
    svc = result.snapshot.service(ServiceRef("default", "ext"))
    assert svc is not None and svc.lb_policy is LbPolicy.CONSISTENT_HASH
    (policy,) = result.snapshot.traffic_policies
    assert policy.service == svc.ref and policy.lb is not None and policy.lb.hash_key is not None
    assert policy.outlier_detection is not None and policy.tls is not None
    # Only the unverified server certificate (no caCertificates) is reported now.
    assert codes(result).count("MC7013") == 1


def test_subset_selecting_no_backend_is_reported() -> None:
    result = translate(service("app", selector="{app: app}"), pod("app-1", "{app: app, version: v1}", "10.1.0.1"),
                       pod("other", "{app: other, version: v2}", "10.1.0.2"),
                       istio("DestinationRule", "app", """
        host: app
        subsets:
        - {name: v1, labels: {version: v1}}
        - {name: v2, labels: {version: v2}}
    """))
    # A pod with the subset's labels outside the service (app: other) does not count.
    warning = find(result, "MC7007")
    assert warning.field == "spec.subsets[1].labels"
    assert warning.message == ("subset 'v2' selects no workload of default/app: none of its backends has the labels "
                               "version=v2")


def test_destination_rule_of_the_clients_namespace_is_preferred() -> None:
    shared = istio("DestinationRule", "app", """
        host: app.shop.svc.cluster.local
        subsets: [{name: v1, labels: {track: shared}}]
    """, namespace="shop")
    local = istio("DestinationRule", "app", """
        host: app.shop.svc.cluster.local
        subsets: [{name: v1, labels: {track: local}}]
    """, namespace="client")
    vs = istio("VirtualService", "app", """
        hosts: [app.shop.svc.cluster.local]
        http:
        - route: [{destination: {host: app.shop.svc.cluster.local, subset: v1}}]
    """, namespace="client")
    result = translate(service("app", namespace="shop"), shared, local, vs)
    [route] = http(result, "app", namespace="shop")
    assert dict(route.destinations[0].subset_labels) == {"track": "local"}


def test_rule_with_a_workload_selector_does_not_shadow_a_plain_rule_for_the_host() -> None:
    selected = istio("DestinationRule", "a-selected", """
        host: app
        workloadSelector: {matchLabels: {app: client}}
        trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
    """, extra_meta='creationTimestamp: "2024-01-01T00:00:00Z"')
    plain = istio("DestinationRule", "b-plain", """
        host: app
        trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
    """, extra_meta='creationTimestamp: "2024-02-01T00:00:00Z"')
    result = translate(service("app", selector="{app: app}"), pod("app-1", "{app: app}", "10.1.0.1"), selected, plain)
    # The older rule only applies to the workloads it selects: the newer plain rule is no conflict.
    assert "MC7016" not in codes(result), result.diagnostics
    (policy,) = result.snapshot.traffic_policies
    assert policy.source.name == "b-plain" and policy.lb is not None and policy.lb.hash_key is not None


def test_second_plain_rule_for_a_host_is_still_a_conflict() -> None:
    older = istio("DestinationRule", "a", "host: app\ntrafficPolicy: {loadBalancer: {simple: RANDOM}}",
                  extra_meta='creationTimestamp: "2024-01-01T00:00:00Z"')
    newer = istio("DestinationRule", "b", "host: app\ntrafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}",
                  extra_meta='creationTimestamp: "2024-02-01T00:00:00Z"')
    result = translate(service("app", selector="{app: app}"), pod("app-1", "{app: app}", "10.1.0.1"), older, newer)
    assert find(result, "MC7016").source.name == "b"
    (policy,) = result.snapshot.traffic_policies
    assert policy.source.name == "a"


def test_port_level_settings_replace_the_rules_settings_and_an_empty_entry_resets_the_port() -> None:
    result = translate(service("app", ports="[{name: http, port: 80}, {name: b, port: 81}, {name: c, port: 82}]"),
                       istio("DestinationRule", "app", """
        host: app
        trafficPolicy:
          loadBalancer: {consistentHash: {httpHeaderName: x-user}}
          outlierDetection: {consecutive5xxErrors: 5}
          portLevelSettings:
          - port: {number: 80}
            connectionPool: {tcp: {maxConnections: 1}}
          - port: {number: 81}
        subsets:
        - name: v2
          labels: {version: v2}
          trafficPolicy:
            loadBalancer: {simple: LEAST_REQUEST}
    """))
    snap, ref = result.snapshot, ServiceRef("default", "app")
    on_80 = snap.traffic_policy(ref, 80)
    assert on_80 is not None and set(on_80.settings) == {"connection_pool"}
    assert snap.traffic_policy(ref, 81) is None
    on_82 = snap.traffic_policy(ref, 82)
    assert on_82 is not None and set(on_82.settings) == {"lb", "outlier_detection"}
    v2_on_80 = snap.traffic_policy(ref, 80, "v2")
    assert v2_on_80 is not None and set(v2_on_80.settings) == {"lb", "connection_pool"}
    assert v2_on_80.lb is not None and v2_on_80.lb.policy is LbPolicy.LEAST_REQUEST


def _severities(result: object) -> list[tuple[str, str, str]]:
    return [(d.severity.value, d.code, d.field) for d in result.diagnostics]  # type: ignore[attr-defined]


def test_valid_entries_meshcore_does_not_apply_are_warnings_naming_what_is_left_out() -> None:
    result = translate(
        istio("ServiceEntry", "noports", "hosts: [a.example]\nresolution: NONE"),
        istio("ServiceEntry", "partial", """
            hosts: ["*x.example", b.example]
            resolution: STATIC
            ports: [{number: 80, name: http, protocol: HTTP}]
            endpoints: [{address: 192.0.2.1}, {address: "unix:///run/app.sock"}]
        """),
        istio("WorkloadEntry", "dns", "address: vm.example.com"),
        istio("WorkloadEntry", "uds", "address: unix:///run/vm.sock"),
    )
    assert not [d for d in result.diagnostics if d.severity.value == "error"]
    warned = {(d.code, d.source.name, d.field): d.message for d in result.diagnostics if d.code == "MC7014"}
    assert "without ports" in warned[("MC7014", "noports", "spec")]
    assert "partial wildcard host '*x.example'" in warned[("MC7014", "partial", "spec.hosts[0]")]
    assert "unix domain socket" in warned[("MC7014", "partial", "spec.endpoints[1].address")]
    assert "hostname address vm.example.com" in warned[("MC7014", "dns", "spec.address")]
    assert "unix domain socket" in warned[("MC7014", "uds", "spec.address")]
    svc = result.snapshot.service(ServiceRef("default", "partial"))
    assert svc is not None and svc.hostnames == ("b.example",)
    assert [b.address for b in svc.ports[0].backends] == ["192.0.2.1"]
    assert result.snapshot.service(ServiceRef("default", "noports")) is None
    assert not result.snapshot.workloads


def test_an_address_listed_twice_is_one_vip_and_static_without_endpoints_is_valid() -> None:
    result = translate(istio("ServiceEntry", "twice", """
        hosts: [a.example]
        addresses: [240.0.0.1, 240.0.0.1]
        resolution: STATIC
        ports: [{number: 80, name: http}]
    """))
    svc = result.snapshot.service(ServiceRef("default", "twice"))
    assert svc is not None and svc.vips == ("240.0.0.1",)
    assert not [d for d in result.diagnostics if d.severity.value == "error"]
