"""Per-destination traffic policy: load balancing, connection limits, outlier ejection, upstream TLS.

A :class:`TrafficPolicy` attaches settings to a service without owning it: to the whole
service, to one of its ports, to a subset of its backends (named and labelled as route
destinations name subsets), or to a subset on one port. :func:`resolve_traffic` layers
them as Istio does for a DestinationRule: the service's settings, replaced by its
port-level settings, overridden by the subset's, replaced by the subset's port-level
ones. A port-level layer marked ``replaces_all`` (as every Istio ``portLevelSettings``
entry is) replaces all four settings, so those it leaves unset go back to their
defaults; other layers replace only the settings they set, each whole, never merged
field by field. Durations are whole milliseconds.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import attrs

from ._errors import ModelError
from ._source import UNKNOWN, Source
from ._validate import in_range, optional_port, sorted_pairs, to_tuple
from .service import LbPolicy, ServiceRef


def _optional_count(_: Any, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ModelError(attribute.name, f"{value!r} must be an integer >= 0")


def _optional_duration(_: Any, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ModelError(attribute.name, f"{value!r} must be a duration of at least 1 ms")


def _optional_percent(inst: Any, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelError(attribute.name, f"{value!r} must be an integer percentage")
        in_range(0, 100)(inst, attribute, value)


class HashKeyKind(enum.StrEnum):
    """What a consistent hash is computed over."""

    HEADER = "header"
    COOKIE = "cookie"
    SOURCE_IP = "source_ip"
    QUERY_PARAMETER = "query_parameter"


def _key_name(inst: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if inst.kind is HashKeyKind.SOURCE_IP:
        if value:
            raise ModelError(attribute.name, "a source IP hash key has no name")
    elif not value:
        raise ModelError(attribute.name, f"a {inst.kind.value} hash key needs a name")


def _cookie_only(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if inst.kind is not HashKeyKind.COOKIE and value not in (None, ""):
        raise ModelError(attribute.name, f"only a cookie hash key has a {attribute.name}")


@attrs.frozen(order=True)
class HashKey:
    """The request attribute a consistent hash uses: a header, a cookie, the source IP or a query parameter.

    A cookie key with ``ttl_ms`` makes the proxy set the cookie when the request has none
    (``ttl_ms`` 0: a session cookie); without ``ttl_ms`` it only reads it.
    """

    kind: HashKeyKind = attrs.field(converter=HashKeyKind)
    name: str = attrs.field(default="", validator=_key_name)
    path: str = attrs.field(default="", validator=_cookie_only)
    ttl_ms: int | None = attrs.field(default=None, validator=[_cookie_only, _optional_count])

    def __attrs_post_init__(self) -> None:
        if self.kind is HashKeyKind.HEADER and self.name != self.name.lower():
            object.__setattr__(self, "name", self.name.lower())  # header names are case-insensitive

    @property
    def needs_http(self) -> bool:
        """True for keys only an HTTP proxy can read (everything but the source IP)."""
        return self.kind is not HashKeyKind.SOURCE_IP

    def __str__(self) -> str:
        return "source IP" if self.kind is HashKeyKind.SOURCE_IP else f"{self.kind.value.replace('_', ' ')} {self.name}"


class HashAlgorithm(enum.StrEnum):
    """How a consistent hash maps onto backends."""

    RING_HASH = "RING_HASH"
    MAGLEV = "MAGLEV"


@attrs.frozen(order=True)
class LoadBalancer:
    """How a backend is chosen: a simple policy, or a consistent hash over ``hash_key``.

    ``policy`` is ``CONSISTENT_HASH`` exactly when ``hash_key`` is set; a consistent
    hash uses ``algorithm`` (``None``: ``RING_HASH``), and ``minimum_ring_size`` applies to
    the ring only.
    """

    policy: LbPolicy = attrs.field(default=LbPolicy.ROUND_ROBIN, converter=LbPolicy)
    hash_key: HashKey | None = None
    algorithm: HashAlgorithm | None = attrs.field(default=None, converter=attrs.converters.optional(HashAlgorithm))
    minimum_ring_size: int | None = attrs.field(default=None, validator=_optional_count)

    def __attrs_post_init__(self) -> None:
        if (self.policy is LbPolicy.CONSISTENT_HASH) != (self.hash_key is not None):
            raise ModelError("hash_key", "a CONSISTENT_HASH load balancer needs a hash key, and only it has one")
        if self.algorithm is not None and self.hash_key is None:
            raise ModelError("algorithm", "only a consistent hash has an algorithm")
        if self.minimum_ring_size is not None and (
                self.hash_key is None or self.algorithm is HashAlgorithm.MAGLEV):
            raise ModelError("minimum_ring_size", "only a RING_HASH consistent hash has a ring size")


@attrs.frozen(order=True)
class TcpKeepalive:
    """TCP keepalive on upstream connections: probes, idle time before probing, and probe interval."""

    probes: int | None = attrs.field(default=None, validator=_optional_count)
    time_ms: int | None = attrs.field(default=None, validator=_optional_duration)
    interval_ms: int | None = attrs.field(default=None, validator=_optional_duration)


@attrs.frozen(order=True)
class ConnectionPool:
    """Limits on upstream connections and requests; ``None`` leaves a limit unset (unlimited).

    TCP settings (``max_connections``, ``connect_timeout_ms``, ``tcp_keepalive``) apply
    to any TCP port; the others only to HTTP ports.
    """

    max_connections: int | None = attrs.field(default=None, validator=_optional_count)
    connect_timeout_ms: int | None = attrs.field(default=None, validator=_optional_duration)
    tcp_keepalive: TcpKeepalive | None = None
    http1_max_pending_requests: int | None = attrs.field(default=None, validator=_optional_count)
    http2_max_requests: int | None = attrs.field(default=None, validator=_optional_count)
    max_requests_per_connection: int | None = attrs.field(default=None, validator=_optional_count)
    max_retries: int | None = attrs.field(default=None, validator=_optional_count)
    idle_timeout_ms: int | None = attrs.field(default=None, validator=_optional_duration)

    def tcp_settings(self) -> list[str]:
        """Names of the TCP-level settings that are set."""
        return [n for n in ("max_connections", "connect_timeout_ms", "tcp_keepalive") if getattr(self, n) is not None]

    def http_settings(self) -> list[str]:
        """Names of the HTTP-level settings that are set."""
        return [n for n in ("http1_max_pending_requests", "http2_max_requests", "max_requests_per_connection",
                            "max_retries", "idle_timeout_ms") if getattr(self, n) is not None]


@attrs.frozen(order=True)
class OutlierDetection:
    """Eject a backend from the pool after consecutive errors, for a growing time.

    ``consecutive_5xx_errors`` counts 5xx answers (and, for TCP, failed connections);
    ``consecutive_gateway_errors`` counts 502/503/504 only; 0 disables either. At most
    ``max_ejection_percent`` of the backends are ejected; below ``min_health_percent``
    healthy backends ejection is ignored (0: never).
    """

    consecutive_5xx_errors: int | None = attrs.field(default=None, validator=_optional_count)
    consecutive_gateway_errors: int | None = attrs.field(default=None, validator=_optional_count)
    interval_ms: int | None = attrs.field(default=None, validator=_optional_duration)
    base_ejection_time_ms: int | None = attrs.field(default=None, validator=_optional_duration)
    max_ejection_percent: int | None = attrs.field(default=None, validator=_optional_percent)
    min_health_percent: int | None = attrs.field(default=None, validator=_optional_percent)


class TlsMode(enum.StrEnum):
    """Whether and how the proxy speaks TLS to the backends."""

    DISABLE = "DISABLE"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"
    #: The mesh's own mutual TLS (certificates from the mesh identity): not implemented yet.
    ISTIO_MUTUAL = "ISTIO_MUTUAL"


@attrs.frozen(order=True)
class UpstreamTls:
    """TLS origination to the backends, with certificates read from files or given as PEM.

    ``ca_certificates`` (a file) or ``ca_bundle`` (PEM text, e.g. a ConfigMap's
    ``ca.crt``) verifies the server, with ``subject_alt_names`` when given; ``MUTUAL``
    presents ``client_certificate`` with ``private_key``.
    """

    mode: TlsMode = attrs.field(converter=TlsMode)
    sni: str = ""
    subject_alt_names: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    ca_certificates: str = ""
    client_certificate: str = ""
    private_key: str = ""
    insecure_skip_verify: bool = False
    ca_bundle: str = ""

    def __attrs_post_init__(self) -> None:
        if self.mode is TlsMode.MUTUAL and not (self.client_certificate and self.private_key):
            raise ModelError("client_certificate", "MUTUAL TLS needs client_certificate and private_key")
        if self.mode in (TlsMode.DISABLE, TlsMode.ISTIO_MUTUAL) and (
                self.client_certificate or self.private_key or self.ca_certificates or self.ca_bundle):
            raise ModelError("mode", f"{self.mode.value} takes no certificate files")
        if self.ca_certificates and self.ca_bundle:
            raise ModelError("ca_bundle", "give the CA certificates as a file or as PEM, not both")
        if self.subject_alt_names and not (self.ca_certificates or self.ca_bundle):
            raise ModelError("subject_alt_names", "subject alt names are checked only with ca_certificates")

    @property
    def originates(self) -> bool:
        """True when the proxy opens TLS to the backends with these settings (SIMPLE or MUTUAL)."""
        return self.mode in (TlsMode.SIMPLE, TlsMode.MUTUAL)


#: The four settings of a traffic policy, in the order they are reported.
SETTINGS = ("lb", "connection_pool", "outlier_detection", "tls")


@attrs.frozen
class TrafficPolicy:
    """Settings for traffic to a service, one of its ports, a subset, or a subset on one port.

    ``port`` ``None`` applies to every port; ``subset`` ``""`` to every backend. A subset is
    named as route destinations name it, with the labels it selects (``subset_labels``).
    Unset settings (``None``) fall back to the less specific policy (see :func:`resolve_traffic`),
    unless ``replaces_all`` (port-level policies only): then every setting of the less
    specific policies is dropped, and unset ones are defaults.
    """

    service: ServiceRef
    port: int | None = attrs.field(default=None, validator=optional_port)
    subset: str = ""
    subset_labels: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=sorted_pairs)
    lb: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    tls: UpstreamTls | None = None
    replaces_all: bool = False
    source: Source = attrs.field(default=UNKNOWN, eq=False, order=False)

    def __attrs_post_init__(self) -> None:
        if self.subset_labels and not self.subset:
            raise ModelError("subset_labels", "subset labels need a subset name")
        if self.replaces_all and self.port is None:
            raise ModelError("replaces_all", "only a port-level policy replaces all settings")

    @property
    def key(self) -> tuple[ServiceRef, int, str]:
        """What one policy is unique by: service, port (0 for all ports) and subset."""
        return (self.service, self.port or 0, self.subset)

    @property
    def settings(self) -> dict[str, Any]:
        """The settings that are set, by name."""
        return {n: getattr(self, n) for n in SETTINGS if getattr(self, n) is not None}

    def __bool__(self) -> bool:
        return bool(self.settings)


def resolve_traffic(policies: Iterable[TrafficPolicy], service: ServiceRef, port: int,
                    subset: str = "") -> TrafficPolicy | None:
    """The settings in force for ``subset`` (``""``: all backends) of ``port`` of ``service``.

    Layers, least specific first: the service's, the port's, the subset's, the subset's on
    the port. A layer replaces the settings it sets, each whole; a ``replaces_all`` layer
    replaces all four (unset ones go back to defaults). The result names the port and
    subset asked for and keeps the source of the most specific layer found (``None`` when
    no setting is in force).
    """
    layers: dict[tuple[int, str], TrafficPolicy] = {}
    for p in policies:
        if p.service == service and (p.port is None or p.port == port) and p.subset in ("", subset):
            layers[(p.port or 0, p.subset)] = p
    order = [(0, ""), (port, ""), (0, subset), (port, subset)] if subset else [(0, ""), (port, "")]
    found = [layers[k] for k in dict.fromkeys(order) if k in layers]
    if not found:
        return None
    merged: dict[str, Any] = {}
    for layer in found:
        if layer.replaces_all:
            merged = dict(layer.settings)
        else:
            merged.update(layer.settings)
    if not merged:
        return None
    labels = next((layer.subset_labels for layer in reversed(found) if layer.subset), ())
    return TrafficPolicy(service, port, subset, labels, source=found[-1].source, **merged)
