"""DestinationRule → subsets (labels) and traffic policy, looked up by host as Istio does.

A client in namespace N uses the DestinationRule for a host found first in N, then in the
service's namespace, then in the root namespace, among those exported to N. A rule's
traffic policy is read into layers (the rule's, each ``portLevelSettings`` entry, each
subset's, each subset's port-level entries) of model settings — load balancing with its
consistent-hash key, connection pool, outlier detection and client TLS — which
:mod:`._trafficpolicy` attaches to the services the rule's host names. Invalid values and
combinations Istio's validation rejects are errors naming the field.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from meshcore.kube import FieldError, Fields, KubeObject, Report
from meshcore.model import (
    ConnectionPool,
    HashAlgorithm,
    HashKey,
    HashKeyKind,
    LbPolicy,
    LoadBalancer,
    OutlierDetection,
    TcpKeepalive,
    TlsMode,
    UpstreamTls,
)

from ._codes import IstioCode
from ._common import ROOT_NAMESPACE, export_to, fqdn, model, parse_duration, visible

SIMPLE_LB = {
    "UNSPECIFIED": None, "RANDOM": LbPolicy.RANDOM, "ROUND_ROBIN": LbPolicy.ROUND_ROBIN,
    "LEAST_REQUEST": LbPolicy.LEAST_REQUEST, "LEAST_CONN": LbPolicy.LEAST_REQUEST, "PASSTHROUGH": None,
}
TLS_MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
_HASH_KEYS = ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")
_ZERO = re.compile(r"^0+(?:\.0+)?(?:h|m|s|ms|us|µs|ns)?$")


@attrs.frozen
class Subset:
    """A named subset: the labels its workloads carry."""

    name: str
    labels: tuple[tuple[str, str], ...]
    path: str


@attrs.frozen
class Settings:
    """The model settings of one TrafficPolicy (or PortTrafficPolicy); ``None`` where unset."""

    lb: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    tls: UpstreamTls | None = None

    def fields(self) -> dict[str, Any]:
        """The settings that are set, as TrafficPolicy keyword arguments."""
        return {k: v for k, v in attrs.asdict(self, recurse=False).items() if v is not None}


@attrs.frozen
class Layer:
    """Settings for all ports or one ``port``, of the whole host or one ``subset``."""

    port: int | None
    subset: Subset | None
    settings: Settings
    path: str


@attrs.frozen
class DestRule:
    """One DestinationRule, read and validated."""

    obj: KubeObject
    host: str
    exported: tuple[str, ...]
    subsets: tuple[Subset, ...]
    lb_policy: LbPolicy | None
    selector: tuple[tuple[str, str], ...] = ()
    layers: tuple[Layer, ...] = ()

    def subset(self, name: str) -> Subset | None:
        """The subset called ``name``, if defined."""
        return next((s for s in self.subsets if s.name == name), None)


def _duration(fields: Fields, key: str, *, allow_zero: bool = False) -> int | None:
    """An optional non-negative duration in milliseconds (Istio rejects negative ones)."""
    text = fields.str(key)
    if text is None:
        return None
    path = f"{fields.path}.{key}"
    if text.startswith("-"):
        raise FieldError(path, f"{text!r}: a duration must not be negative", IstioCode.INVALID_VALUE)
    if allow_zero and _ZERO.match(text):
        return 0
    return parse_duration(text, path)


def _count(fields: Fields, key: str, *, maximum: int | None = None, what: str = "") -> int | None:
    """An optional non-negative integer; 0 is Istio's "unset" for limits (``what`` names the field)."""
    value = fields.int(key)
    if value is None:
        return None
    path = f"{fields.path}.{key}"
    if value < 0:
        raise FieldError(path, f"{what or key} must not be negative, got {value}", IstioCode.INVALID_VALUE)
    if maximum is not None and value > maximum:
        raise FieldError(path, f"{what or key} must be in range [0..{maximum}], got {value}", IstioCode.INVALID_VALUE)
    return value


def _limit(fields: Fields, key: str) -> int | None:
    """A connection-pool limit: 0 (proto3's default) leaves it unlimited, as in Istio."""
    value = _count(fields, key)
    return value or None


