"""attrs validators that raise :class:`ModelError` naming the offending field."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import re2

from ._errors import ModelError

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$|^\*$")

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def dns_label(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """A Kubernetes DNS-1123 label: lower-case alphanumerics and '-', at most 63."""
    if not isinstance(value, str) or not _DNS_LABEL.match(value):
        raise ModelError(
            attribute.name,
            f"{value!r} is not a valid name (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)",
        )


def dns_subdomain(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """A Kubernetes DNS-1123 subdomain: like a label but with '.', at most 253."""
    if not isinstance(value, str) or not _DNS_SUBDOMAIN.match(value):
        raise ModelError(
            attribute.name,
            f"{value!r} is not a valid name (lower-case letters, digits, '-' and '.', "
            "at most 253 characters)",
        )


def hostname(_: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    """Each entry is a DNS name, optionally with a leading '*.' wildcard, or '*'."""
    for i, host in enumerate(value):
        if not isinstance(host, str) or not _HOSTNAME.match(host):
            raise ModelError(
                f"{attribute.name}[{i}]",
                f"{host!r} is not a valid hostname (a DNS name, '*.' + DNS name, or '*')",
            )


def port(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    """A TCP/UDP port in 1..65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ModelError(attribute.name, f"{value!r} is not a valid port (1..65535)")


def optional_port(inst: Any, attribute: attrs.Attribute[Any], value: int | None) -> None:
    """``None`` or a valid port."""
    if value is not None:
        port(inst, attribute, value)


def non_negative(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    """An integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ModelError(attribute.name, f"{value!r} must be an integer >= 0")


def in_range(lo: float, hi: float) -> Validator:
    """A number in ``lo..hi`` inclusive."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise ModelError(attribute.name, f"{value!r} must be between {lo} and {hi}")

    return check


def _canonical_ipv4(text: object) -> bool:
    """True for a canonical dotted-quad IPv4 address (inet_pton accepts exactly those)."""
    if type(text) is not str:
        return False
    try:
        socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return False
    return True


def ip_addresses(_: Any, attribute: attrs.Attribute[Any], value: Iterable[str]) -> None:
    """Each entry is an IPv4 or IPv6 address in canonical text form."""
    for i, text in enumerate(value):
        if _canonical_ipv4(text):
            continue  # the common case, checked at C speed: large inventories hold 100k+ addresses
        try:
            addr = ipaddress.ip_address(text)
        except (ValueError, TypeError):
            raise ModelError(
                f"{attribute.name}[{i}]", f"{text!r} is not an IPv4 or IPv6 address"
            ) from None
        if str(addr) != text:
            raise ModelError(f"{attribute.name}[{i}]", f"{text!r} is not canonical; use {addr}")


def ip_address(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """One IPv4 or IPv6 address in canonical text form."""
    try:
        ip_addresses(inst, attribute, (value,))
    except ModelError as exc:
        raise ModelError(attribute.name, exc.message) from None


def cidr(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """One CIDR block with no host bits set."""
    try:
        cidrs(inst, attribute, (value,))
    except ModelError as exc:
        raise ModelError(attribute.name, exc.message) from None


def cidrs(_: Any, attribute: attrs.Attribute[Any], value: Iterable[str]) -> None:
    """Each entry is an IPv4 or IPv6 network in CIDR form with no host bits set."""
    for i, text in enumerate(value):
        try:
            ipaddress.ip_network(text, strict=True)
        except (ValueError, TypeError) as exc:
            raise ModelError(
                f"{attribute.name}[{i}]", f"{text!r} is not a CIDR block ({exc})"
            ) from None


def non_empty(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """The value is not empty."""
    if not value:
        raise ModelError(attribute.name, "must not be empty")


#: The largest RE2 program (RE2's measure of a compiled expression's cost) accepted in the
#: model, as Istio's proxies accept; the node proxy's bootstrap raises Envoy's limit of 100
#: above it.
MAX_REGEX_PROGRAM_SIZE = 32768

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def regex_error(value: str) -> str | None:
    """Why ``value`` is not a regular expression the proxy accepts (RE2 syntax, bounded size), or ``None``."""
    try:
        size = re2.compile(value, options=_RE2_OPTIONS).programsize
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return f"{value!r} is not a valid RE2 regular expression: {reason}"
    if size > MAX_REGEX_PROGRAM_SIZE:
        return (f"{value!r} is too complex for the proxy's regular-expression engine (RE2 program size {size}, "
                f"at most {MAX_REGEX_PROGRAM_SIZE}); simplify it")
    return None


def regex(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """The value is a regular expression the proxy accepts (see :func:`regex_error`)."""
    problem = regex_error(value)
    if problem is not None:
        raise ModelError(attribute.name, problem)


def canonical_ip(text: str) -> str:
    """Return the canonical text form of an IP address (raises ``ValueError``)."""
    return str(ipaddress.ip_address(text))


def to_tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    """Converter: any iterable → tuple (lists from adapters become immutable)."""
    return tuple(value)


def sorted_tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    """Converter: any iterable → sorted tuple (order-independent collections)."""
    return tuple(sorted(value))


def sorted_pairs(value: Iterable[tuple[str, str]] | dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Converter: a mapping or pairs → sorted tuple of (key, value) pairs."""
    return tuple(sorted(dict(value).items()))
