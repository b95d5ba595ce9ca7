"""Istio specs are parsed into the Istio API's protobuf messages, with exact field-path errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import descriptor_pool, json_format

from _istio_support import find, istio, translate
from meshcore.kube import FieldError
from meshcore_istio import KINDS, KIND_MESSAGES, message_type, parse_spec, type_url
from meshcore_istio._istiod_decode import int64_as_int

ROOT = Path(__file__).resolve().parents[3]
# Objects of the golden inputs that are wrong on purpose, with the error each must give.
EXPECTED_ERRORS = {
    ("analyze-errors.in.yaml", "typo"): "spec.http[0].timeuot",
    ("analyze-errors.in.yaml", "wrong-type"): "spec.subsets",
}


def _istio_documents() -> list[tuple[str, dict[str, Any]]]:
    files = [*sorted((ROOT / "tests" / "golden" / "istio").glob("*.in.yaml")),
             *sorted((ROOT / "examples").rglob("*.yaml")),
             *sorted((ROOT / "src" / "meshcore" / "examples").rglob("*.yaml"))]
    found = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).split("/")[0].endswith(".istio.io"):
                found.append((path.name, doc))
    return found


def _error(kind: str, spec: Any) -> FieldError:
    with pytest.raises(FieldError) as info:
        parse_spec(kind, spec)
    return info.value


def test_every_kind_has_its_message() -> None:
    assert {k.kind for k in KINDS} == set(KIND_MESSAGES)
    assert message_type("VirtualService").DESCRIPTOR.full_name == "istio.networking.v1alpha3.VirtualService"
    assert message_type("PeerAuthentication").DESCRIPTOR.full_name == "istio.security.v1beta1.PeerAuthentication"
    assert type_url("AuthorizationPolicy") == "type.googleapis.com/istio.security.v1beta1.AuthorizationPolicy"
    with pytest.raises(ValueError, match="not an Istio kind"):
        message_type("HTTPRoute")


def test_every_golden_and_example_object_parses() -> None:
    documents = _istio_documents()
    assert len(documents) > 20
    failed = {}
    for name, doc in documents:
        try:
            parse_spec(doc["kind"], doc.get("spec"))
        except FieldError as exc:
            failed[(name, doc["metadata"]["name"])] = exc.path
    assert failed == EXPECTED_ERRORS


VIRTUAL_SERVICE = """
hosts: [reviews]
gateways: [mesh]
http:
- name: canary
  match:
  - uri: {prefix: /api}
    headers: {x-user: {exact: jason}}
    ignoreUriCase: true
  route:
  - destination: {host: reviews, subset: v2, port: {number: 9080}}
    weight: 20
    headers: {request: {set: {x-canary: "1"}}}
  - destination: {host: reviews, subset: v1}
    weight: 80
  timeout: 1.5s
  retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,reset", retryRemoteLocalities: true}
  fault: {delay: {fixedDelay: 2s, percentage: {value: 12.5}}}
  mirror: {host: shadow}
  mirrorPercentage: {value: 5}
  corsPolicy: {allowOrigins: [{regex: ".*"}], maxAge: 24h, allowCredentials: false}
- redirect: {uri: /new, derivePort: FROM_REQUEST_PORT, redirectCode: 308}
tcp:
- match: [{port: 27017}]
  route: [{destination: {host: mongo}}]
exportTo: ["."]
"""

DESTINATION_RULE = """
host: reviews
trafficPolicy:
  loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}, ringHash: {minimumRingSize: 1024}}}
  connectionPool: {tcp: {maxConnections: 100, connectTimeout: 30ms}, http: {h2UpgradePolicy: UPGRADE}}
  outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 1m}
  tls: {mode: ISTIO_MUTUAL}
  portLevelSettings:
  - port: {number: 80}
    loadBalancer: {simple: LEAST_REQUEST}
subsets:
- name: v1
  labels: {version: v1}
- name: v2
  labels: {version: v2}
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
"""

AUTHORIZATION_POLICY = """
selector: {matchLabels: {app: reviews}}
action: DENY
rules:
- from:
  - source: {principals: ["cluster.local/ns/default/sa/web"], notNamespaces: [test]}
  to:
  - operation: {methods: [POST], paths: ["/admin/*"], ports: ["8080"]}
  when:
  - key: request.headers[x-token]
    notValues: [""]
