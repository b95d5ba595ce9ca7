"""North-south traffic from the lab's internet client: Ingress (HTTP, HTTPS), HTTPS Gateway, TLS passthrough.

Every request starts outside the mesh, on the lab's internet client (routed only to the
edge addresses the lab assigned), and is checked as a browser would check it: the
certificate must verify against the test CA for the name asked for. Certificates are
made at test time. One lab serves the whole module.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from _lab_support import echo_app, envoy_pid, meshcore_cli, running_lab, write
from testcerts import Authority

from meshcore.lab import Lab

pytestmark = pytest.mark.root

CA = Authority()
SHOP, A, B = CA.issue(["shop.example.com"]), CA.issue(["a.example.com"]), CA.issue(["b.example.com"], rsa_key=True)
EXPIRED = CA.issue(["bad.example.com"], expired=True)
PASS, TERM = CA.issue(["pass.example.com"]), CA.issue(["term.example.com"])
SECURE = CA.issue(["secure.example.com"])

# A TLS server in a pod, IPv4 and IPv6 (passthrough keeps its own certificate end to end).
TLS_SERVER = """
import os, socket, ssl, tempfile
pem = tempfile.NamedTemporaryFile("w", delete=False)
pem.write(os.environ["CERT"] + os.environ["KEY"]); pem.close()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(pem.name)
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("::", 8443)); s.listen(16)
while True:
    c, _ = s.accept()
    try:
        t = ctx.wrap_socket(c, server_side=True); t.recv(100); t.sendall(b"passthrough:" + os.environ["POD_NAME"].encode()); t.close()
    except (OSError, ssl.SSLError):
        c.close()
"""

# An HTTPS backend (IPv4 and IPv6) that says which server name (SNI) the client asked for.
HTTPS_SERVER = """
import http.server, json, os, socket, ssl, tempfile
pem = tempfile.NamedTemporaryFile("w", delete=False)
pem.write(os.environ["CERT"] + os.environ["KEY"]); pem.close()
seen = {}
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(pem.name)
ctx.sni_callback = lambda sock, name, _: seen.update(sni=name)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"pod": os.environ["POD_NAME"], "sni": seen.get("sni")}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(http.server.HTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); super().server_bind()
        self.socket = ctx.wrap_socket(self.socket, server_side=True)
S(("::", 8443), H).serve_forever()
"""

MANIFESTS = "\n---\n".join([
    echo_app("web", "default"), echo_app("api", "default"),
    SHOP.secret("shop-tls"), A.secret("a-cert"), TERM.secret("term-cert"), B.secret("b-cert"), EXPIRED.secret("bad-cert"),
    f"""
apiVersion: v1
kind: Pod
metadata: {{name: tls-backend, labels: {{app: tls-backend}}}}
spec:
  containers:
  - name: tls
    command: ["{sys.executable}", "-S", "-c", {json.dumps(TLS_SERVER)}]
    env: [{{name: CERT, value: {json.dumps(PASS.cert)}}}, {{name: KEY, value: {json.dumps(PASS.key)}}}]
    ports: [{{containerPort: 8443}}]
---
apiVersion: v1
kind: Service
metadata: {{name: tls-backend}}
spec:
  selector: {{app: tls-backend}}
  ports: [{{name: tls, port: 8443}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: secure, labels: {{app: secure}}}}
spec:
  containers:
  - name: https
    command: ["{sys.executable}", "-S", "-c", {json.dumps(HTTPS_SERVER)}]
    env: [{{name: CERT, value: {json.dumps(SECURE.cert)}}}, {{name: KEY, value: {json.dumps(SECURE.key)}}}]
    ports: [{{containerPort: 8443}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: secure-ca}}
data: {{ca.crt: {json.dumps(CA.pem)}}}
""", """
# The same HTTPS pod behind two Services: one policy names the backend's real hostname,
# the other a name its certificate does not carry.
apiVersion: v1
kind: Service
metadata: {name: secure}
spec:
  selector: {app: secure}
  ports: [{name: https, port: 443, targetPort: 8443}]
---
apiVersion: v1
kind: Service
metadata: {name: secure-wrong}
spec:
  selector: {app: secure}
  ports: [{name: https, port: 443, targetPort: 8443}]
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {name: secure}
spec:
  targetRefs: [{group: "", kind: Service, name: secure}]
  validation: {hostname: secure.example.com, caCertificateRefs: [{group: "", kind: ConfigMap, name: secure-ca}]}
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {name: secure-wrong}
spec:
  targetRefs: [{group: "", kind: Service, name: secure-wrong}]
  validation: {hostname: wrong.example.com, caCertificateRefs: [{group: "", kind: ConfigMap, name: secure-ca}]}
