"""Request authentication: the JSON Web Tokens the selected workloads validate.

A request carrying a token is checked against the rules (signature, issuer, audiences,
expiry) and refused with 401 when the token is invalid; a request without a token is
accepted without a request principal, so authorization policies decide about it (e.g.
``request_principals=("*",)`` requires one). A verified token's principal is
``<iss>/<sub>``.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from ._errors import ModelError
from ._labels import Labels
from ._source import UNKNOWN, Source
from ._validate import dns_label, to_tuple
from .policy import WorkloadSelector


def _non_empty(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise ModelError(attribute.name, "must not be empty")


def _non_empty_items(_: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for i, item in enumerate(value):
        if not item:
            raise ModelError(f"{attribute.name}[{i}]", "must not be empty")


def _header_name(_: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if not value or any(c.isspace() or c in ':"(),/;<=>?@[\\]{}' for c in value):
        raise ModelError(attribute.name, f"{value!r} is not an HTTP header name")


#: The key types a JSON Web Key Set may hold, with the members each needs (RFC 7518, 8037).
_KEY_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "oct": ("k",), "OKP": ("crv", "x")}


def canonical_jwks(text: str) -> str:
    """A JSON Web Key Set as canonical JSON; raises ``ValueError`` saying what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('must be a JSON object with a "keys" list (a JSON Web Key Set)')
    if not data["keys"]:
        raise ValueError('has no keys (the "keys" list is empty)')
    for i, key in enumerate(data["keys"]):
        if not isinstance(key, dict) or key.get("kty") not in _KEY_MEMBERS:
            raise ValueError(f'keys[{i}] must be a JSON object whose "kty" is one of {", ".join(_KEY_MEMBERS)}')
        missing = [m for m in _KEY_MEMBERS[key["kty"]] if not isinstance(key.get(m), str) or not key[m]]
        if missing:
            raise ValueError(f'keys[{i}] ({key["kty"]}) needs {", ".join(missing)} (base64url strings)')
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _lower(value: str) -> str:
    return value.lower()


def _jwks(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return canonical_jwks(value)
    except ValueError as exc:
        raise ModelError("jwks", str(exc)) from None


@attrs.frozen(order=True)
class JwtHeader:
    """A request header a token is read from; ``prefix`` (e.g. ``Bearer ``) precedes it."""

    name: str = attrs.field(converter=_lower, validator=_header_name)
    prefix: str = ""


@attrs.frozen(order=True)
class ClaimToHeader:
    """Copy a verified token's claim (dotted for nested claims) into a request header."""

    header: str = attrs.field(converter=_lower, validator=_header_name)
    claim: str = attrs.field(validator=_non_empty)


@attrs.frozen(order=True)
class JwtRule:
    """How tokens of one issuer are found and validated.

    The keys are ``jwks`` (an inline JSON Web Key Set, kept as canonical JSON) or
    ``jwks_uri``, not both; with neither they would be discovered from the issuer.
    Without ``from_headers``/``from_params``/``from_cookies`` the token is read from
    ``Authorization: Bearer`` and the ``access_token`` query parameter. Empty
    ``audiences`` accept any audience.
    """

    issuer: str = attrs.field(validator=_non_empty)
    audiences: tuple[str, ...] = attrs.field(default=(), converter=to_tuple, validator=_non_empty_items)
    jwks: str | None = attrs.field(default=None, converter=_jwks)
    jwks_uri: str | None = None
    from_headers: tuple[JwtHeader, ...] = attrs.field(default=(), converter=to_tuple)
    from_params: tuple[str, ...] = attrs.field(default=(), converter=to_tuple, validator=_non_empty_items)
    from_cookies: tuple[str, ...] = attrs.field(default=(), converter=to_tuple, validator=_non_empty_items)
    forward_original_token: bool = False
    output_payload_to_header: str | None = attrs.field(default=None, validator=_header_name)
    output_claim_to_headers: tuple[ClaimToHeader, ...] = attrs.field(default=(), converter=to_tuple)
    timeout_ms: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.jwks is not None and self.jwks_uri is not None:
            raise ModelError("jwks", "jwks and jwks_uri are mutually exclusive (give the keys inline or by URI)")
        if self.jwks_uri is not None and not self.jwks_uri.startswith(("http://", "https://")):
            raise ModelError("jwks_uri", f"{self.jwks_uri!r} is not an http:// or https:// URI")
        if self.timeout_ms is not None and self.timeout_ms <= 0:
            raise ModelError("timeout_ms", f"{self.timeout_ms} is not a positive number of milliseconds")


@attrs.frozen(order=True)
class RequestAuthentication:
    """The JWT rules the workloads of ``selector`` validate requests with."""

    name: str = attrs.field(validator=_non_empty)
    namespace: str = attrs.field(validator=dns_label)
    selector: WorkloadSelector
    jwt_rules: tuple[JwtRule, ...] = attrs.field(default=(), converter=to_tuple)
    source: Source = attrs.field(default=UNKNOWN, eq=False, order=False)

    def selects(self, namespace: str, labels: Labels) -> bool:
        """True when a workload of ``namespace`` with ``labels`` is selected."""
        return self.selector.selects(namespace, labels)
