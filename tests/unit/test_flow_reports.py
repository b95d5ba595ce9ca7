"""The kernel's reports as the agent keeps them: raw verdict records and flow sums, decoded only when read.

Records are packed exactly as the kernel lays them out (``struct pol_event``, and the sum
record the agent builds from ``pol_flow_sums``); the ring in memory and the journal on
disk give them back as Flows, summaries carrying their count, both bounded.
"""

from __future__ import annotations

import ctypes
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from meshcore.agent import FlowJournal, FlowJournalReader, FlowLoss, FlowRing, FlowStore, JournalLimits
from meshcore.datapath.maps.pol_events import Event
from meshcore.datapath.maps.pol_flows import FlowSumKey
from meshcore.model import Direction, WorkloadRef
from meshcore.observe import EVENT_RECORD, SUM_RECORD, AgentMetrics, Flow, KernelNames, Verdict, decode_sums

NODE = "node-1"
START_NS = 5_000_000_000
OFFSET_NS = 1_790_000_000 * 10**9
NAMES = KernelNames(
    identities={1001: "shop", 1002: "shop", 1003: "other"},
    addresses={"10.244.0.5": "shop/client", "10.244.0.9": "shop/web-1"},
    interfaces={7: "shop/web-1"},
    origins={3: ("shop/web-from-client rule 0 (ALLOW)", "policy.yaml:4 NetworkPolicy shop/web-from-client")},
    default_deny={"shop/web-1": {"ingress": ("shop/web-from-client (no rule allows it)", "policy.yaml:4")}},
    clock_offset_ns=OFFSET_NS,
)
V4 = b"\x00" * 10 + b"\xff\xff"


def event(second: float, src: str = "10.244.0.5", sport: int = 40000, verdict: int = 1, reason: int = 1,
          index: int = 3, src_id: int = 1001) -> bytes:
    """One ``struct pol_event``: a connection to shop/web-1:8080 judged on web-1's ingress."""
    return EVENT_RECORD.pack(START_NS + int(second * 1e9), V4 + socket.inet_aton(src), V4 + socket.inet_aton("10.244.0.9"),
                             src_id, 1002, index, 7, socket.htons(sport), socket.htons(8080), socket.IPPROTO_TCP,
                             verdict, reason, 1)


def summed(second: float, flows: int, verdict: int = 1, reason: int = 1, index: int = 3) -> bytes:
    """One sum record: ``flows`` connections from identity 1001 to web-1:8080 counted by the kernel."""
    return SUM_RECORD.pack(START_NS + int(second * 1e9), 1001, 1002, index, 7, socket.htons(8080),
                           socket.IPPROTO_TCP, 1, verdict, reason, 0, flows)


def test_the_record_layouts_are_the_kernel_structs() -> None:
    assert EVENT_RECORD.size == ctypes.sizeof(Event)
    assert [name for name, *_ in Event._fields_] == [
        "ts_ns", "saddr", "daddr", "src_identity", "dst_identity", "policy_index", "ifindex", "sport", "dport",
        "proto", "verdict", "reason", "direction"]
    assert (Event.verdict.offset, Event.reason.offset, Event.direction.offset) == (61, 62, 63)
    # The sum record carries struct pol_flow_key's fields after its time, in order.
    assert SUM_RECORD.size == 8 + ctypes.sizeof(FlowSumKey) + 8


def test_a_summary_names_the_local_pod_the_remote_identity_the_port_and_the_policy() -> None:
    (flow,) = decode_sums(summed(2, 250), NAMES, NODE)
    assert (flow.count, flow.summary, flow.verdict, flow.reason, flow.direction, flow.protocol) == (
        250, True, Verdict.FORWARDED, "policy-allowed", Direction.INGRESS, "TCP")
    assert flow.destination.workload == WorkloadRef("shop", "web-1") and flow.destination.port == 8080
    assert (flow.source.identity, flow.source.namespace, flow.source.address, flow.source.workload) == (
        1001, "shop", "", None)
    assert flow.policy == "shop/web-from-client rule 0 (ALLOW)" and "policy.yaml:4" in flow.policy_source
    assert flow.time == datetime.fromtimestamp(1_790_000_007, UTC)
    assert "x250 (summary)" in str(flow)
    assert Flow.from_data(flow.to_data()) == flow, "count and summary survive the JSON form"


