"""Kubernetes objects: reading them with positions, typed field access, and core kinds.

Core kinds (Namespace, Pod, Deployment, Service, EndpointSlice, ServiceAccount) are
translated here into the model's inventory that every adapter needs.
"""

from ._cluster_ips import (
    IPNetwork,
    ServiceIpAllocator,
    ServiceRangeFull,
    ServiceRanges,
    assign_addresses,
    assign_cluster_ips,
    given_cluster_ips,
    parse_network,
    with_cluster_ips,
)
from ._codes import KUBE_CODES, FieldCode, KubeCode, LoadCode
from ._conditions import stamp_transition_times
from ._core import CORE_KINDS, translate_core
from ._deployment import expand_deployment
from ._fields import FieldError, FieldErrors, Fields, Problems, field_diagnostic, field_diagnostics, type_name
from ._inventory import Inventory
from ._load import CLUSTER_SCOPED_KINDS, iter_input_files, load_objects, load_paths, load_text
from ._node import PROXY_ADDRESSES_ANNOTATION
from ._objects import KubeObject, make_object
from ._report import Report, unique_objects
from ._selector import LabelSelector, read_selector
from ._strict import unknown_fields

__all__ = [
    "CLUSTER_SCOPED_KINDS", "CORE_KINDS", "KUBE_CODES", "PROXY_ADDRESSES_ANNOTATION", "FieldCode", "FieldError",
    "FieldErrors", "Fields", "LoadCode",
    "Inventory", "KubeCode", "KubeObject", "LabelSelector", "Problems", "Report", "expand_deployment",
    "field_diagnostic", "field_diagnostics", "load_objects", "iter_input_files", "load_paths", "load_text",
    "make_object", "read_selector", "stamp_transition_times", "translate_core", "type_name", "unique_objects",
    "unknown_fields",
    "IPNetwork", "ServiceIpAllocator", "ServiceRangeFull", "ServiceRanges", "assign_addresses", "assign_cluster_ips",
    "given_cluster_ips", "parse_network", "with_cluster_ips",
]
