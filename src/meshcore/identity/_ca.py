"""meshcore's certificate authority: issues short-lived SVIDs with SPIFFE URI SANs.

The CA key and certificate are either made here (a self-signed root for the trust
domain, kept in a directory) or read from files an existing CA wrote (e.g. a cert-manager
Issuer's Secret mounted as ``tls.crt``/``tls.key``): then meshcore is an intermediate of
that CA and the bundle holds the given chain's root. Issued certificates carry exactly
the requested SPIFFE ID as their only URI SAN, are valid for client and server
authentication, and never for more than ``ttl``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..model import Identity, ModelError
from ._svid import TrustBundle, uri_sans

__all__ = ["CaError", "CertificateAuthority", "DEFAULT_SVID_TTL"]

#: How long an SVID is valid unless configured otherwise (agents renew at half of it).
DEFAULT_SVID_TTL = dt.timedelta(hours=1)
#: Clocks of nodes may differ by this much: certificates start being valid this early.
_BACKDATE = dt.timedelta(minutes=1)
CERT_FILE = "ca.crt"
KEY_FILE = "ca.key"


class CaError(Exception):
    """A request the CA refuses, or CA files it cannot use; the message says which and why."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@attrs.frozen
class CertificateAuthority:
    """A signing key, its certificate (chain), and the trust domain it issues SVIDs for."""

    trust_domain: str
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = attrs.field(repr=False)
    chain: tuple[x509.Certificate, ...]
    ttl: dt.timedelta = DEFAULT_SVID_TTL

    @classmethod
    def generate(cls, trust_domain: str, *, ttl: dt.timedelta = DEFAULT_SVID_TTL,
                 valid_for: dt.timedelta = dt.timedelta(days=365)) -> CertificateAuthority:
        """A new self-signed root for ``trust_domain`` (its SPIFFE ID ``spiffe://<td>`` as URI SAN)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshcore"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"meshcore CA {trust_domain}")])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - _BACKDATE)
                .not_valid_after(now + valid_for)
                .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                               critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(trust_domain, key, (cert,), ttl)

    @classmethod
    def from_files(cls, cert_file: Path, key_file: Path, trust_domain: str, *,
                   ttl: dt.timedelta = DEFAULT_SVID_TTL) -> CertificateAuthority:
        """A CA from PEM files: ``cert_file`` its certificate (then its issuers), ``key_file`` its key."""
        try:
            chain = tuple(x509.load_pem_x509_certificates(Path(cert_file).read_bytes()))
        except (OSError, ValueError) as exc:
            raise CaError(f"{cert_file}: cannot read a PEM certificate chain ({exc})") from None
        try:
            key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise CaError(f"{key_file}: cannot read an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise CaError(f"{key_file}: the CA key must be an EC or RSA key, not {type(key).__name__}")
        if key.public_key().public_numbers() != chain[0].public_key().public_numbers():  # type: ignore[union-attr]
            raise CaError(f"{key_file} is not the key of the first certificate in {cert_file}")
        try:
            if not chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                raise CaError(f"{cert_file}: the first certificate is not a CA (basicConstraints CA:FALSE)")
        except x509.ExtensionNotFound:
            raise CaError(f"{cert_file}: the first certificate has no basicConstraints; a CA needs CA:TRUE") from None
        return cls(trust_domain, key, chain, ttl)

    @classmethod
    def load_or_create(cls, directory: Path, trust_domain: str, *,
                       ttl: dt.timedelta = DEFAULT_SVID_TTL) -> CertificateAuthority:
        """The CA kept in ``directory`` (``ca.crt``, ``ca.key``), made there first when absent."""
        directory = Path(directory)
        if (directory / CERT_FILE).exists():
            return cls.from_files(directory / CERT_FILE, directory / KEY_FILE, trust_domain, ttl=ttl)
        ca = cls.generate(trust_domain, ttl=ttl)
        directory.mkdir(parents=True, exist_ok=True)
        key = directory / KEY_FILE
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        (directory / CERT_FILE).write_bytes(ca.chain[0].public_bytes(serialization.Encoding.PEM))
        return ca

    @property
    def bundle(self) -> TrustBundle:
        """The trust bundle: the last certificate of the chain (the root)."""
        return TrustBundle(self.trust_domain, self.chain[-1].public_bytes(serialization.Encoding.PEM).decode())

    def check_identity(self, spiffe_id: str) -> Identity:
        """The workload identity ``spiffe_id`` names; raises :class:`CaError` when it is not one of this trust domain."""
        try:
            identity = Identity.from_spiffe(spiffe_id)
        except ModelError as exc:
            raise CaError(str(exc)) from None
        if identity.trust_domain != self.trust_domain:
            raise CaError(f"{spiffe_id} is not in trust domain {self.trust_domain!r}")
        return identity

    def sign(self, csr_pem: str, spiffe_id: str, *, ttl: dt.timedelta | None = None) -> str:
        """Sign ``csr_pem`` as an SVID for ``spiffe_id``; returns the chain (leaf first) as PEM.

        The request must be signed by its key and ask for exactly ``spiffe_id``: the
        certificate carries that ID only, whatever else the request says.
        """
        self.check_identity(spiffe_id)
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as exc:
            raise CaError(f"the certificate signing request is not PEM ({exc})") from None
        if not csr.is_signature_valid:
            raise CaError("the certificate signing request's signature does not verify")
        asked = uri_sans(csr)  # type: ignore[arg-type]
        if asked and asked != [spiffe_id]:
            raise CaError(f"the certificate signing request asks for {', '.join(asked)}, not {spiffe_id}")
        now = _now()
        lifetime = min(ttl or self.ttl, self.ttl)
        issuer = self.chain[0]
        not_after = min(now + lifetime, issuer.not_valid_after_utc)
        cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(issuer.subject)
                .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - _BACKDATE).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                # No subject: the identity is in the SAN, which must then be critical (RFC 5280 4.2.1.6).
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256()))
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in (cert, *self.chain[:-1]))
