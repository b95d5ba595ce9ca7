"""GAMMA (Gateway API v1.6.1, mesh) features through the lab's node Envoy, as the mesh conformance suite checks them.

The suite itself needs a Kubernetes API server; its mesh cases are transcribed here: the
same routes (an HTTPRoute whose parent is Service ``echo``), requests from a client pod
to the Service's name with curl, and the same expectations on which backend answered,
what it received and what the client got back. One lab serves the module.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _lab_support import client_pod, echo_deployment, running_lab, write

from meshcore.lab import Lab

pytestmark = pytest.mark.root

APP = "\n---\n".join([
    echo_deployment("echo-v1", "default", labels={"app": "echo", "version": "v1"}),
    echo_deployment("echo-v2", "default", labels={"app": "echo", "version": "v2"}),
    *(f"""apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {selector}
  ports: [{{name: http, port: {port}, targetPort: 8080}}]
""" for name, selector, port in (("echo", "{app: echo}", 80), ("echo-v1", "{version: v1}", 8080),
                                 ("echo-v2", "{version: v2}", 8080))),
    client_pod("client", labels={}),
])


def _backend_headers(prefix: str, modifier: str) -> str:
    return f"""
  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    backendRefs:
    - name: echo-v1
      port: 8080
      filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {modifier}}}]"""


ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mesh-features}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:""" + "".join([
    _backend_headers("/set", "{set: [{name: X-Header-Set, value: set-overwrites-values}]}"),
    _backend_headers("/add", "{add: [{name: X-Header-Add, value: add-appends-values}]}"),
    _backend_headers("/remove", "{remove: [X-Header-Remove]}"),
    _backend_headers("/multiple", "{set: [{name: X-Header-Set-1, value: header-set-1}, {name: X-Header-Set-2, "
                     "value: header-set-2}], add: [{name: X-Header-Add-1, value: header-add-1}, {name: "
                     "X-Header-Add-2, value: header-add-2}, {name: X-Header-Add-3, value: header-add-3}], "
                     "remove: [X-Header-Remove-1, X-Header-Remove-2]}"),
    _backend_headers("/case-insensitivity", "{set: [{name: X-Header-Set, value: header-set}], add: [{name: "
                     "X-Header-Add, value: header-add}], remove: [X-Header-Remove]}"),
]) + """
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs:
    - name: echo-v1
      port: 8080
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Backend, value: one}]}}]
    - name: echo-v2
      port: 8080
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Backend, value: two}]}}]
  - matches: [{path: {type: PathPrefix, value: /scheme}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
  - matches: [{path: {type: PathPrefix, value: /port}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8083}}]
  - matches: [{path: {type: PathPrefix, value: /host-303}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 303}}]
  - matches: [{path: {type: PathPrefix, value: /host-307}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 307}}]
  - matches: [{path: {type: PathPrefix, value: /host-308}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 308}}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /one}}}]
  - name: named-rule
    matches: [{path: {type: PathPrefix, value: /named}}]
    backendRefs: [{name: echo-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /cors}}]
    filters:
    - type: CORS
      cors: {allowOrigins: ["https://www.foo.com"], allowMethods: [GET, OPTIONS], allowHeaders: [x-header-1],
             maxAge: 3600}
    backendRefs: [{name: echo-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /timeout}}]
    timeouts: {request: 500ms}
    backendRefs: [{name: echo-v1, port: 8080}]
  - backendRefs: [{name: echo-v1, port: 8080}]
"""