""", """
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: meshcore, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: meshcore.io/ingress-controller}
---
# No class named: the default IngressClass (meshcore's) takes it.
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  tls: [{hosts: [shop.example.com], secretName: shop-tls}]
  defaultBackend: {service: {name: web, port: {number: 80}}}
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: meshcore}
spec: {controllerName: meshcore.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: meshcore
  listeners:
  - {name: a, port: 443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: a-cert}]}}
  - {name: b, port: 443, protocol: HTTPS, hostname: b.example.com, tls: {certificateRefs: [{name: b-cert}]}}
  - {name: bad, port: 443, protocol: HTTPS, hostname: bad.example.com, tls: {certificateRefs: [{name: bad-cert}]}}
  - {name: pass, port: 8443, protocol: TLS, hostname: pass.example.com, tls: {mode: Passthrough}}
  - {name: term, port: 9443, protocol: TLS, hostname: term.example.com,
     tls: {mode: Terminate, certificateRefs: [{name: term-cert}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a}
spec:
  parentRefs: [{name: gw, sectionName: a}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /secure}}]
    backendRefs: [{name: secure, port: 443}]
  - matches: [{path: {type: PathPrefix, value: /wrong}}]
    backendRefs: [{name: secure-wrong, port: 443}]
  - backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b}
spec:
  parentRefs: [{name: gw, sectionName: b}, {name: gw, sectionName: bad}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: pass}
spec:
  parentRefs: [{name: gw, sectionName: pass}]
  rules: [{backendRefs: [{name: tls-backend, port: 8443}]}]
---
# Terminated by the node proxy; the decrypted bytes go to a plain HTTP backend.
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: term}
spec:
  parentRefs: [{name: gw, sectionName: term}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
"""])

# Runs on the internet client: a verified TLS handshake for a server name, then one exchange.
HANDSHAKE = """
import json, socket, ssl, sys
host, port, name, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
try:
    with socket.create_connection((host, port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=name) as s:
        sans = [v for k, v in s.getpeercert().get("subjectAltName", ()) if k == "DNS"]
        if port == 8443:
            s.sendall(b"hello"); answer = s.recv(100).decode()
        else:
            s.sendall(f"GET / HTTP/1.1\\r\\nHost: {name}\\r\\nConnection: close\\r\\n\\r\\n".encode())
            answer = b"".join(iter(lambda: s.recv(65536), b"")).decode(errors="replace").split("\\r\\n")[0]
    print(json.dumps({"sans": sans, "answer": answer}))
except (OSError, ssl.SSLError) as e:
    print(json.dumps({"error": type(e).__name__}))
"""


# Runs on the internet client: the serial number of the certificate served for a name (verified).
SERIAL = """
import socket, ssl, sys
host, name, ca = sys.argv[1], sys.argv[2], sys.argv[3]
with socket.create_connection((host, 443), timeout=5) as raw:
    with ssl.create_default_context(cafile=ca).wrap_socket(raw, server_hostname=name) as s:
        print(s.getpeercert()["serialNumber"])
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path]]:
    """The lab with the Ingress, the Gateway, their Secrets and backends; and the CA file for clients."""
    tmp = tmp_path_factory.mktemp("north-south")
    (tmp / "ca.pem").write_text(CA.pem)
    with running_lab([write(tmp, "edge.yaml", MANIFESTS)]) as running:
        yield running, tmp


def _vip(lab: Lab, name: str) -> str:
    services = {(s.namespace, s.name): s for s in lab.status().services}
    return next(a for a in services[("default", name)].cluster_ips if ":" not in a)


def _curl(lab: Lab, ca: Path, url: str, host: str, vip: str, port: int) -> tuple[int, Any]:
    result = lab.run_outside(["curl", "-sS", "-m", "5", "--cacert", str(ca), "--resolve", f"{host}:{port}:{vip}",
                              "-w", "\\n%{http_code}", url], timeout=20)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    body, _, status = result.stdout.decode().rpartition("\n")
    return int(status), json.loads(body) if body.startswith("{") else body


def _handshake(lab: Lab, ca: Path, vip: str, port: int, name: str) -> dict[str, Any]:
    result = lab.run_outside([sys.executable, "-S", "-c", HANDSHAKE, vip, str(port), name, str(ca)], timeout=20)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_ingress_serves_http_and_https_from_the_internet_on_its_default_class(lab: tuple[Lab, Path]) -> None:
    running, tmp = lab
    vip = _vip(running, "shop")
    for scheme, port in (("http", 80), ("https", 443)):
        status, body = _curl(running, tmp / "ca.pem", f"{scheme}://shop.example.com/api/x", "shop.example.com", vip,
                             port)
        assert status == 200 and body["pod"].startswith("api-"), body
        status, body = _curl(running, tmp / "ca.pem", f"{scheme}://shop.example.com/", "shop.example.com", vip, port)
        assert status == 200 and body["pod"].startswith("web-"), body
    # Hosts without a rule take the default backend (plain HTTP: the certificate names shop only).
    status, body = _curl(running, tmp / "ca.pem", "http://other.example.com/api", "other.example.com", vip, 80)
    assert status == 200 and body["pod"].startswith("web-"), body


