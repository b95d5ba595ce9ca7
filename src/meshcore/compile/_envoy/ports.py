"""The service ports compile hands to the node proxy, each with its route tables and listener port."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ...model import RouteTable, Service, ServicePort

if TYPE_CHECKING:  # the Plan's sidecars are compiled with the node proxy's clusters, which import this module
    from .._plan import Decision


@attrs.frozen
class ProxiedPort:
    """A service port compile hands to the node proxy, with its tables and listener port."""

    service: Service
    port: ServicePort
    proxy_port: int
    tables: tuple[RouteTable, ...]
    decision: Decision

