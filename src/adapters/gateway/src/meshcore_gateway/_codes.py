"""Diagnostic codes of the Gateway API and Ingress adapter (block MC6xxx).

=======  ========  ===============================================================
Code     Severity  Meaning
=======  ========  ===============================================================
MC6000   error     The object is not a kind this adapter handles (a routing mistake).
MC6001   error     Duplicate object (same kind, namespace and name): the later one
                   is dropped; the message names where the first was defined.
MC6002   error     Invalid value the API server's validation would reject (hostname,
                   duration, path, header name, contradicting fields). The object
                   contributes nothing.
MC6003   warning   A reference to a parent that is not in the input: a route's
                   Gateway, or a Gateway's GatewayClass. Nothing is attached.
MC6004   info      The object belongs to another controller (GatewayClass with
                   another ``controllerName``, Gateway of such a class, Ingress of
                   another class): ignored, and no status is written for it.
MC6005   warning   A route is not accepted by one of its parents (the status reason
                   and message say why).
MC6006   warning   A backend reference cannot be resolved (missing Service or port,
                   unsupported kind, cross-namespace without a ReferenceGrant): its
                   share of the traffic is answered with an error (HTTP 500; gRPC
                   ``UNAVAILABLE``; TCP/TLS connections refused). Reported for a
                   route no parent accepts too, as its ResolvedRefs condition is.
MC6007   warning   A listener is not accepted or is conflicted, or a Gateway or
                   GatewayClass is not accepted.
MC6009   warning   A feature the model cannot carry yet: ignored when that is safe
                   (session persistence, retry backoff), otherwise failed closed
                   (ExtensionRef/ExternalAuth filters and backend-level filters
                   answer 500; a BackendTLSPolicy that cannot be applied — CA
                   ConfigMap missing, well-known CAs, URI names — or one reached
                   by a mesh route makes its Service an invalid backend; TLS
                   termination on a TLS listener is not accepted).
MC6010   warning   A certificate reference cannot serve: the Secret is missing, not a
                   TLS Secret, unparseable, expired or not yet valid, or its key does
                   not match the certificate. The message names the Secret (never its
                   data); what the certificate would have served stays closed (an
                   HTTPS listener, an Ingress ``tls`` entry's hosts, an Istio server).
MC6011   error     A Gateway or Ingress cannot be served as a Service: its name is
                   not a valid Service name or a Service of that name exists.
MC6012   info      A Gateway has no IP address in ``spec.addresses``: it is
                   translated but not programmed (no address is assigned yet).
MC6013   warning   Routes conflict: an HTTPRoute and a GRPCRoute with intersecting
                   hostnames on one listener, or mesh routes of different kinds on
                   one Service port; the loser is not accepted there.
MC6014   warning   Several TCP or UDP routes on one listener or Service port: the
                   oldest wins, the others never match.
=======  ========  ===============================================================

Field-level read errors keep the shared codes of :class:`~meshcore.kube.FieldError`
(MC0101 missing, MC0102 wrong type, MC0103 not one of the allowed values, MC0104 out of
range, MC0105 rejected by the model).
"""

from __future__ import annotations

from collections.abc import Mapping

NOT_OUR_KIND = "MC6000"
DUPLICATE_OBJECT = "MC6001"
INVALID_VALUE = "MC6002"
PARENT_NOT_FOUND = "MC6003"
OTHER_CONTROLLER = "MC6004"
ROUTE_NOT_ACCEPTED = "MC6005"
UNRESOLVED_BACKEND = "MC6006"
LISTENER_NOT_ACCEPTED = "MC6007"
UNSUPPORTED_FEATURE = "MC6009"
CERTIFICATE_REF = "MC6010"
SERVICE_NAME = "MC6011"
NO_ADDRESS = "MC6012"
ROUTE_CONFLICT = "MC6013"
SHADOWED_L4_ROUTE = "MC6014"

#: Every code of this block with a one-line meaning, for documentation and tooling.
GATEWAY_CODES: Mapping[str, str] = {
    NOT_OUR_KIND: "object is not a kind of the gateway adapter",
    DUPLICATE_OBJECT: "duplicate object",
    INVALID_VALUE: "invalid value the API server would reject",
    PARENT_NOT_FOUND: "referenced Gateway or GatewayClass not in the input",
    OTHER_CONTROLLER: "object belongs to another controller; ignored",
    ROUTE_NOT_ACCEPTED: "route not accepted by a parent",
    UNRESOLVED_BACKEND: "backend reference cannot be resolved; its share gets an error",
    LISTENER_NOT_ACCEPTED: "listener, Gateway or GatewayClass not accepted",
    UNSUPPORTED_FEATURE: "feature not carried by the model; ignored or failed closed",
    CERTIFICATE_REF: "certificate reference cannot serve; what it would serve stays closed",
    SERVICE_NAME: "Gateway or Ingress cannot be served as a Service of its name",
    NO_ADDRESS: "Gateway has no IP address; not programmed",
    ROUTE_CONFLICT: "conflicting routes; the loser is not accepted",
    SHADOWED_L4_ROUTE: "several TCP/UDP routes on one port; only the oldest applies",
}
