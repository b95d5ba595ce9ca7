"""The lab's pure parts (no root needed): container mapping, addresses, hosts files, echo server."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from meshcore.kube import load_text
from meshcore.lab import LabError, LabRanges
from meshcore.lab._containers import PodContext, container_process, echo_kind, expand
from meshcore.lab._hostsfiles import HostEntry, render
from meshcore.lab._ipam import lone_node_ranges
from meshcore.lab._manifest import assign_cluster_ips, desired_state
from meshcore.lab._state import ServiceRecord
from meshcore.lab.echo import Identity, serve

POD = PodContext(namespace="ns1", name="web-1", uid="u-1", addresses=("10.244.0.5", "fd00:10:244::5"),
                 node_name="lab-x", host_addresses=("10.244.0.1", "fd00:10:244::1"), labels={"app": "web"})


def _process(container: dict[str, Any]) -> Any:
    return container_process(container, POD, {"PATH": "/usr/bin", "POD_NAME": POD.name})


# ---------------------------------------------------------------- containers


def test_conformance_echo_basic_listens_on_http_port_env() -> None:
    spec = _process({"name": "c", "image": "gcr.io/k8s-staging-gateway-api/echo-basic:v1@sha256:abc"})
    assert spec.argv[-2:] == ("--http", "3000") and spec.ports == ((3000, "TCP"),)
    spec = _process({"name": "c", "image": "registry.k8s.io/gateway-api/echo-basic:v2",
                     "env": [{"name": "HTTP_PORT", "value": "8081"}]})
    assert spec.ports == ((8081, "TCP"),)


def test_echo_advanced_args_name_the_ports() -> None:
    spec = _process({"name": "c", "image": "gcr.io/k8s-staging-gateway-api/echo-advanced:v1",
                     "args": ["--tcp=9090", "--port=8080", "--grpc=7070", "--port=8443", "--tls=8443",
                              "--crt=/cert.crt", "--udp", "5353"]})
    assert set(spec.ports) == {(8080, "TCP"), (9090, "TCP"), (5353, "UDP")}
    assert any("gRPC" in n for n in spec.notes) and any("TLS" in n for n in spec.notes)


def test_command_runs_as_given_with_variable_expansion() -> None:
    spec = _process({"name": "c", "image": "python", "command": ["python3", "-m", "http.server"],
                     "args": ["$(PORT)", "$$(PORT)"], "env": [{"name": "PORT", "value": "8000"}]})
    assert spec.argv == ("python3", "-m", "http.server", "8000", "$(PORT)") and not spec.notes


def test_unknown_image_without_command_runs_echo_on_declared_ports_with_a_note() -> None:
    spec = _process({"name": "c", "image": "nginx:1.25",
                     "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]})
    assert "--http" in spec.argv and "--udp" in spec.argv
    assert set(spec.ports) == {(80, "TCP"), (53, "UDP")}
    assert spec.notes and "nginx:1.25" in spec.notes[0]


def test_args_without_command_run_as_the_command() -> None:
    spec = _process({"name": "c", "image": "busybox", "args": ["sleep", "3600"]})
    assert spec.argv == ("sleep", "3600") and spec.notes


def test_env_field_refs_and_unsupported_sources() -> None:
    spec = _process({"name": "c", "command": ["true"], "env": [
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]})
    env = dict(spec.env)
    assert env["IP"] == "10.244.0.5" and env["IPS"] == "10.244.0.5,fd00:10:244::5" and env["APP"] == "web"
    assert "PW" not in env and any("secretKeyRef" in n for n in spec.notes)


def test_image_kinds_and_expansion() -> None:
    assert echo_kind("meshcore/echo") == "meshcore"
    assert echo_kind("gcr.io/k8s-staging-ingressconformance/echoserver:v20210922") == "echoserver"
    assert echo_kind("localhost:5000/echo-basic") == "echo-basic"
    assert echo_kind("nginx") == ""
    assert expand("$(A)-$(B)-$$(A)", {"A": "1"}) == "1-$(B)-$(A)"


# ---------------------------------------------------------------- services, addresses, hosts


SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: given, namespace: a}
spec: {clusterIP: 10.96.5.5, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: dual, namespace: a}
spec: {ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: six, namespace: a}
spec: {ipFamilies: [IPv6], ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: a}
spec: {clusterIP: None, ports: [{port: 80}]}
"""


def _services(text: str) -> list[Any]:
    objects, diagnostics = load_text(text)
    assert not diagnostics
    return list(desired_state(objects).services)


def test_cluster_ips_kept_reused_and_allocated() -> None:
    ranges = LabRanges()
    first = assign_cluster_ips(_services(SERVICES), {}, ranges)
    assert first["a/given"].cluster_ips == ("10.96.5.5",)
    assert first["a/dual"].cluster_ips == ("10.96.0.10", "fd00:10:96::a")
    assert first["a/six"].cluster_ips == ("fd00:10:96::b",)
    assert first["a/headless"].cluster_ips == ()
    previous = {"a/six": ServiceRecord("a", "six", ("fd00:10:96::99",))}
    again = assign_cluster_ips(_services(SERVICES), previous, ranges)
    assert again["a/six"].cluster_ips == ("fd00:10:96::99",)  # an earlier assignment is kept


