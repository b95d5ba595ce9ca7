"""The clusters of the node proxy's plan: one per destination, made the first time something sends there.

Every destination becomes an EDS cluster ``<ns>/<svc>:<port>`` (``/<subset>`` for
subsets) whose endpoints are the service port's active backends, with the traffic policy
in force for that port and subset (load balancing, circuit breakers, outlier detection,
upstream TLS); services resolved by DNS get DNS clusters of their host names instead. A
raw config's ``<ns>/<svc>`` cluster takes the backends of several ports; a TCP route's
refused share is a cluster without endpoints (see :data:`REFUSED_SUBSET`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping

import attrs

from ...model import (
    Backend,
    BackendState,
    Destination,
    Diagnostic,
    HashKey,
    HashKeyKind,
    Protocol,
    Resolution,
    RouteTable,
    Service,
    ServiceRef,
    Severity,
    Snapshot,
    Workload,
    WorkloadRef,
)
from .._codes import ProxyCode
from .plan import ClusterWeight, Discovery, EnvoyCluster, EnvoyEndpoint, Origin, cluster_name
from .ports import ProxiedPort
from .raw import ServiceCluster
from .rbac import ChainEndpoint

#: The subset name of a TCP route's cluster without endpoints (its share of connections is refused).
REFUSED_SUBSET = "invalid-backends"


def merged(weights: Iterable[ClusterWeight]) -> tuple[ClusterWeight, ...]:
    """Weights per cluster and header changes, first appearance order (destinations may share a cluster)."""
    total: dict[ClusterWeight, int] = {}
    for w in weights:
        key = attrs.evolve(w, weight=0)
        total[key] = total.get(key, 0) + w.weight
    return tuple(attrs.evolve(key, weight=weight) for key, weight in total.items())



def weight(cluster: str, destination: Destination) -> ClusterWeight:
    """A destination's weighted cluster, carrying its own header changes."""
    return ClusterWeight(cluster, destination.weight, destination.request_headers, destination.response_headers)



