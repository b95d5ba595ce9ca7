"""Translate the core Kubernetes kinds into the model's :class:`Inventory`.

Kinds: v1 Namespace, v1 Pod, apps/v1 Deployment, v1 Service, discovery.k8s.io/v1
EndpointSlice, v1 ServiceAccount, networking.k8s.io/v1 NetworkPolicy, v1 Node, v1 Secret and v1
ConfigMap. They behave as in a cluster:

- Namespaces carry ``kubernetes.io/metadata.name``; a namespace used but not declared
  exists implicitly, and every namespace has the ``default`` service account.
- A Pod is a Workload (identity from ``spec.serviceAccountName``); finished pods
  (Succeeded/Failed) are left out; a pod being deleted serves as TERMINATING; a pod whose
  Ready condition is not True serves only when ``publishNotReadyAddresses`` is set.
- A Deployment creates ``spec.replicas`` pods named ``<name>-<hash>-<i>``, unless the
  input already holds its pods (annotated ``meshcore.io/owner: Deployment/<name>``, or
  owned by its ReplicaSet): then those pods, which carry addresses, stand for it.
- A Service's backends come from its EndpointSlices when any exist, else from its
  selector over the pods of its namespace.
- A networking.k8s.io/v1 NetworkPolicy becomes ALLOW AuthorizationPolicies, one per
  policy type (see ``_networkpolicy``).
- A v1 Node is a model Node: labels, IP addresses and its proxy's addresses (``_node``).
- A Secret with ``tls.crt``/``tls.key`` is a certificate adapters may refer to (checked
  once here, see ``_secret``); a ConfigMap with ``ca.crt`` a CA bundle. Neither is
  reported unless referred to, and no diagnostic quotes their data.
- A field the kind does not define is a warning (see ``_strict``): the API server drops
  it, and so does the translation.

Diagnostic codes are listed in :mod:`meshcore.kube._codes` (block MC1xxx). An object
with an error contributes nothing but never stops the others.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import attrs

from ..model import AuthorizationPolicy, Diagnostic, ModelError, Namespace, Node, Service, Source, Workload
from ._backends import PodIndex, build_service
from ._codes import KubeCode
from ._deployment import TEMPLATE_HASH_LABEL, DeploymentSpec, deployment_pods, read_deployment
from ._endpointslice import SliceInfo, translate_slice
from ._fields import FieldError, field_diagnostics
from ._gc import gc_paused
from ._inventory import Inventory
from ._namespace import implied_namespace, namespace_mode, translate_namespace
from ._networkpolicy import translate_network_policy
from ._node import translate_node
from ._objects import KubeObject
from ._pod import PodInfo, translate_pod
from ._proxy_mode import ModeChoice
from ._secret import read_ca_bundle, read_tls_secret
from ._service import ServiceSpec, read_service
from ._serviceaccount import translate_service_account
from ._strict import unknown_fields
from ._values import Findings, object_error

T = TypeVar("T")

#: The (apiVersion, kind) pairs :func:`translate_core` handles.
CORE_KINDS: frozenset[tuple[str, str]] = frozenset({
    ("v1", "Namespace"),
    ("v1", "Pod"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
    ("v1", "ServiceAccount"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "Node"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
})


ObjectKey = tuple[str, str, str]


def core_key(obj: KubeObject) -> ObjectKey:
    """(kind, namespace, name): what makes a core object unique."""
    return (obj.kind, obj.namespace, obj.name)


class _Run:
    """Collects diagnostics; runs each object's translation so an error drops only that object.

    Each diagnostic is also filed under its object: ``read`` what translating it found,
    ``checks`` what comparing it with other objects found (so a change can replace them).
    """

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.read: dict[ObjectKey, list[Diagnostic]] = defaultdict(list)
        self.checks: dict[ObjectKey, list[Diagnostic]] = defaultdict(list)

    def __call__(self, obj: KubeObject, translate: Callable[[KubeObject, Findings], T]) -> T | None:
        findings = Findings(obj)
        try:
            result = translate(obj, findings)
        except (FieldError, ModelError) as exc:
            # Warnings about an object that is dropped would only distract from its errors.
            self._add(self.read, obj, field_diagnostics(obj, exc))
            return None
        self._add(self.read, obj, findings.items)
        return result

    def error(self, obj: KubeObject, code: str, message: str, path: str = "") -> None:
        self._add(self.checks, obj, [object_error(obj, code, message, path)])

    def warn(self, obj: KubeObject, code: str, message: str, path: str) -> None:
        findings = Findings(obj)
        findings.warn(code, message, path)
        self._add(self.checks, obj, findings.items)

    def file(self, obj: KubeObject, found: list[Diagnostic]) -> None:
        """Record what reading ``obj`` found besides its translation (e.g. its unknown fields)."""
        self._add(self.read, obj, found)

    def _add(self, filed: dict[ObjectKey, list[Diagnostic]], obj: KubeObject, found: list[Diagnostic]) -> None:
        if found:
            self.diagnostics.extend(found)
            filed[core_key(obj)].extend(found)


@attrs.define
class CoreState:
    """A core translation with what produced it, so one object's change can be applied on its own.

    See :mod:`meshcore.kube._scoped`. Services replaced by changes are held aside and put
    into the :attr:`inventory` when it is next read (building one is a pass over every service).
    """

    _inventory: Inventory = attrs.field(alias="inventory")
    diagnostics: list[Diagnostic]
    run: _Run
    #: Where each (kind, namespace, name) was first defined; ``duplicated`` were defined again.
    defined: dict[ObjectKey, Source]
    duplicated: set[ObjectKey]
    #: Services translated, by (namespace, name): the object and what was read from it.
    services: dict[tuple[str, str], tuple[KubeObject, ServiceSpec]]
    #: Pods of the input that are workloads, by (namespace, name), and the index selectors use.
    pods: dict[tuple[str, str], PodInfo]
    pod_index: PodIndex
    #: Usable EndpointSlices: per service (namespace, name), each slice by (namespace, name).
    slices: dict[tuple[str, str], dict[tuple[str, str], SliceInfo]]
    #: The same slices by their own (namespace, name).
    slice_infos: dict[tuple[str, str], SliceInfo]
    #: The proxy modes Namespaces choose for their pods, by namespace name.
    namespace_modes: dict[str, ModeChoice] = attrs.field(factory=dict)
    #: The translated services of each namespace (built when first needed).
    by_namespace: dict[str, list[tuple[str, str]]] = attrs.field(factory=dict)
    _replaced: dict[tuple[str, str], Service] = attrs.field(factory=dict)

    @property
    def inventory(self) -> Inventory:
        """The inventory, with every service replaced so far."""
        if self._replaced:
            self._inventory = self._inventory.replacing_services(self._replaced.values())
            self._replaced = {}
        return self._inventory

    def service(self, namespace: str, name: str) -> Service | None:
        """The translated service ``namespace/name`` as it is now."""
        return self._replaced.get((namespace, name)) or self._inventory.service(namespace, name)

    def replace_services(self, services: Sequence[Service]) -> None:
        """Put ``services`` in place of the services of their names (in the inventory, on its next read)."""
        for s in services:
            self._replaced[(s.namespace, s.name)] = s


def _ns_name(item: Workload | Service) -> tuple[str, str]:
    return (item.namespace, item.name)


def _where(source: Source) -> str:
    return source.location or str(source)


def _realized_deployments(pods: Sequence[PodInfo]) -> set[tuple[str, str]]:
    """(namespace, Deployment name) of Deployments whose pods are part of the input."""
    realized = set()
    for pod in pods:
        namespace = pod.workload.namespace
        kind, _, name = pod.owner.partition("/")
        if kind == "Deployment" and name:
            realized.add((namespace, name))
        digest = pod.labels.get(TEMPLATE_HASH_LABEL)
        if pod.replica_set and digest and pod.replica_set.endswith(f"-{digest}"):
            realized.add((namespace, pod.replica_set[: -len(digest) - 1]))
    return realized


def _check_pod_ips(run: _Run, objects: Sequence[tuple[KubeObject, PodInfo]]) -> None:
    owners: dict[str, KubeObject] = {}
    for obj, pod in objects:
        if pod.host_network:
            continue  # host-network pods share their node's addresses by design
        for address in pod.workload.addresses:
            first = owners.setdefault(address, obj)
            if first is not obj:
                run.warn(obj, KubeCode.DUPLICATE_POD_IP,
                         f"address {address} is also the address of {first.ref} ({_where(first.source)})",
                         "status.podIPs" if "podIPs" in (obj.body.get("status") or {}) else "status.podIP")


def translate_core(objects: Sequence[KubeObject]) -> tuple[Inventory, list[Diagnostic]]:
    """Translate core-kind objects into an :class:`Inventory` and diagnostics."""
    state = translate_core_state(objects)
    return state.inventory, state.diagnostics


def translate_core_state(objects: Sequence[KubeObject]) -> CoreState:
    """:func:`translate_core`, keeping what a later change to one object needs (see :mod:`._scoped`)."""
    with gc_paused():
        return _translate(objects)


def _translate(objects: Sequence[KubeObject]) -> CoreState:
    run = _Run()
    duplicated: set[ObjectKey] = set()
    defined: dict[tuple[str, str, str], Source] = {}
    by_kind: dict[str, list[KubeObject]] = defaultdict(list)
    for obj in objects:
        if (obj.api_version, obj.kind) not in CORE_KINDS:
            run.error(obj, KubeCode.NOT_CORE_KIND, f"{obj.kind} {obj.api_version} is not a core kind "
                      f"(core kinds: {', '.join(sorted(f'{k} {v}' for v, k in CORE_KINDS))})")
            continue
        key = core_key(obj)
        first = defined.get(key)
        if first is not None:
            duplicated.add(key)
            run.error(obj, KubeCode.DUPLICATE_OBJECT, f"{obj.ref} is defined twice; the first definition "
                      f"(used) is at {_where(first)}", "metadata.name")
            continue
        defined[key] = obj.source
        by_kind[obj.kind].append(obj)
        # Reported even when the object has an error: a misspelt field is often its cause.
        run.file(obj, unknown_fields(obj))

    namespaces: dict[str, Namespace] = {}
    namespace_modes: dict[str, ModeChoice] = {}
    for obj in by_kind["Namespace"]:
        namespace = run(obj, translate_namespace)
        if namespace is not None:
            namespaces[namespace.name] = namespace
            mode = run(obj, namespace_mode)
            if mode is not None:
                namespace_modes[namespace.name] = mode
    used: set[str] = set()

    accounts: set[tuple[str, str]] = set()
    for obj in by_kind["ServiceAccount"]:
        account = run(obj, translate_service_account)
        if account is not None:
            accounts.add(account)
            used.add(obj.namespace)

    nodes: list[Node] = []
    for obj in by_kind["Node"]:
        node = run(obj, translate_node)
        if node is not None:
            nodes.append(node)

    pods: list[PodInfo] = []
    explicit: list[tuple[KubeObject, PodInfo]] = []
    pod_translation = functools.partial(translate_pod, namespace_modes=namespace_modes)
    for obj in by_kind["Pod"]:
        pod = run(obj, pod_translation)
        if pod is not None:
            pods.append(pod)
            explicit.append((obj, pod))
            used.add(obj.namespace)
    input_pods = {(obj.namespace, obj.name): pod for obj, pod in explicit}
    _check_pod_ips(run, explicit)

    realized = _realized_deployments(pods)
    for obj in by_kind["Deployment"]:
        deployment = run(obj, read_deployment)
        if deployment is None:
            continue
        used.add(obj.namespace)
        if (obj.namespace, obj.name) in realized:
            continue
        generated = run(obj, _generator(deployment, defined, namespace_modes.get(obj.namespace)))
        if generated is not None:
            pods.extend(generated)

    slices: dict[tuple[str, str], dict[tuple[str, str], SliceInfo]] = defaultdict(dict)
    slice_objects: list[tuple[KubeObject, SliceInfo]] = []
    for obj in by_kind["EndpointSlice"]:
        info = run(obj, translate_slice)
        if info is not None:
            used.add(obj.namespace)
            slices[(info.namespace, info.service)][(obj.namespace, obj.name)] = info
            slice_objects.append((obj, info))

    index = PodIndex(pods)
    read: dict[tuple[str, str], tuple[KubeObject, ServiceSpec]] = {}
    build = service_builder(slices, index, read)
    services: list[Service] = []
    for obj in by_kind["Service"]:
        service = run(obj, build)
        if service is not None:
            services.append(service)
            used.add(obj.namespace)

    for obj, info in slice_objects:
        if ("Service", info.namespace, info.service) not in defined:
            run.warn(obj, KubeCode.SLICE_UNKNOWN_SERVICE, f"Service {info.namespace}/{info.service} is not "
                      "defined; this EndpointSlice is ignored", "metadata.labels")

    for obj in by_kind["NetworkPolicy"]:
        used.add(obj.namespace or "default")
    for name in sorted(used - namespaces.keys()):
        namespaces[name] = implied_namespace(name)
    accounts.update((name, "default") for name in namespaces)
    workloads: list[Workload] = [p.workload for p in pods]
    workloads.sort(key=_ns_name)
    known = [namespaces[n] for n in sorted(namespaces)]
    policies: list[AuthorizationPolicy] = []
    for obj in by_kind["NetworkPolicy"]:
        translated = run(obj, lambda o, f: translate_network_policy(o, f, known, workloads))
        policies.extend(translated or ())
    services.sort(key=_ns_name)
    # Certificates are checked here (parsed, key matched, dates) so every adapter sees the
    # same verdict; nothing of a Secret's data ever goes into a diagnostic.
    secrets = tuple(read_tls_secret(obj) for obj in by_kind["Secret"])
    bundles = tuple(b for obj in by_kind["ConfigMap"] if (b := read_ca_bundle(obj)) is not None)
    inventory = Inventory(
        namespaces=tuple(namespaces[n] for n in sorted(namespaces)),
        workloads=tuple(workloads),
        services=tuple(services),
        service_accounts=tuple(sorted(accounts)),
        policies=tuple(policies),
        nodes=tuple(sorted(nodes)),
        tls_secrets=secrets,
        ca_bundles=bundles,
    )
    # Report in input order (file, then line), whatever order the kinds were processed in.
    run.diagnostics.sort(key=lambda d: (d.source.file, d.source.line))
    return CoreState(inventory, run.diagnostics, run, defined, duplicated, read, input_pods, index, slices,
                     {(obj.namespace, obj.name): info for obj, info in slice_objects}, namespace_modes)


def _generator(deployment: DeploymentSpec, defined: dict[tuple[str, str, str], Source],
               namespace_mode: ModeChoice | None) -> Callable[[KubeObject, Findings], list[PodInfo]]:
    """A translation step creating a Deployment's pods, refusing names already taken."""

    def generate(obj: KubeObject, findings: Findings) -> list[PodInfo]:
        generated = deployment_pods(obj, deployment, findings, namespace_mode)
        for pod in generated:
            key = ("Pod", pod.workload.namespace, pod.workload.name)
            if key in defined:
                raise FieldError(
                    "metadata.name",
                    f"would create Pod {pod.workload.ref}, which is already defined at "
                    f"{_where(defined[key])}",
                    KubeCode.DUPLICATE_OBJECT,
                )
        for pod in generated:
            defined[("Pod", pod.workload.namespace, pod.workload.name)] = obj.source
        return generated

    return generate


def service_builder(slices: Mapping[tuple[str, str], Mapping[tuple[str, str], SliceInfo]], index: PodIndex,
                    read: dict[tuple[str, str], tuple[KubeObject, ServiceSpec]],
                    ) -> Callable[[KubeObject, Findings], Service]:
    """A translation step reading a Service (kept in ``read``) and resolving its backends."""

    def service(obj: KubeObject, findings: Findings) -> Service:
        spec: ServiceSpec = read_service(obj, findings)
        found = slices.get((spec.namespace, spec.name))
        built = build_service(spec, list(found.values()) if found else None, index, findings)
        read[(obj.namespace, obj.name)] = (obj, spec)
        return built

    return service
