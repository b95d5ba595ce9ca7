"""Server certificates and where the node proxy terminates TLS with them.

A :class:`Certificate` is a certificate chain with its private key, read from a
Kubernetes ``kubernetes.io/tls`` Secret; the key is held as :class:`Redacted`, which
never shows its text (``repr``, ``str`` and the plain-data form give a placeholder with
a digest, so output changes when the key changes but never reveals it). A
:class:`TlsTermination` says that connections to a service port whose TLS server name
(SNI) is one of ``hostnames`` are terminated by the node proxy with ``certificates``;
a port with terminations never serves those names in clear text.
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs

from ._errors import ModelError
from ._source import UNKNOWN, Source
from ._validate import dns_label, hostname, port, to_tuple
from .service import ServiceRef


class Redacted:
    """Secret text (a private key): compared and hashed by value, shown only as a digest placeholder."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError("Redacted holds text")
        self._text = text

    def reveal(self) -> str:
        """The secret text itself, for the one consumer that must send it (the node proxy's SDS)."""
        return self._text

    @property
    def placeholder(self) -> str:
        """``<redacted sha256:…>``: what every output shows instead of the text."""
        return f"<redacted sha256:{hashlib.sha256(self._text.encode()).hexdigest()[:16]}>"

    def __repr__(self) -> str:
        return self.placeholder

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Redacted) and other._text == self._text

    def __lt__(self, other: Redacted) -> bool:
        return self._text < other._text

    def __hash__(self) -> int:
        return hash(self._text)

    def __bool__(self) -> bool:
        return bool(self._text)

    def __reduce__(self) -> Any:
        return (Redacted, (self._text,))


def _redacted(value: str | Redacted) -> Redacted:
    return value if isinstance(value, Redacted) else Redacted(value)


@attrs.frozen(order=True)
class CertificateRef:
    """A certificate by the namespace and name of the Secret it came from."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def _pem(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    text = value.reveal() if isinstance(value, Redacted) else value
    if not isinstance(text, str) or "-----BEGIN " not in text:
        raise ModelError(attribute.name, "must be PEM text (-----BEGIN ...)")


@attrs.frozen(order=True)
class Certificate:
    """A server certificate chain (PEM, leaf first) and its private key, from a Secret.

    ``not_after`` is the leaf's expiry (``YYYY-MM-DDTHH:MM:SSZ``) and ``dns_names`` its
    subject alternative names, as read when the Secret was translated.
    """

    namespace: str = attrs.field(validator=dns_label)
    name: str
    chain: str = attrs.field(validator=_pem)
    private_key: Redacted = attrs.field(converter=_redacted, validator=_pem)
    not_after: str = ""
    dns_names: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    source: Source = attrs.field(default=UNKNOWN, eq=False, order=False)

    @property
    def ref(self) -> CertificateRef:
        """This certificate's reference."""
        return CertificateRef(self.namespace, self.name)


def _sorted_refs(value: Any) -> tuple[CertificateRef, ...]:
    return tuple(dict.fromkeys(value))


def _some(_: Any, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    if not value:
        raise ModelError(attribute.name, "a TLS termination needs at least one certificate")


@attrs.frozen(order=True)
class TlsTermination:
    """The node proxy terminates TLS on ``port`` of ``service`` for these server names (none: any name).

    ``certificates`` are offered in order (one per key type, e.g. RSA and ECDSA); the
    decrypted traffic is handled by the port's route tables as on a plain port.
    """

    service: ServiceRef
    port: int = attrs.field(validator=port)
    hostnames: tuple[str, ...] = attrs.field(default=(), converter=to_tuple, validator=hostname)
    certificates: tuple[CertificateRef, ...] = attrs.field(default=(), converter=_sorted_refs, validator=_some)
    source: Source = attrs.field(default=UNKNOWN, eq=False, order=False)

    @property
    def key(self) -> tuple[ServiceRef, int, tuple[str, ...]]:
        """What one termination is unique by: service, port and server names."""
        return (self.service, self.port, self.hostnames)
