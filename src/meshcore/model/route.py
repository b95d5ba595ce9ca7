"""Ordered L4 and L7 route tables per service port, with matches and actions.

Precedence is resolved by the adapter according to its own API's rules: a route table's
routes are already in evaluation order (first match wins).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from ._errors import ModelError
from ._source import UNKNOWN, Source
from ._validate import in_range, non_negative, optional_port, port, regex, sorted_pairs, to_tuple
from .service import ServiceRef


class MatchKind(enum.StrEnum):
    """How a string is matched."""

    EXACT = "Exact"
    #: A plain string prefix: ``/abc`` matches ``/abcd``.
    PREFIX = "Prefix"
    #: A path-element prefix (Gateway API ``PathPrefix``, Ingress ``Prefix``): ``/abc`` matches
    #: ``/abc``, ``/abc/`` and ``/abc/def`` but not ``/abcd``; a trailing ``/`` is ignored.
    PATH_PREFIX = "PathPrefix"
    SUFFIX = "Suffix"
    REGEX = "RegularExpression"
    PRESENT = "Present"


def _match_value(inst: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if inst.kind is MatchKind.REGEX:
        regex(inst, attribute, value)
    elif inst.kind is not MatchKind.PRESENT and inst.kind is not MatchKind.SUFFIX and not value:
        if inst.kind is MatchKind.EXACT:
            return
        raise ModelError(attribute.name, f"a {inst.kind.value} match needs a value")


@attrs.frozen(order=True)
class StringMatch:
    """A string condition: exact, prefix, suffix, regular expression, or presence."""

    kind: MatchKind = attrs.field(converter=MatchKind)
    value: str = attrs.field(default="", validator=_match_value)

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.value}"


def _lower(value: str) -> str:
    return value.lower()


@attrs.frozen(order=True)
class HeaderMatch:
    """Match a request header by name (case-insensitive); ``invert`` negates it."""

    name: str = attrs.field(converter=_lower)
    match: StringMatch
    invert: bool = False


@attrs.frozen(order=True)
class QueryMatch:
    """Match a query parameter by name (case-sensitive)."""

    name: str
    match: StringMatch


def _path_kind(_: Any, attribute: "attrs.Attribute[StringMatch | None]", value: StringMatch | None) -> None:
    if value is None:
        return
    if value.kind not in (MatchKind.EXACT, MatchKind.PREFIX, MatchKind.PATH_PREFIX, MatchKind.REGEX):
        raise ModelError(
            attribute.name,
            f"path match must be Exact, Prefix, PathPrefix or RegularExpression, not {value.kind.value}",
        )
    if value.kind is not MatchKind.REGEX and not value.value.startswith("/"):
        raise ModelError(attribute.name, f"path {value.value!r} must start with '/'")


def _sorted_names(value: Any) -> tuple[str, ...]:
    return tuple(sorted(set(value)))


def _selectors(value: Any) -> tuple[tuple[tuple[str, str], ...], ...]:
    return tuple(sorted({sorted_pairs(s) for s in value}))


@attrs.frozen(order=True)
class ClientMatch:
    """Requests from mesh workloads in one of ``namespaces`` (any when empty) carrying ``labels``.

    ``exclude`` takes out the workloads carrying all the labels of any of its selectors;
    ``invert`` takes every other client instead, addresses outside the mesh included. The
    node proxy serves many clients, so compile turns these conditions into client address
    sets (one route configuration per set of clients that sees the same routes).
    """

    namespaces: tuple[str, ...] = attrs.field(default=(), converter=_sorted_names)
    labels: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=sorted_pairs)
    invert: bool = False
    exclude: tuple[tuple[tuple[str, str], ...], ...] = attrs.field(default=(), converter=_selectors)

    def admits(self, namespace: str | None, labels: Mapping[str, str]) -> bool:
        """True for a client workload of ``namespace`` with ``labels`` (``None``: not a mesh workload)."""
        inside = (namespace is not None and (not self.namespaces or namespace in self.namespaces)
                  and all(labels.get(k) == v for k, v in self.labels)
                  and not any(all(labels.get(k) == v for k, v in s) for s in self.exclude))
        return inside != self.invert


@attrs.frozen(order=True)
class HttpMatch:
    """All conditions must hold (AND); a route's matches are alternatives (OR)."""

    path: StringMatch | None = attrs.field(default=None, validator=_path_kind)
    headers: tuple[HeaderMatch, ...] = attrs.field(default=(), converter=to_tuple)
    query: tuple[QueryMatch, ...] = attrs.field(default=(), converter=to_tuple)
    method: str | None = None
    authority: StringMatch | None = None
    clients: ClientMatch | None = None

    @property
    def needs_l7(self) -> bool:
        """True when any condition looks at more than the destination port."""
        return bool(self.path or self.headers or self.query or self.method or self.authority or self.clients)


