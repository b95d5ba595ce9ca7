"""Mutual TLS across a two-node lab: what the underlay sees, what STRICT refuses, who gets which SVID.

node-1 holds ``client``; node-2 holds ``strict`` (PeerAuthentication STRICT), ``web`` (no
PeerAuthentication: PERMISSIVE) and ``plain`` (DISABLE), each an echo server. A raw
AF_PACKET socket on node-1's port of the fabric bridge records every frame between the
nodes while the client sends a marker; only DISABLE may show it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _lab_support import client_pod, logged, run_python, running_lab, write

from meshcore.identity import CaClient, CaError
from meshcore.lab import Lab
from meshcore.lab._ca import CA_SOCKET, ca_dir
from meshcore.lab._state import LabState
from meshcore.linux._netns import in_netns
from meshcore.observe import Verdict

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

APP = "\n---\n".join([
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

_UDP = """
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
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
    # The tunnel closed it: no answer (a reset when the client's bytes were still unread).
    assert set(refused) == {pods["guarded"], "guarded"} and set(refused.values()) <= {"", "ConnectionResetError"}, refused


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
    assert run_python(lab, "client", _UDP, pods["strict"]) == "ConnectionRefusedError"
    assert run_python(lab, "client", _UDP, pods["web"]) == "sent"


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
