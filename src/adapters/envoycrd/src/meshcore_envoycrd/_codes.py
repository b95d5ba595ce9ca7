"""Diagnostic codes of the raw Envoy resources adapter (block MC8xxx).

=======  ========  ===============================================================
Code     Severity  Meaning
=======  ========  ===============================================================
MC8000   error     The object is not a kind this adapter handles (a routing mistake).
MC8001   error     Duplicate config (same kind, namespace and name): the later one is
                   dropped; the message names where the first was defined.
MC8002   error     A resource is not valid Envoy configuration: an unknown field, a
                   value of the wrong type, an unknown enum value, a bad duration.
                   The field path inside the resource is given.
MC8003   error     A missing, unknown or misplaced ``@type``: a top-level resource
                   that is not a Listener, RouteConfiguration, Cluster,
                   ClusterLoadAssignment or Secret (v3), or a nested typed config
                   naming a message the Envoy API does not define.
MC8004   error     A value Envoy would reject although it parses: a constraint of
                   the Envoy API (required field or oneof, length, range, enum,
                   header name), a listener address that is not a socket address
                   with a port, an HTTP filter after the router.
MC8005   error     Two resources of the same type and name in one config.
MC8006   error     A resource name that is missing or contains ``/`` (names are
                   qualified as ``<ns>/<config>/<name>``; only a Cluster may be
                   named after a meshcore service cluster ``<ns>/<svc>`` or
                   ``<ns>/<svc>:<port>``).
MC8007   error     A reference containing ``/`` that is not a meshcore service
                   cluster ``<ns>/<svc>`` or ``<ns>/<svc>:<port>`` (references to
                   other configs' resources are not supported).
MC8008   warning   A service (or port) named in ``services``, ``backendServices`` or
                   a ``<ns>/<svc>[:<port>]`` cluster reference does not exist (for
                   ``<ns>/<svc>``: the service has no TCP port): no redirect
                   happens, and a cluster without endpoints answers 503.
MC8009   warning   A reference to a resource this config does not define (route
                   configuration, cluster, endpoints, secret): Envoy waits for it or
                   answers 503.
MC8010   error     ``services`` cannot be redirected: the listener is not defined in
                   the config (or the config has no listener), the service is in
                   another namespace than a namespaced config, or another config
                   already redirects the same service port.
MC8011   info      A Listener without an address: the node proxy binds it on a port it
                   allocates (services redirected to it reach it through eBPF).
MC8012   error     ``nodeSelector`` cannot be carried: ``matchExpressions`` are not
                   supported (only ``matchLabels``), so the config is not applied
                   rather than applied to more nodes than intended.
MC8013   warning   A field Cilium does not define where it is written, ignored: a
                   ``backendServices`` entry's ``ports`` (its port filter is
                   ``number``).
=======  ========  ===============================================================

Field-level read errors of the ``spec`` keep the shared codes of
:class:`~meshcore.kube.FieldError` (MC0101 missing, MC0102 wrong type, MC0103 not one of
the allowed values, MC0104 out of range, MC0105 rejected by the model).
"""

from __future__ import annotations

from collections.abc import Mapping

NOT_OUR_KIND = "MC8000"
DUPLICATE_OBJECT = "MC8001"
INVALID_RESOURCE = "MC8002"
UNKNOWN_TYPE = "MC8003"
CONSTRAINT = "MC8004"
DUPLICATE_RESOURCE = "MC8005"
INVALID_NAME = "MC8006"
BAD_REFERENCE = "MC8007"
MISSING_SERVICE = "MC8008"
UNDEFINED_REFERENCE = "MC8009"
SERVICE_REDIRECT = "MC8010"
PORT_ALLOCATED = "MC8011"
NODE_SELECTOR = "MC8012"
NOT_A_FIELD = "MC8013"

#: Every code of this block with a one-line meaning, for documentation and tooling.
ENVOYCRD_CODES: Mapping[str, str] = {
    NOT_OUR_KIND: "object is not a CiliumEnvoyConfig kind",
    DUPLICATE_OBJECT: "duplicate config",
    INVALID_RESOURCE: "resource is not valid Envoy configuration",
    UNKNOWN_TYPE: "missing, unknown or misplaced @type",
    CONSTRAINT: "value Envoy would reject (API constraint)",
    DUPLICATE_RESOURCE: "two resources of the same type and name in one config",
    INVALID_NAME: "resource name missing or containing '/'",
    BAD_REFERENCE: "reference containing '/' that is not <ns>/<svc> or <ns>/<svc>:<port>",
    MISSING_SERVICE: "referenced service or port does not exist",
    UNDEFINED_REFERENCE: "reference to a resource the config does not define",
    SERVICE_REDIRECT: "service redirect to an undefined listener, across namespaces, or taken",
    PORT_ALLOCATED: "listener without address: the proxy allocates a port",
    NODE_SELECTOR: "nodeSelector matchExpressions not supported",
    NOT_A_FIELD: "field Cilium does not define there (ignored)",
}
