"""Hostname intersection between listeners and routes, and listener isolation in the tables."""

from __future__ import annotations

import pytest

from _gateway_support import CLASS, gateway, names, parent, service, table, tables, translate
from meshcore_gateway._hostnames import covers, intersect, specificity


@pytest.mark.parametrize(("listener", "route", "expected"), [
    ("", [], [""]),
    ("", ["a.example.com", "*.example.com"], ["a.example.com", "*.example.com"]),
    ("test.example.com", [], ["test.example.com"]),
    ("test.example.com", ["test.example.com"], ["test.example.com"]),
    ("test.example.com", ["*.example.com"], ["test.example.com"]),
    ("test.example.com", ["other.example.com", "*.net"], []),
    ("*.example.com", ["*.example.com", "test.example.com", "foo.test.example.com"],
     ["*.example.com", "test.example.com", "foo.test.example.com"]),
    ("*.example.com", ["example.com", "test.example.net"], []),
    ("*.example.com", ["test.example.com", "test.example.net"], ["test.example.com"]),
    ("*.example.com", ["*.com"], ["*.example.com"]),
])
def test_intersection_follows_the_specification_examples(listener: str, route: list[str], expected: list[str]) -> None:
    assert intersect(listener, route) == expected


def test_a_wildcard_covers_any_number_of_labels_but_not_the_bare_domain() -> None:
    assert covers("*.example.com", "foo.example.com")
    assert covers("*.example.com", "foo.bar.example.com")
    assert not covers("*.example.com", "example.com")
    assert sorted(["", "*.example.com", "a.example.com", "*.a.example.com"], key=specificity) == [
        "a.example.com", "*.a.example.com", "*.example.com", ""]


ROUTES = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wild, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: ["*.example.com"]
  rules: [{backendRefs: [{name: app, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: exact, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [foo.example.com]
  rules: [{matches: [{path: {value: /only}}], backendRefs: [{name: app, port: 80}]}]
"""


def test_a_precise_hostname_table_falls_through_to_wildcard_routes_after_its_own() -> None:
    result = translate(CLASS, service("app"), gateway(), ROUTES)
    assert result.ok, result.errors
    foo = table(result, "default", "gw", 80, ("foo.example.com",))
    # Route hostname precedence first: the precise route's rules, then the wildcard route's.
    assert names(foo.http) == ["default/exact.rules[0].matches[0]", "default/wild.rules[0].matches[0]"]
    wild = table(result, "default", "gw", 80, ("*.example.com",))
    assert names(wild.http) == ["default/wild.rules[0].matches[0]"]
    # The listener has no hostname: requests for other hosts find no route (404).
    assert table(result, "default", "gw", 80, ()).http == ()


def test_listener_isolation_keeps_a_hostname_on_its_most_specific_listener() -> None:
    listeners = """
      - {name: wildcard, port: 80, protocol: HTTP, hostname: "*.example.com"}
      - {name: foo, port: 80, protocol: HTTP, hostname: foo.example.com}
    """
    route = """
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: wild, namespace: default}
    spec:
      parentRefs: [{name: gw, sectionName: wildcard}]
      rules: [{backendRefs: [{name: app, port: 80}]}]
    """
    result = translate(CLASS, service("app"), gateway(listeners=listeners), route)
    assert result.ok, result.errors
    # foo.example.com belongs to listener "foo", which has no route: no fallthrough to "wildcard".
    assert table(result, "default", "gw", 80, ("foo.example.com",)).http == ()
    assert names(table(result, "default", "gw", 80, ("*.example.com",)).http) == ["default/wild.rules[0].matches[0]"]


def test_route_hostnames_outside_the_listener_are_ignored_and_none_is_not_accepted() -> None:
    listeners = "[{name: http, port: 80, protocol: HTTP, hostname: '*.example.com'}]"
    route = """
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: %s, namespace: default}
    spec:
      parentRefs: [{name: gw}]
      hostnames: %s
      rules: [{backendRefs: [{name: app, port: 80}]}]
    """
    result = translate(CLASS, service("app"), gateway(listeners=listeners),
                       route % ("mixed", "[test.example.com, test.example.net]"),
                       route % ("outside", "[example.net]"))
    hosts = sorted(t.hostnames for t in tables(result, "default", "gw", 80))
    assert hosts == [("*.example.com",), ("test.example.com",)]
    assert parent(result, "HTTPRoute", "default", "mixed")["Accepted"] == ("True", "Accepted")
    assert parent(result, "HTTPRoute", "default", "outside")["Accepted"] == ("False", "NoMatchingListenerHostname")
