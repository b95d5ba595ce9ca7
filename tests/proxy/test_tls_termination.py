"""TLS termination in the node proxy: certificates over SDS by server name, rotation, never clear text.

Certificates are made at test time by a test CA; the client trusts only that CA and
checks the server name, as a browser would. The Envoy under test gets its certificates
only over the ADS stream (SDS), never from a file.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Callable

import pytest
from _proxy_support import NS, PROXY_HOST, ProxyEnv, backends, proxy_port, service, snapshot, table
from cryptography import x509
from testcerts import Authority, Pem

from meshcore import model as m
from meshcore.compile import Plan
from meshcore.proxy import SECRET, build_resources, canonical_json

Apply = Callable[[m.Snapshot], Plan]


class TlsClient:
    """One TLS connection to the proxy for ``server_name``, verified against the test CA, reused for requests."""

    def __init__(self, port: int, server_name: str, ca: Authority) -> None:
        context = ssl.create_default_context(cadata=ca.pem)
        raw = socket.create_connection((PROXY_HOST, port), timeout=5)
        self.sock = context.wrap_socket(raw, server_hostname=server_name)
        self.server_name = server_name

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate the proxy presented."""
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)

    def get(self, path: str = "/") -> tuple[int, bytes]:
        """Status and body of one request over this connection."""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.server_name}\r\n\r\n".encode())
        response = http.client.HTTPResponse(self.sock)  # type: ignore[arg-type]
        response.begin()
        return response.status, response.read()

    def close(self) -> None:
        self.sock.close()


def _names(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def _gateway(web: m.Service, certs: dict[tuple[str, ...], tuple[str, Pem]]) -> m.Snapshot:
    """A gateway Service port 443 routing to ``web``, terminating TLS per server names with the given Secrets."""
    gw = m.Service("gw", NS, vips=("10.96.0.99",), ports=(m.ServicePort(443, "TLS", "https"),))
    certificates = {name: m.Certificate(NS, name, pem.cert, pem.key) for name, pem in certs.values()}
    terminations = [m.TlsTermination(gw.ref, 443, hosts, (m.CertificateRef(NS, name),))
                    for hosts, (name, _) in certs.items()]
    snap = snapshot([gw, web], [table(gw, m.HttpRoute("all", destinations=[m.Destination(web.ref, 80)]), port=443)])
    return m.Snapshot(namespaces=snap.namespaces, services=snap.services, routes=snap.routes,
                      certificates=tuple(certificates.values()), tls_terminations=tuple(terminations))


@pytest.mark.envoy
def test_each_server_name_gets_its_own_certificate_and_other_names_or_clear_text_are_refused(apply: Apply) -> None:
    ca = Authority()
    a, b = ca.issue(["a.example.com"]), ca.issue(["b.example.com"], rsa_key=True)
    with backends("web") as (web_backend,):
        plan = apply(_gateway(service("web", [web_backend]), {("a.example.com",): ("a", a),
                                                              ("b.example.com",): ("b", b)}))
        port = proxy_port(plan, "gw", 443)
        for name in ("a.example.com", "b.example.com"):
            client = TlsClient(port, name, ca)
            try:
                assert _names(client.certificate) == [name]
                status, body = client.get("/hello")
                assert status == 200 and b'"name": "web"' in body, body
            finally:
                client.close()
        # A name no termination serves matches no filter chain: the handshake fails.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            TlsClient(port, "c.example.com", ca).get()
        # Clear text on the TLS port is never served.
        conn = http.client.HTTPConnection(PROXY_HOST, port, timeout=5)
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            conn.request("GET", "/", headers={"Host": "a.example.com"})
            conn.getresponse()
        conn.close()


@pytest.mark.envoy
def test_rotating_a_certificate_serves_the_new_one_without_dropping_open_connections(
        apply: Apply, proxy_env: ProxyEnv) -> None:
    ca = Authority()
    old, new = ca.issue(["a.example.com"]), ca.issue(["a.example.com"])
    with backends("web") as (web_backend,):
        web = service("web", [web_backend])
        plan = apply(_gateway(web, {("a.example.com",): ("a", old)}))
        port = proxy_port(plan, "gw", 443)
        listener_before = proxy_env.cp.status(proxy_env.node).types["Listener"].acked_version
        kept = TlsClient(port, "a.example.com", ca)
        try:
            old_serial = kept.certificate.serial_number
            assert kept.get()[0] == 200
            apply(_gateway(web, {("a.example.com",): ("a", new)}))
            # The connection opened before the rotation keeps working on its old session...
            assert kept.get()[0] == 200 and kept.get()[0] == 200
            # ...and a new one gets the new certificate.
            fresh = TlsClient(port, "a.example.com", ca)
            try:
                assert fresh.certificate.serial_number != old_serial
                assert fresh.certificate.serial_number == x509.load_pem_x509_certificate(new.cert.encode()).serial_number
                assert fresh.get()[0] == 200
            finally:
                fresh.close()
        finally:
            kept.close()
        # Only the secret changed: the listener was not replaced (so nothing was drained).
        assert proxy_env.cp.status(proxy_env.node).types["Listener"].acked_version == listener_before


def test_the_private_key_is_in_the_sds_message_and_never_in_the_shown_resources() -> None:
    ca = Authority()
    pem = ca.issue(["a.example.com"])
    with backends("web") as (web_backend,):
        snap = _gateway(service("web", [web_backend]), {("a.example.com",): ("a", pem)})
    from meshcore.compile import compile_plan

    plan = compile_plan(snap, "n")
    resources = build_resources(plan.envoy)
    [secret] = resources.of(SECRET).values()
    assert secret.name == "tls/shop/a"
    assert secret.message.tls_certificate.private_key.inline_string == pem.key
    shown = canonical_json(resources)
    assert "PRIVATE KEY" not in shown and pem.key.splitlines()[1] not in shown
    assert "<redacted sha256:" in shown and "BEGIN CERTIFICATE" in shown
    assert "PRIVATE KEY" not in repr(plan) and "PRIVATE KEY" not in str(snap.to_data())
