"""Applying a change of a few core objects to a kept core translation, at the cost of what they touch.

An EndpointSlice change rebuilds the backends of the Service(s) it belongs to (before
and after); a Pod change that leaves its workload as it was (readiness, deletion
started) rebuilds the Services that select it by labels and have no EndpointSlices. Each
object's diagnostics are replaced by what translating its new version finds. Anything
else — another kind, a new or removed Pod, a changed workload, an object defined twice,
a slice of a Service that is not translated — is out of scope: :func:`apply_scoped` then
changes nothing and returns None, and the caller translates everything again.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Sequence

import attrs

from ..model import Diagnostic, Service
from ._strict import unknown_fields
from ._core import CoreState, ObjectKey, _Run, core_key, service_builder
from ._endpointslice import SliceInfo, translate_slice
from ._objects import KubeObject
from ._pod import PodInfo, translate_pod

__all__ = ["CoreChange", "apply_scoped"]

#: (namespace, name) of a Service, EndpointSlice or Pod.
Key = tuple[str, str]


@attrs.frozen
class CoreChange:
    """What a scoped change did: services with new backends (``replaced``: as they were before)
    and the diagnostics that went and came."""

    services: tuple[Service, ...] = ()
    replaced: tuple[Service, ...] = ()
    removed: tuple[Diagnostic, ...] = ()
    added: tuple[Diagnostic, ...] = ()


@attrs.define
class _Plan:
    """The change worked out on the side; nothing of the state is touched until it is complete."""

    state: CoreState
    #: Objects whose own diagnostics are replaced: key → the new ones.
    read: dict[ObjectKey, list[Diagnostic]] = attrs.field(factory=dict)
    slices: dict[Key, dict[Key, SliceInfo]] = attrs.field(factory=dict)
    #: EndpointSlices by (namespace, name): the new content, or None when it gives none.
    slice_infos: dict[Key, SliceInfo | None] = attrs.field(factory=dict)
    defined: dict[ObjectKey, KubeObject | None] = attrs.field(factory=dict)
    pods: dict[Key, tuple[PodInfo, PodInfo]] = attrs.field(factory=dict)
    services: set[Key] = attrs.field(factory=set)

    def slices_of(self, service: Key) -> dict[Key, SliceInfo]:
        """The slices of ``service`` as the change leaves them (a copy, changed on the side)."""
        if service not in self.slices:
            self.slices[service] = dict(self.state.slices.get(service, {}))
        return self.slices[service]

    def translated(self, obj: KubeObject, found: list[Diagnostic]) -> None:
        """Record what reading and translating ``obj``'s new version found (its unknown fields too)."""
        self.read[core_key(obj)] = [*unknown_fields(obj), *found]


def _change_slice(plan: _Plan, old: KubeObject | None, new: KubeObject | None) -> bool:
    """Plan an EndpointSlice's change (and its Services' rebuild); False when out of scope."""
    state = plan.state
    obj = new or old
    assert obj is not None
    key = (obj.namespace, obj.name)
    if core_key(obj) in state.duplicated:
        return False
    before = state.slice_infos.get(key) if old is not None else None
    after = None
    if new is not None:
        run = _Run()
        after = run(new, translate_slice)
        plan.translated(new, run.read.get(core_key(new), []))
        plan.defined[core_key(new)] = new
    else:
        plan.read[core_key(obj)] = []
        plan.defined[core_key(obj)] = None
    for info in (before, after):
        if info is None:
            continue
        service = (info.namespace, info.service)
        if service not in state.services or ("Service", *service) in state.duplicated or info.namespace != obj.namespace:
            return False  # a slice of a Service that is not translated is reported against the slice
        plan.services.add(service)
    if before is not None:
        plan.slices_of((before.namespace, before.service)).pop(key, None)
    if after is not None:
        plan.slices_of((after.namespace, after.service))[key] = after
    plan.slice_infos[key] = after
    return True


def _same_workload(old: PodInfo, new: PodInfo) -> bool:
    """True when the pod is the same workload with the same labels and owners (only its serving state moved)."""
    return (old.workload == new.workload and old.workload.source == new.workload.source
            and old.labels == new.labels and old.owner == new.owner and old.replica_set == new.replica_set
            and old.host_network == new.host_network)