def test_the_ingress_and_gateway_addresses_are_in_their_status(lab: tuple[Lab, Path]) -> None:
    running, _ = lab
    out = meshcore_cli("status", "--lab", running.name, "-o", "json")
    statuses = {(s["kind"], s["name"]): s["status"] for s in json.loads(out.stdout)["statuses"]}
    assert statuses[("Ingress", "shop")]["loadBalancer"] == {"ingress": [{"ip": _vip(running, "shop")}]}
    assert statuses[("Gateway", "gw")]["addresses"] == [{"type": "IPAddress", "value": _vip(running, "gw")}]


def test_an_https_gateway_serves_each_hostname_its_own_certificate(lab: tuple[Lab, Path]) -> None:
    running, tmp = lab
    vip = _vip(running, "gw")
    a = _handshake(running, tmp / "ca.pem", vip, 443, "a.example.com")
    b = _handshake(running, tmp / "ca.pem", vip, 443, "b.example.com")
    assert a["sans"] == ["a.example.com"] and b["sans"] == ["b.example.com"], (a, b)
    assert a["answer"] == b["answer"] == "HTTP/1.1 200 OK", (a, b)
    status, body = _curl(running, tmp / "ca.pem", "https://b.example.com/", "b.example.com", vip, 443)
    assert status == 200 and body["pod"].startswith("api-"), body


def test_a_listener_with_an_expired_certificate_stays_closed_with_its_condition(lab: tuple[Lab, Path]) -> None:
    running, tmp = lab
    # No filter chain takes the name: the proxy closes the connection during the handshake.
    answer = _handshake(running, tmp / "ca.pem", _vip(running, "gw"), 443, "bad.example.com")
    assert answer in ({"error": "SSLError"}, {"error": "ConnectionResetError"}, {"error": "SSLEOFError"}), answer
    out = meshcore_cli("status", "--lab", running.name, "-o", "json")
    gateway = next(s["status"] for s in json.loads(out.stdout)["statuses"] if s["kind"] == "Gateway")
    bad = next(x for x in gateway["listeners"] if x["name"] == "bad")
    resolved = next(c for c in bad["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "InvalidCertificateRef")
    assert "Secret default/bad-cert: the certificate expired" in resolved["message"]


def test_tls_passthrough_reaches_the_backend_with_its_own_certificate(lab: tuple[Lab, Path]) -> None:
    running, tmp = lab
    for _ in range(4):  # the backend's addresses (v4, v6) in turn
        answer = _handshake(running, tmp / "ca.pem", _vip(running, "gw"), 8443, "pass.example.com")
        assert answer == {"sans": ["pass.example.com"], "answer": "passthrough:tls-backend"}, answer


def test_a_tls_listener_in_terminate_mode_decrypts_for_a_plain_backend(lab: tuple[Lab, Path]) -> None:
    running, tmp = lab
    answer = _handshake(running, tmp / "ca.pem", _vip(running, "gw"), 9443, "term.example.com")
    assert answer == {"sans": ["term.example.com"], "answer": "HTTP/1.1 200 OK"}, answer


def test_the_internet_client_reaches_no_pod_directly(lab: tuple[Lab, Path]) -> None:
    running, _ = lab
    web = next(p for p in running.status().pods if p.name.startswith("web-"))
    result = running.run_outside(["curl", "-sS", "-m", "3", f"http://{web.addresses[0]}:8080/"], timeout=20)
    assert result.returncode != 0


def test_backend_tls_policy_sends_tls_to_the_backend_verified_by_its_ca_and_hostname(lab: tuple[Lab, Path]) -> None:
    running, tmp = lab
    vip = _vip(running, "gw")
    status, body = _curl(running, tmp / "ca.pem", "https://a.example.com/secure", "a.example.com", vip, 443)
    assert (status, body) == (200, {"pod": "secure", "sni": "secure.example.com"}), body
    # A hostname the backend's certificate does not carry fails verification: no answer from it.
    status, body = _curl(running, tmp / "ca.pem", "https://a.example.com/wrong", "a.example.com", vip, 443)
    assert status == 503, body


def test_rotating_the_ingress_secret_serves_the_new_certificate_without_restarting_envoy(
        lab: tuple[Lab, Path]) -> None:
    # Last in the module: it changes the lab's Secret.
    running, tmp = lab
    vip, pid = _vip(running, "shop"), envoy_pid(running)

    def serial() -> str:
        result = running.run_outside([sys.executable, "-S", "-c", SERIAL, vip, "shop.example.com", str(tmp / "ca.pem")],
                                     timeout=20)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        return result.stdout.decode().strip()

    before = serial()
    rotated = CA.issue(["shop.example.com"])
    up = running.up([write(tmp, "edge.yaml", MANIFESTS.replace(SHOP.secret("shop-tls"), rotated.secret("shop-tls")))],
                    timeout=60)
    assert up.agent is not None and up.agent.ok, up.agent
    after = serial()
    assert after != before and int(after, 16) == x509.load_pem_x509_certificate(rotated.cert.encode()).serial_number
    assert envoy_pid(running) == pid
