"""RequestAuthentication → model request authentications (JWT validation rules).

A RequestAuthentication in the root namespace without a selector applies to every
workload of the mesh; with a selector, to the matching workloads of every namespace;
elsewhere to its namespace's workloads (all, or those its selector matches). Several
objects selecting one workload add up: a token must satisfy one rule of any of them.
Fields are checked as Istio's validation does: ``issuer`` is required, ``jwks`` and
``jwksUri`` are mutually exclusive, ``jwks`` must be a JSON Web Key Set (a JSON object
with a ``keys`` list), header names must be valid; a bad field is an error naming its path.
An object attached by ``targetRef(s)`` (to a Gateway, Service or waypoint) is reported
and not applied; with a selector as well it is an error.
"""

from __future__ import annotations

from meshcore.kube import FieldError, Fields, KubeObject, Report
from meshcore.model import ClaimToHeader, JwtHeader, JwtRule, RequestAuthentication, WorkloadSelector
from meshcore.model.authn import canonical_jwks

from ._codes import IstioCode
from ._common import ROOT_NAMESPACE, model, read_duration, targets_by_reference

_SEPARATORS = set('"(),/:;<=>?@[\\]{}')


def _header(name: str, path: str) -> str:
    if not name or any(c.isspace() or c in _SEPARATORS or not c.isprintable() for c in name):
        raise FieldError(path, f"{name!r} is not a valid HTTP header name", IstioCode.INVALID_VALUE)
    return name


def _jwks(rule: Fields) -> str | None:
    text = rule.str("jwks")
    if text is None:
        return None
    try:
        return canonical_jwks(text)
    except ValueError as exc:
        raise FieldError(f"{rule.path}.jwks", f"jwks {exc}", IstioCode.INVALID_VALUE) from None


def _rule(rule: Fields) -> JwtRule:
    issuer = rule.req_str("issuer")
    if not issuer:
        raise FieldError(f"{rule.path}.issuer", "issuer must not be empty", IstioCode.INVALID_VALUE)
    uri_key = "jwksUri"
    uri = rule.str(uri_key) or None
    jwks = _jwks(rule)
    if jwks is not None and uri is not None:
        raise FieldError(f"{rule.path}.jwks", f"jwks and {uri_key} are mutually exclusive: give the key set "
                         "inline or its URI, not both", IstioCode.INVALID_COMBINATION)
    if uri is not None and not uri.startswith(("http://", "https://")):
        raise FieldError(f"{rule.path}.{uri_key}", f"{uri!r} is not an http:// or https:// URI",
                         IstioCode.INVALID_VALUE)
    audiences = rule.strs("audiences")
    for i, audience in enumerate(audiences):
        if not audience:
            raise FieldError(f"{rule.path}.audiences[{i}]", "audiences must not be empty", IstioCode.INVALID_VALUE)
    headers = []
    for h in rule.maps("fromHeaders"):
        name = _header(h.req_str("name"), f"{h.path}.name")
        headers.append(JwtHeader(name, h.str("prefix") or ""))
    for key in ("fromParams", "fromCookies"):
        for i, value in enumerate(rule.strs(key)):
            if not value:
                raise FieldError(f"{rule.path}.{key}[{i}]", "must not be empty", IstioCode.INVALID_VALUE)
    payload = rule.str("outputPayloadToHeader") or None
    if payload is not None:
        _header(payload, f"{rule.path}.outputPayloadToHeader")
    claims = []
    for c in rule.maps("outputClaimToHeaders"):
        header = _header(c.req_str("header"), f"{c.path}.header")
        claim = c.req_str("claim")
        if not claim:
            raise FieldError(f"{c.path}.claim", "claim must not be empty", IstioCode.INVALID_VALUE)
        claims.append(ClaimToHeader(header, claim))
    return model(rule.path, lambda: JwtRule(
        issuer=issuer, audiences=tuple(audiences), jwks=jwks, jwks_uri=uri, from_headers=tuple(headers),
        from_params=tuple(rule.strs("fromParams")), from_cookies=tuple(rule.strs("fromCookies")),
        forward_original_token=rule.bool("forwardOriginalToken"), output_payload_to_header=payload,
        output_claim_to_headers=tuple(claims), timeout_ms=read_duration(rule, "timeout"),
    ))


def read_request_authentication(obj: KubeObject, report: Report,
                                root: str = ROOT_NAMESPACE) -> RequestAuthentication | None:
    """Read one RequestAuthentication (see the module documentation); ``None`` when it is not applied."""
    spec = Fields.of(obj).map("spec")
    if targets_by_reference(spec, obj, report):
        return None
    labels = spec.map("selector").str_map("matchLabels")
    selector = WorkloadSelector(None if obj.namespace == root else obj.namespace, labels)
    rules = tuple(_rule(r) for r in spec.maps("jwtRules"))
    for r in spec.maps("jwtRules"):
        if r.strs("spaceDelimitedClaims"):
            report.warn(obj, IstioCode.NOT_SUPPORTED, "spaceDelimitedClaims is not applied: policies match these "
                        "claims as whole strings, not word by word", f"{r.path}.spaceDelimitedClaims")
    return model("spec", lambda: RequestAuthentication(obj.name, obj.namespace, selector, rules, source=obj.source))
