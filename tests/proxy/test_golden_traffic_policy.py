"""Golden Envoy resources for DestinationRule traffic policies, from Istio YAML through compile.

Input: ``tests/golden/plan/istio-traffic-policy.in.yaml`` (whose plan stage shows the
decisions); output: ``tests/golden/envoy/istio-traffic-policy.json``, exactly what the node
Envoy receives (clusters with circuit breakers, outlier detection, hash load balancers and
upstream TLS; routes with hash policies). Regenerate with ``--update-golden`` and read the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import meshcore
from meshcore.compile import CompileOptions, compile_plan
from meshcore.proxy import ProxySettings, build_resources, canonical_json

GOLDEN = Path(__file__).parent.parent / "golden"
INPUT = GOLDEN / "plan" / "istio-traffic-policy.in.yaml"
OUTPUT = GOLDEN / "envoy" / "istio-traffic-policy.json"


def test_golden_traffic_policy_resources(request: pytest.FixtureRequest) -> None:
    cwd = os.getcwd()
    os.chdir(INPUT.parent)
    try:
        result = meshcore.translate([INPUT.name])
    finally:
        os.chdir(cwd)
    plan = compile_plan(result.snapshot, "node-1", CompileOptions(proxy_enabled=True, proxy_port_base=15001))
    actual = canonical_json(build_resources(plan.envoy, ProxySettings(listen_ipv4="10.244.0.1")))
    warnings = sorted(f"{d.code} {d.message}" for d in plan.envoy.warnings)
    assert warnings == [
        "MC5110 HTTP route 0 (shop/web.http[0]) of shop/web:80 sends to clusters hashing on different keys "
        "(header x-user, cookie session); their consistent hashing is not applied on this route"], warnings
    if request.config.getoption("--update-golden"):
        OUTPUT.write_text(actual)
        return
    assert OUTPUT.exists(), f"{OUTPUT.name} is missing: run pytest {__file__} --update-golden"
    assert actual == OUTPUT.read_text(), (
        f"{INPUT.name} no longer renders to {OUTPUT.name}; if intended, regenerate with --update-golden and read the diff"
    )