@attrs.define
class Clusters:
    """The clusters made so far by name; making one that sends nowhere adds a warning to ``warnings``."""

    snapshot: Snapshot
    #: The workloads by reference, whose labels choose a subset's backends.
    workloads: Mapping[WorkloadRef, Workload]
    warnings: list[Diagnostic]
    by_name: dict[str, EnvoyCluster] = attrs.field(factory=dict)

    def cluster(self, dest: Destination, default_port: int, protocol: Protocol, origin: Origin) -> str:
        """The cluster for a destination (created on first use)."""
        number = dest.port or default_port
        name = cluster_name(dest.service, number, dest.subset)
        if name in self.by_name:
            return name
        service = self.snapshot.service(dest.service)
        port = service.port(number) if service is not None else None
        if service is None or port is None:
            missing = f"service {dest.service}" if service is None else f"port {number} of service {dest.service}"
            self.warnings.append(Diagnostic(
                ProxyCode.MISSING_DESTINATION, Severity.WARNING,
                f"{origin.what} sends to {missing}, which does not exist; requests routed there get 503",
                origin.source, "destinations",
            ))
            self.by_name[name] = EnvoyCluster(name, dest.service, number, protocol, subset=dest.subset, origins=(origin,))
            return name
        backends = [b for b in port.backends if self._in_subset(b, dest)]
        traffic = self.snapshot.traffic_policy(dest.service, number, dest.subset)
        lb_policy = traffic.lb.policy if traffic is not None and traffic.lb is not None else service.lb_policy
        origins: tuple[Origin, ...] = (Origin(f"service {service.ref} port {number}", service.source),)
        if traffic is not None:
            origins += (Origin(f"traffic policy of {name}", traffic.source),)
        endpoints = tuple(_endpoint(b) for b in backends if b.state is BackendState.ACTIVE and b.weight > 0)
        discovery = Discovery.EDS
        if service.resolved_by_dns:
            # The proxy resolves the names itself; subsets select no names (they have no labels).
            endpoints = tuple(EnvoyEndpoint(h.hostname, h.port, h.weight) for h in port.hostname_backends
                              if h.weight > 0)
            # Envoy's LOGICAL_DNS takes one name; several (hosts without endpoints) are all resolved.
            one = service.resolution is Resolution.DNS_ROUND_ROBIN and len(endpoints) <= 1
            discovery = Discovery.LOGICAL_DNS if one else Discovery.STRICT_DNS
        self.by_name[name] = EnvoyCluster(
            name, dest.service, number, port.protocol, lb_policy, endpoints, dest.subset, origins, traffic, discovery,
        )
        return name

    def service_cluster(self, whole: ServiceCluster) -> str:
        """A raw config's ``<ns>/<svc>`` cluster: the active backends of the selected ports, each address once."""
        name = str(whole.service)
        service = self.snapshot.service(whole.service)
        ports = [p for n in whole.ports if service is not None and (p := service.port(n)) is not None]
        if service is None or not ports:
            self.warnings.append(Diagnostic(
                ProxyCode.MISSING_DESTINATION, Severity.WARNING,
                f"{whole.origin.what} sends to cluster {name}, but service "
                f"{whole.service} {'does not exist' if service is None else 'has none of the TCP ports selected'}; "
                "requests routed there get 503", whole.origin.source, "resources",
            ))
            self.by_name[name] = EnvoyCluster(name, whole.service, None, Protocol.TCP, origins=(whole.origin,))
            return name
        endpoints: dict[tuple[str, int], EnvoyEndpoint] = {}
        for port in ports:
            for b in port.backends:
                if b.state is BackendState.ACTIVE and b.weight > 0:
                    endpoints.setdefault((b.address, b.port), _endpoint(b))
        # Ports speaking different protocols get Envoy's default upstream (HTTP/1.1 for HTTP routes).
        protocol = ports[0].protocol if len({p.protocol for p in ports}) == 1 else Protocol.TCP
        traffic = whole.traffic
        lb_policy = traffic.lb.policy if traffic is not None and traffic.lb is not None else service.lb_policy
        listed = ", ".join(str(p.port) for p in ports)
        origins: tuple[Origin, ...] = (Origin(f"service {service.ref} ports {listed}", service.source), whole.origin)
        if traffic is not None:
            origins += (Origin(f"traffic policy of {name}", traffic.source),)
        self.by_name[name] = EnvoyCluster(name, whole.service, None, protocol, lb_policy, tuple(endpoints.values()),
                                           origins=origins, traffic=traffic)
        return name

    def hash_policy(self, clusters: Iterable[ClusterWeight], origin: Origin) -> tuple[HashKey, ...]:
        """The hash key of the consistent-hash clusters a route sends to (none when they disagree)."""
        keys = tuple(dict.fromkeys(k for c in clusters if (k := self.by_name[c.cluster].hash_key) is not None))
        if len(keys) > 1:
            # Envoy computes one hash per request from all of a route's hash policies, so
            # each cluster would hash on a mix of keys: hash on none rather than on a wrong one.
            self.warnings.append(Diagnostic(
                ProxyCode.MIXED_HASH_KEYS, Severity.WARNING,
                f"{origin.what} sends to clusters hashing on different keys ({', '.join(map(str, keys))}); "
                "their consistent hashing is not applied on this route", origin.source, "destinations",
            ))
            return ()
        return keys

    def hashes_source_ip(self, clusters: Iterable[ClusterWeight], origin: Origin) -> bool:
        """True when the clusters of a TCP chain hash connections by source IP (other keys need HTTP)."""
        return any(k.kind is HashKeyKind.SOURCE_IP for k in self.hash_policy(clusters, origin))

    def endpoints(self, clusters: Iterable[str]) -> list[ChainEndpoint]:
        """Every endpoint of these clusters, once (what a listener or chain may send to)."""
        return list(dict.fromkeys(ChainEndpoint(e.workload, e.address, e.port)
                                  for c in clusters for e in self.by_name[c].endpoints))

    def key_cluster(self, uri: str, origin: Origin) -> tuple[str | None, str]:
        """The cluster through which the node proxy fetches the key set at ``uri``, or ``None`` and why not.

        Only a Kubernetes Service named by its DNS name qualifies: a name nobody else in the
        mesh can claim (any namespace could declare a ServiceEntry for another host, and
        whoever serves the keys decides which tokens are valid).
        """
        parts = urllib.parse.urlsplit(uri)
        host = (parts.hostname or "").lower()
        try:
            number = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return None, "its port is not a number"
        service = _kubernetes_service(self.snapshot, host)
        if service is None:
            return None, (f"{host} is not the DNS name of a Kubernetes Service (<name>.<namespace>.svc...); the node "
                          "proxy fetches keys only from those")
        port = service.port(number)
        if port is None:
            return None, f"service {service.ref} has no TCP port {number}"
        name = self.cluster(Destination(service.ref, number), number, port.protocol, origin)
        traffic = self.by_name[name].traffic
        if parts.scheme == "https" and not (traffic is not None and traffic.tls is not None and traffic.tls.originates):
            return None, (f"https needs TLS to service {service.ref} port {number}, and no traffic policy "
                          "originates it")
        return name, ""

    def own_cluster(self, item: ProxiedPort) -> str:
        """The cluster of the port's own backends."""
        return self.cluster(
            Destination(item.service.ref, item.port.port), item.port.port, item.port.protocol,
            Origin(f"service {item.service.ref} port {item.port.port}", item.service.source),
        )

    def refusing_cluster(self, table: RouteTable, item: ProxiedPort, origin: Origin) -> str:
        """A cluster without endpoints: the TCP proxy closes connections sent there at once."""
        name = cluster_name(table.service, table.port, REFUSED_SUBSET)
        if name not in self.by_name:
            self.by_name[name] = EnvoyCluster(name, table.service, table.port, item.port.protocol,
                                               subset=REFUSED_SUBSET, origins=(origin,))
        return name

    def _in_subset(self, backend: Backend, dest: Destination) -> bool:
        if not dest.subset_labels:
            return True
        workload = self.workloads.get(backend.workload) if backend.workload is not None else None
        return workload is not None and all(workload.labels.get(k) == v for k, v in dest.subset_labels)


def _kubernetes_service(snapshot: Snapshot, host: str) -> Service | None:
    """The Kubernetes Service ``host`` names as ``<name>.<namespace>[.svc[.<domain>]]``, if there is one."""
    labels = host.split(".")
    if len(labels) < 2 or (len(labels) > 2 and labels[2] != "svc"):
        return None
    service = snapshot.service(ServiceRef(labels[1], labels[0]))
    fqdn = f"{labels[0]}.{labels[1]}.svc."
    if service is None or not any(h.startswith(fqdn) for h in service.hostnames):
        return None  # a ServiceEntry, not a Kubernetes Service
    if len(labels) > 3 and host not in service.hostnames:
        return None  # another cluster domain
    return service



def _endpoint(backend: Backend) -> EnvoyEndpoint:
    workload = str(backend.workload) if backend.workload is not None else ""
    return EnvoyEndpoint(backend.address, backend.port, backend.weight, workload)

