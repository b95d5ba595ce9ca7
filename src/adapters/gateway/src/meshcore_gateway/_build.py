"""A route's rules → model routes (one model HTTP route per match) for one backend context.

Backends resolve differently for mesh and Gateway parents (ReferenceGrant applies only to
Gateway-bound routes), so a route is built once per context it is attached in.

What a rule answers when it cannot forward:

- no backend references, or every weight is 0: 500 (gRPC: 503, which clients see as
  ``UNAVAILABLE``);
- every weighted backend is invalid: the same error for all matching requests;
- some are invalid: their share of the weight is answered with that error
  (:class:`~meshcore.model.InvalidBackends`), the rest is forwarded;
- a filter the model cannot carry (``ExtensionRef``, ``ExternalAuth``): 500 (fail closed).
"""

from __future__ import annotations

import attrs

from meshcore.model import Destination, DirectResponse, HttpRoute, InvalidBackends, Mirror, TcpRoute

from ._backends import INVALID_KIND, BackendContext, Failure, resolve, resolve_all
from ._routes import L4Rule, L7Rule, RouteSpec


@attrs.frozen
class BuiltRule:
    """The model routes of one rule (one per match), with what went wrong resolving it."""

    rule: L7Rule
    routes: tuple[HttpRoute, ...]
    failures: tuple[Failure, ...]


@attrs.frozen
class Built:
    """A route built in one backend context."""

    http: tuple[BuiltRule, ...] = ()
    tcp: tuple[tuple[L4Rule, TcpRoute], ...] = ()
    failures: tuple[Failure, ...] = ()


def _error_status(route: RouteSpec) -> int:
    return 503 if route.is_grpc else 500


def _name(route: RouteSpec, rule: L7Rule, index: int) -> str:
    return f"{route.ref}.rules[{rule.index}].matches[{index}]"


def _rule_routes(route: RouteSpec, rule: L7Rule, ctx: BackendContext) -> BuiltRule:
    failures: list[Failure] = []
    mirrors = []
    for spec in rule.filters.mirrors:
        result = resolve(spec.backend, ctx)
        if isinstance(result, Failure):
            failures.append(attrs.evolve(result, effect="the mirror is dropped"))
        else:
            mirrors.append(Mirror(result, spec.percent))
    filters = rule.filters
    if "ExtensionRef" in filters.failing:
        failures.append(Failure(f"{rule.path}.filters", INVALID_KIND, "ExtensionRef filters are not supported",
                                "requests matching this rule are answered with 500"))
    if filters.failing:
        # Fail closed: the filter cannot be applied, so nothing else about the rule is.
        return BuiltRule(rule, tuple(
            HttpRoute(name=_name(route, rule, j), matches=(match,), direct_response=DirectResponse(500),
                      source=route.obj.source_at(f"{rule.path}.matches[{j}]"))
            for j, match in enumerate(rule.matches)), tuple(failures))
    destinations: tuple[Destination, ...] = ()
    invalid = None
    direct = None
    if filters.redirect is None:
        resolved = resolve_all(rule.backends, ctx)
        failures.extend(resolved.failures)
        if sum(d.weight for d in resolved.destinations) == 0:
            direct = DirectResponse(_error_status(route))
        else:
            destinations = resolved.destinations
            if resolved.invalid_weight:
                invalid = InvalidBackends(resolved.invalid_weight, _error_status(route))
    forwards = bool(destinations)
    routes = tuple(
        HttpRoute(
            name=_name(route, rule, j),
            matches=(match,),
            destinations=destinations,
            redirect=filters.redirect,
            direct_response=direct,
            rewrite=filters.rewrite if forwards else None,
            request_headers=filters.request_headers,
            response_headers=filters.response_headers,
            mirrors=mirrors if forwards else (),
            timeout_ms=rule.timing.timeout_ms if forwards else None,
            retries=rule.timing.retries if forwards else None,
            cors=filters.cors,
            invalid_backends=invalid,
            source=route.obj.source_at(f"{rule.path}.matches[{j}]"),
        )
        for j, match in enumerate(rule.matches)
    )
    return BuiltRule(rule, routes, tuple(failures))


def _l4_route(route: RouteSpec, rule: L4Rule, ctx: BackendContext) -> tuple[TcpRoute, tuple[Failure, ...]]:
    resolved = resolve_all(rule.backends, ctx)
    forwarded = sum(d.weight for d in resolved.destinations)
    return TcpRoute(
        name=f"{route.ref}.rules[{rule.index}]",
        destinations=resolved.destinations if forwarded else (),
        invalid_weight=resolved.invalid_weight if forwarded and resolved.invalid_weight else None,
        source=route.obj.source_at(rule.path),
    ), resolved.failures


def build(route: RouteSpec, ctx: BackendContext) -> Built:
    """Every model route of ``route`` in context ``ctx``."""
    if route.is_l7:
        rules = tuple(_rule_routes(route, rule, ctx) for rule in route.http)
        return Built(http=rules, failures=tuple(f for r in rules for f in r.failures))
    tcp = []
    failures: list[Failure] = []
    for rule in route.tcp:
        built, problems = _l4_route(route, rule, ctx)
        tcp.append((rule, built))
        failures.extend(problems)
    return Built(tcp=tuple(tcp), failures=tuple(failures))
