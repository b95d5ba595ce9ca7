"""DestinationRule → subsets (labels) and traffic policy, looked up by host as Istio does.

A client in namespace N uses the DestinationRule for a host found first in N, then in the
service's namespace, then in the root namespace, among those exported to N. Load
balancing (``simple`` and ``consistentHash``) becomes a :class:`~meshcore.model.LbPolicy`;
connection pool, outlier detection and client TLS are read, validated and reported as
not enforced yet.
"""

from __future__ import annotations

import attrs

from meshcore.kube import FieldError, Fields, KubeObject, Report
from meshcore.model import LbPolicy

from ._codes import INVALID_COMBINATION, INVALID_VALUE, NOT_CARRIED
from ._common import ROOT_NAMESPACE, export_to, fqdn, read_duration, visible

SIMPLE_LB = {
    "UNSPECIFIED": None, "RANDOM": LbPolicy.RANDOM, "ROUND_ROBIN": LbPolicy.ROUND_ROBIN,
    "LEAST_REQUEST": LbPolicy.LEAST_REQUEST, "LEAST_CONN": LbPolicy.LEAST_REQUEST, "PASSTHROUGH": None,
}
TLS_MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")


@attrs.frozen
class Subset:
    """A named subset: the labels its workloads carry."""

    name: str
    labels: tuple[tuple[str, str], ...]
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

    def subset(self, name: str) -> Subset | None:
        """The subset called ``name``, if defined."""
        return next((s for s in self.subsets if s.name == name), None)


def _load_balancer(fields: Fields, obj: KubeObject, report: Report) -> LbPolicy | None:
    lb = fields.map("loadBalancer")
    if not lb.data:
        return None
    given = [k for k in ("simple", "consistentHash") if lb.has(k)]
    if len(given) > 1:
        raise FieldError(lb.path, "only one of simple or consistentHash may be set", INVALID_COMBINATION)
    if lb.has("localityLbSetting") or lb.has("warmupDurationSecs") or lb.has("warmup"):
        report.info(obj, NOT_CARRIED, "locality load balancing and warm-up are not enforced yet", lb.path)
    if lb.has("simple"):
        simple = lb.req_str("simple", choices=tuple(SIMPLE_LB))
        if simple == "PASSTHROUGH":
            report.info(obj, NOT_CARRIED, "PASSTHROUGH load balancing is not supported; the default applies",
                        f"{lb.path}.simple")
        return SIMPLE_LB[simple]
    if lb.has("consistentHash"):
        ch = lb.map("consistentHash")
        keys = [k for k in ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName") if ch.has(k)]
        if len(keys) != 1:
            raise FieldError(ch.path, "exactly one of httpHeaderName, httpCookie, useSourceIp or "
                             "httpQueryParameterName is required", INVALID_COMBINATION)
        if ch.has("httpCookie"):
            cookie = ch.map("httpCookie")
            cookie.req_str("name")
            read_duration(cookie, "ttl")
        report.info(obj, NOT_CARRIED, f"consistent hashing is carried as CONSISTENT_HASH; the hash key "
                    f"({keys[0]}) is not carried yet", ch.path)
        return LbPolicy.CONSISTENT_HASH
    return None


def _policy(fields: Fields, obj: KubeObject, report: Report) -> LbPolicy | None:
    """Read a TrafficPolicy (or PortTrafficPolicy); return its load-balancing policy."""
    lb = _load_balancer(fields, obj, report)
    if fields.has("connectionPool"):
        report.info(obj, NOT_CARRIED, "connectionPool limits are not enforced yet", f"{fields.path}.connectionPool")
    if fields.has("outlierDetection"):
        od = fields.map("outlierDetection")
        for key in ("interval", "baseEjectionTime"):
            read_duration(od, key)
        od.int("maxEjectionPercent", minimum=0, maximum=100)
        od.int("minHealthPercent", minimum=0, maximum=100)
        report.info(obj, NOT_CARRIED, "outlierDetection is not enforced yet", od.path)
    if fields.has("tls"):
        tls = fields.map("tls")
        mode = tls.str("mode", "DISABLE", choices=TLS_MODES)
        if mode == "MUTUAL" and not tls.has("credentialName") and not (
                tls.has("clientCertificate") and tls.has("privateKey")):
            raise FieldError(tls.path, "MUTUAL needs credentialName or clientCertificate and privateKey",
                             INVALID_COMBINATION)
        if mode in ("SIMPLE", "MUTUAL"):
            report.info(obj, NOT_CARRIED, f"TLS origination ({mode}) is not carried yet", f"{tls.path}.mode")
    for i, port_policy in enumerate(fields.maps("portLevelSettings")):
        port_policy.map("port", required=True).port("number", required=True)
        if port_policy.has("loadBalancer"):
            report.info(obj, NOT_CARRIED, "port-level load balancing is not carried yet",
                        f"{port_policy.path}.loadBalancer")
        _policy(Fields({k: v for k, v in port_policy.data.items() if k != "loadBalancer"}, port_policy.path),
                obj, report)
    return lb


def read_destination_rule(obj: KubeObject, report: Report) -> DestRule:
    """Read and validate one DestinationRule."""
    spec = Fields.of(obj).map("spec", required=True)
    host = spec.req_str("host")
    if not host:
        raise FieldError("spec.host", "must not be empty", INVALID_VALUE)
    exported = export_to(spec)
    selector = tuple(sorted(spec.map("workloadSelector").str_map("matchLabels").items()))
    lb = _policy(spec.map("trafficPolicy"), obj, report)
    subsets: list[Subset] = []
    for s in spec.maps("subsets"):
        name = s.req_str("name")
        if any(x.name == name for x in subsets):
            raise FieldError(f"{s.path}.name", f"duplicate subset name {name!r}", INVALID_VALUE)
        if s.has("trafficPolicy"):
            sub_lb = _policy(s.map("trafficPolicy"), obj, report)
            if sub_lb is not None:
                report.info(obj, NOT_CARRIED, "subset-level load balancing is not carried yet; the rule's "
                            "policy applies", f"{s.path}.trafficPolicy.loadBalancer")
        subsets.append(Subset(name, tuple(sorted(s.str_map("labels").items())), s.path))
    return DestRule(obj, fqdn(host, obj.namespace), exported, tuple(subsets), lb, selector)


def find_rule(rules: list[DestRule], host: str, viewer: str, service_ns: str | None) -> DestRule | None:
    """The DestinationRule a client in ``viewer`` uses for ``host`` (Istio's lookup order)."""
    candidates = [r for r in rules if r.host == host and not r.selector
                  and visible(r.exported, r.obj.namespace, viewer)]
    for ns in (viewer, service_ns, ROOT_NAMESPACE):
        for r in candidates:
            if r.obj.namespace == ns:
                return r
    return candidates[0] if candidates else None