def _hash_key(ch: Fields, obj: KubeObject, report: Report) -> HashKey:
    keys = [k for k in _HASH_KEYS if ch.has(k)]
    if len(keys) != 1:
        got = f"; got {', '.join(keys)}" if keys else ""
        raise FieldError(ch.path, f"consistentHash takes exactly one of {', '.join(_HASH_KEYS)}{got}",
                         IstioCode.INVALID_COMBINATION)
    key = keys[0]
    path = f"{ch.path}.{key}"
    if key == "httpCookie":
        cookie = ch.map("httpCookie")
        name = cookie.req_str("name")
        if not name:
            raise FieldError(f"{cookie.path}.name", "name required for httpCookie", IstioCode.INVALID_VALUE)
        if not cookie.has("ttl"):
            raise FieldError(f"{cookie.path}.ttl", "ttl required for httpCookie (0s for a session cookie)",
                             IstioCode.INVALID_VALUE)
        if cookie.has("attributes"):
            report.info(obj, IstioCode.NOT_CARRIED, "cookie attributes are not carried", f"{cookie.path}.attributes")
        ttl = _duration(cookie, "ttl", allow_zero=True)
        return model(path, lambda: HashKey(HashKeyKind.COOKIE, name, cookie.str("path", "") or "", ttl))
    if key == "useSourceIp":
        if not ch.bool("useSourceIp"):
            raise FieldError(path, "useSourceIp must be true when it is the hash key", IstioCode.INVALID_VALUE)
        return HashKey(HashKeyKind.SOURCE_IP)
    name = ch.req_str(key)
    if not name:
        raise FieldError(path, "must not be empty", IstioCode.INVALID_VALUE)
    kind = HashKeyKind.HEADER if key == "httpHeaderName" else HashKeyKind.QUERY_PARAMETER
    return model(path, lambda: HashKey(kind, name))


def _consistent_hash(ch: Fields, obj: KubeObject, report: Report) -> LoadBalancer:
    key = _hash_key(ch, obj, report)
    algorithms = [k for k in ("ringHash", "maglev") if ch.has(k)]
    if len(algorithms) > 1:
        raise FieldError(ch.path, "only one of ringHash or maglev may be set", IstioCode.INVALID_COMBINATION)
    legacy = _count(ch, "minimumRingSize")
    if legacy and algorithms:
        raise FieldError(f"{ch.path}.minimumRingSize", "only one of minimumRingSize or ringHash/maglev may be set",
                         IstioCode.INVALID_COMBINATION)
    if algorithms == ["maglev"]:
        maglev = ch.map("maglev")
        if _count(maglev, "tableSize"):
            report.info(obj, IstioCode.NOT_CARRIED, "the Maglev table size is not carried; Envoy's default applies",
                        f"{maglev.path}.tableSize")
        return LoadBalancer(LbPolicy.CONSISTENT_HASH, key, HashAlgorithm.MAGLEV)
    ring = _count(ch.map("ringHash"), "minimumRingSize") if algorithms else legacy
    return LoadBalancer(LbPolicy.CONSISTENT_HASH, key, HashAlgorithm.RING_HASH, ring or None)


def _load_balancer(fields: Fields, obj: KubeObject, report: Report) -> LoadBalancer | None:
    lb = fields.map("loadBalancer")
    if not lb.data:
        return None
    given = [k for k in ("simple", "consistentHash") if lb.has(k)]
    if len(given) > 1:
        raise FieldError(lb.path, "only one of simple or consistentHash may be set", IstioCode.INVALID_COMBINATION)
    if lb.has("localityLbSetting") or lb.has("warmupDurationSecs") or lb.has("warmup"):
        report.info(obj, IstioCode.NOT_CARRIED, "locality load balancing and warm-up are not enforced yet", lb.path)
    if lb.has("simple"):
        simple = lb.req_str("simple", choices=tuple(SIMPLE_LB))
        if simple == "PASSTHROUGH":
            report.info(obj, IstioCode.NOT_CARRIED, "PASSTHROUGH load balancing is not supported; the default applies",
                        f"{lb.path}.simple")
        policy = SIMPLE_LB[simple]
        return None if policy is None else LoadBalancer(policy)
    if lb.has("consistentHash"):
        return _consistent_hash(lb.map("consistentHash"), obj, report)
    return None


