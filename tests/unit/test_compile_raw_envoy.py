"""Raw Envoy configs compiled: the ``<ns>/<svc>`` cluster a CiliumEnvoyConfig names and its load assignment."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from typing import Any

import attrs

import meshcore
from meshcore import model as m
from meshcore.compile import CompileOptions, Plan, compile_plan
from meshcore.proxy import CLUSTER, ENDPOINT, build_resources

NS = "default"
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
_OPTIONS = CompileOptions(proxy_enabled=True, proxy_port_base=15001, proxy_port_range=50)

A = m.WorkloadRef(NS, "a")
B = m.WorkloadRef(NS, "b")


def echo(*extra: m.ServicePort, http_backends: Sequence[m.Backend] | None = None) -> m.Service:
    """``echo``: http 8080 and alt 80 both on target 8080 of a and b, admin 9000 on a only, plus ``extra``."""
    http = tuple(http_backends) if http_backends is not None else (
        m.Backend("10.0.0.1", 8080, weight=3, workload=A), m.Backend("10.0.0.2", 8080, workload=B))
    return m.Service("echo", NS, vips=("10.96.0.10",), ports=(
        m.ServicePort(8080, "HTTP", "http", backends=http),
        m.ServicePort(80, "HTTP", "alt", backends=http),
        m.ServicePort(9000, "TCP", "admin", backends=(m.Backend("10.0.0.1", 9000, workload=A),)),
        *extra,
    ))


def cec(name: str, cluster: str, spec: str = "") -> str:
    """A config in Cilium's documentation style: a TCP proxy to ``cluster``, a Cluster of the same name."""
    return textwrap.dedent(f"""
        apiVersion: cilium.io/v2
        kind: CiliumEnvoyConfig
        metadata: {{name: {name}, namespace: {NS}}}
        spec:
          {spec or "backendServices: [{name: echo}]"}
          resources:
          - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
            name: l
            filter_chains:
            - filters:
              - name: tcp
                typed_config: {{"@type": {_TCP}, stat_prefix: {name}, cluster: "{cluster}"}}
        """)


def compiled(service: m.Service, *configs: str, traffic: Sequence[m.TrafficPolicy] = ()) -> Plan:
    result = meshcore.translate(text="---".join(configs))
    assert result.ok, [str(d) for d in result.errors]
    snap = m.Snapshot(namespaces=(m.Namespace(NS),), services=(service,),
                      envoy_configs=result.snapshot.envoy_configs, traffic_policies=tuple(traffic))
    return compile_plan(snap, "n1", _OPTIONS)


def assignment(plan: Plan, name: str) -> list[tuple[str, int, int]]:
    """(address, port, weight) of every endpoint of the load assignment ``name``."""
    body: dict[str, Any] = dict(build_resources(plan.envoy).of(ENDPOINT)[name].body)
    return sorted((e["endpoint"]["address"]["socket_address"]["address"],
                   e["endpoint"]["address"]["socket_address"]["port_value"], e["load_balancing_weight"])
                  for group in body.get("endpoints", []) for e in group["lb_endpoints"])


def warnings(plan: Plan, code: str) -> list[m.Diagnostic]:
    return [w for w in plan.envoy.warnings if w.code == code]


def test_service_cluster_holds_every_tcp_port_backend_once_with_its_weight() -> None:
    plan = compiled(echo(m.ServicePort(53, "UDP", "dns", backends=(m.Backend("10.0.0.3", 53),))),
                    cec("c", "default/echo"))
    # http and alt share target 8080 (each address once); admin adds a:9000; the UDP port is left out.
    assert assignment(plan, "default/echo") == [("10.0.0.1", 8080, 3), ("10.0.0.1", 9000, 1), ("10.0.0.2", 8080, 1)]
    cluster = build_resources(plan.envoy).of(CLUSTER)["default/echo"].body
    assert cluster["type"] == "EDS" and cluster["eds_cluster_config"] == {
        "eds_config": {"ads": {}, "resource_api_version": "V3"}}
    # The same endpoints as the port form's clusters, which stay as they are.
    assert assignment(plan, "default/echo:8080") == [("10.0.0.1", 8080, 3), ("10.0.0.2", 8080, 1)]
    assert not plan.envoy.warnings


