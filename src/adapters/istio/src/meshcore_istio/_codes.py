"""Diagnostic codes of the Istio adapter (block MC7xxx), in the spirit of ``istioctl analyze``.

=======  ========  ===============================================================
Code     Severity  Meaning
=======  ========  ===============================================================
MC7001   error     Duplicate object (same kind, namespace and name): the later one
                   is dropped; the message names where the first was defined.
MC7002   error     Invalid value Istio's validation rejects (host, duration, port,
                   percentage, header name, wildcard placement, condition key).
MC7003   error     Unknown field in ``spec`` (the message lists the valid fields).
MC7004   warning   A referenced host (route destination, mirror, DestinationRule
                   host) matches no Service or ServiceEntry visible from the
                   object's namespace: its share of traffic is answered with 503
                   (TCP/TLS connections refused); a mirror sends no copies.
MC7005   warning   A route destination names a subset that no DestinationRule
                   for its host defines: its share is answered with 503.
MC7006   warning   A VirtualService names a Gateway that is not in the input.
MC7007   warning   A DestinationRule subset selects no workload.
MC7008   warning   A match can never be reached: an earlier rule or match of the
                   same VirtualService matches everything it does.
MC7009   error     Invalid regular expression.
MC7010   error     Invalid field combination Istio's validation rejects (redirect
                   with route, weights not adding up to 100, ``portLevelMtls``
                   without a selector, ``values`` and ``notValues`` both empty...).
MC7011   warning   A VirtualService host matches no Service or ServiceEntry: it
                   configures nothing for the mesh.
MC7012   warning   Several VirtualServices for one host on the mesh gateway: for the
                   clients of each namespace one applies (private to the namespace
                   first, then exported to it by name, then to all; oldest first),
                   the others are ignored for that host.
MC7013   info      A setting the model does not carry yet: accepted and reported,
                   not enforced (Sidecar ingress, and egress hosts under ALLOW_ANY).
MC7014   warning   A kind or feature recognised but not supported yet: Sidecar
                   egressProxy, targetRef policies, CUSTOM authorization, Gateway servers with
                   MUTUAL TLS, TLS termination on a TLS server, certificates from
                   files, AUTO_PASSTHROUGH, PeerAuthentication STRICT
                   (mutual TLS is not implemented: plain text is still accepted),
                   ServiceEntries without ports, partial wildcard hosts, unix socket
                   or network-only addresses, hostname WorkloadEntries no DNS
                   ServiceEntry selects, retryBudget, spaceDelimitedClaims.
MC7015   warning   A condition the model cannot express: the match or rule is left
                   out (ALLOW) or widened (DENY), so that traffic is never allowed
                   that Istio would refuse.
MC7016   warning   Conflicting objects where Istio uses only one (DestinationRules
                   for one host, namespace- or mesh-wide PeerAuthentications): the
                   oldest applies.
MC7017   info      A principal or namespace in a policy names a service account or
                   namespace that is not in the input.
MC7018   warning   A VirtualService has HTTP (or TCP/TLS) rules but the service has no
                   port of that protocol: those rules apply nowhere (name the port
                   ``http-*`` or set ``appProtocol``).
MC7019   error     A Gateway server port protocol Istio does not accept (HTTP,
                   HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, REDIS, MYSQL, TCP, TLS).
MC7020   warning   A Gateway ``selector`` matches no workload in any namespace: the
                   Gateway applies nowhere.
MC7021   warning   No Service exposes the workloads a Gateway selects (or no Service
                   port targets a server's port): without an address the Gateway
                   (or that server) is not served.
MC7022   warning   A VirtualService host matches no server host of a Gateway it
                   binds to (or the server hosts admit no VirtualService of its
                   namespace): nothing is routed for it through that Gateway.
MC7023   warning   Conflicting gateways: servers of two Gateways on the same port of
                   the same gateway Service with the same host (or protocols that
                   cannot share a port); the oldest Gateway keeps it.
MC7024   warning   An AuthorizationPolicy, PeerAuthentication or RequestAuthentication
                   ``selector``, or a Sidecar ``workloadSelector``, selects no
                   workload in the namespaces it applies to: the object applies to
                   nothing.
MC7025   warning   A Gateway server's ``credentialName`` cannot serve (the Secret in
                   the gateway Service's namespace is missing, unparseable, expired,
                   or its key does not match): the server is not served on that
                   Service (never in clear text). The message names the Secret.
=======  ========  ===============================================================

Field-level read errors keep the shared codes of :class:`~meshcore.kube.FieldError`
(MC0101 missing, MC0102 wrong type, MC0103 not one of the allowed values, MC0104 out of
range, MC0105 rejected by the model).
"""

