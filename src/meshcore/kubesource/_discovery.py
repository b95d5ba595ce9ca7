"""Which resources serve the kinds meshcore reads: the API server's discovery documents."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._api import ApiError, KubeApi

__all__ = ["Resource", "discover", "group_version_path", "version_priority"]


def group_version_path(api_version: str) -> str:
    """``/api/v1`` for the core group, else ``/apis/<group>/<version>``."""
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


@attrs.frozen(order=True)
class Resource:
    """A kind as the API server serves it: its collection's plural name, whether it is namespaced.

    ``status`` is True when the server serves its ``status`` subresource (where a
    controller writes status; a CRD without one has nowhere to write it).
    """

    api_version: str
    kind: str
    plural: str
    namespaced: bool
    status: bool = False

    @property
    def path(self) -> str:
        """The collection across all namespaces, e.g. ``/apis/apps/v1/deployments``."""
        return f"{group_version_path(self.api_version)}/{self.plural}"

    def object_path(self, namespace: str, name: str) -> str:
        """The path of one object of this resource."""
        where = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{group_version_path(self.api_version)}{where}/{self.plural}/{name}"

    def status_path(self, namespace: str, name: str) -> str:
        """The path of one object's ``status`` subresource."""
        return f"{self.object_path(namespace, name)}/status"


def _entries(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = document.get("resources")
    return [e for e in found if isinstance(e, Mapping)] if isinstance(found, list) else []


def version_priority(version: str) -> tuple[int, int, int]:
    """Sort key putting the versions Kubernetes prefers first: GA, then beta, then alpha, newest first."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (3, 0, 0)
    stage = {None: 0, "beta": 1, "alpha": 2}[match.group(2)]
    return (stage, -int(match.group(1)), -int(match.group(3) or 0))


def _served_groups(api: KubeApi) -> dict[str, tuple[str, list[str]]]:
    """Each served API group: its preferred version and all its versions."""
    out: dict[str, tuple[str, list[str]]] = {}
    for group in api.get("/apis").get("groups") or ():
        if not isinstance(group, Mapping):
            continue
        versions = [str(v.get("version")) for v in group.get("versions") or () if isinstance(v, Mapping)]
        preferred = group.get("preferredVersion")
        out[str(group.get("name"))] = (str(preferred.get("version")) if isinstance(preferred, Mapping) else "",
                                       versions)
    return out


def discover(api: KubeApi, kinds: Iterable[tuple[str, str]]) -> tuple[list[Resource], list[tuple[str, str]]]:
    """The resources serving ``kinds`` (apiVersion, kind), one version per kind, and the kinds not served.

    A kind declared in several versions of its group (HTTPRoute v1 and v1beta1) is read
    in one of them only, as the same objects are served in each: the group's preferred
    version when declared, else the one Kubernetes would prefer. Not served are the
    kinds none of whose versions the server serves (their CRD is not installed); they
    are returned as (group, kind). Errors other than 404 are raised (:class:`ApiError`,
    ``Unreachable``).
    """
    wanted: dict[tuple[str, str], set[str]] = defaultdict(set)
    for api_version, kind in kinds:
        group, _, version = api_version.rpartition("/")
        wanted[(group, kind)].add(version)
    groups = _served_groups(api) if any(group for group, _ in wanted) else {}
    documents: dict[str, dict[str, Mapping[str, Any]] | None] = {}
    with_status: set[tuple[str, str]] = set()

    def served_kinds(api_version: str) -> dict[str, Mapping[str, Any]] | None:
        if api_version not in documents:
            try:
                document = api.get(group_version_path(api_version))
            except ApiError as exc:
                if exc.status != 404:
                    raise
                documents[api_version] = None
            else:
                entries = _entries(document)
                documents[api_version] = {str(e.get("kind")): e for e in entries if "/" not in str(e.get("name", ""))}
                with_status.update((api_version, str(e["name"]).partition("/")[0]) for e in entries
                                   if str(e.get("name", "")).endswith("/status"))
        return documents[api_version]

    found: list[Resource] = []
    missing: list[tuple[str, str]] = []
    for (group, kind), versions in sorted(wanted.items()):
        if group:
            preferred, served = groups.get(group, ("", []))
            candidates = sorted((v for v in versions if v in served),
                                key=lambda v: (v != preferred, version_priority(v)))
        else:
            candidates = sorted(versions, key=version_priority)
        for version in candidates:
            api_version = f"{group}/{version}" if group else version
            entry = (served_kinds(api_version) or {}).get(kind)
            if entry is not None:
                plural = str(entry["name"])
                found.append(Resource(api_version, kind, plural, bool(entry.get("namespaced")),
                                      (api_version, plural) in with_status))
                break
        else:
            missing.append((group, kind))
    return found, missing
