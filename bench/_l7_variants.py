"""bench/l7.py's variants of the bare one-hop Envoy (d): one piece of mesh machinery each.

Every variant is path (d)'s static Envoy (same listener, route and cluster, in the node's
network namespace) plus exactly one thing the node Envoy may carry: a way of getting each
request's record out (gRPC access log to the node agent, OpenTelemetry, the file access
logger with meshcore's line format) or an HTTP filter (RBAC, JWT). Measured beside (d)
in the same rounds, the difference in Envoy CPU per request is what that piece costs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from meshcore.proxy._access_file import HTTP_FORMAT

_T = "type.googleapis.com/"
JWT_KEY = b"bench-l7-secret-key-of-32-bytes!"
JWT_ISSUER = "https://bench.example"


@attrs.frozen
class Context:
    """What the variants' configurations point at."""

    work: Path
    agent_socket: Path  # the node agent's gRPC server (ADS and access logs)
    otel_socket: Path  # a receiver that discards OpenTelemetry logs
    client_ip: str
    server_ipv6: str


def _grpc_cluster(name: str, socket: Path) -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"pipe": {"path": str(socket)}}}}]}]}}


def _als(buffer: int) -> Callable[[dict[str, Any], Context], None]:
    def apply(cfg: dict[str, Any], ctx: Context) -> None:
        cfg["static_resources"]["clusters"].append(_grpc_cluster("meshcore_xds", ctx.agent_socket))
        _hcm(cfg)["access_log"] = [{"name": "envoy.access_loggers.http_grpc", "typed_config": {
            "@type": _T + "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {"log_name": "meshcore", "transport_api_version": "V3",
                              "grpc_service": {"envoy_grpc": {"cluster_name": "meshcore_xds"}},
                              "buffer_flush_interval": "1s", "buffer_size_bytes": buffer}}}]
    return apply


def _otel(cfg: dict[str, Any], ctx: Context) -> None:
    cfg["static_resources"]["clusters"].append(_grpc_cluster("otel", ctx.otel_socket))
    _hcm(cfg)["access_log"] = [{"name": "envoy.access_loggers.open_telemetry", "typed_config": {
        "@type": _T + "envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
        # The batch size is only honoured under common_config (Envoy 1.40).
        "common_config": {"log_name": "meshcore", "transport_api_version": "V3",
                          "grpc_service": {"envoy_grpc": {"cluster_name": "otel"}},
                          "buffer_flush_interval": "1s", "buffer_size_bytes": 32 * 1024},
        "disable_builtin_labels": True,
        "body": {"string_value": HTTP_FORMAT.rstrip("\n")}}}]


def _file(cfg: dict[str, Any], ctx: Context) -> None:
    _hcm(cfg)["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": _T + "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(ctx.work / "variant-access.log"),
        "log_format": {"text_format_source": {"inline_string": HTTP_FORMAT}}}}]


def _rbac_filter(ctx: Context) -> dict[str, Any]:
    return {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": _T + "envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "ALLOW", "policies": {"default/allow-client[0]": {
            "permissions": [{"any": True}],
            "principals": [{"direct_remote_ip": {"address_prefix": ctx.client_ip, "prefix_len": 32}}]}}}}}


def _rbac(cfg: dict[str, Any], ctx: Context) -> None:
    _hcm(cfg)["http_filters"].insert(0, _rbac_filter(ctx))


def _rbac_off(cfg: dict[str, Any], ctx: Context) -> None:
    _rbac(cfg, ctx)
    route = _hcm(cfg)["route_config"]["virtual_hosts"][0]["routes"][0]
    route["typed_per_filter_config"] = {"envoy.filters.http.rbac": {
        "@type": _T + "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"}}


def _jwt(cfg: dict[str, Any], ctx: Context) -> None:
    jwks = json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "kid": "bench",
                                 "k": _b64(JWT_KEY)}]})
    _hcm(cfg)["http_filters"].insert(0, {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": _T + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"bench": {"issuer": JWT_ISSUER, "local_jwks": {"inline_string": jwks},
                                "payload_in_metadata": "payload"}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
            {"provider_name": "bench"}, {"allow_missing": {}}]}}}]}})


def _node_options(families: str) -> Callable[[dict[str, Any], Context], None]:
    """The options the node Envoy's generated listener, route and cluster carry (see /config_dump),
    with the backend pod's IPv4 address, its IPv6 one, or both (``4``, ``6``, ``46``) as endpoints."""
    def apply(cfg: dict[str, Any], ctx: Context) -> None:
        hcm = _hcm(cfg)
        hcm.update(normalize_path=True, merge_slashes=True, codec_type="AUTO")
        rc = hcm["route_config"]
        rc["ignore_port_in_host_matching"] = True
        route = rc["virtual_hosts"][0]["routes"][0]
        route["match"] = {"path_separated_prefix": "/api"}
        route["route"]["timeout"] = "0s"
        route["name"] = "default/app:80/default/app.rules[0].matches[0]"
        cluster = cfg["static_resources"]["clusters"][0]
        cluster["lb_policy"] = "RANDOM"
        cluster["circuit_breakers"] = {"thresholds": [{"max_connections": 4294967295, "max_pending_requests": 4294967295,
                                                       "max_requests": 4294967295, "max_retries": 4294967295}]}
        endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        port = endpoints[0]["endpoint"]["address"]["socket_address"]["port_value"]
        ipv6 = {"endpoint": {"address": {"socket_address": {"address": ctx.server_ipv6, "port_value": port}}}}
        if families == "46":
            endpoints.append(ipv6)
        elif families == "6":
            endpoints[:] = [ipv6]
    return apply


