"""TrafficPolicy: validation, Istio's precedence (port over rule, subset over both), and the decision."""

from __future__ import annotations

import pytest

from meshcore import model as m
from meshcore.compile import CompileOptions, Datapath, compile_plan

WEB = m.ServiceRef("shop", "web")
SRC = m.Source("DestinationRule", "shop", "web", file="dr.yaml", line=3)


def _hash(kind: str, name: str = "") -> m.LoadBalancer:
    return m.LoadBalancer(m.LbPolicy.CONSISTENT_HASH, m.HashKey(kind, name))


@pytest.mark.parametrize(("build", "field", "text"), [
    (lambda: m.HashKey("header"), "name", "needs a name"),
    (lambda: m.HashKey("source_ip", "x"), "name", "has no name"),
    (lambda: m.HashKey("header", "x", path="/"), "path", "only a cookie"),
    (lambda: m.HashKey("nonsense", "x"), None, None),
    (lambda: m.LoadBalancer(m.LbPolicy.CONSISTENT_HASH), "hash_key", "needs a hash key"),
    (lambda: m.LoadBalancer(m.LbPolicy.ROUND_ROBIN, m.HashKey("header", "x")), "hash_key", "only it has one"),
    (lambda: m.LoadBalancer(m.LbPolicy.ROUND_ROBIN, minimum_ring_size=8), "minimum_ring_size", "ring size"),
    (lambda: m.LoadBalancer(m.LbPolicy.CONSISTENT_HASH, m.HashKey("header", "x"), "MAGLEV", 8),
     "minimum_ring_size", "ring size"),
    (lambda: m.ConnectionPool(max_connections=-1), "max_connections", ">= 0"),
    (lambda: m.ConnectionPool(connect_timeout_ms=0), "connect_timeout_ms", "at least 1 ms"),
    (lambda: m.OutlierDetection(max_ejection_percent=101), "max_ejection_percent", "between 0 and 100"),
    (lambda: m.OutlierDetection(base_ejection_time_ms=-5), "base_ejection_time_ms", "at least 1 ms"),
    (lambda: m.UpstreamTls("MUTUAL", ca_certificates="/ca.pem"), "client_certificate", "MUTUAL TLS needs"),
    (lambda: m.UpstreamTls("ISTIO_MUTUAL", ca_certificates="/ca.pem"), "mode", "takes no certificate"),
    (lambda: m.UpstreamTls("SIMPLE", subject_alt_names=["a"]), "subject_alt_names", "only with ca_certificates"),
    (lambda: m.TrafficPolicy(WEB, 0), "port", "not a valid port"),
    (lambda: m.TrafficPolicy(WEB, subset_labels={"a": "b"}), "subset_labels", "need a subset name"),
])
def test_invalid_settings_name_the_field(build, field, text) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((m.ModelError, ValueError)) as info:
        build()
    if field is not None:
        assert isinstance(info.value, m.ModelError) and info.value.field == field and text in str(info.value)


def test_header_hash_keys_are_lower_cased() -> None:
    assert m.HashKey("header", "X-User").name == "x-user"
    assert m.HashKey("query_parameter", "User").name == "User"


def test_precedence_port_over_rule_subset_over_both() -> None:
    rule = m.TrafficPolicy(WEB, lb=m.LoadBalancer("ROUND_ROBIN"), connection_pool=m.ConnectionPool(max_connections=10),
                           outlier_detection=m.OutlierDetection(consecutive_5xx_errors=5), source=SRC)
    port = m.TrafficPolicy(WEB, 80, lb=_hash("header", "x-user"),
                           connection_pool=m.ConnectionPool(http1_max_pending_requests=1), source=SRC)
    subset = m.TrafficPolicy(WEB, subset="v2", subset_labels={"version": "v2"},
                             lb=m.LoadBalancer("LEAST_REQUEST"), source=SRC)
    subset_port = m.TrafficPolicy(WEB, 80, "v2", {"version": "v2"}, tls=m.UpstreamTls("SIMPLE"), source=SRC)
    snap = m.Snapshot(traffic_policies=[subset_port, subset, port, rule])
    # Another port: the rule's settings alone.
    other = snap.traffic_policy(WEB, 81)
    assert other is not None and other.lb == m.LoadBalancer("ROUND_ROBIN") and other.port == 81
    # The port's settings replace the rule's whole (connection pool included, not merged field by field).
    on_port = snap.traffic_policy(WEB, 80)
    assert on_port is not None
    assert on_port.lb == _hash("header", "x-user")
    assert on_port.connection_pool == m.ConnectionPool(http1_max_pending_requests=1)
    assert on_port.outlier_detection == m.OutlierDetection(consecutive_5xx_errors=5)
    assert on_port.tls is None
    # The subset's over the port's; the subset's port-level over everything.
    sub = snap.traffic_policy(WEB, 80, "v2")
    assert sub is not None and sub.subset == "v2" and sub.subset_labels == (("version", "v2"),)
    assert sub.lb == m.LoadBalancer("LEAST_REQUEST")
    assert sub.connection_pool == m.ConnectionPool(http1_max_pending_requests=1)
    assert sub.tls == m.UpstreamTls("SIMPLE")
    assert sub.source == SRC
    # A subset without its own policy gets the port's settings; a service without any, nothing.
    assert snap.traffic_policy(WEB, 80, "v1") == on_port.__class__(WEB, 80, "v1", lb=on_port.lb,
                                                                   connection_pool=on_port.connection_pool,
                                                                   outlier_detection=on_port.outlier_detection)
    assert snap.traffic_policy(m.ServiceRef("shop", "cart"), 80) is None
    assert snap.traffic_subsets(WEB, 80) == ("v2",)


