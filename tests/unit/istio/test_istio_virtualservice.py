"""VirtualService → route tables: order, matches, weights, subsets, hosts, conflicts."""

from __future__ import annotations

from _istio_support import codes, find, http, istio, pod, service, table, tcp, translate
from meshcore.compile import CompileOptions, compile_plan
from meshcore.model import ClientMatch, MatchKind, RouteKind, ServiceRef, Severity

REVIEWS = [
    service("reviews", selector="{app: reviews}"),
    pod("reviews-v1", "{app: reviews, version: v1}", "10.1.0.1"),
    pod("reviews-v2", "{app: reviews, version: v2}", "10.1.0.2"),
    istio("DestinationRule", "reviews", """
        host: reviews
        subsets:
        - {name: v1, labels: {version: v1}}
        - {name: v2, labels: {version: v2}}
    """),
]


def test_rules_keep_their_order_and_each_match_becomes_a_route() -> None:
    result = translate(*REVIEWS, istio("VirtualService", "reviews", """
        hosts: [reviews]
        http:
        - match:
          - headers: {end-user: {exact: jason}}
          - uri: {prefix: /v2}
          route: [{destination: {host: reviews, subset: v2}}]
        - route: [{destination: {host: reviews, subset: v1}}]
    """))
    routes = http(result, "reviews")
    assert [r.destinations[0].subset for r in routes] == ["v2", "v2", "v1"]
    assert routes[0].matches[0].headers[0].name == "end-user"
    assert routes[1].matches[0].path is not None and routes[1].matches[0].path.kind is MatchKind.PREFIX
    assert routes[2].matches == ()
    assert dict(routes[0].destinations[0].subset_labels) == {"version": "v2"}
    assert not [d for d in result.diagnostics if d.severity is Severity.ERROR]


def test_conditions_of_one_match_are_anded_into_one_model_match() -> None:
    result = translate(*REVIEWS, istio("VirtualService", "reviews", """
        hosts: [reviews]
        http:
        - match:
          - uri: {exact: /a}
            method: {exact: POST}
            authority: {prefix: api.}
            queryParams: {v: {regex: "[0-9]+"}}
          route: [{destination: {host: reviews}}]
    """))
    [route] = http(result, "reviews")
    [m] = route.matches
    assert m.method == "POST" and m.authority is not None and m.query[0].name == "v"


def test_weights_split_between_subsets() -> None:
    result = translate(*REVIEWS, istio("VirtualService", "reviews", """
        hosts: [reviews]
        http:
        - route:
          - {destination: {host: reviews, subset: v1}, weight: 75}
          - {destination: {host: reviews, subset: v2}, weight: 25}
    """))
    [route] = http(result, "reviews")
    assert [(d.subset, d.weight) for d in route.destinations] == [("v1", 75), ("v2", 25)]


def test_weights_must_add_up_to_100() -> None:
    result = translate(*REVIEWS, istio("VirtualService", "reviews", """
        hosts: [reviews]
        http:
        - route:
          - {destination: {host: reviews, subset: v1}, weight: 75}
          - {destination: {host: reviews, subset: v2}, weight: 20}
    """))
    d = find(result, "MC7010")
    assert d.field == "spec.http[0].route" and "95" in d.message
    assert not result.snapshot.routes


def test_missing_subset_share_is_answered_with_503() -> None:
    result = translate(*REVIEWS, istio("VirtualService", "reviews", """
        hosts: [reviews]
        http:
        - route:
          - {destination: {host: reviews, subset: v1}, weight: 70}
          - {destination: {host: reviews, subset: v9}, weight: 30}
    """))
    [route] = http(result, "reviews")
    assert route.invalid_backends is not None and route.invalid_backends.weight == 30
    assert route.invalid_backends.status == 503
    assert find(result, "MC7005").field == "spec.http[0].route[1].destination.subset"


def test_unknown_destination_host_alone_answers_503() -> None:
    result = translate(*REVIEWS, istio("VirtualService", "reviews", """
        hosts: [reviews]
        http:
        - route: [{destination: {host: nowhere}}]
    """))
    [route] = http(result, "reviews")
    assert route.direct_response is not None and route.direct_response.status == 503
    assert "nowhere.default.svc.cluster.local" in find(result, "MC7004").message


