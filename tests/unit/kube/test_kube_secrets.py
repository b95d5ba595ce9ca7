"""TLS Secrets: which certificates can serve, why the others cannot, and that no output shows a key."""

from __future__ import annotations

import base64
import datetime

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from testcerts import Authority, Pem, mismatched

import meshcore
from meshcore.kube import load_text, translate_core
from meshcore.kube._secret import read_tls_secret
from meshcore.model import Redacted

CA = Authority()


def _inventory(*docs: str) -> meshcore.Inventory:
    objects, diagnostics = load_text("---\n".join(docs), "secrets.yaml")
    assert not diagnostics
    inventory, found = translate_core(objects)
    assert not found, found
    return inventory


@pytest.mark.parametrize("pem", [
    CA.issue(["a.example.com"]),  # EC key, PKCS#8
    CA.issue(["a.example.com"], key_format=serialization.PrivateFormat.TraditionalOpenSSL),  # SEC1
    CA.issue(["a.example.com"], rsa_key=True),  # RSA, PKCS#8
    CA.issue(["a.example.com"], rsa_key=True, key_format=serialization.PrivateFormat.TraditionalOpenSSL),  # PKCS#1
], ids=["ec-pkcs8", "ec-sec1", "rsa-pkcs8", "rsa-pkcs1"])
def test_a_matching_pair_is_a_certificate_with_its_names_and_expiry(pem: Pem) -> None:
    certificate, problem = _inventory(pem.secret("s")).certificate("default", "s")
    assert problem == "" and certificate is not None
    assert certificate.dns_names == ("a.example.com",)
    assert certificate.not_after > datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert certificate.chain == pem.cert and certificate.private_key.reveal() == pem.key


def _string_secret(name: str, crt: str, key: str, kind: str = "kubernetes.io/tls") -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": kind,
                           "stringData": {"tls.crt": crt, "tls.key": key}})


@pytest.mark.parametrize(("doc", "problem"), [
    (CA.issue(["x.example.com"], expired=True).secret("s"), "the certificate expired on "),
    (mismatched(CA.issue(["x"]), CA.issue(["y"])).secret("s"), "tls.key does not match the certificate"),
    (mismatched(CA.issue(["x"], rsa_key=True), CA.issue(["y"], rsa_key=True)).secret("s"),
     "tls.key does not match the certificate"),
    (mismatched(CA.issue(["x"]), CA.issue(["y"], rsa_key=True)).secret("s"), "they use different key types"),
    (_string_secret("s", "garbage", "garbage"), "tls.crt holds no PEM CERTIFICATE block"),
    (_string_secret("s", CA.pem, "-----BEGIN PRIVATE KEY-----\n%%%\n-----END PRIVATE KEY-----\n"),
     "a PRIVATE KEY block is not valid base64"),
    (_string_secret("s", CA.pem, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"),
     "only unencrypted keys"),
    ("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: Opaque\nstringData: {password: p}\n",
     "Secret default/s of type Opaque has no tls.crt and tls.key entries"),
    ("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\ndata: {tls.crt: '!!', tls.key: '!!'}\n",
     "tls.crt or tls.key is empty or not base64-encoded text"),
])
def test_a_pair_that_cannot_serve_says_why_without_quoting_it(doc: str, problem: str) -> None:
    certificate, found = _inventory(doc).certificate("default", "s")
    assert certificate is None and problem in found and found.startswith("Secret default/s")
    assert "BEGIN" not in found and "MII" not in found


def test_a_certificate_not_yet_valid_cannot_serve() -> None:
    objects, _ = load_text(CA.issue(["a.example.com"]).secret("s"), "s.yaml")
    long_ago = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    assert "is not valid before" in read_tls_secret(objects[0], long_ago).problem


def test_a_missing_secret_is_named() -> None:
    assert _inventory().certificate("web", "gone") == (None, "Secret web/gone not found")


def test_istio_generic_secret_names_are_read_too() -> None:
    pem = CA.issue(["a.example.com"])
    doc = yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque",
                          "data": {"cert": base64.b64encode(pem.cert.encode()).decode(),
                                   "key": base64.b64encode(pem.key.encode()).decode()}})
    certificate, problem = _inventory(doc).certificate("default", "s")
    assert certificate is not None, problem


def test_no_output_of_a_translation_shows_the_private_key() -> None:
    pem = CA.issue(["shop.example.com"])
    result = meshcore.translate(text="\n---\n".join([pem.secret("shop-tls", "web"), """
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: meshcore, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: meshcore.io/ingress-controller}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: web}
spec: {clusterIP: 10.96.0.9, ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: web}
spec:
  tls: [{hosts: [shop.example.com], secretName: shop-tls}]
  defaultBackend: {service: {name: web, port: {number: 80}}}
"""]))
    [certificate] = result.snapshot.certificates
    key_line = pem.key.splitlines()[1]
    shown = [yaml.safe_dump(result.snapshot.to_data()), repr(result.snapshot), str(certificate),
             *(str(d) for d in result.diagnostics), *(repr(s.status) for s in result.statuses)]
    assert all(key_line not in text and "PRIVATE KEY" not in text for text in shown)
    assert certificate.private_key.placeholder in shown[0]
    # The placeholder follows the key, so output (and the content hash) changes when the key rotates.
    assert Redacted("a").placeholder != Redacted("b").placeholder and Redacted("a") == Redacted("a")
