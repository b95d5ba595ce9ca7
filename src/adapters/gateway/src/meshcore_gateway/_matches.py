"""HTTPRoute and GRPCRoute matches → model :class:`~meshcore.model.HttpMatch`.

HTTP ``PathPrefix`` becomes a path-element prefix (``MatchKind.PATH_PREFIX``, trailing
``/`` dropped); a prefix of ``/`` matches everything and becomes a match without a path.
A gRPC method match becomes a path match on ``/<service>/<method>``: both given →
exact path; service only → path-element prefix ``/<service>``; method only or regular
expressions → a regular expression over the path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from meshcore.kube import FieldCode, FieldError, Fields
from meshcore.model import HeaderMatch, HttpMatch, MatchKind, ModelError, QueryMatch, StringMatch

from ._codes import GatewayCode

T = TypeVar("T")

PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
VALUE_TYPES = ("Exact", "RegularExpression")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
_PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+$")
_GRPC_SERVICE = re.compile(r"^\.?[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_][A-Za-z_0-9]*)*$")
_GRPC_METHOD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")


def model(path: str, build: Callable[[], T]) -> T:
    """Build a model value, turning its validation error into a field error at ``path``."""
    try:
        return build()
    except ModelError as exc:
        raise FieldError(path, exc.message, FieldCode.MODEL_REJECTED) from None


def header_name(value: str, path: str) -> str:
    """Validate an HTTP header (or query parameter) name."""
    if len(value) > 256 or not _HEADER_NAME.match(value):
        raise FieldError(path, f"{value!r} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)",
                         GatewayCode.INVALID_VALUE)
    return value


def _value_match(entry: Fields) -> StringMatch:
    kind = entry.str("type", "Exact", choices=VALUE_TYPES)
    value = entry.req_str("value")
    if not value:
        raise FieldError(f"{entry.path}.value", "must not be empty", GatewayCode.INVALID_VALUE)
    match_kind = MatchKind.REGEX if kind == "RegularExpression" else MatchKind.EXACT
    return model(f"{entry.path}.value", lambda: StringMatch(match_kind, value))


def read_headers(fields: Fields) -> list[HeaderMatch]:
    """Header matches; a repeated name (case-insensitive) is ignored after its first entry."""
    out: dict[str, HeaderMatch] = {}
    for entry in fields.maps("headers"):
        name = header_name(entry.req_str("name"), f"{entry.path}.name")
        match = _value_match(entry)
        out.setdefault(name.lower(), HeaderMatch(name, match))
    return list(out.values())


def _query(fields: Fields) -> list[QueryMatch]:
    out: dict[str, QueryMatch] = {}
    for entry in fields.maps("queryParams"):
        name = header_name(entry.req_str("name"), f"{entry.path}.name")
        out.setdefault(name, QueryMatch(name, _value_match(entry)))
    return list(out.values())


def check_path(value: str, path: str) -> str:
    """Validate an ``Exact``/``PathPrefix`` path (or a path modifier value) as the API does."""
    problems = [
        (not value.startswith("/"), "must start with '/'"),
        ("//" in value, "must not contain '//'"),
        ("/./" in value or value.endswith("/."), "must not contain '/./' or end with '/.'"),
        ("/../" in value or value.endswith("/.."), "must not contain '/../' or end with '/..'"),
        ("%2f" in value.lower(), "must not contain an encoded '/' (%2F)"),
        ("#" in value, "must not contain '#'"),
        (not _PATH_CHARS.match(value), "contains characters not allowed in a path"),
    ]
    for bad, why in problems:
        if bad:
            raise FieldError(path, f"{value!r} {why}", GatewayCode.INVALID_VALUE)
    return value


def path_prefix(value: str) -> str:
    """A ``PathPrefix`` value without its trailing ``/`` (``/`` stays ``/``)."""
    return value.rstrip("/") or "/"


def read_path(fields: Fields) -> StringMatch | None:
    """The ``path`` of an HTTPRoute match (default: prefix ``/``, i.e. no condition)."""
    if not fields.has("path"):
        return None
    entry = fields.map("path")
    kind = entry.str("type", "PathPrefix", choices=PATH_TYPES)
    value = entry.str("value", "/") or ""
    at = f"{entry.path}.value"
    if kind == "RegularExpression":
        if not value:
            raise FieldError(at, "must not be empty", GatewayCode.INVALID_VALUE)
        return model(at, lambda: StringMatch(MatchKind.REGEX, value))
    check_path(value, at)
    if kind == "Exact":
        return StringMatch(MatchKind.EXACT, value)
    prefix = path_prefix(value)
    return None if prefix == "/" else StringMatch(MatchKind.PATH_PREFIX, prefix)


def read_http_match(fields: Fields) -> HttpMatch:
    """One HTTPRoute match: path, headers, query parameters and method (all must hold)."""
    method = fields.str("method", choices=METHODS)
    return model(fields.path, lambda: HttpMatch(
        path=read_path(fields), headers=read_headers(fields), query=_query(fields), method=method,
    ))


def _grpc_path(entry: Fields) -> StringMatch:
    kind = entry.str("type", "Exact", choices=VALUE_TYPES)
    service = entry.str("service") or ""
    method = entry.str("method") or ""
    if not service and not method:
        raise FieldError(entry.path, "one or both of service and method must be set", GatewayCode.INVALID_VALUE)
    if kind == "Exact":
        if service and not _GRPC_SERVICE.match(service):
            raise FieldError(f"{entry.path}.service", f"{service!r} is not a gRPC service name "
                             "(dot-separated identifiers)", GatewayCode.INVALID_VALUE)
        if method and not _GRPC_METHOD.match(method):
            raise FieldError(f"{entry.path}.method", f"{method!r} is not a gRPC method name", GatewayCode.INVALID_VALUE)
        if service and method:
            return StringMatch(MatchKind.EXACT, f"/{service}/{method}")
        if service:
            return StringMatch(MatchKind.PATH_PREFIX, f"/{service}")
        return StringMatch(MatchKind.REGEX, f"/[^/]+/{re.escape(method)}")
    pattern = f"/{service or '[^/]+'}/{method or '[^/]+'}"
    return model(entry.path, lambda: StringMatch(MatchKind.REGEX, pattern))


def read_grpc_match(fields: Fields) -> HttpMatch:
    """One GRPCRoute match: method (as a path match) and headers."""
    path = _grpc_path(fields.map("method")) if fields.has("method") else None
    return model(fields.path, lambda: HttpMatch(path=path, headers=read_headers(fields)))