def _get(lab: Lab, url: str, *args: str) -> tuple[int, dict[str, str], Any]:
    """Status, response headers (lower-case names) and JSON body (or text) of one request from the client."""
    result: subprocess.CompletedProcess[bytes] = lab.run(
        "client", ["curl", "-sS", "-m", "5", "-D", "/dev/stderr", *args, url], timeout=20)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    head = result.stderr.decode(errors="replace").strip().split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    text = result.stdout.decode(errors="replace")
    try:
        return int(head[0].split()[1]), headers, json.loads(text)
    except ValueError:
        return int(head[0].split()[1]), headers, text


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The lab with the echo Services and the mesh route above."""
    tmp: Path = tmp_path_factory.mktemp("gamma")
    with running_lab([write(tmp, "app.yaml", APP), write(tmp, "route.yaml", ROUTE)], all_ready=True) as up:
        yield up


# MeshHTTPRouteBackendRequestHeaderModification (conformance: httproute-request-header-modifier-backend).
@pytest.mark.parametrize(("path", "sent", "expected", "absent"), [
    ("/set", {"Some-Other-Header": "val"}, {"X-Header-Set": ["set-overwrites-values"], "Some-Other-Header": ["val"]},
     []),
    ("/set", {"X-Header-Set": "some-other-value"}, {"X-Header-Set": ["set-overwrites-values"]}, []),
    ("/add", {"Some-Other-Header": "val"}, {"X-Header-Add": ["add-appends-values"]}, []),
    ("/add", {"X-Header-Add": "some-other-value"}, {"X-Header-Add": ["some-other-value,add-appends-values"]}, []),
    ("/remove", {"X-Header-Remove": "val"}, {}, ["X-Header-Remove"]),
    ("/multiple", {"X-Header-Set-2": "set-val", "X-Header-Add-2": "add-val", "X-Header-Remove-2": "remove-val",
                   "Another-Header": "another-header-val"},
     {"X-Header-Set-1": ["header-set-1"], "X-Header-Set-2": ["header-set-2"], "X-Header-Add-1": ["header-add-1"],
      "X-Header-Add-2": ["add-val,header-add-2"], "X-Header-Add-3": ["header-add-3"],
      "Another-Header": ["another-header-val"]}, ["X-Header-Remove-1", "X-Header-Remove-2"]),
    ("/case-insensitivity", {"x-header-set": "original-val-set", "x-header-add": "original-val-add",
                             "x-header-remove": "original-val-remove"},
     {"X-Header-Set": ["header-set"], "X-Header-Add": ["original-val-add,header-add"]}, ["X-Header-Remove"]),
])
def test_backend_request_header_modifier(lab: Lab, path: str, sent: dict[str, str],
                                         expected: dict[str, list[str]], absent: list[str]) -> None:
    args = [a for name, value in sent.items() for a in ("-H", f"{name}: {value}")]
    status, _, body = _get(lab, f"http://echo{path}", *args)
    assert status == 200 and body["pod"].startswith("echo-v1"), body
    received = {name.lower(): ",".join(values) for name, values in body["headers"].items()}
    for name, values in expected.items():
        assert received.get(name.lower()) == ",".join(values), (name, body["headers"])
    for name in absent:
        assert name.lower() not in received, (name, body["headers"])


def test_each_backend_gets_only_its_own_header_changes(lab: Lab) -> None:
    seen: dict[str, set[str]] = {}
    for _ in range(16):
        status, _, body = _get(lab, "http://echo/split")
        assert status == 200, body
        values = {name.lower(): v for name, v in body["headers"].items()}
        seen.setdefault(body["pod"].rsplit("-", 2)[0], set()).add(",".join(values["x-backend"]))
    assert seen == {"echo-v1": {"one"}, "echo-v2": {"two"}}, seen


# MeshHTTPRouteSchemeRedirect, MeshHTTPRouteRedirectPort, MeshHTTPRouteRedirectPath and the
# 303/307/308 status codes (httproute-redirect-scheme, -port, -path, -host-and-status, 30x-redirect).
@pytest.mark.parametrize(("path", "status", "location"), [
    ("/scheme", 302, "https://echo/scheme"),
    ("/port", 302, "http://echo:8083/port"),
    ("/host-303", 303, "http://example.org/host-303"),
    ("/host-307", 307, "http://example.org/host-307"),
    ("/host-308", 308, "http://example.org/host-308"),
    ("/full/path", 302, "http://echo/one"),
])
def test_redirects(lab: Lab, path: str, status: int, location: str) -> None:
    got, headers, _ = _get(lab, f"http://echo{path}")
    assert (got, headers.get("location")) == (status, location), headers


def test_a_scheme_redirect_leaves_out_the_old_schemes_port(lab: Lab) -> None:
    got, headers, _ = _get(lab, "http://echo/scheme", "-H", "Host: echo:80")
    assert (got, headers.get("location")) == (302, "https://echo/scheme"), headers


def test_named_rule_routes_like_any_rule(lab: Lab) -> None:
    # MeshHTTPRouteNamedRouteRule (httproute-named-rule): the name changes nothing about routing.
    status, _, body = _get(lab, "http://echo/named")
    assert status == 200 and body["pod"].startswith("echo-v2"), body


def test_cors_preflight_is_answered_by_the_proxy(lab: Lab) -> None:
    status, headers, _ = _get(lab, "http://echo/cors", "-X", "OPTIONS", "-H", "Origin: https://www.foo.com",
                              "-H", "Access-Control-Request-Method: GET")
    assert status == 200, headers
    assert headers.get("access-control-allow-origin") == "https://www.foo.com", headers
    status, headers, _ = _get(lab, "http://echo/cors", "-H", "Origin: https://www.bar.com")
    assert status == 200 and "access-control-allow-origin" not in headers, headers


def test_request_timeout(lab: Lab) -> None:
    status, _, _ = _get(lab, "http://echo/timeout", "-H", "x-echo-delay-ms: 1500")
    assert status == 504
    status, _, body = _get(lab, "http://echo/timeout", "-H", "x-echo-delay-ms: 50")
    assert status == 200, body
