"""IstiodSource against a recorded istiod: subscribe, translate, ACK/NACK, updates, reconnect."""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _istiod_server import DATA, RecordedIstiod
from click.testing import CliRunner
from structlog.testing import capture_logs

import meshcore
from meshcore.cli import cli
from meshcore.kube import KubeObject
from meshcore.registry import wrap
from meshcore_istio import IstiodError, IstiodSource, adapter, message_type, parse_spec

VS = "networking.istio.io/v1/VirtualService"
AP = "security.istio.io/v1/AuthorizationPolicy"
ALL_URLS = {
    f"networking.istio.io/v1/{k}"
    for k in ("VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "WorkloadEntry", "Sidecar")
} | {f"security.istio.io/v1/{k}" for k in ("AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication")}


@pytest.fixture
def istiod() -> Iterator[RecordedIstiod]:
    server = RecordedIstiod().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def source(istiod: RecordedIstiod) -> Iterator[IstiodSource]:
    with IstiodSource(istiod.address, max_backoff=0.2) as src:
        yield src


def _vs_resources(istiod: RecordedIstiod) -> list[dict[str, Any]]:
    return copy.deepcopy(istiod.recorded[VS]["resources"])


def _by_ref(objects: list[KubeObject]) -> dict[str, KubeObject]:
    return {f"{o.kind} {o.namespace}/{o.name}": o for o in objects}


def _translate_with_inventory(objects: list[KubeObject]) -> meshcore.Translation:
    inventory, diagnostics = meshcore.load([DATA / "inventory.yaml"])
    assert not diagnostics
    return meshcore.translate_objects([*inventory, *objects], wrap([adapter]))


def _reviews_split(result: meshcore.Translation) -> list[list[tuple[str | None, int]]]:
    [table] = [t for t in result.snapshot.routes if t.service.name == "reviews"]
    return [[(d.subset, d.weight) for d in route.destinations] for route in table.http]


def test_subscribes_to_every_kind_with_the_api_generator(istiod: RecordedIstiod, source: IstiodSource) -> None:
    source.snapshot(timeout=5)
    first = istiod.requests[0]
    assert first.node.metadata.fields["GENERATOR"].string_value == "api"
    assert first.node.id.split("~")[0] == "sidecar" and len(first.node.id.split("~")) == 4
    initial = [r for r in istiod.requests if not r.response_nonce]
    assert {r.type_url for r in initial} == ALL_URLS == set(source.type_urls)


def test_snapshot_translates_like_the_equivalent_yaml(istiod: RecordedIstiod, source: IstiodSource) -> None:
    objects = source.snapshot(timeout=5)
    refs = _by_ref(objects)
    # The synthetic ServiceEntries istiod adds for Kubernetes Services are not objects of their own.
    assert sorted(refs) == ["AuthorizationPolicy default/reviews-viewer", "DestinationRule default/reviews",
                            "PeerAuthentication istio-system/default", "VirtualService default/reviews"]
    vs = refs["VirtualService default/reviews"]
    assert vs.api_version == "networking.istio.io/v1"
    assert dict(vs.metadata) == {"name": "reviews", "namespace": "default", "labels": {"app": "reviews"},
                                 "annotations": {"meshcore.test/recorded": "true"}, "resourceVersion": "48211",
                                 "creationTimestamp": "2025-03-04T09:58:41Z"}
    assert vs.source.file == f"istiod://{istiod.address}/{VS}/default/reviews"

    from_istiod = _translate_with_inventory(objects)
    from_yaml = meshcore.translate([DATA / "inventory.yaml", DATA / "bookinfo.yaml"], adapters=[adapter])
    assert from_istiod.ok and from_yaml.ok, (from_istiod.errors, from_yaml.errors)
    assert _reviews_split(from_istiod) == [[("v2", 100)], [("v1", 50), ("v3", 50)]]
    [table] = [t for t in from_istiod.snapshot.routes if t.service.name == "reviews"]
    header = table.http[0].matches[0].headers[0]
    assert (header.name, header.match.value) == ("end-user", "jason")
    assert from_istiod.snapshot.routes == from_yaml.snapshot.routes
    assert from_istiod.snapshot.policies == from_yaml.snapshot.policies
    assert from_istiod.snapshot.peer_authentications == from_yaml.snapshot.peer_authentications


def test_each_response_is_acked_with_its_version_and_nonce(istiod: RecordedIstiod, source: IstiodSource) -> None:
    source.snapshot(timeout=5)
    recorded = istiod.recorded[VS]
    ack = istiod.wait_for(lambda r: r.type_url == VS and r.response_nonce == recorded["nonce"])
    assert ack.version_info == recorded["version_info"]
    assert not ack.HasField("error_detail")
    assert source.status().types[VS].version == recorded["version_info"]


def test_watch_sees_an_update_and_a_deletion(istiod: RecordedIstiod, source: IstiodSource) -> None:
    changes = source.watch(timeout=5)
    assert "VirtualService default/reviews" in _by_ref(next(changes))
    updated = _vs_resources(istiod)
    routes = updated[0]["body"]["spec"]["http"][1]["route"]
    routes[0]["weight"], routes[1]["weight"] = 20, 80
    updated[0]["metadata"]["version"] = "48300"
    istiod.push(VS, updated, "2025-03-04T10:20:00Z/15")
    objects = next(changes)
    assert _by_ref(objects)["VirtualService default/reviews"].metadata["resourceVersion"] == "48300"
    assert _reviews_split(_translate_with_inventory(objects))[1] == [("v1", 20), ("v3", 80)]
    istiod.push(VS, [], "2025-03-04T10:21:00Z/16")
    objects = next(changes)
    assert "VirtualService default/reviews" not in _by_ref(objects)
    assert "DestinationRule default/reviews" in _by_ref(objects)
    assert not [t for t in _translate_with_inventory(objects).snapshot.routes if t.service.name == "reviews"]


def _wrong_body_type(resources: list[dict[str, Any]]) -> None:
    resources[0]["body"] = {"type_url": "type.googleapis.com/istio.networking.v1alpha3.DestinationRule",
                            "spec": {"host": "reviews"}}


def _invalid_regex(resources: list[dict[str, Any]]) -> None:
    resources[0]["body"]["spec"]["http"][0]["match"][0]["headers"]["end-user"] = {"regex": "(jason"}


def _bad_enum_number(resources: list[dict[str, Any]]) -> None:
    message: Any = parse_spec("AuthorizationPolicy", resources[0]["body"]["spec"])
    message.action = 9  # proto3 enums are open: the number goes on the wire as it is
    resources[0]["body"]["message"] = message


@pytest.mark.parametrize(("url", "spoil", "expected"), [
    (VS, _wrong_body_type, "VirtualService default/reviews: spec: body is istio.networking.v1alpha3.DestinationRule"),
    (VS, _invalid_regex, "VirtualService default/reviews: spec.http[0].match[0].headers.end-user.regex: '(jason' "
                         "is not a valid RE2 regular expression: missing ): (jason"),
    (AP, _bad_enum_number, "AuthorizationPolicy default/reviews-viewer: spec.action: 9 is not a Action"),
])
def test_a_bad_resource_is_nacked_and_the_previous_objects_kept(
        istiod: RecordedIstiod, source: IstiodSource, url: str, spoil: Any, expected: str) -> None:
    before = source.snapshot(timeout=5)
    resources = copy.deepcopy(istiod.recorded[url]["resources"])
    spoil(resources)
    bad = istiod.push(url, resources, "2025-03-04T10:30:00Z/17")
    nack = istiod.wait_for(lambda r: r.response_nonce == bad.nonce)
    assert nack.type_url == url
    assert nack.error_detail.code == 3 and expected in nack.error_detail.message
    assert nack.version_info == istiod.recorded[url]["version_info"]  # the version still in use
    assert source.objects() == before
    assert expected in source.status().types[url].error
    good = istiod.push(url, istiod.recorded[url]["resources"], "2025-03-04T10:31:00Z/18")
    istiod.wait_for(lambda r: r.response_nonce == good.nonce and not r.HasField("error_detail"))
    assert source.status().types[url].error == ""


def test_reconnects_keeping_the_last_good_objects_and_resyncs(istiod: RecordedIstiod, source: IstiodSource) -> None:
    changes = source.watch(timeout=5)
    before = next(changes)
    with capture_logs() as logs:
        istiod.stop()
        deadline = time.monotonic() + 5
        while source.status().connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not source.status().connected
        assert source.objects() == before
        updated = _vs_resources(istiod)
        updated[0]["body"]["spec"]["http"][1]["route"][0]["weight"] = 10
        updated[0]["body"]["spec"]["http"][1]["route"][1]["weight"] = 90
        istiod.push(VS, updated, "2025-03-04T11:00:00Z/20")  # what the restarted istiod will serve
        istiod.start()
        after = next(changes)
    assert _reviews_split(_translate_with_inventory(after))[1] == [("v1", 10), ("v3", 90)]
    assert source.status().connected
    events = [e["event"] for e in logs]
    assert any("keeping the last good configuration" in e for e in events), logs
    assert any("re-established" in e for e in events), logs
    assert sum(1 for r in istiod.requests if r.type_url == VS and not r.response_nonce) == 2


def test_an_unreachable_address_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        with IstiodSource(f"127.0.0.1:{port}", max_backoff=0.1) as src, pytest.raises(IstiodError) as err:
            src.snapshot(timeout=0.5)
    assert f"istiod at 127.0.0.1:{port} is unreachable" in str(err.value)
    assert "UNAVAILABLE" in str(err.value)


def test_a_type_the_server_does_not_know_is_a_clear_error() -> None:
    server = RecordedIstiod(reject_unknown=True).start()
    try:
        with IstiodSource(server.address, kinds=["VirtualService"], version="v1beta1", max_backoff=0.1) as src:
            with pytest.raises(IstiodError) as err:
                src.snapshot(timeout=5)
    finally:
        server.stop()
    message = str(err.value)
    assert "rejected the subscription" in message
    assert "unknown type networking.istio.io/v1beta1/VirtualService" in message


def test_versions_kinds_and_addresses_are_checked() -> None:
    old = IstiodSource("127.0.0.1:15010", version="v1alpha3", kinds=["VirtualService", "AuthorizationPolicy"])
    assert old.type_urls == ("networking.istio.io/v1alpha3/VirtualService", "security.istio.io/v1beta1/AuthorizationPolicy")
    with pytest.raises(IstiodError, match="valid kinds"):
        IstiodSource("127.0.0.1:15010", kinds=["Virtualservice"])
    with pytest.raises(IstiodError, match="no version 'v2'"):
        IstiodSource("127.0.0.1:15010", version="v2")
    with pytest.raises(IstiodError, match="expected host:port"):
        IstiodSource("istiod")
    assert message_type("VirtualService").DESCRIPTOR.full_name == "istio.networking.v1alpha3.VirtualService"


def test_cli_plan_reads_from_istiod(istiod: RecordedIstiod) -> None:
    args = ["plan", "-f", str(DATA / "inventory.yaml"), "--from", f"istiod={istiod.address}", "-o", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    decisions = {d["service"]: d for d in json.loads(result.stdout)["decisions"]}
    reviews = next(d for name, d in decisions.items() if name.endswith("/reviews"))
    # The recorded VirtualService routes reviews by the end-user header: the node Envoy serves it.
    assert reviews["datapath"] == "envoy" and "istiod://" in reviews["source"], reviews


def test_cli_names_an_unknown_or_unreachable_source() -> None:
    result = CliRunner().invoke(cli, ["plan", "--from", "nosuch=127.0.0.1:1"])
    assert result.exit_code == 1 and "unknown config source 'nosuch'; installed: istiod" in result.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(cli, ["analyze", "--from", f"istiod=127.0.0.1:{port}", "--source-timeout", "0.5"])
    assert result.exit_code == 1 and f"istiod at 127.0.0.1:{port} is unreachable" in result.output, result.output
    result = CliRunner().invoke(cli, ["translate", "--from", "istiod"])
    assert result.exit_code == 2 and "expected SOURCE=ADDRESS" in result.output


def test_64_bit_integers_from_istiod_are_integers_and_translate() -> None:
    from _istiod_server import encode_resource

    from meshcore_istio._istiod_decode import decode_resources

    spec = {"host": "reviews", "trafficPolicy": {
        "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user", "ringHash": {"minimumRingSize": 4096}}},
        "portLevelSettings": [{"port": {"number": 9080}, "loadBalancer": {
            "consistentHash": {"httpHeaderName": "x-user", "maglev": {"tableSize": 65537}}}}]}}
    item = {"metadata": {"name": "default/reviews"},
            "body": {"type_url": "type.googleapis.com/istio.networking.v1alpha3.DestinationRule", "spec": spec}}
    (obj,) = decode_resources([encode_resource(item)], "networking.istio.io/v1/DestinationRule", "istiod:15010")
    assert obj.body["spec"] == spec
    result = _translate_with_inventory([obj])
    assert not [d for d in result.diagnostics if d.severity.value == "error"], result.diagnostics
    assert any(p.lb is not None and p.lb.minimum_ring_size == 4096 for p in result.snapshot.traffic_policies)


def test_close_from_a_change_callback_ends_the_stream_without_an_error(istiod: RecordedIstiod) -> None:
    source = IstiodSource(istiod.address, max_backoff=0.2)
    calls: list[int] = []

    def stop(objects: list[KubeObject]) -> None:
        calls.append(len(objects))
        source.close()

    source.on_change(stop)
    with capture_logs() as logs:
        source.start()
        deadline = time.monotonic() + 5
        while source._thread is not None and source._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert calls, "the callback never ran"
    assert source._thread is not None and not source._thread.is_alive()
    assert not [e for e in logs if e.get("log_level") == "error"], logs


def test_a_program_that_configures_no_logging_sees_no_debug_lines_of_retries() -> None:
    script = (
        "import socket, time\n"
        "from meshcore_istio import IstiodSource\n"
        "with socket.socket() as s:\n"
        "    s.bind(('127.0.0.1', 0))\n"
        "    src = IstiodSource(f'127.0.0.1:{s.getsockname()[1]}', max_backoff=0.05)\n"
        "    src.start(); time.sleep(0.6); src.close()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "cannot read from istiod; retrying" in lines[0], result.stderr  # said once
    assert "debug" not in result.stderr
