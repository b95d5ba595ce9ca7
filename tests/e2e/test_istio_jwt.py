"""Istio RequestAuthentication in the lab: JWTs validated by the node Envoy, request principals authorized.

One lab serves the module. A namespace-wide RequestAuthentication accepts tokens of one
issuer and audience, signed HS256 with a symmetric key given inline as a JSON Web Key
Set; the tokens are made here with the standard library. ``web`` has no authorization
policy: a request without a token passes, a bad token gets 401. ``guarded`` allows only
the request principal ``<issuer>/alice``, and ``/admin`` to any token whose ``group``
claim holds ``admins``. Requests are sent with curl from a client pod; the echo backend
says what it received. Two more rules name their keys by URI: one served by the ``keys``
pod of the mesh, which the node proxy fetches, the other outside the mesh, which it
cannot fetch: tokens of that issuer are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from _lab_support import client_pod, curl_json, echo_app, http_server_code, running_lab, write

from meshcore.lab import Lab
from meshcore.proxy import EnvoyOptions

pytestmark = pytest.mark.root

NS = "authn"
ISSUER = "https://issuer.meshcore.test"
AUDIENCE = "web"
KEY = b"meshcore lab HS256 key, 32 bytes or more"
#: An issuer whose keys are given by URI: the node proxy cannot fetch them.
REMOTE_ISSUER = "https://remote.test"
OTHER_KEY = b"not the key the mesh trusts, also long!!"
#: An issuer whose keys the ``keys`` pod serves.
MESH_ISSUER = "https://idp.meshcore.test"
MESH_KEY = b"the key set served inside the mesh, 32+"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


JWKS = json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "kid": "lab", "k": _b64(KEY)}]})


def token(sub: str, *, iss: str = ISSUER, aud: str = AUDIENCE, expires_in: int = 3600, key: bytes = KEY,
          **claims: Any) -> str:
    """A compact HS256 JWT."""
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "lab"}).encode())
    payload = _b64(json.dumps({"iss": iss, "sub": sub, "aud": aud, "iat": now - 60, "exp": now + expires_in,
                               **claims}).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


#: Serves the key set of MESH_ISSUER at /jwks.json (and counts the fetches at /fetches).
KEYS_ANSWER = """\
        global fetches
        status = 200
        if self.path == '/jwks.json':
            fetches += 1
            body = JWKS.encode()
        else:
            body = json.dumps({'fetches': fetches}).encode()
"""
MESH_JWKS = json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "kid": "lab", "k": _b64(MESH_KEY)}]})
KEYS_CODE = http_server_code(KEYS_ANSWER, setup=f"JWKS = {MESH_JWKS!r}\nfetches = 0")

APP = "\n---\n".join([
    f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n",
    echo_app("web", NS),
    echo_app("guarded", NS),
    client_pod("client", NS),
    f"""apiVersion: v1
kind: Pod
metadata: {{name: keys, namespace: {NS}, labels: {{app: keys}}}}
spec:
  containers:
  - name: keys
    image: python
    command: ["{sys.executable}", "-S", "-c", {json.dumps(KEYS_CODE)}]
    ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: keys, namespace: {NS}}}
spec:
  selector: {{app: keys}}
  ports: [{{name: http, port: 80, targetPort: http}}]
