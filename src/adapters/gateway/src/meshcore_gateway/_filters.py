"""HTTPRoute and GRPCRoute filters, timeouts and retries → model actions.

The model applies a rule's actions in a fixed order (request headers, rewrite, then
forwarding; response headers on the way back), which is the order the filters of a
rule are normally written in; RequestRedirect and URLRewrite cannot be combined (the API
rejects it). A filter the model cannot carry fails closed: ``ExtensionRef`` and
``ExternalAuth`` make the rule answer 500, as the specification requires for a filter
that cannot be applied.
"""

from __future__ import annotations

import attrs

from meshcore.kube import FieldCode, FieldError, Fields
from meshcore.model import CorsPolicy, HeaderModifier, Redirect, RetryPolicy, Rewrite

from ._codes import GatewayCode
from ._common import read_duration
from ._hostnames import check_hostname
from ._matches import METHODS, header_name, model
from ._refs import BackendRef, read_backend_ref

HTTP_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "RequestRedirect",
                "URLRewrite", "ExtensionRef", "CORS", "ExternalAuth")
GRPC_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef")
#: Filters that may appear more than once in a rule.
_REPEATABLE = ("RequestMirror", "ExtensionRef")
#: Each filter type and the field holding its configuration.
_FIELD = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "ExtensionRef": "extensionRef",
    "CORS": "cors",
    "ExternalAuth": "externalAuth",
}
_SCHEMES = ("http", "https")
_REDIRECT_CODES = (301, 302, 303, 307, 308)
_MODIFIER_TYPES = ("ReplaceFullPath", "ReplacePrefixMatch")


@attrs.frozen
class MirrorSpec:
    """A RequestMirror filter: where to, and which percentage of requests."""

    backend: BackendRef
    percent: float


@attrs.frozen
class PathModifier:
    """A redirect or rewrite path: a full replacement or a replacement of the matched prefix."""

    full: str | None = None
    prefix: str | None = None


@attrs.frozen
class FilterSet:
    """What a rule's filters ask for, ready to be placed on each model route of the rule."""

    request_headers: HeaderModifier = HeaderModifier()
    response_headers: HeaderModifier = HeaderModifier()
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    mirrors: tuple[MirrorSpec, ...] = ()
    cors: CorsPolicy | None = None
    #: Filter types present that the model cannot carry (the rule answers 500).
    failing: tuple[str, ...] = ()

    @property
    def replaces_prefix(self) -> bool:
        """True when a redirect or rewrite replaces the matched path prefix."""
        return bool((self.redirect and self.redirect.prefix_replace is not None)
                    or (self.rewrite and self.rewrite.prefix is not None))


def _header_modifier(fields: Fields) -> HeaderModifier:
    seen: dict[str, str] = {}

    def claim(name: str, path: str) -> None:
        header_name(name, path)
        key = name.lower()
        if key in seen:
            raise FieldError(path, f"header {name!r} already has an action at {seen[key]}; only one "
                             "action per header name is allowed", GatewayCode.INVALID_VALUE)
        seen[key] = path

    pairs: dict[str, list[tuple[str, str]]] = {"set": [], "add": []}
    for action in ("set", "add"):
        for entry in fields.maps(action):
            name = entry.req_str("name")
            claim(name, f"{entry.path}.name")
            pairs[action].append((name, entry.req_str("value")))
    remove = fields.strs("remove")
    for i, name in enumerate(remove):
        claim(name, f"{fields.path}.remove[{i}]")
    return HeaderModifier(set=pairs["set"], add=pairs["add"], remove=remove)


def _absolute(value: str, path: str) -> str:
    # The proxy builds the new path from it, so it must be an absolute path.
    if not value.startswith("/"):
        raise FieldError(path, f"{value!r} must start with '/'", GatewayCode.INVALID_VALUE)
    return value


