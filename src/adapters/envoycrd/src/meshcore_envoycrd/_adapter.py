"""The envoycrd adapter object registered under the ``meshcore.adapters`` entry-point group."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from meshcore.adapter import ApiKind, Fragment, Inventory, KubeObject, unsupported

KINDS: tuple[ApiKind, ...] = (
    ApiKind("cilium.io/v2", "CiliumEnvoyConfig"),
    ApiKind("cilium.io/v2", "CiliumClusterwideEnvoyConfig"),
)


@attrs.frozen
class EnvoyCrdAdapter:
    """Translates raw Envoy resources (CiliumEnvoyConfig-compatible) into the meshcore model (translation lands in its own change)."""

    name: str = "envoycrd"
    kinds: tuple[ApiKind, ...] = KINDS

    def translate(self, objects: Sequence[KubeObject], inventory: Inventory) -> Fragment:
        """Recognise this adapter's kinds; their translation is not written yet."""
        return unsupported(self.name, objects)


adapter = EnvoyCrdAdapter()
