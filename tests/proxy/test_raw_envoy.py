"""Raw Envoy configs (CiliumEnvoyConfig) served by a real Envoy next to meshcore's own config.

The configs are translated by the Envoy CRD adapter from YAML, exactly as a user writes
them; the services are loopback backends. Requests go to the port compile allocated for
the config's address-less listener, which is also the port the socket-level balancer
hands the redirected service's connections to.
"""

from __future__ import annotations

import collections
import http.client
import json
import textwrap
import time
from collections.abc import Callable, Sequence

import attrs
import pytest
from _proxy_support import (
    NS, SETTINGS, Answer, Backend, ProxyEnv, backends, compile_for, request, service, snapshot, table,
)

import meshcore
from meshcore import model as m
from meshcore.compile import Datapath, Plan
from meshcore.proxy import NackError

pytestmark = pytest.mark.envoy

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

CANARY = f"""
apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {{name: canary, namespace: {NS}}}
spec:
  services: [{{name: web, ports: [80]}}]
  backendServices: [{{name: web-v1}}, {{name: web-v2}}]
  resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: web-listener
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {_HCM}
          stat_prefix: canary
          rds: {{route_config_name: web-routes}}
          http_filters:
          - {{name: envoy.filters.http.router, typed_config: {{"@type": {_ROUTER}}}}}
  - "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
    name: web-routes
    virtual_hosts:
    - name: web
      domains: ["*"]
      routes:
      - match: {{prefix: /}}
        route:
          weighted_clusters:
            clusters:
            - {{name: {NS}/web-v1:8080, weight: 90}}
            - {{name: {NS}/web-v2:8080, weight: 10}}
          retry_policy: {{retry_on: 5xx, num_retries: 3, per_try_timeout: 2s}}
"""

NOTICE = f"""
apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {{name: notice, namespace: {NS}}}
spec:
  resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: notice
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {_HCM}
          stat_prefix: notice
          http_filters:
          - {{name: envoy.filters.http.router, typed_config: {{"@type": {_ROUTER}}}}}
          route_config:
            name: notice-routes
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{path: /healthz}}
                direct_response: {{status: 200, body: {{inline_string: "ok from raw config\\n"}}}}
              - match: {{prefix: /}}
                direct_response: {{status: 503, body: {{inline_string: "down for maintenance\\n"}}}}
"""

# As Cilium's documentation writes it: the Cluster is named after the service
# (<namespace>/<service>, no port), type EDS; backendServices' number picks the port.
ECHO = f"""
apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {{name: envoy-lb-listener, namespace: {NS}}}
spec:
  services:
  - name: echo-service
    namespace: {NS}
  backendServices:
  - name: echo-service
    namespace: {NS}
    number: ["8080"]
  resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: envoy-lb-listener
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {_HCM}
          stat_prefix: envoy-lb-listener
          rds: {{route_config_name: lb_route}}
          http_filters:
          - {{name: envoy.filters.http.router, typed_config: {{"@type": {_ROUTER}}}}}
  - "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
    name: lb_route
    virtual_hosts:
    - name: lb_route
      domains: ["*"]
      routes:
      - match: {{prefix: /}}
        route:
          weighted_clusters:
            clusters:
            - {{name: "{NS}/echo-service", weight: 100}}
          retry_policy: {{retry_on: 5xx, num_retries: 3, per_try_timeout: 2s}}
  - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
    name: "{NS}/echo-service"
    connect_timeout: 5s
    lb_policy: ROUND_ROBIN
    type: EDS
    outlier_detection:
      split_external_local_origin_errors: true
      consecutive_local_origin_failure: 2
"""

# Well-formed for the API (so the adapter and protobuf parsing accept it), but two filter
# chains with the same match are something only Envoy itself refuses.
BROKEN = f"""
apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {{name: broken, namespace: {NS}}}
spec:
  resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: twins
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": {_TCP}, stat_prefix: one, cluster: {NS}/web-v1:8080}}
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": {_TCP}, stat_prefix: two, cluster: {NS}/web-v2:8080}}
"""


def _configs(*texts: str) -> tuple[m.EnvoyConfig, ...]:
    result = meshcore.translate(text=textwrap.dedent("---\n".join(texts)))
    assert result.ok, [str(d) for d in result.errors]
    return result.snapshot.envoy_configs


def _raw_port(plan: Plan, name: str) -> int:
    found = [r.proxy_port for r in plan.envoy.raw if r.name == name]
    assert found and found[0] is not None, [r.name for r in plan.envoy.raw]
    return found[0]


def _split_snapshot(v1: m.Service, v2: m.Service, web: m.Service, *texts: str) -> m.Snapshot:
    return attrs.evolve(snapshot([web, v1, v2]), envoy_configs=_configs(*texts))


Apply = Callable[[m.Snapshot], Plan]


