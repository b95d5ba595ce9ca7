"""The L7 flow journal: raw ALS batches stored undecoded, decoded with the names in force when they arrived."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.service.accesslog.v3 import als_pb2

from meshcore.proxy import FlowHub, FlowJournal, FlowJournalReader, decode_batch
from meshcore.proxy._als import AlsServicer
from meshcore.proxy._journal import NamesTable

NODE = "node-1"


def _addr(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def batch(*paths: str, node: str | None = None, status: int = 200, upstream: str = "10.244.0.9") -> bytes:
    """A serialized StreamAccessLogsMessage with one GET per path (``node``: the stream's first message)."""
    msg = als_pb2.StreamAccessLogsMessage()
    if node is not None:
        msg.identifier.node.id = node
        msg.identifier.log_name = "meshcore"
    for i, path in enumerate(paths):
        e = msg.http_logs.log_entry.add()
        c = e.common_properties
        c.start_time.FromSeconds(1_790_000_000 + i)
        c.duration.FromMilliseconds(3)
        c.downstream_remote_address.CopyFrom(_addr("10.244.0.5", 40000 + i))
        c.downstream_local_address.CopyFrom(_addr("10.244.0.1", 15001))
        c.upstream_remote_address.CopyFrom(_addr(upstream, 8080))
        e.request.request_method = base_pb2.GET
        e.request.path = path
        e.response.response_code.value = status
    return bytes(msg.SerializeToString())


def names(workload: str = "shop/web-1") -> NamesTable:
    table = NamesTable()
    table.set(NODE, {15001: "shop/web:80"}, {"10.244.0.9:8080": workload})
    return table


def test_batches_read_back_as_flows_resolved_with_the_names_of_their_time(tmp_path: Path) -> None:
    table = names()
    journal = FlowJournal(tmp_path / "flows.bin", table)
    journal.write_batch(NODE, batch("/a", "/b"))
    table.set(NODE, {15001: "shop/web:80"}, {"10.244.0.9:8080": "shop/web-2"})  # the endpoint changed hands
    journal.names_changed(NODE)
    journal.write_batch(NODE, batch("/c", status=503))
    journal.close()
    got = list(FlowJournalReader(tmp_path / "flows.bin").read())
    assert [(f["path"], f["method"], f["status"], f["upstreamPod"]) for f in got] == [
        ("/a", "GET", 200, "shop/web-1"), ("/b", "GET", 200, "shop/web-1"), ("/c", "GET", 503, "shop/web-2")]
    assert {f["listener"] for f in got} == {"shop/web:80"} and got[0]["latencyMs"] == 3.0
    assert got[0] == decode_batch(batch("/a", "/b"), NODE, names())[0]


def test_rotation_keeps_one_previous_file_and_the_names(tmp_path: Path) -> None:
    path = tmp_path / "flows.bin"
    one = batch(*(f"/p{i}" for i in range(10)))
    journal = FlowJournal(path, names(), max_bytes=len(one) * 2 + 200)
    for _ in range(5):
        journal.write_batch(NODE, one)
    assert path.with_name("flows.bin.1").exists()
    assert path.stat().st_size <= len(one) * 2 + 200
    got = list(FlowJournalReader(path).read())
    # Two batches per file fit: the oldest one was dropped with the second rotation.
    assert len(got) in (20, 30) and all(f["upstreamPod"] == "shop/web-1" for f in got)


def test_a_live_reader_follows_appends_rotations_and_half_written_records(tmp_path: Path) -> None:
    path = tmp_path / "flows.bin"
    journal = FlowJournal(path, names(), max_bytes=4000)
    journal.write_batch(NODE, batch("/before"))
    live = FlowJournalReader(path)
    assert live.poll() == []  # a live view starts now
    whole = FlowJournalReader(path, from_start=True)
    assert [f["path"] for f in whole.poll()] == ["/before"]
    journal.write_batch(NODE, batch("/x", "/y"))
    assert [f["path"] for f in live.poll()] == ["/x", "/y"]
    for i in range(20):  # several rotations
        journal.write_batch(NODE, batch(f"/r{i}"))
        assert [(f["path"], f["upstreamPod"]) for f in live.poll()] == [(f"/r{i}", "shop/web-1")]
    # A record cut in the middle (a writer mid-write) is held back until it is whole.
    record = path.read_bytes()
    journal.write_batch(NODE, batch("/z"))
    tail = path.read_bytes()[len(record):]
    with open(path, "r+b") as f:
        f.truncate(len(record) + 7)
    assert live.poll() == []
    with open(path, "ab") as f:
        f.write(tail[7:])
    assert [f["path"] for f in live.poll()] == ["/z"]
    live.close()
    whole.close()


def test_raw_consumers_get_bytes_and_nothing_is_decoded_for_them() -> None:
    hub = FlowHub()
    got: list[tuple[str, bytes]] = []
    hub.on_flow_batch(lambda node, raw: got.append((node, raw)))
    servicer = AlsServicer(hub, names())
    messages = [batch("/1", node=NODE), batch("/2", "/3")]
    assert servicer.stream(iter(messages), None) == b""
    assert got == [(NODE, messages[0]), (NODE, messages[1])]
    assert (hub.batches, hub.received) == (2, 0)
    # A subscriber of decoded flows makes the hub decode.
    data: list[list[dict[str, Any]]] = []
    hub.on_flow_data(data.append)
    with hub.subscribe() as sub:
        servicer.stream(iter([batch("/4", "/5", node=NODE)]), None)
        records = sub.drain()
    assert [r.path for r in records] == ["/4", "/5"] and records[0].upstream_workload == "shop/web-1"
    assert [[f["path"] for f in b] for b in data] == [["/4", "/5"]]
    assert hub.received == 2


def test_the_lab_reader_merges_verdicts_and_journal_flows_by_time(tmp_path: Path) -> None:
    import json

    from meshcore.lab._observe import _follow, logged_flows

    journal = FlowJournal(tmp_path / "flows-l7.bin", names())
    journal.write_batch(NODE, batch("/a", "/b"))  # at 1_790_000_000 and +1 s
    verdict = {"kind": "l4", "time": 1_790_000_000.5, "flow": {"verdict": "DROPPED"}}
    (tmp_path / "flows.jsonl").write_text(json.dumps(verdict) + "\n")
    got = logged_flows(tmp_path)
    assert [(r["kind"], r.get("path")) for r in got] == [("l7", "/a"), ("l4", None), ("l7", "/b")]
    # Following: what is there first, then what comes.
    live = _follow(tmp_path, stop_after=3.0)
    assert [r.get("path") for r in (next(live), next(live), next(live))] == ["/a", None, "/b"]
    journal.write_batch(NODE, batch("/c"))
    assert next(live)["path"] == "/c"
    live.close()
