"""The access-log decoders: every field of an HTTP or TCP entry lands in the Flow, resolved by the names."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from meshcore.model import WorkloadRef
from meshcore.observe import Enforcer, Layer, Peer, Verdict
from meshcore.proxy import NamesTable, decode_batch, decode_http_entry, decode_tcp_entry
from meshcore.proxy._als import NO_CHAIN_DETAILS

NODE = "node-1"


def _names() -> NamesTable:
    table = NamesTable()
    table.update(NODE, {"listeners": {"15001": "shop/web:80"},
                        "endpoints": {"10.244.0.9:8080": "shop/web-1", "[fd00::9]:8080": "shop/web-1"},
                        "policies": {"shop/no-admin": "istio.yaml:7 AuthorizationPolicy shop/no-admin"},
                        "peers": {"10.244.0.5": ["shop/client", 1001, "shop"], "fd00::5": ["", 1001, "shop"]}})
    return table


def _addr(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def _entry(*, flags: bool, hint: bool, ipv6: bool) -> Any:
    e = accesslog_pb2.HTTPAccessLogEntry()
    e.protocol_version = accesslog_pb2.HTTPAccessLogEntry.HTTP11
    c = e.common_properties
    c.start_time.FromSeconds(1_790_000_000)
    c.start_time.nanos = 250_000_000
    c.duration.FromMilliseconds(12)
    c.time_to_last_downstream_tx_byte.FromMilliseconds(7)
    c.downstream_remote_address.CopyFrom(_addr("fd00::5" if ipv6 else "10.244.0.5", 40000))
    c.downstream_local_address.CopyFrom(_addr("10.244.0.1", 15001))
    c.upstream_remote_address.CopyFrom(_addr("fd00::9" if ipv6 else "10.244.0.9", 8080))
    c.route_name = "shop/web:80/0"
    c.upstream_cluster = "shop/web:80"
    if flags:
        c.response_flags.upstream_connection_failure = True
        c.response_flags.upstream_retry_limit_exceeded = True
    if hint:
        c.metadata.filter_metadata["envoy.common"].CopyFrom(
            struct_pb2.Struct(fields={"access_log_hint": struct_pb2.Value(bool_value=True)}))
    e.request.request_method = base_pb2.POST
    e.request.path = "/api?x=1"
    e.request.authority = "web"
    e.request.request_body_bytes = 3
    e.response.response_code.value = 503
    e.response.response_code_details = "upstream_reset_before_response_started"
    e.response.response_body_bytes = 91
    return e


@pytest.mark.parametrize("flags", [False, True])
@pytest.mark.parametrize("hint", [False, True])
@pytest.mark.parametrize("ipv6", [False, True])
@pytest.mark.parametrize("resolved", [False, True])
def test_http_entry(flags: bool, hint: bool, ipv6: bool, resolved: bool) -> None:
    flow = decode_http_entry(_entry(flags=flags, hint=hint, ipv6=ipv6), NODE, _names() if resolved else None)
    assert (flow.node, flow.layer, flow.enforcer, flow.protocol, flow.direction) == (
        NODE, Layer.L7, Enforcer.PROXY, "HTTP/1.1", None)
    assert flow.time.timestamp() == 1_790_000_000.25
    assert flow.verdict is (Verdict.AUDIT if hint else Verdict.FORWARDED) and flow.reason == flow.policy == ""
    l7 = flow.l7
    assert l7 is not None
    assert (l7.method, l7.path, l7.authority, l7.status, l7.latency_ms) == ("POST", "/api?x=1", "web", 503, 7.0)
    assert (l7.route, l7.cluster, l7.details) == ("shop/web:80/0", "shop/web:80", "upstream_reset_before_response_started")
    assert (l7.bytes_received, l7.bytes_sent) == (3, 91)
    assert l7.flags == (("UF", "URX") if flags else ())
    client, server = ("fd00::5", "fd00::9") if ipv6 else ("10.244.0.5", "10.244.0.9")
    if not resolved:
        assert (flow.source, flow.destination, l7.listener) == (Peer(client, 40000), Peer(server, 8080), "")
        return
    assert l7.listener == "shop/web:80"
    assert flow.destination == Peer(server, 8080, WorkloadRef("shop", "web-1"), "shop")
    # The client's workload is known by address for IPv4 here; for IPv6 only its identity.
    workload = None if ipv6 else WorkloadRef("shop", "client")
    assert flow.source == Peer(client, 40000, workload, "shop", 1001)


def test_a_request_refused_by_policy_is_dropped_naming_the_policy_and_its_source() -> None:
    e = _entry(flags=False, hint=True, ipv6=False)
    e.common_properties.ClearField("upstream_remote_address")
    e.response.response_code.value = 403
    e.response.response_code_details = "rbac_access_denied_matched_policy[shop/no-admin[0]]"
    flow = decode_http_entry(e, NODE, _names())
    assert (flow.verdict, flow.reason, flow.policy, flow.policy_source) == (
        Verdict.DROPPED, "policy-denied", "shop/no-admin", "istio.yaml:7 AuthorizationPolicy shop/no-admin")
    assert flow.destination == Peer() and flow.destination_name == "shop/web:80"
    # An ALLOW policy's default deny names no policy.
    e.response.response_code_details = "rbac_access_denied_matched_policy[none]"
    flow = decode_http_entry(e, NODE, _names())
    assert (flow.verdict, flow.reason, flow.policy, flow.policy_source) == (Verdict.DROPPED, "policy-denied", "", "")


def _tcp_entry(*, chain: bool) -> Any:
    e = accesslog_pb2.TCPAccessLogEntry()
    c = e.common_properties
    c.start_time.FromSeconds(1_790_000_000)
    c.duration.FromMilliseconds(40)
    c.downstream_remote_address.CopyFrom(_addr("10.244.0.5", 40000))
    c.downstream_local_address.CopyFrom(_addr("10.244.0.1", 15001))
    if chain:
        c.upstream_remote_address.CopyFrom(_addr("10.244.0.9", 8080))
        c.upstream_cluster = "shop/web:80"
        e.connection_properties.received_bytes = 10
        e.connection_properties.sent_bytes = 20
    else:
        c.response_flags.no_route_found = True
    return e


def test_tcp_connections() -> None:
    ok = decode_tcp_entry(_tcp_entry(chain=True), NODE, _names())
    assert (ok.layer, ok.protocol, ok.verdict, ok.destination.workload) == (
        Layer.L7, "TCP", Verdict.FORWARDED, WorkloadRef("shop", "web-1"))
    assert ok.l7 is not None and (ok.l7.cluster, ok.l7.latency_ms, ok.l7.bytes_received, ok.l7.bytes_sent) == (
        "shop/web:80", 40.0, 10, 20)
    refused = decode_tcp_entry(_tcp_entry(chain=False), NODE, _names())
    assert (refused.verdict, refused.reason, refused.source.workload) == (
        Verdict.DROPPED, "policy-denied", WorkloadRef("shop", "client"))
    assert refused.l7 is not None and (refused.l7.details, refused.l7.flags) == (NO_CHAIN_DETAILS, ("NR",))


def test_a_batch_of_either_kind() -> None:
    http = als_pb2.StreamAccessLogsMessage()
    http.http_logs.log_entry.append(_entry(flags=False, hint=False, ipv6=False))
    tcp = als_pb2.StreamAccessLogsMessage()
    tcp.tcp_logs.log_entry.append(_tcp_entry(chain=True))
    assert [f.protocol for f in decode_batch(http.SerializeToString(), NODE)] == ["HTTP/1.1"]
    assert [f.protocol for f in decode_batch(tcp.SerializeToString(), NODE)] == ["TCP"]
    assert decode_batch(als_pb2.StreamAccessLogsMessage().SerializeToString(), NODE) == []


CLIENT_ID = "spiffe://cluster.local/ns/shop/sa/client"
WEB_ID = "spiffe://cluster.local/ns/shop/sa/web"


def test_a_tunnels_server_side_names_the_verified_client_and_the_pod_it_forwarded() -> None:
    e = _entry(flags=False, hint=False, ipv6=False)
    c = e.common_properties
    # The peer is the client's node proxy; the forwarded (and certificate-checked) client is the pod.
    c.downstream_direct_remote_address.CopyFrom(_addr("10.0.2.1", 51000))
    c.downstream_remote_address.CopyFrom(_addr("10.244.0.5", 0))
    c.route_name = "tunnel_inbound/shop/web-1"
    c.tls_properties.peer_certificate_properties.subject_alt_name.add(uri=CLIENT_ID)
    e.request.request_method = base_pb2.CONNECT
    e.request.authority = "10.244.0.9:8080"
    flow = decode_http_entry(e, NODE, _names())
    assert (flow.mtls, flow.peer_principal) == (True, CLIENT_ID)
    assert flow.source.workload == WorkloadRef("shop", "client")
    # Any other listener's client is the connection's peer, whatever it forwards.
    c.route_name = "shop/web:80/0"
    assert decode_http_entry(e, NODE, _names()).source.address == "10.0.2.1"
    # Refused before delivery: the destination is the one the stream asked for.
    c.route_name = "tunnel_inbound/shop/web-1"
    c.ClearField("upstream_remote_address")
    e.response.response_code.value = 403
    e.response.response_code_details = "rbac_access_denied_matched_policy[none]"
    refused = decode_http_entry(e, NODE, _names())
    assert refused.verdict is Verdict.DROPPED and refused.destination == Peer(
        "10.244.0.9", 8080, WorkloadRef("shop", "web-1"), "shop")


def test_a_certificate_without_a_uri_is_named_by_its_subject() -> None:
    e = _entry(flags=False, hint=False, ipv6=False)
    e.common_properties.tls_properties.peer_certificate_properties.subject = "CN=partner"
    assert (decode_http_entry(e, NODE).mtls, decode_http_entry(e, NODE).peer_principal) == (True, "CN=partner")
    assert decode_http_entry(_entry(flags=False, hint=False, ipv6=False), NODE).mtls is False


@pytest.mark.parametrize("ipv6", [False, True])
def test_a_request_sent_through_a_tunnel_names_the_pod_and_the_identity_it_had_to_present(ipv6: bool) -> None:
    e = _entry(flags=False, hint=False, ipv6=ipv6)
    destination = "[fd00::9]:8080" if ipv6 else "10.244.0.9:8080"
    e.common_properties.upstream_remote_address.CopyFrom(address_pb2.Address(
        envoy_internal_address=address_pb2.EnvoyInternalAddress(
            server_listener_name="tunnel_internal", endpoint_id=f"{destination} {WEB_ID}")))
    e.response.response_code_details = "via_upstream"
    # A client the tunnels do not act for (not a meshed workload of the node) went in clear text.
    outsider = decode_http_entry(e, NODE, _names())
    assert outsider.destination == Peer("fd00::9" if ipv6 else "10.244.0.9", 8080, WorkloadRef("shop", "web-1"), "shop")
    assert (outsider.mtls, outsider.peer_principal) == (False, "")
    e.common_properties.filter_state_objects["meshcore.tunnel.client"].Pack(
        wrappers_pb2.StringValue(value="fd00::5" if ipv6 else "10.244.0.5"))
    flow = decode_http_entry(e, NODE, _names())
    assert (flow.mtls, flow.peer_principal) == (True, WEB_ID)
    # No answer came through the tunnel (the proxy answered itself): nothing was shown authenticated.
    e.response.response_code_details = "upstream_reset_before_response_started{connection_termination}"
    assert decode_http_entry(e, NODE, _names()).mtls is False


def test_a_tunnelled_tcp_connection_goes_to_the_pod_dialled_and_names_the_servers_identity() -> None:
    e = _tcp_entry(chain=True)
    c = e.common_properties
    c.downstream_local_address.CopyFrom(_addr("10.244.0.9", 8080))  # the original destination
    c.upstream_remote_address.CopyFrom(_addr("10.0.2.1", 15008))  # the server's node
    c.upstream_cluster = f"tunnel|{CLIENT_ID}|{WEB_ID}|node-2"
    flow = decode_tcp_entry(e, NODE, _names())
    assert flow.destination == Peer("10.244.0.9", 8080, WorkloadRef("shop", "web-1"), "shop")
    assert (flow.mtls, flow.peer_principal) == (True, WEB_ID) and flow.l7 is not None and flow.l7.listener == ""
    c.response_flags.upstream_connection_failure = True
    assert decode_tcp_entry(e, NODE, _names()).mtls is False
