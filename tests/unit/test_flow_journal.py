"""The node's flow journal: both layers in one bounded, rotating file, read back as Flows.

Access-log batches are stored undecoded and resolved, when read, with the names in force
when they arrived; the kernel's verdicts are stored decoded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.service.accesslog.v3 import als_pb2

from meshcore.agent import FlowJournal, FlowJournalReader, JournalLimits, parse_size
from meshcore.model import Direction, WorkloadRef
from meshcore.observe import Enforcer, Flow, Layer, Peer, Verdict
from meshcore.proxy import FlowHub, NamesTable
from meshcore.proxy._als import AlsServicer

NODE = "node-1"
START = 1_790_000_000
NAMES = {"listeners": {"15001": "shop/web:80"}, "endpoints": {"10.244.0.9:8080": "shop/web-1"},
         "policies": {"shop/deny-intruder": "istio.yaml:12 AuthorizationPolicy shop/deny-intruder"},
         "peers": {"10.244.0.5": ["shop/client", 1001, "shop"], "10.244.0.9": ["shop/web-1", 1002, "shop"]}}


def _addr(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def batch(*paths: str, node: str | None = None, status: int = 200, upstream: str = "10.244.0.9",
          at: int = START, details: str = "via_upstream", padding: int = 0) -> bytes:
    """A serialized StreamAccessLogsMessage with one GET per path (``node``: the stream's first message)."""
    msg = als_pb2.StreamAccessLogsMessage()
    if node is not None:
        msg.identifier.node.id = node
        msg.identifier.log_name = "meshcore"
    for i, path in enumerate(paths):
        e = msg.http_logs.log_entry.add()
        c = e.common_properties
        c.start_time.FromSeconds(at + i)
        c.duration.FromMilliseconds(3)
        c.downstream_remote_address.CopyFrom(_addr("10.244.0.5", 40000 + i))
        c.downstream_local_address.CopyFrom(_addr("10.244.0.1", 15001))
        if upstream:
            c.upstream_remote_address.CopyFrom(_addr(upstream, 8080))
        e.request.request_method = base_pb2.GET
        e.request.path = path + "x" * padding
        e.response.response_code.value = status
        e.response.response_code_details = details
    return bytes(msg.SerializeToString())


def verdict(second: float, port: int = 8080) -> Flow:
    """A kernel verdict at ``START + second``."""
    return Flow(datetime.fromtimestamp(START + second, UTC), NODE, Layer.L4, Verdict.DROPPED, Enforcer.KERNEL,
                Peer("10.244.1.7", 5000, None, "other", 1003), Peer("10.244.0.9", port, WorkloadRef("shop", "web-1"),
                                                                   "shop", 1002),
                "TCP", Direction.INGRESS, "default-deny", "shop/web (no rule allows it)", "policy.yaml:3")


def journal(path: Path, limits: JournalLimits | None = None) -> FlowJournal:
    j = FlowJournal(path, limits)
    j.names_changed(NODE, NAMES)
    return j


def test_both_layers_read_back_as_flows_in_time_order(tmp_path: Path) -> None:
    j = journal(tmp_path / "flows.journal")
    j.add_batch(NODE, batch("/a", "/b"))  # at START and START + 1
    j.add([verdict(0.5)])
    j.add_batch(NODE, batch("/denied", upstream="", status=403, at=START + 2,
                            details="rbac_access_denied_matched_policy[shop/deny-intruder[0]]"))
    j.close()
    got = FlowJournalReader(tmp_path / "flows.journal").read()
    assert [(f.layer, f.l7.path if f.l7 else None) for f in got] == [
        (Layer.L7, "/a"), (Layer.L4, None), (Layer.L7, "/b"), (Layer.L7, "/denied")]
    assert got[1] == verdict(0.5), "kernel verdicts come back exactly as written"
    a = got[0]
    assert (a.node, a.verdict, a.enforcer, a.protocol, a.reason, a.policy) == (
        NODE, Verdict.FORWARDED, Enforcer.PROXY, "HTTP", "", "")
    assert a.source == Peer("10.244.0.5", 40000, WorkloadRef("shop", "client"), "shop", 1001)
    assert a.destination == Peer("10.244.0.9", 8080, WorkloadRef("shop", "web-1"), "shop", 1002)
    assert a.l7 is not None and (a.l7.method, a.l7.status, a.l7.listener, a.l7.latency_ms) == (
        "GET", 200, "shop/web:80", 3.0)
    denied = got[3]
    assert (denied.verdict, denied.reason, denied.policy, denied.policy_source) == (
        Verdict.DROPPED, "policy-denied", "shop/deny-intruder", "istio.yaml:12 AuthorizationPolicy shop/deny-intruder")
    assert denied.destination == Peer() and denied.destination_name == "shop/web:80"


def test_batches_resolve_with_the_names_of_their_time(tmp_path: Path) -> None:
    j = journal(tmp_path / "flows.journal")
    j.add_batch(NODE, batch("/a"))
    # The endpoint changed hands; only the table given is replaced.
    j.names_changed(NODE, {"endpoints": {"10.244.0.9:8080": "shop/web-2"}})
    j.add_batch(NODE, batch("/b", at=START + 1))
    got = FlowJournalReader(tmp_path / "flows.journal").read()
    assert [str(f.destination.workload) for f in got] == ["shop/web-1", "shop/web-2"]
    assert [f.l7.listener for f in got if f.l7] == ["shop/web:80", "shop/web:80"]
    assert got[1].source.identity == 1001, "the peers table stayed"


def test_rotation_keeps_the_journal_within_its_limits_and_each_file_readable(tmp_path: Path) -> None:
    path = tmp_path / "flows.journal"
    limits = JournalLimits(max_bytes=64 * 1024, keep=2)
    j = journal(path, limits)
    for n in range(20):  # batches of ~20 KiB
        j.add_batch(NODE, batch(*(f"/{n}-{i}" for i in range(50)), at=START + 100 * n, padding=300))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["flows.journal", "flows.journal.1", "flows.journal.2"]
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= limits.total_bytes
    assert all(p.stat().st_size <= limits.max_bytes for p in tmp_path.iterdir())
    got = FlowJournalReader(path).read()
    # The oldest batches went first; what is left resolves in every file (each starts with the names).
    firsts = sorted({int(f.l7.path.split("-")[0][1:]) for f in got if f.l7})
    assert firsts == list(range(20 - len(firsts), 20)) and len(firsts) >= 6
    assert len(got) == 50 * len(firsts) and all(f.destination.workload == WorkloadRef("shop", "web-1") for f in got)


def test_no_rotated_file_kept_and_leftovers_of_a_larger_keep_removed(tmp_path: Path) -> None:
    path = tmp_path / "flows.journal"
    for index in (1, 2, 5):
        path.with_name(f"flows.journal.{index}").write_bytes(b"old")
    j = journal(path, JournalLimits(max_bytes=64 * 1024, keep=0))
    for n in range(10):
        j.add_batch(NODE, batch(*(f"/{n}-{i}" for i in range(50)), at=START + 100 * n, padding=300))
    assert [p.name for p in tmp_path.iterdir()] == ["flows.journal"]
    assert path.stat().st_size <= 64 * 1024


def test_limits_and_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="max_bytes 1000: must be at least 65536"):
        JournalLimits(max_bytes=1000)
    with pytest.raises(ValueError, match="keep -1: must be at least 0"):
        JournalLimits(keep=-1)
    assert JournalLimits().total_bytes == 32 * 1024 * 1024
    assert [parse_size(t) for t in ("4MiB", "512k", "1000000", "1 GB")] == [4 << 20, 512 << 10, 1_000_000, 1 << 30]
    with pytest.raises(ValueError, match="'4 parsecs'"):
        parse_size("4 parsecs")