"""

PEER_AUTHENTICATION = """
selector: {matchLabels: {app: reviews}}
mtls: {mode: STRICT}
portLevelMtls:
  8080: {mode: PERMISSIVE}
  "9090": {mode: DISABLE}
"""


@pytest.mark.parametrize(("kind", "text"), [
    ("VirtualService", VIRTUAL_SERVICE),
    ("DestinationRule", DESTINATION_RULE),
    ("AuthorizationPolicy", AUTHORIZATION_POLICY),
    ("PeerAuthentication", PEER_AUTHENTICATION),
])
def test_realistic_specs_round_trip_through_the_wire_format(kind: str, text: str) -> None:
    spec = yaml.safe_load(text)
    message = parse_spec(kind, spec)
    again = message_type(kind).FromString(message.SerializeToString())
    assert again == message
    # Back to the JSON form: the same fields the YAML set (durations in protobuf's form).
    data = json_format.MessageToDict(again)
    int64_as_int(again, data)  # as the istiod path does: 64-bit integers are ints, as in YAML
    assert set(data) == set(spec)
    assert parse_spec(kind, data) == message


def test_values_mean_what_istio_means() -> None:
    vs = parse_spec("VirtualService", yaml.safe_load(VIRTUAL_SERVICE))
    route = vs.http[0]  # type: ignore[attr-defined]
    assert route.timeout.seconds == 1 and route.timeout.nanos == 500_000_000
    assert route.retries.per_try_timeout.ToMilliseconds() == 500
    assert route.retries.retry_remote_localities.value is True
    assert route.cors_policy.max_age.seconds == 24 * 3600
    assert [d.weight for d in route.route] == [20, 80]
    assert route.match[0].headers["x-user"].exact == "jason"
    assert vs.http[1].redirect.WhichOneof("redirect_port") == "derive_port"  # type: ignore[attr-defined]
    pa = parse_spec("PeerAuthentication", yaml.safe_load(PEER_AUTHENTICATION))
    assert dict(pa.port_level_mtls) .keys() == {8080, 9090}  # type: ignore[attr-defined]
    dr = parse_spec("DestinationRule", yaml.safe_load(DESTINATION_RULE))
    assert dr.traffic_policy.outlier_detection.consecutive_5xx_errors.value == 5  # type: ignore[attr-defined]


def test_64_bit_integers_given_as_strings_are_wrong_types() -> None:
    e = _error("DestinationRule", {"trafficPolicy": {"loadBalancer": {"consistentHash": {
        "httpHeaderName": "x", "ringHash": {"minimumRingSize": "1024"}}}}})
    assert e.path == "spec.trafficPolicy.loadBalancer.consistentHash.ringHash.minimumRingSize"
    assert e.code == "MC0102" and "expected an integer, got string '1024'" in str(e)


def test_nulls_are_accepted() -> None:
    vs = parse_spec("VirtualService", {"hosts": ["a"], "exportTo": ["."], "gateways": None,
                                       "http": [{"route": [{"destination": {"host": "a"}}], "timeout": None}]})
    assert list(vs.export_to) == ["."]  # type: ignore[attr-defined]
    assert not vs.http[0].HasField("timeout")  # type: ignore[attr-defined]


@pytest.mark.parametrize(("kind", "spec", "field", "hint"), [
    ("DestinationRule", {"host": "a", "traffic_policy": {}}, "spec.traffic_policy", "trafficPolicy"),
    ("RequestAuthentication", {"jwt_rules": [{"issuer": "i"}]}, "spec.jwt_rules", "jwtRules"),
    ("RequestAuthentication", {"selector": {"match_labels": {"app": "a"}}}, "spec.selector.match_labels",
     "matchLabels"),
    ("RequestAuthentication", {"jwtRules": [{"issuer": "i", "jwks_uri": "https://k"}]}, "spec.jwtRules[0].jwks_uri",
     "jwksUri"),
])
def test_snake_case_proto_names_are_unknown_fields(kind: str, spec: dict[str, object], field: str,
                                                   hint: str) -> None:
    e = _error(kind, spec)
    assert e.path == field and e.code == "MC7003" and f"did you mean {hint!r}?" in str(e), e


def test_field_numbers_match_istio() -> None:
    # A field's wire tag is (number << 3 | wire type); length-delimited is 2, varint 0.
    vs = message_type("VirtualService")(http=[{}])
    assert vs.SerializeToString() == b"\x1a\x00"                      # VirtualService.http = 3
    route = parse_spec("VirtualService", {"http": [{"route": [{}]}]})
    assert route.SerializeToString() == b"\x1a\x02\x12\x00"           # HTTPRoute.route = 2
    assert parse_spec("VirtualService", {"tls": [{}]}).SerializeToString() == b"\x2a\x00"   # tls = 5
    assert parse_spec("DestinationRule", {"subsets": [{}]}).SerializeToString() == b"\x1a\x00"  # subsets = 3
    assert parse_spec("DestinationRule", {"host": "a"}).SerializeToString() == b"\x0a\x01a"     # host = 1
    assert parse_spec("AuthorizationPolicy", {"action": "DENY"}).SerializeToString() == b"\x18\x01"  # action = 3
    assert parse_spec("AuthorizationPolicy", {"rules": [{}]}).SerializeToString() == b"\x12\x00"   # rules = 2
    assert parse_spec("PeerAuthentication", {"mtls": {"mode": "STRICT"}}).SerializeToString() == b"\x12\x02\x08\x03"
    assert parse_spec("ServiceEntry", {"resolution": "DNS"}).SerializeToString() == b"\x28\x02"     # resolution = 5
    assert parse_spec("VirtualService", {"http": [{"name": "n"}]}).SerializeToString() == b"\x1a\x04\x8a\x01\x01n"  # name = 17
    tls = {"servers": [{"tls": {"caCertCredentialName": "c"}}]}
    # Gateway.servers = 1 > Server.tls = 3 > ServerTLSSettings.ca_cert_credential_name = 16
    assert parse_spec("Gateway", tls).SerializeToString() == b"\x0a\x06\x1a\x04\x82\x01\x01c"
    assert parse_spec("Sidecar", {"egress": [{}]}).SerializeToString() == b"\x1a\x00"           # egress = 3
    assert parse_spec("WorkloadEntry", {"address": "a"}).SerializeToString() == b"\x0a\x01a"    # address = 1
    for name, number in ISTIO_FIELD_NUMBERS.items():
        message, field = name.rsplit(".", 1)
        assert _POOL.FindMessageTypeByName(message).fields_by_name[field].number == number, name
    for name, number in ISTIO_ENUM_NUMBERS.items():
        enum, value = name.rsplit(".", 1)
        assert _POOL.FindEnumTypeByName(enum).values_by_name[value].number == number, name


_POOL = descriptor_pool.Default()
# Field numbers compared with the istio/api repository's definitions (see docs/adapters.md).
ISTIO_FIELD_NUMBERS = {
    "istio.security.v1beta1.AuthorizationPolicy.selector": 1,
    "istio.security.v1beta1.AuthorizationPolicy.rules": 2,
    "istio.security.v1beta1.AuthorizationPolicy.action": 3,
    "istio.security.v1beta1.AuthorizationPolicy.provider": 4,
    "istio.security.v1beta1.AuthorizationPolicy.targetRef": 5,
    "istio.security.v1beta1.AuthorizationPolicy.targetRefs": 6,
    "istio.security.v1beta1.Rule.from": 1,
    "istio.security.v1beta1.Rule.to": 2,
    "istio.security.v1beta1.Rule.when": 3,
    "istio.security.v1beta1.Source.principals": 1,
    "istio.security.v1beta1.Source.request_principals": 2,
    "istio.security.v1beta1.Source.namespaces": 3,
    "istio.security.v1beta1.Source.ip_blocks": 4,
    "istio.security.v1beta1.Source.not_principals": 5,
    "istio.security.v1beta1.Source.remote_ip_blocks": 9,
    "istio.security.v1beta1.Source.service_accounts": 11,
    "istio.security.v1beta1.Source.not_service_accounts": 12,
    "istio.security.v1beta1.Operation.hosts": 1,
    "istio.security.v1beta1.Operation.ports": 2,
    "istio.security.v1beta1.Operation.methods": 3,
    "istio.security.v1beta1.Operation.paths": 4,
    "istio.security.v1beta1.Operation.not_paths": 8,
    "istio.security.v1beta1.Condition.key": 1,
    "istio.security.v1beta1.Condition.values": 2,
    "istio.security.v1beta1.Condition.not_values": 3,
    "istio.security.v1beta1.PeerAuthentication.selector": 1,
    "istio.security.v1beta1.PeerAuthentication.mtls": 2,
    "istio.security.v1beta1.PeerAuthentication.port_level_mtls": 3,
    "istio.type.v1beta1.WorkloadSelector.match_labels": 1,
    "istio.type.v1beta1.PolicyTargetReference.group": 1,
    "istio.type.v1beta1.PolicyTargetReference.kind": 2,
    "istio.type.v1beta1.PolicyTargetReference.name": 3,
    "istio.type.v1beta1.PolicyTargetReference.namespace": 4,
    "istio.networking.v1alpha3.Sidecar.workload_selector": 1,
    "istio.networking.v1alpha3.Sidecar.ingress": 2,
    "istio.networking.v1alpha3.Sidecar.egress": 3,
    "istio.networking.v1alpha3.Sidecar.outbound_traffic_policy": 4,
    "istio.networking.v1alpha3.Sidecar.inbound_connection_pool": 7,
    "istio.networking.v1alpha3.IstioIngressListener.default_endpoint": 4,
    "istio.networking.v1alpha3.IstioIngressListener.tls": 7,
    "istio.networking.v1alpha3.IstioIngressListener.connection_pool": 8,
    "istio.networking.v1alpha3.IstioEgressListener.hosts": 4,
    "istio.networking.v1alpha3.ServiceEntry.hosts": 1,
    "istio.networking.v1alpha3.ServiceEntry.addresses": 2,
    "istio.networking.v1alpha3.ServiceEntry.ports": 3,
    "istio.networking.v1alpha3.ServiceEntry.location": 4,
    "istio.networking.v1alpha3.ServiceEntry.resolution": 5,
    "istio.networking.v1alpha3.ServiceEntry.endpoints": 6,
    "istio.networking.v1alpha3.ServiceEntry.export_to": 7,
    "istio.networking.v1alpha3.ServiceEntry.workload_selector": 9,
    "istio.networking.v1alpha3.ServicePort.target_port": 4,
    "istio.networking.v1alpha3.WorkloadEntry.address": 1,
    "istio.networking.v1alpha3.WorkloadEntry.ports": 2,
    "istio.networking.v1alpha3.WorkloadEntry.labels": 3,
    "istio.networking.v1alpha3.WorkloadEntry.service_account": 7,
    "istio.networking.v1alpha3.ServerTLSSettings.credential_names": 14,
    "istio.networking.v1alpha3.ServerTLSSettings.tls_certificates": 15,
    "istio.networking.v1alpha3.ServerTLSSettings.ca_cert_credential_name": 16,
    "istio.mcp.v1alpha1.Resource.metadata": 1,
    "istio.mcp.v1alpha1.Resource.body": 2,
    "istio.mcp.v1alpha1.Metadata.name": 1,
    "istio.mcp.v1alpha1.Metadata.create_time": 2,
    "istio.mcp.v1alpha1.Metadata.version": 3,
    "istio.mcp.v1alpha1.Metadata.labels": 4,
    "istio.mcp.v1alpha1.Metadata.annotations": 5,
}
ISTIO_ENUM_NUMBERS = {
    "istio.security.v1beta1.AuthorizationPolicy.Action.CUSTOM": 3,
    "istio.security.v1beta1.PeerAuthentication.MutualTLS.Mode.STRICT": 3,
    "istio.networking.v1alpha3.ServiceEntry.Resolution.DNS_ROUND_ROBIN": 3,
    "istio.networking.v1alpha3.ServiceEntry.Resolution.DYNAMIC_DNS": 4,
    "istio.networking.v1alpha3.ServerTLSSettings.TLSmode.OPTIONAL_MUTUAL": 5,
    "istio.networking.v1alpha3.OutboundTrafficPolicy.Mode.ALLOW_ANY": 1,
    "istio.networking.v1alpha3.CaptureMode.NONE": 2,
    "istio.type.v1beta1.WorkloadMode.CLIENT_AND_SERVER": 3,
}


def test_unknown_nested_field_names_its_path_and_a_suggestion() -> None:
    result = translate(istio("VirtualService", "app", """
        hosts: [app]
        http:
        - route: [{destination: {host: app, subsett: v1}}]
    """))
    d = find(result, "MC7003")
    assert d.field == "spec.http[0].route[0].destination.subsett"
    assert "did you mean 'subset'" in d.message
    assert "valid fields: host, port, subset" in d.message
    assert d.source.line == 7


def test_unknown_field_in_a_match() -> None:
    e = _error("VirtualService", {"http": [{"match": [{"uri": {"prefx": "/"}}]}]})
    assert (e.path, e.code) == ("spec.http[0].match[0].uri.prefx", "MC7003")
    assert e.message == ("unknown field 'prefx' in StringMatch (did you mean 'prefix'?); "
                         "valid fields: exact, prefix, regex")


def test_wrong_scalar_type() -> None:
    e = _error("DestinationRule", {"host": "a", "trafficPolicy": {"loadBalancer": {"simple": 3}}})
    assert (e.path, e.code) == ("spec.trafficPolicy.loadBalancer.simple", "MC0102")
    e = _error("VirtualService", {"http": [{"route": [{"weight": "50"}]}]})
    assert (e.path, e.code, e.message) == ("spec.http[0].route[0].weight", "MC0102", "expected an integer, got string '50'")
    e = _error("VirtualService", {"hosts": "a"})
    assert (e.path, e.message) == ("spec.hosts", "expected a list, got string")
    e = _error("AuthorizationPolicy", {"selector": {"matchLabels": {"app": 1}}})
    assert (e.path, e.message) == ("spec.selector.matchLabels.app", "expected a string, got number 1")


def test_bad_enum_name_lists_the_valid_ones() -> None:
    e = _error("AuthorizationPolicy", {"action": "DENNY"})
    assert (e.path, e.code) == ("spec.action", "MC0103")
    assert e.message == "'DENNY' is not one of ALLOW, DENY, AUDIT, CUSTOM (did you mean DENY?)"


def test_bad_duration() -> None:
    e = _error("VirtualService", {"http": [{"retries": {"attempts": 2, "perTryTimeout": "2 seconds"}}]})
    assert (e.path, e.code) == ("spec.http[0].retries.perTryTimeout", "MC7002")
    e = _error("DestinationRule", {"trafficPolicy": {"outlierDetection": {"interval": 10}}})
    assert (e.path, e.code) == ("spec.trafficPolicy.outlierDetection.interval", "MC0102")


def test_two_members_of_one_oneof() -> None:
    e = _error("VirtualService", {"http": [{"match": [{"uri": {"prefix": "/a", "regex": "/b.*"}}]}]})
    assert (e.path, e.code) == ("spec.http[0].match[0].uri.regex", "MC7010")
    assert "'prefix' and 'regex' are both set" in e.message
    e = _error("DestinationRule", {"trafficPolicy": {"loadBalancer": {"simple": "RANDOM",
                                                                      "consistentHash": {"useSourceIp": True}}}})
    assert e.path == "spec.trafficPolicy.loadBalancer.consistentHash"


def test_integers_out_of_range() -> None:
    e = _error("VirtualService", {"http": [{"match": [{"port": -1}]}]})
    assert (e.path, e.code) == ("spec.http[0].match[0].port", "MC0104")
    e = _error("VirtualService", {"http": [{"route": [{"weight": 2**31}]}]})
    assert (e.path, e.code) == ("spec.http[0].route[0].weight", "MC0104")
    e = _error("PeerAuthentication", {"portLevelMtls": {"http": {"mode": "STRICT"}}})
    assert (e.path, e.code) == ("spec.portLevelMtls.http", "MC0102")


def test_map_values_are_checked() -> None:
    e = _error("PeerAuthentication", {"portLevelMtls": {"80": {"mode": "STRICT", "extra": 1}}})
    assert e.path == "spec.portLevelMtls.80.extra"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 10**400])
def test_non_finite_numbers_are_errors_at_their_field(value: object) -> None:
    e = _error("VirtualService", {"http": [{"mirrorPercentage": {"value": value}}]})
    assert e.path == "spec.http[0].mirrorPercentage.value" and e.code == "MC0104", e
    assert "not a finite number" in str(e)


def test_yaml_nan_in_a_manifest_names_the_field() -> None:
    result = translate(istio("VirtualService", "app", """
        hosts: [app]
        http:
        - route: [{destination: {host: app}}]
          mirrorPercentage: {value: .nan}
    """))
    d = find(result, "MC0104")
    assert d.field == "spec.http[0].mirrorPercentage.value"


def test_map_keys_spelling_the_same_port_are_duplicates() -> None:
    e = _error("PeerAuthentication", {"portLevelMtls": {"08080": {"mode": "STRICT"}, 8080: {"mode": "DISABLE"}}})
    assert e.path == "spec.portLevelMtls.8080" and e.code == "MC7010", e
    assert "'08080'" in str(e) and "8080" in str(e)
