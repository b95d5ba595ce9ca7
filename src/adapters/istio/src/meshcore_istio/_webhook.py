"""The checks Istio's validating webhook adds to the CRD schemas, in Istio's words.

Only what the webhook rejects is an error here; what it accepts (with or without a
warning of its own) is left to the translators, which warn about what meshcore does not
apply. The checks that the translators already make with the same outcome are not
repeated.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

from meshcore.kube import FieldError

from ._codes import IstioCode

_LABEL = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_WILDCARD_LABEL = re.compile(r"^(?:\*|(?:\*|\*-)?[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)$")
#: The port protocols Istio recognises (its protocol names, matched without regard to case).
PROTOCOLS = frozenset({"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB", "HTTPS", "TLS", "TCP", "UDP",
                       "MONGO", "MYSQL", "REDIS"})
_HTTP = frozenset({"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB"})
_TLS = frozenset({"HTTPS", "TLS"})


def _labels_error(domain: str, labels: str) -> str | None:
    parts = labels.split(".")
    if parts[-1].isdigit():
        return f"domain name {domain!r} invalid (top level domain {parts[-1]!r} cannot be all-numeric)"
    for label in parts:
        if len(label) > 63 or not _LABEL.match(label):
            return f"domain name {domain!r} invalid (label {label!r} invalid)"
    return None


def wildcard_domain_error(domain: str) -> str | None:
    """Istio's verdict on a host that may start with a wildcard label (``*``, ``*.x``, ``*x.y``); None when valid."""
    if not domain:
        return "empty domain name not allowed"
    if len(domain) > 255:
        return f"domain name {domain!r} too long (max 255)"
    first, dot, rest = domain.partition(".")
    if len(first) > 63 or not _WILDCARD_LABEL.match(first):
        return f"domain name {domain!r} invalid (label {first!r} invalid)"
    return _labels_error(domain, rest) if dot else None


def fqdn_error(name: str) -> str | None:
    """Istio's verdict on a fully qualified name (no wildcard; a trailing dot is allowed); None when valid."""
    if not name:
        return "empty domain name not allowed"
    if len(name) > 255:
        return f"domain name {name!r} too long (max 255)"
    return _labels_error(name, name.removesuffix("."))


def partial_wildcard(host: str) -> bool:
    """True for a wildcard that is not ``*`` or ``*.suffix`` (``*x.example``), which Istio only warns about."""
    return "*" in host and host != "*" and not host.startswith("*.")


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _list(spec: Mapping[str, Any], key: str) -> list[Any]:
    value = spec.get(key)
    return [v for v in value if v is not None] if isinstance(value, list) else []


