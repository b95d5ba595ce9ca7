"""Host names → services: Kubernetes Services and ServiceEntries, with ``exportTo`` visibility."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from meshcore.model import Service

from ._common import host_matches, visible


@attrs.frozen
class Known:
    """A service reachable by ``hosts``, exported to ``exported`` from its namespace."""

    service: Service
    hosts: tuple[str, ...]
    exported: tuple[str, ...] = ("*",)


class HostIndex:
    """Finds the services a host name (maybe a wildcard) stands for, as seen from a namespace."""

    def __init__(self, known: Iterable[Known]) -> None:
        self.known = list(known)
        self._exact: dict[str, list[Known]] = {}
        for k in self.known:
            for h in k.hosts:
                self._exact.setdefault(h, []).append(k)

    def lookup(self, host: str, viewer: str | None) -> list[Service]:
        """Services visible from ``viewer`` (any namespace when ``None``) that ``host`` names."""
        if "*" in host:
            found = [k for k in self.known if any(host_matches(host, h) for h in k.hosts)]
        else:
            found = list(self._exact.get(host, []))
        out: list[Service] = []
        for k in found:
            if viewer is None or visible(k.exported, k.service.namespace, viewer):
                if k.service not in out:
                    out.append(k.service)
        return out

    def exists(self, host: str) -> bool:
        """True when ``host`` names a service, visible or not."""
        return bool(self.lookup(host, None))
