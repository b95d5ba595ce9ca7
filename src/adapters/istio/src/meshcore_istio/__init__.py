"""meshcore adapter for Istio (networking.istio.io, security.istio.io).

The adapter object :data:`adapter` is registered under the ``meshcore.adapters`` entry
point ``istio``. It translates VirtualService, DestinationRule, ServiceEntry and
WorkloadEntry into services and route tables, AuthorizationPolicy,
PeerAuthentication and RequestAuthentication into model policies, serves Gateway on the
Services exposing its workloads, and turns a REGISTRY_ONLY Sidecar into egress policies.
Every spec is first parsed into its Istio API
protobuf message (:func:`parse_spec`). Codes are the members of :class:`IstioCode`.
:class:`IstiodSource` reads the same objects from a running istiod over xDS.
"""

from ._adapter import KINDS, IstioAdapter, adapter
from ._api import KIND_MESSAGES, message_type, parse_spec, type_url
from ._codes import ISTIO_CODES, IstioCode
from ._common import ROOT_NAMESPACE
from ._istiod import IstiodSource, read_istiod
from ._istiod_types import IstiodStatus, IstiodTypeStatus
from ._istiod_decode import IstiodError

__all__ = [
    "ISTIO_CODES",
    "KINDS",
    "KIND_MESSAGES",
    "ROOT_NAMESPACE",
    "IstioAdapter",
    "IstioCode",
    "IstiodError",
    "IstiodSource",
    "IstiodStatus",
    "IstiodTypeStatus",
    "adapter",
    "message_type",
    "parse_spec",
    "read_istiod",
    "type_url",
]