def _path_modifier(fields: Fields) -> PathModifier:
    kind = fields.req_str("type", choices=_MODIFIER_TYPES)
    if kind == "ReplaceFullPath":
        full = fields.str("replaceFullPath", required=True) or ""
        return PathModifier(full=_absolute(full, f"{fields.path}.replaceFullPath"))
    prefix = fields.str("replacePrefixMatch", required=True)
    assert prefix is not None
    if prefix:
        _absolute(prefix, f"{fields.path}.replacePrefixMatch")
    return PathModifier(prefix=prefix)


def _redirect(fields: Fields) -> Redirect:
    scheme = fields.str("scheme", choices=_SCHEMES)
    host = fields.str("hostname")
    if host is not None:
        check_hostname(host, f"{fields.path}.hostname", precise=True)
    port = fields.port("port")
    if port is None and scheme is not None:
        # The specification derives the port from an explicit scheme.
        port = 443 if scheme == "https" else 80
    status = fields.int("statusCode", 302)
    if status not in _REDIRECT_CODES:
        raise FieldError(f"{fields.path}.statusCode", f"{status} is not one of 301, 302, 303, 307, 308",
                         FieldCode.NOT_ONE_OF)
    modifier = _path_modifier(fields.map("path")) if fields.has("path") else PathModifier()
    assert status is not None
    return model(fields.path, lambda: Redirect(scheme=scheme, host=host, port=port, path=modifier.full,
                                               prefix_replace=modifier.prefix, status=status))


def _rewrite(fields: Fields) -> Rewrite:
    host = fields.str("hostname")
    if host is not None:
        check_hostname(host, f"{fields.path}.hostname", precise=True)
    modifier = _path_modifier(fields.map("path")) if fields.has("path") else PathModifier()
    return Rewrite(host=host, path=modifier.full, prefix=modifier.prefix)


def _mirror(fields: Fields, namespace: str) -> MirrorSpec:
    backend = read_backend_ref(fields.map("backendRef", required=True), namespace, weighted=False)
    if fields.has("percent") and fields.has("fraction"):
        raise FieldError(fields.path, "only one of percent or fraction may be set", GatewayCode.INVALID_VALUE)
    percent: float = 100.0
    if fields.has("percent"):
        value = fields.int("percent", minimum=0, maximum=100)
        assert value is not None
        percent = float(value)
    elif fields.has("fraction"):
        fraction = fields.map("fraction")
        numerator = fraction.int("numerator", required=True, minimum=0)
        denominator = fraction.int("denominator", 100, minimum=1)
        assert numerator is not None and denominator is not None
        if numerator > denominator:
            raise FieldError(fraction.path, "numerator must be less than or equal to denominator",
                             GatewayCode.INVALID_VALUE)
        percent = 100.0 * numerator / denominator
    return MirrorSpec(backend, percent)


def _cors(fields: Fields) -> CorsPolicy:
    def no_star_with_others(key: str, values: list[str]) -> list[str]:
        if "*" in values and len(values) > 1:
            raise FieldError(f"{fields.path}.{key}", "'*' cannot be combined with other values",
                             GatewayCode.INVALID_VALUE)
        return values

    methods = no_star_with_others("allowMethods", fields.strs("allowMethods"))
    for i, method in enumerate(methods):
        if method != "*" and method not in METHODS:
            raise FieldError(f"{fields.path}.allowMethods[{i}]", f"{method!r} is not an HTTP method",
                             FieldCode.NOT_ONE_OF)
    return CorsPolicy(
        allow_origins=no_star_with_others("allowOrigins", fields.strs("allowOrigins")),
        allow_methods=methods,
        allow_headers=no_star_with_others("allowHeaders", fields.strs("allowHeaders")),
        expose_headers=fields.strs("exposeHeaders"),
        allow_credentials=fields.bool("allowCredentials"),
        max_age_s=fields.int("maxAge", 5, minimum=1),
    )


