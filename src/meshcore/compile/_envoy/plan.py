"""The EnvoyPlan: the node Envoy's listeners, routes, clusters and RBAC as plain data.

Compile fills it for the service ports that need L7; ``meshcore.proxy`` turns it into
Envoy xDS resources. Names follow one scheme so resources never collide: listeners,
route configurations and clusters are named ``<ns>/<svc>:<port>`` (a cluster for a
subset adds ``/<subset>``; a raw config's cluster of several ports of a service is
``<ns>/<svc>``, and raw resources are ``<ns>/<config>/<name>``). Every resource (and
every route) carries the :class:`Origin` of the model objects it came from, so an error
Envoy reports can name them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator

import attrs

from ...model import (
    CorsPolicy,
    Diagnostic,
    DirectResponse,
    FaultInjection,
    HashKey,
    HeaderModifier,
    HttpMatch,
    LbPolicy,
    Protocol,
    Redacted,
    Redirect,
    RetryPolicy,
    Rewrite,
    ServiceRef,
    Source,
    StringMatch,
    TrafficPolicy,
)
from .._tunnel import TunnelPlan


@attrs.frozen(order=True)
class RawOrigin:
    """Which resource of which raw Envoy config produced a served resource.

    ``name`` is the name as the config wrote it; the node proxy serves it as
    ``qualified_name`` (``<ns>/<config>/<name>``).
    """

    config_kind: str
    config_namespace: str
    config_name: str
    index: int
    type: str
    name: str
    qualified_name: str


@attrs.frozen(order=True)
class Origin:
    """The model object behind an Envoy resource or part of one, for error messages.

    ``hints`` are distinctive strings of that object (regular expressions, header names)
    used to tell which part of a rejected resource Envoy complained about. ``raw`` says
    which resource of a raw Envoy config it is, when it is one.
    """

    what: str
    source: Source = attrs.field(factory=Source, order=False)
    hints: tuple[str, ...] = ()
    raw: RawOrigin | None = attrs.field(default=None, order=False)

    def __str__(self) -> str:
        return f"{self.what} ({self.source})"


def _origins() -> tuple[Origin, ...]:
    return ()


def _sorted_endpoints(value: Iterable[EnvoyEndpoint]) -> tuple[EnvoyEndpoint, ...]:
    return tuple(sorted(value))


def cluster_name(service: ServiceRef, port: int, subset: str = "") -> str:
    """``<ns>/<svc>:<port>``, with ``/<subset>`` for a subset of the backends."""
    base = f"{service.namespace}/{service.name}:{port}"
    return f"{base}/{subset}" if subset else base


@attrs.frozen(order=True)
class EnvoyEndpoint:
    """One upstream endpoint of a cluster; ``workload`` is ``ns/name`` when known."""

    address: str
    port: int
    weight: int = 1
    workload: str = ""


class Discovery(enum.StrEnum):
    """How a cluster learns its endpoints' addresses (Envoy's cluster type)."""

    #: Addresses pushed by the control plane (the endpoints are IP addresses).
    EDS = "EDS"
    #: The proxy resolves each endpoint's name and uses every address (a DNS-resolved service).
    STRICT_DNS = "STRICT_DNS"
    #: The proxy resolves the name and connects to one address at a time (DNS round robin).
    LOGICAL_DNS = "LOGICAL_DNS"


@attrs.frozen
class EnvoyCluster:
    """An EDS cluster: one service port (or a subset of it), or several (``port`` None), and its endpoints.

    A service whose backends are names is a DNS cluster instead (``discovery``): its
    endpoints' ``address`` are the names, which the proxy resolves itself.
    """

    name: str
    service: ServiceRef
    port: int | None
    protocol: Protocol = Protocol.HTTP
    lb_policy: LbPolicy = LbPolicy.ROUND_ROBIN
    endpoints: tuple[EnvoyEndpoint, ...] = attrs.field(default=(), converter=_sorted_endpoints)
    subset: str = ""
    origins: tuple[Origin, ...] = attrs.field(factory=_origins, eq=False)
    #: The traffic policy in force for this cluster's service port (and subset): load
    #: balancing, connection pool, outlier detection, upstream TLS.
    traffic: TrafficPolicy | None = None
    discovery: Discovery = Discovery.EDS

    @property
    def hash_key(self) -> HashKey | None:
        """The consistent-hash key of this cluster's load balancer, if it hashes."""
        lb = self.traffic.lb if self.traffic is not None else None
        return lb.hash_key if lb is not None else None

    @property
    def http2(self) -> bool:
        """True when the upstream speaks HTTP/2 (gRPC and HTTP2 ports)."""
        return self.protocol in (Protocol.GRPC, Protocol.HTTP2)