def _connection_pool(fields: Fields, obj: KubeObject, report: Report) -> ConnectionPool | None:
    if not fields.has("connectionPool"):
        return None
    cp = fields.map("connectionPool")
    if not cp.has("tcp") and not cp.has("http"):
        raise FieldError(cp.path, "a connection pool needs tcp or http settings", IstioCode.INVALID_VALUE)
    tcp, http = cp.map("tcp"), cp.map("http")
    for f, key in ((tcp, "maxConnectionDuration"), (tcp, "idleTimeout"), (http, "h2UpgradePolicy"),
                   (http, "useClientProtocol"), (http, "maxConcurrentStreams")):
        if f.has(key):
            if key.endswith(("Duration", "Timeout")):
                _duration(f, key)  # still validated: Istio rejects a bad one
            report.info(obj, IstioCode.NOT_CARRIED, f"connectionPool {key} is not carried", f"{f.path}.{key}")
    keepalive = None
    if tcp.has("tcpKeepalive"):
        ka = tcp.map("tcpKeepalive")
        keepalive = TcpKeepalive(_count(ka, "probes") or None, _duration(ka, "time"), _duration(ka, "interval"))
    pool = ConnectionPool(
        max_connections=_limit(tcp, "maxConnections"),
        connect_timeout_ms=_duration(tcp, "connectTimeout"),
        tcp_keepalive=keepalive,
        http1_max_pending_requests=_limit(http, "http1MaxPendingRequests"),
        http2_max_requests=_limit(http, "http2MaxRequests"),
        max_requests_per_connection=_limit(http, "maxRequestsPerConnection"),
        max_retries=_limit(http, "maxRetries"),
        idle_timeout_ms=_duration(http, "idleTimeout"),
    )
    return pool if pool.tcp_settings() or pool.http_settings() else None


def _outlier_detection(fields: Fields, obj: KubeObject, report: Report) -> OutlierDetection | None:
    if not fields.has("outlierDetection"):
        return None
    od = fields.map("outlierDetection")
    for key in ("splitExternalLocalOriginErrors", "consecutiveLocalOriginFailures"):
        if od.has(key):
            report.info(obj, IstioCode.NOT_CARRIED, f"outlierDetection {key} is not carried: local-origin errors count "
                        "as 5xx errors", f"{od.path}.{key}")
    gateway = _count(od, "consecutiveGatewayErrors", what="outlier detection consecutive gateway errors")
    legacy = _count(od, "consecutiveErrors", what="outlier detection consecutive errors")
    if legacy and gateway is None:
        gateway = legacy  # the deprecated field counts gateway errors only, as Istio maps it
    return OutlierDetection(
        consecutive_5xx_errors=_count(od, "consecutive5xxErrors", what="outlier detection consecutive 5xx errors"),
        consecutive_gateway_errors=gateway,
        interval_ms=_duration(od, "interval"),
        base_ejection_time_ms=_duration(od, "baseEjectionTime"),
        max_ejection_percent=_count(od, "maxEjectionPercent", maximum=100,
                                    what="outlier detection maximum ejection percentage"),
        min_health_percent=_count(od, "minHealthPercent", maximum=100,
                                  what="outlier detection minimum health percentage"),
    )


def _tls(fields: Fields, obj: KubeObject, report: Report) -> UpstreamTls | None:
    if not fields.has("tls"):
        return None
    tls = fields.map("tls")
    mode = tls.str("mode", "DISABLE", choices=TLS_MODES) or "DISABLE"
    files = {k: tls.str(k, "") or "" for k in ("clientCertificate", "privateKey", "caCertificates")}
    credential = tls.str("credentialName", "") or ""
    if mode == "ISTIO_MUTUAL" and (credential or any(files.values())):
        raise FieldError(tls.path, "cannot specify client certificates or CA certificate or credentialName if "
                         "mode is ISTIO_MUTUAL", IstioCode.INVALID_COMBINATION)
    if mode == "MUTUAL" and not credential and not (files["clientCertificate"] and files["privateKey"]):
        raise FieldError(tls.path, "MUTUAL needs credentialName or clientCertificate and privateKey",
                         IstioCode.INVALID_COMBINATION)
    if tls.has("caCrl"):
        report.info(obj, IstioCode.NOT_CARRIED, "caCrl is not carried: revoked certificates are not refused",
                    f"{tls.path}.caCrl")
    if mode == "ISTIO_MUTUAL":
        report.warn(obj, IstioCode.NOT_SUPPORTED, "ISTIO_MUTUAL is not supported: mutual TLS between workloads is not "
                    "implemented, so this traffic stays plain text", f"{tls.path}.mode")
        return UpstreamTls(TlsMode.ISTIO_MUTUAL, sni=tls.str("sni", "") or "")
    if mode == "DISABLE":
        return UpstreamTls(TlsMode.DISABLE)
    if credential:
        # Fail closed: without the Secret's certificates the proxy cannot originate the TLS asked for.
        report.warn(obj, IstioCode.NOT_SUPPORTED, f"credentialName {credential!r} is not read (certificates come from "
                    "files: clientCertificate, privateKey, caCertificates); TLS origination is not applied",
                    f"{tls.path}.credentialName")
        return None
    sans = tuple(tls.strs("subjectAltNames"))
    if not files["caCertificates"]:
        report.info(obj, IstioCode.NOT_CARRIED, "no caCertificates: the server certificate is not verified"
                    + (" and subjectAltNames are not checked" if sans else ""), f"{tls.path}.mode")
        sans = ()
    skip = tls.bool("insecureSkipVerify")
    return model(tls.path, lambda: UpstreamTls(
        TlsMode(mode), tls.str("sni", "") or "", sans, files["caCertificates"], files["clientCertificate"],
        files["privateKey"], skip))


