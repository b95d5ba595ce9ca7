"""The batch decoder of access-log entries gives what the full decoder gives."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import struct_pb2

from meshcore.proxy._als import decode_entry, entry_data, record_data


class _Resolver:
    def listener(self, node: str, local_address: str) -> str:
        return f"listener-for-{local_address}"

    def workload(self, node: str, address: str) -> str:
        return f"shop/pod-at-{address}"


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
    c.downstream_remote_address.CopyFrom(_addr("fd00:10:244::5" if ipv6 else "10.244.0.5", 40000))
    c.downstream_local_address.CopyFrom(_addr("10.244.0.1", 15001))
    c.upstream_remote_address.CopyFrom(_addr("10.244.0.9", 8080))
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
    e.response.response_code.value = 503
    e.response.response_code_details = "upstream_reset_before_response_started"
    return e


@pytest.mark.parametrize("flags", [False, True])
@pytest.mark.parametrize("hint", [False, True])
@pytest.mark.parametrize("ipv6", [False, True])
@pytest.mark.parametrize("resolver", [None, _Resolver()])
def test_batch_decoder_agrees_with_full_decoder(flags: bool, hint: bool, ipv6: bool, resolver: Any) -> None:
    entry = _entry(flags=flags, hint=hint, ipv6=ipv6)
    fast = entry_data(entry, "node-1", resolver)
    full = record_data(decode_entry(entry, "node-1", resolver))
    assert fast == full
    assert fast["method"] == "POST" and fast["status"] == 503 and fast["latencyMs"] == 7.0
    assert bool(fast["flags"]) is flags and fast["audited"] is hint