def test_unknown_mirror_host_is_reported_as_sending_no_copies() -> None:
    result = translate(*REVIEWS, istio("VirtualService", "reviews", """
        hosts: [reviews]
        http:
        - route: [{destination: {host: reviews}}]
          mirror: {host: shadow}
    """))
    [route] = http(result, "reviews")
    assert route.mirrors == () and route.direct_response is None
    warning = find(result, "MC7004")
    assert warning.field == "spec.http[0].mirror.host"
    assert warning.message.endswith("no copies are sent there") and "503" not in warning.message


def test_short_names_resolve_in_the_objects_namespace() -> None:
    result = translate(service("app", namespace="shop"), service("app", namespace="other", vip="10.96.0.2"),
                       istio("VirtualService", "app", """
        hosts: [app]
        http:
        - route: [{destination: {host: app}}]
    """, namespace="shop"))
    assert [t.service for t in result.snapshot.routes] == [ServiceRef("shop", "app")]
    assert http(result, "app", namespace="shop")[0].destinations[0].service == ServiceRef("shop", "app")


def test_match_port_limits_a_rule_to_one_port() -> None:
    result = translate(service("app", ports="[{name: http, port: 80}, {name: http-admin, port: 8080}]"),
                       istio("VirtualService", "app", """
        hosts: [app]
        http:
        - match: [{port: 8080, uri: {prefix: /admin}}]
          directResponse: {status: 404}
        - route: [{destination: {host: app}}]
    """))
    [plain] = http(result, "app", 80)  # the 8080 rule is not on port 80
    assert plain.direct_response is None and plain.destinations[0].port == 80
    admin = http(result, "app", 8080)
    assert admin[0].direct_response is not None and admin[1].destinations[0].port == 8080


def test_gateway_only_virtual_service_does_not_touch_the_mesh() -> None:
    result = translate(service("app"), istio("Gateway", "gw", "servers: []"), istio("VirtualService", "app", """
        hosts: [app]
        gateways: [gw]
        http:
        - route: [{destination: {host: app}}]
    """))
    assert not result.snapshot.routes
    assert "MC7006" not in codes(result)


def test_missing_gateway_is_reported() -> None:
    result = translate(service("app"), istio("VirtualService", "app", """
        hosts: [app]
        gateways: [mesh, istio-system/public]
        http:
        - route: [{destination: {host: app}}]
    """))
    assert find(result, "MC7006").field == "spec.gateways[1]"
    # The mesh, also listed, still routes.
    assert [d.service for d in http(result, "app")[0].destinations] == [ServiceRef("default", "app")]


def test_oldest_virtual_service_wins_for_a_host() -> None:
    old = istio("VirtualService", "old", """
        hosts: [app]
        http:
        - directResponse: {status: 201}
    """, extra_meta='creationTimestamp: "2024-01-01T00:00:00Z"')
    new = istio("VirtualService", "new", """
        hosts: [app.default.svc.cluster.local]
        http:
        - directResponse: {status: 202}
    """, extra_meta='creationTimestamp: "2024-02-01T00:00:00Z"')
    result = translate(service("app"), new, old)
    [route] = http(result, "app")
    assert route.direct_response is not None and route.direct_response.status == 201
    assert find(result, "MC7012").source.name == "new"


