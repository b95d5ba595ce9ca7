"""Raw Envoy resources attached to the mesh (the escape hatch for what no API expresses)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._errors import ModelError
from ._validate import to_tuple

from ._labels import Labels, to_labels
from ._source import UNKNOWN, Source
from .service import ServiceRef

#: The resource types an EnvoyConfig may carry, by their ``@type`` URL.
ENVOY_RESOURCE_TYPES = (
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
)


def _canonical_json(value: Mapping[str, Any] | str) -> str:
    if isinstance(value, str):
        value = json.loads(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@attrs.frozen(order=True)
class EnvoyResource:
    """One Envoy resource: its type URL, (qualified) name and body as canonical JSON."""

    type_url: str = attrs.field(validator=attrs.validators.in_(ENVOY_RESOURCE_TYPES))
    name: str
    body_json: str = attrs.field(converter=_canonical_json)

    @property
    def body(self) -> dict[str, Any]:
        """The resource as a JSON object."""
        result: dict[str, Any] = json.loads(self.body_json)
        return result


@attrs.frozen(order=True)
class ServiceListener:
    """Redirect a service's ports to an Envoy listener of the config."""

    service: ServiceRef
    listener: str = ""
    ports: tuple[int, ...] = attrs.field(default=(), converter=to_tuple)


def _port_numbers_or_names(_: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item or (item.isdigit() and not 1 <= int(item) <= 65535):
            raise ModelError(f"{attribute.name}[{i}]", f"{item!r} is not a port number (1..65535) or a port name")


@attrs.frozen(order=True)
class BackendService:
    """A service whose endpoints a config uses; its ``<ns>/<svc>`` cluster takes ``ports`` (numbers or names), else all."""

    service: ServiceRef
    ports: tuple[str, ...] = attrs.field(default=(), converter=to_tuple, validator=_port_numbers_or_names)


def _backend_services(value: Iterable[BackendService | ServiceRef]) -> tuple[BackendService, ...]:
    """Backend services, a bare ServiceRef standing for the service without a port filter."""
    return tuple(BackendService(v) if isinstance(v, ServiceRef) else v for v in value)


@attrs.frozen(order=True)
class EnvoyConfig:
    """A set of raw Envoy resources, the services redirected to them, and their nodes."""

    name: str
    #: None for a cluster-wide config; those sort before namespaced ones of the same name.
    namespace: str | None = attrs.field(order=lambda ns: (ns is not None, ns or ""))
    resources: tuple[EnvoyResource, ...] = attrs.field(default=(), converter=to_tuple)
    services: tuple[ServiceListener, ...] = attrs.field(default=(), converter=to_tuple)
    backend_services: tuple[BackendService, ...] = attrs.field(default=(), converter=_backend_services)
    node_selector: Labels = attrs.field(factory=Labels, converter=to_labels)
    source: Source = attrs.field(default=UNKNOWN, eq=False, order=False)
