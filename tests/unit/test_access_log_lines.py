"""The node proxy's access-log file: its lines decoded into Flows, followed across rotations, journaled raw.

The lines here are written as Envoy writes them with meshcore's formats (``-`` for an
empty value); tests/proxy checks against a real Envoy that its lines give the same flows
as its gRPC access log.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshcore.agent import FlowJournal, FlowJournalReader
from meshcore.agent._flowstore import FlowRing, FlowStore
from meshcore.model import WorkloadRef
from meshcore.observe import Enforcer, Layer, Peer, Verdict
from meshcore.proxy import HTTP_FORMAT, TCP_FORMAT, AccessLogFollower, FlowHub, NamesTable, decode_lines
from meshcore.proxy._access_file import CHUNK_BYTES
from meshcore.proxy._als import NO_CHAIN_DETAILS

NODE = "node-1"
NAMES = {"listeners": {"15001": "shop/web:80", "15002": "shop/db:5432"},
         "endpoints": {"10.244.0.9:8080": "shop/web-1", "[fd00::9]:8080": "shop/web-1"},
         "policies": {"shop/no-admin": "istio.yaml:7 AuthorizationPolicy shop/no-admin"},
         "peers": {"10.244.0.5": ["shop/client", 1001, "shop"], "fd00::5": ["", 1001, "shop"]}}


def names() -> NamesTable:
    table = NamesTable()
    table.update(NODE, NAMES)
    return table


def http(path: str = "/api?x=1", *, client: str = "10.244.0.5:40000", upstream: str = "10.244.0.9:8080",
         status: str = "503", flags: str = "-", tx_us: str = "7250", hint: str = "-",
         details: str = "upstream_reset_before_response_started", start: str = "1790000000.250000",
         route: str = "shop/web:80/0", cluster: str = "shop/web:80", forwarded: str = "-", uri_san: str = "-",
         tunnel_client: str = "-", authority: str = "web") -> str:
    """One HTTP line as Envoy writes it with HTTP_FORMAT."""
    fields = ["H", start, client, "15001", upstream, "HTTP/1.1", status, flags, tx_us, "12", "3", "91",
              route, cluster, hint, details, forwarded, uri_san, "-", tunnel_client, "POST", authority, path]
    assert len(fields) == HTTP_FORMAT.count("\t") + 1
    return "\t".join(fields) + "\n"


def tcp(*, flags: str = "-", cluster: str = "shop/db:5432", details: str = "-", upstream: str = "10.244.0.9:8080",
        local: str = "10.0.1.1:15002", uri_san: str = "-", subject: str = "-", refused: str = "-") -> str:
    """One TCP line as Envoy writes it with TCP_FORMAT."""
    fields = ["T", "1790000001.000000", "10.244.0.5:40001", "15002", upstream, flags, "1500", "120", "4000",
              cluster, details, local, uri_san, subject, "-", refused]
    assert len(fields) == TCP_FORMAT.count("\t") + 1
    return "\t".join(fields) + "\n"


@pytest.mark.parametrize("resolved", [False, True])
@pytest.mark.parametrize("ipv6", [False, True])
def test_an_http_line_becomes_a_flow_with_every_field(resolved: bool, ipv6: bool) -> None:
    line = http(client="[fd00::5]:40000", upstream="[fd00::9]:8080") if ipv6 else http()
    (flow,) = decode_lines(line.encode(), NODE, names() if resolved else None)
    assert (flow.node, flow.layer, flow.enforcer, flow.protocol, flow.direction, flow.verdict) == (
        NODE, Layer.L7, Enforcer.PROXY, "HTTP/1.1", None, Verdict.FORWARDED)
    assert flow.time.timestamp() == 1_790_000_000.25
    l7 = flow.l7
    assert l7 is not None
    assert (l7.method, l7.path, l7.authority, l7.status, l7.latency_ms) == ("POST", "/api?x=1", "web", 503, 7.25)
    assert (l7.route, l7.cluster, l7.details, l7.flags) == (
        "shop/web:80/0", "shop/web:80", "upstream_reset_before_response_started", ())
    assert (l7.bytes_received, l7.bytes_sent) == (3, 91)
    client, server = ("fd00::5", "fd00::9") if ipv6 else ("10.244.0.5", "10.244.0.9")
    if not resolved:
        assert flow.source == Peer(client, 40000) and flow.destination == Peer(server, 8080) and l7.listener == ""
        return
    assert l7.listener == "shop/web:80"
    assert flow.destination == Peer(server, 8080, WorkloadRef("shop", "web-1"), "shop")
    assert flow.source.identity == 1001 and flow.source.namespace == "shop"
    assert flow.source.workload == (None if ipv6 else WorkloadRef("shop", "client"))


def test_flags_audit_denials_and_missing_values() -> None:
    flagged, audited, denied, unanswered = decode_lines("".join([
        http(flags="UF,URX"),
        http(hint="true", details="via_upstream", status="200"),
        http(status="403", upstream="-", tx_us="-", details="rbac_access_denied_matched_policy[shop/no-admin[0]]"),
        http(status="0", upstream="-", tx_us="-", details="-", flags="DC"),
    ]).encode(), NODE, names())
    assert flagged.l7 is not None and flagged.l7.flags == ("UF", "URX")
    assert audited.verdict is Verdict.AUDIT
    assert (denied.verdict, denied.reason, denied.policy, denied.policy_source) == (
        Verdict.DROPPED, "policy-denied", "shop/no-admin", "istio.yaml:7 AuthorizationPolicy shop/no-admin")
    assert denied.destination == Peer() and denied.destination_name == "shop/web:80"
    assert denied.l7 is not None and denied.l7.latency_ms == 12.0, "the duration when nothing was sent back"
    assert denied.l7.cluster == "", "no upstream was picked: no cluster, as in the gRPC log"
    assert unanswered.l7 is not None and (unanswered.l7.status, unanswered.l7.details) == (0, "")


def test_the_path_is_kept_whole_and_damaged_lines_are_skipped() -> None:
    raw = "".join([http("/odd\tpath with\ttabs"), "garbage\n", "H\t1790000000.0\ttoo-few\n", "\n",
                   http("/fine")]).encode()
    assert [f.l7.path for f in decode_lines(raw, NODE) if f.l7] == ["/odd\tpath with\ttabs", "/fine"]


def test_a_tcp_line_and_a_client_no_chain_admitted() -> None:
    forwarded, refused, denied = decode_lines("".join([
        tcp(), tcp(flags="NR", cluster="-", upstream="-"),
        tcp(upstream="-", details="rbac_access_denied_matched_policy[shop/no-admin[0]]"),
    ]).encode(), NODE, names())
    assert (forwarded.protocol, forwarded.verdict, forwarded.destination.workload) == (
        "TCP", Verdict.FORWARDED, WorkloadRef("shop", "web-1"))
    assert forwarded.l7 is not None and (forwarded.l7.listener, forwarded.l7.cluster, forwarded.l7.latency_ms) == (
        "shop/db:5432", "shop/db:5432", 1500.0)
    assert (forwarded.l7.bytes_received, forwarded.l7.bytes_sent) == (120, 4000)
    assert refused.l7 is not None and (refused.l7.details, refused.l7.flags) == (NO_CHAIN_DETAILS, ("NR",))
    assert refused.verdict is Verdict.DROPPED and refused.reason == "policy-denied" and refused.policy == ""
    assert (denied.verdict, denied.policy) == (Verdict.DROPPED, "shop/no-admin")


def test_a_connection_the_tunnel_refused_on_the_clients_egress_policy_names_the_destination_dialled() -> None:
    [refused] = decode_lines(tcp(upstream="-", cluster="-", local="10.244.0.9:8080", refused="10.244.0.9:8080",
                                 details="rbac_access_denied_matched_policy[shop/only-web]").encode(), NODE, names())
    assert (refused.verdict, refused.reason, refused.policy) == (Verdict.DROPPED, "policy-denied", "shop/only-web")
    assert (refused.destination.address, refused.destination.port, refused.destination.workload) == (
        "10.244.0.9", 8080, WorkloadRef("shop", "web-1"))


def test_line_consumers_get_bytes_and_subscribers_get_flows() -> None:
    hub = FlowHub()
    got: list[tuple[str, bytes]] = []
    hub.on_flow_lines(lambda node, raw: got.append((node, raw)))
    hub.publish_lines(http("/1").encode(), NODE, names())
    assert got == [(NODE, http("/1").encode())] and (hub.batches, hub.received) == (1, 0)
    with hub.subscribe() as sub:
        hub.publish_lines((http("/2") + http("/3")).encode(), NODE, names())
        assert [f.l7.path for f in sub.drain() if f.l7] == ["/2", "/3"]


def test_the_journal_and_the_ring_keep_lines_raw_and_read_them_with_the_names_of_their_time(tmp_path: Path) -> None:
    path = tmp_path / "flows.journal"
    store = FlowStore(FlowRing(), FlowJournal(path))
    store.names_changed(NODE, NAMES)
    store.add_lines(NODE, http("/a").encode())
    store.names_changed(NODE, {"endpoints": {"10.244.0.9:8080": "shop/web-2"}})
    store.add_lines(NODE, http("/b", start="1790000001.000000").encode())
    store.close()
    expected = [("/a", "shop/web-1"), ("/b", "shop/web-2")]
    read = FlowJournalReader(path).read()
    assert [(f.l7.path, str(f.destination.workload)) for f in read if f.l7] == expected
    ring, _, _ = store.ring.read()
    assert ring == read, "memory and journal give the same flows"
    assert [f.l7.path for f in store.uncounted_requests() if f.l7] == ["/a", "/b"]
    assert store.uncounted_requests() == []


class FakeEnvoy:
    """Appends lines to the access log the way Envoy's file logger does, and reopens it on request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reopens = 0
        self.honour = True
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def write(self, data: str) -> None:
        os.write(self.fd, data.encode())

    def reopen(self) -> bool:
        self.reopens += 1
        if not self.honour:
            return False
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        return True