def test_each_namespace_uses_the_virtual_service_closest_to_it() -> None:
    # An older VirtualService for every namespace, and one of namespace "team" for its own
    # clients: Istio gives team's clients their own, everyone else the older one.
    everyone = istio("VirtualService", "everyone", """
        hosts: [app]
        http:
        - directResponse: {status: 201}
    """, extra_meta='creationTimestamp: "2024-01-01T00:00:00Z"')
    team = istio("VirtualService", "team-view", """
        hosts: [app.default.svc.cluster.local]
        exportTo: ["."]
        http:
        - match: [{uri: {prefix: /a}}, {sourceLabels: {canary: "yes"}}]
          directResponse: {status: 202}
    """, namespace="team", extra_meta='creationTimestamp: "2024-02-01T00:00:00Z"')
    result = translate(service("app"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n",
                       "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n", team, everyone)
    first, own_a, own_canary, rest = http(result, "app")
    assert first.direct_response is not None and first.direct_response.status == 201
    assert first.matches[0].clients == ClientMatch(namespaces=("default", "other"))
    assert [r.direct_response.status for r in (own_a, own_canary) if r.direct_response] == [202, 202]
    assert own_a.matches[0].clients == ClientMatch(namespaces=("team",)) and own_a.matches[0].path is not None
    assert own_canary.matches[0].clients == ClientMatch(namespaces=("team",), labels={"canary": "yes"})
    # Clients outside every namespace listed (and outside the mesh) reach the service unrouted.
    assert rest.matches[0].clients == ClientMatch(namespaces=("default", "other", "team"), invert=True)
    assert "MC7012" not in codes(result)


def test_public_virtual_services_are_not_preferred_by_namespace() -> None:
    # Both exported everywhere (the default): the oldest applies to every client, even to
    # the clients of the newer one's namespace; exported by name beats exported to all.
    old = istio("VirtualService", "old", """
        hosts: [app.default.svc.cluster.local]
        http: [{directResponse: {status: 201}}]
    """, namespace="team", extra_meta='creationTimestamp: "2024-01-01T00:00:00Z"')
    new = istio("VirtualService", "new", """
        hosts: [app]
        http: [{directResponse: {status: 202}}]
    """, extra_meta='creationTimestamp: "2024-02-01T00:00:00Z"')
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"
    result = translate(service("app"), ns, new, old)
    [route] = http(result, "app")
    assert route.direct_response is not None and route.direct_response.status == 201 and not route.matches
    assert find(result, "MC7012").source.name == "new"
    named = istio("VirtualService", "for-team", """
        hosts: [app]
        exportTo: [team]
        http: [{directResponse: {status: 203}}]
    """, extra_meta='creationTimestamp: "2024-03-01T00:00:00Z"')
    result = translate(service("app"), ns, new, old, named)
    statuses = {r.direct_response.status: r.matches[0].clients for r in http(result, "app") if r.direct_response}
    assert statuses[203] == ClientMatch(namespaces=("team",))
    assert statuses[201] == ClientMatch(namespaces=("default",))


def test_catch_all_rule_shadows_later_rules() -> None:
    result = translate(service("app"), istio("VirtualService", "app", """
        hosts: [app]
        http:
        - route: [{destination: {host: app}}]
        - match: [{uri: {exact: /x}}]
          route: [{destination: {host: app}}]
    """))
    assert find(result, "MC7008").field == "spec.http[1].match[0]"


def test_source_labels_and_namespace_become_the_match_clients() -> None:
    result = translate(service("app"), istio("VirtualService", "app", """
        hosts: [app]
        http:
        - match: [{sourceLabels: {app: web}, sourceNamespace: front}]
          fault: {abort: {httpStatus: 500}}
          route: [{destination: {host: app}}]
        - route: [{destination: {host: app}}]
    """))
    first, rest = http(result, "app")
    assert first.fault is not None and rest.fault is None
    assert first.matches[0].clients == ClientMatch(namespaces=("front",), labels={"app": "web"})
    assert not rest.matches
    assert "MC7015" not in codes(result)


def test_client_matches_are_left_out_on_a_gateway() -> None:
    gateway = istio("Gateway", "gw", """
        selector: {istio: ingress}
        servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
    """)
    result = translate(service("app"), gateway, istio("VirtualService", "app", """
        hosts: [app]
        gateways: [gw, mesh]
        http:
        - match: [{sourceLabels: {app: web}}]
          route: [{destination: {host: app}}]
    """))
    [route] = http(result, "app")
    assert route.matches[0].clients == ClientMatch(labels={"app": "web"})
    assert find(result, "MC7015").field == "spec.http[0].match[0].sourceLabels"


def test_export_to_limits_http_routes_to_the_exported_namespaces() -> None:
    result = translate(service("app"), istio("VirtualService", "app", """
        hosts: [app]
        exportTo: [".", other]
        http:
        - match: [{uri: {prefix: /v2}}, {sourceNamespace: other}]
          route: [{destination: {host: app}}]
          timeout: 1s
        - match: [{sourceNamespace: elsewhere}]
          route: [{destination: {host: app}}]
          timeout: 2s
    """))
    *routes, fallback = http(result, "app")
    assert [m.clients for r in routes for m in r.matches] == [
        ClientMatch(namespaces=("default", "other")), ClientMatch(namespaces=("other",))]
    assert all(r.timeout_ms == 1000 for r in routes)  # the rule for "elsewhere" can never apply
    # Clients of every other namespace (and outside the mesh) see the service as if unrouted.
    assert fallback.matches[0].clients == ClientMatch(namespaces=("default", "other"), invert=True)
    assert [(d.service, d.port) for d in fallback.destinations] == [(ServiceRef("default", "app"), 80)]
    assert not fallback.timeout_ms


def test_actions_are_carried() -> None:
    result = translate(service("app"), service("shadow", vip="10.96.0.9"), istio("VirtualService", "app", """
        hosts: [app]
        http:
        - match: [{uri: {prefix: /api}}]
          rewrite: {uri: /v2, authority: backend}
          timeout: 1.5s
          retries: {attempts: 2, perTryTimeout: 500ms}
          fault:
            delay: {fixedDelay: 2s, percentage: {value: 12.5}}
            abort: {grpcStatus: UNAVAILABLE, percentage: {value: 1}}
          mirror: {host: shadow}
          mirrorPercentage: {value: 10}
          headers:
            request: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [x-c]}
            response: {remove: [server]}
          route: [{destination: {host: app}}]
    """))
    [r] = http(result, "app")
    assert r.rewrite is not None and r.rewrite.prefix == "/v2" and r.rewrite.host == "backend"
    assert r.timeout_ms == 1500
    assert r.retries is not None and r.retries.attempts == 2 and r.retries.per_try_timeout_ms == 500
    assert r.retries.status_codes == (503,)
    assert r.fault is not None and r.fault.delay_ms == 2000 and r.fault.delay_percent == 12.5
    assert r.fault.abort_grpc_status == 14
    assert r.mirrors[0].percent == 10 and r.mirrors[0].destination.service.name == "shadow"
    assert r.request_headers.set == (("x-a", "1"),) and r.response_headers.remove == ("server",)


def test_redirect_with_route_is_rejected() -> None:
    result = translate(service("app"), istio("VirtualService", "app", """
        hosts: [app]
        http:
        - redirect: {uri: /x}
          route: [{destination: {host: app}}]
    """))
    assert find(result, "MC7010").field == "spec.http[0]"
    assert not result.snapshot.routes


def test_invalid_regex_is_rejected_with_its_path() -> None:
    result = translate(service("app"), istio("VirtualService", "app", """
        hosts: [app]
        http:
        - match: [{headers: {x-id: {regex: "[a-"}}}]
          route: [{destination: {host: app}}]
    """))
    assert find(result, "MC7009").field == "spec.http[0].match[0].headers.x-id.regex"


def test_tls_routes_come_before_tcp_routes_on_l4_ports() -> None:
    result = translate(service("db", ports="[{name: tcp, port: 5432}]"), service("a", vip="10.96.0.5",
                       ports="[{name: tcp, port: 5432}]"), istio("VirtualService", "db", """
        hosts: [db]
        tcp:
        - route: [{destination: {host: a}}]
        tls:
        - match: [{sniHosts: [db.example.com]}]
          route: [{destination: {host: db}}]
    """))
    t = table(result, "db", 5432)
    assert t.kind is RouteKind.L4
    routes = tcp(result, "db", 5432)
    assert routes[0].sni == ("db.example.com",) and routes[1].sni == ()
    assert routes[1].destinations[0].service.name == "a"


def test_tcp_matches_on_the_client_and_export_to_limit_tcp_routes() -> None:
    result = translate(service("db", ports="[{name: tcp, port: 5432}]"), service("a", vip="10.96.0.5",
                       ports="[{name: tcp, port: 5432}]"), istio("VirtualService", "db", """
        hosts: [db]
        exportTo: [".", ops]
        tcp:
        - match: [{sourceNamespace: ops, sourceLabels: {role: admin}}]
          route: [{destination: {host: a}}]
        - route: [{destination: {host: db}}]
    """))
    admin, rest, fallback = tcp(result, "db", 5432)
    assert admin.clients == ClientMatch(namespaces=("ops",), labels={"role": "admin"})
    assert admin.destinations[0].service.name == "a"
    assert rest.clients == ClientMatch(namespaces=("default", "ops")) and rest.destinations[0].service.name == "db"
    # What no route takes (clients of other namespaces, outside the mesh) goes to the
    # service itself, as Istio's default filter chain sends it.
    assert fallback.clients is None and [d.service.name for d in fallback.destinations] == ["db"]
    assert "MC7015" not in codes(result) and "MC7013" not in codes(result)


def test_sni_routes_limited_to_some_clients_leave_that_name_to_the_others() -> None:
    # An ops-only VirtualService for SNI x.example and a public one for the rest: clients
    # of other namespaces sending x.example must reach the public route's backend, which
    # compile gives a chain of that name (Envoy never falls back from a matching name).
    ops = istio("VirtualService", "db-ops", """
        hosts: [db.default.svc.cluster.local]
        exportTo: ["."]
        tls:
        - match: [{sniHosts: [x.example]}]
          route: [{destination: {host: a.default.svc.cluster.local}}]
    """, namespace="ops")
    public = istio("VirtualService", "db", """
        hosts: [db]
        tcp: [{route: [{destination: {host: db}}]}]
    """)
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: ops}\n"
    result = translate(service("db", ports="[{name: tls, port: 443}]"), service("a", vip="10.96.0.5",
                       ports="[{name: tls, port: 443}]"), ns, ops, public,
                       pod("op", "{app: op}", "10.1.0.5", namespace="ops"), pod("dev", "{app: dev}", "10.1.0.6"))
    routes = {(r.sni, r.clients, r.destinations[0].service.name) for r in tcp(result, "db", 443)}
    assert routes == {(("x.example",), ClientMatch(namespaces=("ops",)), "a"),
                      ((), ClientMatch(namespaces=("default",)), "db"), ((), None, "db")}
    plan = compile_plan(result.snapshot, "", CompileOptions(proxy_enabled=True, proxy_port_base=15001,
                                                            proxy_port_range=8))
    listener = plan.envoy.listener("default/db:443")
    assert listener is not None
    named = [c for c in listener.tcp if c.sni == ("x.example",)]
    # One chain of that name for ops' clients (to a), the others for everyone else (to db).
    assert {(c.clusters[0].cluster, c.sources is not None and "10.1.0.5/32" in c.sources) for c in named} == {
        ("default/a:443", True), ("default/db:443", False)}


