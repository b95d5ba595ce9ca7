"""CiliumEnvoyConfig translation: parse errors with field paths, names, references, status."""

from __future__ import annotations

import json
import textwrap

import pytest

import meshcore
from meshcore.model import Diagnostic, EnvoyConfig, Severity
from meshcore_envoycrd import ENVOYCRD_CODES, adapter

L = "type.googleapis.com/envoy.config.listener.v3.Listener"
R = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
C = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
E = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}]
"""


def config(resources: list[dict[str, object]], *, name: str = "cfg", namespace: str = "default",
           clusterwide: bool = False, **spec: object) -> str:
    """A config document (JSON is YAML) with ``resources`` and other spec fields."""
    meta: dict[str, str] = {"name": name} if clusterwide else {"name": name, "namespace": namespace}
    kind = "CiliumClusterwideEnvoyConfig" if clusterwide else "CiliumEnvoyConfig"
    return json.dumps({"apiVersion": "cilium.io/v2", "kind": kind, "metadata": meta,
                       "spec": {"resources": resources, **spec}})


def translate(*docs: str) -> meshcore.Translation:
    text = "\n---\n".join(textwrap.dedent(d).strip() for d in (SERVICE, *docs))
    return meshcore.translate(text=text, adapters=[adapter])


def http_listener(name: str = "l", route: str = "routes") -> dict[str, object]:
    return {"@type": L, "name": name, "filter_chains": [{"filters": [{
        "name": "hcm", "typed_config": {"@type": HCM, "stat_prefix": "s", "rds": {"route_config_name": route},
                                        "http_filters": [{"name": "router", "typed_config": {"@type": ROUTER}}]}}]}]}


def routes(name: str = "routes", cluster: str = "default/echo:80") -> dict[str, object]:
    return {"@type": R, "name": name, "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]}


def only_config(result: meshcore.Translation) -> EnvoyConfig:
    assert len(result.snapshot.envoy_configs) == 1, result.diagnostics
    return result.snapshot.envoy_configs[0]


def bodies(cfg: EnvoyConfig) -> dict[str, dict[str, object]]:
    return {r.name: r.body for r in cfg.resources}


def ours(result: meshcore.Translation, severity: Severity | None = None) -> list[Diagnostic]:
    return [d for d in result.diagnostics if d.code.startswith("MC8") or d.code.startswith("MC01")
            if severity is None or d.severity is severity]


def test_names_and_references_are_qualified_and_config_sources_point_at_ads() -> None:
    result = translate(config([http_listener(), routes(cluster="local"),
                               {"@type": C, "name": "local", "type": "EDS", "connect_timeout": "1s"},
                               {"@type": E, "cluster_name": "local"}]))
    cfg = only_config(result)
    found = bodies(cfg)
    assert set(found) == {"default/cfg/l", "default/cfg/routes", "default/cfg/local"}
    listener = found["default/cfg/l"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]  # type: ignore[index]
    assert hcm["rds"] == {"route_config_name": "default/cfg/routes",
                          "config_source": {"ads": {}, "resource_api_version": "V3"}}
    route = found["default/cfg/routes"]["virtual_hosts"][0]["routes"][0]["route"]  # type: ignore[index]
    assert route == {"cluster": "default/cfg/local"}
    cluster = next(r.body for r in cfg.resources if r.type_url == C)
    assert cluster["eds_cluster_config"] == {"eds_config": {"ads": {}, "resource_api_version": "V3"}}
    assert next(r.name for r in cfg.resources if r.type_url == E) == "default/cfg/local"


def test_mesh_cluster_references_are_left_as_they_are_and_need_the_service() -> None:
    result = translate(config([http_listener(), routes(cluster="default/echo:80")]))
    cfg = only_config(result)
    route = bodies(cfg)["default/cfg/routes"]["virtual_hosts"][0]["routes"][0]["route"]  # type: ignore[index]
    assert route == {"cluster": "default/echo:80"}
    assert [str(b.service) for b in cfg.backend_services] == ["default/echo"]
    missing = translate(config([http_listener(), routes(cluster="default/echo:81")]))
    [warn] = ours(missing, Severity.WARNING)
    assert warn.code == "MC8008" and "no TCP port 81" in warn.message
    assert warn.field.endswith("virtual_hosts[0].routes[0].route.cluster")


def test_a_slash_reference_that_is_not_a_service_port_is_an_error() -> None:
    result = translate(config([http_listener(), routes(cluster="other/cfg/c")]))
    assert not result.snapshot.envoy_configs
    [err] = ours(result, Severity.ERROR)
    assert err.code == "MC8007"


def test_parse_errors_name_the_resource_and_the_field_path() -> None:
    bad = {"@type": L, "name": "l", "address": {"socket_adress": {"address": "127.0.0.1"}}}
    result = translate(config([routes(), bad]))
    [err] = ours(result, Severity.ERROR)
    assert err.code == "MC8002"
    assert err.field == "spec.resources[1].address.socket_adress"
    assert "resource 1 (Listener l)" in err.message and "socket_address" in err.message
    assert err.source.kind == "CiliumEnvoyConfig" and err.source.name == "cfg"


def test_nested_typed_config_errors_have_paths_too() -> None:
    listener = http_listener()
    listener["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"] = 7  # type: ignore[index]
    result = translate(config([listener, routes()]))
    [err] = ours(result, Severity.ERROR)
    assert err.field == "spec.resources[0].filter_chains[0].filters[0].typed_config.stat_prefix"


@pytest.mark.parametrize(("field", "value", "path", "message"), [
    ("connect_timeout", "five seconds", "connect_timeout",
     'expected a duration such as "5s" or "0.250s" (seconds, with an "s"), got string \'five seconds\''),
    ("connect_timeout", 5, "connect_timeout",
     'expected a duration such as "5s" or "0.250s" (seconds, with an "s"), got integer 5'),
    ("connect_timeout", "1e99s", "connect_timeout",
     "'1e99s' is out of range: a duration is at most 315576000000s (10000 years)"),
    ("type", "STRCT_DNS", "type",
     "'STRCT_DNS' is not one of STATIC, STRICT_DNS, LOGICAL_DNS, EDS, ORIGINAL_DST (did you mean STRICT_DNS?)"),
    ("per_connection_buffer_limit_bytes", "lots", "per_connection_buffer_limit_bytes",
     "expected an integer in 0..4294967295 (UInt32Value: the value itself, not a mapping), got string 'lots'"),
    ("per_connection_buffer_limit_bytes", -1, "per_connection_buffer_limit_bytes",
     "-1 is out of range: expected an integer in 0..4294967295"),
    ("respect_dns_ttl", "yes", "respect_dns_ttl", "expected true or false (without quotes), got string 'yes'"),
    ("dns_resolvers", [{"socket_address": {"address": "192.0.2.1", "port_value": 53}}, "x"], "dns_resolvers[1]",
     "expected a mapping (envoy.config.core.v3.Address), got string 'x'"),
    ("metadata", {"filter_metadata": {"x": 5}}, "metadata.filter_metadata.x", "expected a mapping, got integer 5"),
])
def test_bad_values_of_common_types_say_what_was_expected(field: str, value: object, path: str,
                                                          message: str) -> None:
    result = translate(config([{"@type": C, "name": "c", field: value}]))
    [err] = ours(result, Severity.ERROR)
    assert (err.code, err.field) == ("MC8002", f"spec.resources[0].{path}")
    assert err.message == f"resource 0 (Cluster c): {message}"


def test_an_any_with_an_unknown_type_names_it() -> None:
    listener = http_listener()
    listener["filter_chains"][0]["filters"][0]["typed_config"]["@type"] = "type.googleapis.com/x.Nope"  # type: ignore[index]
    result = translate(config([listener, routes()]))
    [err] = ours(result, Severity.ERROR)
    assert err.field == "spec.resources[0].filter_chains[0].filters[0].typed_config.@type"
    assert "unknown @type type.googleapis.com/x.Nope" in err.message


def test_unknown_and_misplaced_types_are_reported() -> None:
    result = translate(config([{"@type": "type.googleapis.com/envoy.config.core.v3.Address"},
                               {"name": "x"},
                               {"@type": TCP.replace("tcp_proxy.v3.TcpProxy", "nope.v3.Nope"), "name": "y"}]))
    errors = ours(result, Severity.ERROR)
    assert [e.code for e in errors] == ["MC8003"] * 3
    assert errors[0].field == "spec.resources[0].@type" and "not a resource" in errors[0].message
    assert "no @type" in errors[1].message
    assert "no message" in errors[2].message


def test_extensions_are_loaded_on_demand() -> None:
    lua = {"name": "lua", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                                           "default_source_code": {"inline_string": "function x() end"}}}
    listener = http_listener()
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]  # type: ignore[index]
    hcm["http_filters"].insert(0, lua)
    result = translate(config([listener, routes()]))
    assert only_config(result)


def test_api_constraints_are_checked() -> None:
    listener = http_listener()
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]  # type: ignore[index]
    hcm["stat_prefix"] = ""
    hcm["http_filters"].append({"name": "late", "typed_config": {"@type": ROUTER}})
    result = translate(config([listener, routes(), {"@type": C, "name": "c", "connect_timeout": "0s"}]))
    errors = {(e.code, e.field) for e in ours(result, Severity.ERROR)}
    assert ("MC8004", "spec.resources[0].filter_chains[0].filters[0].typed_config.stat_prefix") in errors
    assert ("MC8004", "spec.resources[0].filter_chains[0].filters[0].typed_config.http_filters[0]") in errors
    assert ("MC8004", "spec.resources[2].connect_timeout") in errors


def test_one_bad_resource_rejects_the_config_but_not_the_others() -> None:
    bad = {"@type": R, "name": "r2", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "default/echo:80", "timeout": 5}}]}]}
    result = translate(config([http_listener(), routes(), bad], name="bad"),
                       config([http_listener(), routes()], name="good"))
    assert [c.name for c in result.snapshot.envoy_configs] == ["good"]
    status = {s.name: s.status for s in result.statuses}
    assert status["good"]["conditions"][0]["status"] == "True"
    assert status["bad"]["conditions"][0]["status"] == "False"
    assert any("resources[2]" in e and "route.timeout" in e for e in status["bad"]["errors"])


def test_clusterwide_names_and_default_namespace() -> None:
    result = translate(config([http_listener(), routes()], clusterwide=True, name="cw",
                              services=[{"name": "echo"}]))
    cfg = only_config(result)
    assert cfg.namespace is None
    assert {r.name for r in cfg.resources} == {"/cw/l", "/cw/routes"}
    [redirect] = cfg.services
    assert str(redirect.service) == "default/echo" and redirect.listener == "/cw/l" and redirect.ports == ()


def test_namespaced_config_cannot_redirect_another_namespace() -> None:
    result = translate(config([http_listener(), routes()], namespace="team", services=[
        {"name": "echo", "namespace": "default"}]))
    assert not result.snapshot.envoy_configs
    assert [e.code for e in ours(result, Severity.ERROR)] == ["MC8010"]


def test_services_default_to_the_first_listener_and_check_ports() -> None:
    result = translate(config([http_listener("first"), http_listener("second"), routes()],
                              services=[{"name": "echo", "ports": [80]}, ]))
    cfg = only_config(result)
    assert cfg.services[0].listener == "default/cfg/first" and cfg.services[0].ports == (80,)
    named = translate(config([http_listener(), routes()], services=[{"name": "echo", "listener": "nope"}]))
    assert [e.code for e in ours(named, Severity.ERROR)] == ["MC8010"]


def test_node_selector_labels_are_kept_and_expressions_rejected() -> None:
    result = translate(config([http_listener(), routes()], nodeSelector={"matchLabels": {"role": "edge"}}))
    assert dict(only_config(result).node_selector) == {"role": "edge"}
    rejected = translate(config([http_listener(), routes()], nodeSelector={
        "matchExpressions": [{"key": "role", "operator": "Exists"}]}))
    assert [e.code for e in ours(rejected, Severity.ERROR)] == ["MC8012"]


def test_addressless_listeners_are_left_for_the_proxy_to_bind() -> None:
    result = translate(config([http_listener(), routes()]))
    assert "address" not in bodies(only_config(result))["default/cfg/l"]
    assert [d.code for d in ours(result, Severity.INFO)] == ["MC8011"]


def test_own_names_with_a_slash_and_duplicates_are_errors() -> None:
    result = translate(config([http_listener("a/b"), routes(), routes()]))
    assert sorted(e.code for e in ours(result, Severity.ERROR)) == ["MC8005", "MC8006"]


def test_a_cluster_named_after_a_service_port_customises_it() -> None:
    result = translate(config([http_listener(), routes(),
                               {"@type": C, "name": "default/echo:80", "connect_timeout": "1s"}]))
    cluster = bodies(only_config(result))["default/cfg/default/echo:80"]
    assert cluster["type"] == "EDS"
    assert cluster["eds_cluster_config"]["service_name"] == "default/echo:80"  # type: ignore[index]
    route = bodies(only_config(result))["default/cfg/routes"]["virtual_hosts"][0]["routes"][0]  # type: ignore[index]
    assert route["route"] == {"cluster": "default/cfg/default/echo:80"}


def test_every_code_is_documented() -> None:
    assert all(code.startswith("MC8") for code in ENVOYCRD_CODES)


MULTI = """
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: default}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 8080}, {name: admin, port: 9000}]
"""

UDP_ONLY = """
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default}
spec:
  clusterIP: 10.96.0.12
  ports: [{name: dns, port: 53, protocol: UDP}]
