"""AuthorizationPolicy and PeerAuthentication → model policies.

AuthorizationPolicy: a policy in the root namespace without a selector applies to every
workload of the mesh; with a selector, to the matching workloads of every namespace.
A policy attached by ``targetRef(s)`` (to a Gateway, Service or waypoint) is reported
and not applied; with a selector as well it is an error. ``spec: {}`` (ALLOW, no rules) allows nothing; ``rules: [{}]`` matches every request.
CUSTOM has no external authorizer here: its rules become a DENY (requests it would send
to the authorizer are refused — fail closed). Fields the model cannot express are
handled as Istio handles fields a rule cannot check: an ALLOW (or AUDIT) rule holding
one is left out, a DENY rule is kept without it.

PeerAuthentication: precedence is workload (selector) over namespace over mesh (root
namespace, no selector); ``UNSET`` inherits from the next level, and the adapter
resolves that inheritance, so each emitted policy carries its effective mode. Of several
namespace- or mesh-wide policies the oldest applies. Mutual TLS is not implemented: every
STRICT mode an object declares (the policy's own or a port's) is a warning that it is
not enforced; PERMISSIVE and DISABLE already hold, since plain text is accepted.
"""

from __future__ import annotations

import ipaddress
import re

from meshcore.adapter import TranslateCode
from meshcore.kube import FieldError, Fields, Inventory, KubeObject, Report, field_diagnostic
from meshcore.model import (
    AuthorizationPolicy,
    Condition,
    IpBlock,
    ModelError,
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

from ._codes import IstioCode
from ._common import ROOT_NAMESPACE, age_key, model, targets_by_reference

ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
#: Attribute keys of ``when`` conditions Istio accepts (``[name]`` keys take any name).
CONDITION_KEYS = (
    "source.ip", "remote.ip", "source.namespace", "source.principal", "request.auth.principal",
    "request.auth.audiences", "request.auth.presenter", "destination.ip", "destination.port",
    "connection.sni",
)
CONDITION_PREFIXES = ("request.headers[", "request.auth.claims[", "experimental.envoy.filters.")
_PRINCIPAL = re.compile(r"^([^/]+)/ns/([^/]+)/sa/([^/]+)$")


def _pattern(value: str, path: str) -> str:
    """An exact, ``prefix*``, ``*suffix`` or ``*`` value; ``*`` elsewhere is rejected."""
    if value == "*":
        return value
    inner = value[1:] if value.startswith("*") else value
    inner = inner[:-1] if inner.endswith("*") and not value.startswith("*") else inner
    if "*" in inner or value == "":
        raise FieldError(path, f"{value!r}: '*' may only be the whole value, its first or its last character, "
                         "and values must not be empty", IstioCode.INVALID_VALUE)
    return value


def _patterns(fields: Fields, key: str) -> tuple[str, ...]:
    return tuple(_pattern(v, f"{fields.path}.{key}[{i}]") for i, v in enumerate(fields.strs(key)))


def _blocks(fields: Fields, key: str) -> tuple[IpBlock, ...]:
    out = []
    for i, text in enumerate(fields.strs(key)):
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise FieldError(f"{fields.path}.{key}[{i}]", f"{text!r} is not an IP address or CIDR",
                             IstioCode.INVALID_VALUE) from None
        out.append(IpBlock(str(net)))
    return tuple(out)


def _ports(fields: Fields, key: str) -> tuple[PortRange, ...]:
    out = []
    for i, text in enumerate(fields.strs(key)):
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise FieldError(f"{fields.path}.{key}[{i}]", f"{text!r} is not a port (a string of 1..65535)",
                             IstioCode.INVALID_VALUE)
        out.append(PortRange.single(int(text)))
    return tuple(out)


class _Rules:
    """Reads the rules of one AuthorizationPolicy."""

    def __init__(self, obj: KubeObject, action: str, inventory: Inventory, report: Report) -> None:
        self.obj = obj
        self.allowing = action in ("ALLOW", "AUDIT")
        self.inventory = inventory
        self.report = report

    def _unexpressible(self, path: str, what: str) -> bool:
        """Report a field the model cannot carry; True when the whole rule must be left out."""
        if self.allowing:
            self.report.warn(self.obj, IstioCode.NOT_EXPRESSIBLE, f"{what} cannot be expressed yet: this rule is left "
                             "out, so it allows nothing", path)
            return True
        self.report.warn(self.obj, IstioCode.NOT_EXPRESSIBLE, f"{what} cannot be expressed yet: the rule is kept "
                         "without it, so it denies more", path)
        return False

    def _references(self, src: Fields, principals: tuple[str, ...], namespaces: tuple[str, ...]) -> None:
        for i, p in enumerate(principals):
            m = _PRINCIPAL.match(p)
            if m and "*" not in p and self.inventory.namespace(m.group(2)) is not None \
                    and not self.inventory.has_service_account(m.group(2), m.group(3)):
                self.report.info(self.obj, IstioCode.UNKNOWN_REFERENCE, f"service account {m.group(2)}/{m.group(3)} "
                                 "is not in the input", f"{src.path}.principals[{i}]")
        for i, ns in enumerate(namespaces):
            if "*" not in ns and self.inventory.namespaces and self.inventory.namespace(ns) is None:
                self.report.info(self.obj, IstioCode.UNKNOWN_REFERENCE, f"namespace {ns} is not in the input",
                                 f"{src.path}.namespaces[{i}]")

    def source(self, src: Fields) -> PeerSelector | None:
        principals = _patterns(src, "principals")
        namespaces = _patterns(src, "namespaces")
        self._references(src, principals, namespaces)
        for key in ("remoteIpBlocks", "notRemoteIpBlocks"):
            if src.has(key):
                _blocks(src, key)
                if self._unexpressible(f"{src.path}.{key}", key):
                    return None
        peers = self._peers(src, principals)
        if peers is None:
            return None
        principals, not_principals = peers
        return model(src.path, lambda: PeerSelector(
            principals=principals, not_principals=not_principals,
            namespaces=namespaces, not_namespaces=_patterns(src, "notNamespaces"),
            ip_blocks=_blocks(src, "ipBlocks"), not_ip_blocks=_blocks(src, "notIpBlocks"),
            request_principals=_patterns(src, "requestPrincipals"),
            not_request_principals=_patterns(src, "notRequestPrincipals"),
        ))

    def _peers(self, src: Fields, principals: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """Principals and notPrincipals with serviceAccounts and trustDomains folded in; None leaves the rule out.

        ``ns/name`` service accounts are principals of any trust domain (``*/ns/ns/sa/name``);
        a trust domain ``td`` stands for ``td/*``. Trust domains with service accounts become
        exact principals (``td/ns/ns/sa/name``); with principals they cannot be expressed.
        """
        accounts = self._accounts(src, "serviceAccounts")
        not_accounts = self._accounts(src, "notServiceAccounts")
        if accounts is None or not_accounts is None:
            return None
        domains = src.strs("trustDomains")
        not_domains = tuple(f"{d}/*" if d != "*" else "*" for d in src.strs("notTrustDomains"))
        allowed = principals or accounts
        if domains:
            if principals or (accounts and any("*" in d for d in domains)):
                if self._unexpressible(f"{src.path}.trustDomains",
                                       "trustDomains with principals (or a wildcard trust domain with serviceAccounts)"):
                    return None
            elif accounts:
                allowed = tuple(f"{d}{p[1:]}" for d in domains for p in accounts)
            else:
                allowed = tuple(f"{d}/*" if d != "*" else "*" for d in domains)
        return allowed, (*_patterns(src, "notPrincipals"), *not_accounts, *not_domains)

    def _accounts(self, src: Fields, key: str) -> tuple[str, ...] | None:
        """``ns/name`` service accounts as principal patterns of any trust domain; None leaves the rule out."""
        out = []
        for i, value in enumerate(src.strs(key)):
            namespace, _, name = value.partition("/")
            if not namespace or not name or "/" in name or "*" in value:
                if self._unexpressible(f"{src.path}.{key}[{i}]", f"{key} {value!r} (not <namespace>/<name>)"):
                    return None
                continue
            out.append(f"*/ns/{namespace}/sa/{name}")
        return tuple(out)

    def operation(self, op: Fields) -> Operation:
        for key in ("methods", "notMethods"):
            for i, method in enumerate(op.strs(key)):
                if "*" in method:
                    raise FieldError(f"{op.path}.{key}[{i}]", "methods are matched exactly; '*' is not allowed",
                                     IstioCode.INVALID_VALUE)
        return Operation(
            ports=_ports(op, "ports"), not_ports=_ports(op, "notPorts"),
            methods=tuple(op.strs("methods")), not_methods=tuple(op.strs("notMethods")),
            paths=_patterns(op, "paths"), not_paths=_patterns(op, "notPaths"),
            hosts=_patterns(op, "hosts"), not_hosts=_patterns(op, "notHosts"),
        )

    def condition(self, when: Fields) -> Condition:
        key = when.req_str("key")
        if key not in CONDITION_KEYS and not (any(key.startswith(p) for p in CONDITION_PREFIXES[:2])
                                              and key.endswith("]") and len(key) > key.index("[") + 2) \
                and not key.startswith(CONDITION_PREFIXES[2]):
            raise FieldError(f"{when.path}.key", f"{key!r} is not a condition key Istio accepts (e.g. "
                             "request.headers[x-user], source.ip, request.auth.claims[iss], destination.port)",
                             IstioCode.INVALID_VALUE)
        values = when.strs("values")
        not_values = when.strs("notValues")
        if not values and not not_values:
            raise FieldError(when.path, "at least one of values or notValues is required",
                             IstioCode.INVALID_COMBINATION)
        if key in ("source.ip", "remote.ip", "destination.ip"):
            for name, items in (("values", values), ("notValues", not_values)):
                for i, v in enumerate(items):
                    try:
                        ipaddress.ip_network(v, strict=False)
                    except ValueError:
                        raise FieldError(f"{when.path}.{name}[{i}]", f"{v!r} is not an IP address or CIDR",
                                         IstioCode.INVALID_VALUE) from None
        if key == "destination.port":
            for name, items in (("values", values), ("notValues", not_values)):
                for i, v in enumerate(items):
                    if not v.isdigit() or not 1 <= int(v) <= 65535:
                        raise FieldError(f"{when.path}.{name}[{i}]", f"{v!r} is not a port", IstioCode.INVALID_VALUE)
        return Condition(key, tuple(values), tuple(not_values))

    def rule(self, rule: Fields) -> PolicyRule | None:
        sources = []
        for f in rule.maps("from"):
            s = self.source(f.map("source", required=True))
            if s is None:
                return None
            sources.append(s)
        operations = [self.operation(t.map("operation", required=True)) for t in rule.maps("to")]
        conditions = [self.condition(w) for w in rule.maps("when")]
        return PolicyRule(tuple(sources), tuple(operations), tuple(conditions))


def read_authorization_policy(obj: KubeObject, inventory: Inventory, report: Report,
                              root: str = ROOT_NAMESPACE) -> AuthorizationPolicy | None:
    """Read one AuthorizationPolicy (see the module documentation); ``None`` when it is not applied."""
    spec = Fields.of(obj).map("spec")
    action = spec.str("action", "ALLOW", choices=ACTIONS) or "ALLOW"
    if targets_by_reference(spec, obj, report):
        return None
    if spec.has("provider") and action != "CUSTOM":
        raise FieldError("spec.provider", "provider is only allowed with action CUSTOM", IstioCode.INVALID_COMBINATION)
    if action == "CUSTOM":
        if not spec.has("provider"):
            raise FieldError("spec.provider", "action CUSTOM needs a provider", IstioCode.INVALID_COMBINATION)
        report.warn(obj, IstioCode.NOT_SUPPORTED, "CUSTOM (external authorization) is not supported yet: requests its "
                    "rules match are denied (fail closed)", "spec.action")
    labels = spec.map("selector").str_map("matchLabels")
    selector = WorkloadSelector(None if obj.namespace == root else obj.namespace, labels)
    reader = _Rules(obj, action, inventory, report)
    rules = []
    for r in spec.maps("rules"):
        rule = reader.rule(r)
        if rule is not None:
            rules.append(rule)
    model_action = PolicyAction.DENY if action == "CUSTOM" else PolicyAction(action)
    return model("spec", lambda: AuthorizationPolicy(obj.name, obj.namespace, selector, model_action, tuple(rules),
                                                     source=obj.source))


def _mode(fields: Fields) -> PeerAuthMode:
    return PeerAuthMode(fields.str("mode", "UNSET", choices=MODES) or "UNSET")


def _warn_strict_not_enforced(obj: KubeObject, mode: PeerAuthMode, port_modes: tuple[PortMode, ...],
                              report: Report) -> None:
    """Warn once where the object itself asks for STRICT: it is enforced only where the node agents run mutual TLS.

    The translation cannot know whether they do, so the code is one its consumers that know (a lab with
    mutual TLS) leave out; one warning per object, at its first STRICT field, names the others.
    """
    paths = (["spec.mtls.mode"] if mode is PeerAuthMode.STRICT else []) + [
        f"spec.portLevelMtls.{p.port}.mode" for p in port_modes if p.mode is PeerAuthMode.STRICT]
    if not paths:
        return
    what = "mode STRICT" if len(paths) == 1 else f"mode STRICT (also at {', '.join(paths[1:])})"
    report.warn(obj, TranslateCode.STRICT_WITHOUT_MTLS, f"{what} is enforced only where the node agents run mutual "
                "TLS (`meshcore agent --ca-socket`, `meshcore lab up --mtls`); elsewhere workloads still accept "
                "plain-text connections", paths[0])


def read_peer_authentications(objects: list[KubeObject], report: Report, errors: list[KubeObject],
                              root: str = ROOT_NAMESPACE) -> list[PeerAuthentication]:
    """Read every PeerAuthentication and resolve the mesh → namespace → workload inheritance."""
    read: list[tuple[KubeObject, dict[str, str], PeerAuthMode, tuple[PortMode, ...]]] = []
    for obj in sorted(objects, key=age_key):
        try:
            spec = Fields.of(obj).map("spec")
            labels = spec.map("selector").str_map("matchLabels")
            mode = _mode(spec.map("mtls"))
            ports: list[PortMode] = []
            for name in spec.map("portLevelMtls").data:
                path = f"spec.portLevelMtls.{name}"
                if not str(name).isdigit() or not 1 <= int(str(name)) <= 65535:
                    raise FieldError(path, f"{name!r} is not a port (1..65535)", IstioCode.INVALID_VALUE)
                ports.append(PortMode(int(str(name)), _mode(spec.map("portLevelMtls").map(str(name)))))
            if ports and not labels:
                raise FieldError("spec.portLevelMtls", "portLevelMtls needs a selector with matchLabels",
                                 IstioCode.INVALID_COMBINATION)
        except FieldError as exc:
            report.items.append(field_diagnostic(obj, exc))
            errors.append(obj)
            continue
        read.append((obj, labels, mode, tuple(sorted(ports))))

    mesh_mode = PeerAuthMode.UNSET
    namespace_modes: dict[str, PeerAuthMode] = {}
    winners: dict[str, KubeObject] = {}
    for obj, labels, mode, _ in read:
        if labels:
            continue
        scope = "" if obj.namespace == root else obj.namespace
        if scope in winners:
            first = winners[scope]
            what = "mesh-wide" if not scope else f"namespace-wide (namespace {scope})"
            report.warn(obj, IstioCode.CONFLICT, f"another {what} PeerAuthentication applies: {first.namespace}/"
                        f"{first.name} is older; this one is ignored")
            continue
        winners[scope] = obj
        if scope:
            namespace_modes[scope] = mode
        else:
            mesh_mode = mode

    def effective(namespace: str, mode: PeerAuthMode) -> PeerAuthMode:
        if mode is not PeerAuthMode.UNSET:
            return mode
        inherited = namespace_modes.get(namespace, PeerAuthMode.UNSET)
        return inherited if inherited is not PeerAuthMode.UNSET else mesh_mode

    out = []
    for obj, labels, mode, port_modes in read:
        if not labels and winners.get("" if obj.namespace == root else obj.namespace) is not obj:
            continue
        _warn_strict_not_enforced(obj, mode, port_modes, report)
        if not labels and obj.namespace == root:
            selector = WorkloadSelector(None)
            resolved = mode
        else:
            selector = WorkloadSelector(obj.namespace, labels)
            resolved = effective(obj.namespace, mode) if labels else (mode if mode is not PeerAuthMode.UNSET
                                                                     else mesh_mode)
        try:
            out.append(PeerAuthentication(obj.name, obj.namespace, selector, resolved, port_modes,
                                          source=obj.source))
        except ModelError as exc:
            report.items.append(field_diagnostic(obj, exc, "metadata"))
    return out