def test_snapshot_sorts_rejects_duplicates_and_hashes_policies() -> None:
    a = m.TrafficPolicy(WEB, 80, lb=m.LoadBalancer("RANDOM"), source=SRC)
    b = m.TrafficPolicy(WEB, lb=m.LoadBalancer("ROUND_ROBIN"))
    assert m.Snapshot(traffic_policies=[a, b]).content_hash == m.Snapshot(traffic_policies=[b, a]).content_hash
    assert m.Snapshot(traffic_policies=[a, b]).traffic_policies == (b, a)
    assert m.Snapshot(traffic_policies=[b]).content_hash != m.Snapshot(traffic_policies=[a, b]).content_hash
    with pytest.raises(m.ModelError, match=r"duplicate TrafficPolicy.*dr.yaml:3"):
        m.Snapshot(traffic_policies=[a, m.TrafficPolicy(WEB, 80, lb=m.LoadBalancer("LEAST_REQUEST"))])


def _snapshot(protocol: str, policy: m.TrafficPolicy, *, with_policy: bool = False) -> m.Snapshot:
    w = m.Workload("web-1", "shop", m.Identity("shop", "web"), addresses=("10.244.1.1",), labels={"app": "web"})
    port = m.ServicePort(80, protocol, "p", backends=(m.Backend("10.244.1.1", 8080, workload=w.ref),))
    svc = m.Service("web", "shop", vips=("10.96.0.10",), ports=(port,))
    policies = (m.AuthorizationPolicy("allow", "shop", m.WorkloadSelector("shop", {"app": "web"}), "ALLOW",
                                      [m.PolicyRule()]),) if with_policy else ()
    return m.Snapshot(workloads=(w,), services=(svc,), traffic_policies=(policy,), policies=policies)


@pytest.mark.parametrize(("protocol", "policy", "datapath", "reason"), [
    ("HTTP", m.TrafficPolicy(WEB, lb=_hash("header", "x-user"), source=SRC), Datapath.ENVOY,
     "DestinationRule shop/web sets consistent hashing on header x-user"),
    ("HTTP", m.TrafficPolicy(WEB, connection_pool=m.ConnectionPool(http1_max_pending_requests=1), source=SRC),
     Datapath.ENVOY, "DestinationRule shop/web sets connection pool limits (http1_max_pending_requests)"),
    ("HTTP", m.TrafficPolicy(WEB, lb=m.LoadBalancer("ROUND_ROBIN"), source=SRC), Datapath.EBPF,
     "asks for ROUND_ROBIN load balancing; the kernel picks a backend at random by weight for each connection"),
    ("HTTP", m.TrafficPolicy(WEB, tls=m.UpstreamTls("ISTIO_MUTUAL"), source=SRC), Datapath.EBPF,
     "ISTIO_MUTUAL TLS, which is not implemented"),
    ("TCP", m.TrafficPolicy(WEB, lb=_hash("source_ip"), source=SRC), Datapath.ENVOY,
     "sets consistent hashing on the source IP"),
    ("TCP", m.TrafficPolicy(WEB, lb=_hash("header", "x-user"), source=SRC), Datapath.EBPF,
     "consistent hashing on header x-user needs HTTP; ignored on this TCP port"),
    ("TCP", m.TrafficPolicy(WEB, connection_pool=m.ConnectionPool(max_connections=1, max_retries=2), source=SRC),
     Datapath.ENVOY, "sets connection pool limits (max_connections)"),
    ("UDP", m.TrafficPolicy(WEB, outlier_detection=m.OutlierDetection(consecutive_5xx_errors=1), source=SRC),
     Datapath.EBPF, "but UDP cannot be proxied"),
])
def test_decision_names_the_rule_and_the_setting(protocol: str, policy: m.TrafficPolicy, datapath: Datapath,
                                                 reason: str) -> None:
    plan = compile_plan(_snapshot(protocol, policy), "n", CompileOptions(proxy_enabled=True))
    (decision,) = plan.decisions
    assert decision.datapath is datapath and reason in decision.reason, decision
    if datapath is Datapath.ENVOY:
        assert decision.source == SRC
        (cluster,) = plan.envoy.clusters
        assert cluster.name == "shop/web:80" and cluster.traffic is not None
        listener = plan.envoy.listeners[0]
        assert listener.is_http == (protocol == "HTTP")