def test_number_filter_and_redirected_ports_select_the_service_cluster_ports() -> None:
    by_name = compiled(echo(), cec("c", "default/echo", 'backendServices: [{name: echo, number: ["admin"]}]'))
    assert assignment(by_name, "default/echo") == [("10.0.0.1", 9000, 1)]
    by_number = compiled(echo(), cec("c", "default/echo", 'backendServices: [{name: echo, number: ["80"]}]'))
    assert assignment(by_number, "default/echo") == [("10.0.0.1", 8080, 3), ("10.0.0.2", 8080, 1)]
    # As in Cilium, the ports a config redirects select too.
    redirected = compiled(echo(), cec("c", "default/echo", "services: [{name: echo, ports: [9000]}]"))
    assert assignment(redirected, "default/echo") == [("10.0.0.1", 9000, 1)]


def test_a_cluster_of_the_config_named_after_the_service_takes_its_endpoints() -> None:
    text = cec("c", "default/echo") + textwrap.indent(textwrap.dedent("""\
        - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
          name: default/echo
          type: EDS
          connect_timeout: 2s
          lb_policy: LEAST_REQUEST
        """), "  ")
    plan = compiled(echo(), text)
    resources = build_resources(plan.envoy)
    own = resources.of(CLUSTER)["default/c/default/echo"]
    assert own.needs == ("default/echo",), "Envoy subscribes to meshcore's load assignment"
    assert own.body["lb_policy"] == "LEAST_REQUEST"
    assert assignment(plan, "default/echo") == [("10.0.0.1", 8080, 3), ("10.0.0.1", 9000, 1), ("10.0.0.2", 8080, 1)]


def test_endpoint_changes_reach_the_service_cluster() -> None:
    config = cec("c", "default/echo", 'backendServices: [{name: echo, number: ["8080"]}]')
    before = compiled(echo(), config)
    after = compiled(echo(http_backends=(m.Backend("10.0.0.2", 8080, workload=B),
                                         m.Backend("10.0.0.4", 8080, state=m.BackendState.TERMINATING),
                                         m.Backend("10.0.0.5", 8080))), config)
    assert assignment(before, "default/echo") == [("10.0.0.1", 8080, 3), ("10.0.0.2", 8080, 1)]
    assert assignment(after, "default/echo") == [("10.0.0.2", 8080, 1), ("10.0.0.5", 8080, 1)]


def test_service_cluster_does_not_collide_with_generated_or_raw_names() -> None:
    plan = compiled(echo(), cec("c", "default/echo"))
    names = [c.name for c in plan.envoy.clusters]
    assert names.count("default/echo") == 1
    assert {"default/echo:80", "default/echo:8080", "default/echo:9000"} <= set(names)
    assert [r.name for r in plan.envoy.raw] == ["default/c/l"]
    assert not warnings(plan, "MC5106")


def test_selected_ports_that_do_not_exist_leave_the_cluster_without_endpoints() -> None:
    plan = compiled(echo(), cec("c", "default/echo", 'backendServices: [{name: echo, number: ["7000"]}]'))
    assert assignment(plan, "default/echo") == []
    [warn] = warnings(plan, "MC5104")
    assert "default/echo" in warn.message and "none of the TCP ports selected" in warn.message
    assert warn.source.name == "c"


def test_two_configs_selecting_different_ports_the_first_applies() -> None:
    plan = compiled(echo(), cec("a", "default/echo", 'backendServices: [{name: echo, number: ["9000"]}]'),
                    cec("b", "default/echo"))
    assert assignment(plan, "default/echo") == [("10.0.0.1", 9000, 1)]
    [warn] = warnings(plan, "MC5112")
    assert warn.source.name == "b"
    assert "CiliumEnvoyConfig default/a selects ports 9000" in warn.message and "80, 8080, 9000" in warn.message


def test_traffic_policy_applies_when_the_selected_ports_share_it() -> None:
    ref = m.ServiceRef(NS, "echo")
    least = m.TrafficPolicy(ref, lb=m.LoadBalancer(m.LbPolicy.LEAST_REQUEST))
    shared = compiled(echo(), cec("c", "default/echo", 'backendServices: [{name: echo, number: ["80", "8080"]}]'),
                      traffic=[least])
    assert build_resources(shared.envoy).of(CLUSTER)["default/echo"].body["lb_policy"] == "LEAST_REQUEST"
    assert not warnings(shared, "MC5112")
    per_port = attrs.evolve(least, port=9000, lb=m.LoadBalancer(m.LbPolicy.ROUND_ROBIN))
    mixed = compiled(echo(), cec("c", "default/echo"), traffic=[least, per_port])
    [warn] = warnings(mixed, "MC5112")
    assert "traffic policies differ" in warn.message
    body = build_resources(mixed.envoy).of(CLUSTER)["default/echo"].body
    assert body["lb_policy"] == "RANDOM", json.dumps(body)  # the service's own policy, no traffic policy
