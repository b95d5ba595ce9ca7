"""Access-log and request-id settings of the node proxy's listeners."""

from __future__ import annotations

from typing import Any

import pytest

from meshcore import model as m
from meshcore.compile import CompileOptions, compile_plan
from meshcore.proxy import HTTP_FORMAT, LISTENER, TCP_FORMAT, ProxyConfigError, ProxySettings, build_resources

NS = "shop"


def _hcm(settings: ProxySettings) -> Any:
    pod = m.Workload("a", NS, m.Identity(NS, "a"), addresses=("10.0.0.1",), labels={"app": "web"})
    web = m.Service("web", NS, vips=("10.96.0.1",), ports=(
        m.ServicePort(80, "HTTP", "http", backends=(m.Backend("10.0.0.1", 8080, workload=pod.ref),)),))
    route = m.HttpRoute("r", matches=[m.HttpMatch(method="GET")], destinations=[m.Destination(m.ServiceRef(NS, "web"))])
    snap = m.Snapshot(namespaces=(m.Namespace(NS),), services=(web,), workloads=(pod,),
                      routes=(m.RouteTable(web.ref, 80, "L7", http=[route]),))
    plan = compile_plan(snap, "n1", CompileOptions(proxy_enabled=True, proxy_port_base=15001, proxy_port_range=1))
    (listener,) = build_resources(plan.envoy, settings).of(LISTENER).values()
    return listener.body["filter_chains"][0]["filters"][0]["typed_config"]


def test_every_request_is_logged_in_32k_batches_with_request_ids_by_default() -> None:
    hcm = _hcm(ProxySettings())
    (log,) = hcm["access_log"]
    assert "filter" not in log  # complete flows: no sampling, no filter
    assert log["typed_config"]["common_config"]["buffer_size_bytes"] == 32768
    assert log["typed_config"]["common_config"]["buffer_flush_interval"] == "1s"
    assert "generate_request_id" not in hcm  # Envoy's default: on


def test_request_ids_and_batch_size_can_be_changed() -> None:
    hcm = _hcm(ProxySettings(request_ids=False, access_log_buffer_bytes=4096))
    assert hcm["generate_request_id"] is False
    assert hcm["access_log"][0]["typed_config"]["common_config"]["buffer_size_bytes"] == 4096


@pytest.mark.parametrize("size", [0, 8 * 1024 * 1024])
def test_a_batch_size_outside_grpc_limits_is_refused(size: int) -> None:
    with pytest.raises(ProxyConfigError, match="access_log_buffer_bytes is .*give 1 to 4194304"):
        ProxySettings(access_log_buffer_bytes=size)


def test_an_access_log_file_makes_every_listener_write_lines_in_meshcores_format() -> None:
    hcm = _hcm(ProxySettings(access_log_file="/run/meshcore/node-1/envoy/access.log"))
    (log,) = hcm["access_log"]
    assert log["name"] == "envoy.access_loggers.file" and "filter" not in log  # every request, no sampling
    assert log["typed_config"]["path"] == "/run/meshcore/node-1/envoy/access.log"
    assert log["typed_config"]["log_format"] == {"text_format_source": {"inline_string": HTTP_FORMAT}}


def test_a_tcp_listener_logs_its_connections_to_the_same_file() -> None:
    from test_golden_envoy import _tcp_rbac

    plan = compile_plan(_tcp_rbac(), "n1", CompileOptions(proxy_enabled=True, proxy_port_base=15001, proxy_port_range=1))
    (listener,) = build_resources(plan.envoy, ProxySettings(access_log_file="/x/access.log")).of(LISTENER).values()
    (log,) = listener.body["access_log"]
    assert log["typed_config"]["path"] == "/x/access.log"
    assert log["typed_config"]["log_format"]["text_format_source"]["inline_string"] == TCP_FORMAT


def test_a_relative_access_log_file_is_refused() -> None:
    with pytest.raises(ProxyConfigError, match="access_log_file is 'access.log': give an absolute path"):
        ProxySettings(access_log_file="access.log")