def test_a_live_reader_follows_appends_rotations_and_half_written_records(tmp_path: Path) -> None:
    path = tmp_path / "flows.journal"
    j = journal(path, JournalLimits(max_bytes=64 * 1024, keep=3))
    j.add_batch(NODE, batch("/before"))
    live = FlowJournalReader(path)
    assert live.poll() == []  # a live view starts now
    whole = FlowJournalReader(path, from_start=True)
    assert [f.l7.path for f in whole.poll() if f.l7] == ["/before"]
    j.add_batch(NODE, batch("/x", "/y"))
    j.add([verdict(5)])
    assert [(f.layer, f.l7.path if f.l7 else "") for f in live.poll()] == [
        (Layer.L7, "/x"), (Layer.L7, "/y"), (Layer.L4, "")]
    # Several rotations between two polls: nothing that is still kept is missed.
    for n in range(8):
        j.add_batch(NODE, batch(*(f"/r{n}-{i}" for i in range(40)), at=START + 100 * n, padding=300))
    got = live.poll()
    assert len(got) == 8 * 40 and all(f.destination.workload == WorkloadRef("shop", "web-1") for f in got)
    # A record cut in the middle (a writer mid-write) is held back until it is whole.
    before = path.read_bytes()
    j.add_batch(NODE, batch("/z"))
    tail = path.read_bytes()[len(before):]
    with open(path, "r+b") as f:
        f.truncate(len(before) + 7)
    assert live.poll() == []
    with open(path, "ab") as f:
        f.write(tail[7:])
    assert [f.l7.path for f in live.poll() if f.l7] == ["/z"]
    live.close()
    whole.close()


