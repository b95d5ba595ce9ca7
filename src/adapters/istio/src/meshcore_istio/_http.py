"""VirtualService HTTP rules → model :class:`~meshcore.model.HttpRoute` per route table.

Each rule is read once into an :class:`HttpRule`: its matches (each with the port and
gateways it is limited to) and its actions. A rule with several matches becomes one
model route per match, in order, so first-match-wins is kept. Matches on the client
(``sourceLabels``, ``sourceNamespace``) become the match's ``clients`` on the mesh; on a
Gateway, whose clients are outside the mesh, such a match is left out with a warning.
"""

from __future__ import annotations

import base64
import binascii
import re

import attrs

from meshcore.kube import FieldCode, FieldError, Fields, KubeObject, Report
from meshcore.model import (
    ClientMatch,
    CorsPolicy,
    Destination,
    DirectResponse,
    FaultInjection,
    HeaderMatch,
    HeaderModifier,
    HttpMatch,
    HttpRoute,
    InvalidBackends,
    MatchKind,
    Mirror,
    QueryMatch,
    Redirect,
    RetryPolicy,
    Rewrite,
    StringMatch,
)

from ._codes import IstioCode
from ._common import check_regex, model, percentage, read_duration, string_match
from ._destinations import Resolver, Target
from ._gateway import MESH, gateway_key

_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+\-.^_`|~]+$")
#: Envoy's retry conditions Istio accepts in ``retryOn`` (besides HTTP status codes).
RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
    "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
    "http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
    "unavailable",
})
GRPC_STATUS = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}
#: A share of traffic whose destination does not resolve is answered like a missing cluster.
UNRESOLVED_STATUS = 503


@attrs.frozen
class Match:
    """One match of a rule: the model match and what it is limited to."""

    match: HttpMatch
    port: int | None
    #: The gateways it applies on: ``mesh`` and/or resolved ``namespace/name`` keys.
    gateways: tuple[str, ...]
    path: str

    @property
    def mesh(self) -> bool:
        """True when the match applies to the mesh."""
        return MESH in self.gateways


@attrs.frozen
class HttpRule:
    """One HTTP rule, read and validated; destinations resolve per route table port."""

    name: str
    path: str
    matches: tuple[Match, ...]
    #: True when the rule had matches and all of them were left out: it never applies.
    never: bool
    targets: tuple[Target, ...]
    redirect: Redirect | None
    direct: DirectResponse | None
    rewrite: Rewrite | None
    request_headers: HeaderModifier
    response_headers: HeaderModifier
    mirrors: tuple[tuple[Target, float], ...]
    timeout_ms: int | None
    retries: RetryPolicy | None
    fault: FaultInjection | None
    cors: CorsPolicy | None
    #: The (namespace, name) of the VirtualService this rule delegates to (see ``_delegate``).
    delegate: tuple[str, str] | None = None
    #: The object the rule is written in, when not the VirtualService holding it (a delegate's).
    origin: KubeObject | None = None

    def routes(self, table_port: int, label: str, gateway: str = MESH) -> list[tuple[HttpRoute, Match | None]]:
        """The model routes of this rule for a table on ``table_port`` of ``gateway`` (one per applicable match).

        On a gateway, ``table_port`` is the server's port: matches on ``port`` compare with it.
        """
        if self.never:
            return []
        chosen: list[Match | None] = [m for m in self.matches
                                      if gateway in m.gateways and m.port in (None, table_port)
                                      and (gateway == MESH or m.match.clients is None)]
        if not self.matches:
            chosen = [None]
        out = []
        for i, m in enumerate(chosen):
            name = f"{label}.{self.name or self.path.removeprefix('spec.')}" + (f".match[{i}]" if m is not None and len(chosen) > 1 else "")
            out.append((self._route(table_port, m, name), m))
        return out

    def _route(self, table_port: int, m: Match | None, name: str) -> HttpRoute:
        destinations: list[Destination] = []
        invalid = 0
        for t in self.targets:
            d = t.resolve(table_port)
            if d is None:
                invalid += t.weight
            elif d.weight > 0 or len(self.targets) == 1:
                destinations.append(d)
        direct = self.direct
        invalid_backends = None
        if self.targets and not destinations:
            direct = DirectResponse(UNRESOLVED_STATUS)
        elif invalid:
            invalid_backends = InvalidBackends(invalid, UNRESOLVED_STATUS)
        match = m.match if m is not None else None
        rewrite = self.rewrite
        if rewrite is not None and rewrite.prefix is not None and (match is None or match.path is None):
            # Istio rewrites the matched prefix; with no path match that prefix is "/".
            match = attrs.evolve(match or HttpMatch(), path=StringMatch(MatchKind.PREFIX, "/"))
        elif rewrite is not None and rewrite.prefix is not None and match is not None and match.path is not None \
                and match.path.kind is not MatchKind.PREFIX:
            rewrite = attrs.evolve(rewrite, prefix=None, path=rewrite.prefix)
        mirrors = []
        for target, pct in self.mirrors:
            md = target.resolve(table_port)
            if md is not None:
                mirrors.append(Mirror(attrs.evolve(md, weight=1), pct))
        return HttpRoute(
            name=name,
            matches=(match,) if match is not None else (),
            destinations=tuple(destinations) if direct is None else (),
            redirect=self.redirect,
            direct_response=direct,
            rewrite=rewrite if direct is None and self.redirect is None else None,
            request_headers=self.request_headers,
            response_headers=self.response_headers,
            mirrors=tuple(mirrors),
            timeout_ms=self.timeout_ms,
            retries=self.retries,
            fault=self.fault,
            cors=self.cors,
            invalid_backends=invalid_backends if direct is None else None,
        )


def _header_name(name: str, path: str) -> str:
    if not _HEADER_NAME.match(name):
        raise FieldError(path, f"{name!r} is not a valid header name: Istio requires lower-case names "
                         "(letters, digits and !#$%&'*+-.^_`|~)", IstioCode.INVALID_VALUE)
    return name


