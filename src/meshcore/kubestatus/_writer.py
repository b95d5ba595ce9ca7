"""One pass of status write-back: each computed status compared with the object's, written only when it differs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from ..adapter import ObjectStatus
from ..kubesource import ApiError, Informer, KubeApi, Resource, Unreachable, status_is_written
from ._lease import rfc3339
from ._merge import merge_patch, ours, status_to_write

__all__ = ["MERGE_PATCH", "StatusCache", "StatusWriter", "WriteResult"]

log = logging.getLogger("meshcore.kubestatus")

MERGE_PATCH = "application/merge-patch+json"

#: Turns an object's current status into the one it should hold.
Desired = Callable[[Mapping[str, Any]], dict[str, Any]]


class StatusCache(Protocol):
    """Where the writer finds the objects as they are now (the agent's :class:`~meshcore.kubesource.KubeSource`)."""

    def resource(self, api_version: str, kind: str) -> Resource | None:
        """How the server serves the kind, or None when it is not read."""

    def cached(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as last seen, or None."""

    @property
    def informers(self) -> Sequence[Informer]:
        """Every kind read, with its cached objects."""


@attrs.define
class WriteResult:
    """What one pass wrote (``Kind namespace/name``), left as it was, and could not write."""

    written: list[str] = attrs.field(factory=list)
    unchanged: int = 0
    not_written: list[str] = attrs.field(factory=list)
    failed: list[str] = attrs.field(factory=list)


def _label(kind: str, namespace: str, name: str) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _status(body: Mapping[str, Any] | None) -> Mapping[str, Any]:
    status = body.get("status") if body is not None else None
    return status if isinstance(status, Mapping) else {}


def _desired(item: ObjectStatus, now: str) -> Desired:
    def desired(current: Mapping[str, Any]) -> dict[str, Any]:
        return status_to_write(current, item.status, now)
    return desired


def _without_our_parents(current: Mapping[str, Any]) -> dict[str, Any]:
    return {**current, "parents": [p for p in current.get("parents") or () if not ours(p)]}


class StatusWriter:
    """Writes computed statuses to the objects' ``status`` subresources, only where they differ.

    Each status is first compared with the object's status as the cache holds it: equal
    (``lastTransitionTime`` of unchanged conditions kept) means no request at all.
    Otherwise the object is read afresh and, if it still differs, a JSON merge patch
    carrying the resourceVersion read is sent (a conflict reads again, up to ``attempts``
    times). Routes that no longer have a status from meshcore lose meshcore's entries
    in ``status.parents``; other controllers' entries are never touched. ``may_write``
    is asked before every write (the writer stops as soon as its Lease is lost).
    """

    def __init__(self, api: KubeApi, cache: StatusCache, *, may_write: Callable[[], bool] = lambda: True,
                 wall: Callable[[], float] = time.time, attempts: int = 3) -> None:
        self.api = api
        self.cache = cache
        self.may_write = may_write
        self.wall = wall
        self.attempts = attempts
        self._told: set[str] = set()

    def write(self, statuses: Sequence[ObjectStatus]) -> WriteResult:
        """Bring every object's status in line with ``statuses``; what was done."""
        result = WriteResult()
        now = rfc3339(self.wall())
        computed: set[tuple[str, str, str, str]] = set()
        for item in statuses:
            computed.add((item.api_version, item.kind, item.namespace, item.name))
            self._write_one(item.api_version, item.kind, item.namespace, item.name, _desired(item, now), result)
        for informer in self.cache.informers:
            resource = informer.resource
            if not status_is_written(resource.api_version, resource.kind):
                continue
            for body in informer.items():
                meta = body.get("metadata") or {}
                key = (resource.api_version, resource.kind, str(meta.get("namespace") or ""), str(meta.get("name")))
                if key not in computed and any(ours(p) for p in _status(body).get("parents") or ()):
                    self._write_one(*key, _without_our_parents, result)
        return result

    def _write_one(self, api_version: str, kind: str, namespace: str, name: str, desired: Desired,
                   result: WriteResult) -> None:
        label = _label(kind, namespace, name)
        resource = self.cache.resource(api_version, kind)
        if resource is None:
            result.not_written.append(f"{label}: {kind} {api_version} is not read")
            return
        if not resource.status:
            self._once(f"status:{api_version}/{kind}", logging.INFO,
                       f"{kind} {api_version} has no status subresource on this API server (its "
                       "CustomResourceDefinition declares none): its status is not written back")
            result.not_written.append(f"{label}: no status subresource")
            return
        body = self.cache.cached(api_version, kind, namespace, name)
        if body is None:
            return  # deleted since it was translated
        current = _status(body)
        if desired(current) == current:
            result.unchanged += 1
            return
        path = resource.status_path(namespace, name)
        for _ in range(self.attempts):
            if not self.may_write():
                result.not_written.append(f"{label}: no longer leading")
                return
            try:
                fresh = self.api.get(path)
                current = _status(fresh)
                wanted = desired(current)
                if wanted == current:
                    result.unchanged += 1
                    return
                version = str((fresh.get("metadata") or {}).get("resourceVersion") or "")
                self.api.send("PATCH", path, {"metadata": {"resourceVersion": version},
                                              "status": merge_patch(current, wanted)}, content_type=MERGE_PATCH)
            except ApiError as exc:
                if exc.conflict:
                    continue  # changed since read: read again
                if exc.not_found:
                    return  # deleted meanwhile
                if exc.forbidden:
                    self._once(f"forbidden:{resource.plural}", logging.ERROR,
                               f"not allowed to write {resource.plural}/status (get and patch): {exc.message or exc}; "
                               "the agent's ClusterRole needs them (see deploy/base)")
                else:
                    log.warning("status of %s not written: %s", label, exc)
                result.failed.append(f"{label}: {exc.reason}")
                return
            except Unreachable as exc:
                log.warning("status of %s not written: %s", label, exc)
                result.failed.append(f"{label}: unreachable")
                return
            result.written.append(label)
            return
        result.failed.append(f"{label}: changed by others {self.attempts} times while being written")

    def _once(self, key: str, level: int, message: str) -> None:
        if key not in self._told:
            self._told.add(key)
            log.log(level, "%s", message)
