"""The fields of every Istio ``spec`` message, for exact unknown-field and wrong-type errors.

Each message lists its fields (camelCase, as the Kubernetes CRDs spell them) and their
types: ``str``, ``int``, ``num``, ``bool``, ``any``, a message name, ``[T]`` for a list
and ``{T}`` for a map with string keys. The tables are written from the public Istio API
reference (networking.istio.io, security.istio.io).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from meshcore.kube import FieldError, type_name

from ._codes import UNKNOWN_FIELD

_TABLE = """
VirtualService: hosts=[str] gateways=[str] http=[HTTPRoute] tls=[TLSRoute] tcp=[TCPRoute] exportTo=[str]
HTTPRoute: name=str match=[HTTPMatchRequest] route=[HTTPRouteDestination] redirect=HTTPRedirect
  directResponse=HTTPDirectResponse delegate=Delegate rewrite=HTTPRewrite timeout=str retries=HTTPRetry
  fault=HTTPFaultInjection mirror=Destination mirrorPercent=int mirrorPercentage=Percent
  mirrors=[HTTPMirrorPolicy] corsPolicy=CorsPolicy headers=Headers
Delegate: name=str namespace=str
HTTPMatchRequest: name=str uri=StringMatch scheme=StringMatch method=StringMatch authority=StringMatch
  headers={StringMatch} port=int sourceLabels={str} gateways=[str] queryParams={StringMatch}
  ignoreUriCase=bool withoutHeaders={StringMatch} sourceNamespace=str statPrefix=str
StringMatch: exact=str prefix=str regex=str
HTTPRouteDestination: destination=Destination weight=int headers=Headers
Destination: host=str subset=str port=PortSelector
PortSelector: number=int
Headers: request=HeaderOperations response=HeaderOperations
HeaderOperations: set={str} add={str} remove=[str]
HTTPRedirect: uri=str authority=str port=int derivePort=str scheme=str redirectCode=int
HTTPDirectResponse: status=int body=HTTPBody
HTTPBody: string=str bytes=str
HTTPRewrite: uri=str authority=str uriRegexRewrite=RegexRewrite
RegexRewrite: match=str rewrite=str
HTTPRetry: attempts=int perTryTimeout=str retryOn=str retryRemoteLocalities=bool
  retryIgnorePreviousHosts=bool backoff=str
HTTPFaultInjection: delay=Delay abort=Abort
Delay: fixedDelay=str exponentialDelay=str percentage=Percent percent=int
Abort: httpStatus=int grpcStatus=str http2Error=str percentage=Percent
Percent: value=num
HTTPMirrorPolicy: destination=Destination percentage=Percent
CorsPolicy: allowOrigins=[StringMatch] allowOrigin=[str] allowMethods=[str] allowHeaders=[str]
  exposeHeaders=[str] maxAge=str allowCredentials=bool unmatchedPreflights=str
TLSRoute: match=[TLSMatchAttributes] route=[RouteDestination]
TLSMatchAttributes: sniHosts=[str] destinationSubnets=[str] port=int sourceLabels={str} gateways=[str]
  sourceNamespace=str
TCPRoute: match=[L4MatchAttributes] route=[RouteDestination]
L4MatchAttributes: destinationSubnets=[str] port=int sourceSubnet=str sourceLabels={str} gateways=[str]
  sourceNamespace=str
RouteDestination: destination=Destination weight=int

DestinationRule: host=str trafficPolicy=TrafficPolicy subsets=[Subset] exportTo=[str]
  workloadSelector=WorkloadSelector
TrafficPolicy: loadBalancer=LoadBalancerSettings connectionPool=ConnectionPoolSettings
  outlierDetection=OutlierDetection tls=ClientTLSSettings portLevelSettings=[PortTrafficPolicy]
  tunnel=any proxyProtocol=any
PortTrafficPolicy: port=PortSelector loadBalancer=LoadBalancerSettings connectionPool=ConnectionPoolSettings
  outlierDetection=OutlierDetection tls=ClientTLSSettings
Subset: name=str labels={str} trafficPolicy=TrafficPolicy
LoadBalancerSettings: simple=str consistentHash=ConsistentHashLB localityLbSetting=any
  warmupDurationSecs=str warmup=any
ConsistentHashLB: httpHeaderName=str httpCookie=HTTPCookie useSourceIp=bool httpQueryParameterName=str
  ringHash=any maglev=any minimumRingSize=int
