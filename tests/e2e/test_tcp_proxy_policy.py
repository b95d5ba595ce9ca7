"""Authorization on a TCP port served by the node Envoy, in the lab.

The ``db`` echo service speaks raw TCP; a DestinationRule connect timeout puts its port on
the node Envoy's TCP proxy. The backend's kernel policy exempts the node proxy, so the
AuthorizationPolicy allowing only the ``friend`` service account must be checked by the
proxy itself: the ``friend`` client exchanges data through the service address, the
``stranger`` client's connection is closed without a byte of answer.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _lab_support import client_pod, meshcore_cli, observed, run_python, running_lab, write

from meshcore.lab import Lab

pytestmark = pytest.mark.root

NS = "tcpz"

APP = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: db, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      containers:
      - {{name: echo, image: meshcore/echo, args: ["--tcp", "9000"], ports: [{{name: tcp, containerPort: 9000}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {NS}}}
spec:
  selector: {{app: db}}
  ports: [{{name: tcp-echo, port: 9000, targetPort: 9000}}]
---""" + client_pod("friend", NS, account="friend") + "---" + client_pod("stranger", NS, account="stranger")


def _friends_only(app: str, policy: str) -> str:
    """DestinationRule putting ``app``'s TCP port on the node proxy, and a policy ``policy`` admitting only friend."""
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {app}, namespace: {NS}}}
spec:
  host: {app}
  trafficPolicy:
    connectionPool:
      tcp: {{connectTimeout: 2s}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {policy}, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
  action: ALLOW
  rules:
  - from:
    - source: {{principals: ["cluster.local/ns/{NS}/sa/friend"]}}
"""


ISTIO = _friends_only("db", "friends-only")

# Connect to the service, send a line, read until it comes back or the connection closes.
_EXCHANGE = """
import json, socket, sys
out = {"connected": False, "answer": "", "error": ""}
try:
    s = socket.create_connection(("db", 9000), timeout=5)
    out["connected"] = True
    out["port"] = s.getsockname()[1]
    s.sendall(b"ping from " + sys.argv[1].encode() + b"\\n")
    data = b""
    while not data.endswith(b"\\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    out["answer"] = data.decode(errors="replace")
    s.close()
except OSError as e:
    out["error"] = type(e).__name__
print(json.dumps(out))
"""


# A server-first backend: greets each accepted connection with a banner, and records the
# accept (one line per connection) so the test can tell whether it was ever reached.
_GREETER = """
import socket, sys
log = sys.argv[1]
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 9100))
s.listen(16)
while True:
    c, peer = s.accept()
    with open(log, "a") as f:
        f.write(peer[0] + "\\n")
    try:
        c.sendall(b"220 greeter ready\\r\\n")
    except OSError:
        pass
    c.close()
"""


def _greeter_app(script: Path, log: Path) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: greeter, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: greeter}}}}
  template:
    metadata: {{labels: {{app: greeter}}}}
    spec:
      containers:
      - {{name: greeter, image: python, command: ["{sys.executable}", "-S", "{script}", "{log}"],
         ports: [{{name: tcp, containerPort: 9100}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: greeter, namespace: {NS}}}
spec:
  selector: {{app: greeter}}
  ports: [{{name: tcp-greeter, port: 9100, targetPort: 9100}}]
---""" + _friends_only("greeter", "greeter-friends-only")