def _headers(fields: Fields, key: str, invert: bool) -> list[HeaderMatch]:
    out = []
    for name, _ in fields.map(key).data.items():
        path = f"{fields.path}.{key}.{name}"
        _header_name(str(name), path)
        sm = string_match(fields.map(key).map(str(name)), allow_empty=True)
        out.append(HeaderMatch(str(name), sm, invert))
    return out


def read_match(entry: Fields, obj: KubeObject, report: Report, vs_gateways: tuple[str, ...]) -> Match | None:
    """One ``HTTPMatchRequest`` (``None`` when it cannot be expressed and is left out)."""
    path = None
    if entry.has("uri"):
        path = string_match(entry.map("uri"))
        if path.kind is MatchKind.PRESENT:
            path = None
    if entry.bool("ignoreUriCase"):
        report.warn(obj, IstioCode.NOT_EXPRESSIBLE,
                    "ignoreUriCase is not carried: the path is matched case-sensitively", f"{entry.path}.ignoreUriCase")
    headers = _headers(entry, "headers", False) + _headers(entry, "withoutHeaders", True)
    method: str | None = None
    if entry.has("method"):
        sm = string_match(entry.map("method"))
        if sm.kind is MatchKind.EXACT:
            method = sm.value
        else:
            headers.append(HeaderMatch(":method", sm))
    if entry.has("scheme"):
        headers.append(HeaderMatch(":scheme", string_match(entry.map("scheme"))))
    authority = string_match(entry.map("authority")) if entry.has("authority") else None
    query = []
    for name in entry.map("queryParams").data:
        q = entry.map("queryParams").map(str(name))
        if q.has("prefix"):
            raise FieldError(f"{q.path}.prefix", "query parameters match only exact or regex", IstioCode.INVALID_VALUE)
        query.append(QueryMatch(str(name), string_match(q, allow_empty=True)))
    port = entry.port("port")
    gateways = tuple(gateway_key(g, obj.namespace) for g in entry.strs("gateways")) or vs_gateways
    clients = read_clients(entry, obj, report, gateways)
    m = model(entry.path, lambda: HttpMatch(path=path, headers=tuple(headers), query=tuple(query),
                                            method=method, authority=authority, clients=clients))
    return Match(m, port, gateways, entry.path)


