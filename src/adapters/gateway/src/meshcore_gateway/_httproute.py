"""HTTPRoute → :class:`RouteSpec`, validated as the API server's schema and CEL rules would.

A rule without matches gets the API default (path prefix ``/``); a route without rules
gets the default rule (which has no backends, so it answers 500).
"""

from __future__ import annotations

from meshcore.kube import FieldError, Fields, KubeObject
from meshcore.model import HttpMatch, MatchKind, StringMatch

from ._codes import GatewayCode
from ._backend_filters import with_backend_filters
from ._common import read_meta
from ._filters import HTTP_FILTERS, read_filters, read_timing
from ._hostnames import read_hostnames
from ._matches import read_http_match
from ._refs import read_backend_ref, read_parent_refs
from ._routes import L7Rule, RouteSpec


def check_rule_names(rules: list[Fields]) -> None:
    """Rule names, when set, are unique within a route."""
    seen: dict[str, str] = {}
    for rule in rules:
        name = rule.str("name")
        if name is None:
            continue
        if name in seen:
            raise FieldError(f"{rule.path}.name", f"rule name {name!r} is already used by {seen[name]}",
                             GatewayCode.INVALID_VALUE)
        seen[name] = rule.path


def _rule(rule: Fields, index: int, namespace: str) -> L7Rule:
    entries = rule.maps("matches")
    matches = tuple(read_http_match(m) for m in entries) or (HttpMatch(),)
    filters = read_filters(rule, namespace, HTTP_FILTERS)
    backends = tuple(with_backend_filters(read_backend_ref(b, namespace), b, namespace, HTTP_FILTERS)
                     for b in rule.maps("backendRefs"))
    if filters.redirect is not None and backends:
        raise FieldError(f"{rule.path}.filters", "a RequestRedirect filter cannot be used together with "
                         "backendRefs", GatewayCode.INVALID_VALUE)
    if filters.replaces_prefix:
        if len(matches) != 1 or (matches[0].path is not None and matches[0].path.kind is not MatchKind.PATH_PREFIX):
            raise FieldError(f"{rule.path}.matches", "ReplacePrefixMatch needs exactly one PathPrefix match "
                             "in the rule", GatewayCode.INVALID_VALUE)
        if matches[0].path is None:
            # The matched prefix is "/": say so, so the proxy knows what to replace.
            only = matches[0]
            matches = (HttpMatch(path=StringMatch(MatchKind.PATH_PREFIX, "/"), headers=only.headers,
                                 query=only.query, method=only.method),)
    return L7Rule(index, matches, filters, backends, read_timing(rule), rule.str("name"))


def read_httproute(obj: KubeObject) -> RouteSpec:
    """Read and validate one HTTPRoute."""
    meta = read_meta(obj)
    spec = Fields.of(obj).map("spec", required=True)
    parents = read_parent_refs(spec, obj.namespace)
    hostnames = read_hostnames(spec)
    rule_fields = spec.maps("rules")
    check_rule_names(rule_fields)
    rules = tuple(_rule(r, i, obj.namespace) for i, r in enumerate(rule_fields))
    if not rules:
        rules = (L7Rule(0, (HttpMatch(),), read_filters(Fields({}, "spec.rules[0]"), obj.namespace), ()),)
    return RouteSpec(obj, "HTTPRoute", obj.namespace, obj.name, meta, tuple(hostnames), tuple(parents), http=rules)
