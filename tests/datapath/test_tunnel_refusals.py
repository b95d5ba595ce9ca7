"""Calls the tunnel steering refuses at the client's socket are counted in the kernel, by client and destination.

The client namespace stands for a pod on the node, its cgroup for the pod's; the server
namespace's backends stand for the meshed workloads: b1 STRICT, b2 PERMISSIVE, b3 not
meshed at all. Only refused calls leave a record, and taking the records empties the map.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from _datapath_support import PORT, V4, V6, Clients, Net
from meshcore.compile import TunnelDestination, TunnelPlan
from meshcore.datapath import TunnelSteering
from meshcore.datapath._cgroup import cgroup_id
from meshcore.datapath._sidecar import netns_cookie
from meshcore.model import WorkloadRef

pytestmark = pytest.mark.root


def _dest(address: str, *, strict: bool) -> TunnelDestination:
    return TunnelDestination(address, 0, WorkloadRef("test", "server"), "spiffe://cluster.local/ns/test/sa/server",
                             "node-2", ("10.77.0.99",), steer=True, strict=strict)


def _plan() -> TunnelPlan:
    return TunnelPlan(destinations=(_dest(V4["b1"], strict=True), _dest(V6["b1"], strict=True),
                                    _dest(V4["b2"], strict=False)))


@pytest.fixture
def steering(cgroup: Path, pin_root: Path) -> Iterator[TunnelSteering]:
    tunnel = TunnelSteering(f"mcdp-{secrets.token_hex(3)}", cgroup, pin_root)
    try:
        yield tunnel
    finally:
        tunnel.destroy()
        tunnel.root.parent.rmdir()  # the node's directory, which the node's other datapath parts share


def _udp(clients: Clients, host: str, n: int = 1) -> list[dict[str, object]]:
    replies: list[dict[str, object]] = clients.run({"op": "udp", "host": host, "port": PORT, "n": n,
                                                    "timeout": 1})["replies"]
    return replies


def test_udp_refused_for_a_strict_destination_is_recorded_with_its_client_and_count(
        net: Net, cgroup: Path, clients: Clients, steering: TunnelSteering) -> None:
    steering.apply(_plan(), "10.77.0.1", "")
    log = steering.refusal_log()
    try:
        assert [r.get("error") for r in _udp(clients, V4["b1"], n=3)] == ["ECONNREFUSED"] * 3
        refusals = log.take()
        assert len(refusals) == 1, refusals
        (refused,) = refusals
        assert (refused.address, refused.port, refused.protocol, refused.reason, refused.count) == (
            V4["b1"], PORT, socket.IPPROTO_UDP, "mtls-strict-udp", 3)
        # The client is named by what the agent knows of each pod: its network namespace and cgroup.
        assert refused.netns == netns_cookie(f"/run/netns/{net.client_ns}")
        assert refused.cgroup == cgroup_id(cgroup)
        # The socket has no address of its own; its port is the one the kernel gave it for the send.
        assert refused.source == "" and refused.source_port > 0
        assert refused.last_ns > 0
        assert log.take() == [], "taking the records empties the map"
    finally:
        log.close()


def test_allowed_udp_leaves_no_record(clients: Clients, steering: TunnelSteering) -> None:
    steering.apply(_plan(), "10.77.0.1", "")
    log = steering.refusal_log()
    try:
        # PERMISSIVE and unmeshed destinations get their datagrams and answer them.
        assert _udp(clients, V4["b2"])[0].get("backend") == "b2"
        assert _udp(clients, V4["b3"])[0].get("backend") == "b3"
        assert log.take() == []
        assert _udp(clients, V6["b1"])[0].get("error") == "ECONNREFUSED"
        assert [(r.address, r.reason, r.count) for r in log.take()] == [(V6["b1"], "mtls-strict-udp", 1)]
    finally:
        log.close()


def test_tcp_to_a_strict_destination_with_no_proxy_of_its_family_is_recorded(
        clients: Clients, steering: TunnelSteering) -> None:
    steering.apply(_plan(), "10.77.0.1", "")  # no IPv6 proxy address: IPv6 TCP cannot be tunnelled
    log = steering.refusal_log()
    try:
        got = clients.run({"op": "tcp", "host": V6["b1"], "port": PORT, "timeout": 1})
        assert got.get("error") == "ECONNREFUSED", got
        assert [(r.address, r.port, r.protocol, r.reason, r.count) for r in log.take()] == [
            (V6["b1"], PORT, socket.IPPROTO_TCP, "mtls-strict-no-proxy", 1)]
    finally:
        log.close()
