"""Shared readers for the core kinds: names, IP addresses, protocols, findings, model errors."""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..model import Diagnostic, ModelError, Protocol, Severity
from ._codes import FieldCode, KubeCode
from ._fields import FieldError, Fields
from ._objects import KubeObject

T = TypeVar("T")

#: The ``protocol`` values Kubernetes accepts on ports.
PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")

_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_LETTER = re.compile(r"[a-z]")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


class Findings:
    """Warnings found while reading one object, attributed to that object's fields."""

    __slots__ = ("obj", "items")

    def __init__(self, obj: KubeObject) -> None:
        self.obj = obj
        self.items: list[Diagnostic] = []

    def warn(self, code: str, message: str, path: str) -> None:
        """Record a warning at ``path`` of the object."""
        self.items.append(Diagnostic(code, Severity.WARNING, message, self.obj.source_at(path), path))


def selector_text(labels: Mapping[str, str]) -> str:
    """Labels or a selector as Kubernetes prints them: ``app=web,tier=front`` (or ``<none>``)."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def object_error(obj: KubeObject, code: str, message: str, path: str = "") -> Diagnostic:
    """An error about a whole object (or one of its fields)."""
    return Diagnostic(code, Severity.ERROR, message, obj.source_at(path) if path else obj.source, path)


def read_metadata(obj: KubeObject, root: Fields | None = None) -> Fields:
    """Check that ``metadata.name``/``metadata.namespace`` are strings; return the metadata cursor."""
    meta = (root or Fields.of(obj)).map("metadata")
    meta.str("name")
    meta.str("namespace")
    return meta


@functools.lru_cache(maxsize=1024)
def is_port_name(value: str) -> bool:
    """True for an IANA service name: 1-15 lower-case letters, digits, '-', with a letter."""
    return bool(_IANA_SVC_NAME.match(value)) and "--" not in value and bool(_LETTER.search(value))


def port_name(fields: Fields, key: str = "name") -> str:
    """An optional Service or EndpointSlice port name: a DNS label, as Kubernetes requires."""
    value = fields.str(key, "") or ""
    if value and not _DNS_LABEL.match(value):
        raise FieldError(
            f"{fields.path}.{key}",
            f"{value!r} is not a valid port name (a DNS label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)",
            KubeCode.INVALID_VALUE,
        )
    return value


def service_name(name: str, path: str) -> None:
    """Check a Service name: a DNS-1035 label (starts with a letter)."""
    if not _DNS1035_LABEL.match(name):
        raise FieldError(
            path,
            f"{name!r} is not a valid Service name (lower-case letters, digits and '-', "
            "starting with a letter, ending with a letter or digit, at most 63 characters)",
            KubeCode.INVALID_VALUE,
        )


@functools.lru_cache(maxsize=65536)
def _parse_ip(text: str) -> tuple[str, int] | None:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    return str(addr), addr.version


def ip_address(text: str, path: str, family: int | None = None) -> str:
    """The canonical form of an IP address (of ``family`` 4 or 6 when given)."""
    if family != 6:
        try:
            # inet_pton accepts exactly the canonical dotted quad, at C speed.
            socket.inet_pton(socket.AF_INET, text)
            return text
        except OSError:
            pass
    parsed = _parse_ip(text)
    if parsed is None:
        kind = f"IPv{family}" if family else "IPv4 or IPv6"
        raise FieldError(path, f"{text!r} is not an {kind} address", KubeCode.INVALID_VALUE)
    if family is not None and parsed[1] != family:
        raise FieldError(path, f"{text!r} is not an IPv{family} address", KubeCode.INVALID_VALUE)
    return parsed[0]


def dual_stack(addresses: list[str], path: str) -> None:
    """Check that a list of addresses holds at most one IPv4 and one IPv6 address."""
    if len(addresses) > 2 or (len(addresses) == 2
                              and ipaddress.ip_address(addresses[0]).version
                              == ipaddress.ip_address(addresses[1]).version):
        raise FieldError(
            path, f"{addresses} must hold at most one IPv4 and one IPv6 address (dual-stack)",
            KubeCode.INVALID_VALUE,
        )


def transport(fields: Fields, findings: Findings) -> Protocol | None:
    """The ``protocol`` of a port as TCP or UDP; ``None`` (with a warning) for SCTP."""
    value = fields.str("protocol", "TCP", choices=PORT_PROTOCOLS)
    if value == "SCTP":
        findings.warn(
            KubeCode.SCTP_UNSUPPORTED,
            "SCTP is not supported by the datapath; this port is left out",
            f"{fields.path}.protocol",
        )
        return None
    return Protocol.UDP if value == "UDP" else Protocol.TCP


def build(paths: Mapping[str, str], default: str, make: Callable[[], T]) -> T:
    """Construct a model object, turning a :class:`ModelError` into a :class:`FieldError`.

    ``paths`` maps the model attribute named by the error to the input field it came
    from, so the diagnostic points at the user's line rather than at a model attribute.
    """
    try:
        return make()
    except ModelError as exc:
        head = re.split(r"[.\[]", exc.field, maxsplit=1)[0]
        raise FieldError(paths.get(head, default), exc.message, FieldCode.MODEL_REJECTED) from None


# Direct readers for the hot paths: they accept only plain, well-typed data and raise
# Unusual for anything else, so the caller falls back to Fields and its precise errors.


class Unusual(Exception):
    """The direct reader met something it leaves to :class:`Fields`."""


def opt(data: Mapping[str, Any], key: str, kind: type) -> Any:
    """``data[key]`` when absent, null or exactly of type ``kind``; else :class:`Unusual`."""
    value = data.get(key)
    if value is not None and type(value) is not kind:
        raise Unusual
    return value


def plain_str_map(data: Mapping[str, Any], key: str) -> dict[str, str]:
    """A copy of a plain ``str -> str`` dict at ``key`` ({} when absent); else :class:`Unusual`."""
    value = data.get(key)
    if value is None:
        return {}
    if type(value) is not dict:
        raise Unusual
    for k, v in value.items():
        if type(k) is not str or type(v) is not str:
            raise Unusual
    return dict(value)


def dicts(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """A plain list of plain dicts at ``key`` ([] when absent); else :class:`Unusual`."""
    value = data.get(key)
    if value is None:
        return []
    if type(value) is not list:
        raise Unusual
    for item in value:
        if type(item) is not dict:
            raise Unusual
    return value