def test_the_journal_keeps_raw_records_and_gives_back_flows_with_the_names_of_their_time(tmp_path: Path) -> None:
    path = tmp_path / "flows.journal"
    j = FlowJournal(path)
    j.add_events(NODE, event(0) + event(1, src="10.244.1.7", src_id=1003, verdict=2, reason=4, index=0), NAMES)
    j.add_sums(NODE, summed(2, 40), NAMES)
    later = KernelNames(identities=NAMES.identities, addresses={"10.244.0.9": "shop/web-2"},
                        clock_offset_ns=OFFSET_NS)
    j.add_events(NODE, event(3), later)
    j.add_loss(FlowLoss(1_790_000_010.0, NODE, 12))
    j.close()
    reader = FlowJournalReader(path)
    allowed, dropped, summary, after = reader.read()
    assert allowed.source.workload == WorkloadRef("shop", "client") and allowed.source.port == 40000
    assert allowed.destination.workload == WorkloadRef("shop", "web-1") and allowed.count == 1
    assert (dropped.verdict, dropped.reason, dropped.source.namespace, dropped.policy) == (
        Verdict.DROPPED, "default-deny", "other", "shop/web-from-client (no rule allows it)")
    assert summary.summary and summary.count == 40
    assert after.destination.workload == WorkloadRef("shop", "web-2"), "later records use the later names"
    assert path.stat().st_size < 2048, "records are stored raw, not as JSON"
    poller = FlowJournalReader(path, from_start=True)
    poller.poll()
    assert poller.losses == [FlowLoss(1_790_000_010.0, NODE, 12)]
    assert "12 kernel verdicts were neither reported nor counted" in str(poller.losses[0])


def test_the_ring_holds_at_most_its_bytes_and_a_late_reader_learns_what_it_missed() -> None:
    ring = FlowRing(max_bytes=64 * 100)
    for second in range(1000):
        ring.add("events", NODE, event(second), NAMES, EVENT_RECORD.size)
    assert ring.held_bytes <= 64 * 100
    flows, seen, missed = ring.read()
    assert len(flows) == 100 and flows[-1].time == NAMES.time(START_NS + 999 * 10**9), "the newest are kept"
    ring.add("events", NODE, event(1000), NAMES, EVENT_RECORD.size)
    more, seen2, missed = ring.read(seen)
    assert len(more) == 1 and missed == 0 and seen2 == seen + 1
    for second in range(1001, 1300):
        ring.add("events", NODE, event(second), NAMES, EVENT_RECORD.size)
    behind, _, missed = ring.read(seen2)
    assert len(behind) == 100 and missed == 199


def test_without_the_journal_flows_stay_in_memory_and_nothing_is_written(tmp_path: Path) -> None:
    store = FlowStore(FlowRing())
    store.add_events(NODE, event(0), NAMES)
    store.add_sums(NODE, summed(1, 9), NAMES)
    store.add_loss(FlowLoss(1.0, NODE, 1))
    assert store.path is None and list(tmp_path.iterdir()) == []
    flows, _, _ = store.ring.read()
    assert [f.count for f in flows] == [1, 9]


def test_the_journal_is_bounded_under_a_sustained_stream_of_records(tmp_path: Path) -> None:
    limits = JournalLimits(max_bytes=64 * 1024, keep=1)
    store = FlowStore(FlowRing(256 * 1024), FlowJournal(tmp_path / "flows.journal", limits))
    batch = b"".join(event(i / 1000) for i in range(200))
    for _ in range(200):  # 2.5 MiB of records
        store.add_events(NODE, batch, NAMES)
    files = list(tmp_path.iterdir())
    assert len(files) == 2 and sum(f.stat().st_size for f in files) <= limits.total_bytes
    assert store.ring.held_bytes <= 256 * 1024


def test_metrics_count_raw_records_and_summaries_by_their_count() -> None:
    metrics = AgentMetrics()
    metrics.count_kernel(event(0) + event(1) + event(2, verdict=2, reason=4, index=0))
    for flow in decode_sums(summed(3, 500), NAMES, NODE):
        metrics.count(flow)
    metrics.reports_from(lambda: {"event": 3, "sampled": 500, "ring_full": 0, "lost": 0})
    text = generate_latest(metrics.registry).decode()
    assert 'meshcore_flows_total{direction="ingress",layer="l4",verdict="forwarded"} 502.0' in text
    assert 'meshcore_flows_total{direction="ingress",layer="l4",verdict="dropped"} 1.0' in text
    assert 'meshcore_drops_total{direction="ingress",reason="default-deny"} 1.0' in text
    assert 'meshcore_flow_reports_total{outcome="sampled"} 500.0' in text


def test_the_agents_memory_is_served_to_other_readers_on_its_socket(tmp_path: Path) -> None:
    from meshcore.agent._flowserver import FlowServer, read_served

    ring = FlowRing(max_bytes=64 * 10)
    ring.add("events", NODE, event(0) + event(1), NAMES, 128)
    server = FlowServer(ring, tmp_path / "flows.sock")
    try:
        now = list(read_served(tmp_path / "flows.sock"))
        assert [f.source.port for f in now if isinstance(f, Flow)] == [40000, 40000] and len(now) == 2
        live = read_served(tmp_path / "flows.sock", follow=True)
        assert [next(live), next(live)] == now, "a follower first gets what is there"
        ring.add("sums", NODE, summed(2, 7), NAMES, 40)
        summary = next(live)
        assert isinstance(summary, Flow) and summary.count == 7
        for second in range(3, 40):  # far more than the ring holds, faster than the follower reads
            ring.add("events", NODE, event(second), NAMES, 64)
        gap = next(live)
        assert isinstance(gap, int) and gap > 0, "a reader that fell behind is told how much it missed"
        live.close()
    finally:
        server.close()
    assert not (tmp_path / "flows.sock").exists()
    with pytest.raises(OSError):
        list(read_served(tmp_path / "flows.sock"))
