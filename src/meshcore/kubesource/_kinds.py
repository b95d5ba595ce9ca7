"""The kinds meshcore reads from a cluster: the core's and every installed adapter's."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..kube import CORE_KINDS, KubeObject, make_object
from ..registry import AdapterInfo, discover
from ._discovery import Resource

__all__ = ["NODE_KIND", "WRITTEN_STATUS_KEYS", "node_labels_only", "status_is_written", "to_object", "watched_kinds",
           "without_written_status"]

log = logging.getLogger("meshcore.kubesource")

#: The agent's own Node, for its labels.
NODE_KIND = ("v1", "Node")

#: The keys of an adapter kind's ``status`` that controllers (meshcore among them) write
#: and no translation reads: a change there is not a change of configuration.
WRITTEN_STATUS_KEYS = frozenset({"conditions", "parents", "listeners", "errors", "warnings"})


def watched_kinds(adapters: Sequence[AdapterInfo] | None = None) -> list[tuple[str, str]]:
    """(apiVersion, kind) of the core kinds and of every kind the adapters declare, sorted.

    ``adapters`` defaults to the installed, enabled ones; adapters that fail to load are
    logged and left out.
    """
    if adapters is None:
        adapters, errors = discover()
        for error in errors:
            log.warning("adapter %r (%s) not loaded, its kinds are not read: %s", error.name, error.distribution,
                        error.message)
    kinds = set(CORE_KINDS)
    for info in adapters:
        kinds.update((k.api_version, k.kind) for k in info.kinds)
    return sorted(kinds)


def status_is_written(api_version: str, kind: str) -> bool:
    """True for the kinds whose status controllers write (the adapters' kinds); the core's status is input."""
    return (api_version, kind) not in CORE_KINDS and (api_version, kind) != NODE_KIND


def without_written_status(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without the status keys controllers write (:data:`WRITTEN_STATUS_KEYS`), for change detection."""
    status = body.get("status")
    if not isinstance(status, Mapping) or not WRITTEN_STATUS_KEYS.intersection(status):
        return body
    return {**body, "status": {k: v for k, v in status.items() if k not in WRITTEN_STATUS_KEYS}}


def node_labels_only(body: dict[str, Any]) -> dict[str, Any]:
    """A Node reduced to its name and labels: its status changes every few seconds and means nothing here."""
    meta = body.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    kept = {k: meta[k] for k in ("name", "uid", "labels") if k in meta}
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": kept}


def to_object(body: Mapping[str, Any], resource: Resource, origin: str) -> KubeObject:
    """A cached body as a :class:`KubeObject` whose source is its URL, e.g. ``kube://prod/api/v1/namespaces/a/pods/b``."""
    meta = body.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    path = resource.object_path(str(meta.get("namespace") or ""), str(meta.get("name") or ""))
    return make_object(body, file=f"{origin}{path}", cluster_scoped=not resource.namespaced)