def read_filters(rule: Fields, namespace: str, allowed: tuple[str, ...] = HTTP_FILTERS) -> FilterSet:
    """Read a rule's ``filters`` (HTTP by default; pass :data:`GRPC_FILTERS` for gRPC)."""
    values: dict[str, object] = {}
    mirrors: list[MirrorSpec] = []
    failing: list[str] = []
    seen: dict[str, str] = {}
    for entry in rule.maps("filters"):
        kind = entry.req_str("type", choices=allowed)
        field = _FIELD[kind]
        for other_kind, other_field in _FIELD.items():
            if other_field != field and entry.has(other_field):
                raise FieldError(f"{entry.path}.{other_field}", f"must not be set for a {kind} filter",
                                 GatewayCode.INVALID_VALUE)
        config = entry.map(field, required=True)
        if kind in seen and kind not in _REPEATABLE:
            raise FieldError(entry.path, f"{kind} filter cannot be repeated (first at {seen[kind]})",
                             GatewayCode.INVALID_VALUE)
        seen.setdefault(kind, entry.path)
        if kind == "RequestHeaderModifier" or kind == "ResponseHeaderModifier":
            values[kind] = _header_modifier(config)
        elif kind == "RequestRedirect":
            values[kind] = _redirect(config)
        elif kind == "URLRewrite":
            values[kind] = _rewrite(config)
        elif kind == "CORS":
            values[kind] = _cors(config)
        elif kind == "RequestMirror":
            mirrors.append(_mirror(config, namespace))
        else:
            failing.append(kind)
    if "RequestRedirect" in values and "URLRewrite" in values:
        raise FieldError(f"{rule.path}.filters", "RequestRedirect and URLRewrite cannot both be used in a rule",
                         GatewayCode.INVALID_VALUE)
    request = values.get("RequestHeaderModifier")
    response = values.get("ResponseHeaderModifier")
    redirect = values.get("RequestRedirect")
    rewrite = values.get("URLRewrite")
    cors = values.get("CORS")
    assert request is None or isinstance(request, HeaderModifier)
    assert response is None or isinstance(response, HeaderModifier)
    assert redirect is None or isinstance(redirect, Redirect)
    assert rewrite is None or isinstance(rewrite, Rewrite)
    assert cors is None or isinstance(cors, CorsPolicy)
    return FilterSet(
        request_headers=request or HeaderModifier(),
        response_headers=response or HeaderModifier(),
        redirect=redirect, rewrite=rewrite, mirrors=tuple(mirrors), cors=cors, failing=tuple(failing),
    )


@attrs.frozen
class Timing:
    """A rule's request timeout and retry policy."""

    timeout_ms: int | None = None
    retries: RetryPolicy | None = None
    #: True when ``retry.backoff`` was set (the model keeps the proxy's default backoff).
    backoff_ignored: bool = False


def read_timing(rule: Fields) -> Timing:
    """``timeouts`` (request, backendRequest) and ``retry`` (codes, attempts, backoff); 0s disables a timeout."""
    timeouts = rule.map("timeouts")
    request = read_duration(timeouts, "request")
    backend = read_duration(timeouts, "backendRequest")
    if request and backend is not None and backend > request:
        raise FieldError(f"{timeouts.path}.backendRequest", "backendRequest timeout cannot be longer than "
                         "the request timeout", GatewayCode.INVALID_VALUE)
    retries = None
    backoff = False
    if rule.has("retry"):
        retry = rule.map("retry")
        codes = []
        for i, code in enumerate(retry.list("codes")):
            if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 599:
                raise FieldError(f"{retry.path}.codes[{i}]", f"{code!r} is not a status code in 400..599",
                                 FieldCode.OUT_OF_RANGE)
            codes.append(code)
        attempts = retry.int("attempts", 1, minimum=0)
        assert attempts is not None
        backoff = read_duration(retry, "backoff") is not None
        # Connection failures and refused streams are retried whenever a retry stanza is set.
        retry_on = ["connect-failure", "refused-stream"] + (["retriable-status-codes"] if codes else [])
        retries = RetryPolicy(attempts=attempts, per_try_timeout_ms=backend or None,
                              retry_on=retry_on if attempts else [], status_codes=sorted(set(codes)))
    elif backend:
        retries = RetryPolicy(attempts=0, per_try_timeout_ms=backend, retry_on=[])
    return Timing(timeout_ms=request, retries=retries, backoff_ignored=backoff)