@attrs.frozen(order=True)
class HeaderModifier:
    """Set (replace), add (append) and remove headers."""

    set: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=to_tuple)
    add: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=to_tuple)
    remove: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


def _modifier_key(value: HeaderModifier | None) -> tuple[bool, HeaderModifier]:
    return (value is not None, value or HeaderModifier())


@attrs.frozen(order=True)
class Destination:
    """A weighted destination: a service port, optionally a subset of its backends.

    ``request_headers`` and ``response_headers`` (None: nothing) apply only to the requests
    sent to this destination and their responses, after the route's own, as Gateway API
    backend-level filters and Istio's per-destination ``headers`` do.
    """

    service: ServiceRef
    port: int | None = attrs.field(default=None, validator=optional_port)
    weight: int = attrs.field(default=1, validator=non_negative)
    subset: str = ""
    #: Labels the subset selects, resolved by the adapter (e.g. DestinationRule subsets).
    subset_labels: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=sorted_pairs)
    request_headers: HeaderModifier | None = attrs.field(default=None, order=_modifier_key)
    response_headers: HeaderModifier | None = attrs.field(default=None, order=_modifier_key)


@attrs.frozen(order=True)
class Redirect:
    """Answer with an HTTP redirect; unset fields keep the request's value."""

    scheme: str | None = None
    host: str | None = None
    port: int | None = attrs.field(default=None, validator=optional_port)
    path: str | None = None
    prefix_replace: str | None = None
    status: int = attrs.field(default=302, validator=in_range(300, 399))


@attrs.frozen(order=True)
class Rewrite:
    """Rewrite the request before forwarding: host, full path or matched prefix.

    After a ``PathPrefix`` match, ``prefix`` replaces whole path elements: ``/foo`` replaced
    by ``/xyz`` turns ``/foo/bar`` into ``/xyz/bar``, and by ``""`` into ``/bar``.
    """

    host: str | None = None
    path: str | None = None
    prefix: str | None = None


@attrs.frozen(order=True)
class Mirror:
    """Send a copy of a share of requests to another destination, ignoring its answers."""

    destination: Destination
    percent: float = attrs.field(default=100.0, validator=in_range(0, 100))


@attrs.frozen(order=True)
class RetryPolicy:
    """Retry failed requests; ``retry_on`` uses Envoy's condition names (e.g. ``5xx``)."""

    attempts: int = attrs.field(default=1, validator=non_negative)
    per_try_timeout_ms: int | None = None
    retry_on: tuple[str, ...] = attrs.field(default=("5xx",), converter=to_tuple)
    status_codes: tuple[int, ...] = attrs.field(default=(), converter=to_tuple)


@attrs.frozen(order=True)
class FaultInjection:
    """Delay and/or abort a share of requests."""

    delay_ms: int | None = None
    delay_percent: float = attrs.field(default=100.0, validator=in_range(0, 100))
    abort_status: int | None = None
    abort_grpc_status: int | None = None
    abort_percent: float = attrs.field(default=100.0, validator=in_range(0, 100))


@attrs.frozen(order=True)
class DirectResponse:
    """Answer directly with a status and body."""

    status: int = attrs.field(validator=in_range(100, 599))
    body: str = ""


@attrs.frozen(order=True)
class CorsPolicy:
    """Cross-origin resource sharing answers."""

    allow_origins: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    allow_methods: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    allow_headers: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    expose_headers: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    allow_credentials: bool = False
    max_age_s: int | None = None


