"""Compile: Snapshot (+ node) → Plan, deciding per service port between eBPF and Envoy."""

from ._codes import ProxyCode
from ._compile import WEIGHT_SCALE, CompileOptions, compile_plan
from ._ports import PROXY_PORT_BASE, PROXY_PORT_RANGE
from ._diff import BpfDiff, BpfIndex, diff_bpf
from ._incremental import CompiledPlan
from ._envoy.plan import (
    RBAC_NEVER,
    ClientView,
    ClusterWeight,
    Discovery,
    EnvoyCluster,
    EnvoyEndpoint,
    EnvoyJwt,
    EnvoyListener,
    EnvoyRbac,
    EnvoyRoute,
    EnvoyRouteConfig,
    EnvoySecret,
    EnvoyVirtualHost,
    JwtProvider,
    Origin,
    RawOrigin,
    RbacAction,
    RbacAnd,
    RbacAny,
    RbacClaim,
    RbacExpr,
    RbacHeader,
    RbacNot,
    RbacOr,
    RbacPath,
    RbacPolicy,
    RbacSourceIp,
    RawResource,
    RouteMirror,
    ServerTls,
    TcpChain,
    cluster_name,
)
from ._policy_plan import (
    ANY_IDENTITY,
    ANY_PROTOCOL,
    CIDR_IDENTITY_BASE,
    IpcacheEntry,
    L7Handoff,
    PolicyEndpoint,
    PolicyPeer,
    PolicyEntry,
    PolicyIdentity,
    PolicyOrigin,
    PolicyPlan,
    PolicyVerdict,
)
from ._tunnel import (
    TUNNEL_INBOUND_PORT,
    TUNNEL_OUTBOUND_PORT,
    TunnelDestination,
    TunnelPlan,
    TunnelRefusal,
    TunnelRule,
    TunnelWorkload,
    tunnel_sni,
)
from ._modes import WorkloadMode, mode_reason, workload_modes
from ._sidecar import (
    SIDECAR_INBOUND_PORT,
    SIDECAR_OUTBOUND_PORT,
    SidecarPassed,
    SidecarPlan,
    SidecarService,
    compile_sidecars,
    sidecar_node_id,
)
from ._plan import BpfBackend, BpfPlan, BpfService, Datapath, Decision, EnvoyPlan, Plan

__all__ = [
    "TUNNEL_INBOUND_PORT", "TUNNEL_OUTBOUND_PORT", "TunnelDestination", "TunnelPlan", "TunnelRefusal", "TunnelRule",
    "TunnelWorkload",
    "tunnel_sni",
    "WorkloadMode", "mode_reason", "workload_modes",
    "SIDECAR_INBOUND_PORT", "SIDECAR_OUTBOUND_PORT", "SidecarPassed", "SidecarPlan", "SidecarService",
    "compile_sidecars", "sidecar_node_id",
    "PROXY_PORT_BASE", "PROXY_PORT_RANGE",
    "ANY_IDENTITY", "ANY_PROTOCOL", "CIDR_IDENTITY_BASE", "IpcacheEntry", "L7Handoff", "PolicyEndpoint",
    "PolicyEntry", "PolicyIdentity", "PolicyPeer", "PolicyOrigin", "PolicyPlan", "PolicyVerdict",
    "RBAC_NEVER", "WEIGHT_SCALE", "BpfBackend", "BpfDiff", "BpfIndex", "BpfPlan", "BpfService", "ClientView", "ClusterWeight",
    "CompileOptions", "CompiledPlan", "Datapath", "Decision", "Discovery", "EnvoyCluster", "EnvoyEndpoint", "EnvoyJwt",
    "EnvoyListener", "EnvoyPlan", "EnvoyRbac", "EnvoyRoute", "EnvoyRouteConfig", "EnvoySecret", "EnvoyVirtualHost",
    "JwtProvider", "Origin", "Plan", "ProxyCode", "RawOrigin",
    "RbacAction", "RbacAnd", "RbacAny", "RbacClaim", "RbacExpr", "RbacHeader", "RbacNot", "RbacOr", "RbacPath",
    "RbacPolicy", "RbacSourceIp", "RawResource", "RouteMirror", "ServerTls", "TcpChain", "cluster_name", "compile_plan", "diff_bpf",
]