def test_duplicate_given_cluster_ip_is_an_error() -> None:
    text = SERVICES + "---\napiVersion: v1\nkind: Service\nmetadata: {name: dup, namespace: b}\n" \
                      "spec: {clusterIP: 10.96.5.5, ports: [{port: 80}]}\n"
    with pytest.raises(LabError, match="10.96.5.5"):
        assign_cluster_ips(_services(text), {}, LabRanges())


def test_ranges_are_validated() -> None:
    with pytest.raises(LabError, match="IPv4"):
        LabRanges(pod_ipv4="fd00::/64")
    with pytest.raises(LabError, match="overlap"):
        LabRanges(service_ipv4="10.244.128.0/24")
    ranges = lone_node_ranges(LabRanges(pod_ipv4="10.1.0.0/24", pod_ipv6="fd01::/120"))
    assert ranges.node_ipv4 == "10.1.0.1" and ranges.pod_addresses(7) == ("10.1.0.7", "fd01::7")
    assert ranges.proxy_addresses == () and ranges.first_pod_index == 2


def test_hosts_file_short_names_only_in_the_same_namespace() -> None:
    text = render("x", "a", "client", ["10.244.0.9"], [HostEntry("a", "web", ("10.96.0.10",)),
                                                        HostEntry("b", "db", ("10.96.0.11", "fd00:10:96::b"))])
    lines = text.splitlines()
    assert "10.244.0.9\tclient" in lines
    assert "10.96.0.10\tweb web.a web.a.svc web.a.svc.cluster.local" in lines
    assert "10.96.0.11\tdb.b db.b.svc db.b.svc.cluster.local" in lines
    assert "fd00:10:96::b\tdb.b db.b.svc db.b.svc.cluster.local" in lines


def test_deployments_expand_to_pods_with_their_owner() -> None:
    objects, _ = load_text("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: a}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: meshcore/echo}]}
""")
    desired = desired_state(objects)
    assert [p.ordinal for p in desired.pods] == [0, 1, 2]
    assert {p.owner for p in desired.pods} == {"Deployment/web"}
    assert len({p.spec_hash for p in desired.pods}) == 3  # the name is part of it


# ---------------------------------------------------------------- echo server


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def echo() -> Iterator[dict[str, int]]:
    ports = {"http": _free_port(socket.SOCK_STREAM), "tcp": _free_port(socket.SOCK_STREAM),
             "udp": _free_port(socket.SOCK_DGRAM)}
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, daemon=True, args=(
        serve(Identity("pod-a", "ns-a"), [ports["http"]], [ports["tcp"]], [ports["udp"]], stop, "127.0.0.1"),))
    thread.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", ports["http"]), timeout=1).close()
            break
        except OSError:
            time.sleep(0.02)
    yield ports
    loop.call_soon_threadsafe(stop.set)
    thread.join(5)


def _get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET",
         body: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict(r.getheaders()), json.loads(data) if data else None


def test_echo_http_json(echo: dict[str, int]) -> None:
    status, headers, body = _get(echo["http"], "/a/b?c=1", {"X-Thing": "v", "Host": "svc.example"})
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert body["pod"] == "pod-a" and body["namespace"] == "ns-a"
    assert body["method"] == "GET" and body["path"] == "/a/b?c=1" and body["host"] == "svc.example"
    assert body["headers"]["X-Thing"] == ["v"]


def test_echo_http_failure_requests(echo: dict[str, int]) -> None:
    assert _get(echo["http"], "/?echo_status=503")[0] == 503
    status, headers, _ = _get(echo["http"], "/", {"x-echo-status": "429", "x-echo-set-header": "Retry-After: 3"})
    assert status == 429 and headers["Retry-After"] == "3"
    assert _get(echo["http"], "/", {"x-echo-status": "nope"})[0] == 400
    started = time.monotonic()
    assert _get(echo["http"], "/?echo_delay_ms=200")[0] == 200
    assert time.monotonic() - started >= 0.2


def test_echo_http_bodies_head_and_keep_alive(echo: dict[str, int]) -> None:
    status, _, body = _get(echo["http"], "/post", method="POST", body=b"x" * 5000,
                           headers={"Expect": "100-continue", "Content-Length": "5000"})
    assert status == 200 and body["method"] == "POST"
    c = http.client.HTTPConnection("127.0.0.1", echo["http"], timeout=5)
    c.request("HEAD", "/")
    r = c.getresponse()
    assert r.status == 200 and r.read() == b""
    for i in range(3):  # the same connection serves one request after another
        c.request("PUT", f"/{i}", body=iter([b"abc", b"def"]), encode_chunked=True)
        r = c.getresponse()
        assert json.loads(r.read())["path"] == f"/{i}"
    c.close()
    with socket.create_connection(("127.0.0.1", echo["http"]), timeout=5) as s:
        s.sendall(b"NOT HTTP\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")


def test_echo_tcp_and_udp(echo: dict[str, int]) -> None:
    with socket.create_connection(("127.0.0.1", echo["tcp"]), timeout=5) as s:
        s.sendall(b"hello bytes")
        assert s.recv(100) == b"hello bytes"
        s.sendall(b"whoami\n")
        assert json.loads(s.recv(100)) == {"pod": "pod-a", "namespace": "ns-a", "protocol": "tcp"}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"datagram", ("127.0.0.1", echo["udp"]))
        assert s.recvfrom(100)[0] == b"datagram"
        s.sendto(b"whoami", ("127.0.0.1", echo["udp"]))
        assert json.loads(s.recvfrom(100)[0])["pod"] == "pod-a"
