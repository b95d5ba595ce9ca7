"""ServiceAccount → the (namespace, name) pair recorded in the inventory."""

from __future__ import annotations

from ..model import Identity
from ._fields import Fields
from ._objects import KubeObject
from ._values import Findings, build, read_metadata


def translate_service_account(obj: KubeObject, findings: Findings | None = None) -> tuple[str, str]:
    """The service account's namespace and name, checked as an identity would be."""
    read_metadata(obj, Fields.of(obj))
    build({"namespace": "metadata.namespace", "service_account": "metadata.name"}, "metadata",
          lambda: Identity(namespace=obj.namespace, service_account=obj.name))
    return (obj.namespace, obj.name)
