"""`meshcore ca`: run meshcore's CA for the nodes, and give a node its token."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import click

from .._translate import load, translate
from ..model import DEFAULT_TRUST_DOMAIN
from ._authorize import NodeAuthorizer, NodeTokens, identities_by_node
from ._ca import CaError, CertificateAuthority
from ._server import BUNDLE_FILE, CaServer

__all__ = ["ca_command"]

log = logging.getLogger("meshcore.ca")
DEFAULT_CA_DIR = Path("/var/lib/meshcore/ca")


class _Placement:
    """Node → identities, read from objects files again whenever one of them changes."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self._stamp: tuple[float, ...] | None = None
        self._value: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()

    def __call__(self) -> Mapping[str, frozenset[str]]:
        with self._lock:
            stamp = tuple(p.stat().st_mtime if p.exists() else 0.0 for p in self.paths)
            if stamp != self._stamp:
                objects, _ = load([p for p in self.paths if p.exists()])
                self._value = identities_by_node(translate(objects=objects).snapshot)
                self._stamp = stamp
            return self._value


def _ttl(value: str) -> dt.timedelta:
    units = {"s": 1, "m": 60, "h": 3600}
    if not value or value[-1] not in units or not value[:-1].isdigit() or int(value[:-1]) <= 0:
        raise click.BadParameter(f"{value!r} is not a duration such as 30s, 10m or 1h", param_hint="--ttl")
    return dt.timedelta(seconds=int(value[:-1]) * units[value[-1]])


@click.group("ca")
def ca_command() -> None:
    """meshcore's certificate authority: SVIDs for the nodes' workloads."""


@ca_command.command("serve")
@click.option("--socket", "socket_path", type=click.Path(path_type=Path), required=True,
              help="The Unix socket to serve nodes on.")
@click.option("--dir", "ca_dir", type=click.Path(path_type=Path), default=DEFAULT_CA_DIR, show_default=True,
              help="Where the CA's own key and certificate (made when absent) and the nodes' tokens are kept.")
@click.option("--trust-domain", default=DEFAULT_TRUST_DOMAIN, show_default=True)
@click.option("--cert", "cert_file", type=click.Path(path_type=Path, exists=True),
              help="An existing CA's certificate (PEM, then its issuers), e.g. a cert-manager tls.crt.")
@click.option("--key", "key_file", type=click.Path(path_type=Path, exists=True), help="That CA's private key.")
@click.option("--ttl", default="1h", show_default=True, envvar="MESHCORE_CA_TTL",
              help="How long SVIDs are valid (nodes renew at half) [env MESHCORE_CA_TTL].")
@click.option("--objects", "objects", type=click.Path(path_type=Path), multiple=True, required=True,
              help="Files with the cluster's objects: which node runs which workloads (re-read when changed).")
def serve(socket_path: Path, ca_dir: Path, trust_domain: str, cert_file: Path | None, key_file: Path | None,
          ttl: str, objects: tuple[Path, ...]) -> None:
    """Issue SVIDs to node agents, each only for the identities of the workloads on its node.

    The trust bundle served is the CA's root, or the PEM file DIR/bundle.pem when it exists
    (read on every request): add the next root there before rotating the CA, or leave out a
    root that is no longer trusted; nodes take it with their next renewal.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if (cert_file is None) != (key_file is None):
        raise click.UsageError("--cert and --key go together (an existing CA's certificate and its key)")
    try:
        if cert_file is not None and key_file is not None:
            ca = CertificateAuthority.from_files(cert_file, key_file, trust_domain, ttl=_ttl(ttl))
        else:
            ca = CertificateAuthority.load_or_create(ca_dir, trust_domain, ttl=_ttl(ttl))
    except CaError as exc:
        raise click.ClickException(str(exc)) from None
    server = CaServer(ca, socket_path, NodeTokens(ca_dir / "tokens"), NodeAuthorizer(_Placement(objects)),
                      bundle_file=ca_dir / BUNDLE_FILE).start()
    log.info("CA for %s serving on %s (pid %d)", trust_domain, socket_path, os.getpid())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()


@ca_command.command("token")
@click.argument("node")
@click.option("--dir", "ca_dir", type=click.Path(path_type=Path), default=DEFAULT_CA_DIR, show_default=True)
def token(node: str, ca_dir: Path) -> None:
    """Print NODE's token (made when it has none), for its agent's --ca-token-file."""
    try:
        click.echo(NodeTokens(ca_dir / "tokens").issue(node))
    except CaError as exc:
        raise click.ClickException(str(exc)) from None
