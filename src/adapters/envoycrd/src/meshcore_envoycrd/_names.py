"""Name qualification and reference rewriting inside parsed Envoy resources.

Every name a config defines becomes ``<ns>/<config>/<name>`` (``/<config>/<name>`` for
a clusterwide config, as Cilium does), and every reference to it inside the config's
resources is rewritten the same way: RDS route configuration names, cluster names in
routes, weighted clusters, mirrors, TCP proxies and gRPC/HTTP services, EDS service
names and SDS secret names. A cluster reference containing ``/`` names one of meshcore's
own EDS clusters and is left as it is: ``<ns>/<svc>:<port>`` holds one service port's
endpoints, ``<ns>/<svc>`` (Cilium's name) those of the service's ports the config
selects, or of all its TCP ports. A Cluster the config defines under such a name
customises it (type EDS, endpoints from meshcore) and is itself qualified. Missing RDS,
EDS and SDS config sources point at ADS.
"""

from __future__ import annotations

import re
from typing import Any

from meshcore.kube import Inventory
from meshcore.model import ServiceRef

from ._codes import EnvoyCrdCode
from ._problems import Problem, error, info, warning
from ._types import SHORT_NAMES, descriptor_for, message_class

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_MESH_CLUSTER = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)/([a-z0-9]([-a-z0-9]*[a-z0-9])?)(:([0-9]{1,5}))?$")
_MESH_FORMS = "<namespace>/<service> or <namespace>/<service>:<port>"

#: Fields naming a cluster, by the full name of the message holding them.
_CLUSTER_FIELDS: dict[str, str] = {
    "envoy.config.route.v3.RouteAction": "cluster",
    "envoy.config.route.v3.WeightedCluster.ClusterWeight": "name",
    "envoy.config.route.v3.RouteAction.RequestMirrorPolicy": "cluster",
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy": "cluster",
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight": "name",
    "envoy.config.core.v3.GrpcService.EnvoyGrpc": "cluster_name",
    "envoy.config.core.v3.HttpUri": "cluster",
}
_RDS = "envoy.extensions.filters.network.http_connection_manager.v3.Rds"
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_SDS = "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig"


def resource_name(type_url: str, message: Any) -> str:
    """The name a resource is served under (``cluster_name`` for endpoints)."""
    return str(message.cluster_name if type_url == ENDPOINT else message.name)


def _set_name(type_url: str, message: Any, name: str) -> None:
    if type_url == ENDPOINT:
        message.cluster_name = name
    else:
        message.name = name


def _use_ads(source: Any) -> None:
    source.ads.SetInParent()
    source.resource_api_version = 2  # V3 (AUTO=0, V2=1)


def mesh_cluster(name: str) -> tuple[ServiceRef, int | None] | None:
    """``(service, port)`` for ``<ns>/<svc>:<port>``, ``(service, None)`` for ``<ns>/<svc>``, else None."""
    found = _MESH_CLUSTER.match(name)
    if found is None:
        return None
    port = int(found.group(6)) if found.group(6) is not None else None
    if port is not None and not 1 <= port <= 65535:
        return None
    return ServiceRef(found.group(1), found.group(3)), port


