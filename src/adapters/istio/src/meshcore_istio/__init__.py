"""meshcore adapter for Istio (networking.istio.io, security.istio.io).

The adapter object :data:`adapter` is registered under the ``meshcore.adapters`` entry
point ``istio``. It translates VirtualService, DestinationRule, ServiceEntry and
WorkloadEntry into services and route tables, AuthorizationPolicy and
PeerAuthentication into model policies, and recognises Gateway, Sidecar and
RequestAuthentication with a diagnostic. Codes are listed in :data:`ISTIO_CODES`.
"""

from ._adapter import KINDS, IstioAdapter, adapter
from ._codes import ISTIO_CODES
from ._common import ROOT_NAMESPACE
from ._schema import MESSAGES, check_spec

__all__ = ["ISTIO_CODES", "KINDS", "MESSAGES", "ROOT_NAMESPACE", "IstioAdapter", "adapter", "check_spec"]