HTTPCookie: name=str path=str ttl=str attributes=any
ConnectionPoolSettings: tcp=any http=any
OutlierDetection: splitExternalLocalOriginErrors=bool consecutiveLocalOriginFailures=int
  consecutiveGatewayErrors=int consecutive5xxErrors=int consecutiveErrors=int interval=str
  baseEjectionTime=str maxEjectionPercent=int minHealthPercent=int
ClientTLSSettings: mode=str clientCertificate=str privateKey=str caCertificates=str credentialName=str
  subjectAltNames=[str] sni=str insecureSkipVerify=bool caCrl=str
WorkloadSelector: matchLabels={str}
LabelSelector: labels={str}

ServiceEntry: hosts=[str] addresses=[str] ports=[ServicePort] location=str resolution=str
  endpoints=[WorkloadEntry] workloadSelector=LabelSelector exportTo=[str] subjectAltNames=[str]
ServicePort: number=int protocol=str name=str targetPort=int
WorkloadEntry: address=str ports={int} labels={str} network=str locality=str weight=int serviceAccount=str

Gateway: servers=[any] selector={str}
Sidecar: workloadSelector=LabelSelector ingress=[any] egress=[any] outboundTrafficPolicy=any
  inboundConnectionPool=any

AuthorizationPolicy: selector=WorkloadSelector targetRef=any targetRefs=[any] rules=[Rule] action=str
  provider=ExtensionProvider
ExtensionProvider: name=str
Rule: from=[RuleFrom] to=[RuleTo] when=[Condition]
RuleFrom: source=Source
RuleTo: operation=Operation
Source: principals=[str] notPrincipals=[str] requestPrincipals=[str] notRequestPrincipals=[str]
  namespaces=[str] notNamespaces=[str] ipBlocks=[str] notIpBlocks=[str] remoteIpBlocks=[str]
  notRemoteIpBlocks=[str] serviceAccounts=[str] notServiceAccounts=[str]
Operation: hosts=[str] notHosts=[str] ports=[str] notPorts=[str] methods=[str] notMethods=[str]
  paths=[str] notPaths=[str]
Condition: key=str values=[str] notValues=[str]

PeerAuthentication: selector=WorkloadSelector mtls=MutualTLS portLevelMtls={MutualTLS}
MutualTLS: mode=str
RequestAuthentication: selector=WorkloadSelector targetRef=any targetRefs=[any] jwtRules=[any]
"""


def _parse(table: str) -> dict[str, dict[str, str]]:
    messages: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in table.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            name, _, rest = line.partition(":")
            current = messages.setdefault(name.strip(), {})
            line = rest
        assert current is not None
        for item in line.split():
            field, _, kind = item.partition("=")
            current[field] = kind
    return messages


#: message name → {field name: type}
MESSAGES: Mapping[str, Mapping[str, str]] = _parse(_TABLE)


def check(value: Any, kind: str, path: str) -> None:
    """Raise :class:`FieldError` for the first unknown field or wrong type under ``path``."""
    if value is None or kind == "any":
        return
    if kind.startswith("["):
        if not isinstance(value, list):
            raise FieldError(path, f"expected a list, got {type_name(value)}", "MC0102")
        for i, item in enumerate(value):
            check(item, kind[1:-1], f"{path}[{i}]")
        return
    if kind.startswith("{"):
        if not isinstance(value, Mapping):
            raise FieldError(path, f"expected a mapping, got {type_name(value)}", "MC0102")
        for key, item in value.items():
            check(item, kind[1:-1], f"{path}.{key}")
        return
    if kind == "str":
        if not isinstance(value, str):
            raise FieldError(path, f"expected a string, got {type_name(value)} {value!r}", "MC0102")
        return
    if kind == "bool":
        if not isinstance(value, bool):
            raise FieldError(path, f"expected true or false, got {type_name(value)} {value!r}", "MC0102")
        return
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(path, f"expected an integer, got {type_name(value)} {value!r}", "MC0102")
        return
    if kind == "num":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError(path, f"expected a number, got {type_name(value)} {value!r}", "MC0102")
        return
    fields = MESSAGES[kind]
    if not isinstance(value, Mapping):
        raise FieldError(path, f"expected a mapping ({kind}), got {type_name(value)}", "MC0102")
    for key, item in value.items():
        name = str(key)
        sub = f"{path}.{name}" if path else name
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FieldError(sub, f"unknown field {name!r} in {kind}{hint}; valid fields: "
                             f"{', '.join(sorted(fields))}", UNKNOWN_FIELD)
        check(item, fields[name], sub)


def check_spec(kind: str, spec: Any) -> None:
    """Check an object's ``spec`` against the schema of its kind."""
    check(spec, kind, "spec")