class Namer:
    """Qualifies the names of one config's resources and rewrites their references."""

    def __init__(self, namespace: str, config: str, inventory: Inventory,
                 defined: dict[str, set[str]]) -> None:
        self.prefix = f"{namespace}/{config}"
        self.inventory = inventory
        #: Original names each resource type defines in this config.
        self.defined = defined
        self.problems: list[Problem] = []
        #: Services whose meshcore clusters the resources use (their endpoints must reach Envoy).
        self.mesh_services: set[ServiceRef] = set()

    def qualify(self, name: str) -> str:
        """``<ns>/<config>/<name>``."""
        return f"{self.prefix}/{name}"

    # -- references ---------------------------------------------------------------------

    def check_mesh(self, name: str, path: str, what: str) -> bool:
        """Check a ``<ns>/<svc>[:<port>]`` name against the inventory; False when malformed."""
        parsed = mesh_cluster(name)
        if parsed is None:
            self.problems.append(error(EnvoyCrdCode.BAD_REFERENCE, path,
                                       f"{what} {name!r} contains '/' but is not a meshcore service cluster "
                                       f"{_MESH_FORMS}; name a resource of this config without '/' "
                                       "(references to other configs are not supported)"))
            return False
        ref, port = parsed
        self.mesh_services.add(ref)
        service = self.inventory.service(ref.namespace, ref.name)
        if service is None:
            self.problems.append(warning(EnvoyCrdCode.MISSING_SERVICE, path, f"{what} {name!r}: service {ref} does not "
                                         "exist; its cluster has no endpoints (503)"))
            return True
        tcp = [p.port for p in service.ports if p.protocol.transport == "TCP"]
        if port is None and not tcp:
            self.problems.append(warning(EnvoyCrdCode.MISSING_SERVICE, path, f"{what} {name!r}: service {ref} has no "
                                         "TCP port; its cluster has no endpoints (503)"))
        elif port is not None and port not in tcp:
            ports = ", ".join(map(str, tcp)) or "none"
            self.problems.append(warning(EnvoyCrdCode.MISSING_SERVICE, path, f"{what} {name!r}: service {ref} has no "
                                         f"TCP port {port} (TCP ports: {ports}); its cluster has no endpoints (503)"))
        return True

    def cluster_ref(self, name: str, path: str) -> str:
        """The served name of a referenced cluster."""
        if not name:
            return name
        if name in self.defined.get(CLUSTER, set()):
            return self.qualify(name)
        if "/" in name:
            self.check_mesh(name, path, "cluster")
            return name
        self.problems.append(warning(EnvoyCrdCode.UNDEFINED_REFERENCE, path, f"cluster {name!r} is not defined in this "
                                     "config; requests routed to it get 503"))
        return self.qualify(name)

    def local_ref(self, type_url: str, name: str, path: str) -> str:
        """The served name of a referenced route configuration, endpoints or secret."""
        what = SHORT_NAMES[type_url]
        if "/" in name:
            self.problems.append(error(EnvoyCrdCode.BAD_REFERENCE, path, f"{what} {name!r} contains '/': reference a "
                                       f"{what} of this config by its own name"))
            return name
        if name not in self.defined.get(type_url, set()):
            self.problems.append(warning(EnvoyCrdCode.UNDEFINED_REFERENCE, path, f"{what} {name!r} is not defined in "
                                         "this config; Envoy waits for it"))
        return self.qualify(name)

    # -- resources ------------------------------------------------------------------------

    def rewrite(self, type_url: str, message: Any, path: str) -> str:
        """Qualify the resource's own name and rewrite its references; returns the served name."""
        name = resource_name(type_url, message)
        field = "cluster_name" if type_url == ENDPOINT else "name"
        served = self.qualify(name)
        if type_url == CLUSTER and "/" in name:
            served = self._mesh_cluster_resource(message, name, path)
        elif "/" in name:
            self.problems.append(error(EnvoyCrdCode.INVALID_NAME, f"{path}.{field}", f"{name!r} contains '/': the name "
                                       f"is qualified as {self.qualify('<name>')}, give it without '/'"))
        if type_url == CLUSTER:
            self._cluster(message, name, path)
        if type_url == LISTENER:
            self._listener(message, served, path)
        _set_name(type_url, message, served)
        self._walk(message, path)
        return served

    def _mesh_cluster_resource(self, message: Any, name: str, path: str) -> str:
        if not self.check_mesh(name, f"{path}.name", "cluster"):
            return name
        kind = message.WhichOneof("cluster_discovery_type")
        if kind is None:
            message.type = 3  # EDS
        elif kind != "type" or message.type != 3:
            self.problems.append(error(EnvoyCrdCode.INVALID_NAME, f"{path}.type",
                                       f"cluster {name!r} is named after a meshcore service cluster, so its "
                                       "endpoints come from meshcore: it must be type EDS"))
        eds = message.eds_cluster_config
        if eds.service_name and eds.service_name != name:
            self.problems.append(error(EnvoyCrdCode.INVALID_NAME, f"{path}.eds_cluster_config.service_name",
                                       f"cluster {name!r} takes the endpoints of {name}; leave service_name unset"))
        eds.service_name = name
        return self.qualify(name)

    def _cluster(self, message: Any, name: str, path: str) -> None:
        if message.WhichOneof("cluster_discovery_type") != "type" or message.type != 3:
            return
        eds = message.eds_cluster_config
        if not eds.HasField("eds_config"):
            _use_ads(eds.eds_config)
        if "/" in name:
            return
        at = f"{path}.eds_cluster_config.service_name"
        if eds.service_name and "/" in eds.service_name:
            self.check_mesh(eds.service_name, at, "EDS service")
        elif eds.service_name:
            eds.service_name = self.local_ref(ENDPOINT, eds.service_name, at)
        elif name not in self.defined.get(ENDPOINT, set()):
            self.problems.append(warning(EnvoyCrdCode.UNDEFINED_REFERENCE, f"{path}.name", f"EDS cluster {name!r} has "
                                         "no ClusterLoadAssignment of that name in this config; it has no endpoints"))

    def _listener(self, message: Any, served: str, path: str) -> None:
        if message.HasField("address"):
            self._address(message.address, f"{path}.address")
            for i, extra in enumerate(message.additional_addresses):
                self._address(extra.address, f"{path}.additional_addresses[{i}].address")
        elif not message.HasField("api_listener") and not message.HasField("internal_listener"):
            self.problems.append(info(EnvoyCrdCode.PORT_ALLOCATED, path, f"Listener {served} has no address: the node "
                                      "proxy binds it on a port it allocates"))

    def _address(self, address: Any, path: str) -> None:
        if address.WhichOneof("address") != "socket_address":
            self.problems.append(error(EnvoyCrdCode.CONSTRAINT, path, "a listener address must be a socket_address (or "
                                       "leave the address out and the node proxy allocates a port)"))
            return
        socket = address.socket_address
        if socket.WhichOneof("port_specifier") != "port_value" or not 1 <= socket.port_value <= 65535:
            self.problems.append(error(EnvoyCrdCode.CONSTRAINT, f"{path}.socket_address", "a listener socket_address "
                                       "needs a port_value between 1 and 65535"))

    # -- nested messages ------------------------------------------------------------------

    def _walk(self, message: Any, path: str) -> None:
        descriptor = message.DESCRIPTOR
        full = descriptor.full_name
        if full == "google.protobuf.Any":
            if message.type_url:
                inner = message_class(descriptor_for(message.type_url))()
                message.Unpack(inner)
                self._walk(inner, path)
                message.value = inner.SerializeToString(deterministic=True)
            return
        field = _CLUSTER_FIELDS.get(full)
        if field is not None and getattr(message, field):
            setattr(message, field, self.cluster_ref(getattr(message, field), f"{path}.{field}"))
        if full == _RDS:
            message.route_config_name = self.local_ref(ROUTE, message.route_config_name,
                                                       f"{path}.route_config_name")
            if not message.HasField("config_source"):
                _use_ads(message.config_source)
        elif full == _SDS and message.name:
            message.name = self.local_ref(SECRET, message.name, f"{path}.name")
            if not message.HasField("sds_config"):
                _use_ads(message.sds_config)
        elif full == _HCM:
            self._router_last(message, path)
        for fd, value in message.ListFields():
            child = f"{path}.{fd.name}"
            if fd.message_type is None:
                continue
            if fd.message_type.GetOptions().map_entry:
                if fd.message_type.fields_by_name["value"].message_type is not None:
                    for key in value:
                        self._walk(value[key], f"{child}.{key}")
            elif fd.is_repeated:
                for i, item in enumerate(value):
                    self._walk(item, f"{child}[{i}]")
            else:
                self._walk(value, child)

    def _router_last(self, hcm: Any, path: str) -> None:
        filters = list(hcm.http_filters)
        for i, item in enumerate(filters[:-1]):
            if item.HasField("typed_config") and item.typed_config.type_url == _ROUTER:
                self.problems.append(error(EnvoyCrdCode.CONSTRAINT, f"{path}.http_filters[{i}]", "the router filter "
                                           "must be the last HTTP filter (Envoy rejects filters after it)"))
