"""Istio's CRD schema constraints and x-kubernetes-validations rules, enforced in Istio's words."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from _istio_support import istio, translate

from meshcore_istio._admission import cel_rules, implemented, release

ROOT = Path(__file__).resolve().parents[3]


def _errors(result: object) -> list[tuple[str, str, str]]:
    return [(d.code, d.field, d.message) for d in result.diagnostics  # type: ignore[attr-defined]
            if d.severity.value == "error"]


def test_every_cel_rule_of_the_pinned_release_has_an_implementation() -> None:
    rules = cel_rules()
    assert len(rules) > 20
    missing = sorted(r for r in rules if not implemented(r))
    assert not missing, "CEL rules of the pinned Istio CRDs without a Python implementation in _admission.RULES:\n" \
        + "\n".join(missing)


def test_the_constraints_come_from_the_pinned_release() -> None:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts" / "gen_istio_fields.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert release() == module.RELEASE


@pytest.mark.parametrize(("kind", "spec", "error"), [
    ("DestinationRule", "{host: a, trafficPolicy: {loadBalancer: {warmup: {duration: 10s, minimumPercent: 150}}}}",
     ("MC0104", "spec.trafficPolicy.loadBalancer.warmup.minimumPercent", "should be less than or equal to 100")),
    ("DestinationRule", "{host: a, trafficPolicy: {loadBalancer: {warmup: {aggression: 2}}}}",
     ("MC0101", "spec.trafficPolicy.loadBalancer.warmup.duration", "Required value: this field is required")),
    ("DestinationRule", "{host: a, trafficPolicy: {loadBalancer: {warmup: {duration: 10s, aggression: -1}}}}",
     ("MC0104", "spec.trafficPolicy.loadBalancer.warmup.aggression", "should be greater than or equal to 0")),
    ("DestinationRule", "{host: a, trafficPolicy: {connectionPool: {tcp: {connectTimeout: 500us}}}}",
     ("MC7002", "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
      "must be a valid duration greater than 1ms (got '500us')")),
    ("ServiceEntry", "{hosts: ['*'], ports: [{number: 80, name: http}]}",
     ("MC7002", "spec.hosts[0]", "hostname cannot be wildcard (got '*')")),
    ("ServiceEntry", "{hosts: [a.example], ports: [{number: 80, name: a}, {number: 80, name: b}]}",
     ("MC7010", "spec.ports", "port number cannot be duplicated")),
    ("ServiceEntry", "{hosts: [a.example], ports: [{number: 80, name: a}, {number: 81, name: a}]}",
     ("MC7010", "spec.ports[1]", "Duplicate value: {name: 'a'} (as spec.ports[0])")),
    ("ServiceEntry", "{hosts: [a.example], ports: [{number: 80}]}",
     ("MC0101", "spec.ports[0].name", "Required value: this field is required")),
    ("ServiceEntry", "{hosts: [a.example], addresses: [10.0.0.0/24], resolution: DNS}",
     ("MC7010", "spec.resolution", "CIDR addresses are allowed only for NONE/STATIC resolution types")),
    ("ServiceEntry", "{hosts: [a.example], resolution: DNS_ROUND_ROBIN, endpoints: [{address: a}, {address: b}]}",
     ("MC7010", "spec.endpoints", "DNS_ROUND_ROBIN mode cannot have multiple endpoints")),
    ("WorkloadEntry", "{address: unix://relative.sock}",
     ("MC7002", "spec.address", "UDS must be an absolute path or abstract socket (got 'unix://relative.sock')")),
    ("WorkloadEntry", "{address: unix:///var/run/a.sock, ports: {http: 80}}",
     ("MC7010", "spec.ports", "UDS may not include ports")),
    ("WorkloadEntry", "{labels: {app: a}}", ("MC0101", "spec", "Address is required")),
    ("WorkloadEntry", "{address: 192.0.2.1, ports: {http: 0}}",
     ("MC0104", "spec.ports.http", "port must be between 1-65535 (got 0)")),
    ("PeerAuthentication", "{portLevelMtls: {8080: {mode: STRICT}}}",
     ("MC7010", "spec.portLevelMtls", "portLevelMtls requires selector")),
    ("AuthorizationPolicy", "{selector: {matchLabels: {app: '*'}}}",
     ("MC7002", "spec.selector.matchLabels.app", "wildcard not allowed in label value match (got '*')")),
    ("AuthorizationPolicy", "{targetRefs: [{kind: Service, name: a, namespace: other}]}",
     ("MC7002", "spec.targetRefs[0].namespace", "cross namespace referencing is not currently supported (got 'other')")),
    ("AuthorizationPolicy", "{rules: [{when: [{values: [a]}]}]}",
     ("MC0101", "spec.rules[0].when[0].key", "Required value: this field is required")),
    ("RequestAuthentication", "{jwtRules: [{issuer: a, jwksUri: 'ftp://keys'}]}",
     ("MC7002", "spec.jwtRules[0].jwksUri", "url must have scheme http:// or https:// (got 'ftp://keys')")),
])
def test_what_the_crd_schema_refuses_is_an_error_in_its_words(kind: str, spec: str,
                                                               error: tuple[str, str, str]) -> None:
    version = "security.istio.io/v1" if kind.endswith(("Policy", "Authentication")) else "networking.istio.io/v1"
    result = translate(istio(kind, "x", spec, version=version))
    assert _errors(result) == [error]


def test_what_the_crd_schema_accepts_is_not_an_error() -> None:
    result = translate(istio("DestinationRule", "a", """
        host: a.example
        trafficPolicy:
          loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 30s, minimumPercent: 10, aggression: 1.5}}
          connectionPool: {tcp: {connectTimeout: 1ms}}
    """, version="networking.istio.io/v1"), istio("WorkloadEntry", "vm", "address: 192.0.2.7",
                                                  version="networking.istio.io/v1"))
    assert _errors(result) == []


@pytest.mark.parametrize(("kind", "spec", "error"), [
    ("ServiceEntry", "{hosts: [a.example, b.example], resolution: DNS, ports: [{number: 5432, name: pg}]}",
     ("MC7010", "spec.ports[0].protocol", "multiple hosts provided with non-HTTP, non-TLS ports")),
    ("ServiceEntry", "{hosts: ['*.example'], resolution: DNS, ports: [{number: 80, name: http, protocol: HTTP}]}",
     ("MC7010", "spec.hosts[0]", "hosts must be FQDN if no endpoints are provided for resolution mode DNS")),
    ("ServiceEntry", "{hosts: [a.example], resolution: DNS, ports: [{number: 80, name: http}], "
     "endpoints: [{address: 'bad_name!'}]}",
     ("MC7002", "spec.endpoints[0].address", "endpoint address 'bad_name!' is not a valid FQDN or an IP address")),
    ("ServiceEntry", "{hosts: [a.example], resolution: STATIC, ports: [{number: 80, name: http}], "
     "endpoints: [{address: vm.example}]}",
     ("MC7002", "spec.endpoints[0].address",
      "endpoint address 'vm.example' is not a valid IP address (resolution STATIC)")),
    ("ServiceEntry", "{hosts: [a.example], ports: [{number: 80, name: http, protocol: SMTP}]}",
     ("MC7002", "spec.ports[0].protocol", "unsupported protocol: SMTP (one of GRPC, GRPC-WEB, HTTP, HTTP2, "
      "HTTPS, HTTP_PROXY, MONGO, MYSQL, REDIS, TCP, TLS, UDP)")),
    ("ServiceEntry", "{hosts: [a..example], ports: [{number: 80, name: http}]}",
     ("MC7002", "spec.hosts[0]", "domain name 'a..example' invalid (label '' invalid)")),
    ("DestinationRule", "{host: a, trafficPolicy: {tunnel: {targetHost: h, targetPort: 8}, proxyProtocol: {}}}",
     ("MC7010", "spec.trafficPolicy.proxyProtocol", "tunnel and proxyProtocol must not be set together")),
    ("DestinationRule", "{host: a, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, "
     "maglev: {tableSize: 1000}}}}}",
     ("MC7002", "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
      "tableSize must be a prime number for maglev (got 1000)")),
    ("VirtualService", "{hosts: [a.example, '*.example'], http: [{route: [{destination: {host: a.example}}]}]}",
     ("MC7010", "spec.hosts[1]", "duplicate hosts in virtual service: a.example & *.example")),
    ("VirtualService", "{hosts: ['*'], http: [{route: [{destination: {host: a.example}}]}]}",
     ("MC7002", "spec.hosts[0]", "wildcard host * is not allowed for virtual services bound to the mesh gateway")),
    ("VirtualService", "{hosts: [a.example]}",
     ("MC7002", "spec", "http, tcp or tls must be provided in virtual service")),
    ("VirtualService", "{gateways: [gw], http: [{route: [{destination: {host: a.example}}]}]}",
     ("MC7010", "spec.gateways", "delegate virtual service must have no gateways specified")),
    ("AuthorizationPolicy", "{action: DENY}",
     ("MC7010", "spec.action", "DENY action without `rules` is meaningless as it will never be triggered, add an "
      "empty rule `{}` if you want it be triggered for every request")),
])
def test_what_istios_webhook_refuses_is_an_error_in_its_words(kind: str, spec: str,
                                                              error: tuple[str, str, str]) -> None:
    version = "security.istio.io/v1" if kind.endswith(("Policy", "Authentication")) else "networking.istio.io/v1"
    result = translate(istio(kind, "x", spec, version=version))
    assert _errors(result) == [error]


def test_what_istios_webhook_accepts_is_not_an_error() -> None:
    result = translate(
        istio("ServiceEntry", "dns-wild", """
            hosts: ["*.example"]
            resolution: DNS
            ports: [{number: 80, name: http, protocol: HTTP}]
            endpoints: [{address: egress.example}]
        """),
        istio("ServiceEntry", "multi-http", """
            hosts: [a.example, b.example]
            resolution: DNS
            ports: [{number: 80, name: http, protocol: HTTP}]
        """),
        istio("AuthorizationPolicy", "deny-all", "{action: DENY, rules: [{}]}", version="security.istio.io/v1"),
        istio("VirtualService", "partial", "{hosts: ['*x.example', 192.0.2.1], "
              "http: [{route: [{destination: {host: a.example}}]}]}"),
    )
    assert _errors(result) == []
    [partial] = [d for d in result.diagnostics if d.source.name == "partial" and d.code == "MC7014"]
    assert partial.field == "spec.hosts[0]" and "partial wildcard host '*x.example'" in partial.message
