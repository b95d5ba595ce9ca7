"""Input objects → Snapshot + diagnostics, through the core kinds and the adapters."""

from __future__ import annotations

import ipaddress

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .adapter import Adapter, ApiKind, Fragment, ObjectStatus
from .kube._gc import gc_paused
from .kube import (
    CORE_KINDS,
    Inventory,
    KubeObject,
    ServiceRangeFull,
    ServiceRanges,
    load_objects,
    load_paths,
    load_text,
    unknown_fields,
)
from .kube import assign_addresses as kube_assign_addresses
from .kube._core import CoreState, translate_core_state
from ._port_owners import one_adapter_per_port
from ._codes import TranslateCode
from .model import Diagnostic, ModelError, Service, Severity, Snapshot, Source, Workload, has_errors
from .registry import AdapterInfo, LoadError, discover, wrap

#: API groups (and a few kinds) of well-known control planes → the adapter that handles them,
#: so an unknown kind can say which distribution to install.
KNOWN_GROUPS: Mapping[str, tuple[str, str]] = {
    "networking.istio.io": ("istio", "meshcore-istio"),
    "security.istio.io": ("istio", "meshcore-istio"),
    "gateway.networking.k8s.io": ("gateway", "meshcore-gateway"),
    "gateway.networking.x-k8s.io": ("gateway", "meshcore-gateway"),
    "cilium.io": ("envoycrd", "meshcore-envoycrd"),
}
KNOWN_KINDS: Mapping[tuple[str, str], tuple[str, str]] = {
    ("networking.k8s.io", "Ingress"): ("gateway", "meshcore-gateway"),
    ("networking.k8s.io", "IngressClass"): ("gateway", "meshcore-gateway"),
}
#: Core kinds that carry nothing the mesh enforces; they are skipped without a warning.
IGNORED_CORE_KINDS = frozenset({
    "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding",
    "CustomResourceDefinition", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob",
    "HorizontalPodAutoscaler", "PodDisruptionBudget", "Endpoints", "LimitRange", "ResourceQuota",
    "PersistentVolumeClaim",
})