def test_tcp_port_under_an_authorization_policy_is_proxied_with_its_policy() -> None:
    policy = m.TrafficPolicy(WEB, outlier_detection=m.OutlierDetection(consecutive_5xx_errors=1), source=SRC)
    plan = compile_plan(_snapshot("TCP", policy, with_policy=True), "n", CompileOptions(proxy_enabled=True))
    (decision,) = plan.decisions
    assert decision.datapath is Datapath.ENVOY, decision
    # The TCP listener checks the policy itself (the backend's kernel policy exempts the proxy).
    (chain,) = plan.envoy.listeners[0].tcp
    assert [(f.action.value, [p.name for p in f.policies]) for f in chain.rbac] == [("ALLOW", ["shop/allow[0]"])]


def test_istio_consistent_hash_with_two_keys_is_an_error_at_the_field() -> None:
    import meshcore
    from meshcore_istio import adapter

    text = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: two-keys, namespace: shop}
spec:
  host: a.example.com
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user, useSourceIp: true}
"""
    result = meshcore.translate(text=text, adapters=[adapter])
    (diag,) = [d for d in result.diagnostics if d.severity.value == "error"]
    assert diag.field.startswith("spec.trafficPolicy.loadBalancer.consistentHash"), diag
    assert "httpHeaderName" in diag.message and "useSourceIp" in diag.message, diag
    assert not result.snapshot.traffic_policies


def test_port_level_policy_replacing_all_drops_the_rules_settings() -> None:
    rule = m.TrafficPolicy(WEB, lb=m.LoadBalancer("ROUND_ROBIN"), outlier_detection=m.OutlierDetection(
        consecutive_5xx_errors=5), tls=m.UpstreamTls("SIMPLE"), source=SRC)
    port = m.TrafficPolicy(WEB, 80, connection_pool=m.ConnectionPool(max_connections=1), replaces_all=True)
    reset = m.TrafficPolicy(WEB, 81, replaces_all=True)
    subset = m.TrafficPolicy(WEB, subset="v2", subset_labels={"version": "v2"}, lb=m.LoadBalancer("LEAST_REQUEST"))
    subset_port = m.TrafficPolicy(WEB, 80, "v2", {"version": "v2"}, tls=m.UpstreamTls("DISABLE"), replaces_all=True)
    snap = m.Snapshot(traffic_policies=[rule, port, reset, subset, subset_port])
    on_port = snap.traffic_policy(WEB, 80)
    assert on_port is not None and on_port.settings == {"connection_pool": m.ConnectionPool(max_connections=1)}
    # A port entry with no settings resets the port to defaults.
    assert snap.traffic_policy(WEB, 81) is None
    # The subset's settings override the port's one by one; its port entry replaces everything again.
    on_81_v2 = snap.traffic_policy(WEB, 81, "v2")
    assert on_81_v2 is not None and on_81_v2.settings == {"lb": m.LoadBalancer("LEAST_REQUEST")}
    on_80_v2 = snap.traffic_policy(WEB, 80, "v2")
    assert on_80_v2 is not None and on_80_v2.settings == {"tls": m.UpstreamTls("DISABLE")}
    on_82_v2 = snap.traffic_policy(WEB, 82, "v2")
    assert on_82_v2 is not None and set(on_82_v2.settings) == {"lb", "outlier_detection", "tls"}
    with pytest.raises(m.ModelError, match="port-level"):
        m.TrafficPolicy(WEB, replaces_all=True)