def test_a_reader_started_before_the_journal_exists_reads_it_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "flows.journal"
    live = FlowJournalReader(path)
    assert live.poll() == []
    journal(path).add([verdict(1)])
    assert live.poll() == [verdict(1)]


def test_damaged_records_and_foreign_files_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "flows.journal"
    j = journal(path)
    j.add_batch(NODE, b"not an access log")
    j.add([verdict(1)])
    assert FlowJournalReader(path).read() == [verdict(1)]
    (tmp_path / "flows.journal.1").write_bytes(b"something else entirely")
    assert FlowJournalReader(path).read() == [verdict(1)]


def test_write_errors_are_reported_not_raised(tmp_path: Path) -> None:
    errors: list[OSError] = []
    j = FlowJournal(tmp_path / "missing" / "flows.journal", on_error=errors.append)
    j.add([verdict(1)])
    assert len(errors) == 1 and isinstance(errors[0], FileNotFoundError)


def test_raw_consumers_get_bytes_and_subscribers_get_flows() -> None:
    hub = FlowHub()
    got: list[tuple[str, bytes]] = []
    hub.on_flow_batch(lambda node, raw: got.append((node, raw)))
    table = NamesTable()
    table.update(NODE, NAMES)
    servicer = AlsServicer(hub, table)
    messages = [batch("/1", node=NODE), batch("/2", "/3")]
    assert servicer.stream(iter(messages), None) == b""
    assert got == [(NODE, messages[0]), (NODE, messages[1])]
    assert (hub.batches, hub.received) == (2, 0), "nothing is decoded for raw consumers"
    with hub.subscribe() as sub:
        servicer.stream(iter([batch("/4", "/5", node=NODE)]), None)
        flows = sub.drain()
    assert [f.l7.path for f in flows if f.l7] == ["/4", "/5"]
    assert flows[0].destination.workload == WorkloadRef("shop", "web-1") and flows[0].source.identity == 1001
    assert hub.received == 2


def test_the_names_come_from_the_plan() -> None:
    from meshcore import model as m
    from meshcore.agent._journal import policy_names
    from meshcore.compile import CompileOptions, compile_plan
    from meshcore.proxy import plan_names

    web = m.Workload("web-1", "shop", m.Identity("shop", "web"), addresses=("10.0.0.10",), labels={"app": "web"})
    client = m.Workload("client", "shop", m.Identity("shop", "client"), addresses=("10.0.0.5",),
                        labels={"app": "client"}, node="n2")
    service = m.Service("web", "shop", vips=("10.96.0.1",), ports=(m.ServicePort(80, "HTTP", "http", backends=(
        m.Backend("10.0.0.10", 8080, workload=web.ref),)),))
    deny = m.AuthorizationPolicy("no-admin", "shop", m.WorkloadSelector("shop", {"app": "web"}), "DENY",
                                 [m.PolicyRule(operations=[m.Operation(paths=["/admin"])])],
                                 source=m.Source("AuthorizationPolicy", "shop", "no-admin", "istio.yaml", 7))
    snap = m.Snapshot(namespaces=(m.Namespace("shop"),), workloads=(web, client), services=(service,),
                      policies=(deny,))
    plan = compile_plan(snap, "n1", CompileOptions(proxy_enabled=True, proxy_port_base=15001, proxy_port_range=8))
    [listener] = plan.envoy.listeners
    assert plan_names(plan.envoy) == {
        "listeners": {str(listener.proxy_port): "shop/web:80"},
        "endpoints": {"10.0.0.10:8080": "shop/web-1"},
        "policies": {"shop/no-admin": "istio.yaml:7 AuthorizationPolicy shop/no-admin"},
    }
    peers = policy_names(plan.policy)["peers"]
    ids = {e.workload.name: e.identity for e in plan.policy.endpoints}
    # Workloads of this node and of other nodes alike, by name, identity and namespace.
    assert peers["10.0.0.10"] == ["shop/web-1", ids["web-1"], "shop"]
    assert peers["10.0.0.5"][0] == "shop/client" and peers["10.0.0.5"][1] > 0 and peers["10.0.0.5"][2] == "shop"
    assert [(p.address, str(p.workload)) for p in plan.policy.peers] == [("10.0.0.5", "shop/client")]
