"""The abstract mesh model: identities, workloads, services, routes and policies.

Every object is immutable (``attrs`` frozen), validated on construction (a
:class:`ModelError` names the field) and records the :class:`Source` it came from.
This package imports nothing from the rest of meshcore.
"""

from ._errors import ModelError
from ._labels import Labels
from ._serialize import to_data
from ._source import Source
from .authn import ClaimToHeader, JwtHeader, JwtRule, RequestAuthentication
from .diagnostics import Diagnostic, DiagnosticCode, Severity, has_errors
from .envoy import ENVOY_RESOURCE_TYPES, BackendService, EnvoyConfig, EnvoyResource, ServiceListener
from .identity import DEFAULT_TRUST_DOMAIN, FIRST_ALLOCATED_IDENTITY, Identity, ReservedIdentity
from .namespace import Namespace
from .node import Node
from .policy import (
    AuthorizationPolicy,
    Condition,
    Direction,
    IpBlock,
    Operation,
    PeerAuthentication,
    PeerAuthMode,
    PeerSelector,
    PolicyAction,
    PolicyRule,
    PortMode,
    PortRange,
    WorkloadSelector,
)
from .route import (
    ClientMatch,
    CorsPolicy,
    Destination,
    DirectResponse,
    FaultInjection,
    HeaderMatch,
    HeaderModifier,
    HttpMatch,
    HttpRoute,
    InvalidBackends,
    MatchKind,
    Mirror,
    QueryMatch,
    Redirect,
    RetryPolicy,
    Rewrite,
    RouteKind,
    RouteTable,
    StringMatch,
    TcpRoute,
)
from .tls import Certificate, CertificateRef, Redacted, TlsTermination
from .service import (
    Backend,
    BackendState,
    HostnameBackend,
    LbPolicy,
    Resolution,
    Service,
    ServicePort,
    ServiceRef,
    VipAssignment,
)
from .snapshot import Snapshot
from .traffic import (
    ConnectionPool,
    HashAlgorithm,
    HashKey,
    HashKeyKind,
    LoadBalancer,
    OutlierDetection,
    TcpKeepalive,
    TlsMode,
    TrafficPolicy,
    UpstreamTls,
    resolve_traffic,
)
from ._validate import MAX_REGEX_PROGRAM_SIZE, regex_error
from .workload import Protocol, ProxyMode, Workload, WorkloadPort, WorkloadRef

__all__ = [
    "DEFAULT_TRUST_DOMAIN", "ENVOY_RESOURCE_TYPES", "FIRST_ALLOCATED_IDENTITY",
    "AuthorizationPolicy", "Backend", "BackendService", "BackendState", "ClaimToHeader", "ClientMatch", "Condition", "CorsPolicy", "Destination",
    "Diagnostic", "DiagnosticCode", "DirectResponse", "Direction", "EnvoyConfig", "EnvoyResource",
    "FaultInjection", "HeaderMatch", "HeaderModifier", "HttpMatch", "HostnameBackend", "HttpRoute", "Identity", "InvalidBackends",
    "IpBlock", "JwtHeader", "JwtRule", "Labels", "LbPolicy", "MatchKind", "Mirror", "ModelError", "Namespace", "Node",
    "Operation", "PeerAuthMode", "PeerAuthentication", "PeerSelector", "PolicyAction",
    "PolicyRule", "PortMode", "PortRange", "Protocol", "ProxyMode", "QueryMatch", "Redirect",
    "RequestAuthentication", "ReservedIdentity", "Resolution", "RetryPolicy", "Rewrite", "RouteKind", "RouteTable", "Service",
    "ServiceListener", "ServicePort", "ServiceRef", "Severity", "Snapshot", "Source", "VipAssignment",
    "StringMatch", "TcpRoute", "Workload", "WorkloadPort", "WorkloadRef", "WorkloadSelector",
    "has_errors", "regex_error", "to_data", "MAX_REGEX_PROGRAM_SIZE",
    "ConnectionPool", "HashAlgorithm", "HashKey", "HashKeyKind", "LoadBalancer", "OutlierDetection",
    "TcpKeepalive", "TlsMode", "TrafficPolicy", "UpstreamTls", "resolve_traffic",
    "Certificate", "CertificateRef", "Redacted", "TlsTermination",
]
