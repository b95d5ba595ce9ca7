"""meshcore adapter for raw Envoy resources in CiliumEnvoyConfig-compatible form.

The adapter object :data:`adapter` is registered under the ``meshcore.adapters`` entry
point ``envoycrd``. It reads ``cilium.io/v2`` CiliumEnvoyConfig (namespaced) and
CiliumClusterwideEnvoyConfig objects: ``resources`` (Listener, RouteConfiguration,
Cluster, ClusterLoadAssignment, Secret with ``@type``) are parsed into the real Envoy
protobuf messages and checked against the Envoy API's constraints; names are qualified
``<ns>/<config>/<name>`` with references rewritten; ``services`` become
:class:`~meshcore.model.ServiceListener` redirects and ``backendServices`` (with their
``number`` port filters) the :class:`~meshcore.model.BackendService` entries whose
endpoints Envoy needs. Each config gets an :class:`~meshcore.adapter.ObjectStatus`
(Accepted, or the errors). Diagnostic codes: :class:`EnvoyCrdCode` (block MC8xxx).
"""

from ._adapter import KINDS, EnvoyCrdAdapter, adapter
from ._codes import ENVOYCRD_CODES, EnvoyCrdCode
from ._config import CLUSTERWIDE_DEFAULT_NAMESPACE

__all__ = ["CLUSTERWIDE_DEFAULT_NAMESPACE", "ENVOYCRD_CODES", "KINDS", "EnvoyCrdAdapter", "EnvoyCrdCode", "adapter"]
