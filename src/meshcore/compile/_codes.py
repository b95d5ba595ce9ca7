"""Diagnostic codes of the node proxy: :class:`ProxyCode`.

They live here, with the compiler, so that the proxy and the agent, which both import
compile, report with the same codes (and without needing the proxy's extra).
"""

from __future__ import annotations

from ..model import DiagnosticCode, Severity


class ProxyCode(DiagnosticCode):
    """The node proxy (block MC5xxx): MC50xx running it, MC51xx compiling its configuration."""

    NACK = (
        "MC5001", Severity.ERROR,
        "The node's Envoy rejected a resource (a NACK): the message quotes Envoy and names the objects "
        "behind the resource.",
    )
    NOT_EXPRESSIBLE = (
        "MC5002", Severity.ERROR,
        "A part of the plan the Envoy API cannot express: nothing was changed.",
    )
    NOT_STARTED = (
        "MC5003", Severity.ERROR,
        "No node proxy could be started: ports that need it stay on the kernel datapath.",
    )
    UNEVALUATED_CONDITION = (
        "MC5101", Severity.WARNING,
        "An authorization condition the node proxy cannot evaluate: an ALLOW rule with it matches no "
        "request; a DENY or AUDIT rule is applied as if it held.",
    )
    PARTIAL_POLICY = (
        "MC5102", Severity.WARNING,
        "An authorization policy selecting only some of the backends a route or TCP chain may send to: the "
        "proxy decides before it picks a backend, so it requires every backend's policies (fail closed).",
    )
    NEVER_SET = (
        "MC5103", Severity.WARNING,
        "A condition on request authentication (JWT) attributes on a port no request authentication "
        "selects (no request carries a verified token there), or on TLS server names (never set through "
        "the node proxy).",
    )
    MISSING_DESTINATION = (
        "MC5104", Severity.WARNING,
        "A destination whose service or port does not exist: its cluster has no endpoints, so requests "
        "routed there get 503.",
    )
    ZERO_WEIGHTS = (
        "MC5105", Severity.WARNING,
        "A route whose destinations all have weight 0: requests get 500.",
    )
    RAW_NAME_TAKEN = (
        "MC5106", Severity.WARNING,
        "A raw Envoy resource whose name the node proxy's generated configuration already uses: the raw "
        "one is left out.",
    )
    RAW_REDIRECT = (
        "MC5107", Severity.WARNING,
        "A raw config's redirect to a listener without a port on this node, or of a service port another "
        "config already redirects (the first, by namespace/name, wins).",
    )
    JWT_KEYS_UNAVAILABLE = (
        "MC5108", Severity.WARNING,
        "A JWT rule whose keys the node proxy cannot get: tokens of its issuer are refused with 401 (give "
        "the keys inline with `jwks`, or by `jwks_uri` from a service of the mesh).",
    )
    PARTIAL_AUTHENTICATION = (
        "MC5109", Severity.WARNING,
        "A request authentication selecting only some of the backends a route may send to: the proxy "
        "validates tokens of requests for all of them on that route.",
    )
    MIXED_HASH_KEYS = (
        "MC5110", Severity.WARNING,
        "A route whose consistent-hash clusters hash on different keys: consistent hashing is not applied "
        "on that route.",
    )
    TCP_AUTHORIZATION = (
        "MC5111", Severity.WARNING,
        "A TCP chain whose authorization does not reduce to client addresses: the node proxy refuses every "
        "connection there (compile normally keeps such ports in the kernel).",
    )
    SERVICE_CLUSTER = (
        "MC5112", Severity.WARNING,
        "A `<ns>/<svc>` cluster not as a raw config asks: another config selects other ports of the service "
        "(the first config wins), or the selected ports have different traffic policies (none is applied).",
    )
