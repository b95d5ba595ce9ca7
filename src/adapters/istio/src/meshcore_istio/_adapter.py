"""The istio adapter object registered under the ``meshcore.adapters`` entry-point group."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from meshcore.adapter import ApiKind, Fragment, Inventory, KubeObject, unsupported

KINDS: tuple[ApiKind, ...] = tuple(
    ApiKind(f"{group}/{version}", kind)
    for group, versions, kinds in (
        ("networking.istio.io", ("v1", "v1beta1", "v1alpha3"),
         ("VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "WorkloadEntry", "Sidecar")),
        ("security.istio.io", ("v1", "v1beta1"),
         ("AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication")),
    )
    for version in versions
    for kind in kinds
)


@attrs.frozen
class IstioAdapter:
    """Translates Istio (networking.istio.io, security.istio.io) into the meshcore model (translation lands in its own change)."""

    name: str = "istio"
    kinds: tuple[ApiKind, ...] = KINDS

    def translate(self, objects: Sequence[KubeObject], inventory: Inventory) -> Fragment:
        """Recognise this adapter's kinds; their translation is not written yet."""
        return unsupported(self.name, objects)


adapter = IstioAdapter()
