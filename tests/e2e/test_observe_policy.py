"""`meshcore observe` and the agent's metrics for L3/L4 policy, with real traffic between lab pods."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _lab_support import connect, meshcore_cli, observed, running_lab, write

from meshcore.lab import Lab
from meshcore.observe import DEFAULT_METRICS_ADDRESS

pytestmark = pytest.mark.root

APP = """
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec:
  containers:
  - {name: web, image: meshcore/echo, args: ["--http", "8080"], ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  containers: [{name: main, image: busybox, command: ["sleep", "infinity"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: other, labels: {app: other}}
spec:
  containers: [{name: main, image: busybox, command: ["sleep", "infinity"]}]
"""

NETPOL = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-client}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: http}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin-port}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - to: [{operation: {ports: ["9090"]}}]
"""

@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("observe-lab")
    files = [write(tmp, "app.yaml", APP), write(tmp, "policy.yaml", NETPOL)]
    with running_lab(files, name=f"to{secrets.token_hex(4)}", timeout=30, all_ready=True) as lab:
        yield lab


def server_ip(lab: Lab) -> str:
    return next(p for p in lab.status().pods if p.name == "server").addresses[0]


def observe(lab: Lab, *args: str, keep: Callable[[dict[str, Any]], bool], wait: float = 5) -> list[dict[str, Any]]:
    """Rows of `meshcore observe -o json ARGS` that ``keep`` accepts, waiting for the agent to log them."""
    return observed(lab, *args, keep=keep, wait=wait)


def test_dropped_and_forwarded_flows_with_their_policy(lab: Lab) -> None:
    ip = server_ip(lab)
    assert connect(lab, "other", [(ip, 8080)]) == ["TimeoutError"]
    assert connect(lab, "client", [(ip, 8080), (ip, 9090)]) == ["ok", "TimeoutError"]

    dropped = observe(lab, "--verdict", "dropped", "--layer", "l4",
                      keep=lambda r: r["source"] == "default/other" and r["destinationPort"] == 8080)
    assert dropped, "the flow from other to server:8080 is shown as dropped"
    d = dropped[-1]
    assert (d["layer"], d["verdict"], d["reason"], d["direction"], d["protocol"], d["enforcer"]) == (
        "l4", "DROPPED", "default-deny", "ingress", "TCP", "kernel")
    assert (d["destination"], d["destinationNamespace"], d["destinationAddress"]) == ("default/server", "default", ip)
    assert d["sourceNamespace"] == "default" and d["sourcePort"] > 0
    assert d["sourceIdentity"] > 0 and d["destinationIdentity"] > 0
    # The default deny is the ALLOW policy's: the flow names it and where it is written.
    assert d["policy"] == "default/server-from-client (no rule allows it)", d
    assert re.search(r"policy\.yaml:\d+", d["policySource"]), d
    assert d["sourceIdentity"] != d["destinationIdentity"]

    denied = observe(lab, "--verdict", "dropped", "--pod", "client",
                     keep=lambda r: r["destinationPort"] == 9090)
    assert denied, "the flow from client to server:9090 is shown as denied by the DENY policy"
    x = denied[-1]
    assert x["reason"] == "policy-denied" and "no-admin-port" in x["policy"], x
    assert re.search(r"policy\.yaml:\d+", x["policySource"]), x

    forwarded = observe(lab, "--verdict", "forwarded", "--namespace", "default",
                        keep=lambda r: r["source"] == "default/client" and r["destinationPort"] == 8080)
    assert forwarded, "the flow from client to server:8080 is shown as forwarded"
    f = forwarded[-1]
    assert (f["verdict"], f["reason"], f["destination"]) == ("FORWARDED", "policy-allowed", "default/server")
    assert "server-from-client" in f["policy"] and re.search(r"policy\.yaml:\d+", f["policySource"]), f

    # Filters combine: other's packets leave its own veth (no policy selects it) but never enter server's.
    rows = observe(lab, "--verdict", "forwarded", "--pod", "other", keep=lambda r: True, wait=0)
    assert rows and {(r["source"], r["direction"]) for r in rows} == {("default/other", "egress")}, rows
    assert observe(lab, "--kind", "l7", keep=lambda r: True, wait=0) == [], "--kind is --layer's other name"
    text = meshcore_cli("observe", "--name", lab.name, "--verdict", "dropped", "--pod", "other").stdout.decode()
    assert "default/other" in text and "DROPPED (default-deny)" in text


def test_allowed_flows_past_the_event_rate_show_as_summaries(lab: Lab) -> None:
    from meshcore.datapath import PolicyEnforcer
    from meshcore.linux import bpffs

    status = lab.status()
    ip = server_ip(lab)
    # The lab's agent set the rate when it started; turn it down to none from here.
    with PolicyEnforcer(status.node, bpffs() / "meshcore", netns=status.node_netns) as enforcer:
        enforcer.set_event_rate(0)
        try:
            time.sleep(1.2)  # the counts of earlier flows are drained
            assert connect(lab, "client", [(ip, 8080)] * 3) == ["ok"] * 3
            deadline = time.monotonic() + 8
            while True:  # the three may be counted in one drain or split over two
                rows = observe(lab, "--verdict", "forwarded", "--pod", "server",
                               keep=lambda r: r["summary"] and r["direction"] == "ingress"
                               and r["destinationPort"] == 8080 and r["sourceNamespace"] == "default")
                if sum(r["count"] for r in rows) >= 3 or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
        finally:
            enforcer.set_event_rate(1000)
    assert sum(r["count"] for r in rows) >= 3, rows
    s = rows[-1]
    assert (s["destination"], s["reason"], s["layer"], s["verdict"]) == (
        "default/server", "policy-allowed", "l4", "FORWARDED"), s
    assert "server-from-client" in s["policy"] and s["sourceIdentity"] > 0 and s["sourceAddress"] == "", s
    text = meshcore_cli("observe", "--name", lab.name, "--pod", "server", "--verdict", "forwarded").stdout.decode()
    assert "(summary)" in text, text


def scrape(lab: Lab) -> dict[str, float]:
    """The agent's metrics, read from inside the lab's node namespace: sample line → value."""
    out = subprocess.run(["ip", "netns", "exec", f"mc-{lab.name}-node", "curl", "-sf", "--max-time", "5",
                          f"http://{DEFAULT_METRICS_ADDRESS}/metrics"], capture_output=True, text=True, timeout=15)
    assert out.returncode == 0, f"metrics endpoint not reachable in the node namespace: {out.stderr}"
    samples = {}
    for line in out.stdout.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_count_flows_drops_and_map_entries(lab: Lab) -> None:
    before = scrape(lab)
    ip = server_ip(lab)
    assert connect(lab, "other", [(ip, 8080)] * 2) == ["TimeoutError"] * 2
    assert connect(lab, "client", [(ip, 8080)]) == ["ok"]
    key_drop = 'meshcore_flows_total{direction="ingress",layer="l4",verdict="dropped"}'
    key_reason = 'meshcore_drops_total{direction="ingress",reason="default-deny"}'
    key_fwd = 'meshcore_flows_total{direction="ingress",layer="l4",verdict="forwarded"}'
    deadline = time.monotonic() + 5
    after = scrape(lab)
    # Drops wake the agent at once; allowed flows are read on its next pass (a fraction of a second).
    while time.monotonic() < deadline and (after.get(key_drop, 0) < before.get(key_drop, 0) + 2
                                           or after.get(key_fwd, 0) <= before.get(key_fwd, 0)):
        time.sleep(0.3)
        after = scrape(lab)
    assert after.get(key_drop, 0) >= before.get(key_drop, 0) + 2, after
    assert after.get(key_reason, 0) >= before.get(key_reason, 0) + 2, after
    assert after.get(key_fwd, 0) > before.get(key_fwd, 0), after
    assert after['meshcore_applies_total{result="ok"}'] >= 1
    assert after['meshcore_applies_total{result="failed"}'] == 0
    assert after.get("meshcore_proxy_nacks_total") == 0
    assert after.get('meshcore_flow_reports_total{outcome="event"}', 0) >= 3, "the kernel's report counters"
    assert after.get('meshcore_flow_reports_total{outcome="lost"}') == 0
    assert after['meshcore_map_entries{datapath="policy",map="pol_endpoints"}'] == 3
    assert after['meshcore_map_entries{datapath="policy",map="pol_policy"}'] > 0
    assert after['meshcore_map_entries{datapath="policy",map="pol_ipcache"}'] >= 3


def test_agent_logs_json_lines(lab: Lab) -> None:
    lines = (Path(lab.dir) / "agent.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    applied = [r for r in records if "applied" in r.get("event", "")]
    assert applied and applied[0]["level"] == "info" and "timestamp" in applied[0], lines[-5:]
