"""The proxy-mode matrix on a two-node lab with mutual TLS: none, node and sidecar, as client and as server.

node-1 holds one client per mode (``c-none``, ``c-node``, ``c-side``) and one server per mode
(``s-none-1``, ``s-node-1``, ``s-side-1``); node-2 one server per mode (``s-*-2``). Every
server runs the echo server on HTTP 8080 (service port 80) and TCP 9000, and the policy
``servers`` admits only ``/public*`` on its HTTP port (an L7 rule) and anything on its TCP
port. ``plain-a`` (node-1, node mode) and ``plain-b`` (node-2, sidecar) are not guarded;
the HTTPRoute of ``routed`` sends ``x-to: b`` to plain-b, the rest to plain-a, and adds a
response header. ``s-jwt`` (node-1, sidecar, HTTP only) admits only requests with a token
whose keys the ``keys`` pod (node-2, node mode) serves by URI; a CiliumEnvoyConfig
redirects service ``raw`` (plain-a) to a listener of its own that adds a response header.
One lab serves the module; each client runs every request of a test in one go.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from _lab_support import logged, run_python, running_lab, write
from test_istio_jwt import KEY, KEYS_CODE, MESH_ISSUER, MESH_KEY, token
from test_mtls_lab import MARKER, _Capture

from meshcore.lab import Lab
from meshcore.lab._state import LabState

pytestmark = pytest.mark.root

MODES = {"none": "none", "node": "node", "side": "sidecar"}
CLIENTS = [f"c-{m}" for m in MODES]
SERVERS = [f"s-{m}-{n}" for n in (1, 2) for m in MODES]


def _server(name: str, node: str, mode: str, labels: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}, {labels}}}, annotations: {{meshcore.io/proxy-mode: {mode}}}}}
spec:
  nodeName: {node}
  containers:
  - {{name: echo, image: meshcore/echo, args: ["--http", "8080", "--tcp", "9000"],
     ports: [{{containerPort: 8080}}, {{containerPort: 9000}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}, {{name: tcp, port: 9000}}]
"""


def _client(name: str, mode: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{meshcore.io/proxy-mode: {mode}}}}}
spec:
  nodeName: node-1
  containers: [{{name: c, image: busybox, command: ["sleep", "infinity"]}}]
"""


POLICY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: servers}
spec:
  selector: {matchLabels: {role: server}}
  rules:
  - to: [{operation: {ports: ["8080"], paths: ["/public*"]}}]
  - to: [{operation: {ports: ["9000"]}}]
"""

ROUTED = """
apiVersion: v1
kind: Service
metadata: {name: routed}
spec:
  selector: {app: plain-a}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: routed}
spec:
  parentRefs: [{group: "", kind: Service, name: routed, port: 80}]
  rules:
  - matches: [{headers: [{name: x-to, value: b}]}]
    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-routed, value: b}]}}]
    backendRefs: [{name: plain-b, port: 80}]
  - filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-routed, value: a}]}}]
    backendRefs: [{name: plain-a, port: 80}]
"""

# The sidecar of s-jwt fetches the key set from the keys pod on the other node itself.
TOKENS = f"""
apiVersion: v1
kind: Pod
metadata: {{name: s-jwt, labels: {{app: s-jwt}}, annotations: {{meshcore.io/proxy-mode: sidecar}}}}
spec:
  nodeName: node-1
  containers: [{{name: echo, image: meshcore/echo, args: ["--http", "8080"], ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: s-jwt}}
spec:
  selector: {{app: s-jwt}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: keys, labels: {{app: keys}}}}
spec:
  nodeName: node-2
  containers:
  - name: keys
    image: python
    command: ["{sys.executable}", "-S", "-c", {json.dumps(KEYS_CODE)}]
    ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: keys}}
spec:
  selector: {{app: keys}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: s-jwt}}
spec:
  selector: {{matchLabels: {{app: s-jwt}}}}
  jwtRules: [{{issuer: "{MESH_ISSUER}", jwksUri: "http://keys.default.svc.cluster.local/jwks.json"}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: s-jwt}}
spec:
  selector: {{matchLabels: {{app: s-jwt}}}}
  rules: [{{from: [{{source: {{requestPrincipals: ["*"]}}}}]}}]
"""

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
RAW = f"""
apiVersion: v1
kind: Service
metadata: {{name: raw}}
spec:
  selector: {{app: plain-a}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {{name: raw}}
spec:
  services: [{{name: raw, ports: [80]}}]
  resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: raw
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {_HCM}
          stat_prefix: raw
          http_filters:
          - {{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}
          route_config:
            name: raw
            virtual_hosts:
            - name: raw
              domains: ["*"]
              response_headers_to_add: [{{header: {{key: x-routed, value: raw}}}}]
              routes: [{{match: {{prefix: /}}, route: {{cluster: default/raw:80}}}}]
"""

APP = "\n---\n".join([
    *(_client(f"c-{m}", mode) for m, mode in MODES.items()),
    *(_server(f"s-{m}-{n}", f"node-{n}", mode, "role: server") for n in (1, 2) for m, mode in MODES.items()),
    _server("plain-a", "node-1", "node", "plain: a"), _server("plain-b", "node-2", "sidecar", "plain: b"),
    POLICY, ROUTED, TOKENS, RAW,
])