def test_service_entry_not_exported_is_not_a_destination() -> None:
    entry = istio("ServiceEntry", "ext", """
        hosts: [ext.example.com]
        exportTo: ["."]
        resolution: STATIC
        ports: [{number: 80, name: http}]
        endpoints: [{address: 192.0.2.1}]
    """, namespace="private")
    result = translate(service("app"), entry, istio("VirtualService", "app", """
        hosts: [app]
        http:
        - route: [{destination: {host: ext.example.com}}]
    """))
    assert "not exported" in find(result, "MC7004").message


def test_http_rules_on_a_service_without_http_port_are_reported() -> None:
    result = translate(service("db", ports="[{name: postgres, port: 5432}]"), istio("VirtualService", "db", """
        hosts: [db]
        http:
        - route: [{destination: {host: db}}]
    """))
    assert not result.snapshot.routes
    assert find(result, "MC7018").field == "spec.http"


def test_header_values_with_envoy_variables_are_literal_and_reported() -> None:
    result = translate(service("app"), istio("VirtualService", "app", """
        hosts: [app]
        http:
        - headers:
            request:
              set: {x-client: "%DOWNSTREAM_REMOTE_ADDRESS%", x-share: "50%"}
          route: [{destination: {host: app}}]
    """))
    [route] = http(result, "app")
    assert dict(route.request_headers.set) == {"x-client": "%DOWNSTREAM_REMOTE_ADDRESS%", "x-share": "50%"}
    [warning] = [d for d in result.diagnostics if d.code == "MC7015"]
    assert warning.field == "spec.http[0].headers.request.set.x-client" and "not expanded" in warning.message