def _map(spec: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = spec.get(key)
    return value if isinstance(value, Mapping) else {}


def protocol_known(protocol: str) -> bool:
    """True when Istio knows the port protocol (an empty one is sniffed, also valid)."""
    return not protocol or protocol.upper() in PROTOCOLS


def _service_entry(spec: Mapping[str, Any]) -> None:
    hosts = [str(h) for h in _list(spec, "hosts")]
    for i, host in enumerate(hosts):
        problem = wildcard_domain_error(host)
        if problem:
            raise FieldError(f"spec.hosts[{i}]", problem, IstioCode.INVALID_VALUE)
    for i, address in enumerate(_list(spec, "addresses")):
        try:
            ipaddress.ip_network(str(address), strict=False)
        except ValueError:
            raise FieldError(f"spec.addresses[{i}]", f"{address!r} is not a valid IP address or CIDR block",
                             IstioCode.INVALID_VALUE) from None
    names: set[str] = set()
    ports = [p for p in _list(spec, "ports") if isinstance(p, Mapping)]
    for i, port in enumerate(ports):
        name, protocol = str(port.get("name") or ""), str(port.get("protocol") or "")
        names.add(name)
        if not _LABEL.match(name) or len(name) > 63:
            raise FieldError(f"spec.ports[{i}].name", f"invalid port name: {name}", IstioCode.INVALID_VALUE)
        if not protocol_known(protocol):
            raise FieldError(f"spec.ports[{i}].protocol", f"unsupported protocol: {protocol} (one of "
                             f"{', '.join(sorted(PROTOCOLS))})", IstioCode.INVALID_VALUE)
    resolution = str(spec.get("resolution") or "NONE")
    endpoints = [e for e in _list(spec, "endpoints") if isinstance(e, Mapping)]
    if resolution in ("DNS", "DNS_ROUND_ROBIN"):
        if not endpoints:
            for i, host in enumerate(hosts):
                if fqdn_error(host):
                    raise FieldError(f"spec.hosts[{i}]", "hosts must be FQDN if no endpoints are provided for "
                                     f"resolution mode {resolution}", IstioCode.INVALID_COMBINATION)
        for i, endpoint in enumerate(endpoints):
            address = str(endpoint.get("address") or "")
            if address and not _ip(address) and fqdn_error(address):
                raise FieldError(f"spec.endpoints[{i}].address", f"endpoint address {address!r} is not a valid "
                                 "FQDN or an IP address", IstioCode.INVALID_VALUE)
    if resolution == "STATIC":
        for i, endpoint in enumerate(endpoints):
            address = str(endpoint.get("address") or "")
            if address and not address.startswith("unix://") and not _ip(address):
                raise FieldError(f"spec.endpoints[{i}].address", f"endpoint address {address!r} is not a valid "
                                 "IP address (resolution STATIC)", IstioCode.INVALID_VALUE)
    for i, endpoint in enumerate(endpoints):
        for name in _map(endpoint, "ports"):
            if str(name) not in names and resolution != "NONE":
                raise FieldError(f"spec.endpoints[{i}].ports.{name}", f"endpoint port {name} is not defined by "
                                 "the service entry", IstioCode.INVALID_COMBINATION)
    if resolution != "NONE" and len(hosts) > 1:
        for i, port in enumerate(ports):
            protocol = str(port.get("protocol") or "").upper()
            if protocol not in _HTTP | _TLS:
                raise FieldError(f"spec.ports[{i}].protocol", "multiple hosts provided with non-HTTP, non-TLS "
                                 "ports", IstioCode.INVALID_COMBINATION)


def _destination_rule(spec: Mapping[str, Any]) -> None:
    host = str(spec.get("host") or "")
    problem = wildcard_domain_error(host)
    if problem and not _ip(host):
        raise FieldError("spec.host", problem, IstioCode.INVALID_VALUE)
    policies = [("spec.trafficPolicy", _map(spec, "trafficPolicy"))]
    for i, subset in enumerate(_list(spec, "subsets")):
        if isinstance(subset, Mapping) and "trafficPolicy" in subset:
            policies.append((f"spec.subsets[{i}].trafficPolicy", _map(subset, "trafficPolicy")))
    for path, policy in policies:
        if "tunnel" in policy and "proxyProtocol" in policy:
            raise FieldError(f"{path}.proxyProtocol", "tunnel and proxyProtocol must not be set together",
                             IstioCode.INVALID_COMBINATION)
        levels = [(path, policy)] + [(f"{path}.portLevelSettings[{i}]", p)
                                     for i, p in enumerate(_list(policy, "portLevelSettings"))
                                     if isinstance(p, Mapping)]
        for where, level in levels:
            _traffic_settings(where, level)


def _traffic_settings(path: str, level: Mapping[str, Any]) -> None:
    outlier = _map(level, "outlierDetection")
    if not outlier.get("splitExternalLocalOriginErrors") and (outlier.get("consecutiveLocalOriginFailures") or 0) > 0:
        raise FieldError(f"{path}.outlierDetection.consecutiveLocalOriginFailures", "outlier detection consecutive "
                         "local origin failures is specified, but split external local origin errors is set to "
                         "false", IstioCode.INVALID_COMBINATION)
    http = _map(_map(level, "connectionPool"), "http")
    if http.get("h2UpgradePolicy") == "UPGRADE" and http.get("useClientProtocol"):
        raise FieldError(f"{path}.connectionPool.http.useClientProtocol", "use client protocol must not be true "
                         "when H2UpgradePolicy is UPGRADE", IstioCode.INVALID_COMBINATION)
    consistent = _map(_map(level, "loadBalancer"), "consistentHash")
    where = f"{path}.loadBalancer.consistentHash"
    if consistent.get("minimumRingSize") and ("ringHash" in consistent or "maglev" in consistent):
        raise FieldError(f"{where}.minimumRingSize", "only one of MinimumRingSize or Maglev/Ringhash can be "
                         "specified", IstioCode.INVALID_COMBINATION)
    size = int(_map(consistent, "maglev").get("tableSize") or 0)
    if size:  # an unset size takes Envoy's default
        if size >= 5000011:
            raise FieldError(f"{where}.maglev.tableSize", "tableSize must be less than 5000011 for maglev",
                             IstioCode.INVALID_VALUE)
        if not _prime(size):
            raise FieldError(f"{where}.maglev.tableSize", f"tableSize must be a prime number for maglev (got {size})",
                             IstioCode.INVALID_VALUE)


def _prime(number: int) -> bool:
    if number < 4:
        return number > 1
    if number % 2 == 0:
        return False
    return all(number % factor for factor in range(3, int(number**0.5) + 1, 2))


def _authorization_policy(spec: Mapping[str, Any]) -> None:
    action = str(spec.get("action") or "ALLOW")
    if spec.get("provider") is not None and action != "CUSTOM":
        raise FieldError("spec.provider", f"`provider` must not be with non CUSTOM action, found {action}",
                         IstioCode.INVALID_COMBINATION)
    if action in ("DENY", "CUSTOM") and spec.get("rules") is None:
        raise FieldError("spec.action", f"{action} action without `rules` is meaningless as it will never be "
                         "triggered, add an empty rule `{}` if you want it be triggered for every request",
                         IstioCode.INVALID_COMBINATION)
    if action == "CUSTOM" and not str(_map(spec, "provider").get("name") or ""):
        raise FieldError("spec.provider.name", "`provider.name` must not be empty", IstioCode.INVALID_VALUE)


def _covers(a: str, b: str) -> bool:
    """True when host ``a`` matches host ``b`` as Istio compares them (a wildcard covers its suffix)."""
    if a == b or a == "*":
        return True
    return a.startswith("*") and b.endswith(a[1:])


def _virtual_service(spec: Mapping[str, Any]) -> None:
    hosts = [str(h) for h in _list(spec, "hosts")]
    gateways = [str(g) for g in _list(spec, "gateways")]
    if not hosts:
        for key, what in (("gateways", "gateways"), ("tls", "tls route"), ("tcp", "tcp route")):
            if _list(spec, key):
                raise FieldError(f"spec.{key}", f"delegate virtual service must have no {what} specified",
                                 IstioCode.INVALID_COMBINATION)
    mesh = not gateways or "mesh" in gateways
    for i, host in enumerate(hosts):
        problem = None if host == "*" else wildcard_domain_error(host)
        if problem and not _ip(host):
            raise FieldError(f"spec.hosts[{i}]", problem, IstioCode.INVALID_VALUE)
        if mesh and host == "*":
            raise FieldError(f"spec.hosts[{i}]", "wildcard host * is not allowed for virtual services bound to the "
                             "mesh gateway", IstioCode.INVALID_VALUE)
    for i, a in enumerate(hosts):
        for j in range(i + 1, len(hosts)):
            b = hosts[j]
            if _covers(a, b) or _covers(b, a):
                raise FieldError(f"spec.hosts[{j}]", f"duplicate hosts in virtual service: {a} & {b}",
                                 IstioCode.INVALID_COMBINATION)
    if not (_list(spec, "http") or _list(spec, "tcp") or _list(spec, "tls")):
        raise FieldError("spec", "http, tcp or tls must be provided in virtual service", IstioCode.INVALID_VALUE)


_CHECKS: Mapping[str, Callable[[Mapping[str, Any]], None]] = {
    "VirtualService": _virtual_service,
    "ServiceEntry": _service_entry,
    "DestinationRule": _destination_rule,
    "AuthorizationPolicy": _authorization_policy,
}


def check_webhook(kind: str, spec: Any) -> None:
    """Raise :class:`FieldError` for the first check of Istio's webhook that ``spec`` fails."""
    check = _CHECKS.get(kind)
    if check is not None and isinstance(spec, Mapping):
        check(spec)
