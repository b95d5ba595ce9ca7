"""meshcore's CA: SVIDs carry exactly the asked SPIFFE ID, nodes get only their own workloads' identities."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshcore.identity import (
    CaClient,
    CaError,
    CaServer,
    CertificateAuthority,
    LocalSource,
    NodeAuthorizer,
    NodeTokens,
    SvidCache,
)
from meshcore.identity._svid import csr_for, new_key, uri_sans

WEB = "spiffe://cluster.local/ns/default/sa/web"
DB = "spiffe://cluster.local/ns/default/sa/db"
PLACEMENT = {"node-1": [WEB], "node-2": [DB]}


def _leaf(chain: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(chain.encode())[0]


def test_an_svid_names_the_identity_chains_to_the_bundle_and_expires_within_the_ttl() -> None:
    ca = CertificateAuthority.generate("cluster.local", ttl=dt.timedelta(minutes=10))
    key = new_key()
    leaf = _leaf(ca.sign(csr_for(key, WEB), WEB))
    assert uri_sans(leaf) == [WEB]
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    root = ca.bundle.certificates()[0]
    leaf.verify_directly_issued_by(root)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(minutes=11)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize(("asked", "why"), [
    ("spiffe://other.domain/ns/default/sa/web", "not in trust domain 'cluster.local'"),
    ("spiffe://cluster.local/web", "is not of the form"),
])
def test_identities_outside_the_trust_domain_or_malformed_are_refused(asked: str, why: str) -> None:
    ca = CertificateAuthority.generate("cluster.local")
    with pytest.raises(CaError, match=why):
        ca.sign(csr_for(new_key(), asked), asked)


def test_a_request_for_another_identity_than_it_names_is_refused() -> None:
    ca = CertificateAuthority.generate("cluster.local")
    with pytest.raises(CaError, match=f"asks for {DB}, not {WEB}"):
        ca.sign(csr_for(new_key(), DB), WEB)


def test_an_existing_ca_from_files_issues_as_an_intermediate(tmp_path: Path) -> None:
    root = CertificateAuthority.generate("cluster.local")
    inter_key = ec.generate_private_key(ec.SECP256R1())
    # The root signs a CA certificate for the intermediate (as cert-manager's CA issuer would).
    csr = x509.load_pem_x509_csr(csr_for(inter_key, "spiffe://cluster.local").encode())
    inter = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(root.chain[0].subject)
             .public_key(csr.public_key()).serial_number(1)
             .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
             .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
             .sign(root.key, root.chain[0].signature_hash_algorithm))  # type: ignore[arg-type]
    (tmp_path / "tls.crt").write_bytes(inter.public_bytes(serialization.Encoding.PEM)
                                       + root.chain[0].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(inter_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ca = CertificateAuthority.from_files(tmp_path / "tls.crt", tmp_path / "tls.key", "cluster.local")
    chain = x509.load_pem_x509_certificates(ca.sign(csr_for(new_key(), WEB), WEB).encode())
    assert len(chain) == 2  # the leaf, then the intermediate: peers trust the root only
    chain[0].verify_directly_issued_by(inter)
    assert ca.bundle.certificates()[0] == root.chain[0]


def test_ca_files_that_do_not_belong_together_are_an_error_naming_the_file(tmp_path: Path) -> None:
    one, two = CertificateAuthority.generate("cluster.local"), CertificateAuthority.generate("cluster.local")
    (tmp_path / "ca.crt").write_bytes(one.chain[0].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca.key").write_bytes(two.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(CaError, match=r"ca.key is not the key of the first certificate in .*ca.crt"):
        CertificateAuthority.from_files(tmp_path / "ca.crt", tmp_path / "ca.key", "cluster.local")


def test_the_ca_kept_in_a_directory_is_the_same_after_a_restart(tmp_path: Path) -> None:
    first = CertificateAuthority.load_or_create(tmp_path, "cluster.local")
    again = CertificateAuthority.load_or_create(tmp_path, "cluster.local")
    assert first.bundle == again.bundle
    assert (tmp_path / "ca.key").stat().st_mode & 0o077 == 0


def _serve(tmp_path: Path) -> tuple[CaServer, NodeTokens]:
    tokens = NodeTokens(tmp_path / "tokens")
    server = CaServer(CertificateAuthority.generate("cluster.local"), tmp_path / "ca.sock", tokens,
                      NodeAuthorizer(lambda: PLACEMENT)).start()
    return server, tokens


def test_a_node_gets_svids_for_its_own_workloads_over_the_socket(tmp_path: Path) -> None:
    server, tokens = _serve(tmp_path)
    try:
        client = CaClient(server.path, "node-1", tokens.issue("node-1"))
        svid, bundle = client.fetch(WEB)
        assert svid.spiffe_id == WEB
        _leaf(svid.chain).verify_directly_issued_by(bundle.certificates()[0])
        assert client.bundle() == bundle
    finally:
        server.stop()


def test_a_node_asking_for_a_foreign_identity_or_with_a_wrong_token_is_refused(tmp_path: Path) -> None:
    server, tokens = _serve(tmp_path)
    try:
        with pytest.raises(CaError, match=f"node node-1 runs no workload with identity {DB}"):
            CaClient(server.path, "node-1", tokens.issue("node-1")).fetch(DB)
        tokens.issue("node-2")
        with pytest.raises(CaError, match="the token presented for node node-2 is not its token"):
            CaClient(server.path, "node-2", tokens.issue("node-1")).fetch(DB)
        with pytest.raises(CaError, match="node node-3 is not known to this CA"):
            CaClient(server.path, "node-3", "x").fetch(DB)
    finally:
        server.stop()


def test_the_cache_renews_at_half_life_keeps_a_valid_svid_when_renewal_fails_and_drops_unneeded() -> None:
    ca = CertificateAuthority.generate("cluster.local", ttl=dt.timedelta(minutes=10))
    source = LocalSource(ca, "node-1", NodeAuthorizer(lambda: PLACEMENT))
    cache = SvidCache(source)
    assert cache.sync([WEB, DB])
    assert set(cache.svids) == {WEB} and "runs no workload" in cache.refused[DB]
    first = cache.svids[WEB]
    assert not cache.sync([WEB])  # not due yet: nothing fetched
    later = first.renew_at + dt.timedelta(seconds=1)
    assert cache.sync([WEB], now=later)
    assert cache.svids[WEB].chain != first.chain
    renewed = cache.svids[WEB]
    source.authorizer = NodeAuthorizer(lambda: {})  # the CA now refuses: the held SVID stays
    assert not cache.sync([WEB], now=renewed.renew_at + dt.timedelta(seconds=1))
    assert cache.svids[WEB] is renewed
    assert cache.sync([])
    assert cache.svids == {}
