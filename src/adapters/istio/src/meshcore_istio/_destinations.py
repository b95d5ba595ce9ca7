"""Route destinations: host, subset and port resolved to model :class:`~meshcore.model.Destination`.

A destination's host is expanded against the VirtualService's namespace and looked up
among the services visible from it; its subset is looked up in the DestinationRule the
namespace would use for that host. A host or subset that does not resolve keeps its
share of the weight: those requests are answered with 503 (as Envoy answers for a
missing cluster) and connections are refused.
"""

from __future__ import annotations

import attrs

from meshcore.kube import FieldError, Fields, Inventory, KubeObject, Report
from meshcore.model import Destination, HeaderModifier, Service

from ._codes import IstioCode
from ._common import fqdn
from ._destinationrule import DestRule, find_rule
from ._hosts import HostIndex


@attrs.frozen
class Target:
    """A destination as written, with the service it resolved to (``None`` when unresolved)."""

    host: str
    subset: str
    port: int | None
    weight: int
    service: Service | None
    subset_labels: tuple[tuple[str, str], ...]
    path: str
    #: The destination's own ``headers`` changes (None: none).
    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None

    def resolve(self, table_port: int) -> Destination | None:
        """The model destination for a route table on ``table_port`` (``None`` when unresolved)."""
        if self.service is None:
            return None
        port = self.port
        if port is None:
            if len(self.service.ports) == 1:
                port = self.service.ports[0].port
            else:
                port = table_port
        if self.service.port(port) is None and self.service.port(port, "UDP") is None:
            return None
        return Destination(self.service.ref, port, self.weight, self.subset, self.subset_labels,
                           self.request_headers, self.response_headers)


class Resolver:
    """Resolves destinations of one object's namespace, reporting each problem once."""

    def __init__(self, obj: KubeObject, hosts: HostIndex, rules: list[DestRule], inventory: Inventory,
                 report: Report) -> None:
        self.obj = obj
        self.hosts = hosts
        self.rules = rules
        self.inventory = inventory
        self.report = report

    def target(self, dest: Fields, weight: int, mirror: bool = False) -> Target:
        """Read a ``Destination`` message and resolve its host and subset (``mirror``: it only receives copies)."""
        raw = dest.req_str("host")
        if not raw:
            raise FieldError(f"{dest.path}.host", "must not be empty", IstioCode.INVALID_VALUE)
        if "*" in raw:
            raise FieldError(f"{dest.path}.host", f"{raw!r}: a destination host cannot be a wildcard",
                             IstioCode.INVALID_VALUE)
        host = fqdn(raw, self.obj.namespace)
        subset = dest.str("subset", "") or ""
        port = dest.map("port").port("number") if dest.has("port") else None
        found = self.hosts.lookup(host, self.obj.namespace)
        service = found[0] if found else None
        labels: tuple[tuple[str, str], ...] = ()
        outcome = "no copies are sent there" if mirror else "its share of traffic is answered with 503"
        if service is None:
            why = " (it exists but is not exported to this namespace)" if self.hosts.exists(host) else ""
            self.report.warn(self.obj, IstioCode.HOST_NOT_FOUND, f"destination host {host} matches no Service or "
                             f"ServiceEntry{why}; {outcome}", f"{dest.path}.host")
        elif port is not None and service.port(port) is None and service.port(port, "UDP") is None:
            self.report.warn(self.obj, IstioCode.HOST_NOT_FOUND, f"service {service.ref} has no port {port}; {outcome}",
                             f"{dest.path}.port.number")
            service = None
        elif port is None and len(service.ports) > 1:
            pass  # the route table's own port is used, as Istio does for multi-port services
        if service is not None and subset:
            rule = find_rule(self.rules, host, self.obj.namespace, service.namespace)
            found_subset = rule.subset(subset) if rule is not None else None
            if found_subset is None:
                where = (f"DestinationRule {rule.obj.namespace}/{rule.obj.name}" if rule is not None
                         else "no DestinationRule")
                self.report.warn(self.obj, IstioCode.SUBSET_NOT_FOUND, f"subset {subset!r} of host {host} is not "
                                 f"defined ({where}); {outcome}", f"{dest.path}.subset")
                service = None
            else:
                labels = found_subset.labels
        return Target(host, subset, port, weight, service, labels, dest.path)

    def weighted(self, rule: Fields, key: str = "route") -> list[Target]:
        """The weighted destinations of a rule (weights must add up to 100 when more than one)."""
        entries = rule.maps(key)
        targets = []
        for entry in entries:
            weight = entry.int("weight", minimum=0, maximum=100)
            if len(entries) == 1:
                weight = 100  # a lone destination takes all traffic whatever its weight says
            elif weight is None:
                weight = 0
            targets.append(self.target(entry.map("destination", required=True), weight))
        if len(entries) > 1:
            total = sum(t.weight for t in targets)
            if total != 100:
                raise FieldError(f"{rule.path}.{key}", f"destination weights add up to {total}, not 100",
                                 IstioCode.INVALID_COMBINATION)
        return targets
