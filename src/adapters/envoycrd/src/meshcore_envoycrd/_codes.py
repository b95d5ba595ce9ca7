"""Diagnostic codes of this package: :class:`EnvoyCrdCode`."""

from __future__ import annotations

from collections.abc import Mapping

from meshcore.model import DiagnosticCode, Severity


class EnvoyCrdCode(DiagnosticCode):
    """The raw Envoy resources adapter (block MC8xxx): CiliumEnvoyConfig and CiliumClusterwideEnvoyConfig."""

    NOT_OUR_KIND = "MC8000", Severity.ERROR, "The object is not a kind this adapter handles (a routing mistake)."
    DUPLICATE_OBJECT = (
        "MC8001", Severity.ERROR,
        "Duplicate config (same kind, namespace and name): the later one is dropped; the message names where "
        "the first was defined.",
    )
    INVALID_RESOURCE = (
        "MC8002", Severity.ERROR,
        "A resource is not valid Envoy configuration: an unknown field, a value of the wrong type, an unknown "
        "enum value, a bad duration. The field path inside the resource is given.",
    )
    UNKNOWN_TYPE = (
        "MC8003", Severity.ERROR,
        "A missing, unknown or misplaced `@type`: a top-level resource that is not a Listener, "
        "RouteConfiguration, Cluster, ClusterLoadAssignment or Secret (v3), or a nested typed config naming a "
        "message the Envoy API does not define.",
    )
    CONSTRAINT = (
        "MC8004", Severity.ERROR,
        "A value Envoy would reject although it parses: a constraint of the Envoy API (required field or "
        "oneof, length, range, enum, header name), a listener address that is not a socket address with a "
        "port, an HTTP filter after the router.",
    )
    DUPLICATE_RESOURCE = "MC8005", Severity.ERROR, "Two resources of the same type and name in one config."
    INVALID_NAME = (
        "MC8006", Severity.ERROR,
        "A resource name that is missing or contains `/` (names are qualified as `<ns>/<config>/<name>`; only "
        "a Cluster may be named after a meshcore service cluster `<ns>/<svc>` or `<ns>/<svc>:<port>`).",
    )
    BAD_REFERENCE = (
        "MC8007", Severity.ERROR,
        "A reference containing `/` that is not a meshcore service cluster `<ns>/<svc>` or "
        "`<ns>/<svc>:<port>` (references to other configs' resources are not supported).",
    )
    MISSING_SERVICE = (
        "MC8008", Severity.WARNING,
        "A service (or port) named in `services`, `backendServices` or a `<ns>/<svc>[:<port>]` cluster "
        "reference does not exist (for `<ns>/<svc>`: the service has no TCP port): no redirect happens, and a "
        "cluster without endpoints answers 503.",
    )
    UNDEFINED_REFERENCE = (
        "MC8009", Severity.WARNING,
        "A reference to a resource this config does not define (route configuration, cluster, endpoints, "
        "secret): Envoy waits for it or answers 503.",
    )
    SERVICE_REDIRECT = (
        "MC8010", Severity.ERROR,
        "`services` cannot be redirected: the listener is not defined in the config (or the config has no "
        "listener), the service is in another namespace than a namespaced config, or another config already "
        "redirects the same service port.",
    )
    PORT_ALLOCATED = (
        "MC8011", Severity.INFO,
        "A Listener without an address: the node proxy binds it on a port it allocates (services redirected "
        "to it reach it through eBPF).",
    )
    NODE_SELECTOR = (
        "MC8012", Severity.ERROR,
        "`nodeSelector` cannot be carried: `matchExpressions` are not supported (only `matchLabels`), so the "
        "config is not applied rather than applied to more nodes than intended.",
    )
    NOT_A_FIELD = (
        "MC8013", Severity.WARNING,
        "A field Cilium does not define where it is written, ignored: a `backendServices` entry's `ports` "
        "(its port filter is `number`).",
    )


#: Every code of this block with its meaning, as plain strings (the members of :class:`EnvoyCrdCode`).
ENVOYCRD_CODES: Mapping[str, str] = {code.value: code.description for code in EnvoyCrdCode}
