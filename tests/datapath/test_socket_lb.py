"""Socket-level load balancing against the real kernel: which backend answered, what the
application saw, and which connections were refused."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from _datapath_support import PORT, V4, V6, Clients, plan, service
from meshcore.compile import diff_bpf
from meshcore.datapath import DatapathError, LbSettings, SocketLB
from meshcore.datapath.maps import rev_nat, rev_sock
from meshcore.datapath.maps._base import get_addr
from meshcore.model import BackendState

pytestmark = pytest.mark.root

VIP4, VIP6 = "10.96.77.10", "fd96::10"
FAMILIES = [pytest.param(VIP4, V4, id="ipv4"), pytest.param(VIP6, V6, id="ipv6")]


@pytest.mark.parametrize(("vip", "addrs"), FAMILIES)
def test_tcp_to_vip_reaches_the_backends_and_peername_is_the_vip(
    lb: SocketLB, clients: Clients, vip: str, addrs: dict[str, str]
) -> None:
    lb.apply(plan(service(vip, 80, [("b1", 1), ("b2", 1)])))

    result = clients.run({"op": "tcp_count", "host": vip, "port": 80, "n": 60})
    assert result["errors"] == {}
    assert set(result["counts"]) == {"b1", "b2"}, result

    one = clients.run({"op": "tcp", "host": vip, "port": 80})
    assert one["backend"] in {"b1", "b2"}
    assert one["peername"] == [vip, 80]


@pytest.mark.parametrize(("vip", "addrs"), FAMILIES)
def test_udp_to_vip_is_balanced_and_replies_come_from_the_vip(
    lb: SocketLB, clients: Clients, vip: str, addrs: dict[str, str]
) -> None:
    lb.apply(plan(service(vip, 53, [("b1", 1), ("b2", 1)], "UDP")))

    # One unconnected socket: every reply appears to come from the VIP (recvmsg), and the
    # socket's datagrams stay on one backend.
    result = clients.run({"op": "udp", "host": vip, "port": 53, "n": 5})
    replies = result["replies"]
    assert all("error" not in r for r in replies), replies
    assert {tuple(r["from"]) for r in replies} == {(vip, 53)}
    assert [r["echo"] for r in replies] == [f"msg{i}" for i in range(5)]
    assert len({r["backend"] for r in replies}) == 1

    # A connected UDP socket: getpeername() and replies show the VIP too.
    result = clients.run({"op": "udp", "host": vip, "port": 53, "n": 2, "connected": True})
    assert result["peername"] == [vip, 53]
    assert {tuple(r["from"]) for r in result["replies"]} == {(vip, 53)}

    # A fresh socket per datagram is a fresh choice: both backends answer.
    counts = clients.run({"op": "udp_count", "host": vip, "port": 53, "n": 60})
    assert counts["errors"] == {}
    assert set(counts["counts"]) == {"b1", "b2"}


def test_weights_90_10_hold_over_2000_connections(lb: SocketLB, clients: Clients) -> None:
    lb.apply(plan(service(VIP4, 80, [("b1", 90), ("b2", 10)])))

    result = clients.run({"op": "tcp_count", "host": VIP4, "port": 80, "n": 2000}, timeout=120)
    assert result["errors"] == {}
    share = 100 * result["counts"].get("b1", 0) / 2000
    print(f"weight 90/10 observed: b1 {share:.1f}% b2 {100 - share:.1f}% of 2000 connections")
    assert 85 <= share <= 95, result


def test_removed_backend_gets_no_connections(lb: SocketLB, clients: Clients) -> None:
    lb.apply(plan(service(VIP4, 80, [("b1", 1), ("b2", 1), ("b3", 1)])))
    before = clients.run({"op": "tcp_count", "host": VIP4, "port": 80, "n": 60})
    assert set(before["counts"]) == {"b1", "b2", "b3"}

    report = lb.apply(plan(service(VIP4, 80, [("b1", 1), ("b2", 1)])))
    assert report.backends_removed == (f"{VIP4}:80/TCP -> {V4['b3']}:{PORT}",)

    after = clients.run({"op": "tcp_count", "host": VIP4, "port": 80, "n": 60})
    assert after["errors"] == {}
    assert set(after["counts"]) == {"b1", "b2"}


def test_terminating_backend_keeps_its_connection_but_gets_no_new_ones(lb: SocketLB, clients: Clients) -> None:
    lb.apply(plan(service(VIP4, 80, [("b1", 1), ("b2", 1)])))
    held = clients.popen("hold", VIP4, "80")
    victim = clients.read_json(held)["backend"]
    other = "b2" if victim == "b1" else "b1"

    lb.apply(plan(service(VIP4, 80, [(victim, 1, BackendState.TERMINATING), (other, 1)])))

    fresh = clients.run({"op": "tcp_count", "host": VIP4, "port": 80, "n": 60})
    assert fresh["counts"] == {other: 60}, fresh
    assert held.stdin is not None
    held.stdin.write("still-there\n")
    held.stdin.flush()
    assert clients.read_json(held) == {"echo": "still-there"}


def test_udp_socket_stays_on_its_backend_while_it_terminates_and_moves_when_it_is_removed(
    lb: SocketLB, clients: Clients
) -> None:
    lb.apply(plan(service(VIP4, 53, [("b1", 1), ("b2", 1)], "UDP")))
    sock = clients.popen("udp-hold", VIP4, "53")
    assert clients.read_json(sock) == {"ready": True}

    def send() -> dict[str, object]:
        assert sock.stdin is not None
        sock.stdin.write("hello\n")
        sock.stdin.flush()
        return clients.read_json(sock)

    first = send()
    victim = str(first["backend"])
    other = "b2" if victim == "b1" else "b1"
    assert first["from"] == [VIP4, 53]

    lb.apply(plan(service(VIP4, 53, [(victim, 1, BackendState.TERMINATING), (other, 1)], "UDP")))
    assert send() == {"backend": victim, "from": [VIP4, 53]}, "an existing flow keeps its terminating backend"
    fresh = clients.run({"op": "udp_count", "host": VIP4, "port": 53, "n": 20})
    assert fresh["counts"] == {other: 20}

    lb.apply(plan(service(VIP4, 53, [(other, 1)], "UDP")))
    assert send() == {"backend": other, "from": [VIP4, 53]}, "a removed backend's flow moves on"


def test_a_connected_socket_keeps_its_translation_in_its_own_slot_and_udp_sends_in_the_lru(
    lb: SocketLB, clients: Clients
) -> None:
    # The slot is a plain array write per connect (no LRU insert and eviction): what makes a
    # translated connect cost no more than a direct one.
    lb.apply(plan(service(VIP4, 80, [("b1", 1)]), service(VIP4, 53, [("b1", 1)], "UDP", name="dns")))
    assert clients.run({"op": "tcp", "host": VIP4, "port": 80})["peername"] == [VIP4, 80]
    slots, lru = lb.pins.open_map(rev_sock.SPEC), lb.pins.open_map(rev_nat.SPEC)
    try:
        used = [(slot.value, v) for slot, v in slots.items() if v.cookie]
        assert len(used) == 1, "one slot for the one translated connect"
        (slot, value), = used
        assert slot == value.cookie % rev_sock.SLOTS
        assert (get_addr(value.vip)[0], socket.ntohs(value.vip_port)) == (VIP4, 80)
        assert (get_addr(value.real)[0], socket.ntohs(value.real_port)) == (V4["b1"], PORT)
        assert list(lru.items()) == [], "nothing in the LRU map for a connected socket"
        # An unconnected UDP socket may send to several services: its entries go to the LRU map.
        replies = clients.run({"op": "udp", "host": VIP4, "port": 53, "n": 2})["replies"]
        assert {tuple(r["from"]) for r in replies} == {(VIP4, 53)}
        assert len(list(lru.items())) == 1
    finally:
        slots.close()
        lru.close()


def test_dual_stack_socket_reaches_an_ipv4_service_through_a_v4_mapped_address(
    lb: SocketLB, clients: Clients
) -> None:
    lb.apply(plan(service(VIP4, 80, [("b1", 1)])))
    r = clients.run({"op": "tcp", "host": f"::ffff:{VIP4}", "port": 80})
    assert r["backend"] == "b1"
    assert r["peername"] == [f"::ffff:{VIP4}", 80]


def test_apply_diff_moves_only_the_change(lb: SocketLB, clients: Clients) -> None:
    old = plan(service(VIP4, 80, [("b1", 1)]), service(VIP4, 81, [("b2", 1)], name="other"))
    lb.apply(old)
    new = plan(service(VIP4, 80, [("b1", 1), ("b3", 1)]), service(VIP6, 81, [("b2", 1)], name="other6"))

    report = lb.apply_diff(diff_bpf(old, new))
    assert report.services_added == (f"[{VIP6}]:81/TCP",)
    assert report.services_updated == (f"{VIP4}:80/TCP",)
    assert report.services_removed == (f"{VIP4}:81/TCP",)
    assert not lb.apply(new).changed, "apply_diff must leave the maps exactly as a full apply would"
    assert set(clients.run({"op": "tcp_count", "host": VIP4, "port": 80, "n": 30})["counts"]) == {"b1", "b3"}


@pytest.mark.parametrize(("vip", "addrs"), FAMILIES)
def test_service_without_backends_refuses_at_once(
    lb: SocketLB, clients: Clients, vip: str, addrs: dict[str, str]
) -> None:
    lb.apply(plan(
        service(vip, 80, []),
        service(vip, 81, [("b1", 1, BackendState.TERMINATING)], name="draining"),
        service(vip, 53, [], "UDP", name="dns"),
    ))

    for port in (80, 81):
        r = clients.run({"op": "tcp", "host": vip, "port": port, "timeout": 5})
        assert r["error"] == "ECONNREFUSED", r
        assert r["elapsed"] < 0.5
    udp = clients.run({"op": "udp", "host": vip, "port": 53, "n": 1})
    assert udp["replies"] == [{"error": "ECONNREFUSED"}]


def test_traffic_to_other_addresses_is_untouched(lb: SocketLB, clients: Clients) -> None:
    lb.apply(plan(service(VIP4, 80, [("b1", 1)]), service(VIP6, 80, [("b1", 1)])))

    # A backend's own address is not a service: it keeps answering itself.
    direct = clients.run({"op": "tcp_count", "host": V4["b2"], "port": PORT, "n": 20})
    assert direct == {"counts": {"b2": 20}, "errors": {}}
    one = clients.run({"op": "tcp", "host": V6["b3"], "port": PORT})
    assert one["backend"] == "b3" and one["peername"] == [V6["b3"], PORT]

    # The VIP on another port or protocol is not translated: it has no route at all.
    assert clients.run({"op": "tcp", "host": VIP4, "port": 81})["error"] == "ENETUNREACH"
    assert clients.run({"op": "tcp", "host": VIP6, "port": 81})["error"] == "ENETUNREACH"
    udp = clients.run({"op": "udp", "host": VIP4, "port": 80, "n": 1})
    assert udp["replies"] == [{"error": "ENETUNREACH"}]


def test_apply_writes_only_the_difference_with_stable_ids(lb: SocketLB, clients: Clients) -> None:
    first = plan(service(VIP4, 80, [("b1", 1), ("b2", 1)]), service(VIP6, 53, [("b1", 1)], "UDP"))
    report = lb.apply(first)
    assert report.services_added == (f"{VIP4}:80/TCP", f"[{VIP6}]:53/UDP")
    ids = {(s.key, b.address): b.id for s in lb.state().services for b in s.backends}

    again = lb.apply(first)
    assert not again.changed, again

    report = lb.apply(plan(service(VIP4, 80, [("b1", 3), ("b2", 1), ("b3", 1)]), service(VIP6, 53, [("b1", 1)], "UDP")))
    assert report.services_updated == (f"{VIP4}:80/TCP",)
    assert report.backends_added == (f"{VIP4}:80/TCP -> {V4['b3']}:{PORT}",)
    assert report.services_added == report.services_removed == ()
    state = lb.state()
    svc = state.service(VIP4, 80)
    assert svc is not None and svc.slot_count == 5
    assert {b.address: b.slots for b in svc.backends} == {V4["b1"]: 3, V4["b2"]: 1, V4["b3"]: 1}
    for s in state.services:
        for b in s.backends:
            if (s.key, b.address) in ids:
                assert b.id == ids[(s.key, b.address)], "backend ids must not move"

    gone = lb.apply(plan())
    assert gone.services_removed == (f"{VIP4}:80/TCP", f"[{VIP6}]:53/UDP")
    assert lb.state().services == ()
    assert clients.run({"op": "tcp", "host": VIP4, "port": 80})["error"] == "ENETUNREACH"


def test_proxy_flag_sends_connections_to_the_node_proxy(
    lb: SocketLB, clients: Clients, cgroup: Path, pin_root: Path
) -> None:
    # No proxy address configured: asking for the hand-off is an error naming the service.
    with pytest.raises(DatapathError, match="proxy_port is set but no IPv4 node proxy"):
        lb.apply(plan(service(VIP4, 80, [("b1", 1)], proxy_port=PORT)))
    lb.close()

    # Re-open with a proxy address (b3 plays the node proxy): the programs are swapped under
    # the pinned links with the new load-time setting.
    with SocketLB(lb.node, cgroup, pin_root, settings=LbSettings(proxy_ipv4=V4["b3"])) as proxied:
        assert proxied.settings.proxy_ipv4 == V4["b3"]
        proxied.apply(plan(service(VIP4, 80, [("b1", 1)], proxy_port=PORT)))
        r = clients.run({"op": "tcp_count", "host": VIP4, "port": 80, "n": 10})
        assert r == {"counts": {"b3": 10}, "errors": {}}
        one = clients.run({"op": "tcp", "host": VIP4, "port": 80})
        assert one["peername"] == [VIP4, 80]
        svc = proxied.state().service(VIP4, 80)
        assert svc is not None and svc.proxy_port == PORT
    lb.open()


def test_invalid_plans_are_refused_before_anything_is_written(lb: SocketLB) -> None:
    lb.apply(plan(service(VIP4, 80, [("b1", 1)])))
    before = lb.state()

    with pytest.raises(DatapathError, match=r"IPv6 backend cannot serve an IPv4 VIP"):
        lb.apply(plan(service(VIP4, 80, [("b1", 1)]), service(VIP4, 90, [(V6["b1"], 1)], name="mixed")))
    with pytest.raises(DatapathError, match=r"protocol 'SCTP'"):
        lb.apply(plan(service(VIP4, 80, [("b1", 1)], "SCTP")))
    with pytest.raises(DatapathError, match=r"listed twice"):
        lb.apply(plan(service(VIP4, 80, [("b1", 1), ("b1", 2)])))

    assert lb.state() == before
