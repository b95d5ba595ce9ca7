"""The node's part in mutual TLS: its workloads' SVIDs for the node proxy, and the kernel's steering.

:class:`MutualTls` keeps an SVID for every identity of the node's meshed workloads (from
an :class:`~meshcore.identity.SvidSource`: meshcore's CA, or a SPIFFE Workload API),
hands them and the trust bundle to the node proxy as SDS secrets, and points the kernel's
steering at the proxy's outbound tunnel listener. SVIDs are renewed at half their
lifetime by :meth:`renew`; Envoy takes a changed secret for new TLS sessions and keeps the
open ones, so no connection drops.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from ..compile import EnvoySecret, TunnelPlan
from ..datapath import RefusalLog, TunnelSteering
from ..identity import SvidCache, SvidSource
from ..model import Redacted
from ..proxy import bundle_secret_name, svid_secret_name
from ._facts import NodeFacts

__all__ = ["MutualTls", "own_cgroup"]

log = logging.getLogger("meshcore.agent")


def own_cgroup() -> Path | None:
    """This process's cgroup v2 directory (its children, such as the node Envoy, share it)."""
    try:
        for line in Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines():
            if line.startswith("0::"):
                from ..linux import cgroup2  # noqa: PLC0415 - only when mutual TLS is on

                return cgroup2() / line[3:].lstrip("/")
    except OSError:
        return None
    return None


class MutualTls:
    """SVIDs for the node's identities, as the node proxy's secrets, and the kernel's steering to its tunnel."""

    def __init__(self, facts: NodeFacts, source: SvidSource, steering: TunnelSteering | None = None) -> None:
        self.facts = facts
        self.cache = SvidCache(source)
        self._steering = steering
        self._wanted: tuple[str, ...] = ()
        self._steered = False

    def steering(self) -> TunnelSteering:
        """The kernel's steering (attached on first use), exempting this process's cgroup (the node proxy's)."""
        if self._steering is None:
            self._steering = TunnelSteering(self.facts.name, self.facts.cgroup, self.facts.pin_root,
                                            exempt_cgroup=own_cgroup())
        return self._steering

    def secrets(self, tunnel: TunnelPlan) -> tuple[EnvoySecret, ...]:
        """The SVIDs of ``tunnel``'s identities (fetched or renewed as needed) and the trust bundle."""
        self._wanted = tunnel.spiffe_ids
        self.cache.sync(self._wanted)
        return self.current()

    def current(self) -> tuple[EnvoySecret, ...]:
        """The SVIDs held now and the bundle, as SDS secrets."""
        out = [EnvoySecret(svid_secret_name(s.spiffe_id), s.chain, Redacted(s.key))
               for _, s in sorted(self.cache.svids.items())]
        bundle = self.cache.bundle
        if bundle is not None:
            # Named by content: a changed bundle changes the tunnels' clusters and chains, so Envoy
            # replaces them and no new stream rides a session the old bundle admitted.
            digest = hashlib.sha256(bundle.pem.encode()).hexdigest()[:12]
            out.append(EnvoySecret(f"{bundle_secret_name(bundle.trust_domain)}@{digest}", "", Redacted(""),
                                   trusted_ca=bundle.pem))
        return tuple(out)

    def renew(self) -> bool:
        """Renew the SVIDs that are due; True when any changed (the proxy's secrets must be served again)."""
        return bool(self._wanted) and self.cache.sync(self._wanted)

    def steer(self, tunnel: TunnelPlan | None, exempt: Sequence[str] = ()) -> str:
        """Point the kernel at the proxy for ``tunnel``'s destinations, never steering the cgroups ``exempt``
        (sidecars, which tunnel their own); a one-line summary."""
        steering = self.steering()
        steering.exempt(exempt)
        summary = steering.apply(tunnel, self.facts.ipv4, self.facts.ipv6).summary()
        self._steered = True
        return summary

    def refusal_log(self) -> RefusalLog | None:
        """A reader of the calls the kernel refused for mutual TLS, once the steering is attached (else None)."""
        return self.steering().refusal_log() if self._steered else None

    def close(self) -> None:
        """Release the steering's handles (its pins keep steering)."""
        if self._steering is not None:
            self._steering.close()


def source_from_files(socket_path: Path, node: str, token_file: Path) -> SvidSource:
    """meshcore's CA at ``socket_path``, as ``node`` with the token read from ``token_file``."""
    from ..identity import CaClient  # noqa: PLC0415

    token = token_file.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"{token_file} is empty: it must hold the node's CA token (meshcore ca token {node})")
    return CaClient(socket_path, node, token)