"""


def eds_cluster(name: str, **fields: object) -> dict[str, object]:
    return {"@type": C, "name": name, "type": "EDS", "connect_timeout": "1s", **fields}


def test_cilium_service_cluster_names_are_accepted_where_service_ports_are() -> None:
    # Cilium's documentation names clusters <ns>/<svc>: as a reference, as a Cluster of the
    # config and as an EDS service name, next to the <ns>/<svc>:<port> form.
    result = translate(config([
        http_listener(), routes(cluster="default/echo"), routes("r2", cluster="default/echo:80"),
        eds_cluster("default/echo"), eds_cluster("mine", eds_cluster_config={"service_name": "default/echo"}),
    ]))
    assert not ours(result, Severity.WARNING) and not ours(result, Severity.ERROR)
    found = bodies(only_config(result))
    route = found["default/cfg/routes"]["virtual_hosts"][0]["routes"][0]["route"]  # type: ignore[index]
    assert route == {"cluster": "default/cfg/default/echo"}, "the config's own Cluster of that name is used"
    own = found["default/cfg/default/echo"]
    assert own["type"] == "EDS" and own["eds_cluster_config"]["service_name"] == "default/echo"  # type: ignore[index]
    mine = found["default/cfg/mine"]
    assert mine["eds_cluster_config"]["service_name"] == "default/echo"  # type: ignore[index]
    assert [(str(b.service), b.ports) for b in only_config(result).backend_services] == [("default/echo", ())]

    direct = translate(config([http_listener(), routes(cluster="default/echo")]))
    route = bodies(only_config(direct))["default/cfg/routes"]["virtual_hosts"][0]["routes"][0]["route"]  # type: ignore[index]
    assert route == {"cluster": "default/echo"}, "without a Cluster of the config, meshcore's is used"


def test_service_cluster_name_of_a_missing_service_is_a_warning() -> None:
    result = translate(config([http_listener(), routes(cluster="default/nope")]))
    assert only_config(result)
    [warn] = ours(result, Severity.WARNING)
    assert warn.code == "MC8008" and "service default/nope does not exist" in warn.message
    assert warn.field.endswith("virtual_hosts[0].routes[0].route.cluster")
    named = translate(config([http_listener(), routes(), eds_cluster("default/nope")]))
    [warn] = ours(named, Severity.WARNING)
    assert warn.code == "MC8008" and warn.field == "spec.resources[2].name"


def test_service_cluster_name_of_a_service_without_tcp_port_is_a_warning() -> None:
    result = translate(UDP_ONLY, config([
        http_listener(), routes(), eds_cluster("c", eds_cluster_config={"service_name": "default/dns"})]))
    assert only_config(result)
    [warn] = ours(result, Severity.WARNING)
    assert warn.code == "MC8008" and "service default/dns has no TCP port;" in warn.message
    assert warn.field == "spec.resources[2].eds_cluster_config.service_name"
    port = translate(UDP_ONLY, config([http_listener(), routes(cluster="default/dns:53")]))
    [warn] = ours(port, Severity.WARNING)
    assert "has no TCP port 53 (TCP ports: none)" in warn.message


def test_malformed_service_cluster_names_are_still_errors() -> None:
    for name in ("Default/echo", "default/echo:0", "default/echo:", "default/"):
        result = translate(config([http_listener(), routes(cluster=name)]))
        assert not result.snapshot.envoy_configs, name
        assert [e.code for e in ours(result, Severity.ERROR)] == ["MC8007"], name


def test_backend_services_number_filters_the_service_cluster() -> None:
    unfiltered = translate(MULTI, config([http_listener(), routes(cluster="default/multi")],
                                         backendServices=[{"name": "multi"}]))
    assert [b.ports for b in only_config(unfiltered).backend_services] == [()]
    filtered = translate(MULTI, config([http_listener(), routes(cluster="default/multi")], backendServices=[
        {"name": "multi", "number": ["9000"]}, {"name": "multi", "number": ["http"]}]))
    assert not ours(filtered, Severity.WARNING)
    [backend] = only_config(filtered).backend_services
    assert (str(backend.service), backend.ports) == ("default/multi", ("9000", "http"))


def test_backend_services_number_naming_no_port_is_a_warning() -> None:
    result = translate(MULTI, config([http_listener(), routes(cluster="default/multi")],
                                     backendServices=[{"name": "multi", "number": ["8081", "metrics"]}]))
    warnings = ours(result, Severity.WARNING)
    assert [(w.code, w.field) for w in warnings] == [("MC8008", "spec.backendServices[0].number[0]"),
                                                     ("MC8008", "spec.backendServices[0].number[1]")]
    assert "has no port 8081 (ports: http, admin)" in warnings[0].message
    bad = translate(MULTI, config([http_listener(), routes()], backendServices=[{"name": "multi", "number": ["0"]}]))
    assert [(e.code, e.field) for e in ours(bad, Severity.ERROR)] == [("MC0104", "spec.backendServices[0].number[0]")]


def test_backend_services_ports_is_not_cilium_field_and_is_ignored_with_a_warning() -> None:
    result = translate(MULTI, config([http_listener(), routes(cluster="default/multi")],
                                     backendServices=[{"name": "multi", "ports": ["8080"]}]))
    [warn] = ours(result, Severity.WARNING)
    assert warn.code == "MC8013" and warn.field == "spec.backendServices[0].ports"
    assert "'number'" in warn.message and "ignored" in warn.message
    assert [b.ports for b in only_config(result).backend_services] == [()]


def test_a_clusterwide_and_a_namespaced_config_may_share_a_name() -> None:
    result = translate(config([http_listener("a")], name="twin"),
                       config([http_listener("b")], name="twin", clusterwide=True))
    assert [(c.namespace, c.name) for c in result.snapshot.envoy_configs] == [(None, "twin"), ("default", "twin")]
