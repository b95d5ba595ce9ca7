"""Kubernetes objects: reading them with positions, typed field access, and core kinds.

Core kinds (Namespace, Pod, Deployment, Service, EndpointSlice, ServiceAccount) are
translated here into the model's inventory that every adapter needs.
"""

from ._fields import FieldError, Fields, field_diagnostic
from ._load import CLUSTER_SCOPED_KINDS, load_objects, load_paths, load_text
from ._objects import KubeObject, make_object

__all__ = [
    "CLUSTER_SCOPED_KINDS", "FieldError", "Fields", "KubeObject", "field_diagnostic",
    "load_objects", "load_paths", "load_text", "make_object",
]
