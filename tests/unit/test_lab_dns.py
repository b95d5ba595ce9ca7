"""The lab's name server and its table (no root needed): answers by view, NXDOMAIN, ConfigMap and ServiceEntry names."""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import threading
from pathlib import Path

from meshcore.kube import load_text
from meshcore.lab._dns import Table, answer, serve
from meshcore.lab._ipam import NodeRanges
from meshcore.lab._resolver import build_table, resolv_conf
from meshcore.lab._state import LabState, NodeRecord, ServiceRecord


def _query(name: str, qtype: int = 1, ident: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def _parse(response: bytes) -> tuple[int, int, list[str]]:
    """(id, rcode, answered addresses) of a response to one of the queries above."""
    ident, flags, _, count = struct.unpack("!HHHH", response[:8])
    at = response.index(b"\0", 12) + 5
    addresses = []
    for _ in range(count):
        _, qtype, _, _, size = struct.unpack("!HHHIH", response[at:at + 12])
        addresses.append(str(ipaddress.ip_address(response[at + 12:at + 12 + size])))
        at += 12 + size
    return ident, flags & 0xF, addresses


VIEW = {"api.example.test": ["240.0.0.1", "fd00::1"]}


def test_a_and_aaaa_answers_and_nxdomain() -> None:
    assert _parse(answer(_query("api.example.test"), VIEW) or b"") == (0x1234, 0, ["240.0.0.1"])
    assert _parse(answer(_query("API.Example.Test", 28), VIEW) or b"") == (0x1234, 0, ["fd00::1"])
    assert _parse(answer(_query("other.example.test"), VIEW) or b"") == (0x1234, 3, [])
    # A name with no address of the asked family: no records, no error (NODATA).
    assert _parse(answer(_query("api.example.test", 16), VIEW) or b"") == (0x1234, 0, [])
    assert answer(b"\x00", VIEW) is None


def test_the_node_gets_the_proxy_view_and_pods_the_client_view(tmp_path: Path) -> None:
    table = tmp_path / "dns.json"
    table.write_text(json.dumps({"proxy": {"api.example.test": ["192.0.2.5"]},
                                 "client": {"api.example.test": ["240.0.0.1"]}}))
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=serve, args=(server, Table(table), frozenset({"127.0.0.1"})), daemon=True).start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(2)
    client.sendto(_query("api.example.test"), ("127.0.0.1", port))
    assert _parse(client.recv(512))[2] == ["192.0.2.5"]
    # A changed table is read again.
    table.write_text(json.dumps({"proxy": {"api.example.test": ["192.0.2.6"]}, "client": {}}))
    client.sendto(_query("api.example.test"), ("127.0.0.1", port))
    assert _parse(client.recv(512))[2] == ["192.0.2.6"]
    assert Table(table).view("client") == {}
    server.close()


def test_a_pod_asks_its_nodes_name_server_and_fails_fast() -> None:
    node = NodeRecord("node-2", "mc-t.node-2", "/sys/fs/cgroup/x", "/tmp", "/tmp", NodeRanges("10.244.2.0/24",
                                                                                              "fd00:10:244:0:2::/80"))
    text = resolv_conf("t", node)
    assert "nameserver 10.244.2.1\n" in text and "options timeout:1 attempts:2" in text and "search" not in text


def test_table_from_configmaps_and_service_entries(tmp_path: Path) -> None:
    objects = load_text("""
apiVersion: v1
kind: ConfigMap
metadata: {name: meshcore-lab-dns, namespace: default}
data:
  Origin.External.Test.: 192.0.2.1, 2001:db8::1
  by-service.test: service default/web
  bad.test: somewhere
---
apiVersion: v1
kind: ConfigMap
metadata: {name: other, namespace: default}
data: {ignored.test: 192.0.2.9}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec: {hosts: [api.external.test, "*.wild.test"], addresses: [240.0.0.1, 10.0.0.0/8], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: origin}
spec: {hosts: [origin.external.test], resolution: DNS}
""", "x.yaml")[0]
    state = LabState("t", tmp_path, "/sys/fs/cgroup/x", {})
    state.services["default/web"] = ServiceRecord("default", "web", ("10.96.0.5",))
    table, warnings = build_table(state, objects)
    assert table["proxy"] == {"origin.external.test": ["192.0.2.1", "2001:db8::1"],
                              "by-service.test": ["10.96.0.5"]}
    assert table["client"] == {**table["proxy"], "api.external.test": ["240.0.0.1"]}
    assert warnings == ["ConfigMap default/meshcore-lab-dns: name bad.test: 'somewhere' is neither IP addresses "
                        "(comma-separated), 'pod NAMESPACE/NAME' nor 'service NAMESPACE/NAME'; not resolved"]