""",
])

ISTIO = f"""
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: tokens, namespace: {NS}}}
spec:
  jwtRules:
  - issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    jwks: '{JWKS}'
    outputClaimToHeaders:
    - {{header: x-jwt-sub, claim: sub}}
  - issuer: {REMOTE_ISSUER}
    jwksUri: https://keys.remote.test/jwks.json
  - issuer: {MESH_ISSUER}
    jwksUri: http://keys.{NS}.svc.cluster.local/jwks.json
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: guarded, namespace: {NS}}}
spec:
  selector:
    matchLabels: {{app: guarded}}
  rules:
  - from:
    - source:
        requestPrincipals: ["{ISSUER}/alice"]
  - to:
    - operation:
        paths: ["/admin*"]
    when:
    - key: request.auth.claims[group]
      values: [admins]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The lab with the objects above; always torn down and checked."""
    tmp: Path = tmp_path_factory.mktemp("jwt")
    with running_lab([write(tmp, "app.yaml", APP), write(tmp, "istio.yaml", ISTIO)], all_ready=True) as up:
        yield up


def get(lab: Lab, url: str, bearer: str | None = None) -> tuple[int, Any]:
    """Status and JSON body (or text) of one request from the client pod."""
    args = ["-H", f"Authorization: Bearer {bearer}"] if bearer is not None else []
    return curl_json(lab, "client", url, *args, namespace=NS)


def test_valid_token_reaches_the_backend_with_its_claims(lab: Lab) -> None:
    status, body = get(lab, "http://web/hello", token("alice"))
    assert status == 200 and body["pod"].startswith("web-"), (status, body)
    # The verified subject is copied into a header; the token itself is not forwarded.
    assert body["headers"].get("X-Jwt-Sub") == ["alice"], body["headers"]
    assert "Authorization" not in body["headers"], body["headers"]


def test_missing_token_passes_when_only_request_authentication_applies(lab: Lab) -> None:
    status, body = get(lab, "http://web/anonymous")
    assert status == 200 and body["pod"].startswith("web-"), (status, body)
    assert "X-Jwt-Sub" not in body["headers"], body["headers"]


@pytest.mark.parametrize("bad", ["signature", "expired", "issuer", "garbage"])
def test_invalid_token_is_refused_with_401(lab: Lab, bad: str) -> None:
    bearer = {
        "signature": token("alice", key=OTHER_KEY),
        "expired": token("alice", expires_in=-600),
        "issuer": token("alice", iss="https://elsewhere.test"),
        "garbage": "not.a.jwt",
    }[bad]
    status, body = get(lab, "http://web/bad", bearer)
    assert status == 401, (status, body)


def test_issuer_with_keys_by_uri_is_refused_not_trusted(lab: Lab) -> None:
    # Its keys are not available to the node proxy: even a token signed with a key the
    # mesh knows is refused (fail closed), and a request without a token still passes.
    assert get(lab, "http://web/remote", token("alice", iss=REMOTE_ISSUER))[0] == 401
    assert get(lab, "http://web/remote")[0] == 200


def test_keys_by_uri_from_a_service_of_the_mesh_are_fetched(lab: Lab) -> None:
    # The node proxy fetches the key set from the keys pod when a token first needs it,
    # then keeps it: valid tokens pass, a token signed with another key does not.
    assert get(lab, "http://web/mesh-keys", token("carol", iss=MESH_ISSUER, key=MESH_KEY))[0] == 200
    status, body = get(lab, "http://web/mesh-keys", token("carol", iss=MESH_ISSUER, key=MESH_KEY))
    assert status == 200 and body["headers"].get("X-Jwt-Sub") is None, body  # that rule copies no claim
    assert get(lab, "http://web/mesh-keys", token("carol", iss=MESH_ISSUER, key=KEY))[0] == 401
    # Each of the node Envoy's workers keeps its own copy: at most one fetch per worker.
    status, fetched = get(lab, "http://keys/fetches")
    workers = attrs.fields(EnvoyOptions).concurrency.default  # the lab's Envoy keeps the default
    assert status == 200 and 1 <= fetched["fetches"] <= workers, fetched


def test_wrong_audience_is_refused_with_403(lab: Lab) -> None:
    # A valid token for another audience is authenticated but not allowed here: Envoy's JWT
    # filter (which Istio's proxies use too) answers 403, not 401, for that case.
    status, body = get(lab, "http://web/bad", token("alice", aud="not-web"))
    assert (status, body) == (403, "Audiences in Jwt are not allowed"), (status, body)


def test_request_principal_policy(lab: Lab) -> None:
    # No token: authenticated requests only, so RBAC refuses it.
    assert get(lab, "http://guarded/doc")[0] == 403
    status, body = get(lab, "http://guarded/doc", token("alice"))
    assert status == 200 and body["pod"].startswith("guarded-"), (status, body)
    assert get(lab, "http://guarded/doc", token("bob"))[0] == 403
    # A forged token for the allowed subject is refused before authorization.
    assert get(lab, "http://guarded/doc", token("alice", key=OTHER_KEY))[0] == 401


def test_claim_condition(lab: Lab) -> None:
    status, body = get(lab, "http://guarded/admin/panel", token("bob", group=["staff", "admins"]))
    assert status == 200 and body["pod"].startswith("guarded-"), (status, body)
    assert get(lab, "http://guarded/admin/panel", token("carol", group="admins"))[0] == 200
    assert get(lab, "http://guarded/admin/panel", token("bob", group=["staff"]))[0] == 403
    assert get(lab, "http://guarded/admin/panel")[0] == 403
    # The claim rule is limited to /admin: elsewhere bob is still refused.
    assert get(lab, "http://guarded/doc", token("bob", group="admins"))[0] == 403


def test_direct_to_the_pod_cannot_skip_the_token_check(lab: Lab) -> None:
    # The token is checked by the node proxy: dialling web's pod address directly would
    # skip it (and could forge the x-jwt-sub header), so the kernel drops the connection.
    web = next(p for p in lab.status().pods if p.name.startswith("web-") and p.namespace == NS)
    for address in web.addresses:
        host = f"[{address}]" if ":" in address else address
        result = lab.run("client", ["curl", "-sS", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}",
                                    "-H", "x-jwt-sub: alice", f"http://{host}:8080/forged"],
                         namespace=NS, timeout=30)
        assert result.returncode != 0 and result.stdout.decode() == "000", (address, result)
    # Through the service the same request is served.
    status, body = get(lab, "http://web/after-direct")
    assert status == 200 and body["pod"] == web.name, (status, body)


def test_claim_header_cannot_be_forged_through_the_proxy(lab: Lab) -> None:
    args = ["curl", "-sS", "-m", "5", "-H", "x-jwt-sub: mallory", "http://web/forged"]
    result = lab.run("client", args, namespace=NS, timeout=30)
    assert result.returncode == 0, result.stderr
    headers = json.loads(result.stdout)["headers"]
    assert headers.get("X-Jwt-Sub") in (None, []), headers
