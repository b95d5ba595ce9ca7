"""One resource kept in a local cache: list, then watch from the list's resourceVersion.

What the API server promises and how it is used here:

- A list answers at one resourceVersion; a watch from it delivers every later change
  exactly once, in order.
- Bookmarks (``allowWatchBookmarks``) carry only a newer resourceVersion, so a quiet
  resource still resumes from a recent point after its watch ends.
- A resourceVersion older than the server keeps is answered 410 Gone (an HTTP status or
  an ERROR event): the cache is rebuilt from a new list, and only a real difference
  counts as a change.
- A watch that ends normally (the server's ``timeoutSeconds``) is resumed; errors and
  broken connections are retried after a capped exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._api import ApiError, KubeApi, Unreachable
from ._backoff import Backoff
from ._discovery import Resource

__all__ = ["Informer", "Slimmer"]

log = logging.getLogger("meshcore.kubesource")

#: Reduces an object's body to what is kept (e.g. a Node to its labels).
Slimmer = Callable[[dict[str, Any]], dict[str, Any]]

#: A watch that ends this soon without a single event is treated as a failure (backoff).
SHORT_WATCH_SECONDS = 1.0

Key = tuple[str, str]


def _metadata(body: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = body.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _key(body: Mapping[str, Any]) -> Key:
    meta = _metadata(body)
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class Informer:
    """A local cache of one resource, kept current by list and watch on a thread of its own.

    ``on_change`` is called (on the informer's thread) after the first list and whenever
    the cache content changed; a relist that finds what the cache holds is no change.
    :meth:`take_changes` says which objects changed since it was last asked (or
    :meth:`take_items` read them all), so a reader can pass on only those. Bodies are stored without
    ``metadata.resourceVersion`` and ``metadata.managedFields``, which change without
    meaning anything to the mesh. With ``significant``, only a change of what it returns
    for a body counts (the cache still keeps the whole new body): e.g. the status meshcore
    itself writes back is not configuration.
    """

    def __init__(self, api: KubeApi, resource: Resource, *, on_change: Callable[[], None] = lambda: None,
                 field_selector: str = "", slim: Slimmer | None = None, backoff: Backoff | None = None,
                 watch_seconds: int = 300, page_size: int = 500, significant: Slimmer | None = None) -> None:
        self.api = api
        self.resource = resource
        self.on_change = on_change
        self.field_selector = field_selector
        self.slim = slim
        self.significant = significant
        self.backoff = backoff or Backoff()
        self.watch_seconds = watch_seconds
        self.page_size = page_size
        #: The resourceVersion the next watch starts from ("" before the first list and after 410 Gone).
        self.resource_version = ""
        #: Set once the first list is in the cache.
        self.synced = threading.Event()
        #: Lists made so far (the first and every relist after 410 Gone).
        self.lists = 0
        #: The last error met, "" after a success.
        self.last_error = ""
        self._cache: dict[Key, dict[str, Any]] = {}
        #: Keys whose content changed since the last take; None once a list changed the cache
        #: (what changed in between is not known event by event).
        self._touched: set[Key] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Informer({self.resource.kind} {self.resource.api_version})"

    # ------------------------------------------------------------------ the cache

    def items(self) -> list[dict[str, Any]]:
        """The cached objects, ordered by namespace and name."""
        with self._lock:
            return [self._cache[k] for k in sorted(self._cache)]

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The cached object ``namespace/name`` (namespace "" when cluster-scoped), or None."""
        with self._lock:
            return self._cache.get((namespace, name))

    def take_items(self) -> list[dict[str, Any]]:
        """:meth:`items`, and from now on :meth:`take_changes` counts from them."""
        with self._lock:
            self._touched = set()
            return [self._cache[k] for k in sorted(self._cache)]

    def take_changes(self) -> dict[Key, dict[str, Any] | None] | None:
        """Each object changed since the last take, as cached now (None: deleted); None when only a full read can tell.

        That is before the first take and after a list that changed the cache. A change
        undone before the take (an object added then deleted) is still named here: the
        caller compares with what it passed on. Changes ``significant`` ignores are not named.
        """
        with self._lock:
            touched = self._touched
            if touched is None:
                return None
            self._touched = set()
            return {k: self._cache.get(k) for k in sorted(touched)}

    def _touch(self, key: Key) -> None:
        if self._touched is not None:
            self._touched.add(key)

    def _differ(self, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
        if old is None or self.significant is None:
            return old != new
        return self.significant(dict(old)) != self.significant(dict(new))

    def _stored(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The body as cached: apiVersion and kind filled in (lists leave them out), volatile metadata dropped."""
        out = dict(body)
        out["apiVersion"] = self.resource.api_version
        out["kind"] = self.resource.kind
        meta = {k: v for k, v in _metadata(body).items() if k not in ("resourceVersion", "managedFields")}
        out["metadata"] = meta
        return self.slim(out) if self.slim is not None else out

    def _put(self, body: Mapping[str, Any]) -> bool:
        stored = self._stored(body)
        key = _key(stored)
        with self._lock:
            changed = self._differ(self._cache.get(key), stored)
            self._cache[key] = stored
            if changed:
                self._touch(key)
        return changed

    def _drop(self, body: Mapping[str, Any]) -> bool:
        key = _key(body)
        with self._lock:
            if self._cache.pop(key, None) is None:
                return False
            self._touch(key)
            return True

    # ------------------------------------------------------------------ list

    def _params(self) -> dict[str, str]:
        return {"fieldSelector": self.field_selector} if self.field_selector else {}

    def relist(self) -> None:
        """Replace the cache with a fresh list (in pages); ``on_change`` only when the content differs."""
        items: dict[Key, dict[str, Any]] = {}
        params = {**self._params(), "limit": str(self.page_size)}
        version = ""
        while True:
            page = self.api.get(self.resource.path, params)
            meta = _metadata(page)
            version = version or str(meta.get("resourceVersion") or "")
            for body in page.get("items") or ():
                if isinstance(body, Mapping):
                    stored = self._stored(body)
                    items[_key(stored)] = stored
            token = str(meta.get("continue") or "")
            if not token:
                break
            params = {**self._params(), "limit": str(self.page_size), "continue": token}
        with self._lock:
            changed = (not self.synced.is_set() or items.keys() != self._cache.keys()
                       or any(self._differ(self._cache[k], body) for k, body in items.items()))
            self._cache = items
            if changed:
                self._touched = None
        self.resource_version = version
        self.lists += 1
        self.synced.set()
        if changed:
            self.on_change()

    # ------------------------------------------------------------------ watch

    def _handle(self, event: Mapping[str, Any]) -> None:
        kind = str(event.get("type") or "")
        body = event.get("object")
        body = body if isinstance(body, Mapping) else {}
        if kind == "ERROR":
            raise ApiError(int(body.get("code") or 500), str(body.get("reason") or "Error"),
                           str(body.get("message") or ""), self.resource.path)
        version = str(_metadata(body).get("resourceVersion") or "")
        if kind in ("ADDED", "MODIFIED"):
            changed = self._put(body)
        elif kind == "DELETED":
            changed = self._drop(body)
        elif kind == "BOOKMARK":
            changed = False
        else:
            log.warning("%s: watch event of unknown type %r ignored", self.resource.path, kind)
            return
        if version:
            self.resource_version = version
        if changed:
            self.on_change()

    def watch(self, stop: threading.Event) -> None:
        """Follow changes from :attr:`resource_version` until the server ends the watch or ``stop`` is set."""
        params = {**self._params(), "watch": "1", "resourceVersion": self.resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(self.watch_seconds)}
        started = time.monotonic()
        events = 0
        stream = self.api.watch(self.resource.path, params, timeout=self.watch_seconds + 30.0)
        try:
            for event in stream:
                if stop.is_set():
                    return
                self._handle(event)
                events += 1
                self.backoff.reset()
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if not events and not stop.is_set() and time.monotonic() - started < SHORT_WATCH_SECONDS:
            raise Unreachable(f"{self.resource.path}: the watch ended at once without an event")

    # ------------------------------------------------------------------ the loop

    def step(self, stop: threading.Event) -> float:
        """One list-or-watch round; the seconds to wait before the next (0 to go on at once)."""
        try:
            if not self.resource_version:
                self.relist()
                self.backoff.reset()
            self.watch(stop)
        except ApiError as exc:
            if exc.gone:
                log.info("%s: resourceVersion %s is gone (%s); listing again", self.resource.path,
                         self.resource_version or "-", exc.message or exc.reason)
                self.resource_version = ""
                self.last_error = ""
                return 0.0
            return self._failed(str(exc))
        except Unreachable as exc:
            if stop.is_set():
                return 0.0  # the connection was closed to stop: nothing failed
            return self._failed(str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug or a surprise answer must not end the watch
            return self._failed(f"{self.resource.path}: {type(exc).__name__}: {exc}")
        self.last_error = ""
        return 0.0

    def _failed(self, message: str) -> float:
        delay = self.backoff.next()
        level = logging.WARNING if self.backoff.failures <= 1 or message != self.last_error else logging.DEBUG
        log.log(level, "%s; retrying in %.1fs", message, delay)
        self.last_error = message
        return delay

    def run(self, stop: threading.Event) -> None:
        """List and watch until ``stop`` is set."""
        while not stop.is_set():
            delay = self.step(stop)
            if delay:
                stop.wait(delay)
