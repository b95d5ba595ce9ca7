"""Mutual TLS across a two-node lab: what the underlay sees, what STRICT refuses, who gets which SVID.

node-1 holds ``client``; node-2 holds ``strict`` (PeerAuthentication STRICT), ``web`` (no
PeerAuthentication: PERMISSIVE) and ``plain`` (DISABLE), each an echo server, and ``site``
(STRICT, HTTP behind an HTTPRoute and an AuthorizationPolicy with an HTTP part, so node-1's
proxy routes and authorizes its requests). ``fenced`` (node-1, client's service account) may
only send to web (an egress NetworkPolicy). A raw AF_PACKET socket on node-1's port of the
fabric bridge records every frame between the nodes while the client sends a marker; only
DISABLE may show it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _lab_support import client_pod, curl_json, logged, meshcore_cli, observed, run_python, running_lab, write

from meshcore import TranslateCode, translate
from meshcore.identity import CaClient, CaError
from meshcore.lab import Lab
from meshcore.lab._ca import CA_SOCKET, ca_dir
from meshcore.lab._state import LabState
from meshcore.linux._netns import in_netns
from meshcore.model import WorkloadRef
from meshcore.observe import Flow, Verdict

pytestmark = pytest.mark.root

MARKER = b"MESHCORE-MARKER-7f3a"


def _echo(name: str, mode: str | None) -> str:
    pa = "" if mode is None else f"""
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  mtls: {{mode: {mode}}}
"""
    return f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  nodeName: node-2
  serviceAccountName: {name}
  containers:
  - {{name: echo, image: meshcore/echo, args: ["--tcp", "9000", "--udp", "9001"],
     ports: [{{containerPort: 9000}}, {{containerPort: 9001, protocol: UDP}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: tcp, port: 9000}}]
{pa}"""


GUARDED = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: guarded-from-others}
spec:
  podSelector: {matchLabels: {app: guarded}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: other}}}]
"""

SITE = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: site}
---
apiVersion: v1
kind: Pod
metadata: {name: site, labels: {app: site}}
spec:
  nodeName: node-2
  serviceAccountName: site
  containers:
  - {name: echo, image: meshcore/echo, args: ["--http", "8080"], ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: site}
spec:
  selector: {app: site}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: site}
spec:
  selector: {matchLabels: {app: site}}
  mtls: {mode: STRICT}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: site}
spec:
  parentRefs: [{group: "", kind: Service, name: site, port: 80}]
  rules:
  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x-route, value: site}]}}]
    backendRefs: [{name: site, port: 80}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: site-readers}
spec:
  selector: {matchLabels: {app: site}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]
    to: [{operation: {methods: [GET]}}]
"""

FENCED = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: fenced-egress}
spec:
  podSelector: {matchLabels: {app: fenced}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 9000}]
"""

APP = "\n---\n".join([SITE, FENCED,
    client_pod("fenced", account="client").replace("spec:", "spec:\n  nodeName: node-1", 1),
    "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: client}",
    client_pod("client", account="client").replace("spec:", "spec:\n  nodeName: node-1", 1),
    client_pod("other", account="client").replace("spec:", "spec:\n  nodeName: node-1", 1),
    _echo("strict", "STRICT"), _echo("web", None), _echo("plain", "DISABLE"), _echo("guarded", "STRICT"), GUARDED,
])

_SEND = """
import json, socket, sys
out = {}
for host in json.loads(sys.argv[1]):
    try:
        s = socket.create_connection((host, 9000), timeout=3)
        s.sendall(sys.argv[2].encode() + b"\\n")
        out[host] = s.recv(100).decode().strip()
        s.close()
    except OSError as exc:
        out[host] = type(exc).__name__
print(json.dumps(out))
"""

_RESOLVE = """
import json, socket, sys
print(json.dumps({name: socket.gethostbyname(name) for name in json.loads(sys.argv[1])}))
"""

_UDP = """
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 1):
        s.sendto(b"x", (sys.argv[1], 9001))
    print(json.dumps("sent"))