def read_clients(entry: Fields, obj: KubeObject, report: Report, gateways: tuple[str, ...]) -> ClientMatch | None:
    """A match's ``sourceLabels`` and ``sourceNamespace`` (HTTP, TLS and TCP alike), or ``None``.

    Such a match applies on the mesh only: on a Gateway the clients are outside the mesh,
    so it is left out there (with a warning).
    """
    if not (entry.has("sourceLabels") or entry.has("sourceNamespace")):
        return None
    namespace = entry.str("sourceNamespace")
    if any(g != MESH for g in gateways):
        key = "sourceLabels" if entry.has("sourceLabels") else "sourceNamespace"
        report.warn(obj, IstioCode.NOT_EXPRESSIBLE,
                    f"on a Gateway the clients are outside the mesh: this match ({key}) is left out there and what it "
                    "would take falls through to later rules", f"{entry.path}.{key}")
    return ClientMatch(namespaces=(namespace,) if namespace else (), labels=tuple(entry.str_map("sourceLabels").items()))


def _modifier(fields: Fields) -> HeaderModifier:
    for key in ("set", "add"):
        for name in fields.map(key).data:
            _header_name(str(name).lower(), f"{fields.path}.{key}.{name}")
    for i, name in enumerate(fields.strs("remove")):
        _header_name(name.lower(), f"{fields.path}.remove[{i}]")
    return HeaderModifier(
        set=tuple(sorted(fields.str_map("set").items())),
        add=tuple(sorted(fields.str_map("add").items())),
        remove=tuple(fields.strs("remove")),
    )


#: An Envoy header variable (``%DOWNSTREAM_REMOTE_ADDRESS%``, ``%REQ(x-id)%``...).
_ENVOY_VARIABLE = re.compile(r"%[A-Z][A-Z0-9_]*(\([^)]*\))?(:[0-9]+)?%")


def _flag_envoy_variables(rule: Fields, obj: KubeObject, report: Report) -> None:
    """Warn about header values using Envoy's variables: the model's values are literal text."""
    places = [rule.map("headers"), *(e.map("headers") for e in rule.maps("route") if e.has("headers"))]
    for heads in places:
        for side in ("request", "response"):
            for op in ("set", "add"):
                values = heads.map(side).map(op)
                for name in values.data:
                    value = values.data[name]
                    if isinstance(value, str) and _ENVOY_VARIABLE.search(value):
                        report.warn(obj, IstioCode.NOT_EXPRESSIBLE, f"header value {value!r} uses an Envoy variable; "
                                    "values are sent as written, not expanded", f"{values.path}.{name}")


def _redirect(r: Fields) -> Redirect:
    if r.has("port") and r.has("derivePort"):
        raise FieldError(r.path, "only one of port or derivePort may be set", IstioCode.INVALID_COMBINATION)
    r.str("derivePort", choices=("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"))
    code = r.int("redirectCode", 301, minimum=300, maximum=399)
    assert code is not None
    return model(r.path, lambda: Redirect(scheme=r.str("scheme"), host=r.str("authority"), port=r.port("port"),
                                          path=r.str("uri"), status=code))