def test_the_follower_hands_on_whole_lines_once_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    got: list[bytes] = []
    follower = AccessLogFollower(path, got.append, lambda: False, max_bytes=1024)
    follower.poll()
    assert got == [], "no file yet"
    envoy = FakeEnvoy(path)
    follower = AccessLogFollower(path, got.append, envoy.reopen, max_bytes=1024)
    envoy.write(http("/1") + http("/2")[:20])
    follower.poll()
    assert b"".join(got) == http("/1").encode(), "a line being written is held back"
    envoy.write(http("/2")[20:])
    follower.poll()
    sent = [f"/{i}" for i in range(3, 40)]
    for p in sent:
        envoy.write(http(p))
        follower.poll()
    follower.stop()
    paths = [f.l7.path for f in decode_lines(b"".join(got), NODE) if f.l7]
    assert paths == ["/1", "/2", *sent], "every line exactly once, in order"
    assert envoy.reopens >= 4 and path.stat().st_size <= 1024 + len(http("/40"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["access.log"], "moved-aside files are deleted"
    assert follower.bytes == len(b"".join(got))


def test_an_envoy_that_does_not_reopen_yet_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    envoy = FakeEnvoy(path)
    envoy.honour = False  # e.g. restarting: it keeps writing to the moved-aside file
    got: list[bytes] = []
    follower = AccessLogFollower(path, got.append, envoy.reopen, max_bytes=256, reopen_retry_s=0)
    envoy.write(http("/1") + http("/2") + http("/3"))
    follower.poll()
    assert (tmp_path / "access.log.old").exists() and not path.exists()
    envoy.write(http("/4"))
    follower.poll()
    assert envoy.reopens == 2, "asked again"
    envoy.honour = True
    envoy.reopen()  # it finally opened a new file
    envoy.write(http("/5"))
    follower.poll()
    follower.poll()
    assert [f.l7.path for f in decode_lines(b"".join(got), NODE) if f.l7] == ["/1", "/2", "/3", "/4", "/5"]
    assert not (tmp_path / "access.log.old").exists()
    follower.stop()


def test_a_file_removed_by_someone_else_is_followed_to_its_replacement(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    envoy = FakeEnvoy(path)
    got: list[bytes] = []
    follower = AccessLogFollower(path, got.append, envoy.reopen)
    envoy.write(http("/1"))
    follower.poll()
    path.unlink()
    envoy.write(http("/2"))  # still into the removed file
    follower.poll()
    envoy.write(http("/3"))
    follower.poll()
    follower.stop()
    assert [f.l7.path for f in decode_lines(b"".join(got), NODE) if f.l7] == ["/1", "/2", "/3"]
    assert envoy.reopens == 1 and path.exists()


def test_a_large_backlog_is_handed_on_in_bounded_chunks_of_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    envoy = FakeEnvoy(path)
    lines = [http(f"/{i}") for i in range(4000)] + [http("/" + "x" * (CHUNK_BYTES + 10))]  # ~600 KiB and a huge line
    envoy.write("".join(lines))
    got: list[bytes] = []
    follower = AccessLogFollower(path, got.append, envoy.reopen, max_bytes=64 << 20)
    follower.poll()
    follower.stop()
    assert b"".join(got) == "".join(lines).encode()
    assert len(got) >= 4 and all(chunk.endswith(b"\n") for chunk in got)
    assert all(len(chunk) <= CHUNK_BYTES for chunk in got[:-1]) and len(got[-1]) > CHUNK_BYTES


def test_the_metrics_backlog_is_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    from meshcore.agent import _flowstore

    monkeypatch.setattr(_flowstore, "_UNCOUNTED_BYTES", 3 * len(http("/0")))
    store = FlowStore(FlowRing())
    for i in range(10):
        store.add_lines(NODE, http(f"/{i}").encode())
    assert [f.l7.path for f in store.uncounted_requests() if f.l7] == ["/7", "/8", "/9"], "the oldest went first"


WEB_ID = "spiffe://cluster.local/ns/shop/sa/web"
CLIENT_ID = "spiffe://cluster.local/ns/shop/sa/client"


def test_a_request_through_a_tunnel_names_the_pod_and_the_identity_it_had_to_present() -> None:
    through = http(upstream=f"envoy://tunnel_internal/10.244.0.9:8080 {WEB_ID}", status="200", details="via_upstream",
                   tunnel_client="10.244.0.5")
    # The same, for a client the tunnels do not act for: clear text, nothing authenticated.
    outsider = http(upstream=f"envoy://tunnel_internal/10.244.0.9:8080 {WEB_ID}", status="200",
                    details="via_upstream")
    # The proxy answered itself: no answer came through the tunnel.
    reset = http(upstream=f"envoy://tunnel_internal/10.244.0.9:8080 {WEB_ID}", tunnel_client="10.244.0.5")
    flow, clear, unanswered = decode_lines((through + outsider + reset).encode(), NODE, names())
    assert flow.destination == Peer("10.244.0.9", 8080, WorkloadRef("shop", "web-1"), "shop")
    assert (flow.mtls, flow.peer_principal) == (True, WEB_ID)
    assert clear.destination == flow.destination and (clear.mtls, clear.peer_principal) == (False, "")
    assert (unanswered.mtls, unanswered.peer_principal) == (False, "")


def test_a_tunnels_server_side_names_the_forwarded_client_and_its_verified_certificate() -> None:
    line = http(client="10.0.2.1:50000", forwarded="10.244.0.5:40000", route="tunnel_inbound/shop/web-1",
                cluster="tunnel_inbound/shop/web-1", uri_san=CLIENT_ID, status="200", details="via_upstream")
    refused = http(client="10.0.2.1:50000", forwarded="10.244.0.5:40000", route="tunnel_inbound/shop/web-1",
                   upstream="-", uri_san=CLIENT_ID, status="403", authority="10.244.0.9:8080",
                   details="rbac_access_denied_matched_policy[none]")
    (flow, denied) = decode_lines((line + refused).encode(), NODE, names())
    assert flow.source.workload == WorkloadRef("shop", "client")
    assert (flow.mtls, flow.peer_principal) == (True, CLIENT_ID)
    # Refused before delivery: the destination is the one the tunnel asked for.
    assert denied.destination == Peer("10.244.0.9", 8080, WorkloadRef("shop", "web-1"), "shop")
    assert denied.verdict == Verdict.DROPPED


def test_a_tcp_connection_into_a_tunnel_goes_to_the_address_dialled_and_names_the_servers_identity() -> None:
    line = tcp(cluster=f"tunnel|{CLIENT_ID}|{WEB_ID}|node-2", upstream="10.0.2.1:15008", local="10.244.0.9:8080")
    refused = tcp(cluster=f"tunnel|{CLIENT_ID}|{WEB_ID}|node-2", upstream="10.0.2.1:15008", local="10.244.0.9:8080",
                  flags="UF")
    (flow, failed) = decode_lines((line + refused).encode(), NODE, names())
    assert flow.destination == Peer("10.244.0.9", 8080, WorkloadRef("shop", "web-1"), "shop")
    assert (flow.mtls, flow.peer_principal) == (True, WEB_ID)
    assert flow.l7 is not None and flow.l7.listener == ""
    assert (failed.mtls, failed.peer_principal) == (False, "")
    # A plain connection: nothing authenticated; a verified client certificate names its URI SAN.
    plain, verified = decode_lines((tcp() + tcp(uri_san=CLIENT_ID, subject="O=x")).encode(), NODE, names())
    assert (plain.mtls, verified.mtls, verified.peer_principal) == (False, True, CLIENT_ID)
