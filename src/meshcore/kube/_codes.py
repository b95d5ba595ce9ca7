"""Diagnostic codes of this package: :class:`LoadCode`, :class:`FieldCode` and :class:`KubeCode`."""

from __future__ import annotations

from collections.abc import Mapping

from ..model import DiagnosticCode, Severity


class LoadCode(DiagnosticCode):
    """Reading input (block MC00xx): files, directories, YAML and JSON documents, objects given as dicts."""

    YAML_SYNTAX = (
        "MC0001", Severity.ERROR,
        "YAML syntax error, or a character YAML does not allow: nothing in that file is used.",
    )
    NOT_AN_OBJECT = (
        "MC0002", Severity.ERROR,
        "A document, List item or object given as a dict that is not a Kubernetes object (a mapping): "
        "it is left out.",
    )
    MISSING_IDENTITY = (
        "MC0003", Severity.ERROR,
        "An object without `apiVersion`, `kind` or `metadata.name` (as strings), or a List without "
        "`items`: it is left out.",
    )
    UNREADABLE_PATH = (
        "MC0004", Severity.ERROR,
        "A path that does not exist, cannot be read, or is not UTF-8 text.",
    )
    DUPLICATE_KEY = (
        "MC0005", Severity.ERROR,
        "A key given twice in one mapping (Kubernetes rejects it): nothing in that file is used.",
    )
    NO_OBJECTS = (
        "MC0006", Severity.ERROR,
        "The paths given hold no Kubernetes object at all (\"no objects passed\", as `kubectl` says).",
    )
    HELM_CHART = (
        "MC0007", Severity.ERROR,
        "A Helm chart, or a file of one, given as input: it must be rendered first (`helm template`); "
        "nothing in it is used.",
    )


class FieldCode(DiagnosticCode):
    """Field types and values (block MC01xx): the shared codes of every reader, core kinds and adapters alike."""

    INVALID = (
        "MC0100", Severity.ERROR,
        "A field's value is not valid: the code of a `FieldError` raised without a more specific one.",
    )
    MISSING = "MC0101", Severity.ERROR, "A required field is missing."
    WRONG_TYPE = (
        "MC0102", Severity.ERROR,
        "A field's value is of the wrong type (a string where an integer is expected, a list where a "
        "mapping is).",
    )
    NOT_ONE_OF = (
        "MC0103", Severity.ERROR,
        "A value that is not one of the allowed values (the message lists them, with the closest one).",
    )
    OUT_OF_RANGE = "MC0104", Severity.ERROR, "A number out of its range (the message gives the range)."
    MODEL_REJECTED = (
        "MC0105", Severity.ERROR,
        "A value the model's validation rejects (the message says why).",
    )


class KubeCode(DiagnosticCode):
    """Core Kubernetes kinds (block MC1xxx): Namespace, Pod, Deployment, Service, EndpointSlice, NetworkPolicy."""

    NOT_CORE_KIND = "MC1000", Severity.ERROR, "The object is not one of the core kinds (a routing mistake)."
    DUPLICATE_OBJECT = (
        "MC1001", Severity.ERROR,
        "Duplicate object (same kind, namespace, name) or a Deployment would create a pod whose name is "
        "already taken; the later one is dropped and the message names where the first was defined.",
    )
    DEPLOYMENT_SELECTOR = (
        "MC1002", Severity.ERROR,
        "A Deployment's `spec.selector` is missing, empty, invalid or does not match "
        "`spec.template.metadata.labels`.",
    )
    EXTERNAL_NAME = (
        "MC1003", Severity.WARNING,
        "`type: ExternalName` Service: kept without VIPs or backends; the datapath does not resolve external "
        "names.",
    )
    SELECTOR_NO_PODS = "MC1004", Severity.WARNING, "A Service selector selects no pods: the service has no backends."
    TARGET_PORT_UNDECLARED = (
        "MC1005", Severity.WARNING,
        "A named `targetPort` is declared by none of the selected pods.",
    )
    INVALID_VALUE = (
        "MC1006", Severity.ERROR,
        "Invalid value: an IP address, a name, a port name, or fields that contradict each other (e.g. "
        "`clusterIP` vs `clusterIPs[0]`).",
    )
    DUPLICATE_VALUE = "MC1007", Severity.ERROR, "Duplicate value inside one object (port names, port numbers)."
    SLICE_NO_SERVICE_LABEL = (
        "MC1008", Severity.WARNING,
        "EndpointSlice without the `kubernetes.io/service-name` label: it belongs to no service and is "
        "ignored.",
    )
    SLICE_UNKNOWN_SERVICE = "MC1009", Severity.WARNING, "EndpointSlice for a Service that is not defined: ignored."
    SLICE_FQDN = "MC1010", Severity.WARNING, "EndpointSlice with `addressType: FQDN`: not supported, ignored."
    SCTP_UNSUPPORTED = "MC1011", Severity.WARNING, "SCTP port: not supported by the datapath, the port is left out."
    PROXY_ANNOTATION = (
        "MC1012", Severity.WARNING,
        "Unknown `meshcore.io/proxy-mode` (or older `meshcore.io/proxy`) annotation value, or the two "
        "disagreeing: the value is ignored.",
    )
    DUPLICATE_POD_IP = "MC1013", Severity.WARNING, "Two pods declare the same IP address (host-network pods aside)."
    SELECTOR_EXPRESSIONS = (
        "MC1014", Severity.ERROR,
        "NetworkPolicy `podSelector` with `matchExpressions` (the mesh selects workloads by labels only).",
    )
    NAMED_PORT_UNDECLARED = (
        "MC1015", Severity.WARNING,
        "NetworkPolicy named port declared by no pod: the entry matches nothing.",
    )
    POLICY_SELECTS_NO_PODS = (
        "MC1016", Severity.WARNING,
        "NetworkPolicy `podSelector` with labels no pod of its namespace carries: the policy selects no pod "
        "(an empty selector is not reported).",
    )
    UNKNOWN_FIELD = (
        "MC1017", Severity.WARNING,
        "A field its kind does not define (a misspelling such as `selectr`): ignored, as the API server drops "
        "it; the closest valid name is suggested. Field names come from the Kubernetes API (`_schema.json`).",
    )
    HOST_NETWORK_SIDECAR = (
        "MC1018", Severity.WARNING,
        "A host-network pod annotated `meshcore.io/proxy-mode: sidecar`: it shares its node's network "
        "namespace, so its mode is `none`.",
    )


#: Every code of this block with its meaning, as plain strings (the members of :class:`KubeCode`).
KUBE_CODES: Mapping[str, str] = {code.value: code.description for code in KubeCode}