def _modifier_key(value: HeaderModifier | None) -> tuple[bool, HeaderModifier]:
    return (value is not None, value or HeaderModifier())


@attrs.frozen(order=True)
class ClusterWeight:
    """A weighted cluster of a route, with the header changes for the requests it gets (None: none)."""

    cluster: str
    weight: int
    request_headers: HeaderModifier | None = attrs.field(default=None, order=_modifier_key)
    response_headers: HeaderModifier | None = attrs.field(default=None, order=_modifier_key)


@attrs.frozen(order=True)
class RouteMirror:
    """Copy ``percent`` of a route's requests to ``cluster``."""

    cluster: str
    percent: float = 100.0


@attrs.frozen
class EnvoyRoute:
    """One Envoy route: a single match (the model's OR alternatives become several routes).

    Exactly one of ``clusters``, ``redirect`` or ``direct_response`` is set.
    """

    name: str
    match: HttpMatch = attrs.field(factory=HttpMatch)
    clusters: tuple[ClusterWeight, ...] = ()
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    rewrite: Rewrite | None = None
    request_headers: HeaderModifier = attrs.field(factory=HeaderModifier)
    response_headers: HeaderModifier = attrs.field(factory=HeaderModifier)
    mirrors: tuple[RouteMirror, ...] = ()
    timeout_ms: int | None = None
    retries: RetryPolicy | None = None
    fault: FaultInjection | None = None
    cors: CorsPolicy | None = None
    #: Match only this many requests per million of those the match selects (the rest
    #: fall through to the next route): how a share of a route is answered differently.
    per_million: int | None = None
    origins: tuple[Origin, ...] = attrs.field(factory=_origins, eq=False)
    #: What the consistent-hash clusters of this route hash on (their keys, in cluster order).
    hash_policy: tuple[HashKey, ...] = ()
    #: The RBAC filters this route needs in place of the listener's (audit, deny, allow —
    #: for the workloads its clusters and mirrors reach); ``None``: the listener's apply.
    #: Never more filters of an action than the listener has (each overrides one of them).
    rbac: tuple[EnvoyRbac, ...] | None = None
    #: The names of the listener's JWT providers this route validates tokens with (those
    #: of the workloads it reaches; ``()``: none, tokens pass unchecked to backends no
    #: request authentication selects); ``None``: all of the listener's.
    jwt: tuple[str, ...] | None = None


@attrs.frozen
class EnvoyVirtualHost:
    """Routes for a set of request hosts (``("*",)`` for any host), in match order."""

    name: str
    domains: tuple[str, ...]
    routes: tuple[EnvoyRoute, ...]


@attrs.frozen
class EnvoyRouteConfig:
    """The route configuration of one HTTP listener (served over RDS)."""

    name: str
    virtual_hosts: tuple[EnvoyVirtualHost, ...]
    origins: tuple[Origin, ...] = attrs.field(factory=_origins, eq=False)

    def routes(self) -> Iterator[EnvoyRoute]:
        """Every route of every virtual host."""
        for vhost in self.virtual_hosts:
            yield from vhost.routes


# --- RBAC -----------------------------------------------------------------------------


@attrs.frozen(order=True)
class RbacAny:
    """Matches every request (or, negated, none)."""


@attrs.frozen(order=True)
class RbacAnd:
    """All of ``items`` match."""

    items: tuple[RbacExpr, ...]


@attrs.frozen(order=True)
class RbacOr:
    """Any of ``items`` matches."""

    items: tuple[RbacExpr, ...]


@attrs.frozen(order=True)
class RbacNot:
    """``item`` does not match."""

    item: RbacExpr


@attrs.frozen(order=True)
class RbacSourceIp:
    """The connection's peer address is inside ``cidr`` (a principal)."""

    cidr: str


@attrs.frozen(order=True)
class RbacHeader:
    """A request header (``:method``, ``:authority`` included) matches."""

    name: str
    match: StringMatch


@attrs.frozen(order=True)
class RbacPath:
    """The request path (without query) matches."""

    match: StringMatch


@attrs.frozen(order=True)
class RbacClaim:
    """A claim of the request's verified JWT (a principal), found by its ``path`` in the payload.

    A string claim matches ``match``; a list claim matches when any of its strings does,
    unless ``single`` (a claim that is one string by the JWT specification, such as
    ``iss``); a ``Present`` match only needs the claim. Requests without a verified
    token never match.
    """

    path: tuple[str, ...]
    match: StringMatch
    single: bool = False


RbacExpr = RbacAny | RbacAnd | RbacOr | RbacNot | RbacSourceIp | RbacHeader | RbacPath | RbacClaim