# Connect to the greeter and read what it says, sending nothing, until it closes.
_LISTEN = """
import json, socket
out = {"connected": False, "banner": "", "error": ""}
try:
    s = socket.create_connection(("greeter", 9100), timeout=5)
    out["connected"] = True
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    out["banner"] = data.decode(errors="replace")
    s.close()
except OSError as e:
    out["error"] = type(e).__name__
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def lab_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, list[Path]]]:
    """The lab with the app, its DestinationRule and policy; always torn down and checked."""
    tmp = tmp_path_factory.mktemp("tcpz")
    script = write(tmp, "greeter.py", _GREETER)
    files = [write(tmp, "app.yaml", APP), write(tmp, "istio.yaml", ISTIO),
             write(tmp, "greeter.yaml", _greeter_app(script, tmp / "accepts.log"))]
    with running_lab(files, all_ready=True) as lab:
        yield lab, files


def _accepts(files: list[Path]) -> list[str]:
    log = files[0].parent / "accepts.log"
    return log.read_text().split() if log.exists() else []


def _listen(lab: Lab, pod: str) -> dict[str, Any]:
    answer: dict[str, Any] = run_python(lab, pod, _LISTEN, namespace=NS, timeout=30)
    return answer


def _exchange(lab: Lab, pod: str) -> dict[str, Any]:
    """What one connection from ``pod`` to db:9000 got: connected, its answer, the error."""
    return _exchange_from(lab, pod)[0]


def _exchange_from(lab: Lab, pod: str) -> tuple[dict[str, Any], int]:
    """`_exchange`, and the connection's source port (0 when it did not connect)."""
    answer: dict[str, Any] = run_python(lab, pod, _EXCHANGE, pod, namespace=NS, timeout=30)
    return answer, int(answer.pop("port", 0))


def test_plan_sends_the_tcp_port_to_envoy(lab_files: tuple[Lab, list[Path]]) -> None:
    _, files = lab_files
    out = meshcore_cli("plan", *(a for f in files for a in ("-f", str(f))), "-o", "json")
    assert out.returncode == 0, out.stderr
    (db,) = [d for d in json.loads(out.stdout)["decisions"] if d["service"] == f"{NS}/db"]
    assert db["datapath"] == "envoy", db
    assert db["reason"].startswith(f"DestinationRule {NS}/db sets connection pool limits (connect_timeout)"), db


def test_allowed_account_exchanges_data_and_the_other_is_refused(lab_files: tuple[Lab, list[Path]]) -> None:
    lab, _ = lab_files
    allowed = _exchange(lab, "friend")
    assert allowed == {"connected": True, "answer": "ping from friend\n", "error": ""}, allowed
    refused = _exchange(lab, "stranger")
    # The node proxy accepts the connection, then closes it at the first byte: nothing comes back.
    assert refused["answer"] == "", refused
    assert refused["connected"] is False or refused["error"] in ("", "ConnectionResetError"), refused


def test_the_refused_connection_is_a_dropped_flow(lab_files: tuple[Lab, list[Path]]) -> None:
    lab, _ = lab_files
    refused, port = _exchange_from(lab, "stranger")
    assert refused["connected"] and refused["answer"] == "", refused
    # This connection's flow, by its source port: the earlier test's refused connection is logged too.
    rows = observed(lab, "--kind", "l7", "--namespace", NS, wait=10,
                    keep=lambda r: r["source"].endswith("stranger") and r["sourcePort"] == port)
    assert len(rows) == 1, f"one flow for the refused connection from port {port}: {rows}"
    assert (rows[0]["verdict"], rows[0]["reason"], rows[0]["protocol"], rows[0]["destination"]) == (
        "DROPPED", "policy-denied", "TCP", f"{NS}/db:9000"), rows[0]


def test_a_refused_client_reads_no_greeting_and_the_backend_is_never_reached(
        lab_files: tuple[Lab, list[Path]]) -> None:
    # Envoy's network RBAC decides at the client's first byte, but the TCP proxy connects
    # upstream on accept; the chain's client prefixes refuse the stranger before that.
    lab, files = lab_files
    before = len(_accepts(files))
    allowed = _listen(lab, "friend")
    assert allowed == {"connected": True, "banner": "220 greeter ready\r\n", "error": ""}, allowed
    deadline = time.monotonic() + 5
    while len(_accepts(files)) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(_accepts(files)) == before + 1, _accepts(files)
    reached = len(_accepts(files))
    refused = _listen(lab, "stranger")
    assert refused["banner"] == "", refused
    assert refused["error"] in ("", "ConnectionResetError"), refused
    time.sleep(1.0)
    assert len(_accepts(files)) == reached, f"the backend accepted a connection for the refused client: {_accepts(files)}"