@attrs.frozen
class Translation:
    """The result of translating input: the Snapshot, every diagnostic, the objects read.

    A translation of a change (:class:`~meshcore._translator.Translator`) read only the
    objects that changed; ``objects`` holds those.
    """

    snapshot: Snapshot
    diagnostics: tuple[Diagnostic, ...]
    objects: tuple[KubeObject, ...] = attrs.field(default=(), repr=False)
    adapter_errors: tuple[LoadError, ...] = ()
    #: Status adapters computed for their input objects (e.g. Gateway API conditions).
    statuses: tuple[ObjectStatus, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no diagnostic is an error."""
        return not has_errors(self.diagnostics)

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        """The error diagnostics."""
        return tuple(d for d in self.diagnostics if d.severity is Severity.ERROR)


def load(
    files: Iterable[str | Path] = (),
    *,
    text: str | None = None,
    objects: Iterable[Mapping[str, Any] | KubeObject] = (),
    text_name: str = "<text>",
) -> tuple[list[KubeObject], list[Diagnostic]]:
    """Read input from files/directories/``-``, YAML text and parsed objects."""
    result, diagnostics = load_paths(files)
    if text is not None:
        o, d = load_text(text, text_name)
        result += o
        diagnostics += d
    dicts = []
    for item in objects:
        if isinstance(item, KubeObject):
            result.append(item)
        else:
            dicts.append(item)
    if dicts:
        o, d = load_objects(dicts)
        result += o
        diagnostics += d
    return result, diagnostics


def _unknown_kind(obj: KubeObject, by_kind: Mapping[str, list[AdapterInfo]], loaded: Sequence[AdapterInfo],
                  failed: Sequence[LoadError]) -> Diagnostic:
    group = obj.group
    others = by_kind.get(obj.kind, [])
    if others:
        versions = sorted({k.api_version for a in others for k in a.kinds if k.kind == obj.kind})
        message = (f"{obj.kind} in apiVersion {obj.api_version!r} is not handled; adapter "
                   f"{others[0].name!r} handles {obj.kind} in {', '.join(versions)}")
    else:
        hint = KNOWN_KINDS.get((group, obj.kind)) or KNOWN_GROUPS.get(group)
        if hint:
            name, dist = hint
            if any(e.name == name for e in failed):
                why = "failed to load (see `meshcore adapters`)"
            elif name in {a.name for a in loaded}:
                why = "is installed but does not handle this kind"
            else:
                from .registry import disabled_names
                why = ("is disabled by MESHCORE_DISABLE_ADAPTERS" if name in disabled_names()
                       else f"is not installed (pip install {dist})")
            message = f"{obj.kind}.{obj.api_version} is handled by adapter {name!r}, which {why}"
        else:
            message = f"unknown kind {obj.kind}.{obj.api_version}: no installed adapter handles it"
    return Diagnostic(TranslateCode.UNKNOWN_KIND, Severity.WARNING, message, obj.source, "kind")


def _dedupe(items: Iterable[Any], label: str, diagnostics: list[Diagnostic]) -> list[Any]:
    seen: dict[Any, Any] = {}
    for item in items:
        if item.ref in seen:
            diagnostics.append(Diagnostic(
                TranslateCode.DUPLICATE_OBJECT, Severity.ERROR,
                f"{label} {item.ref} is defined twice (first at {seen[item.ref].source}); the second is ignored",
                item.source,
            ))
            continue
        seen[item.ref] = item
    return list(seen.values())


def translate(
    files: Iterable[str | Path] = (),
    *,
    text: str | None = None,
    objects: Iterable[Mapping[str, Any] | KubeObject] = (),
    adapters: Iterable[Adapter] | None = None,
    assign_addresses: bool | ServiceRanges = False,
) -> Translation:
    """Translate Kubernetes objects into a Snapshot through the installed (or given) adapters.

    Input comes from ``files`` (files, directories, ``-``), YAML/JSON ``text`` and parsed
    ``objects``. Never raises for bad input: every problem is a diagnostic, and an object
    with an error contributes nothing. With ``assign_addresses`` (``True`` for the lab's
    ranges, or the :class:`ServiceRanges` to use), Services without ClusterIPs get them
    first, as the API server would assign them.
    """
    if adapters is None:
        infos, load_errors = discover()
    else:
        infos, load_errors = wrap(adapters), []
    with gc_paused():
        kube_objects, diagnostics = load(files, text=text, objects=objects)
        if assign_addresses:
            ranges = assign_addresses if isinstance(assign_addresses, ServiceRanges) else ServiceRanges()
            try:
                kube_objects = kube_assign_addresses(kube_objects, ranges)
            except ServiceRangeFull as exc:
                diagnostics.append(Diagnostic(
                    TranslateCode.SERVICE_RANGE_FULL, Severity.WARNING, f"ClusterIPs were not assigned: {exc}; "
                    "Services without ClusterIPs keep none (give larger ranges)"))
        return translate_objects(kube_objects, infos, diagnostics, load_errors)


def translate_objects(
    kube_objects: Sequence[KubeObject],
    infos: Sequence[AdapterInfo],
    diagnostics: list[Diagnostic] | None = None,
    load_errors: Sequence[LoadError] = (),
) -> Translation:
    """Route objects to the core translation and to adapters, and build the Snapshot."""
    return Parts.translate(kube_objects, infos, diagnostics, load_errors).translation


@attrs.define
class Parts:
    """A translation and the parts it was assembled from, so a later change can reuse them."""

    infos: Sequence[AdapterInfo]
    load_errors: Sequence[LoadError]
    handlers: dict[ApiKind, AdapterInfo]
    #: Diagnostics about the input as such (given, and unknown kinds).
    early: list[Diagnostic]
    #: Each adapter's objects, by adapter name.
    routed: dict[str, list[KubeObject]]
    core: CoreState
    #: (adapter name, fragment) in adapter order; ``failed`` are the diagnostics of adapters that raised.
    fragments: list[tuple[str, Fragment]]
    failed: list[Diagnostic]
    translation: Translation

    @classmethod
    def translate(cls, kube_objects: Sequence[KubeObject], infos: Sequence[AdapterInfo],
                  diagnostics: list[Diagnostic] | None = None, load_errors: Sequence[LoadError] = ()) -> Parts:
        """Translate ``kube_objects`` whole."""
        early = list(diagnostics or [])
        handlers: dict[ApiKind, AdapterInfo] = {}
        by_kind: dict[str, list[AdapterInfo]] = defaultdict(list)
        for info in infos:
            for k in info.kinds:
                handlers.setdefault(k, info)
                by_kind[k.kind].append(info)

        core: list[KubeObject] = []
        routed: dict[str, list[KubeObject]] = defaultdict(list)
        for obj in kube_objects:
            place = route_of(obj, handlers)
            if place == CORE:
                core.append(obj)
            elif place == UNKNOWN:
                early.append(_unknown_kind(obj, by_kind, infos, load_errors))
            elif place == IGNORED:
                # Not translated, but its fields are checked as the API server would.
                early += unknown_fields(obj)
            else:
                routed[place].append(obj)

        state = translate_core_state(core)
        fragments, failed = run_adapters(infos, routed, state.inventory)
        parts = cls(infos, load_errors, handlers, early, dict(routed), state, fragments, failed,
                    Translation(Snapshot(), ()))
        parts.translation = parts.assemble(kube_objects)
        return parts

    def assemble(self, kube_objects: Sequence[KubeObject]) -> Translation:
        """The Translation of the current core state and fragments."""
        inventory, fragments = self.core.inventory, self.fragments
        diagnostics = [*self.early, *self.core.diagnostics, *self.failed]
        for _, fragment in fragments:
            diagnostics += fragment.diagnostics
        routes, conflicts = one_adapter_per_port([(name, r) for name, f in fragments for r in f.routes],
                                                 kube_objects)
        diagnostics += conflicts

        services: list[Service] = _dedupe(
            [*inventory.services, *(s for _, f in fragments for s in f.services)], "Service", diagnostics)
        workloads: list[Workload] = _dedupe(
            [*inventory.workloads, *(w for _, f in fragments for w in f.workloads)], "Workload", diagnostics)
        try:
            snapshot = Snapshot(
                namespaces=inventory.namespaces,
                workloads=workloads,
                services=services,
                routes=routes,
                policies=[*inventory.policies, *(p for _, f in fragments for p in f.policies)],
                peer_authentications=[p for _, f in fragments for p in f.peer_authentications],
                envoy_configs=[e for _, f in fragments for e in f.envoy_configs],
                request_authentications=[r for _, f in fragments for r in f.request_authentications],
                traffic_policies=[t for _, f in fragments for t in f.traffic_policies],
                nodes=inventory.nodes,
                # Two adapters may use one Secret: it is one certificate.
                certificates={c.ref: c for _, f in fragments for c in f.certificates}.values(),
                tls_terminations=dict.fromkeys(t for _, f in fragments for t in f.tls_terminations),
            )
        except ModelError as exc:
            diagnostics.append(Diagnostic(TranslateCode.INCONSISTENT_SNAPSHOT, Severity.ERROR,
                                          f"the configuration is inconsistent: {exc}"))
            snapshot = Snapshot(namespaces=inventory.namespaces)
        diagnostics += _ip_blocks_holding_pods(snapshot)
        return Translation(
            snapshot=snapshot,
            diagnostics=tuple(sorted(diagnostics, key=diagnostic_order)),
            objects=tuple(kube_objects),
            adapter_errors=tuple(self.load_errors),
            statuses=tuple(st for _, f in fragments for st in f.statuses),
        )


#: Where an object goes (see :func:`route_of`), besides an adapter's name.
CORE, IGNORED, UNKNOWN = "<core>", "<ignored>", "<unknown>"


def route_of(obj: KubeObject, handlers: Mapping[ApiKind, AdapterInfo]) -> str:
    """The core translation, the name of the adapter that handles ``obj``, ignored, or unknown."""
    if (obj.api_version, obj.kind) in CORE_KINDS:
        return CORE
    handler = handlers.get(ApiKind(obj.api_version, obj.kind))
    if handler is not None:
        return handler.name
    if obj.group in ("", "apps", "batch") and obj.kind in IGNORED_CORE_KINDS:
        return IGNORED
    return UNKNOWN


def run_adapters(infos: Sequence[AdapterInfo], routed: Mapping[str, list[KubeObject]],
                 inventory: Inventory) -> tuple[list[tuple[str, Fragment]], list[Diagnostic]]:
    """Each adapter's fragment of its objects (adapters without objects are not called), and failures."""
    fragments: list[tuple[str, Fragment]] = []
    failed: list[Diagnostic] = []
    for info in infos:
        objs = routed.get(info.name, [])
        if not objs:
            continue
        try:
            fragment = info.adapter.translate(objs, inventory)
            if not isinstance(fragment, Fragment):
                raise TypeError(f"translate returned {type(fragment).__name__}, expected Fragment")
        except Exception as exc:  # an adapter bug must not take the whole translation down
            failed.append(Diagnostic(
                TranslateCode.ADAPTER_FAILED, Severity.ERROR,
                f"adapter {info.name!r} ({info.distribution}) failed: {type(exc).__name__}: {exc}; "
                f"its {len(objs)} object(s) were not translated",
                Source(kind=objs[0].kind),
            ))
            continue
        fragments.append((info.name, fragment))
    return fragments, failed


def _ip_blocks_holding_pods(snapshot: Snapshot) -> list[Diagnostic]:
    """A warning per policy IP block holding workload addresses: blocks select only outside peers."""
    if not any(p.ip_blocks or p.not_ip_blocks for pol in snapshot.policies for r in pol.rules for p in r.sources):
        return []
    nets = [(ipaddress.ip_network(a, strict=False), w) for w in snapshot.workloads for a in w.addresses]
    out = []
    for policy in snapshot.policies:
        for i, rule in enumerate(policy.rules):
            for j, peer in enumerate(rule.sources):
                for block in (*peer.ip_blocks, *peer.not_ip_blocks):
                    cidr = ipaddress.ip_network(block.cidr, strict=False)
                    held = sorted({f"{w.namespace}/{w.name}" for n, w in nets
                                   if n.version == cidr.version and n.subnet_of(cidr)})  # type: ignore[arg-type]
                    if held:
                        example = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
                        out.append(Diagnostic(
                            TranslateCode.IP_BLOCK_HOLDS_PODS, Severity.WARNING,
                            f"policy {policy.namespace}/{policy.name}: IP block {block.cidr} holds the addresses of "
                            f"{example}; IP blocks select only peers outside the mesh (a pod is always its workload "
                            "identity), so it does not select them: select pods by namespace, principal or labels",
                            policy.source, f"rules[{i}].sources[{j}]"))
    return out


def diagnostic_order(d: Diagnostic) -> tuple[str, int, int, str, str, str, str, str, str, str]:
    """Diagnostics in input order (file, line, column), then by everything else: a total order."""
    source = d.source
    return (source.file, source.line, source.column, d.code, d.message, d.field, d.severity.value,
            source.kind, source.namespace, source.name)


__all__ = ["Translation", "Inventory", "load", "translate", "translate_objects"]
