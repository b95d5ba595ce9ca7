"""Istio resources in the lab: a bookinfo-like app routed, faulted and authorized by real Envoy and the kernel.

One lab serves the module. reviews has three versions behind one Service; a
VirtualService sends ``end-user: jason`` to v2 and splits the rest 50/50 between v1 and
v3 through DestinationRule subsets. ratings has fault injection (abort and delay on
request headers) and an AuthorizationPolicy allowing the productpage service account
and denying the intruder's. Requests are sent with curl and Python from client pods
running under their own service accounts; the tests check which pod answered, what the
client got and what the flow log says. PeerAuthentication is translated only: mutual
TLS is not implemented, and `meshcore analyze` says so.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _lab_support import (client_pod, connect_once, curl_json, echo_deployment, logged, meshcore_cli, observed,
                          running_lab, write)

from meshcore.lab import Lab
from meshcore.model import WorkloadRef
from meshcore.observe import Flow, Verdict

pytestmark = pytest.mark.root

NS = "bookinfo"


def _echo_deployment(app: str, version: str, account: str) -> str:
    return echo_deployment(f"{app}-{version}", NS, port=9080, labels={"app": app, "version": version},
                           account=account)


APP = "\n---\n".join([
    f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
""",
    *(f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {sa}, namespace: {NS}}}
""" for sa in ("bookinfo-reviews", "bookinfo-ratings", "bookinfo-details", "productpage", "intruder")),
    *(_echo_deployment("reviews", v, "bookinfo-reviews") for v in ("v1", "v2", "v3")),
    _echo_deployment("ratings", "v1", "bookinfo-ratings"),
    _echo_deployment("details", "v1", "bookinfo-details"),
    *(f"""
apiVersion: v1
kind: Service
metadata: {{name: {svc}, namespace: {NS}}}
spec:
  selector: {{app: {svc}}}
  ports: [{{name: http, port: 9080}}]
""" for svc in ("reviews", "ratings", "details")),
    client_pod("productpage", NS, account="productpage"),
    client_pod("intruder", NS, account="intruder"),
])

ISTIO = f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: {NS}}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
  - {{name: v3, labels: {{version: v3}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: {NS}}}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match:
    - headers:
        end-user: {{exact: jason}}
    route:
    - destination: {{host: reviews, subset: v2}}
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: 50
    - destination: {{host: reviews, subset: v3}}
      weight: 50
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: {NS}}}
spec:
  hosts: [ratings.{NS}.svc.cluster.local]
  http:
  - match:
    - headers:
        x-fault: {{exact: abort}}
    fault:
      abort:
        httpStatus: 503
        percentage: {{value: 100}}
    route:
    - destination: {{host: ratings}}
  - match:
    - headers:
        x-fault: {{exact: delay}}
    fault:
      delay:
        fixedDelay: 1s
        percentage: {{value: 100}}
    route:
    - destination: {{host: ratings}}
  - route:
    - destination: {{host: ratings}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ratings-viewer, namespace: {NS}}}
spec:
  selector:
    matchLabels: {{app: ratings}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/{NS}/sa/productpage]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ratings-deny-intruder, namespace: {NS}}}
spec:
  selector:
    matchLabels: {{app: ratings}}
  action: DENY
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/{NS}/sa/intruder]
"""

