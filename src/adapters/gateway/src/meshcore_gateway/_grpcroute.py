"""GRPCRoute → :class:`RouteSpec`: method matches become path matches on ``/service/method``.

A rule without matches matches every gRPC request. Backends are reached over HTTP/2
(the model's destinations do not carry a protocol; the backend Service port's
``appProtocol`` decides it downstream).
"""

from __future__ import annotations

from meshcore.kube import Fields, KubeObject
from meshcore.model import HttpMatch

from ._backend_filters import with_backend_filters
from ._common import read_meta
from ._filters import GRPC_FILTERS, read_filters
from ._hostnames import read_hostnames
from ._httproute import check_rule_names
from ._matches import read_grpc_match
from ._refs import read_backend_ref, read_parent_refs
from ._routes import L7Rule, RouteSpec


def read_grpcroute(obj: KubeObject) -> RouteSpec:
    """Read and validate one GRPCRoute."""
    meta = read_meta(obj)
    spec = Fields.of(obj).map("spec")
    parents = read_parent_refs(spec, obj.namespace)
    hostnames = read_hostnames(spec)
    rule_fields = spec.maps("rules")
    check_rule_names(rule_fields)
    rules = []
    for i, rule in enumerate(rule_fields):
        matches = tuple(read_grpc_match(m) for m in rule.maps("matches")) or (HttpMatch(),)
        filters = read_filters(rule, obj.namespace, GRPC_FILTERS)
        backends = tuple(with_backend_filters(read_backend_ref(b, obj.namespace), b, obj.namespace, GRPC_FILTERS)
                         for b in rule.maps("backendRefs"))
        rules.append(L7Rule(i, matches, filters, backends, name=rule.str("name")))
    return RouteSpec(obj, "GRPCRoute", obj.namespace, obj.name, meta, tuple(hostnames), tuple(parents),
                     http=tuple(rules))