def test_weighted_split_with_retries_as_raw_config(apply: Apply) -> None:
    with backends("v1", "v2") as (a, b):
        v1, v2 = service("web-v1", [a], port=8080), service("web-v2", [b], port=8080)
        web = service("web", [a])
        b.fail_first = 2  # the canary's first two answers are 503: retries hide them
        plan = apply(_split_snapshot(v1, v2, web, CANARY))

        port = _raw_port(plan, f"{NS}/canary/web-listener")
        (frontend,) = [s for s in plan.bpf.services if s.service == web.ref]
        assert frontend.proxy_port == port, "the service port is handed to the config's listener"
        (decision,) = [d for d in plan.decisions if d.service == web.ref]
        assert decision.datapath is Datapath.ENVOY
        assert decision.reason == f"redirected to Envoy listener {NS}/canary/web-listener by CiliumEnvoyConfig {NS}/canary"
        assert {c.name for c in plan.envoy.clusters} >= {f"{NS}/web-v1:8080", f"{NS}/web-v2:8080"}

        counts: collections.Counter[str] = collections.Counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(500):
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body
            counts[json.loads(body)["name"]] += 1
        conn.close()
        # 500 draws at p=0.9: sigma is 1.3 points; 5 points is almost 4 sigma.
        assert 0.85 <= counts["v1"] / 500 <= 0.95, counts
        assert len(b.seen) == counts["v2"] + 2, "the two failed answers were retried"


def _echo_service(http: Sequence[Backend], admin: Sequence[Backend]) -> m.Service:
    return m.Service("echo-service", NS, vips=("10.96.0.20",), ports=(
        m.ServicePort(8080, "HTTP", "http", backends=tuple(b.backend() for b in http)),
        m.ServicePort(9000, "HTTP", "admin", backends=tuple(b.backend() for b in admin))))


def test_cilium_style_service_cluster_routes_to_the_selected_port_backends(apply: Apply) -> None:
    with backends("web", "admin", "web-next") as (web, admin, web_next):
        configs = _configs(ECHO)
        plan = apply(attrs.evolve(snapshot([_echo_service([web], [admin])]), envoy_configs=configs))
        port = _raw_port(plan, f"{NS}/envoy-lb-listener/envoy-lb-listener")
        for _ in range(20):
            answer = request(port, "/docs")
            assert (answer.status, answer.name) == (200, "web"), answer.body
        assert not admin.seen, "port 9000 is not in backendServices' number: its backend gets nothing"
        assert web.seen[-1]["path"] == "/docs"

        # The service's endpoints change: the next plan carries them to the same cluster.
        apply(attrs.evolve(snapshot([_echo_service([web_next], [admin])]), envoy_configs=configs))
        answer = _wait_name(port, "web-next")
        assert answer.status == 200


def _wait_name(port: int, name: str, timeout: float = 5.0) -> Answer:
    deadline = time.monotonic() + timeout
    while True:
        answer = request(port, "/", timeout=2)
        if answer.status == 200 and answer.name == name:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} is still answered by {answer.body!r}, not {name}")
        time.sleep(0.1)


def test_custom_listener_with_direct_response(apply: Apply) -> None:
    plan = apply(attrs.evolve(snapshot([]), envoy_configs=_configs(NOTICE)))
    port = _raw_port(plan, f"{NS}/notice/notice")
    ok = request(port, "/healthz")
    assert (ok.status, ok.body) == (200, b"ok from raw config\n")
    down = request(port, "/anything")
    assert (down.status, down.body) == (503, b"down for maintenance\n")


def test_rejected_resource_is_reported_and_the_rest_keeps_working(proxy_env: ProxyEnv, port_base: int) -> None:
    with backends("v1", "v2", "own") as (a, b, own):
        v1, v2 = service("web-v1", [a], port=8080), service("web-v2", [b], port=8080)
        web = service("web", [a])
        mine = service("mine", [own], vip="10.96.0.9")
        routes = table(mine, m.HttpRoute("hdr", destinations=[m.Destination(mine.ref)],
                                         request_headers=m.HeaderModifier(set=[("x-mesh", "1")])))
        snap = attrs.evolve(snapshot([web, v1, v2, mine], [routes]),
                            envoy_configs=_configs(CANARY, NOTICE, BROKEN))
        plan = compile_for(snap, proxy_env.node, port_base)
        version = proxy_env.cp.set_plan(proxy_env.node, plan.envoy, SETTINGS)
        with pytest.raises(NackError) as raised:
            proxy_env.cp.wait_synced(proxy_env.node, version, timeout=10)
        (nack,) = raised.value.nacks
        assert nack.resources == (f"{NS}/broken/twins",), nack
        sources = {(o.source.kind, o.source.namespace, o.source.name) for o in nack.origins}
        assert sources == {("CiliumEnvoyConfig", NS, "broken")}, nack
        (diag,) = nack.diagnostics()
        assert diag.code == "MC5001" and diag.source.name == "broken" and "twins" in diag.message

        # Everything else was applied: the raw listeners, their routes, meshcore's own.
        ok = _wait_ok(_raw_port(plan, f"{NS}/notice/notice"), "/healthz")
        assert ok.body == b"ok from raw config\n"
        split = _wait_ok(_raw_port(plan, f"{NS}/canary/web-listener"), "/")
        assert split.name in ("v1", "v2")
        listener = plan.envoy.listener(f"{NS}/mine:80")
        assert listener is not None
        answer = _wait_ok(listener.proxy_port, "/")
        assert answer.name == "own" and answer.json["headers"]["x-mesh"] == "1"


def _wait_ok(port: int, path: str, timeout: float = 5.0) -> Answer:
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = request(port, path, timeout=2)
            if answer.status == 200:
                return answer
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} did not answer 200 on {path}")
        time.sleep(0.1)
