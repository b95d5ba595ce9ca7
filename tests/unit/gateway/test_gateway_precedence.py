"""Match precedence: the order of model routes follows the Gateway API rules across rules and routes."""

from __future__ import annotations

from _gateway_support import names, service, table, translate

SERVICES = (service("app", "shop", 80, "10.96.0.1"), service("v2", "shop", 80, "10.96.0.2"))


def route(name: str, rules: str, created: str | None = None, namespace: str = "shop") -> str:
    stamp = f", creationTimestamp: '{created}'" if created else ""
    return f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: {name}, namespace: {namespace}{stamp}}}
    spec:
      parentRefs: [{{group: "", kind: Service, name: app, namespace: shop}}]
      rules: {rules}
    """


def order(*routes: str) -> list[str]:
    result = translate(*SERVICES, *routes)
    assert result.ok, result.errors
    return names(table(result, "shop", "app", 80).http)


def test_exact_before_longest_prefix_before_shorter_prefix_before_everything() -> None:
    got = order(route("r", """
      - matches: [{path: {type: PathPrefix, value: /}}]
        backendRefs: [{name: app, port: 80}]
      - matches: [{path: {type: PathPrefix, value: /api}}]
        backendRefs: [{name: app, port: 80}]
      - matches: [{path: {type: PathPrefix, value: /api/v1}}]
        backendRefs: [{name: app, port: 80}]
      - matches: [{path: {type: Exact, value: /api}}]
        backendRefs: [{name: app, port: 80}]
    """))
    assert got == ["shop/r.rules[3].matches[0]", "shop/r.rules[2].matches[0]",
                   "shop/r.rules[1].matches[0]", "shop/r.rules[0].matches[0]"]


def test_method_then_header_count_then_query_count_break_ties_on_the_same_path() -> None:
    got = order(route("r", """
      - matches: [{path: {value: /x}}]
        backendRefs: [{name: app, port: 80}]
      - matches: [{path: {value: /x}, queryParams: [{name: q, value: "1"}]}]
        backendRefs: [{name: app, port: 80}]
      - matches: [{path: {value: /x}, headers: [{name: a, value: "1"}]}]
        backendRefs: [{name: app, port: 80}]
      - matches: [{path: {value: /x}, headers: [{name: a, value: "1"}, {name: b, value: "2"}]}]
        backendRefs: [{name: app, port: 80}]
      - matches: [{path: {value: /x}, method: GET}]
        backendRefs: [{name: app, port: 80}]
    """))
    assert [n.split(".")[1] for n in got] == ["rules[4]", "rules[3]", "rules[2]", "rules[1]", "rules[0]"]


def test_a_longer_prefix_wins_over_more_header_matches() -> None:
    got = order(route("r", """
      - matches: [{path: {value: /a}, headers: [{name: h, value: "1"}], method: GET}]
        backendRefs: [{name: app, port: 80}]
      - matches: [{path: {value: /a/b}}]
        backendRefs: [{name: app, port: 80}]
    """))
    assert got == ["shop/r.rules[1].matches[0]", "shop/r.rules[0].matches[0]"]


def test_ties_go_to_the_oldest_route_then_alphabetical_namespace_and_name() -> None:
    rules = "[{matches: [{path: {value: /same}}], backendRefs: [{name: app, port: 80}]}]"
    got = order(route("zeta", rules, "2024-01-01T00:00:00Z"), route("alpha", rules, "2024-02-01T00:00:00Z"),
                route("beta", rules), route("aardvark", rules))
    # zeta is oldest; alpha has a timestamp; routes without one come last, by name.
    assert got == ["shop/zeta.rules[0].matches[0]", "shop/alpha.rules[0].matches[0]",
                   "shop/aardvark.rules[0].matches[0]", "shop/beta.rules[0].matches[0]"]


def test_matches_of_one_rule_interleave_with_other_routes() -> None:
    got = order(
        route("one", """
          - matches: [{path: {type: Exact, value: /login}}, {path: {value: /}}]
            backendRefs: [{name: app, port: 80}]
        """, "2024-01-01T00:00:00Z"),
        route("two", "[{matches: [{path: {value: /static}}], backendRefs: [{name: v2, port: 80}]}]",
              "2024-03-01T00:00:00Z"),
    )
    # One model route per match: /static from the newer route sits between one's two matches.
    assert got == ["shop/one.rules[0].matches[0]", "shop/two.rules[0].matches[0]", "shop/one.rules[0].matches[1]"]


def test_rule_order_decides_among_equal_matches_of_one_route() -> None:
    got = order(route("r", """
      - matches: [{path: {value: /p}}]
        backendRefs: [{name: app, port: 80}]
      - matches: [{path: {value: /p}}]
        backendRefs: [{name: v2, port: 80}]
    """))
    assert got == ["shop/r.rules[0].matches[0]", "shop/r.rules[1].matches[0]"]


def test_regular_expressions_come_after_prefixes_but_before_the_catch_all() -> None:
    got = order(route("r", """
      - matches: [{path: {value: /}}]
        backendRefs: [{name: app, port: 80}]
      - matches: [{path: {type: RegularExpression, value: "/items/[0-9]+"}}]
        backendRefs: [{name: app, port: 80}]
      - matches: [{path: {value: /i}}]
        backendRefs: [{name: app, port: 80}]
    """))
    assert got == ["shop/r.rules[2].matches[0]", "shop/r.rules[1].matches[0]", "shop/r.rules[0].matches[0]"]


def test_a_trailing_slash_does_not_change_a_prefix() -> None:
    rules = "[{matches: [{path: {value: /api/}}], backendRefs: [{name: app, port: 80}]}]"
    result = translate(*SERVICES, route("r", rules))
    path = table(result, "shop", "app", 80).http[0].matches[0].path
    assert path is not None and (path.kind.value, path.value) == ("PathPrefix", "/api")