def test_a_delegating_rule_takes_the_delegates_rules_merged_with_its_match() -> None:
    root = istio("VirtualService", "root", """
        hosts: [app]
        http:
        - match: [{uri: {prefix: /reviews}}]
          delegate: {name: reviews-routes, namespace: team}
          timeout: 3s
        - route: [{destination: {host: app}}]
    """)
    delegate = istio("VirtualService", "reviews-routes", """
        http:
        - match: [{uri: {prefix: /reviews/v2}, headers: {end-user: {exact: jason}}}]
          directResponse: {status: 202}
        - match: [{uri: {prefix: /reviews/v3}}, {uri: {prefix: /other}}]
          directResponse: {status: 203}
        - route: [{destination: {host: app.default.svc.cluster.local}}]
          timeout: 1s
    """, namespace="team")
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"
    result = translate(service("app"), ns, root, delegate)
    v2, rest, fallback = http(result, "app")
    # Within /reviews: the delegate's /reviews/v2. The rule with /other (outside /reviews)
    # is left out whole, as Istio does, and said so.
    assert [m.path.value for m in v2.matches if m.path] == ["/reviews/v2"] and v2.matches[0].headers
    assert find(result, "MC7016").field == "spec.http[1]"
    assert v2.direct_response is not None and v2.direct_response.status == 202
    assert v2.timeout_ms == 3000                                  # inherited from the root rule
    assert [m.path.value for m in rest.matches if m.path] == ["/reviews"] and rest.timeout_ms == 1000
    assert not fallback.matches and "MC7014" not in codes(result)


