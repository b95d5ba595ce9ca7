"""meshcore adapter for the Kubernetes Gateway API (gateways and GAMMA mesh routes) and Ingress.

The adapter object :data:`adapter` is registered under the ``meshcore.adapters`` entry
point ``gateway``. It serves GatewayClasses whose ``controllerName`` is
:data:`CONTROLLER_NAME`, routes attached to their Gateways or to Services (mesh), and
Ingresses of IngressClasses whose controller is :data:`INGRESS_CONTROLLER`. The status it
computes (:class:`meshcore.adapter.ObjectStatus`) is ready to write back once
:func:`stamp_transition_times` has filled in the condition times.
"""

from ._adapter import KINDS, GatewayAdapter, adapter
from ._codes import GATEWAY_CODES, GatewayCode
from ._common import CONTROLLER_NAME, INGRESS_CONTROLLER, MESH_CONTROLLER_NAME
from ._status import stamp_transition_times

__all__ = [
    "CONTROLLER_NAME", "GATEWAY_CODES", "INGRESS_CONTROLLER", "KINDS", "MESH_CONTROLLER_NAME",
    "GatewayAdapter", "GatewayCode", "adapter", "stamp_transition_times",
]
