"""Namespace → model Namespace, with the name label Kubernetes adds to every namespace."""

from __future__ import annotations

from ..model import Namespace
from ._fields import Fields, Problems
from ._objects import KubeObject
from ._proxy_mode import ModeChoice, annotated_mode
from ._values import Findings, build, read_metadata

#: The label the API server sets on every namespace to its own name.
NAME_LABEL = "kubernetes.io/metadata.name"


def translate_namespace(obj: KubeObject, findings: Findings | None = None) -> Namespace:
    """The namespace with its labels plus ``kubernetes.io/metadata.name: <name>``."""
    problems = Problems()
    meta = problems.read(read_metadata, Fields({}, "metadata"), obj, Fields.of(obj))
    labels: dict[str, str] = problems.read(meta.str_map, {}, "labels")
    problems.check()
    # The API server overwrites this label, whatever the user wrote.
    labels[NAME_LABEL] = obj.name
    return build({"name": "metadata.name", "labels": "metadata.labels"}, "metadata",
                 lambda: Namespace(name=obj.name, labels=labels, source=obj.source))


def namespace_mode(obj: KubeObject, findings: Findings) -> ModeChoice | None:
    """The proxy mode the Namespace's ``meshcore.io/proxy-mode`` annotation chooses for its pods, if any."""
    annotations = Fields.of(obj).map("metadata").str_map("annotations")
    return annotated_mode(annotations, "metadata.annotations", f"Namespace {obj.name}", findings)


def implied_namespace(name: str) -> Namespace:
    """A namespace referenced by objects but not declared (it exists implicitly)."""
    return Namespace(name=name, labels={NAME_LABEL: name})
