"""Deployment → pods: ``spec.replicas`` copies of ``spec.template`` with stable names.

Pod names are ``<deployment>-<hash>-<i>`` where ``hash`` is five hex digits of a SHA-256
over the template, so a changed template yields new pod names (as Kubernetes'
``pod-template-hash`` does) and the same template always yields the same names.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import attrs

from ..model import Diagnostic, Labels, ModelError, Workload
from ._codes import KubeCode
from ._fields import FieldError, Fields, Problems, field_diagnostics
from ._objects import KubeObject
from ._pod import OWNER_ANNOTATION, PodInfo, PodShape, read_shape
from ._proxy_mode import ModeChoice
from ._selector import read_selector
from ._values import Findings, build, read_metadata, selector_text

#: The label carrying the template hash on every generated pod.
TEMPLATE_HASH_LABEL = "pod-template-hash"


@attrs.frozen
class DeploymentSpec:
    """A validated Deployment: what each of its pods looks like and how many there are."""

    name: str
    namespace: str
    replicas: int
    template_hash: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    pod_spec: Mapping[str, Any]
    shape: PodShape

    @property
    def owner(self) -> str:
        """The owner annotation value of this Deployment's pods."""
        return f"Deployment/{self.name}"

    def pod_name(self, index: int) -> str:
        """The generated name of replica ``index``."""
        return f"{self.name}-{self.template_hash}-{index}"


def template_hash(template: Mapping[str, Any]) -> str:
    """Five lower-case hex digits identifying a pod template's content."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:5]


def read_deployment(obj: KubeObject, findings: Findings) -> DeploymentSpec:
    """Validate a Deployment as the API server does and read its pod template.

    Every bad field is reported (:class:`~meshcore.kube.FieldErrors`), not only the first.
    """
    problems = Problems()
    root = Fields.of(obj)
    problems.read(read_metadata, None, obj, root)
    spec = root.map("spec", required=True)
    replicas = problems.read(spec.int, 1, "replicas", 1, minimum=0)
    selector = problems.read(lambda: read_selector(spec.map("selector", required=True)), None)
    template = problems.read(spec.map, None, "template", required=True)
    if template is None:
        problems.check()
    assert template is not None
    template_meta = problems.read(template.map, Fields({}, "spec.template.metadata"), "metadata")
    labels: dict[str, str] | None = problems.read(template_meta.str_map, None, "labels")
    annotations: dict[str, str] = problems.read(template_meta.str_map, {}, "annotations")
    with problems:
        if selector is not None and selector.empty:
            raise FieldError("spec.selector", "must not be empty (it selects the Deployment's pods)",
                             KubeCode.DEPLOYMENT_SELECTOR)
        if selector is not None and labels is not None and not selector.matches(labels):
            raise FieldError(
                "spec.selector",
                f"does not match the template labels {selector_text(labels)} "
                "(spec.template.metadata.labels must satisfy spec.selector)",
                KubeCode.DEPLOYMENT_SELECTOR,
            )
    pod_spec = problems.read(template.map, None, "spec", required=True)
    shape = None
    if pod_spec is not None:
        shape = read_shape(pod_spec, annotations, "spec.template.metadata.annotations", obj.namespace,
                           findings, problems, "the pod template")
    problems.check()
    assert shape is not None and pod_spec is not None and labels is not None and replicas is not None
    digest = template_hash(template.data)
    labels[TEMPLATE_HASH_LABEL] = digest
    annotations[OWNER_ANNOTATION] = f"Deployment/{obj.name}"
    return DeploymentSpec(obj.name, obj.namespace, replicas, digest, labels, annotations,
                          pod_spec.data, shape)


def deployment_pods(obj: KubeObject, deployment: DeploymentSpec, findings: Findings,
                    namespace_mode: ModeChoice | None = None) -> list[PodInfo]:
    """The pods of a Deployment as workloads (no addresses: nothing has scheduled them).

    ``namespace_mode`` is the proxy mode the Deployment's Namespace chooses for its pods.
    """
    shape = deployment.shape
    mode = shape.resolved_mode(namespace_mode, findings)
    labels = Labels(deployment.labels)
    pods = []
    for index in range(deployment.replicas):
        name = deployment.pod_name(index)
        workload = build(
            {"name": "metadata.name", "namespace": "metadata.namespace"}, "metadata",
            lambda: Workload(
                name=name, namespace=deployment.namespace, identity=shape.identity, labels=labels,
                ports=shape.ports, node=shape.node, proxy_mode=mode.mode, proxy_mode_reason=mode.reason,
                source=obj.source,
            ),
        )
        pods.append(PodInfo(workload=workload, labels=deployment.labels,
                            host_network=shape.host_network, owner=deployment.owner))
    return pods


def pod_body(deployment: DeploymentSpec, index: int) -> dict[str, Any]:
    """The plain Pod object for replica ``index`` (independent of every other body)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": deployment.pod_name(index),
            "namespace": deployment.namespace,
            "labels": dict(deployment.labels),
            "annotations": dict(deployment.annotations),
        },
        "spec": copy.deepcopy(dict(deployment.pod_spec)),
    }


def expand_deployment(obj: KubeObject) -> tuple[list[dict[str, Any]], list[Diagnostic]]:
    """The Pod bodies (plain dicts, kind Pod, apiVersion v1) a Deployment creates.

    An invalid Deployment yields no pods and an error diagnostic for each bad field.
    """
    findings = Findings(obj)
    try:
        deployment = read_deployment(obj, findings)
        deployment_pods(obj, deployment, findings)
    except (FieldError, ModelError) as exc:
        return [], field_diagnostics(obj, exc)
    return [pod_body(deployment, i) for i in range(deployment.replicas)], findings.items
