"""Which resources serve the kinds meshcore reads: the API server's discovery documents."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._api import ApiError, KubeApi

__all__ = ["Resource", "discover", "group_version_path"]


def group_version_path(api_version: str) -> str:
    """``/api/v1`` for the core group, else ``/apis/<group>/<version>``."""
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


@attrs.frozen(order=True)
class Resource:
    """A kind as the API server serves it: its collection's plural name and whether it is namespaced."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def path(self) -> str:
        """The collection across all namespaces, e.g. ``/apis/apps/v1/deployments``."""
        return f"{group_version_path(self.api_version)}/{self.plural}"

    def object_path(self, namespace: str, name: str) -> str:
        """The path of one object of this resource."""
        where = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{group_version_path(self.api_version)}{where}/{self.plural}/{name}"


def _entries(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = document.get("resources")
    return [e for e in found if isinstance(e, Mapping)] if isinstance(found, list) else []


def discover(api: KubeApi, kinds: Iterable[tuple[str, str]]) -> tuple[list[Resource], list[tuple[str, str]]]:
    """The resources serving ``kinds`` (apiVersion, kind) and the kinds the server does not serve.

    A group version the server does not know (404: its CRD is not installed) leaves its
    kinds not served; any other error is raised (:class:`ApiError`, ``Unreachable``).
    """
    by_version: dict[str, list[str]] = defaultdict(list)
    for api_version, kind in sorted(set(kinds)):
        by_version[api_version].append(kind)
    found: list[Resource] = []
    missing: list[tuple[str, str]] = []
    for api_version, wanted in by_version.items():
        try:
            document = api.get(group_version_path(api_version))
        except ApiError as exc:
            if exc.status != 404:
                raise
            missing += [(api_version, kind) for kind in wanted]
            continue
        served = {str(e.get("kind")): e for e in _entries(document) if "/" not in str(e.get("name", ""))}
        for kind in wanted:
            entry = served.get(kind)
            if entry is None:
                missing.append((api_version, kind))
            else:
                found.append(Resource(api_version, kind, str(entry["name"]), bool(entry.get("namespaced"))))
    return found, missing
