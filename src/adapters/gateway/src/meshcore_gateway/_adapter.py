"""The gateway adapter object registered under the ``meshcore.adapters`` entry-point group."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from meshcore.adapter import ApiKind, Fragment, Inventory, KubeObject, unsupported

KINDS: tuple[ApiKind, ...] = (
    *(
        ApiKind(f"gateway.networking.k8s.io/{version}", kind)
        for version, kinds in (
            ("v1", ("GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "BackendTLSPolicy")),
            ("v1beta1", ("GatewayClass", "Gateway", "HTTPRoute", "ReferenceGrant")),
            ("v1alpha2", ("GRPCRoute", "TCPRoute", "TLSRoute", "UDPRoute", "ReferenceGrant")),
            ("v1alpha3", ("BackendTLSPolicy", "TLSRoute")),
        )
        for kind in kinds
    ),
    ApiKind("networking.k8s.io/v1", "Ingress"),
    ApiKind("networking.k8s.io/v1", "IngressClass"),
)


@attrs.frozen
class GatewayAdapter:
    """Translates the Kubernetes Gateway API and Ingress into the meshcore model (translation lands in its own change)."""

    name: str = "gateway"
    kinds: tuple[ApiKind, ...] = KINDS

    def translate(self, objects: Sequence[KubeObject], inventory: Inventory) -> Fragment:
        """Recognise this adapter's kinds; their translation is not written yet."""
        return unsupported(self.name, objects)


adapter = GatewayAdapter()
