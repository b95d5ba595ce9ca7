"""A translation kept up to date as objects change, at the cost of what a change touches.

:class:`Translator` holds the current objects and what translating them produced (the
core translation, each adapter's fragment, the Snapshot). :meth:`Translator.update`
takes objects added, changed or removed; when the change is one the core translation
can apply on its own (EndpointSlices, a Pod whose readiness moved; see
:mod:`meshcore.kube._scoped`), only the Services it touches are rebuilt and the new
Snapshot is the previous one with those Services replaced
(:meth:`~meshcore.model.Snapshot.replacing_services`, which compile recognises). Adapters
that have objects translate again when a Service changed (their output may depend on
backends) and, if what they give is unchanged, their previous fragments are kept.
Anything else — another kind, a Namespace, a policy, an adapter's object — translates
everything again. Either way the result is what :func:`meshcore.translate_objects` gives
for the current objects (:attr:`Translator.objects`), except that a translation of a
change lists in ``objects`` only the objects it read: those that changed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ._translate import CORE, IGNORED, Parts, Translation, diagnostic_order, route_of, run_adapters
from .adapter import Adapter
from .kube import KubeObject, load_objects, unknown_fields
from .kube._gc import gc_paused
from .kube._scoped import CoreChange, apply_scoped
from .model import Diagnostic, ServiceRef
from .registry import discover, wrap

__all__ = ["ObjectKey", "Translator", "object_key"]

#: (apiVersion, kind, namespace, name): what identifies an input object.
ObjectKey = tuple[str, str, str, str]


def object_key(obj: KubeObject) -> ObjectKey:
    """The object's (apiVersion, kind, namespace, name)."""
    return (obj.api_version, obj.kind, obj.namespace, obj.name)


def unchanged(old: KubeObject, new: KubeObject) -> bool:
    """True when ``new`` is ``old`` again: read from the same place, with the same resourceVersion or else the same content."""
    if old is new:
        return True
    if old.source != new.source:
        return False  # diagnostics and sources point at the new place
    version = old.metadata.get("resourceVersion")
    if version and version == new.metadata.get("resourceVersion"):
        return True
    return old.body == new.body


#: What the Translator takes as an object: parsed (a dict, as a controller holds it) or read.
ObjectInput = KubeObject | Mapping[str, Any]


def as_objects(items: Iterable[ObjectInput]) -> list[KubeObject]:
    """``items`` as KubeObjects: dicts are read as :func:`meshcore.load` reads them.

    Raises TypeError for an item that is neither, and ValueError for a dict without
    apiVersion, kind or metadata.name (a change cannot name the object it changes).
    """
    result: list[KubeObject] = []
    for index, item in enumerate(items, 1):
        if isinstance(item, KubeObject):
            result.append(item)
        elif isinstance(item, Mapping):
            read, problems = load_objects([item])
            if problems:
                raise ValueError(f"object {index} is missing apiVersion, kind or metadata.name: "
                                 "a change must name the object it changes")
            result.extend(read)
        else:
            raise TypeError(f"object {index} is a {type(item).__name__}: expected a Kubernetes object as a dict "
                            "(apiVersion, kind, metadata) or a meshcore.kube.KubeObject")
    return result


