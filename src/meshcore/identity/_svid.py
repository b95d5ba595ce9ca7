"""SVIDs (a workload's X.509 certificate and key) and trust bundles, as PEM text."""

from __future__ import annotations

import datetime as dt

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["Svid", "TrustBundle", "new_key", "csr_for", "uri_sans"]


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key (what SVIDs are issued for; it never leaves the node that made it)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """The key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def csr_for(key: ec.EllipticCurvePrivateKey, spiffe_id: str) -> str:
    """A certificate signing request for ``spiffe_id`` (as a URI SAN), signed by ``key``."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
        x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def uri_sans(cert: x509.Certificate) -> list[str]:
    """The URI subject alternative names of ``cert``."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in ext.value.get_values_for_type(x509.UniformResourceIdentifier)]


@attrs.frozen
class TrustBundle:
    """The CA certificates (PEM, concatenated) that peers' SVIDs must chain to, for one trust domain."""

    trust_domain: str
    pem: str

    def certificates(self) -> list[x509.Certificate]:
        """The bundle's certificates."""
        return x509.load_pem_x509_certificates(self.pem.encode())


@attrs.frozen
class Svid:
    """An X.509 SVID: the SPIFFE ID, its certificate chain (leaf first) and private key, as PEM."""

    spiffe_id: str
    chain: str = attrs.field(repr=False)
    key: str = attrs.field(repr=False)
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def from_pem(cls, chain: str, key: str) -> Svid:
        """An SVID from its PEM chain and key; raises ``ValueError`` when the leaf has no single SPIFFE ID."""
        leaf = x509.load_pem_x509_certificates(chain.encode())[0]
        ids = [u for u in uri_sans(leaf) if u.startswith("spiffe://")]
        if len(ids) != 1:
            raise ValueError(f"an SVID has exactly one spiffe:// URI SAN; this certificate has {len(ids)}")
        return cls(ids[0], chain, key, leaf.not_valid_before_utc, leaf.not_valid_after_utc)

    @property
    def lifetime(self) -> dt.timedelta:
        """How long the certificate is valid in all."""
        return self.not_after - self.not_before

    @property
    def renew_at(self) -> dt.datetime:
        """When to replace it: half its lifetime, so a failed renewal has the other half to be retried."""
        return self.not_before + self.lifetime / 2

    def due(self, now: dt.datetime | None = None) -> bool:
        """True from :attr:`renew_at` on."""
        return (now or dt.datetime.now(dt.UTC)) >= self.renew_at