#: Requests given as JSON [[key, kind, host, port, path or payload, headers], ...]: each answer by key.
_REQUESTS = """
import http.client, json, socket, sys
out = {}
for key, kind, host, port, what, headers in json.loads(sys.argv[1]):
    try:
        if kind == "http":
            c = http.client.HTTPConnection(host, port, timeout=4)
            c.request("GET", what, headers=headers)
            r = c.getresponse()
            body = r.read().decode(errors="replace")
            try:
                pod = json.loads(body).get("pod", "")
            except ValueError:
                pod = ""
            out[key] = [r.status, pod, r.getheader("x-routed") or ""]
            c.close()
        else:
            s = socket.create_connection((host, port), timeout=4)
            s.sendall(what.encode() + b"\\n")
            data = b""
            while not data.endswith(b"\\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            out[key] = data.decode(errors="replace").strip()
            s.close()
    except OSError as exc:
        out[key] = type(exc).__name__
print(json.dumps(out))
"""


def _ask(lab: Lab, client: str, requests: list[list[Any]]) -> dict[str, Any]:
    return run_python(lab, client, _REQUESTS, json.dumps(requests), timeout=120)  # type: ignore[no-any-return]


def _pods(lab: Lab) -> dict[str, str]:
    return {r.name: r.ipv4 for r in LabState.load(lab.dir).pods.values()}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("modes")
    with running_lab([write(tmp, "app.yaml", APP)], nodes=2, name=f"md{os.getpid() % 100000}", timeout=120,
                     mtls=True) as up:
        yield up


def test_every_sidecar_serves_and_the_plan_says_why(lab: Lab) -> None:
    sidecars = {s.workload: s for n in lab.status().nodes for s in (n.agent.report.sidecars if n.agent.report else ())}
    assert set(sidecars) == {"default/c-side", "default/s-side-1", "default/s-side-2", "default/plain-b",
                             "default/s-jwt"}
    assert all(s.serving and s.connected and s.synced for s in sidecars.values()), sidecars


@pytest.mark.parametrize("client", CLIENTS)
def test_each_client_mode_reaches_each_server_mode_with_the_destinations_policy(lab: Lab, client: str) -> None:
    requests = [[f"{s} {path}", "http", s, 80, path, {}] for s in SERVERS for path in ("/public/x", "/private")]
    requests += [[f"{s} tcp", "tcp", s, 9000, "whoami", {}] for s in SERVERS]
    got = _ask(lab, client, requests)
    for server in SERVERS:
        # The same answer whichever mode the client and the server are in, on either node.
        assert got[f"{server} /public/x"][:2] == [200, server], (client, server, got)
        assert got[f"{server} /private"][0] == 403, (client, server, got)
        assert json.loads(got[f"{server} tcp"])["pod"] == server, (client, server, got)


def test_sidecar_client_does_not_skip_a_node_mode_destinations_policy(lab: Lab) -> None:
    """Istio's mix lets a sidecar's traffic skip the waypoint's policy (istio/istio#57729); here it cannot."""
    pods = _pods(lab)
    got = _ask(lab, "c-side", [["svc", "http", "s-node-2", 80, "/private", {}],
                               ["direct", "http", pods["s-node-1"], 8080, "/public/x", {}]])
    assert got["svc"][0] == 403
    # Straight to the pod's checked port, past every proxy: the kernel admits only the node proxy there.
    assert got["direct"] in ("ConnectionRefusedError", "TimeoutError", "ConnectionResetError"), got
    # The sidecar passed the request on; the node proxy refused it (no ALLOW rule of the policy matched).
    denied = logged(lab, lambda f: f.node == "node-1" and f.l7 is not None and f.l7.status == 403
                    and f.l7.path == "/private" and f.source.address == pods["c-side"])
    assert denied and denied[-1].l7 is not None and "rbac_access_denied" in denied[-1].l7.details, denied
    assert logged(lab, lambda f: f.node == "sidecar/default/c-side" and f.l7 is not None
                  and f.l7.cluster == "passthrough" and f.destination.port == 80)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_sidecar_destination_enforces_its_own_policy_on_direct_connections(lab: Lab, client: str) -> None:
    pods = _pods(lab)
    got = _ask(lab, client, [["public", "http", pods["s-side-1"], 8080, "/public/x", {}],
                             ["private", "http", pods["s-side-1"], 8080, "/private", {}]])
    assert got["public"][:2] == [200, "s-side-1"] and got["private"][0] == 403, (client, got)
    source = pods[client]
    # The pod's own sidecar refused it, seeing the client's own address.
    refused = logged(lab, lambda f: f.node == "sidecar/default/s-side-1" and f.l7 is not None
                     and f.l7.status == 403 and f.l7.path == "/private" and f.source.address == source)
    assert refused and refused[-1].l7 is not None and "rbac_access_denied" in refused[-1].l7.details, refused


