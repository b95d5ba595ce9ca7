"""Model route tables and policies → the EnvoyPlan for the ports handed to the node proxy.

One listener per proxied (service, port) on the port compile allocated: an HTTP
listener with its route configurations (:mod:`.http`), or for TLS-by-SNI and refusing
tables an L4 listener of filter chains (:mod:`.tcp`); both get the JWT and RBAC checks
of every workload they can reach (:mod:`.checks`) and their TLS terminations, with the
certificates as SDS secrets ``tls/<ns>/<secret>``. Every destination becomes a cluster
(:mod:`.clusters`). Raw configs (:mod:`.raw`) add their resources, less those colliding
with generated ones.

Diagnostics are :class:`ProxyCode` warnings, in build order: a missing destination, all
weights 0, mixed hash keys, a TCP chain whose authorization does not reduce to client
addresses; see :mod:`.rbac` for the policy ones and :mod:`.raw` for raw configs.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...model import Destination, Diagnostic, Protocol, Snapshot
from .context import BuildContext
from .http import http_listener
from .plan import EnvoyListener, EnvoyPlan, EnvoyRouteConfig, RawResource, cluster_name
from .ports import ProxiedPort
from .raw import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, RawPart, drop_collisions
from .tcp import is_tcp, tcp_listener


def build_envoy_plan(snapshot: Snapshot, ports: Sequence[ProxiedPort], raw: RawPart | None = None,
                     node: str = "") -> EnvoyPlan:
    """The node proxy's configuration for ``ports`` (the ones compile decided need Envoy) and raw configs.

    ``node`` limits the clients told apart by address to that node's workloads (only they
    connect to its proxy); empty: every workload.
    """
    ctx = BuildContext.of(snapshot, node)
    listeners: list[EnvoyListener] = []
    route_configs: list[EnvoyRouteConfig] = []
    for item in ports:
        name = cluster_name(item.service.ref, item.port.port)
        if is_tcp(item):
            listeners.append(tcp_listener(ctx, item, name))
        else:
            listener, configs = http_listener(ctx, item, name)
            listeners.append(listener)
            route_configs += configs
    raw_resources: tuple[RawResource, ...] = ()
    raw_warnings: list[Diagnostic] = []
    if raw is not None:
        for ref, number, origin in raw.mesh_clusters:
            if snapshot.service(ref) is not None:
                ctx.clusters.cluster(Destination(ref, number), number, Protocol.HTTP, origin)
        for whole in raw.service_clusters:
            ctx.clusters.service_cluster(whole)
        generated = {
            LISTENER_TYPE: {x.name for x in listeners}, ROUTE_TYPE: {x.name for x in route_configs},
            CLUSTER_TYPE: set(ctx.clusters.by_name), ENDPOINT_TYPE: set(ctx.clusters.by_name),
        }
        raw_resources, raw_warnings = drop_collisions(raw.resources, generated)
        raw_warnings = [*raw.warnings, *raw_warnings]
    return EnvoyPlan(
        listeners=tuple(sorted(listeners, key=lambda item: item.name)),
        route_configs=tuple(sorted(route_configs, key=lambda item: item.name)),
        clusters=tuple(sorted(ctx.clusters.by_name.values(), key=lambda item: item.name)),
        raw=raw_resources,
        secrets=tuple(sorted(ctx.secrets.values(), key=lambda item: item.name)),
        warnings=(*ctx.warnings, *raw_warnings),
    )