except OSError as exc:
    print(json.dumps(type(exc).__name__))
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("mtls")
    os.environ["MESHCORE_CA_TTL"] = "20s"  # renewals every 10 s while the module runs
    try:
        lab = Lab(f"m{os.getpid() % 100000}")
        with running_lab([write(tmp, "app.yaml", APP)], nodes=2, name=lab.name, timeout=90, mtls=True) as up:
            yield up
    finally:
        os.environ.pop("MESHCORE_CA_TTL", None)


class _Capture:
    """Frames on node-1's port of the fabric bridge, recorded by a raw socket until stopped."""

    def __init__(self, lab: Lab) -> None:
        state = LabState.load(lab.dir)
        assert state.fabric is not None
        self.netns = state.fabric.netns
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with in_netns(self.netns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
        sock.bind(("node-1", 0))
        sock.settimeout(0.2)
        self._ready.set()
        while not self._stop.is_set():
            try:
                self.frames.append(sock.recv(65535))
            except TimeoutError:
                continue
        sock.close()

    def __enter__(self) -> _Capture:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(0.5)
        self._stop.set()
        self._thread.join(5)

    def shows(self, data: bytes) -> bool:
        return any(data in f for f in self.frames)


def _addresses(lab: Lab) -> dict[str, str]:
    state = LabState.load(lab.dir)
    return {r.name: r.addresses[0] for r in state.pods.values()}


def test_meshed_traffic_crosses_the_underlay_encrypted_and_disable_in_clear_text(lab: Lab) -> None:
    pods = _addresses(lab)
    for name in ("strict", "web", "plain"):
        with _Capture(lab) as capture:
            # Through the service and to the pod's own address: both are steered.
            got = run_python(lab, "client", _SEND, json.dumps([name, pods[name]]), MARKER.decode())
        assert got == {name: MARKER.decode(), pods[name]: MARKER.decode()}, (name, got)
        assert capture.frames, "the capture saw nothing on the fabric"
        assert capture.shows(MARKER) is (name == "plain"), name


def test_the_servers_ingress_policy_applies_to_tunnelled_connections(lab: Lab) -> None:
    # client and other share a service account (one SPIFFE ID): the policy tells them apart by pod.
    pods = _addresses(lab)
    assert run_python(lab, "other", _SEND, json.dumps([pods["guarded"]]), "hi") == {pods["guarded"]: "hi"}
    refused = run_python(lab, "client", _SEND, json.dumps([pods["guarded"], "guarded"]), "hi")
    # The tunnel closes it after the client's bytes went out: an end of stream or a reset, never an answer.
    assert set(refused) == {pods["guarded"], "guarded"}, refused
    assert all(outcome in ("", "ConnectionResetError") for outcome in refused.values()), refused


def test_a_process_on_the_underlay_forging_a_pods_address_is_refused_by_a_strict_workload(lab: Lab) -> None:
    pods = _addresses(lab)
    state = LabState.load(lab.dir)
    node1 = state.nodes["node-1"]
    results = {}
    for name in ("strict", "web"):
        with in_netns(node1.netns):
            # The client pod's address, bound from node-1 itself (no pod, no steering, no tunnel).
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT: any source address
        sock.settimeout(2)
        sock.bind((pods["client"], 0))
        try:
            sock.connect((pods[name], 9000))
            results[name] = "connected"
        except OSError as exc:
            results[name] = f"{type(exc).__name__} {exc}"
        finally:
            sock.close()
    # Neither completes (the answer would go to the real pod), but only web's SYN got there.
    assert results == {"strict": "TimeoutError timed out", "web": "TimeoutError timed out"}, results
    drops = logged(lab, lambda f: f.node == "node-2" and f.verdict is Verdict.DROPPED
                   and f.destination.address == pods["strict"] and f.source.address == pods["client"])
    assert drops and "strict" in drops[-1].policy, drops[-1]
    # PERMISSIVE admits clear text: the forged SYN reached web (whose answer went to the real pod).
    assert logged(lab, lambda f: f.node == "node-2" and f.verdict is Verdict.FORWARDED
                  and f.destination.address == pods["web"] and f.source.address == pods["client"])


def test_udp_to_a_strict_workload_is_refused_at_the_client_not_sent_in_clear(lab: Lab) -> None:
    pods = _addresses(lab)
    start = datetime.now(UTC)
    assert run_python(lab, "client", _UDP, pods["web"]) == "sent"
    assert run_python(lab, "client", _UDP, pods["strict"]) == "ConnectionRefusedError"
    assert run_python(lab, "client", _UDP, pods["strict"]) == "ConnectionRefusedError"

    def refused(flow: Flow) -> bool:
        return flow.time >= start and flow.verdict is Verdict.DROPPED and flow.reason.startswith("mtls-strict")

    # The client's node says why, once per client, destination and interval, with the calls counted.
    deadline = time.monotonic() + 8
    flows = logged(lab, refused, wait=0)
    while sum(f.count for f in flows) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
        flows = logged(lab, refused, wait=0)
    assert sum(f.count for f in flows) == 2, flows
    assert {(f.node, f.reason, f.protocol, f.source.workload, f.source.address, f.destination.workload,
             f.destination.address, f.destination.port) for f in flows} == {
        ("node-1", "mtls-strict-udp", "UDP", WorkloadRef("default", "client"), pods["client"],
         WorkloadRef("default", "strict"), pods["strict"], 9001)}, flows
    # PERMISSIVE web got its datagram (sent before): nothing was refused for it.
    assert not [f for f in flows if f.destination.address == pods["web"]]
    # `meshcore observe` shows it among the drops, naming both pods.
    rows = observed(lab, "--verdict", "dropped", "--pod", "strict",
                    keep=lambda r: datetime.fromisoformat(r["time"]) >= start and r["reason"] == "mtls-strict-udp")
    assert rows and {(r["node"], r["enforcer"], r["source"], r["destination"]) for r in rows} == {
        ("node-1", "kernel", "default/client", "default/strict")}, rows


def test_a_node_asking_the_ca_for_another_nodes_identity_is_refused(lab: Lab) -> None:
    state = LabState.load(lab.dir)
    token = (Path(state.nodes["node-1"].state_dir) / "ca.token").read_text().strip()
    client = CaClient(ca_dir(state) / CA_SOCKET, "node-1", token)
    assert client.fetch("spiffe://cluster.local/ns/default/sa/client")[0].spiffe_id.endswith("/sa/client")
    with pytest.raises(CaError, match="node node-1 runs no workload with identity .*/sa/strict"):
        client.fetch("spiffe://cluster.local/ns/default/sa/strict")


def test_certificates_rotate_under_load_without_a_failed_connection(lab: Lab) -> None:
    state = LabState.load(lab.dir)
    log = ca_dir(state) / "ca.log"
    issued_before = log.read_text().count("issued an SVID for spiffe://cluster.local/ns/default/sa/strict")
    pods = _addresses(lab)
    failures, done = [], 0
    deadline = time.monotonic() + 25  # more than two renewals of a 20 s SVID
    while time.monotonic() < deadline:
        got = run_python(lab, "client", _SEND, json.dumps([pods["strict"], "web"]) , "rotate")
        done += 1
        failures += [h for h, v in got.items() if v != "rotate"]
    issued = log.read_text().count("issued an SVID for spiffe://cluster.local/ns/default/sa/strict")
    assert issued - issued_before >= 2, "the SVID was not renewed while traffic flowed"
    assert done >= 10 and not failures, failures


def test_a_bundle_that_no_longer_trusts_the_ca_stops_the_tunnel(lab: Lab) -> None:
    from meshcore.identity import CertificateAuthority

    pods = _addresses(lab)
    state = LabState.load(lab.dir)
    other = CertificateAuthority.generate("cluster.local").bundle.pem
    extra = ca_dir(state) / "bundle.pem"
    extra.write_text(other)
    try:
        # The CA now hands out a bundle without its own root; the next renewal (≤ 10 s) serves it.
        time.sleep(14)
        got = run_python(lab, "client", _SEND, json.dumps([pods["strict"]]), "after")
        assert got[pods["strict"]] != "after", got
    finally:
        extra.unlink()
    time.sleep(14)
    assert run_python(lab, "client", _SEND, json.dumps([pods["strict"]]), "back") == {pods["strict"]: "back"}


CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"


def test_flows_of_tunnelled_connections_name_the_peers_spiffe_id_and_disable_ones_say_no_mtls(lab: Lab) -> None:
    pods = _addresses(lab)
    start = datetime.now(UTC)

    def now(keep: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
        return lambda r: datetime.fromisoformat(r["time"]) >= start and keep(r)

    assert run_python(lab, "client", _SEND, json.dumps([pods["strict"], pods["plain"]]), "flows") == {
        pods["strict"]: "flows", pods["plain"]: "flows"}
    # The server's node: the tunnel's server side verified the client's certificate, and
    # names the client pod (the address its node proxy forwarded), not that proxy.
    inbound = observed(lab, "--node", "node-2", "--kind", "l7", "--pod", "strict",
                       keep=now(lambda r: r["method"] == "CONNECT" and r["destinationPort"] == 9000))
    assert inbound and all(r["mtls"] is True and r["peerPrincipal"] == CLIENT_ID for r in inbound), inbound
    assert {r["source"] for r in inbound} == {"default/client"} and {r["sourceAddress"] for r in inbound} == {
        pods["client"]}, inbound
    # The client's node: the tunnel verified the server's SPIFFE ID; the flow's destination is the pod dialled.
    outbound = observed(lab, "--node", "node-1", "--kind", "l7", "--pod", "strict",
                        keep=now(lambda r: r["protocol"] == "TCP" and r["destinationPort"] == 9000))
    assert outbound and all(r["mtls"] is True and r["peerPrincipal"] == "spiffe://cluster.local/ns/default/sa/strict"
                            for r in outbound), outbound
    # DISABLE: never tunnelled, only the kernels saw it, and no flow of it says mutual TLS.
    plain = observed(lab, "--pod", "plain", keep=now(lambda r: r["destinationPort"] == 9000), at_least=2)
    assert plain and {r["layer"] for r in plain} == {"l4"} and not any(r["mtls"] for r in plain), plain
    # The text form says it too.
    text = meshcore_cli("observe", "--name", lab.name, "--node", "node-2", "--pod", "strict", "--kind", "l7")
    assert f"mtls {CLIENT_ID}" in text.stdout.decode(), text.stdout.decode()[-2000:]


def test_the_client_nodes_proxy_routes_l7_to_a_strict_pod_of_another_node_through_the_tunnel(lab: Lab) -> None:
    proxies = {n.name: n.proxy_addresses for n in lab.status().nodes}
    marker = MARKER.decode()
    with _Capture(lab) as capture:
        status, body = curl_json(lab, "client", f"http://site/{marker}", "-H", f"x-marker: {marker}")
        refused, _ = curl_json(lab, "client", f"http://site/{marker}", "-X", "POST")
    assert status == 200 and body["headers"].get("X-Route") == ["site"], (status, body)  # node-1's route ran
    # Delivered by node-2's proxy (the tunnel's server side), not node-1's in clear text.
    assert body["remote"].rsplit(":", 1)[0].strip("[]") in proxies["node-2"], (body["remote"], proxies)
    assert refused == 403  # node-1's proxy applied the policy's HTTP part
    assert capture.frames and not capture.shows(MARKER)
    # Both ends' flows say mutual TLS, each naming the other's SPIFFE ID.
    request = observed(lab, "--node", "node-1", "--kind", "l7", "--pod", "site",
                       keep=lambda r: r["path"] == f"/{marker}" and r["status"] == 200)
    assert request and all(r["mtls"] and r["peerPrincipal"] == "spiffe://cluster.local/ns/default/sa/site"
                           and r["destination"] == "default/site" for r in request), request


def test_a_lab_running_mutual_tls_does_not_warn_that_strict_may_not_be_enforced(lab: Lab, tmp_path: Path) -> None:
    app = write(tmp_path, "app.yaml", APP)
    # Translation alone cannot know: it warns, once per object declaring STRICT.
    offline = [d.source.name for d in translate([app]).diagnostics if d.code == TranslateCode.STRICT_WITHOUT_MTLS]
    assert {"strict", "site"} <= set(offline) and len(offline) == len(set(offline)), offline
    # The lab runs mutual TLS, so it enforces STRICT, and says nothing of it (a reconcile: nothing changes).
    result = lab.up([app], timeout=60)
    assert not result.created and not result.removed and not result.restarted, result
    assert not [d for d in result.diagnostics if d.code == TranslateCode.STRICT_WITHOUT_MTLS], result.diagnostics
    # Nor do the node agents, which run it, in their reports.
    reports = [a.report for a in result.agents if a.report is not None]
    assert reports and not [d for r in reports for d in r.diagnostics
                            if d.code == TranslateCode.STRICT_WITHOUT_MTLS], reports
    # Its flows' text lines name the node (a lab of two), and a node it does not have is a usage error.
    curl_json(lab, "client", "http://site/")
    assert observed(lab, "--node", "node-2", keep=lambda r: True)
    text = meshcore_cli("observe", "--name", lab.name, "--node", "node-2").stdout.decode()
    assert text and all(line.split()[1] == "node-2" for line in text.splitlines()), text[-2000:]
    unknown = meshcore_cli("observe", "--name", lab.name, "--node", "node-3")
    assert unknown.returncode == 2 and b"its nodes: node-1, node-2" in unknown.stderr, unknown


def test_a_clients_egress_policy_refuses_its_tunnelled_connections_naming_the_policy(lab: Lab) -> None:
    # The kernel sees fenced connect to its node proxy (exempt): the proxy applies fenced's egress policy.
    pods = _addresses(lab)
    vips = run_python(lab, "client", _RESOLVE, json.dumps(["web", "strict"]))
    start = datetime.now(UTC)
    targets = [pods["web"], vips["web"], pods["strict"], vips["strict"]]
    got = run_python(lab, "fenced", _SEND, json.dumps(targets), "fenced")
    assert got[pods["web"]] == got[vips["web"]] == "fenced", got  # allowed: web on 9000, by pod and by service
    # Refused: strict on node-2, by pod and by service; closed at the client's first byte, never answered.
    assert got[pods["strict"]] in ("", "ConnectionResetError"), got
    assert got[vips["strict"]] in ("", "ConnectionResetError"), got
    # client shares fenced's SPIFFE ID but no egress policy selects it: it still reaches strict.
    assert run_python(lab, "client", _SEND, json.dumps([pods["strict"]]), "free") == {pods["strict"]: "free"}
    drops = logged(lab, lambda f: f.time >= start and f.node == "node-1" and f.verdict is Verdict.DROPPED
                   and f.source.address == pods["fenced"], at_least=2)
    assert {f.destination.address for f in drops} == {pods["strict"]}, drops
    assert all(f.reason == "policy-denied" and "fenced-egress" in f.policy and f.policy_source for f in drops), drops
    assert not logged(lab, lambda f: f.time >= start and f.node == "node-2" and f.source.address == pods["fenced"]
                      and f.destination.address == pods["strict"], wait=0)
