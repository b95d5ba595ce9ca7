"""What one build of the node proxy's plan shares across its ports: clusters, checks, secrets, client groups."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import attrs

from ...model import Diagnostic, RouteTable, Snapshot, Source, Workload
from .checks import Checks
from .clients import ClientGroups
from .clusters import Clusters
from .egress import EgressIndex
from .plan import EnvoySecret, Origin, ServerTls, secret_name
from .ports import ProxiedPort
from .rbac import RbacIndex


def first_known(*sources: Source) -> Source:
    """The first of ``sources`` that names a place (a route's own, else its table's)."""
    return next((s for s in sources if s != Source()), Source())


@attrs.define
class BuildContext:
    """The state of one build; every part adds its warnings to the one ``warnings`` list, in build order."""

    snapshot: Snapshot
    node: str
    warnings: list[Diagnostic]
    clusters: Clusters
    checks: Checks
    client_groups: ClientGroups = attrs.field(factory=dict)
    secrets: dict[str, EnvoySecret] = attrs.field(factory=dict)

    @classmethod
    def of(cls, snapshot: Snapshot, node: str = "") -> BuildContext:
        """An empty build for ``snapshot`` on ``node`` (empty: any node)."""
        warnings: list[Diagnostic] = []
        rbac_index = RbacIndex(snapshot)
        clusters = Clusters(snapshot, rbac_index.workloads, warnings)
        checks = Checks(snapshot, clusters, rbac_index, EgressIndex(snapshot), warnings)
        return cls(snapshot, node, warnings, clusters, checks)

    @functools.cached_property
    def local_clients(self) -> tuple[Workload, ...]:
        """The workloads that connect to this node's proxy (all of them when the node is not known)."""
        return tuple(w for w in self.snapshot.workloads if not self.node or not w.node or w.node == self.node)

    def server_tls(self, item: ProxiedPort) -> tuple[ServerTls, ...]:
        """The port's TLS terminations, each server name taken by the first that names it (the catch-all last)."""
        out: list[ServerTls] = []
        taken: set[str] = set()
        for term in self.snapshot.terminations(item.service.ref, item.port.port):
            names = tuple(n for n in term.hostnames if n not in taken)
            if term.hostnames and not names or not term.hostnames and "" in taken:
                continue
            taken.update(names or ("",))
            secrets = []
            for ref in term.certificates:
                certificate = self.snapshot.certificate(ref)
                if certificate is None:
                    continue  # the snapshot refuses terminations without their certificates
                name = secret_name(ref.namespace, ref.name)
                origin = Origin(f"certificate of Secret {ref} for {item.service.ref}:{item.port.port}",
                                first_known(term.source, certificate.source))
                known = self.secrets.get(name)
                self.secrets[name] = EnvoySecret(name, certificate.chain, certificate.private_key,
                                                 (*(known.origins if known else ()), origin))
                secrets.append(name)
            out.append(ServerTls(names, tuple(secrets)))
        return tuple(out)

    def listener_origins(self, item: ProxiedPort, tables: Sequence[RouteTable]) -> tuple[Origin, ...]:
        """Where a port's listener comes from: the service port (with why it is proxied) and its route tables."""
        own = Origin(f"service {item.service.ref} port {item.port.port} ({item.decision.reason})", item.service.source)
        return (own, *(Origin(f"route table of {t.service}:{t.port}", t.source) for t in tables))