def _skipped(name: str, base: Callable[[dict[str, Any], Context], None]) -> Callable[[dict[str, Any], Context], None]:
    """``base``'s filter, not created for the route's requests (what the node Envoy's routes get)."""
    def apply(cfg: dict[str, Any], ctx: Context) -> None:
        base(cfg, ctx)
        route = _hcm(cfg)["route_config"]["virtual_hosts"][0]["routes"][0]
        route["typed_per_filter_config"] = {name: {"@type": _T + "envoy.config.route.v3.FilterConfig", "disabled": True}}
    return apply


def _jwt_off(cfg: dict[str, Any], ctx: Context) -> None:
    _jwt(cfg, ctx)
    route = _hcm(cfg)["route_config"]["virtual_hosts"][0]["routes"][0]
    route["typed_per_filter_config"] = {"envoy.filters.http.jwt_authn": {
        "@type": _T + "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig", "disabled": True}}


def _replica(cfg: dict[str, Any], ctx: Context) -> None:
    """A static copy of the node Envoy's listener, route and cluster, logging like it."""
    _node_options("46")(cfg, ctx)
    _file(cfg, ctx)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_token() -> str:
    """An HS256 token of the JWT variant's issuer, valid for a day."""
    head = _b64(json.dumps({"alg": "HS256", "kid": "bench", "typ": "JWT"}).encode())
    body = _b64(json.dumps({"iss": JWT_ISSUER, "sub": "client", "exp": int(time.time()) + 86400}).encode())
    signature = hmac.new(JWT_KEY, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def _hcm(cfg: dict[str, Any]) -> dict[str, Any]:
    hcm: dict[str, Any] = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


@attrs.frozen
class Variant:
    """One piece of machinery on top of (d) (``apply`` None: not a static Envoy, see l7.py)."""

    label: str
    apply: Callable[[dict[str, Any], Context], None] | None
    headers: tuple[str, ...] = ()


#: The node Envoy itself dialled at its listener's address, not through the ClusterIP.
LISTENER = "listener"
VARIANTS = {
    LISTENER: Variant("(b) at its listener (no socket LB)", None),
    "als": Variant("(d) + gRPC access log, 32 KiB", _als(32 * 1024)),
    "als1m": Variant("(d) + gRPC access log, 1 MiB", _als(1024 * 1024)),
    "otel": Variant("(d) + OpenTelemetry log, 32 KiB", _otel),
    "file": Variant("(d) + file access log (line format)", _file),
    "node": Variant("(d) + the node's options, IPv4+IPv6 pod", _node_options("46")),
    "node4": Variant("(d) + the node's options, IPv4 pod", _node_options("4")),
    "node6": Variant("(d) + the node's options, IPv6 pod", _node_options("6")),
    "replica": Variant("(d) + the node's options and file log", _replica),
    "rbac": Variant("(d) + RBAC (one ALLOW policy)", _rbac),
    "rbacoff": Variant("(d) + RBAC, told to pass (route)", _rbac_off),
    "rbacskip": Variant("(d) + RBAC, not created (route)", _skipped("envoy.filters.http.rbac", _rbac)),
    "jwt": Variant("(d) + JWT (a valid token)", _jwt, ("Authorization: Bearer {token}",)),
    "jwtnone": Variant("(d) + JWT (no token)", _jwt),
    "jwtoff": Variant("(d) + JWT, told to pass (route)", _jwt_off, ("Authorization: Bearer {token}",)),
    "jwtskip": Variant("(d) + JWT, not created (route)", _skipped("envoy.filters.http.jwt_authn", _jwt),
                       ("Authorization: Bearer {token}",)),
}


def variant_config(name: str, base: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """(d)'s configuration ``base`` with variant ``name`` applied (a copy)."""
    cfg: dict[str, Any] = json.loads(json.dumps(base))
    cfg["node"] = {"id": f"bench-{name}", "cluster": "bench"}
    apply = VARIANTS[name].apply
    assert apply is not None, name
    apply(cfg, ctx)
    return cfg


def headers(name: str) -> list[str]:
    """wrk ``-H`` values for variant ``name``."""
    return [h.format(token=jwt_token()) for h in VARIANTS[name].headers]


_SINK = """
import sys, threading
from concurrent.futures import ThreadPoolExecutor
import grpc

def export(request, context):
    return b""  # an empty ExportLogsServiceResponse

method = grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=lambda b: b)
server = grpc.server(ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
    "opentelemetry.proto.collector.logs.v1.LogsService", {"Export": method}),))
server.add_insecure_port("unix:" + sys.argv[1])
server.start()
print("ready", flush=True)
sys.stdin.read()  # until the bench closes it
server.stop(0)
"""


class OtelSink:
    """A gRPC server on a Unix socket that takes OpenTelemetry log exports and discards them (a process
    of its own: gRPC in the bench's process would complain about every fork of wrk and ip)."""

    def __init__(self, socket: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _SINK, str(socket)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the OpenTelemetry sink did not start")

    def stop(self) -> None:
        """Stop serving."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