class Translator:
    """Translates objects and keeps the result current as they change (see the module doc).

    ``adapters`` as for :func:`meshcore.translate` (the installed ones when None).
    """

    def __init__(self, adapters: Iterable[Adapter] | None = None) -> None:
        if adapters is None:
            self._infos, self._load_errors = discover()
        else:
            self._infos, self._load_errors = wrap(adapters), []
        self._objects: dict[ObjectKey, KubeObject] = {}
        self._translation: Translation | None = None
        #: What the translation was assembled from; None when a change cannot build on it.
        self._parts: Parts | None = None
        self._keys: list[tuple[object, ...]] = []
        #: The services replaced by the last :meth:`update`; None when it translated everything.
        self.replaced: frozenset[ServiceRef] | None = None

    @property
    def translation(self) -> Translation | None:
        """The translation of the current objects (None before the first)."""
        return self._translation

    @property
    def objects(self) -> Mapping[ObjectKey, KubeObject]:
        """The current objects by key, in input order."""
        return self._objects

    def translate(self, objects: Iterable[ObjectInput]) -> Translation:
        """Translate ``objects`` (dicts or KubeObjects) whole; they become the current objects."""
        listed = as_objects(objects)
        by_key = {object_key(o): o for o in listed}
        self._parts = None
        self.replaced = None
        with gc_paused():
            parts = Parts.translate(listed, self._infos, None, self._load_errors)
        # Two objects with one key cannot be told apart by a change: only whole translations are exact.
        self._objects = by_key
        self._parts = parts if len(by_key) == len(listed) else None
        return self._assembled_whole(parts)

    def _assembled_whole(self, parts: Parts) -> Translation:
        self._translation = parts.translation
        self._keys = [diagnostic_order(d) for d in parts.translation.diagnostics]
        self.replaced = None
        return parts.translation

    def changes(self, objects: Iterable[ObjectInput]) -> tuple[list[KubeObject], list[ObjectKey]] | None:
        """What turns the current objects into ``objects`` (dicts or KubeObjects): (added or changed, removed keys).

        None when ``objects`` cannot be reached by a change: a key given twice, or objects
        kept from before in another order (the order decides which of two definitions wins).
        """
        listed = as_objects(objects)
        current = self._objects
        position = {k: i for i, k in enumerate(current)}
        upserted: list[KubeObject] = []
        seen: set[ObjectKey] = set()
        last = -1
        for obj in listed:
            key = object_key(obj)
            if key in seen:
                return None
            seen.add(key)
            old = current.get(key)
            if old is None:
                upserted.append(obj)
                continue
            if position[key] < last:
                return None
            last = position[key]
            if not unchanged(old, obj):
                upserted.append(obj)
        return upserted, [k for k in current if k not in seen]

    def update(self, upserted: Iterable[ObjectInput] = (), deleted: Iterable[ObjectKey] = (),
               order: Sequence[ObjectKey] | None = None) -> Translation:
        """Apply a change: ``upserted`` objects (dicts or KubeObjects) added or replacing those of their key, ``deleted`` keys removed.

        New objects come after the current ones, unless ``order`` (every key of the
        result) says otherwise. On any error the translator forgets what it kept, so the
        next call translates everything.
        """
        given = as_objects(upserted)  # before anything changes: a bad item leaves the translator as it was
        pairs: dict[ObjectKey, tuple[KubeObject | None, KubeObject | None]] = {}
        for key in deleted:
            if key in self._objects:
                pairs[key] = (self._objects[key], None)
        for obj in given:
            key = object_key(obj)
            old = self._objects.get(key)
            if old is not None and unchanged(old, obj):
                pairs.pop(key, None)  # given as it was (even if also deleted): no change
            else:
                pairs[key] = (old, obj)
        objects = self._objects  # changed in place: whatever happens next starts from these objects
        for key, (_, new) in pairs.items():
            if new is None:
                del objects[key]
            else:
                objects[key] = new
        if order is not None:
            objects = self._objects = {k: objects[k] for k in order}
        try:
            result = self._scoped(pairs, objects)
        except BaseException:
            self._parts = None
            self._translation = None
            raise
        return self.translate(objects.values()) if result is None else result

    def _scoped(self, pairs: Mapping[ObjectKey, tuple[KubeObject | None, KubeObject | None]],
                objects: dict[ObjectKey, KubeObject]) -> Translation | None:
        """The translation after a change the core can apply on its own; None when it cannot."""
        parts = self._parts
        if parts is None:
            return None
        core: list[tuple[KubeObject | None, KubeObject | None]] = []
        for old, new in pairs.values():
            obj = new or old
            assert obj is not None
            place = route_of(obj, parts.handlers)
            if place == CORE:
                core.append((old, new))
            elif place != IGNORED or any(unknown_fields(o) for o in (old, new) if o is not None):
                return None  # an adapter's object, or one whose field diagnostics change: translate whole
        change = apply_scoped(parts.core, core) if core else CoreChange()
        if change is None:
            return None
        read = tuple(new for _, new in pairs.values() if new is not None)
        return self._assembled(parts, change, read, objects)

    def _assembled(self, parts: Parts, change: CoreChange, read: tuple[KubeObject, ...],
                   objects: dict[ObjectKey, KubeObject]) -> Translation:
        """The translation after ``change`` was applied to the core state (having read ``read``)."""
        previous = parts.translation
        snapshot = previous.snapshot
        if change.services and parts.routed:
            fragments, failed = run_adapters(parts.infos, parts.routed, parts.core.inventory)
            if fragments != parts.fragments or failed != parts.failed:
                parts.fragments, parts.failed = fragments, failed
                parts.translation = parts.assemble(tuple(objects.values()))
                return self._assembled_whole(parts)
        if any(snapshot.service(s.ref) is not old for s, old in zip(change.services, change.replaced, strict=True)):
            # The snapshot holds another definition under that name (an adapter's): assemble again.
            parts.translation = parts.assemble(tuple(objects.values()))
            return self._assembled_whole(parts)
        if change.services:
            snapshot = snapshot.replacing_services(change.services)
        diagnostics = self._diagnostics(previous.diagnostics, change.removed, change.added)
        parts.translation = attrs.evolve(previous, snapshot=snapshot, diagnostics=diagnostics, objects=read)
        self._translation = parts.translation
        self.replaced = frozenset(s.ref for s in change.services)
        return parts.translation

    def _diagnostics(self, current: tuple[Diagnostic, ...], removed: Sequence[Diagnostic],
                     added: Sequence[Diagnostic]) -> tuple[Diagnostic, ...]:
        """``current`` (sorted) without ``removed`` and with ``added``, still sorted."""
        if not removed and not added:
            return current
        items, keys = list(current), self._keys
        for d in removed:
            key = diagnostic_order(d)
            i = bisect.bisect_left(keys, key)
            while i < len(items) and keys[i] == key and items[i] != d:
                i += 1
            if i < len(items) and items[i] == d:
                del items[i]
                del keys[i]
        for d in added:
            key = diagnostic_order(d)
            i = bisect.bisect_right(keys, key)
            items.insert(i, d)
            keys.insert(i, key)
        return tuple(items)
