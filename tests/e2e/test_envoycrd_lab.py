"""Raw Envoy configs (CiliumEnvoyConfig) in the lab: real node Envoy, curl from a client pod.

One lab serves the module. Requests go to the services' names (their ClusterIPs), so a
redirected service port reaches the config's listener through the socket-level hand-off,
exactly as meshcore's own L7 ports do; which pod (or which listener) answered tells
whether the redirect and the config's routing applied.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _lab_support import client_pod, curl_json, meshcore_cli, running_lab, unique_name, write

from meshcore.lab import Lab

pytestmark = pytest.mark.root

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v1}
spec:
  replicas: 1
  selector: {matchLabels: {app: web, version: v1}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      containers: [{name: echo, image: meshcore/echo, args: ["--http", "8080"], ports: [{containerPort: 8080}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v2}
spec:
  replicas: 1
  selector: {matchLabels: {app: web, version: v2}}
  template:
    metadata: {labels: {app: web, version: v2}}
    spec:
      containers: [{name: echo, image: meshcore/echo, args: ["--http", "8080"], ports: [{containerPort: 8080}]}]
---""" + client_pod("client", labels={}, container="c") + "".join(f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {selector}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
""" for name, selector in [
    ("web", "{app: web}"), ("web-v1", "{app: web, version: v1}"), ("web-v2", "{app: web, version: v2}"),
    ("notice", "{app: web}"), ("edge", "{app: web}"), ("plain", "{app: web, version: v1}"),
    ("own", "{app: web, version: v2}"),
]) + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: own}
spec:
  parentRefs: [{group: "", kind: Service, name: own, port: 80}]
  rules:
  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-mesh, value: own}]}}]
    backendRefs: [{name: own, port: 80}]
"""


def _node(lab_name: str) -> str:
    """The lab node, labelled so the configs' node selectors can match it (zone a)."""
    return f"""
apiVersion: v1
kind: Node
metadata: {{name: lab-{lab_name}, labels: {{zone: a}}}}
"""


def _hcm(prefix: str, routes: str) -> str:
    """An HTTP connection manager with an inline route configuration (``routes``: YAML at depth 10)."""
    return f"""
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {_HCM}
          stat_prefix: {prefix}
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": {_ROUTER}}}}}]
          route_config:
            name: {prefix}-routes
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:{routes}"""


# 90/10 between meshcore's EDS clusters of web-v1 and web-v2, retrying 5xx; a header
# pins a request to v2 (to watch a failing v2 answer being retried). The virtual host
# tells the upstream which attempt it sees, so the echo server's answer shows retries.
CANARY = f"""
apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {{name: canary}}
spec:
  services: [{{name: web, ports: [80]}}]
  backendServices: [{{name: web-v1}}, {{name: web-v2}}]
  resources:
  - "@type": {_LISTENER}
    name: web-listener
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {_HCM}
          stat_prefix: canary
          rds: {{route_config_name: web-routes}}
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": {_ROUTER}}}}}]
  - "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
    name: web-routes
    virtual_hosts:
    - name: web
      domains: ["*"]
      include_request_attempt_count: true
      routes:
      - match: {{prefix: /, headers: [{{name: x-canary, string_match: {{exact: always}}}}]}}
        route:
          cluster: default/web-v2:80
          retry_policy: {{retry_on: 5xx, num_retries: 2}}
      - match: {{prefix: /}}
        route:
          weighted_clusters:
            clusters:
            - {{name: default/web-v1:80, weight: 90}}
            - {{name: default/web-v2:80, weight: 10}}
          retry_policy: {{retry_on: 5xx, num_retries: 2}}
"""

# A listener of its own answering every request itself; selects the lab node (zone a).
NOTICE = f"""
apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {{name: notice}}
spec:
  nodeSelector: {{matchLabels: {{zone: a}}}}
  services: [{{name: notice, listener: notice}}]
  resources:
  - "@type": {_LISTENER}
    name: notice
""" + _hcm("notice", """
              - match: {path: /healthz}
                direct_response: {status: 200, body: {inline_string: "ok from raw config\\n"}}
              - match: {prefix: /}
                direct_response: {status: 503, body: {inline_string: "down for maintenance\\n"}}
""")

# The same kind of config for another node (zone b): the lab node must not apply it.
ELSEWHERE = f"""
apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {{name: elsewhere}}
spec:
  nodeSelector: {{matchLabels: {{zone: b}}}}
  services: [{{name: edge, listener: edge}}]
  resources:
  - "@type": {_LISTENER}
    name: edge
""" + _hcm("edge", """
              - match: {prefix: /}
                direct_response: {status: 418, body: {inline_string: "zone b only\\n"}}
""")

# Parses as a valid Listener, but two filter chains with the same (empty) match are
# something only Envoy refuses (a NACK).
BROKEN = f"""
apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {{name: broken}}
spec:
  resources:
  - "@type": {_LISTENER}
    name: twins
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": {_TCP}, stat_prefix: one, cluster: default/web-v1:80}}
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": {_TCP}, stat_prefix: two, cluster: default/web-v2:80}}
"""

# Added with the broken config, in the same generation: a new service and a config
# redirecting it, which must apply although Envoy refuses the broken one.
LATE = """
apiVersion: v1
kind: Service
metadata: {name: late}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
""" + f"""
apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {{name: late}}
spec:
  services: [{{name: late, listener: late}}]
  resources:
  - "@type": {_LISTENER}
    name: late
""" + _hcm("late", """
              - match: {prefix: /}
                direct_response: {status: 200, body: {inline_string: "late but applied\\n"}}
""")


class Client:
    """curl inside the lab's client pod."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def get(self, url: str, *args: str) -> tuple[int, Any]:
        """Status and JSON body (or text) of one request."""
        return curl_json(self.lab, "client", url, *args, timeout=20)

    def pods(self, url: str, count: int) -> collections.Counter[str]:
        """Which version answered each of ``count`` requests (one curl, many transfers)."""
        result = self.lab.run("client", ["curl", "-sS", "-m", "5", "-w", "\\n", *([url] * count)], timeout=60)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        answers = [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]
        assert len(answers) == count
        return collections.Counter(a["pod"].split("-")[1] for a in answers)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, list[Path]]]:
    """A lab with two web versions, the canary, notice and elsewhere configs, a labelled node."""
    tmp = tmp_path_factory.mktemp("envoycrd")
    name = unique_name()
    files = [write(tmp, "app.yaml", APP), write(tmp, "node.yaml", _node(name)),
             write(tmp, "configs.yaml", "---\n".join([CANARY, NOTICE, ELSEWHERE]))]
    with running_lab(files, name=name) as lab:
        yield lab, files


def test_weighted_split_90_10_with_retries(mesh: tuple[Lab, list[Path]]) -> None:
    c = Client(mesh[0])
    counts = c.pods("http://web/", 300)
    # 300 draws at p=0.1: sigma of v2's count is 5.2; 12..48 is about 3.5 sigma.
    assert counts["v1"] + counts["v2"] == 300 and 12 <= counts["v2"] <= 48, counts
    # A v2 answer that fails is retried twice (the third attempt's answer is returned).
    status, body = c.get("http://web/fails?echo_status=503", "-H", "x-canary: always")
    assert status == 503 and body["pod"].startswith("web-v2"), body
    assert body["headers"].get("X-Envoy-Attempt-Count") == ["3"], body["headers"]
    status, body = c.get("http://web/ok", "-H", "x-canary: always")
    assert status == 200 and body["headers"].get("X-Envoy-Attempt-Count") == ["1"], body["headers"]


def test_custom_listener_answers_directly(mesh: tuple[Lab, list[Path]]) -> None:
    c = Client(mesh[0])
    assert c.get("http://notice/healthz") == (200, "ok from raw config\n")
    assert c.get("http://notice/anything") == (503, "down for maintenance\n")


def test_config_for_other_nodes_is_not_applied(mesh: tuple[Lab, list[Path]]) -> None:
    # elsewhere selects zone b: edge is not redirected, its pods answer as plain eBPF service.
    status, body = Client(mesh[0]).get("http://edge/")
    assert status == 200 and body["pod"].startswith("web-"), body


def _mesh_keeps_working(lab: Lab) -> None:
    c = Client(lab)
    assert c.get("http://notice/healthz") == (200, "ok from raw config\n")
    assert set(c.pods("http://web/", 20)) <= {"v1", "v2"}
    status, body = c.get("http://own/")
    assert status == 200 and body["pod"].startswith("web-v2") and body["headers"].get("X-Mesh") == ["own"], body
    status, body = c.get("http://plain/")
    assert status == 200 and body["pod"].startswith("web-v1"), body


def test_rejected_resource_is_reported_and_the_rest_keeps_working(
        mesh: tuple[Lab, list[Path]], tmp_path: Path) -> None:
    lab, files = mesh
    broken = write(tmp_path, "broken.yaml", "---\n".join([BROKEN, LATE]))
    try:
        result = lab.up([*files, broken], timeout=60)
        agent = result.agent
        assert agent is not None
        assert "CiliumEnvoyConfig default/broken" in agent.error and "twins" in agent.error, agent
        # Only the refused config is left out: the rest of the generation is applied.
        assert agent.ok and agent.applied_generation == agent.wanted_generation, agent
        assert Client(lab).get("http://late/") == (200, "late but applied\n")
        out = meshcore_cli("lab", "status", "--name", lab.name, "-o", "json")
        assert out.returncode == 0, out.stderr
        reported = json.loads(out.stdout)["agent"]
        assert "CiliumEnvoyConfig default/broken" in reported["error"], reported
        live = {(c["kind"], c["namespace"], c["name"]): c for c in reported["configStatus"]}
        rejected = live[("CiliumEnvoyConfig", "default", "broken")]
        assert not rejected["accepted"] and rejected["reason"] == "Rejected", rejected
        assert [(e["resource"], e["type"], e["name"]) for e in rejected["errors"]] == [(0, "Listener", "twins")], \
            rejected
        assert all(e["message"] for e in rejected["errors"]), rejected
        for good in ("late", "canary", "notice"):
            assert live[("CiliumEnvoyConfig", "default", good)]["accepted"], live
        assert live[("CiliumEnvoyConfig", "default", "elsewhere")]["reason"] == "NotSelected", live
        shown = meshcore_cli("status", "--lab", lab.name, "-o", "json")
        assert shown.returncode == 1, shown.stderr  # a config is rejected
        statuses = {(s["kind"], s["name"]): s["status"] for s in json.loads(shown.stdout)["statuses"]}
        [accepted] = [c for c in statuses[("CiliumEnvoyConfig", "broken")]["conditions"] if c["type"] == "Accepted"]
        assert accepted["status"] == "False" and accepted["reason"] == "Rejected", accepted
        assert "twins" in accepted["message"], accepted
        [accepted] = [c for c in statuses[("CiliumEnvoyConfig", "late")]["conditions"] if c["type"] == "Accepted"]
        assert accepted["status"] == "True", accepted
        table = meshcore_cli("lab", "status", "--name", lab.name)
        assert "CiliumEnvoyConfig default/broken" in " ".join(table.stdout.decode().split()), table.stdout
        shown_table = " ".join(table.stdout.decode().split())
        assert "Envoy configs" in shown_table and "twins" in shown_table.partition("Envoy configs")[2], table.stdout
        _mesh_keeps_working(lab)
    finally:
        restored = lab.up(files, timeout=60)
    assert restored.agent is not None and restored.agent.ok and not restored.agent.error, restored.agent
    _mesh_keeps_working(lab)