def _change_pod(plan: _Plan, old: KubeObject | None, new: KubeObject | None) -> bool:
    """Plan a Pod's change (and the rebuild of the Services selecting it); False when out of scope."""
    state = plan.state
    if old is None or new is None or core_key(new) in state.duplicated:
        return False  # a pod coming or going changes the workloads
    key = (new.namespace, new.name)
    before = state.pods.get(key)
    run = _Run()
    after = run(new, lambda o, f: translate_pod(o, f, state.namespace_modes))
    if before is None or after is None or not _same_workload(before, after):
        return False
    plan.translated(new, run.read.get(core_key(new), []))
    plan.pods[key] = (before, after)
    if (before.ready, before.terminating) != (after.ready, after.terminating):
        for service in _services_in(state, new.namespace):
            _, spec = state.services[service]
            if (spec.selector and not spec.external_name and not state.slices.get(service)
                    and all(after.labels.get(k) == v for k, v in spec.selector.items())):
                plan.services.add(service)
    return True


def _services_in(state: CoreState, namespace: str) -> list[Key]:
    """The translated services of ``namespace`` (indexed on first use; a scoped change adds none)."""
    if not state.by_namespace and state.services:
        for key in state.services:
            state.by_namespace.setdefault(key[0], []).append(key)
    return state.by_namespace.get(namespace, [])


def apply_scoped(state: CoreState, changes: Sequence[tuple[KubeObject | None, KubeObject | None]]) -> CoreChange | None:
    """Apply ``changes`` (old, new version of a core object; None where it did not or does not exist).

    Returns what changed, or None — with ``state`` untouched — when the change is out of
    scope (see the module doc).
    """
    plan = _Plan(state)
    for old, new in changes:
        obj = new or old
        if obj is None:
            continue
        if old is not None and new is not None and (old.api_version, old.kind) != (new.api_version, new.kind):
            return None
        if obj.kind == "EndpointSlice" and obj.api_version == "discovery.k8s.io/v1":
            if not _change_slice(plan, old, new):
                return None
        elif obj.kind == "Pod" and obj.api_version == "v1":
            if not _change_pod(plan, old, new):
                return None
        else:
            return None
    return _commit(plan)


def _commit(plan: _Plan) -> CoreChange | None:
    """Rebuild the touched services, then move the state to the new objects; None if a service fails to build."""
    state = plan.state
    for before, after in plan.pods.values():
        state.pod_index.replace(before, after)
    run = _Run()
    slices = ChainMap(plan.slices, state.slices)  # the change's slices over the kept ones
    build = service_builder(slices, state.pod_index, {})
    rebuilt: list[Service] = []
    replaced: list[Service] = []
    for service_key in sorted(plan.services):
        obj, _ = state.services[service_key]
        service = run(obj, build)
        old = state.service(*service_key)
        if service is None or old is None:
            for before, after in plan.pods.values():
                state.pod_index.replace(after, before)
            return None
        rebuilt.append(service)
        replaced.append(old)
        plan.read[core_key(obj)] = run.read.get(core_key(obj), [])
    removed: list[Diagnostic] = []
    added: list[Diagnostic] = []
    for key, found in plan.read.items():
        removed += state.run.read.pop(key, [])
        if found:
            state.run.read[key] = found
            added += found
    for key, defined in plan.defined.items():
        if defined is None:
            state.defined.pop(key, None)
        else:
            state.defined[key] = defined.source
    for slice_key, info in plan.slice_infos.items():
        if info is None:
            state.slice_infos.pop(slice_key, None)
        else:
            state.slice_infos[slice_key] = info
    for service_key, held in plan.slices.items():
        if held:
            state.slices[service_key] = held
        else:
            state.slices.pop(service_key, None)
    for pod_key, (_, after) in plan.pods.items():
        state.pods[pod_key] = after
    state.replace_services(rebuilt)
    return CoreChange(tuple(rebuilt), tuple(replaced), tuple(removed), tuple(added))