def test_a_sidecar_destination_on_another_node_checked_port_direct(lab: Lab) -> None:
    """Straight to a checked port on another node: what reaches the pod is checked by its sidecar, and a
    meshed client's tunnel refuses it (as a node-mode destination's kernel does): never let past."""
    pods = _pods(lab)
    target = pods["s-side-2"]
    requests = [["public", "http", target, 8080, "/public/x", {}], ["private", "http", target, 8080, "/private", {}]]
    got = _ask(lab, "c-none", requests)
    assert got["public"][:2] == [200, "s-side-2"] and got["private"][0] == 403, got
    for client in ("c-node", "c-side"):
        got = _ask(lab, client, requests)
        assert all(v in ("RemoteDisconnected", "ConnectionResetError", "BadStatusLine") for v in got.values()), (
            client, got)


def test_routes_are_the_same_for_every_client_mode(lab: Lab) -> None:
    for client in CLIENTS:
        got = _ask(lab, client, [["a", "http", "routed", 80, "/", {}], ["b", "http", "routed", 80, "/", {"x-to": "b"}]])
        assert got == {"a": [200, "plain-a", "a"], "b": [200, "plain-b", "b"]}, (client, got)
    # The sidecar client's own Envoy routed its requests (the node proxy did for the others).
    assert logged(lab, lambda f: f.node == "sidecar/default/c-side" and f.l7 is not None
                  and f.l7.route.startswith("default/routed:80/"))


@pytest.mark.parametrize("client", CLIENTS)
def test_traffic_between_nodes_is_mutual_tls_unless_an_end_has_no_proxy(lab: Lab, client: str) -> None:
    for server in ("s-none-2", "s-node-2", "s-side-2"):
        with _Capture(lab) as capture:
            got = _ask(lab, client, [["tcp", "tcp", server, 9000, MARKER.decode(), {}]])
        assert got == {"tcp": MARKER.decode()}, (client, server, got)
        assert capture.frames, "the capture saw nothing on the fabric"
        # Kernel-only workloads are not in mutual TLS; every other pair crosses encrypted.
        clear = client == "c-none" or server == "s-none-2"
        assert capture.shows(MARKER) is clear, (client, server)


def test_a_sidecar_client_tunnels_with_its_own_identity(lab: Lab) -> None:
    pods = _pods(lab)
    _ask(lab, "c-side", [["tcp", "tcp", "s-node-2", 9000, "whoami", {}]])
    # Its own Envoy opened the HBONE stream (a tunnel cluster to node-2), for the pod it dialled,
    # and verified that pod's identity.
    assert logged(lab, lambda f: f.node == "sidecar/default/c-side" and f.l7 is not None
                  and f.l7.cluster.startswith("tunnel|") and f.destination.address == pods["s-node-2"]
                  and f.destination.port == 9000 and f.mtls
                  and f.peer_principal == "spiffe://cluster.local/ns/default/sa/default")
    assert logged(lab, lambda f: f.node == "node-2" and f.source.address == pods["c-side"])


def test_a_sidecar_validates_tokens_with_keys_a_mesh_service_serves(lab: Lab) -> None:
    pods = _pods(lab)
    bearer = {"authorization": f"Bearer {token('carol', iss=MESH_ISSUER, key=MESH_KEY)}"}
    forged = {"authorization": f"Bearer {token('carol', iss=MESH_ISSUER, key=KEY)}"}
    for client in CLIENTS:
        direct, service = [pods["s-jwt"], 8080], ["s-jwt", 80]
        got = _ask(lab, client, [
            ["direct valid", "http", *direct, "/tokens", bearer], ["direct none", "http", *direct, "/tokens", {}],
            ["direct forged", "http", *direct, "/tokens", forged],
            ["service valid", "http", *service, "/tokens", bearer], ["service none", "http", *service, "/tokens", {}]])
        # The same answers straight to the pod (its sidecar checks) as through the service (the node proxy does).
        assert got["direct valid"][:2] == [200, "s-jwt"] and got["service valid"][:2] == [200, "s-jwt"], (client, got)
        assert got["direct none"][0] == 403 and got["service none"][0] == 403, (client, got)
        assert got["direct forged"][0] == 401, (client, got)
    # The pod's own sidecar accepted a token whose keys it fetched from the keys pod (another node).
    assert logged(lab, lambda f: f.node == "sidecar/default/s-jwt" and f.l7 is not None and f.l7.status == 200
                  and f.l7.path == "/tokens" and f.source.address == pods["c-side"])


def test_a_port_a_raw_envoy_config_redirects_gets_its_listener_for_every_client_mode(lab: Lab) -> None:
    for client in CLIENTS:
        got = _ask(lab, client, [["raw", "http", "raw", 80, "/", {}]])
        assert got == {"raw": [200, "plain-a", "raw"]}, (client, got)
    # The sidecar client's Envoy passed it on to the node proxy, whose raw listener answered.
    vips = set(LabState.load(lab.dir).services["default/raw"].cluster_ips)
    assert logged(lab, lambda f: f.node == "sidecar/default/c-side" and f.l7 is not None
                  and f.l7.cluster == "passthrough" and f.destination.address in vips and f.destination.port == 80)
