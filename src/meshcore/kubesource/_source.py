"""The Kubernetes source: informers for every kind meshcore reads, handed out as a first snapshot, then changes."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._translator import ObjectKey
from ..agent import Changes, SourceError, Update
from ..kube import KubeObject
from ..model import Diagnostic, Severity, Source, WorkloadRef
from ._api import ApiError, ConfigError, KubeApi, Unreachable, connect
from ._backoff import Backoff
from ._codes import KubeSourceCode
from ._discovery import Resource, discover
from ._informer import Informer
from ._kinds import NODE_KIND, node_labels_only, status_is_written, to_object, watched_kinds, without_written_status
from ._node_pods import NodePods, find_pods, scheduled

__all__ = ["KubeSource", "not_served", "read_kube"]

log = logging.getLogger("meshcore.kubesource")


def not_served(origin: str, missing: Iterable[tuple[str, str]]) -> list[Diagnostic]:
    """One warning per API group whose kinds (group, kind) the API server does not serve."""
    by_group: dict[str, list[str]] = {}
    for group, kind in sorted(missing):
        by_group.setdefault(group, []).append(kind)
    out = []
    for group, kinds in by_group.items():
        what = f"{', '.join(kinds)} ({group or 'core'})"
        out.append(Diagnostic(KubeSourceCode.KIND_NOT_SERVED, Severity.WARNING,
                              f"the API server does not serve {what}: objects of "
                              f"{'this kind' if len(kinds) == 1 else 'these kinds'} are not read (are the "
                              "CustomResourceDefinitions installed?)",
                              Source(kind=kinds[0], file=f"{origin}/apis/{group}" if group else f"{origin}/api"),
                              "kind"))
    return out


def _significant(resource: Resource, body: dict[str, Any]) -> Mapping[str, Any]:
    """What of a cached body counts as a change: all of it, but the status controllers write on the adapters' kinds."""
    return without_written_status(dict(body)) if status_is_written(resource.api_version, resource.kind) else body