from __future__ import annotations

from collections.abc import Mapping

DUPLICATE_OBJECT = "MC7001"
INVALID_VALUE = "MC7002"
UNKNOWN_FIELD = "MC7003"
HOST_NOT_FOUND = "MC7004"
SUBSET_NOT_FOUND = "MC7005"
GATEWAY_NOT_FOUND = "MC7006"
SUBSET_NO_PODS = "MC7007"
SHADOWED_MATCH = "MC7008"
INVALID_REGEX = "MC7009"
INVALID_COMBINATION = "MC7010"
VS_HOST_UNMATCHED = "MC7011"
VS_CONFLICT = "MC7012"
NOT_CARRIED = "MC7013"
NOT_SUPPORTED = "MC7014"
NOT_EXPRESSIBLE = "MC7015"
CONFLICT = "MC7016"
UNKNOWN_REFERENCE = "MC7017"
NO_MATCHING_PORT = "MC7018"
SERVER_PROTOCOL = "MC7019"
GATEWAY_NO_WORKLOAD = "MC7020"
GATEWAY_NO_SERVICE = "MC7021"
VS_GATEWAY_HOST = "MC7022"
GATEWAY_CONFLICT = "MC7023"
SELECTOR_NO_WORKLOAD = "MC7024"
CREDENTIAL = "MC7025"

#: Every code of this block with a one-line meaning, for documentation and tooling.
ISTIO_CODES: Mapping[str, str] = {
    DUPLICATE_OBJECT: "duplicate object",
    INVALID_VALUE: "invalid value Istio's validation rejects",
    UNKNOWN_FIELD: "unknown field in spec",
    HOST_NOT_FOUND: "referenced host matches no visible service; its share is answered 503",
    SUBSET_NOT_FOUND: "referenced subset not defined; its share is answered 503",
    GATEWAY_NOT_FOUND: "referenced Gateway not in the input",
    SUBSET_NO_PODS: "DestinationRule subset selects no workload",
    SHADOWED_MATCH: "match unreachable behind an earlier match",
    INVALID_REGEX: "invalid regular expression",
    INVALID_COMBINATION: "invalid field combination",
    VS_HOST_UNMATCHED: "VirtualService host matches no service",
    VS_CONFLICT: "several VirtualServices for one host; the oldest applies",
    NOT_CARRIED: "setting accepted but not enforced yet",
    NOT_SUPPORTED: "kind or feature recognised but not supported yet",
    NOT_EXPRESSIBLE: "condition the model cannot express; left out or widened",
    CONFLICT: "conflicting objects; the oldest applies",
    UNKNOWN_REFERENCE: "policy names a service account or namespace not in the input",
    NO_MATCHING_PORT: "rules of a protocol no port of the service speaks",
    SERVER_PROTOCOL: "invalid Gateway server port protocol",
    GATEWAY_NO_WORKLOAD: "Gateway selector matches no workload",
    GATEWAY_NO_SERVICE: "no Service exposes the Gateway's workloads or server port; not served",
    VS_GATEWAY_HOST: "VirtualService host matches no server host of its Gateway",
    GATEWAY_CONFLICT: "conflicting Gateways on one port and host; the oldest applies",
    SELECTOR_NO_WORKLOAD: "policy or Sidecar selector selects no workload; it applies to nothing",
    CREDENTIAL: "Gateway server credentialName cannot serve; the server is not served there",
}
