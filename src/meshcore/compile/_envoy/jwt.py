"""Request authentications → the JWT filter of one proxied HTTP service port.

Every request authentication selecting a backend of the port contributes one provider per
JWT rule. Keys given inline are served to the proxy as they are. Keys given by URI are
fetched by the node proxy itself when the URI names a Kubernetes Service by its DNS name
(not a ServiceEntry host: any namespace could declare one for a host it does not own):
through that service port's cluster, which the proxy reaches like any backend —
``https://`` only when a traffic policy originates TLS to it. Any other URI (the proxy reaches only mesh endpoints; a control
plane would fetch such keys for it), and keys left to discovery, give a provider whose
only key nobody can sign with: tokens of that issuer are refused with 401 — never accepted
unchecked — and a warning says so.

Each route validates tokens only with the providers of the request authentications
selecting a workload that route may reach (:func:`route_jwt`); the listener's providers
are for requests matching no route.

A rule whose keys the node proxy cannot get, and a request authentication selecting
only some of the backends a route may send to, are :class:`ProxyCode` warnings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence

from ...model import Diagnostic, RequestAuthentication, Severity, Workload
from .._codes import ProxyCode
from .plan import EnvoyJwt, JwtProvider, Origin

#: The key set of a provider whose keys are not available, so every token of its issuer
#: fails: an RSA public key whose private key was discarded when it was generated (Envoy
#: refuses a key set without a usable key, and a known issuer gets 401 for its tokens
#: rather than being ignored).
NO_KEYS = json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "kid": "meshcore-no-keys", "e": "AQAB", "n": (
    "p53azBHtHLzvzLMul0d3i_gdaXgt1Qpat8SLJTH3fOuWVBo2dgDrfkzQOSFV7S-Opf14S5CfKixfVFJi21xcKQFgbFFQUR0qddB2xUdkF10_"
    "Lq3nTqHiU_NpmaNksuknl39VXeteM9UniCGT0uDs2KeTgtC9QxiWtTbl0khhLN6NgnOcWDuou-XJ8pCPk1KOeln5KTgIzGW9NXMgaWfXTo4h"
    "qwqKDzcoTQvJHkUlnkGy6e-LyebxXDHXMmsirO5fo5ezUCihOdgJpBTOdn5gsQZSy9tlKlpgKuDAKjn6mGhT2nzQNPkC3rzsRnL6GEGxiNg8"
    "y0jjKMSfew-6LDE_Rw")}]}, sort_keys=True, separators=(",", ":"))


#: Finds the cluster through which the node proxy fetches the key set at a URI: its name,
#: or ``None`` and why the proxy cannot fetch it.
KeyClusters = Callable[[str, Origin], tuple[str | None, str]]


def _no_fetch(uri: str, origin: Origin) -> tuple[str | None, str]:
    return None, "the node proxy fetches keys only from services of the mesh"


def selecting(authns: Iterable[RequestAuthentication], workloads: Iterable[Workload]) -> list[RequestAuthentication]:
    """The request authentications that select at least one of ``workloads``."""
    chosen = list(workloads)
    return [a for a in authns if a.jwt_rules and any(a.selects(w.namespace, w.labels) for w in chosen)]


def route_jwt(authns: Iterable[RequestAuthentication], backends: Sequence[Workload], backend_count: int,
              warnings: list[Diagnostic], key_clusters: KeyClusters = _no_fetch) -> tuple[JwtProvider, ...]:
    """The providers of the listener's JWT filter that one route (sending to ``backends``) validates tokens with.

    Only MC5109 is added to ``warnings`` (the rest were given for the listener).
    """
    found: list[Diagnostic] = []
    jwt = listener_jwt(authns, backends, backend_count, found, key_clusters=key_clusters)
    warnings.extend(d for d in found if d.code == ProxyCode.PARTIAL_AUTHENTICATION and d not in warnings)
    return jwt.providers if jwt is not None else ()


def listener_jwt(authns: Iterable[RequestAuthentication], backends: Sequence[Workload], backend_count: int,
                 warnings: list[Diagnostic], flag_partial: bool = True,
                 key_clusters: KeyClusters = _no_fetch) -> EnvoyJwt | None:
    """The JWT filter of a proxied HTTP listener sending to ``backends`` (of ``backend_count`` destinations), or ``None``.

    ``backends`` are the known workloads any route or mirror of the listener may send to;
    ``flag_partial`` False leaves out MC5109 (each route is flagged on its own).
    """
    providers: list[JwtProvider] = []
    for authn in selecting(authns, backends):
        where = f"request authentication {authn.namespace}/{authn.name}"
        chosen = [w for w in backends if authn.selects(w.namespace, w.labels)]
        if flag_partial and len(chosen) < backend_count:
            warnings.append(Diagnostic(
                ProxyCode.PARTIAL_AUTHENTICATION, Severity.WARNING,
                f"{where} selects {len(chosen)} of the {backend_count} backends a listener of the node proxy may send to; "
                "the proxy validates tokens of requests for all of them on a route that may send to them", authn.source, "selector",
            ))
        for i, rule in enumerate(authn.jwt_rules):
            origin = Origin(f"JWT rule {i} of {where}", authn.source, (rule.issuer,))
            jwks, cluster = rule.jwks, None
            if jwks is None and rule.jwks_uri:
                cluster, why = key_clusters(rule.jwks_uri, origin)
                if cluster is None:
                    warnings.append(Diagnostic(
                        ProxyCode.JWT_KEYS_UNAVAILABLE, Severity.WARNING,
                        f"{where}: the node proxy cannot fetch keys from {rule.jwks_uri} ({why}); tokens of issuer "
                        f"{rule.issuer} are refused with 401 (give the keys inline with jwks)",
                        authn.source, f"jwt_rules[{i}].jwks_uri",
                    ))
            elif jwks is None:
                warnings.append(Diagnostic(
                    ProxyCode.JWT_KEYS_UNAVAILABLE, Severity.WARNING,
                    f"{where}: the node proxy cannot discover keys from the issuer; tokens of issuer {rule.issuer} "
                    "are refused with 401 (give the keys inline with jwks, or by jwks_uri from a service of the mesh)",
                    authn.source, f"jwt_rules[{i}].jwks",
                ))
            providers.append(JwtProvider(
                name=f"{authn.namespace}/{authn.name}[{i}]", issuer=rule.issuer,
                jwks="" if cluster is not None else jwks or NO_KEYS,
                jwks_uri=(rule.jwks_uri or "") if cluster is not None else "", jwks_cluster=cluster or "",
                jwks_timeout_ms=rule.timeout_ms or 5000,
                audiences=rule.audiences,
                from_headers=tuple((h.name, h.prefix) for h in rule.from_headers),
                from_params=rule.from_params, from_cookies=rule.from_cookies,
                forward=rule.forward_original_token, forward_payload_header=rule.output_payload_to_header,
                claim_to_headers=tuple((c.header, c.claim) for c in rule.output_claim_to_headers),
                origins=(origin,),
            ))
    return EnvoyJwt(tuple(providers)) if providers else None
