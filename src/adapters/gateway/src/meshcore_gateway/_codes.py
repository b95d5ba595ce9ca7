"""Diagnostic codes of this package: :class:`GatewayCode`."""

from __future__ import annotations

from collections.abc import Mapping

from meshcore.model import DiagnosticCode, Severity


class GatewayCode(DiagnosticCode):
    """The Gateway API and Ingress adapter (block MC6xxx): Gateway API objects and their status, Ingress."""

    NOT_OUR_KIND = "MC6000", Severity.ERROR, "The object is not a kind this adapter handles (a routing mistake)."
    DUPLICATE_OBJECT = (
        "MC6001", Severity.ERROR,
        "Duplicate object (same kind, namespace and name): the later one is dropped; the message names where "
        "the first was defined.",
    )
    INVALID_VALUE = (
        "MC6002", Severity.ERROR,
        "Invalid value the API server's validation would reject (hostname, duration, path, header name, "
        "contradicting fields). The object contributes nothing.",
    )
    PARENT_NOT_FOUND = (
        "MC6003", Severity.WARNING,
        "A reference to a parent that is not in the input: a route's Gateway, or a Gateway's GatewayClass. "
        "Nothing is attached.",
    )
    OTHER_CONTROLLER = (
        "MC6004", Severity.INFO,
        "The object belongs to another controller (GatewayClass with another `controllerName`, Gateway of "
        "such a class, Ingress of another class): ignored, and no status is written for it.",
    )
    ROUTE_NOT_ACCEPTED = (
        "MC6005", Severity.WARNING,
        "A route is not accepted by one of its parents (the status reason and message say why).",
    )
    UNRESOLVED_BACKEND = (
        "MC6006", Severity.WARNING,
        "A backend reference cannot be resolved (missing Service or port, unsupported kind, cross-namespace "
        "without a ReferenceGrant): its share of the traffic is answered with an error (HTTP 500; gRPC "
        "`UNAVAILABLE`; TCP/TLS connections refused). Reported for a route no parent accepts too, as its "
        "ResolvedRefs condition is.",
    )
    LISTENER_NOT_ACCEPTED = (
        "MC6007", Severity.WARNING,
        "A listener is not accepted or is conflicted, or a Gateway or GatewayClass is not accepted.",
    )
    UNSUPPORTED_FEATURE = (
        "MC6009", Severity.WARNING,
        "A feature the model cannot carry yet: ignored when that is safe (session persistence, retry "
        "backoff), otherwise failed closed (ExtensionRef/ExternalAuth filters and backend-level filters "
        "answer 500; a BackendTLSPolicy that cannot be applied — CA ConfigMap missing, well-known CAs, URI "
        "names — or one reached by a mesh route makes its Service an invalid backend; TLS termination on a "
        "TLS listener is not accepted).",
    )
    CERTIFICATE_REF = (
        "MC6010", Severity.WARNING,
        "A certificate reference cannot serve: the Secret is missing, not a TLS Secret, unparseable, expired "
        "or not yet valid, or its key does not match the certificate. The message names the Secret (never its "
        "data); what the certificate would have served stays closed (an HTTPS listener, an Ingress `tls` "
        "entry's hosts, an Istio server).",
    )
    SERVICE_NAME = (
        "MC6011", Severity.ERROR,
        "A Gateway or Ingress cannot be served as a Service: its name is not a valid Service name or a "
        "Service of that name exists.",
    )
    NO_ADDRESS = (
        "MC6012", Severity.INFO,
        "A Gateway has no IP address in `spec.addresses`: it is translated but not programmed (no address is "
        "assigned yet).",
    )
    ROUTE_CONFLICT = (
        "MC6013", Severity.WARNING,
        "Routes conflict: an HTTPRoute and a GRPCRoute with intersecting hostnames on one listener, or mesh "
        "routes of different kinds on one Service port; the loser is not accepted there.",
    )
    SHADOWED_L4_ROUTE = (
        "MC6014", Severity.WARNING,
        "Several TCP or UDP routes on one listener or Service port: the oldest wins, the others never match.",
    )


#: Every code of this block with its meaning, as plain strings (the members of :class:`GatewayCode`).
GATEWAY_CODES: Mapping[str, str] = {code.value: code.description for code in GatewayCode}
