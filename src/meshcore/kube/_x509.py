"""Just enough X.509 and private-key reading to tell a usable TLS Secret from a broken one.

A small DER reader (no dependency beyond the standard library) takes a PEM certificate
chain and a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC, unencrypted) and finds: the
leaf's validity period and DNS names, and whether the key belongs to the leaf (RSA:
same modulus; EC and Ed25519: same public key, when the key file carries it — keys that
do not are accepted as they are, and the proxy checks them when it loads them).
Problems are :class:`CertificateProblem` with a message that never quotes key material.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re

import attrs

_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.S)
_RSA = bytes.fromhex("2a864886f70d010101")
_EC = bytes.fromhex("2a8648ce3d0201")
_ED25519 = bytes.fromhex("2b6570")
_SAN = bytes.fromhex("551d11")
_KEY_KINDS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")


class CertificateProblem(Exception):
    """Why a certificate and key cannot be served (the message names no secret material)."""


@attrs.frozen
class CertificateFacts:
    """What serving needs to know about a certificate chain and its key."""

    not_before: datetime.datetime
    not_after: datetime.datetime
    dns_names: tuple[str, ...]


class _Der:
    """A DER reader over one buffer: :meth:`items` yields (tag, content) of a constructed value."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @staticmethod
    def one(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
        """(tag, content, end) of the value starting at ``pos``."""
        if pos + 2 > len(data):
            raise CertificateProblem("truncated DER data")
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            if not 1 <= count <= 4 or pos + count > len(data):
                raise CertificateProblem("bad DER length")
            length = int.from_bytes(data[pos:pos + count], "big")
            pos += count
        end = pos + length
        if end > len(data):
            raise CertificateProblem("truncated DER data")
        return tag, data[pos:end], end

    @classmethod
    def items(cls, content: bytes) -> list[tuple[int, bytes]]:
        """The values inside a constructed value's content."""
        out, pos = [], 0
        while pos < len(content):
            tag, inner, pos = cls.one(content, pos)
            out.append((tag, inner))
        return out


def _blocks(text: str, what: str) -> list[tuple[str, bytes]]:
    found = []
    for match in _PEM.finditer(text):
        try:
            found.append((match.group(1), base64.b64decode("".join(match.group(2).split()), validate=True)))
        except (binascii.Error, ValueError):
            raise CertificateProblem(f"{what}: a {match.group(1)} block is not valid base64") from None
    return found


def _time(tag: int, raw: bytes) -> datetime.datetime:
    text = raw.decode("ascii", "replace")
    try:
        if tag == 0x17:  # UTCTime: two-digit years, 1950-2049
            parsed = datetime.datetime.strptime(text, "%y%m%d%H%M%SZ")
            if parsed.year >= 2050:
                parsed = parsed.replace(year=parsed.year - 100)
        else:
            parsed = datetime.datetime.strptime(text, "%Y%m%d%H%M%SZ")
    except ValueError:
        raise CertificateProblem("the certificate's validity dates cannot be read") from None
    return parsed.replace(tzinfo=datetime.UTC)


def _public_key(spki: bytes) -> tuple[bytes, bytes]:
    """(algorithm OID, key bytes) of a SubjectPublicKeyInfo (RSA: the modulus)."""
    alg, key = _Der.items(spki)[:2]
    oid = _Der.items(alg[1])[0][1]
    bits = key[1][1:]  # BIT STRING: the first byte counts unused bits
    if oid == _RSA:
        return oid, _unsigned(_Der.items(_Der.one(bits)[1])[0][1])
    return oid, bits


def _unsigned(value: bytes) -> bytes:
    return value.lstrip(b"\0")


def _leaf(der: bytes) -> tuple[CertificateFacts, tuple[bytes, bytes]]:
    tbs = _Der.items(_Der.items(_Der.one(der)[1])[0][1])
    fields = tbs[1:] if tbs[0][0] == 0xA0 else tbs  # the version is optional
    validity = _Der.items(fields[3][1])
    not_before, not_after = _time(*validity[0]), _time(*validity[1])
    names: list[str] = []
    for tag, content in fields[6:]:
        if tag != 0xA3:
            continue
        for _, ext in _Der.items(_Der.items(content)[0][1]):
            parts = _Der.items(ext)
            if parts[0][1] == _SAN:
                names += [v.decode("ascii", "replace").lower() for t, v in _Der.items(_Der.one(parts[-1][1])[1])
                          if t == 0x82]
    return CertificateFacts(not_before, not_after, tuple(names)), _public_key(fields[5][1])


def _key_public(kind: str, der: bytes) -> tuple[bytes, bytes | None]:
    """(algorithm OID, public key bytes or None when the key file does not carry it)."""
    items = _Der.items(_Der.one(der)[1])
    if kind == "RSA PRIVATE KEY":
        return _RSA, _unsigned(items[1][1])
    if kind == "EC PRIVATE KEY":
        public = next((c for t, c in items if t == 0xA1), None)
        return _EC, _Der.one(public)[1][1:] if public is not None else None
    oid = _Der.items(items[1][1])[0][1]
    inner = items[2][1]
    stated = next((c[1:] for t, c in items[3:] if t == 0x81), None)  # OneAsymmetricKey's publicKey
    if oid == _RSA:
        return oid, _unsigned(_Der.items(_Der.one(inner)[1])[1][1])
    if oid == _EC:
        return _EC, stated or _key_public("EC PRIVATE KEY", inner)[1]
    return oid, stated


def _same_point(a: bytes, b: bytes) -> bool:
    """EC points equal, whether written compressed (02/03 x) or uncompressed (04 x y)."""
    if a == b:
        return True
    if len(a) > len(b):
        a, b = b, a
    if not a or not b or a[0] not in (2, 3) or b[0] != 4:
        return False
    half = (len(b) - 1) // 2
    return a[1:] == b[1:1 + half] and (b[-1] & 1) == (a[0] & 1)


def check_pair(chain: str, key: str, now: datetime.datetime) -> CertificateFacts:
    """The facts of a certificate chain whose leaf ``key`` belongs to, valid at ``now``.

    Raises :class:`CertificateProblem` for unparseable PEM, a key that does not match
    the leaf, an encrypted key, or a certificate expired or not yet valid at ``now``.
    """
    certs = [der for kind, der in _blocks(chain, "tls.crt") if kind == "CERTIFICATE"]
    if not certs:
        raise CertificateProblem("tls.crt holds no PEM CERTIFICATE block")
    keys = [(kind, der) for kind, der in _blocks(key, "tls.key") if kind.endswith("PRIVATE KEY")]
    if not keys:
        raise CertificateProblem("tls.key holds no PEM private key block")
    if len(keys) > 1:
        raise CertificateProblem("tls.key holds more than one private key")
    kind, der = keys[0]
    if kind not in _KEY_KINDS:
        raise CertificateProblem(f"tls.key is a {kind}; only unencrypted keys (PRIVATE KEY, RSA PRIVATE KEY, "
                                 "EC PRIVATE KEY) can be served")
    try:
        facts, (cert_alg, cert_public) = _leaf(certs[0])
    except (IndexError, CertificateProblem):
        raise CertificateProblem("tls.crt: the first certificate is not a valid X.509 certificate") from None
    try:
        key_alg, key_public = _key_public(kind, der)
    except (IndexError, CertificateProblem):
        raise CertificateProblem(f"tls.key: the {kind} is not valid") from None
    if key_alg != cert_alg:
        raise CertificateProblem("tls.key does not match the certificate: they use different key types")
    if key_public is not None and not (key_public == cert_public or
                                       (key_alg == _EC and _same_point(key_public, cert_public))):
        raise CertificateProblem("tls.key does not match the certificate in tls.crt (another key pair)")
    if facts.not_after < now:
        raise CertificateProblem(f"the certificate expired on {_stamp(facts.not_after)}")
    if facts.not_before > now:
        raise CertificateProblem(f"the certificate is not valid before {_stamp(facts.not_before)}")
    return facts


def _stamp(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
