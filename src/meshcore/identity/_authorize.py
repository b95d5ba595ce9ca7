"""Which identities a node may obtain SVIDs for: those of the workloads placed on it.

A node agent is trusted with the keys of the workloads it runs, and no others: a node
that is taken over cannot impersonate a workload of another node. Nodes authenticate to
the CA with a token of their own (:class:`NodeTokens`); on Kubernetes a projected service
account token of the node's agent, checked with a TokenReview, would take its place.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..model import Snapshot
from ._ca import CaError

__all__ = ["NodeTokens", "identities_by_node"]

_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def identities_by_node(snapshot: Snapshot) -> dict[str, frozenset[str]]:
    """Node name → the SPIFFE IDs of the meshed workloads placed on it."""
    out: dict[str, set[str]] = {}
    for w in snapshot.workloads:
        if w.node and w.proxy_mode.meshed:
            out.setdefault(w.node, set()).add(w.identity.spiffe_id)
    return {node: frozenset(ids) for node, ids in out.items()}


class NodeAuthorizer:
    """Decides whether ``node`` may have an SVID for ``spiffe_id``, from the current placement."""

    def __init__(self, placement: Callable[[], Mapping[str, Iterable[str]]]) -> None:
        self._placement = placement

    def check(self, node: str, spiffe_id: str) -> None:
        """Raise :class:`CaError` unless a meshed workload of ``spiffe_id`` runs on ``node``."""
        allowed = set(self._placement().get(node, ()))
        if spiffe_id not in allowed:
            raise CaError(f"node {node} runs no workload with identity {spiffe_id}; "
                          "a node gets certificates only for the identities of its own workloads")


class NodeTokens:
    """One secret token per node, kept as ``<directory>/<node>.token`` (mode 0600)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, node: str) -> Path:
        if not _NODE_NAME.match(node):
            raise CaError(f"{node!r} is not a node name (lower-case letters, digits, '-', '.')")
        return self.directory / f"{node}.token"

    def issue(self, node: str) -> str:
        """The node's token, made when it has none."""
        path = self._path(node)
        try:
            return path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            pass
        self.directory.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
        return token

    def verify(self, node: str, token: str) -> None:
        """Raise :class:`CaError` unless ``token`` is ``node``'s."""
        try:
            expected = self._path(node).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise CaError(f"node {node} is not known to this CA (no token was issued for it)") from None
        if not hmac.compare_digest(expected.encode(), token.encode()):
            raise CaError(f"the token presented for node {node} is not its token")