def test_a_missing_delegate_is_reported_and_its_rule_never_applies() -> None:
    result = translate(service("app"), istio("VirtualService", "root", """
        hosts: [app]
        http:
        - match: [{uri: {prefix: /x}}]
          delegate: {name: nowhere}
        - route: [{destination: {host: app}}]
    """))
    [only] = http(result, "app")
    assert not only.matches
    assert find(result, "MC7017").field == "spec.http[0].delegate"


def test_delegate_matches_must_lie_within_the_roots() -> None:
    root = istio("VirtualService", "root", """
        hosts: [app]
        http:
        - match: [{authority: {prefix: web}, headers: {x-team: {prefix: team-}}, uri: {prefix: /r}}]
          delegate: {name: d}
    """)
    delegate = istio("VirtualService", "d", """
        http:
        - match: [{authority: {exact: web.shop}, headers: {x-team: {exact: team-a}}, withoutHeaders: {x-team: {exact: team-b}}}]
          directResponse: {status: 201}
        - match: [{uri: {regex: "/r/[0-9]+"}}]
          directResponse: {status: 202}
    """)
    [inside] = http(translate(service("app"), root, delegate), "app")
    m = inside.matches[0]
    # Narrower values under the root's prefixes are kept; both header conditions survive.
    assert m.authority is not None and m.authority.value == "web.shop" and m.path is not None
    assert {(h.name, h.invert, h.match.value) for h in m.headers} == {("x-team", False, "team-a"),
                                                                     ("x-team", True, "team-b")}


def test_per_destination_headers_apply_to_their_destination_only() -> None:
    result = translate(*REVIEWS, istio("VirtualService", "reviews", """
        hosts: [reviews]
        http:
        - headers: {request: {set: {x-rule: r}}}
          route:
          - destination: {host: reviews, subset: v1}
            weight: 70
            headers: {request: {set: {x-version: v1}}, response: {remove: [x-debug]}}
          - destination: {host: reviews, subset: v2}
            weight: 30
    """))
    [route] = http(result, "reviews")
    v1, v2 = route.destinations
    assert (v1.subset, v2.subset) == ("v1", "v2")
    assert v1.request_headers is not None and v1.request_headers.set == (("x-version", "v1"),)
    assert v1.response_headers is not None and v1.response_headers.remove == ("x-debug",)
    assert v2.request_headers is None and v2.response_headers is None
    assert route.request_headers.set == (("x-rule", "r"),)
    assert "MC7015" not in codes(result)