class KubeSource:
    """Every object of the watched kinds, kept current by informers; a :class:`~meshcore.agent.SnapshotSource`.

    Each kind is listed, then watched from the list's resourceVersion with bookmarks;
    410 Gone relists, errors back off (capped, exponential). A burst of events becomes
    one :class:`~meshcore.agent.Update`: :meth:`poll` waits until no event came for
    ``settle`` seconds, or ``max_delay`` seconds after the first. The first update holds
    every object, later ones only the :class:`~meshcore.agent.Changes` since the previous
    one (a relist that changed objects, or a kind read for the first time, hands out every
    object again). A relist that finds the same objects (an API server restart, an expired
    watch) makes no new generation.

    The status controllers write on the adapters' kinds (conditions, route parents,
    listeners: :data:`~._kinds.WRITTEN_STATUS_KEYS`) is kept but is no change: writing
    status back makes no new generation on any node.

    Kinds the API server does not serve are skipped with a warning (MC0500) and looked
    for again every ``rediscover`` seconds. With ``node``, that Node's labels are read
    too (the agent compiles for its node). ``interfaces`` are handed out with every
    update when given. Otherwise, with ``node`` and ``pods_cgroup`` (the kubelet's cgroup
    root on the cgroup v2 hierarchy), each update carries where the node's pods live —
    host-side interfaces and sandboxes — found by :func:`~._node_pods.find_pods` when the
    pods change and every ``rescan`` seconds (a sandbox made after its pod was scheduled
    is picked up then); pods not found are reported (MC0501) and not attached.
    ``host_netns`` is the namespace of the pods' host-side interfaces (None: this one).
    """

    def __init__(self, api: KubeApi | None = None, *, context: str | None = None,
                 kubeconfig: str | os.PathLike[str] | None = None, kinds: Iterable[tuple[str, str]] | None = None,
                 node: str = "", interfaces: Mapping[WorkloadRef, str] | None = None, settle: float = 0.2,
                 max_delay: float = 2.0, rediscover: float = 60.0, watch_seconds: int = 300,
                 backoff: Callable[[], Backoff] = Backoff, pods_cgroup: str | os.PathLike[str] | None = None,
                 host_netns: str | None = None, rescan: float = 5.0) -> None:
        self.api = api if api is not None else connect(context, kubeconfig)
        self.kinds = sorted(set(kinds if kinds is not None else watched_kinds()) | ({NODE_KIND} if node else set()))
        self.node = node
        self.interfaces = None if interfaces is None else dict(interfaces)
        #: The kubelet's cgroup root, when the node's pods are looked for there.
        self.pods_cgroup = Path(pods_cgroup) if pods_cgroup is not None and interfaces is None and node else None
        self.host_netns = host_netns
        self.rescan = rescan
        self._pods_delivered: NodePods | None = None
        self.settle = settle
        self.max_delay = max_delay
        self.rediscover = rediscover
        self.watch_seconds = watch_seconds
        self._backoff = backoff
        self._informers: dict[tuple[str, str], Informer] = {}
        #: (group, kind) of the kinds not served (yet).
        self._missing: list[tuple[str, str]] = []
        self._discovered = False
        self._error = ""
        self._reported_error = ""
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._dirty = True
        self._notified = False
        self._first_change = 0.0
        self._last_change = 0.0
        #: What the last update handed out, by object key: the content that counts (None before the first).
        self._delivered: dict[ObjectKey, Mapping[str, Any]] | None = None
        self._generation = 0
        self._listeners: list[Callable[[], None]] = []
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ life cycle

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on a source thread) when a new update is ready, e.g. ``AgentRunner.wake``."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Start discovery and the informers in the background (:meth:`poll` does it on first use)."""
        if self._threads:
            return
        loops = [(self._supervise, "kube-discovery"), (self._notify_loop, "kube-notify")]
        if self.pods_cgroup is not None and self.rescan > 0:
            loops.append((self._rescan_loop, "kube-node-pods"))
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop the informers and close the connections."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self.api.close()
        for thread in self._threads:
            thread.join(timeout=2.0)

    def __enter__(self) -> KubeSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ discovery

    def _supervise(self) -> None:
        """Find the resources of the kinds (again and again for those not served) and start their informers."""
        backoff = self._backoff()
        while not self._stop.is_set():
            looked_for = [k for k in self.kinds if not self._discovered
                          or (k[0].rpartition("/")[0], k[1]) in self._missing]
            try:
                found, still_missing = discover(self.api, looked_for)
            except (ApiError, Unreachable, ConfigError) as exc:
                self._error = f"cannot read the API server's discovery documents: {exc}"
                delay = backoff.next()
                log.warning("%s; retrying in %.1fs", self._error, delay)
                self._wake_listeners()
                self._stop.wait(delay)
                continue
            backoff.reset()
            self._error = ""
            if not self._discovered:
                for diagnostic in not_served(self.api.origin, still_missing):
                    log.warning("%s", diagnostic.message)
            for resource in found:
                self._start_informer(resource)
                if self._discovered:
                    log.info("%s %s is served now; reading it", resource.kind, resource.api_version)
            with self._cond:
                self._missing = still_missing
                self._discovered = True
                self._changed_locked()
            if self.rediscover <= 0 or not still_missing:
                return
            self._stop.wait(self.rediscover)

    def _start_informer(self, resource: Resource) -> None:
        node = (resource.api_version, resource.kind) == NODE_KIND and self.node
        written = status_is_written(resource.api_version, resource.kind)
        informer = Informer(self.api, resource, on_change=self._changed, backoff=self._backoff(),
                            field_selector=f"metadata.name={self.node}" if node else "",
                            slim=node_labels_only if node else None, watch_seconds=self.watch_seconds,
                            significant=without_written_status if written else None)
        with self._cond:
            self._informers[(resource.api_version, resource.kind)] = informer
        thread = threading.Thread(target=informer.run, args=(self._stop,), name=f"kube-{resource.plural}",
                                  daemon=True)
        thread.start()
        self._threads.append(thread)

    # ------------------------------------------------------------------ changes

    def _changed(self) -> None:
        with self._cond:
            self._changed_locked()

    def _changed_locked(self) -> None:
        now = time.monotonic()
        if not self._dirty:
            self._first_change = now
        self._dirty = True
        self._notified = False
        self._last_change = now
        self._cond.notify_all()

    def _due(self) -> float:
        """When the pending changes may be handed out (monotonic time)."""
        return min(self._last_change + self.settle, self._first_change + self.max_delay)

    def _notify_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                if not self._dirty or self._notified or not self.synced:
                    self._cond.wait(1.0)
                    continue
                wait = self._due() - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                self._notified = True
            self._wake_listeners()

    def _wake_listeners(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception as exc:  # noqa: BLE001 - a listener's bug must not stop the source
                log.error("update listener failed: %r", exc)

    # ------------------------------------------------------------------ the node's pods

    def node_pods(self) -> NodePods | None:
        """Where the cached pods scheduled to this node live; None when they are not looked for."""
        if self.pods_cgroup is None:
            return None
        with self._cond:
            informer = self._informers.get(("v1", "Pod"))
        bodies = informer.items() if informer is not None else []
        return find_pods(scheduled(bodies, self.node), self.pods_cgroup, host_netns=self.host_netns)

    def _rescan_loop(self) -> None:
        """Look at the node again every ``rescan`` seconds; a difference makes a new update."""
        while not self._stop.wait(self.rescan):
            if not self.synced:
                continue
            try:
                found = self.node_pods()
            except Exception as exc:  # noqa: BLE001 - the next look may succeed; the last update stands
                log.error("cannot look for this node's pods: %r", exc)
                continue
            if found != self._pods_delivered:
                self._changed()

    def _pod_diagnostics(self, found: NodePods) -> list[Diagnostic]:
        """A warning per scheduled pod not found on the node (host-network pods have nothing to find)."""
        with self._cond:
            pods = self._informers.get(("v1", "Pod"))
        out = []
        for missing in found.missing:
            if missing.host_network:
                continue
            ref = missing.ref
            body = pods.get(ref.namespace, ref.name) if pods is not None else None
            source = (to_object(body, pods.resource, self.api.origin).source if body is not None and pods is not None
                      else Source(kind="Pod", namespace=ref.namespace, name=ref.name))
            out.append(Diagnostic(KubeSourceCode.POD_NOT_ON_NODE, Severity.WARNING,
                                  f"pod {ref} is scheduled to node {self.node} but was not found on it: "
                                  f"{missing.reason}; no policy is attached for it", source, "metadata.uid"))
        return out

    # ------------------------------------------------------------------ snapshots

    @property
    def synced(self) -> bool:
        """True once every served kind has been listed."""
        return self._discovered and all(i.synced.is_set() for i in self.informers)

    def diagnostics(self) -> tuple[Diagnostic, ...]:
        """Warnings about the source: kinds the API server does not serve."""
        return tuple(not_served(self.api.origin, self._missing))

    def objects(self) -> list[KubeObject]:
        """Every cached object, by kind, namespace and name."""
        out = []
        for informer in self.informers:
            out += [to_object(body, informer.resource, self.api.origin) for body in informer.items()]
        return out

    def poll(self) -> Update | None:
        """What changed since the last update, once the changes have settled; else None.

        The first update (and the first after a relist that changed the cache) holds
        every object; later ones carry only :class:`~meshcore.agent.Changes`: the objects
        added or modified and the keys deleted since the previous update, folded per
        object (added then deleted is nothing, modified twice is the latest). An update
        whose only news is where the node's pods live carries empty changes. Before the
        first complete list it returns None, or raises :class:`~meshcore.agent.SourceError`
        once for each new reason the API server cannot be read.
        """
        self.start()
        with self._cond:
            if not self.synced:
                error = self._error or next((i.last_error for i in self.informers if i.last_error), "")
                if error and error != self._reported_error:
                    self._reported_error = error
                    raise SourceError(error)
                return None
            if not self._dirty or (self._delivered is not None and time.monotonic() < self._due()):
                return None
            self._dirty = False
        try:
            found = self.node_pods()  # before the changes are taken: an error here loses none of them
        except OSError as exc:
            raise SourceError(f"cannot look for this node's pods: {exc}") from None
        informers = self.informers
        changes = self._changes(informers) if self._delivered is not None else None
        if changes is None:
            objects = self._everything(informers)
        elif not changes.upserted and not changes.deleted and found == self._pods_delivered:
            return None
        self._pods_delivered = found
        self._generation += 1
        diagnostics = self.diagnostics()
        interfaces = self.interfaces
        sandboxes = None
        if found is not None:
            diagnostics = (*diagnostics, *self._pod_diagnostics(found))
            interfaces, sandboxes = found.interfaces(), found.sandboxes()
        if changes is None:
            return Update(self._generation, tuple(objects), interfaces, diagnostics, sandboxes=sandboxes)
        return Update(self._generation, (), interfaces, diagnostics, changes, sandboxes)

    def _everything(self, informers: Sequence[Informer]) -> list[KubeObject]:
        """Every cached object; what is handed out is remembered as delivered."""
        objects: list[KubeObject] = []
        delivered: dict[ObjectKey, Mapping[str, Any]] = {}
        for informer in informers:
            resource = informer.resource
            for body in informer.take_items():
                obj = to_object(body, resource, self.api.origin)
                objects.append(obj)
                delivered[(resource.api_version, resource.kind, obj.namespace, obj.name)] = _significant(
                    resource, body)
        self._delivered = delivered
        return objects

    def _changes(self, informers: Sequence[Informer]) -> Changes | None:
        """What changed since the last update, folded per object; None when only every object can tell."""
        delivered = self._delivered
        assert delivered is not None
        taken = []
        for informer in informers:
            found = informer.take_changes()
            if found is None:
                return None  # a list changed the cache: every object is read again (and every journal reset)
            taken.append((informer.resource, found))
        upserted: list[KubeObject] = []
        deleted: list[ObjectKey] = []
        for resource, found in taken:
            for (namespace, name), body in found.items():
                key = (resource.api_version, resource.kind, namespace, name)
                if body is None:
                    if delivered.pop(key, None) is not None:
                        deleted.append(key)
                    continue
                significant = _significant(resource, body)
                if delivered.get(key) != significant:
                    delivered[key] = significant
                    upserted.append(to_object(body, resource, self.api.origin))
        return Changes(tuple(upserted), tuple(deleted))

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every served kind is listed; False when ``timeout`` ran out first."""
        deadline = time.monotonic() + timeout
        while not self.synced:
            if time.monotonic() > deadline or self._stop.is_set():
                return False
            time.sleep(0.02)
        return True

    def resource(self, api_version: str, kind: str) -> Resource | None:
        """How the server serves ``kind`` in ``api_version`` (as read here), or None when it is not read."""
        with self._cond:
            informer = self._informers.get((api_version, kind))
        return informer.resource if informer is not None else None

    def cached(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The cached body of one object as the informers hold it now, or None."""
        with self._cond:
            informer = self._informers.get((api_version, kind))
        return informer.get(namespace, name) if informer is not None else None

    @property
    def informers(self) -> Sequence[Informer]:
        """The running informers, one per served kind."""
        with self._cond:
            return [self._informers[k] for k in sorted(self._informers)]


def read_kube(address: str = "", timeout: float = 10.0, *, context: str | None = None,
              kubeconfig: str | os.PathLike[str] | None = None) -> list[KubeObject]:
    """Every object of the watched kinds, listed once (the ``meshcore.sources`` entry ``kube``).

    ``address`` is a kubeconfig context (``--from kube=CONTEXT``); empty means the current
    one, or the in-cluster configuration in a pod. Kinds the server does not serve are
    logged as warnings and skipped.
    """
    api = connect(context or address or None, kubeconfig, timeout=timeout)
    try:
        resources, missing = discover(api, watched_kinds())
        for diagnostic in not_served(api.origin, missing):
            log.warning("%s", diagnostic.message)
        objects = []
        for resource in sorted(resources):
            informer = Informer(api, resource)
            informer.relist()
            objects += [to_object(body, resource, api.origin) for body in informer.items()]
        return objects
    finally:
        api.close()
