"""GATEWAY-HTTP extended features through a lab Gateway: real Envoy, curl from a client pod.

Each test is one feature of the Gateway API's extended support, checked the way its
conformance test does: a request with some path, method, query or headers → which
backend answered, the status, the Location header, what the backend received. One lab
serves the whole module.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from _lab_support import client_pod, echo_app, http_server_code, running_lab, write

from meshcore.lab import Lab

pytestmark = pytest.mark.root

# A mirror target: remembers the paths it was sent and tells them on /__seen.
RECORDER = http_server_code("""        if self.path == "/__seen":
            status, body = 200, json.dumps(seen).encode()
        else:
            seen.append(self.path)
            status, body = 200, b"{}"
""", setup="seen = []")


def _recorder(name: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  containers:
  - {{name: rec, command: ["{sys.executable}", "-S", "-c", {json.dumps(RECORDER)}], ports: [{{containerPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"""


GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: meshcore}
spec: {controllerName: meshcore.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gwx}
spec:
  gatewayClassName: meshcore
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: x.example.com}
  - {name: http-8080, port: 8080, protocol: HTTP, hostname: x.example.com}
  - {name: iso-wild, port: 80, protocol: HTTP, hostname: "*.iso.example.com"}
  - {name: iso-a, port: 80, protocol: HTTP, hostname: a.iso.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: x}
spec:
  parentRefs: [{name: gwx, port: 80}]
  hostnames: [x.example.com]
  rules:
  - matches: [{queryParams: [{name: v, value: "2"}]}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{method: POST}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /resp}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-resp, value: gateway}], remove: [x-drop]}
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /port-redirect}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8443}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-redirect}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
  - matches: [{path: {type: PathPrefix, value: /full-redirect}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new},
                                                          statusCode: 303}}]
  - matches: [{path: {type: PathPrefix, value: /prefix-redirect}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /moved},
                                                          statusCode: 307}}]
  - matches: [{path: {type: PathPrefix, value: /permanent}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: elsewhere.example.com, statusCode: 308}}]
  - matches: [{path: {type: PathPrefix, value: /host-rewrite}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: rewritten.example.com}}]
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 500ms}
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /backend-slow}}]
    timeouts: {request: 5s, backendRequest: 500ms}
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: mirror-a, port: 80}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: mirror-b, port: 80}}}
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /half}}]
    filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: mirror-a, port: 80}, percent: 50}}
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /cors}}]
    filters:
    - type: CORS
      cors: {allowOrigins: ["https://app.example.com"], allowMethods: [GET, PUT], maxAge: 60}
    backendRefs: [{name: web-v1, port: 80}]
  - backendRefs: [{name: web-v1, port: 80}]
---
# Requests no address: served on the address it names (not one the lab assigns).
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gws}
spec:
  gatewayClassName: meshcore
  addresses: [{type: IPAddress, value: 10.96.250.250}]
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: static.example.com}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: static}
spec:
  parentRefs: [{name: gws}]
  rules: [{backendRefs: [{name: web-v2, port: 80}]}]