#: Matches nothing.
RBAC_NEVER: RbacExpr = RbacNot(RbacAny())


def rbac_or(items: Iterable[RbacExpr]) -> RbacExpr:
    """An OR that collapses trivial cases (no items matches nothing)."""
    found = tuple(items)
    if not found:
        return RBAC_NEVER
    if any(isinstance(i, RbacAny) for i in found):
        return RbacAny()
    return found[0] if len(found) == 1 else RbacOr(found)


def rbac_and(items: Iterable[RbacExpr]) -> RbacExpr:
    """An AND that collapses trivial cases (no items matches everything)."""
    found = tuple(i for i in items if not isinstance(i, RbacAny))
    if any(i == RBAC_NEVER for i in found):
        return RBAC_NEVER
    if not found:
        return RbacAny()
    return found[0] if len(found) == 1 else RbacAnd(found)


class RbacAction(enum.StrEnum):
    """What an RBAC filter does with requests its policies match."""

    ALLOW = "ALLOW"  # only matching requests pass
    DENY = "DENY"  # matching requests are refused with 403
    LOG = "LOG"  # matching requests are marked for the access log (AUDIT)


@attrs.frozen
class RbacPolicy:
    """One authorization rule: a request matches when ``principal`` and ``permission`` do."""

    name: str
    principal: RbacExpr
    permission: RbacExpr
    origins: tuple[Origin, ...] = attrs.field(factory=_origins, eq=False)


@attrs.frozen
class EnvoyRbac:
    """One RBAC filter; an ALLOW filter without policies refuses every request."""

    action: RbacAction
    policies: tuple[RbacPolicy, ...] = ()


# --- JWT authentication ---------------------------------------------------------------


@attrs.frozen
class JwtProvider:
    """One JWT rule of a request authentication, as a provider of the listener's JWT filter.

    ``jwks`` is the JSON Web Key Set as canonical JSON (a set without usable keys when the
    keys are not available to the node proxy: every token of the issuer is then refused),
    or empty when ``jwks_uri`` names where the proxy fetches them, through ``jwks_cluster``.
    ``from_headers`` are (name, prefix) pairs; ``claim_to_headers`` (header, claim) pairs.
    """

    name: str
    issuer: str
    jwks: str
    jwks_uri: str = ""
    jwks_cluster: str = ""
    #: How long the proxy waits for the key set at ``jwks_uri`` (a token waiting for it waits as long).
    jwks_timeout_ms: int = 5000
    audiences: tuple[str, ...] = ()
    from_headers: tuple[tuple[str, str], ...] = ()
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    forward: bool = False
    forward_payload_header: str | None = None
    claim_to_headers: tuple[tuple[str, str], ...] = ()
    origins: tuple[Origin, ...] = attrs.field(factory=_origins, eq=False)


@attrs.frozen
class EnvoyJwt:
    """The JWT filter of an HTTP listener: a token, when present, must satisfy one provider.

    Requests without a token pass unauthenticated (authorization decides about them); a
    token no provider accepts is refused with 401. A verified token's payload is what
    :class:`RbacClaim` matches.
    """

    providers: tuple[JwtProvider, ...]


# --- listeners ------------------------------------------------------------------------


@attrs.frozen
class ServerTls:
    """TLS termination for the connections whose server name (SNI) is in ``server_names`` (any when empty).

    ``secrets`` name the :class:`EnvoySecret` certificates offered (Envoy picks by key type
    and the client's support). A listener with any of these serves no clear text: a
    connection whose name none of them takes is closed.
    """

    server_names: tuple[str, ...]
    secrets: tuple[str, ...]


@attrs.frozen
class TcpChain:
    """An L4 filter chain: connections whose TLS SNI is in ``sni`` (any when empty) from ``sources``.

    The backends' kernel policy exempts the node proxy, so ``sources`` and ``rbac`` are
    where a proxied connection meets the L3/L4 authorization of the workloads it is sent to.
    """

    name: str
    sni: tuple[str, ...]
    clusters: tuple[ClusterWeight, ...]
    origins: tuple[Origin, ...] = attrs.field(factory=_origins, eq=False)
    #: Hash connections by the client's address (a source-IP consistent hash of a cluster).
    hash_source_ip: bool = False
    #: Network RBAC filters (audit, deny, allow — in that order) checked before the TCP
    #: proxy picks a backend: the authorization policies of the chain's destination workloads.
    rbac: tuple[EnvoyRbac, ...] = ()
    #: The client prefixes (CIDRs) those filters admit, matched when a connection is
    #: accepted, before any filter runs (the TCP proxy connects upstream at once, RBAC
    #: only decides on the first byte): ``None`` admits everyone, ``()`` nobody.
    sources: tuple[str, ...] | None = None
    #: TLS the proxy terminates before proxying (``None``: bytes pass through as they are).
    tls: ServerTls | None = None


