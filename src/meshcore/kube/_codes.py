"""Diagnostic codes of the core-kinds translation (block MC1xxx).

=======  ========  ===============================================================
Code     Severity  Meaning
=======  ========  ===============================================================
MC1000   error     The object is not one of the core kinds (a routing mistake).
MC1001   error     Duplicate object (same kind, namespace, name) or a Deployment
                   would create a pod whose name is already taken; the later one
                   is dropped and the message names where the first was defined.
MC1002   error     A Deployment's ``spec.selector`` is missing, empty, invalid or
                   does not match ``spec.template.metadata.labels``.
MC1003   warning   ``type: ExternalName`` Service: kept without VIPs or backends;
                   the datapath does not resolve external names.
MC1004   warning   A Service selector selects no pods: the service has no backends.
MC1005   warning   A named ``targetPort`` is declared by none of the selected pods.
MC1006   error     Invalid value: an IP address, a name, a port name, or fields that
                   contradict each other (e.g. ``clusterIP`` vs ``clusterIPs[0]``).
MC1007   error     Duplicate value inside one object (port names, port numbers).
MC1008   warning   EndpointSlice without the ``kubernetes.io/service-name`` label:
                   it belongs to no service and is ignored.
MC1009   warning   EndpointSlice for a Service that is not defined: ignored.
MC1010   warning   EndpointSlice with ``addressType: FQDN``: not supported, ignored.
MC1011   warning   SCTP port: not supported by the datapath, the port is left out.
MC1012   warning   Unknown ``meshcore.io/proxy-mode`` (or older ``meshcore.io/proxy``)
                   annotation value, or the two disagreeing: the value is ignored.
MC1013   warning   Two pods declare the same IP address (host-network pods aside).
MC1014   error     NetworkPolicy ``podSelector`` with ``matchExpressions`` (the mesh
                   selects workloads by labels only).
MC1015   warning   NetworkPolicy named port declared by no pod: the entry matches nothing.
MC1016   warning   NetworkPolicy ``podSelector`` with labels no pod of its namespace
                   carries: the policy selects no pod (an empty selector is not
                   reported).
MC1017   warning   A field its kind does not define (a misspelling such as ``selectr``):
                   ignored, as the API server drops it; the closest valid name is
                   suggested. Field names come from the Kubernetes API (``_schema.json``).
MC1018   warning   A host-network pod annotated ``meshcore.io/proxy-mode: sidecar``: it
                   shares its node's network namespace, so its mode is ``none``.
=======  ========  ===============================================================

Field-level read errors keep the shared codes of :class:`~meshcore.kube.FieldError`
(MC0101 missing, MC0102 wrong type, MC0103 not one of the allowed values, MC0104 out of
range, MC0105 rejected by the model).
"""

from __future__ import annotations

from collections.abc import Mapping

NOT_CORE_KIND = "MC1000"
DUPLICATE_OBJECT = "MC1001"
DEPLOYMENT_SELECTOR = "MC1002"
EXTERNAL_NAME = "MC1003"
SELECTOR_NO_PODS = "MC1004"
TARGET_PORT_UNDECLARED = "MC1005"
INVALID_VALUE = "MC1006"
DUPLICATE_VALUE = "MC1007"
SLICE_NO_SERVICE_LABEL = "MC1008"
SLICE_UNKNOWN_SERVICE = "MC1009"
SLICE_FQDN = "MC1010"
SCTP_UNSUPPORTED = "MC1011"
PROXY_ANNOTATION = "MC1012"
DUPLICATE_POD_IP = "MC1013"
SELECTOR_EXPRESSIONS = "MC1014"
NAMED_PORT_UNDECLARED = "MC1015"
POLICY_SELECTS_NO_PODS = "MC1016"
UNKNOWN_FIELD = "MC1017"
HOST_NETWORK_SIDECAR = "MC1018"

#: Every code of this block with a one-line meaning, for documentation and tooling.
KUBE_CODES: Mapping[str, str] = {
    NOT_CORE_KIND: "object is not a core kind",
    DUPLICATE_OBJECT: "duplicate object or generated pod name",
    DEPLOYMENT_SELECTOR: "Deployment selector missing, invalid or not matching the template",
    EXTERNAL_NAME: "ExternalName Service not supported by the datapath",
    SELECTOR_NO_PODS: "Service selector selects no pods",
    TARGET_PORT_UNDECLARED: "named targetPort declared by no selected pod",
    INVALID_VALUE: "invalid value (address, name, port name, contradicting fields)",
    DUPLICATE_VALUE: "duplicate value inside one object",
    SLICE_NO_SERVICE_LABEL: "EndpointSlice without kubernetes.io/service-name label",
    SLICE_UNKNOWN_SERVICE: "EndpointSlice for an undefined Service",
    SLICE_FQDN: "EndpointSlice with addressType FQDN not supported",
    SCTP_UNSUPPORTED: "SCTP port not supported by the datapath",
    PROXY_ANNOTATION: "unknown meshcore.io/proxy-mode annotation value (ignored)",
    DUPLICATE_POD_IP: "two pods declare the same IP address",
    SELECTOR_EXPRESSIONS: "NetworkPolicy podSelector with matchExpressions not supported",
    NAMED_PORT_UNDECLARED: "NetworkPolicy named port declared by no pod",
    POLICY_SELECTS_NO_PODS: "NetworkPolicy podSelector selects no pod",
    UNKNOWN_FIELD: "unknown field in a core kind (ignored, with the closest valid name)",
    HOST_NETWORK_SIDECAR: "a host-network pod cannot have a sidecar (its proxy mode is none)",
}