# An ALLOW rule with HTTP parts: only the node Envoy can check it, so the kernel admits only
# the node proxy to details' port and a client dialling the pod address directly is refused.
DETAILS_L7 = f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: details-readers, namespace: {NS}}}
spec:
  selector:
    matchLabels: {{app: details}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/{NS}/sa/productpage]
    to:
    - operation:
        methods: [GET]
        paths: [/public/*]
"""

PEER_STRICT = f"""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: {NS}}}
spec:
  mtls: {{mode: STRICT}}
"""

PEER_PERMISSIVE = f"""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: {NS}}}
spec:
  mtls: {{mode: PERMISSIVE}}
"""

CONNECT = """
import json, socket, sys
out = []
for host, port in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(1.0)
    try:
        s.connect((host, port)); out.append("ok")
    except OSError as e:
        out.append(type(e).__name__)
    s.close()
print(json.dumps(out))
"""


class Client:
    """curl inside one client pod of the bookinfo namespace (its own service account)."""

    def __init__(self, lab: Lab, pod: str) -> None:
        self.lab = lab
        self.pod = pod

    def curl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        """Run curl in the pod (silent, 5 s limit per transfer)."""
        return self.lab.run(self.pod, ["curl", "-sS", "-m", "5", *args], namespace=NS, timeout=timeout)

    def get(self, url: str, *args: str) -> tuple[int, Any]:
        """Status and JSON body (or text) of one request."""
        return curl_json(self.lab, self.pod, url, *args, namespace=NS)

    def versions(self, url: str, count: int, *args: str) -> collections.Counter[str]:
        """Which version answered each of ``count`` requests (one curl, many transfers)."""
        result = self.curl("-w", "\\n", *args, *([url] * count), timeout=90)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        answers = [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]
        assert len(answers) == count
        return collections.Counter(a["pod"].split("-")[1] for a in answers)


@pytest.fixture(scope="module")
def bookinfo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path]]:
    """The bookinfo-like lab with the Istio resources above; always torn down and checked."""
    tmp = tmp_path_factory.mktemp("istio")
    files = [write(tmp, "app.yaml", APP), write(tmp, "istio.yaml", ISTIO + "---" + DETAILS_L7)]
    with running_lab(files, all_ready=True) as lab:
        yield lab, tmp


def _pod(lab: Lab, prefix: str) -> Any:
    return next(p for p in lab.status().pods if p.name.startswith(prefix) and p.namespace == NS)


def _flows(lab: Lab, keep: Callable[[Flow], bool]) -> list[Flow]:
    """L7 flows of the agent's journal matching ``keep`` (waits for the agent to write them)."""
    return logged(lab, lambda f: f.l7 is not None and keep(f))


def test_end_user_header_routes_to_v2_exactly(bookinfo: tuple[Lab, Path]) -> None:
    counts = Client(bookinfo[0], "productpage").versions("http://reviews:9080/", 30, "-H", "end-user: jason")
    assert counts == {"v2": 30}, counts
    # Another user (and a near miss of the exact match) falls through to the weighted rule.
    counts = Client(bookinfo[0], "productpage").versions("http://reviews:9080/", 20, "-H", "end-user: jasonx")
    assert "v2" not in counts, counts


def test_weighted_subsets_split_50_50_between_v1_and_v3(bookinfo: tuple[Lab, Path]) -> None:
    counts = Client(bookinfo[0], "productpage").versions("http://reviews:9080/", 200)
    # 50/50 over 200: the standard deviation of each count is ~7; allow ~3.5 of them. v2 never.
    assert set(counts) <= {"v1", "v3"} and 75 <= counts["v1"] <= 125, counts


def test_fault_abort_503_for_the_header(bookinfo: tuple[Lab, Path]) -> None:
    c = Client(bookinfo[0], "productpage")
    statuses = collections.Counter(c.get("http://ratings:9080/r", "-H", "x-fault: abort")[0] for _ in range(5))
    assert statuses == {503: 5}, statuses
    status, body = c.get("http://ratings:9080/r")
    assert status == 200 and body["pod"].startswith("ratings-v1"), body
    # The abort is Envoy's own answer: the flow log says the fault filter answered, no upstream.
    flows = _flows(bookinfo[0], lambda f: f.l7.path == "/r" and f.l7.status == 503)
    assert flows and "FI" in flows[-1].l7.flags and flows[-1].destination.workload is None, flows[-1:]


def test_fault_delay_1s_is_measured(bookinfo: tuple[Lab, Path]) -> None:
    c = Client(bookinfo[0], "productpage")

    def timed(*args: str) -> tuple[int, float]:
        # curl's own clock, inside the pod: process start-up in the lab does not count.
        r = c.curl("-o", "/dev/null", "-w", "%{http_code} %{time_total}", *args)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        status, seconds = r.stdout.decode().split()
        return int(status), float(seconds)

    assert timed("-H", "x-fault: delay", "http://ratings:9080/slow")[0] == 200
    status, delayed = timed("-H", "x-fault: delay", "http://ratings:9080/slow")
    plain_status, plain = timed("http://ratings:9080/fast")
    # curl's clock and Envoy's delay timer are read at slightly different points, so a 1 s
    # delay can read as 0.999 s: allow 20 ms below it, far above a plain request's ~2 ms.
    assert (status, plain_status) == (200, 200) and 0.98 <= delayed < 1.5 and plain < 0.5, (delayed, plain)
    flows = _flows(bookinfo[0], lambda f: f.l7.path == "/slow")
    assert flows and "DI" in flows[-1].l7.flags and str(flows[-1].destination.workload).startswith(
        f"{NS}/ratings-v1"), flows


def test_authorization_allows_productpage_and_refuses_intruder(bookinfo: tuple[Lab, Path]) -> None:
    lab = bookinfo[0]
    assert Client(lab, "productpage").get("http://ratings:9080/ok")[0] == 200
    # Through the service the port is proxied: Envoy's RBAC answers 403 for the denied account.
    status, body = Client(lab, "intruder").get("http://ratings:9080/denied")
    assert status == 403 and "RBAC" in str(body), (status, body)
    # An account neither allowed nor denied by name is refused too: an ALLOW policy selects ratings.
    reviews = _pod(lab, "reviews-v1").name
    assert Client(lab, reviews).get("http://ratings:9080/unlisted")[0] == 403
    # Straight to the pod the kernel enforces the same policies at L3/L4: the connection is dropped.
    ratings = _pod(lab, "ratings-v1")
    targets = json.dumps([(a, 9080) for a in ratings.addresses])

    def connect(pod: str) -> list[str]:
        r = lab.run(pod, [sys.executable, "-S", "-c", CONNECT, targets], namespace=NS, timeout=30)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        answer: list[str] = json.loads(r.stdout)
        return answer

    assert connect("productpage") == ["ok"] * len(ratings.addresses)
    assert connect("intruder") == ["TimeoutError"] * len(ratings.addresses)


def test_l7_allow_rule_admits_only_the_node_proxy_at_l4(bookinfo: tuple[Lab, Path]) -> None:
    lab = bookinfo[0]
    page = Client(lab, "productpage")
    status, body = page.get("http://details:9080/public/book")
    assert status == 200 and body["pod"].startswith("details-v1"), (status, body)
    # The rule's method and path are Envoy's to check, with the client's identity.
    assert page.get("http://details:9080/private")[0] == 403
    assert page.get("http://details:9080/public/book", "-X", "POST")[0] == 403
    assert Client(lab, "intruder").get("http://details:9080/public/book")[0] == 403
    # Straight to the pod address the method and path cannot be checked: the kernel drops
    # the connection even for the allowed account, instead of letting it skip the L7 rule.
    details = _pod(lab, "details-v1")
    targets = json.dumps([(a, 9080) for a in details.addresses])
    r = lab.run("productpage", [sys.executable, "-S", "-c", CONNECT, targets], namespace=NS, timeout=30)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert json.loads(r.stdout) == ["TimeoutError"] * len(details.addresses)


def test_denial_is_observed_with_the_policy_source(bookinfo: tuple[Lab, Path]) -> None:
    lab = bookinfo[0]
    ratings = _pod(lab, "ratings-v1")
    outcome, source_port = connect_once(lab, "intruder", ratings.addresses[0], 9080, namespace=NS)
    assert outcome == "TimeoutError", "the kernel drops the intruder's connection to the ratings pod"
    # This connection's rows, by its source port: an earlier test's connection was dropped alike.
    rows = observed(lab, "--verdict", "dropped", "--pod", "intruder", "--namespace", NS, wait=5,
                    keep=lambda r: r["destinationPort"] == 9080 and r["sourcePort"] == source_port)
    assert rows, f"the intruder's connection to ratings (source port {source_port}) is shown as dropped"
    for row in rows:
        assert (row["source"], row["destination"], row["reason"]) == (
            f"{NS}/intruder", f"{NS}/{ratings.name}", "policy-denied"), row
        assert "ratings-deny-intruder" in row["policy"] and re.search(r"istio\.yaml:\d+", row["policySource"]), row
    # Through the service Envoy refuses the request; its flow names the DENY policy that matched,
    # and `observe` shows the request as dropped by policy.
    assert Client(lab, "intruder").get("http://ratings:9080/observed-denial")[0] == 403
    flows = _flows(lab, lambda f: f.l7.path == "/observed-denial")
    assert flows and flows[-1].l7.status == 403, flows
    assert f"{NS}/ratings-deny-intruder" in flows[-1].l7.details, flows[-1]
    denied = flows[-1]
    assert (denied.verdict, denied.policy, denied.source.workload) == (
        Verdict.DROPPED, f"{NS}/ratings-deny-intruder", WorkloadRef(NS, "intruder")), denied
    out = meshcore_cli("observe", "--name", lab.name, "-o", "json", "--layer", "l7", "--pod", "intruder",
                       "--namespace", NS)
    l7 = [r for r in map(json.loads, out.stdout.decode().splitlines()) if r["path"] == "/observed-denial"]
    assert l7 and (l7[-1]["verdict"], l7[-1]["reason"], l7[-1]["status"]) == ("DROPPED", "policy-denied", 403), l7
    assert l7[-1]["policy"] == "bookinfo/ratings-deny-intruder", l7
    assert re.search(r"istio\.yaml:\d+", l7[-1]["policySource"]), l7


def test_peer_authentication_strict_is_reported_not_enforced(bookinfo: tuple[Lab, Path]) -> None:
    lab, tmp = bookinfo

    def analyze(extra: str) -> list[dict[str, Any]]:
        out = meshcore_cli("analyze", "-f", str(tmp / "app.yaml"), "-f", str(tmp / "istio.yaml"),
                           "-f", str(write(tmp, "peer.yaml", extra)), "-o", "json")
        assert out.returncode == 0, out.stdout + out.stderr
        found: list[dict[str, Any]] = json.loads(out.stdout)["diagnostics"]
        return [d for d in found if d["kind"] == "PeerAuthentication"]

    strict = analyze(PEER_STRICT)
    assert len(strict) == 1 and strict[0]["severity"] == "warning", strict
    assert "enforced only where" in strict[0]["message"] and "STRICT" in strict[0]["message"], strict
    assert (strict[0]["namespace"], strict[0]["name"], strict[0]["field"]) == (NS, "default", "spec.mtls.mode"), strict
    assert strict[0]["file"].endswith("peer.yaml") and strict[0]["line"] == 6, strict
    # PERMISSIVE promises that plain text is accepted, which is what the mesh does.
    assert analyze(PEER_PERMISSIVE) == []
    # And indeed plain text still flows to ratings from the allowed account.
    assert Client(lab, "productpage").get("http://ratings:9080/plain")[0] == 200