---
# Attached by port to the 8080 listener only.
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: x-8080}
spec:
  parentRefs: [{name: gwx, port: 8080}]
  rules: [{backendRefs: [{name: web-v2, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: iso-wild}
spec:
  parentRefs: [{name: gwx, sectionName: iso-wild}]
  rules: [{backendRefs: [{name: web-v1, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: iso-a}
spec:
  parentRefs: [{name: gwx, sectionName: iso-a}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: web-v2, port: 80}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The lab with the Gateway, its routes and the two backends."""
    tmp = tmp_path_factory.mktemp("gateway-extended")
    app = "\n---\n".join([echo_app("web-v1", "default"), echo_app("web-v2", "default"), _recorder("mirror-a"),
                          _recorder("mirror-b"), client_pod("client", labels={}, container="c")])
    with running_lab([write(tmp, "app.yaml", app), write(tmp, "gateway.yaml", GATEWAY)]) as running:
        yield running


def _get(lab: Lab, path: str, *args: str, host: str = "x.example.com", port: int = 80,
         address: str = "gwx.default") -> tuple[int, dict[str, str], Any]:
    """Status, response headers (lower-case names) and the JSON body (or text) of one request to gwx."""
    result = lab.run("client", ["curl", "-sS", "-m", "5", "-D", "/dev/stderr", "-H", f"Host: {host}", *args,
                                f"http://{address}:{port}{path}"], timeout=20)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    head = result.stderr.decode(errors="replace").strip().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
    text = result.stdout.decode(errors="replace")
    try:
        return int(head[0].split()[1]), headers, json.loads(text)
    except ValueError:
        return int(head[0].split()[1]), headers, text


def _pod(lab: Lab, path: str, *args: str, **where: Any) -> str:
    status, _, body = _get(lab, path, *args, **where)
    assert status == 200 and isinstance(body, dict), (status, body)
    return str(body["pod"])


def test_query_param_matching(lab: Lab) -> None:
    assert _pod(lab, "/?v=2").startswith("web-v2")
    assert _pod(lab, "/?v=3").startswith("web-v1")


def test_method_matching(lab: Lab) -> None:
    assert _pod(lab, "/", "-X", "POST").startswith("web-v2")
    assert _pod(lab, "/", "-X", "GET").startswith("web-v1")


def test_response_header_modification(lab: Lab) -> None:
    status, headers, _ = _get(lab, "/resp", "-H", "x-echo-set-header: X-Drop: secret, X-Resp: backend")
    assert status == 200 and headers.get("x-resp") == "gateway" and "x-drop" not in headers, headers


@pytest.mark.parametrize(("path", "status", "location"), [
    ("/port-redirect/a?q=1", 302, "http://x.example.com:8443/port-redirect/a?q=1"),
    ("/scheme-redirect/a", 302, "https://x.example.com/scheme-redirect/a"),
    ("/full-redirect/a/b", 303, "http://x.example.com/new"),
    ("/prefix-redirect/a/b", 307, "http://x.example.com/moved/a/b"),
    ("/permanent/a", 308, "http://elsewhere.example.com/permanent/a"),
], ids=["port", "scheme", "full-path-303", "prefix-path-307", "hostname-308"])
def test_redirects(lab: Lab, path: str, status: int, location: str) -> None:
    got, headers, _ = _get(lab, path)
    assert (got, headers.get("location")) == (status, location), headers


def test_host_rewrite(lab: Lab) -> None:
    status, _, body = _get(lab, "/host-rewrite/x")
    assert status == 200 and body["host"] == "rewritten.example.com", body


def test_path_rewrite_replaces_the_matched_prefix(lab: Lab) -> None:
    status, _, body = _get(lab, "/api/items?x=1")
    assert status == 200 and body["path"] == "/v2/items?x=1", body


@pytest.mark.parametrize("path", ["/slow", "/backend-slow"], ids=["request", "backendRequest"])
def test_timeouts_answer_504_when_the_backend_is_slower(lab: Lab, path: str) -> None:
    assert _get(lab, f"{path}?echo_delay_ms=2000")[0] == 504
    assert _get(lab, f"{path}?echo_delay_ms=10")[0] == 200


def test_cors_preflight_is_answered_for_allowed_origins_only(lab: Lab) -> None:
    preflight = ("-X", "OPTIONS", "-H", "Access-Control-Request-Method: PUT")
    status, headers, _ = _get(lab, "/cors", *preflight, "-H", "Origin: https://app.example.com")
    assert status == 200 and headers.get("access-control-allow-origin") == "https://app.example.com", headers
    assert "PUT" in headers.get("access-control-allow-methods", "") and headers.get("access-control-max-age") == "60"
    _, headers, _ = _get(lab, "/cors", *preflight, "-H", "Origin: https://evil.example.com")
    assert "access-control-allow-origin" not in headers, headers


def test_listener_on_port_8080_and_a_route_attached_by_parent_ref_port(lab: Lab) -> None:
    assert _pod(lab, "/", port=8080).startswith("web-v2")  # only the route naming port 8080
    assert _pod(lab, "/", port=80).startswith("web-v1")


def test_http_listener_isolation(lab: Lab) -> None:
    assert _pod(lab, "/a", host="a.iso.example.com").startswith("web-v2")
    # a.iso.example.com belongs to the more specific listener: the wildcard listener's route never takes it.
    assert _get(lab, "/b", host="a.iso.example.com")[0] == 404
    assert _pod(lab, "/b", host="b.iso.example.com").startswith("web-v1")


def _seen(lab: Lab, recorder: str, prefix: str, wait: float = 5.0, at_least: int = 1) -> list[str]:
    """The paths under ``prefix`` a mirror target received (polled: copies are sent after the answer)."""
    deadline = time.monotonic() + wait
    while True:
        result = lab.run("client", ["curl", "-sS", "-m", "5", f"http://{recorder}/__seen"], timeout=20)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        found = [p for p in json.loads(result.stdout) if p.startswith(prefix)]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_request_mirrors_copy_each_request_to_every_mirror(lab: Lab) -> None:
    path = f"/mirror/{uuid.uuid4().hex}"
    assert _pod(lab, path).startswith("web-v1")  # the answer is the primary backend's
    assert _seen(lab, "mirror-a", path) == [path]
    assert _seen(lab, "mirror-b", path) == [path]


def test_a_percentage_mirror_copies_about_that_share(lab: Lab) -> None:
    prefix = f"/half/{uuid.uuid4().hex}"
    result = lab.run("client", ["curl", "-sS", "-m", "10", "-o", "/dev/null", "-H", "Host: x.example.com",
                                *[f"http://gwx.default{prefix}/{i}" for i in range(200)]], timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    time.sleep(1.0)
    copies = len(_seen(lab, "mirror-a", prefix, wait=0))
    # 50% of 200: the standard deviation is 7; allow about four of them.
    assert 70 <= copies <= 130, copies


def test_a_gateway_is_served_on_the_static_address_it_requests(lab: Lab) -> None:
    assert _pod(lab, "/", host="static.example.com", address="10.96.250.250").startswith("web-v2")