def _direct(d: Fields) -> DirectResponse:
    status = d.int("status", required=True, minimum=200, maximum=599)
    assert status is not None
    body = d.map("body")
    if body.has("string") and body.has("bytes"):
        raise FieldError(body.path, "only one of string or bytes may be set", IstioCode.INVALID_COMBINATION)
    text = body.str("string", "") or ""
    if body.has("bytes"):
        try:
            text = base64.b64decode(body.req_str("bytes"), validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            raise FieldError(f"{body.path}.bytes", "is not base64", IstioCode.INVALID_VALUE) from None
    return DirectResponse(status, text)


def _retries(r: Fields) -> RetryPolicy | None:
    attempts = r.int("attempts", 0, minimum=0)
    per_try = read_duration(r, "perTryTimeout")
    conditions: list[str] = []
    codes: list[int] = []
    raw = r.str("retryOn")
    for item in (raw.split(",") if raw else []):
        item = item.strip()
        if item.isdigit():
            codes.append(int(item))
        elif item in RETRY_ON:
            conditions.append(item)
        else:
            raise FieldError(f"{r.path}.retryOn", f"{item!r} is not a retry condition (one of "
                             f"{', '.join(sorted(RETRY_ON))}, or an HTTP status code)", IstioCode.INVALID_VALUE)
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    if raw is None:
        conditions = ["connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"]
        codes = [503]
    if not attempts:
        return None
    return RetryPolicy(attempts, per_try, tuple(conditions), tuple(sorted(set(codes))))


def _fault(f: Fields, obj: KubeObject, report: Report) -> FaultInjection:
    delay_ms = None
    delay_pct = 100.0
    if f.has("delay"):
        d = f.map("delay")
        if d.has("exponentialDelay"):
            raise FieldError(f"{d.path}.exponentialDelay", "exponentialDelay is not supported by Istio",
                             IstioCode.INVALID_VALUE)
        delay_ms = read_duration(d, "fixedDelay")
        if delay_ms is None:
            raise FieldError(f"{d.path}.fixedDelay", "required field is missing", FieldCode.MISSING)
        pct = percentage(d, "percentage", "percent")
        delay_pct = 100.0 if pct is None else pct
    abort_status = abort_grpc = None
    abort_pct = 100.0
    if f.has("abort"):
        a = f.map("abort")
        given = [k for k in ("httpStatus", "grpcStatus", "http2Error") if a.has(k)]
        if len(given) != 1:
            raise FieldError(a.path, "exactly one of httpStatus, grpcStatus or http2Error is required",
                             IstioCode.INVALID_COMBINATION)
        if a.has("httpStatus"):
            abort_status = a.int("httpStatus", minimum=200, maximum=599)
        elif a.has("grpcStatus"):
            abort_grpc = GRPC_STATUS.get(a.req_str("grpcStatus"))
            if abort_grpc is None:
                raise FieldError(f"{a.path}.grpcStatus", f"not a gRPC status name (one of "
                                 f"{', '.join(GRPC_STATUS)})", IstioCode.INVALID_VALUE)
        else:
            report.warn(obj, IstioCode.NOT_SUPPORTED,
                        "http2Error aborts are not supported: requests are aborted with 503", f"{a.path}.http2Error")
            abort_status = 503
        pct = percentage(a)
        abort_pct = 100.0 if pct is None else pct
    if delay_ms is None and abort_status is None and abort_grpc is None:
        raise FieldError(f.path, "a fault needs a delay or an abort", IstioCode.INVALID_COMBINATION)
    return FaultInjection(delay_ms, delay_pct, abort_status, abort_grpc, abort_pct)


def _cors(c: Fields, obj: KubeObject, report: Report) -> CorsPolicy:
    origins = list(c.strs("allowOrigin"))
    for o in c.maps("allowOrigins"):
        sm = string_match(o)
        if sm.kind is MatchKind.EXACT:
            origins.append(sm.value)
        elif sm.kind is MatchKind.PREFIX:
            origins.append(sm.value + "*")
        else:
            report.warn(obj, IstioCode.NOT_EXPRESSIBLE,
                        "regex origins cannot be expressed yet: this origin is not allowed", o.path)
    max_age = read_duration(c, "maxAge")
    c.str("unmatchedPreflights", choices=("UNSPECIFIED", "FORWARD", "IGNORE"))
    return CorsPolicy(tuple(origins), tuple(c.strs("allowMethods")), tuple(c.strs("allowHeaders")),
                      tuple(c.strs("exposeHeaders")), c.bool("allowCredentials"),
                      None if max_age is None else max_age // 1000)


def read_http_rule(rule: Fields, obj: KubeObject, resolver: Resolver, report: Report,
                   vs_gateways: tuple[str, ...]) -> HttpRule:
    """Read and validate one ``HTTPRoute`` of a VirtualService."""
    has = {k: rule.has(k) for k in ("route", "redirect", "directResponse", "delegate")}
    if rule.has("route") and not rule.list("route"):
        has["route"] = False
    outcome = [k for k, v in has.items() if v]
    if len(outcome) > 1:
        raise FieldError(rule.path, f"an HTTP route cannot have both {outcome[0]} and {outcome[1]}",
                         IstioCode.INVALID_COMBINATION)
    if not outcome:
        raise FieldError(rule.path, "an HTTP route needs one of route, redirect, directResponse or delegate",
                         IstioCode.INVALID_COMBINATION)
    if rule.has("rewrite") and (has["redirect"] or has["directResponse"]):
        raise FieldError(f"{rule.path}.rewrite", "rewrite cannot be combined with redirect or directResponse",
                         IstioCode.INVALID_COMBINATION)
    if rule.has("mirror") and rule.has("mirrors"):
        raise FieldError(f"{rule.path}.mirrors", "mirror and mirrors cannot both be set", IstioCode.INVALID_COMBINATION)

    raw_matches = rule.maps("match")
    matches = [read_match(m, obj, report, vs_gateways) for m in raw_matches]
    kept = tuple(m for m in matches if m is not None)
    targets = tuple(resolver.weighted(rule)) if has["route"] else ()
    per_dest = [e.map("headers") for e in rule.maps("route") if e.has("headers")]
    heads = rule.map("headers")
    _flag_envoy_variables(rule, obj, report)
    request_headers = _modifier(heads.map("request"))
    response_headers = _modifier(heads.map("response"))
    if per_dest:
        if len(targets) == 1:
            request_headers = _merge(request_headers, _modifier(per_dest[0].map("request")))
            response_headers = _merge(response_headers, _modifier(per_dest[0].map("response")))
        else:
            # Each destination's own changes apply to the requests sent to it (after the rule's).
            own = [e.map("headers") if e.has("headers") else None for e in rule.maps("route")]
            targets = tuple(t if h is None else attrs.evolve(
                t, request_headers=_modifier(h.map("request")) or None,
                response_headers=_modifier(h.map("response")) or None) for t, h in zip(targets, own, strict=True))
    redirect = _redirect(rule.map("redirect")) if has["redirect"] else None
    direct = _direct(rule.map("directResponse")) if has["directResponse"] else None
    delegate = None
    if has["delegate"]:
        d = rule.map("delegate")
        delegate = (d.str("namespace") or obj.namespace, d.req_str("name"))
    rewrite = None
    if rule.has("rewrite"):
        rw = rule.map("rewrite")
        if rw.has("uri") and rw.has("uriRegexRewrite"):
            raise FieldError(rw.path, "only one of uri or uriRegexRewrite may be set", IstioCode.INVALID_COMBINATION)
        if rw.has("uriRegexRewrite"):
            rx = rw.map("uriRegexRewrite")
            check_regex(rx.req_str("match"), f"{rx.path}.match")
            report.warn(obj, IstioCode.NOT_EXPRESSIBLE, "uriRegexRewrite cannot be expressed yet: requests this rule "
                        "matches are answered with 500", rx.path)
            direct = DirectResponse(500)
        uri = rw.str("uri")
        authority = rw.str("authority")
        if uri is not None or authority is not None:
            rewrite = Rewrite(host=authority, prefix=uri)
    mirrors: list[tuple[Target, float]] = []
    if rule.has("mirror"):
        pct = percentage(rule, "mirrorPercentage", "mirrorPercent")
        mirrors.append((resolver.target(rule.map("mirror"), 1, mirror=True), 100.0 if pct is None else pct))
    for mp in rule.maps("mirrors"):
        pct = percentage(mp)
        mirrors.append((resolver.target(mp.map("destination", required=True), 1, mirror=True),
                        100.0 if pct is None else pct))
    timeout = read_duration(rule, "timeout")
    retries = _retries(rule.map("retries")) if rule.has("retries") else None
    fault = _fault(rule.map("fault"), obj, report) if rule.has("fault") else None
    cors = _cors(rule.map("corsPolicy"), obj, report) if rule.has("corsPolicy") else None
    if direct is not None and targets:
        targets = ()
    return HttpRule(
        name=rule.str("name", "") or "", path=rule.path, matches=kept, never=bool(raw_matches) and not kept,
        targets=targets, redirect=redirect, direct=direct, rewrite=rewrite, request_headers=request_headers,
        response_headers=response_headers, mirrors=tuple(mirrors), timeout_ms=timeout, retries=retries,
        fault=fault, cors=cors, delegate=delegate,
    )


def _merge(a: HeaderModifier, b: HeaderModifier) -> HeaderModifier:
    return HeaderModifier(set=a.set + b.set, add=a.add + b.add, remove=a.remove + b.remove)
