"""Checks over the translated snapshot as a whole."""

from __future__ import annotations

import meshcore

POD_AND_POLICY = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  containers: [{name: c, image: x}]
status: {podIP: 10.244.1.5, podIPs: [{ip: 10.244.1.5}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: net, namespace: default}
spec:
  action: ALLOW
  rules:
  - from:
    - source: {ipBlocks: ["%s"]}
"""


def test_an_ip_block_holding_pod_addresses_is_a_warning_naming_them() -> None:
    result = meshcore.translate(text=POD_AND_POLICY % "10.244.0.0/16")
    [warning] = [d for d in result.diagnostics if d.code == "MC0230"]
    assert "default/web" in warning.message and "10.244.0.0/16" in warning.message
    assert (warning.source.kind, warning.source.name) == ("AuthorizationPolicy", "net") and warning.field == "rules[0].sources[0]"


def test_an_ip_block_outside_the_mesh_is_not_reported() -> None:
    result = meshcore.translate(text=POD_AND_POLICY % "192.168.0.0/16")
    assert not [d for d in result.diagnostics if d.code == "MC0230"]
