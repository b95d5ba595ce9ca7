"""GRPCRoute in the mesh (MESH-GRPC, Gateway API v1.6.1) through the lab's node Envoy.

Transcribes the mesh suite's grpcroute-weight case: a GRPCRoute whose parent is Service
``grpc-echo`` splits calls between two backends by weight; a method match sends one
method elsewhere; a backend's header filter reaches only that backend. The servers and
the client are grpcio in lab pods (raw bytes both ways, no .proto needed).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from _lab_support import running_lab, write

from meshcore.lab import Lab

pytestmark = pytest.mark.root

SERVER = r"""
import os
from concurrent.futures import ThreadPoolExecutor
import grpc
name = os.environ["POD_NAME"]
def answer(request, context):
    seen = dict(context.invocation_metadata())
    return (name + "|" + seen.get("x-backend", "")).encode()
server = grpc.server(ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("echo.Echo", {
    "Say": grpc.unary_unary_rpc_method_handler(answer),
    "Other": grpc.unary_unary_rpc_method_handler(answer)}),))
server.add_insecure_port("[::]:50051")
server.start()
server.wait_for_termination()
"""

CLIENT = r"""
import json, sys
import grpc
channel = grpc.insecure_channel(sys.argv[1])
out = []
for _ in range(int(sys.argv[3])):
    call = channel.unary_unary(sys.argv[2])
    out.append(call(b"hi", timeout=5).decode())
print(json.dumps(out))
"""


def _pod(name: str, labels: str) -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {labels}}}
spec:
  containers:
  - name: grpc
    image: python
    command: [{json.dumps(sys.executable)}, "-c", {json.dumps(SERVER)}]
    ports: [{{containerPort: 50051}}]
"""


APP = "\n---\n".join([
    _pod("grpc-v1", "{app: grpc, version: v1}"),
    _pod("grpc-v2", "{app: grpc, version: v2}"),
    *(f"""apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {selector}
  ports: [{{name: grpc, port: 50051, appProtocol: grpc}}]
""" for name, selector in (("grpc-echo", "{app: grpc}"), ("grpc-v1", "{version: v1}"), ("grpc-v2", "{version: v2}"))),
    f"""apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  containers:
  - {{name: c, image: python, command: [{json.dumps(sys.executable)}, "-c", "import time; time.sleep(100000)"]}}
""",
])

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc-echo}
spec:
  parentRefs: [{group: "", kind: Service, name: grpc-echo, port: 50051}]
  rules:
  - matches: [{method: {service: echo.Echo, method: Other}}]
    backendRefs:
    - name: grpc-v2
      port: 50051
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-backend, value: two}]}}]
  - backendRefs:
    - {name: grpc-v1, port: 50051, weight: 70}
    - {name: grpc-v2, port: 50051, weight: 30}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The gRPC servers, the client and the GRPCRoute above."""
    tmp: Path = tmp_path_factory.mktemp("gamma-grpc")
    with running_lab([write(tmp, "app.yaml", APP), write(tmp, "route.yaml", ROUTE)], all_ready=True) as up:
        yield up


def _calls(lab: Lab, method: str, count: int) -> list[str]:
    result = lab.run("client", [sys.executable, "-c", CLIENT, "grpc-echo:50051", method, str(count)], timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    answers: list[str] = json.loads(result.stdout.decode())
    return answers


def test_calls_split_by_weight(lab: Lab) -> None:
    counts = Counter(a.split("|")[0] for a in _calls(lab, "/echo.Echo/Say", 200))
    # 70/30 over 200 calls: the standard deviation of v2's count is 6.5; allow ~4 of them.
    assert set(counts) == {"grpc-v1", "grpc-v2"} and 34 <= counts["grpc-v2"] <= 86, counts


def test_a_method_match_and_a_backend_header_filter(lab: Lab) -> None:
    assert set(_calls(lab, "/echo.Echo/Other", 5)) == {"grpc-v2|two"}
    assert all(a.endswith("|") for a in _calls(lab, "/echo.Echo/Say", 10))