@attrs.frozen
class EnvoySecret:
    """A certificate with its private key, served to the node proxy over SDS (never as a file).

    With ``trusted_ca`` (PEM) and no chain it is instead a validation context: the CA
    certificates peers must chain to (a trust bundle).
    """

    name: str
    chain: str
    private_key: Redacted
    origins: tuple[Origin, ...] = attrs.field(factory=_origins, eq=False)
    trusted_ca: str = ""


def secret_name(namespace: str, name: str) -> str:
    """``tls/<ns>/<secret>``: the SDS name of a Secret's certificate."""
    return f"tls/{namespace}/{name}"


@attrs.frozen
class ClientView:
    """An HTTP filter chain for the clients at ``sources`` (host prefixes), with its own route configuration."""

    route_config: str
    sources: tuple[str, ...]


@attrs.frozen
class EnvoyListener:
    """The node proxy's listener for one service port, on ``proxy_port``.

    HTTP listeners carry ``route_config`` (fetched over RDS), an optional ``jwt`` filter
    and RBAC filters (applied after it, in order: audit, deny, allow); when routes depend
    on the client, ``client_views`` are chains for sets of clients with their own route
    configurations (``route_config`` serves everyone else); ``tls`` terminates TLS first
    (one chain per set of server names, each with those chains). L4 listeners carry
    ``tcp`` chains (TLS by SNI).
    """

    name: str
    service: ServiceRef
    port: int
    protocol: Protocol
    proxy_port: int
    route_config: str | None = None
    rbac: tuple[EnvoyRbac, ...] = ()
    tcp: tuple[TcpChain, ...] = ()
    jwt: EnvoyJwt | None = None
    origins: tuple[Origin, ...] = attrs.field(factory=_origins, eq=False)
    client_views: tuple[ClientView, ...] = ()
    tls: tuple[ServerTls, ...] = ()

    @property
    def is_http(self) -> bool:
        """True for an HTTP connection manager listener."""
        return self.route_config is not None

    @property
    def route_configs(self) -> tuple[str, ...]:
        """The names of every route configuration the listener uses (its own, then its client views')."""
        if self.route_config is None:
            return ()
        return (self.route_config, *(v.route_config for v in self.client_views))


@attrs.frozen
class RawResource:
    """A user-written Envoy resource served as it is; ``proxy_port`` binds an address-less listener.

    ``body_json`` is the resource's canonical JSON without the top-level ``@type``; the
    name is already qualified by namespace and config (``<ns>/<config>/<name>``).
    """

    type_url: str
    name: str
    body_json: str
    origin: Origin = attrs.field(eq=False)
    proxy_port: int | None = None


@attrs.frozen
class EnvoyPlan:
    """The node Envoy's whole configuration; empty means the node needs no Envoy.

    ``tunnel`` adds the mutual-TLS tunnel listeners (their SVIDs and trust bundles are
    ``secrets`` the node agent adds, never compile). ``raw`` are the resources of the node's raw Envoy configs, served alongside the
    generated ones; ``secrets`` the certificates listeners terminate TLS with. ``warnings`` are parts of the model the node proxy cannot express
    exactly, each naming the source object and what was done instead (always the
    fail-closed choice).
    """

    listeners: tuple[EnvoyListener, ...] = ()
    route_configs: tuple[EnvoyRouteConfig, ...] = ()
    clusters: tuple[EnvoyCluster, ...] = ()
    raw: tuple[RawResource, ...] = ()
    secrets: tuple[EnvoySecret, ...] = ()
    warnings: tuple[Diagnostic, ...] = attrs.field(default=(), eq=False)
    #: Mutual-TLS tunnels: the outbound and inbound (HBONE) listeners and their clusters.
    tunnel: TunnelPlan | None = None

    def __bool__(self) -> bool:
        return bool(self.listeners or self.raw or self.tunnel)

    @property
    def needs_proxy(self) -> bool:
        """True when a node proxy must run: generated listeners or any raw resource."""
        return bool(self)

    def listener(self, name: str) -> EnvoyListener | None:
        """The listener with this name, if any."""
        return next((item for item in self.listeners if item.name == name), None)

    def route_config(self, name: str) -> EnvoyRouteConfig | None:
        """The route configuration with this name, if any."""
        return next((item for item in self.route_configs if item.name == name), None)

    def cluster(self, name: str) -> EnvoyCluster | None:
        """The cluster with this name, if any."""
        return next((item for item in self.clusters if item.name == name), None)
