"""Gateway API hostnames: validation, wildcard coverage, listener/route intersection, specificity.

A hostname is precise (``foo.example.com``) or a wildcard (``*.example.com``: a suffix
match over one or more labels, not matching ``example.com`` itself). Internally the empty
string stands for "any host" (a listener or route without hostnames).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from meshcore.kube import FieldError, Fields

from ._codes import GatewayCode

ANY = ""

_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PRECISE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IPV4 = re.compile(r"^[0-9]+(\.[0-9]+){3}$")


def check_hostname(value: str, path: str, *, precise: bool = False) -> str:
    """Validate a Gateway API ``Hostname`` (or ``PreciseHostname``): no IPs, wildcard only first."""
    pattern = _PRECISE if precise else _HOSTNAME
    if len(value) > 253 or not pattern.match(value) or _IPV4.match(value):
        kind = "a DNS name" if precise else "a DNS name, optionally prefixed by '*.'"
        raise FieldError(path, f"{value!r} is not a valid hostname ({kind}; lower case, no IP address)",
                         GatewayCode.INVALID_VALUE)
    return value


def read_hostnames(fields: Fields, key: str = "hostnames") -> list[str]:
    """A list of hostnames, validated."""
    return [check_hostname(h, f"{fields.path}.{key}[{i}]") for i, h in enumerate(fields.strs(key))]


def is_wildcard(host: str) -> bool:
    """True for ``*.``-prefixed hostnames."""
    return host.startswith("*.")


def covers(pattern: str, host: str) -> bool:
    """True when every name ``host`` stands for is also matched by ``pattern``."""
    if pattern == ANY or pattern == host:
        return True
    if host == ANY or not is_wildcard(pattern):
        return False
    return host.endswith(pattern[1:])


def intersect_origins(listener: str, route: Sequence[str]) -> list[tuple[str, str]]:
    """The hostnames a route serves on a listener, each with the route hostname it comes from.

    Empty when they do not intersect. Route hostnames the listener does not match are
    ignored; a route wildcard that covers a precise listener hostname yields the listener
    hostname. A route without hostnames serves the listener's (its origin is "any host").
    """
    if not route:
        return [(listener, ANY)]
    found: dict[str, str] = {}
    for host in route:
        if covers(listener, host):
            effective = host
        elif covers(host, listener):
            effective = listener
        else:
            continue
        # Keep the most specific route hostname behind each served name (it decides precedence).
        if effective not in found or specificity(host) < specificity(found[effective]):
            found[effective] = host
    return list(found.items())


def intersect(listener: str, route: Sequence[str]) -> list[str]:
    """The hostnames a route serves on a listener; empty when they do not intersect."""
    return [effective for effective, _ in intersect_origins(listener, route)]


def specificity(host: str) -> tuple[int, int, int]:
    """Sort key, most specific first: precise names, then wildcards by depth, then any host."""
    if host == ANY:
        return (2, 0, 0)
    if is_wildcard(host):
        return (1, -host.count("."), -len(host))
    return (0, -len(host), 0)


def most_specific(candidates: Iterable[str], host: str) -> str | None:
    """Among ``candidates``, the most specific one covering ``host`` (``None`` when none does)."""
    matching = [c for c in candidates if covers(c, host)]
    return min(matching, key=specificity) if matching else None