def _positive(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(attribute.name, f"{value!r} must be an integer >= 1")


def _optional_positive(inst: Any, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None:
        _positive(inst, attribute, value)


@attrs.frozen(order=True)
class InvalidBackends:
    """The share of a route's traffic meant for backends that could not be resolved.

    ``weight`` is on the scale of the route's destination weights; those requests are
    answered with ``status`` instead of being forwarded (e.g. Gateway API answers 500, and
    ``UNAVAILABLE`` for gRPC, which an HTTP 503 becomes).
    """

    weight: int = attrs.field(validator=_positive)
    status: int = attrs.field(default=500, validator=in_range(100, 599))


@attrs.frozen(order=True)
class HttpRoute:
    """One L7 rule: matches (OR) and what to do with a matching request.

    Exactly one of ``destinations``, ``redirect`` or ``direct_response`` decides the
    outcome; the other actions modify the forwarded request or its response.
    ``invalid_backends`` (only with ``destinations``) answers its share with an error.
    """

    name: str = ""
    matches: tuple[HttpMatch, ...] = attrs.field(default=(), converter=to_tuple)
    destinations: tuple[Destination, ...] = attrs.field(default=(), converter=to_tuple)
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    rewrite: Rewrite | None = None
    request_headers: HeaderModifier = attrs.field(factory=HeaderModifier)
    response_headers: HeaderModifier = attrs.field(factory=HeaderModifier)
    mirrors: tuple[Mirror, ...] = attrs.field(default=(), converter=to_tuple)
    timeout_ms: int | None = None
    retries: RetryPolicy | None = None
    fault: FaultInjection | None = None
    cors: CorsPolicy | None = None
    invalid_backends: InvalidBackends | None = None
    source: Source = attrs.field(default=UNKNOWN, eq=False, order=False)

    def __attrs_post_init__(self) -> None:
        outcomes = sum(bool(x) for x in (self.destinations, self.redirect, self.direct_response))
        if outcomes != 1:
            raise ModelError(
                "destinations",
                "an HTTP route needs exactly one of destinations, redirect or direct_response",
            )
        if self.invalid_backends is not None and not self.destinations:
            raise ModelError("invalid_backends", "only a route with destinations can have invalid backends")

    @property
    def needs_l7(self) -> bool:
        """True when anything beyond weighted forwarding by port is asked for."""
        return bool(
            any(m.needs_l7 for m in self.matches)
            or self.redirect or self.direct_response or self.rewrite
            or self.request_headers or self.response_headers or self.mirrors
            or self.timeout_ms or self.retries or self.fault or self.cors
            or self.invalid_backends
            or any(d.request_headers or d.response_headers for d in self.destinations)
        )


@attrs.frozen(order=True)
class TcpRoute:
    """One L4 rule: optional SNI match (TLS passthrough), optional clients, and weighted destinations.

    ``invalid_weight`` is the share (on the destinations' weight scale) of connections
    meant for backends that could not be resolved: they are refused. A route with no
    destinations refuses every connection it matches.
    """

    name: str = ""
    sni: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    destinations: tuple[Destination, ...] = attrs.field(default=(), converter=to_tuple)
    invalid_weight: int | None = attrs.field(default=None, validator=_optional_positive)
    clients: ClientMatch | None = None
    source: Source = attrs.field(default=UNKNOWN, eq=False, order=False)


class RouteKind(enum.StrEnum):
    """Whether a table holds L4 (TCP/TLS/UDP) or L7 (HTTP/gRPC) routes."""

    L4 = "L4"
    L7 = "L7"


@attrs.frozen(order=True)
class RouteTable:
    """The ordered routes for one service port (or a listener port with hostnames)."""

    service: ServiceRef
    port: int = attrs.field(validator=port)
    kind: RouteKind = attrs.field(converter=RouteKind)
    http: tuple[HttpRoute, ...] = attrs.field(default=(), converter=to_tuple)
    tcp: tuple[TcpRoute, ...] = attrs.field(default=(), converter=to_tuple)
    hostnames: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    source: Source = attrs.field(default=UNKNOWN, eq=False, order=False)

    def __attrs_post_init__(self) -> None:
        if self.kind is RouteKind.L4 and self.http:
            raise ModelError("http", "an L4 route table cannot hold HTTP routes")
        if self.kind is RouteKind.L7 and self.tcp:
            raise ModelError("tcp", "an L7 route table cannot hold TCP routes")

    @property
    def needs_l7(self) -> bool:
        """True when any route in the table needs Envoy."""
        if self.kind is RouteKind.L4:
            return any(r.sni or r.clients for r in self.tcp)
        return any(r.needs_l7 for r in self.http)

    def l7_reason(self) -> str | None:
        """A short reason naming the first route that needs Envoy, or ``None``."""
        for i, r in enumerate(self.http):
            if r.needs_l7:
                return f"route {i} ({r.name or 'unnamed'}) {_why(r)}"
        for i, t in enumerate(self.tcp):
            if t.sni:
                return f"route {i} ({t.name or 'unnamed'}) matches on SNI"
            if t.clients:
                return f"route {i} ({t.name or 'unnamed'}) matches on the client"
        return None


def _why(r: HttpRoute) -> str:
    for m in r.matches:
        if m.path:
            return f"matches on path {m.path}"
        if m.headers:
            return f"matches on header {m.headers[0].name}"
        if m.query:
            return f"matches on query parameter {m.query[0].name}"
        if m.method:
            return f"matches on method {m.method}"
        if m.authority:
            return "matches on authority"
        if m.clients:
            return "matches on the client"
    for attr in ("redirect", "direct_response", "rewrite", "mirrors", "timeout_ms", "retries", "fault", "cors",
                 "invalid_backends"):
        if getattr(r, attr):
            return f"uses {attr.replace('_ms', '').replace('_', ' ')}"
    if r.request_headers or r.response_headers:
        return "modifies headers"
    if any(d.request_headers or d.response_headers for d in r.destinations):
        return "modifies headers per backend"
    return "needs L7"
