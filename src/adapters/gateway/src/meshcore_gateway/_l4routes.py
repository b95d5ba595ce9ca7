"""TCPRoute, TLSRoute and UDPRoute → :class:`RouteSpec` with L4 rules.

They become L4 route tables (weighted destinations, SNI for TLS passthrough), which the
datapath can serve in eBPF without the node proxy.
"""

from __future__ import annotations

from meshcore.kube import Fields, KubeObject

from ._common import read_meta
from ._hostnames import read_hostnames
from ._httproute import check_rule_names
from ._refs import read_backend_ref, read_parent_refs
from ._routes import L4Rule, RouteSpec


def read_l4route(obj: KubeObject) -> RouteSpec:
    """Read and validate one TCPRoute, TLSRoute or UDPRoute."""
    meta = read_meta(obj)
    spec = Fields.of(obj).map("spec", required=True)
    parents = read_parent_refs(spec, obj.namespace)
    hostnames = read_hostnames(spec) if obj.kind == "TLSRoute" else []
    if obj.kind == "TLSRoute" and obj.api_version.endswith("/v1"):
        spec.list("hostnames", required=True)
    rule_fields = spec.maps("rules", required=True)
    check_rule_names(rule_fields)
    rules = tuple(
        L4Rule(i, tuple(read_backend_ref(b, obj.namespace) for b in rule.maps("backendRefs", required=True)),
               rule.str("name"))
        for i, rule in enumerate(rule_fields)
    )
    return RouteSpec(obj, obj.kind, obj.namespace, obj.name, meta, tuple(hostnames), tuple(parents), tcp=rules)