def _settings(fields: Fields, obj: KubeObject, report: Report) -> Settings:
    """Read one TrafficPolicy or PortTrafficPolicy's settings."""
    return Settings(_load_balancer(fields, obj, report), _connection_pool(fields, obj, report),
                    _outlier_detection(fields, obj, report), _tls(fields, obj, report))


def _layers(parent: Fields, obj: KubeObject, report: Report, subset: Subset | None) -> list[Layer]:
    """The layers of ``parent.trafficPolicy``: its own settings, then one per ``portLevelSettings`` entry."""
    if not parent.has("trafficPolicy"):
        return []
    fields = parent.map("trafficPolicy")
    if not fields.data:
        raise FieldError(fields.path, "traffic policy must have at least one field", IstioCode.INVALID_VALUE)
    for key in ("tunnel", "proxyProtocol"):
        if fields.has(key):
            report.info(obj, IstioCode.NOT_CARRIED, f"{key} is not carried", f"{fields.path}.{key}")
    if fields.has("retryBudget"):
        report.warn(obj, IstioCode.NOT_SUPPORTED, "retryBudget is not applied: retries to this host are not capped by "
                    "a budget (the route's retry policy still applies)", f"{fields.path}.retryBudget")
    out = [Layer(None, subset, _settings(fields, obj, report), fields.path)]
    seen: dict[int, str] = {}
    for port_policy in fields.maps("portLevelSettings"):
        number = port_policy.map("port", required=True).port("number", required=True)
        assert number is not None
        if number in seen:
            raise FieldError(f"{port_policy.path}.port.number", f"port {number} already has settings at "
                             f"{seen[number]}", IstioCode.INVALID_COMBINATION)
        seen[number] = port_policy.path
        out.append(Layer(number, subset, _settings(port_policy, obj, report), port_policy.path))
    return out


def read_destination_rule(obj: KubeObject, report: Report) -> DestRule:
    """Read and validate one DestinationRule."""
    spec = Fields.of(obj).map("spec", required=True)
    host = spec.req_str("host")
    if not host:
        raise FieldError("spec.host", "must not be empty", IstioCode.INVALID_VALUE)
    exported = export_to(spec)
    selector = tuple(sorted(spec.map("workloadSelector").str_map("matchLabels").items()))
    layers = _layers(spec, obj, report, None)
    subsets: list[Subset] = []
    for s in spec.maps("subsets"):
        name = s.req_str("name")
        if any(x.name == name for x in subsets):
            raise FieldError(f"{s.path}.name", f"duplicate subset name {name!r}", IstioCode.INVALID_VALUE)
        subset = Subset(name, tuple(sorted(s.str_map("labels").items())), s.path)
        layers += _layers(s, obj, report, subset)
        subsets.append(subset)
    top = layers[0].settings.lb if layers and layers[0].subset is None and layers[0].port is None else None
    return DestRule(obj, fqdn(host, obj.namespace), exported, tuple(subsets), top.policy if top else None,
                    selector, tuple(layers))


def find_rule(rules: list[DestRule], host: str, viewer: str, service_ns: str | None) -> DestRule | None:
    """The DestinationRule a client in ``viewer`` uses for ``host`` (Istio's lookup order)."""
    candidates = [r for r in rules if r.host == host and not r.selector
                  and visible(r.exported, r.obj.namespace, viewer)]
    for ns in (viewer, service_ns, ROOT_NAMESPACE):
        for r in candidates:
            if r.obj.namespace == ns:
                return r
    return candidates[0] if candidates else None
