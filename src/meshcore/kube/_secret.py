"""Secret → a server certificate (or why it cannot be one), never showing the key.

A Secret holding ``tls.crt`` and ``tls.key`` (type ``kubernetes.io/tls``, or any type
carrying those keys; Istio's generic ``cert``/``key`` names too) in ``data`` (base64)
or ``stringData`` is a certificate when the chain parses, the key belongs to its leaf
and the leaf is valid at translation time (see :mod:`._x509`). Other Secrets, and a
Secret whose content is not usable, are kept only as the reason they cannot serve, so
an adapter referring to one can say what is wrong. Messages never quote Secret data.
ConfigMaps with a ``ca.crt`` are CA bundles (for validating backends' certificates).
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Mapping
from typing import Any

import attrs

from ..model import Certificate, ModelError
from ._objects import KubeObject
from ._x509 import CertificateProblem, check_pair

TLS_TYPE = "kubernetes.io/tls"
#: (certificate key, private key key) pairs a Secret may hold its certificate under.
_KEY_NAMES = (("tls.crt", "tls.key"), ("cert", "key"))


@attrs.frozen
class TlsSecret:
    """A Secret as a certificate source: the certificate, or ``problem`` saying why there is none."""

    namespace: str
    name: str
    certificate: Certificate | None
    problem: str = ""


def _entries(obj: KubeObject) -> dict[str, str]:
    """The Secret's entries as text (``stringData`` wins, as the API server merges it); undecodable ones are empty."""
    out: dict[str, str] = {}
    data = obj.body.get("data")
    if isinstance(data, Mapping):
        for key, value in data.items():
            try:
                out[str(key)] = base64.b64decode(str(value), validate=True).decode()
            except (binascii.Error, ValueError, UnicodeDecodeError):
                out[str(key)] = ""
    strings = obj.body.get("stringData")
    if isinstance(strings, Mapping):
        out.update({str(k): str(v) for k, v in strings.items()})
    return out


def read_tls_secret(obj: KubeObject, now: datetime.datetime | None = None) -> TlsSecret:
    """The certificate a Secret holds, or why it holds none usable at ``now`` (default: the current time)."""
    kind = obj.body.get("type")
    entries = _entries(obj)
    names = next(((c, k) for c, k in _KEY_NAMES if c in entries and k in entries), None)
    if names is None:
        what = f"of type {kind}" if isinstance(kind, str) and kind else "without a type"
        return TlsSecret(obj.namespace, obj.name, None, f"Secret {obj.namespace}/{obj.name} {what} has no "
                         "tls.crt and tls.key entries")
    chain, key = entries[names[0]], entries[names[1]]
    if not chain or not key:
        return TlsSecret(obj.namespace, obj.name, None, f"Secret {obj.namespace}/{obj.name}: {names[0]} or "
                         f"{names[1]} is empty or not base64-encoded text")
    try:
        facts = check_pair(chain, key, now or datetime.datetime.now(datetime.UTC))
        certificate = Certificate(obj.namespace, obj.name, chain, key,
                                  facts.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"), facts.dns_names, obj.source)
    except (CertificateProblem, ModelError) as exc:
        return TlsSecret(obj.namespace, obj.name, None, f"Secret {obj.namespace}/{obj.name}: {exc}")
    return TlsSecret(obj.namespace, obj.name, certificate)


def read_ca_bundle(obj: KubeObject) -> tuple[tuple[str, str], str] | None:
    """((namespace, name), PEM) of a ConfigMap's ``ca.crt``, or ``None`` when it has none."""
    data: Any = obj.body.get("data")
    value = data.get("ca.crt") if isinstance(data, Mapping) else None
    if not isinstance(value, str) or "-----BEGIN CERTIFICATE-----" not in value:
        return None
    return (obj.namespace, obj.name), value
