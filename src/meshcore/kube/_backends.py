"""Resolve a Service's backends: from its EndpointSlices, else from its selector over pods.

Pods are indexed by (namespace, label key, label value) and slices by service, so a large
inventory resolves in time proportional to the number of backends.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from ..model import Backend, BackendState, Service, ServicePort
from ._codes import KubeCode
from ._endpointslice import SliceInfo
from ._pod import PodInfo
from ._service import PortSpec, ServiceSpec
from ._values import Findings, selector_text


class PodIndex:
    """Pods by namespace and by label, for selector lookups."""

    def __init__(self, pods: Iterable[PodInfo]) -> None:
        self._by_label: dict[tuple[str, str, str], list[PodInfo]] = defaultdict(list)
        for pod in pods:
            namespace = pod.workload.namespace
            for key, value in pod.labels.items():
                self._by_label[(namespace, key, value)].append(pod)

    def replace(self, old: PodInfo, new: PodInfo) -> None:
        """Put ``new`` where ``old`` was (both carry the same labels)."""
        namespace = old.workload.namespace
        for key, value in old.labels.items():
            listed = self._by_label[(namespace, key, value)]
            listed[next(i for i, p in enumerate(listed) if p is old)] = new

    def select(self, namespace: str, selector: Mapping[str, str]) -> list[PodInfo]:
        """Pods of ``namespace`` carrying every label of a non-empty ``selector``, in input order."""
        smallest: list[PodInfo] | None = None
        for key, value in selector.items():
            candidates = self._by_label.get((namespace, key, value))
            if not candidates:
                return []
            if smallest is None or len(candidates) < len(smallest):
                smallest = candidates
        if smallest is None:
            return []
        if len(selector) == 1:
            return list(smallest)
        items = selector.items()
        return [p for p in smallest if all(p.labels.get(k) == v for k, v in items)]


def _preference(backend: Backend) -> tuple[int, str, str]:
    """Among backends of one address and port, the smallest is kept: active first, then by workload."""
    ref = backend.workload
    return (backend.state is not BackendState.ACTIVE, ref.namespace if ref else "", ref.name if ref else "")


class _Backends:
    """Backends of one port, deduplicated by address and port (an active one wins).

    Which one is kept does not depend on the order slices or pods come in, so the
    Snapshot does not either.
    """

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: dict[tuple[str, int], Backend] = {}

    def add(self, backend: Backend) -> None:
        key = (backend.address, backend.port)
        known = self.items.get(key)
        if known is None or (known != backend and _preference(backend) < _preference(known)):
            self.items[key] = backend

    def ordered(self) -> list[Backend]:
        """The backends by (address, port): the model's order, given cheaply.

        (address, port) is unique here, so this equals the model's full ordering, and the
        model's own sort then only confirms it in linear time.
        """
        return [self.items[key] for key in sorted(self.items)]


def _serving_state(pod: PodInfo, publish_not_ready: bool) -> BackendState | None:
    if pod.terminating:
        return BackendState.TERMINATING
    if pod.ready or publish_not_ready:
        return BackendState.ACTIVE
    return None


def _from_selector(service: ServiceSpec, selector: Mapping[str, str], pods: PodIndex,
                   findings: Findings) -> list[_Backends]:
    selected = pods.select(service.namespace, selector)
    if not selected:
        findings.warn(
            KubeCode.SELECTOR_NO_PODS,
            f"selector {selector_text(selector)} selects no pods in namespace {service.namespace}; "
            "the service has no backends",
            "spec.selector",
        )
    serving = [
        (pod, state) for pod in selected if pod.workload.addresses
        and (state := _serving_state(pod, service.publish_not_ready)) is not None
    ]
    result = []
    for port in service.ports:
        backends = _Backends()
        result.append(backends)
        if isinstance(port.target, int):
            for pod, state in serving:
                ref = pod.workload.ref
                for address in pod.workload.addresses:
                    backends.add(Backend(address, port.target, workload=ref, state=state))
            continue
        _named_target(service, port, port.target, selected, serving, backends, findings)
    return result


def _named_target(service: ServiceSpec, port: PortSpec, name: str, selected: Sequence[PodInfo],
                  serving: Sequence[tuple[PodInfo, BackendState]], backends: _Backends,
                  findings: Findings) -> None:
    transport = port.protocol.transport
    for pod, state in serving:
        # Each pod resolves the name through its own containers, as the endpoints controller does.
        declared = next((p for p in pod.workload.ports
                         if p.name == name and p.protocol.transport == transport), None)
        if declared is None:
            continue
        ref = pod.workload.ref
        for address in pod.workload.addresses:
            backends.add(Backend(address, declared.port, workload=ref, state=state))
    if selected and not any(
        p.name == name and p.protocol.transport == transport
        for pod in selected for p in pod.workload.ports
    ):
        findings.warn(
            KubeCode.TARGET_PORT_UNDECLARED,
            f"targetPort {name!r} is not a {transport} port name of any selected pod; "
            "this port has no backends",
            f"{port.path}.targetPort",
        )


def _from_slices(service: ServiceSpec, slices: Sequence[SliceInfo]) -> list[_Backends]:
    result = []
    for port in service.ports:
        backends = _Backends()
        result.append(backends)
        transport = port.protocol.transport
        for info in slices:
            for slice_port in info.ports:
                if (slice_port.port is None or slice_port.name != port.name
                        or slice_port.transport.value != transport):
                    continue
                for endpoint in info.endpoints:
                    backends.add(Backend(endpoint.address, slice_port.port,
                                         workload=endpoint.workload, state=endpoint.state))
    return result


def build_service(service: ServiceSpec, slices: Sequence[SliceInfo] | None, pods: PodIndex,
                  findings: Findings) -> Service:
    """The model Service with backends: slices are authoritative when there are any."""
    if service.external_name:
        per_port = [_Backends() for _ in service.ports]
    elif slices:
        per_port = _from_slices(service, slices)
    elif service.selector:
        per_port = _from_selector(service, service.selector, pods, findings)
    else:
        per_port = [_Backends() for _ in service.ports]
    ports = [
        ServicePort(port=p.port, protocol=p.protocol, name=p.name, backends=b.ordered())
        for p, b in zip(service.ports, per_port, strict=True)
    ]
    return Service(
        name=service.name, namespace=service.namespace, vips=service.vips, ports=ports,
        hostnames=service.hostnames, lb_policy=service.lb_policy, vip_assignment=service.vip_assignment,
        source=service.source,
    )
