"""Diagnostic codes of this package: :class:`IstioCode`."""

from __future__ import annotations

from collections.abc import Mapping

from meshcore.model import DiagnosticCode, Severity


class IstioCode(DiagnosticCode):
    """The Istio adapter (block MC7xxx): findings in the spirit of ``istioctl analyze``."""

    DUPLICATE_OBJECT = (
        "MC7001", Severity.ERROR,
        "Duplicate object (same kind, namespace and name): the later one is dropped; the message names where "
        "the first was defined.",
    )
    INVALID_VALUE = (
        "MC7002", Severity.ERROR,
        "Invalid value Istio's validation rejects (host, duration, port, percentage, header name, wildcard "
        "placement, condition key).",
    )
    UNKNOWN_FIELD = "MC7003", Severity.ERROR, "Unknown field in `spec` (the message lists the valid fields)."
    HOST_NOT_FOUND = (
        "MC7004", Severity.WARNING,
        "A referenced host (route destination, mirror, DestinationRule host) matches no Service or "
        "ServiceEntry visible from the object's namespace: its share of traffic is answered with 503 (TCP/TLS "
        "connections refused); a mirror sends no copies.",
    )
    SUBSET_NOT_FOUND = (
        "MC7005", Severity.WARNING,
        "A route destination names a subset that no DestinationRule for its host defines: its share is "
        "answered with 503.",
    )
    GATEWAY_NOT_FOUND = "MC7006", Severity.WARNING, "A VirtualService names a Gateway that is not in the input."
    SUBSET_NO_PODS = "MC7007", Severity.WARNING, "A DestinationRule subset selects no workload."
    SHADOWED_MATCH = (
        "MC7008", Severity.WARNING,
        "A match can never be reached: an earlier rule or match of the same VirtualService matches everything "
        "it does.",
    )
    INVALID_REGEX = "MC7009", Severity.ERROR, "Invalid regular expression."
    INVALID_COMBINATION = (
        "MC7010", Severity.ERROR,
        "Invalid field combination Istio's validation rejects (redirect with route, weights not adding up to "
        "100, `portLevelMtls` without a selector, `values` and `notValues` both empty...).",
    )
    VS_HOST_UNMATCHED = (
        "MC7011", Severity.WARNING,
        "A VirtualService host matches no Service or ServiceEntry: it configures nothing for the mesh.",
    )
    VS_CONFLICT = (
        "MC7012", Severity.WARNING,
        "Several VirtualServices for one host on the mesh gateway: for the clients of each namespace one "
        "applies (private to the namespace first, then exported to it by name, then to all; oldest first), "
        "the others are ignored for that host.",
    )
    NOT_CARRIED = (
        "MC7013", Severity.INFO,
        "A setting the model does not carry yet: accepted and reported, not enforced (Sidecar ingress, and "
        "egress hosts under ALLOW_ANY).",
    )
    NOT_SUPPORTED = (
        "MC7014", Severity.WARNING,
        "A kind or feature recognised but not supported yet: Sidecar egressProxy, targetRef policies, CUSTOM "
        "authorization, Gateway servers with MUTUAL TLS, TLS termination on a TLS server, certificates from "
        "files, AUTO_PASSTHROUGH, ServiceEntries without ports, partial wildcard hosts, unix socket or network-only "
        "addresses, hostname WorkloadEntries no DNS ServiceEntry selects, retryBudget, spaceDelimitedClaims.",
    )
    NOT_EXPRESSIBLE = (
        "MC7015", Severity.WARNING,
        "A condition the model cannot express: the match or rule is left out (ALLOW) or widened (DENY), so "
        "that traffic is never allowed that Istio would refuse.",
    )
    CONFLICT = (
        "MC7016", Severity.WARNING,
        "Conflicting objects where Istio uses only one (DestinationRules for one host, namespace- or "
        "mesh-wide PeerAuthentications, Sidecars for one workload): the oldest applies. Reported as info "
        "for a match of a delegate VirtualService that is not within the match of the rule delegating to "
        "it (the rule is left out there).",
    )
    UNKNOWN_REFERENCE = (
        "MC7017", Severity.INFO,
        "A principal or namespace in a policy names a service account or namespace that is not in the "
        "input. Reported as a warning for a rule delegating to a VirtualService that does not exist or is "
        "not exported to its namespace (the rule never applies).",
    )
    NO_MATCHING_PORT = (
        "MC7018", Severity.WARNING,
        "A VirtualService has HTTP (or TCP/TLS) rules but the service has no port of that protocol: those "
        "rules apply nowhere (name the port `http-*` or set `appProtocol`).",
    )
    SERVER_PROTOCOL = (
        "MC7019", Severity.ERROR,
        "A Gateway server port protocol Istio does not accept (HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, "
        "REDIS, MYSQL, TCP, TLS).",
    )
    GATEWAY_NO_WORKLOAD = (
        "MC7020", Severity.WARNING,
        "A Gateway `selector` matches no workload in any namespace: the Gateway applies nowhere.",
    )
    GATEWAY_NO_SERVICE = (
        "MC7021", Severity.WARNING,
        "No Service exposes the workloads a Gateway selects (or no Service port targets a server's port): "
        "without an address the Gateway (or that server) is not served.",
    )
    VS_GATEWAY_HOST = (
        "MC7022", Severity.WARNING,
        "A VirtualService host matches no server host of a Gateway it binds to (or the server hosts admit no "
        "VirtualService of its namespace): nothing is routed for it through that Gateway.",
    )
    GATEWAY_CONFLICT = (
        "MC7023", Severity.WARNING,
        "Conflicting gateways: servers of two Gateways on the same port of the same gateway Service with the "
        "same host (or protocols that cannot share a port); the oldest Gateway keeps it.",
    )
    SELECTOR_NO_WORKLOAD = (
        "MC7024", Severity.WARNING,
        "An AuthorizationPolicy, PeerAuthentication or RequestAuthentication `selector`, or a Sidecar "
        "`workloadSelector`, selects no workload in the namespaces it applies to: the object applies to "
        "nothing.",
    )
    CREDENTIAL = (
        "MC7025", Severity.WARNING,
        "A Gateway server's `credentialName` cannot serve (the Secret in the gateway Service's namespace is "
        "missing, unparseable, expired, or its key does not match): the server is not served on that Service "
        "(never in clear text). The message names the Secret.",
    )


#: Every code of this block with its meaning, as plain strings (the members of :class:`IstioCode`).
ISTIO_CODES: Mapping[str, str] = {code.value: code.description for code in IstioCode}
