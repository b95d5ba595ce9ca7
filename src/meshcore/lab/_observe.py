"""`meshcore observe` for a lab: one stream of the L3/L4 verdicts and L7 requests its node agents logged.

Each node's agent appends L3/L4 verdicts of the policy programs as JSON lines to ``flows.jsonl``
in the node's state directory (``kind: l4``, a decoded kernel event under ``flow``), and the node
Envoy's access-log batches, undecoded, to the flow journal ``flows-l7.bin`` (rotated to
``flows-l7.bin.1``); requests through the node Envoy are decoded from the journal here,
when they are read (``kind: l7``). Both are merged by time and shown as one record shape, like ``hubble observe``: time, source and
destination (pod, namespace, identity, address, port), protocol, direction, verdict,
drop reason and the deciding policy with its source; L7 records add method, path,
status, latency and the upstream pod. The flows of every node are merged by time, each
naming the node that logged it. Filters combine (all must match).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from .._translate import translate
from ._errors import LabError
from ._lab import Lab
from ..proxy import FlowJournalReader
from ..agent._flows import FLOWS_FILE, FLOWS_L7_FILE
from ._state import LabState

KINDS = ("l4", "l7")
VERDICTS = ("forwarded", "dropped")


def _split(address: str) -> tuple[str, int]:
    """``10.0.0.1:80`` / ``[fd00::1]:80`` → (address, port); a bare address gets port 0."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif address.count(":") == 1:
        host, port = address.split(":")
    else:
        host, port = address, ""
    return host, int(port) if port.isdigit() else 0


def _host(address: str) -> str:
    """``10.0.0.1:80`` / ``[fd00::1]:80`` → the address without port."""
    return _split(address)[0]


def pod_names(state: LabState) -> dict[str, str]:
    """Pod address → ``namespace/name``."""
    return {addr: r.key for r in state.pods.values() for addr in r.addresses if addr}


def _lines(path: Path) -> Iterator[str]:
    for candidate in (path.with_name(path.name + ".1"), path):
        try:
            with open(candidate, encoding="utf-8") as f:
                yield from f
        except FileNotFoundError:
            continue


def _parse(line: str) -> dict[str, Any] | None:
    try:
        data = json.loads(line)
    except ValueError:
        return None  # a line cut by a rotation
    return data if isinstance(data, dict) else None


def _by_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def when(r: Mapping[str, Any]) -> float:
        try:
            return float(r.get("time") or 0)
        except (TypeError, ValueError):
            return 0.0
    return sorted(records, key=when)


def logged_flows(state_dir: Path) -> list[dict[str, Any]]:
    """Every flow the lab's agent logged, as stored objects (``kind: l4`` / ``kind: l7``), oldest first.

    L7 flows are decoded from the node proxy's flow journal now; the L3/L4 verdicts come
    from the JSON-lines log (which may also hold L7 lines written by an older agent).
    """
    records = [d for d in map(_parse, _lines(state_dir / FLOWS_FILE)) if d is not None]
    records.extend(FlowJournalReader(state_dir / FLOWS_L7_FILE).read())
    return _by_time(records)


class _LineTail:
    """Lines of a file, then those appended to it, across rotations."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: Any = None
        self._inode = 0
        self._pending = ""

    def poll(self) -> list[str]:
        out: list[str] = []
        while True:
            if self._f is None:
                try:
                    self._f = open(self.path, encoding="utf-8")  # noqa: SIM115 - kept open across polls
                    self._inode = os.fstat(self._f.fileno()).st_ino
                except FileNotFoundError:
                    return out
            text = self._pending + self._f.read()
            lines = text.split("\n")
            self._pending = lines.pop()
            out.extend(line for line in lines if line)
            try:
                rotated = self.path.stat().st_ino != self._inode
            except FileNotFoundError:
                rotated = True
            if not rotated:
                return out
            # Finish the old file (a line may have been appended just before the rotation).
            rest = self._pending + self._f.read()
            out.extend(line for line in rest.split("\n") if line)
            self._f.close()
            self._f = None
            self._pending = ""

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _follow(state_dir: Path, stop_after: float | None = None) -> Iterator[dict[str, Any]]:
    """The flows of the current logs, then those logged from now on (both kinds, across
    rotations), in time order within each poll."""
    return _follow_nodes({"": state_dir}, stop_after)


def _tagged(records: list[dict[str, Any]], node: str) -> list[dict[str, Any]]:
    """``records`` each naming the node that logged them (unless no node is given)."""
    if node:
        for record in records:
            record["node"] = node
    return records


def node_flows(state_dirs: Mapping[str, Path]) -> list[dict[str, Any]]:
    """Every flow the agents of these nodes (name → state directory) logged, merged by time."""
    return _by_time([r for node, path in state_dirs.items() for r in _tagged(logged_flows(path), node)])


def _follow_nodes(state_dirs: Mapping[str, Path], stop_after: float | None = None) -> Iterator[dict[str, Any]]:
    """:func:`_follow` over several nodes' logs at once, merged by time within each poll."""
    started = time.monotonic()
    tails = [(node, _LineTail(path / FLOWS_FILE), FlowJournalReader(path / FLOWS_L7_FILE, from_start=True))
             for node, path in state_dirs.items()]
    try:
        while stop_after is None or time.monotonic() - started < stop_after:
            found: list[dict[str, Any]] = []
            for node, lines, journal in tails:
                batch = [d for d in map(_parse, lines.poll()) if d is not None]
                batch.extend(journal.poll())
                found += _tagged(batch, node)
            yield from _by_time(found)
            time.sleep(0.2)
    finally:
        for _, lines, journal in tails:
            lines.close()
            journal.close()


def _namespace(pod: str) -> str:
    return pod.split("/", 1)[0] if "/" in pod else ""


def _stamp(seconds: Any) -> str:
    return datetime.fromtimestamp(float(seconds or 0)).isoformat(timespec="milliseconds")


def _l4_row(record: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    flow = record.get("flow") or {}
    verdict = str(flow.get("verdict", "")).upper()
    # A node's agent names its own pods; a pod on another node is named by the lab.
    source = str(flow.get("src_pod") or names.get(str(flow.get("src_address", ""))) or flow.get("src_address", ""))
    destination = str(flow.get("dst_pod") or names.get(str(flow.get("dst_address", "")))
                      or flow.get("dst_address", ""))
    return {
        "kind": "l4", "time": _stamp(record.get("time")),
        "verdict": verdict, "reason": str(flow.get("reason", "")) if verdict == "DROPPED" else "",
        "direction": str(flow.get("direction", "")), "protocol": str(flow.get("protocol", "")),
        "source": source,
        "sourceNamespace": str(flow.get("src_namespace", "")), "sourceIdentity": int(flow.get("src_identity", 0)),
        "sourceAddress": str(flow.get("src_address", "")), "sourcePort": int(flow.get("src_port", 0)),
        "destination": destination,
        "destinationNamespace": str(flow.get("dst_namespace", "")),
        "destinationIdentity": int(flow.get("dst_identity", 0)),
        "destinationAddress": str(flow.get("dst_address", "")), "destinationPort": int(flow.get("dst_port", 0)),
        "policy": str(flow.get("policy", "")), "policySource": str(flow.get("policy_source", "")),
        "method": "", "path": "", "status": 0, "latencyMs": 0.0, "upstreamPod": "", "flags": [],
    }


def _l7_denied(record: Mapping[str, Any]) -> bool:
    """Whether Envoy refused the request by policy (RBAC), which `observe` shows as dropped."""
    flags = [str(f) for f in record.get("flags") or []]
    return "RBAC" in flags or "rbac_access_denied" in str(record.get("details") or "")


_RBAC_POLICY = re.compile(r"rbac_access_denied_matched_policy\[(?P<policy>[^\[\]]+)(?:\[(?P<rule>\d+)\])?\]")


def denying_policy(record: Mapping[str, Any]) -> str:
    """``namespace/name`` of the authorization policy Envoy's RBAC refused a request by, or ``""``."""
    found = _RBAC_POLICY.search(str(record.get("details") or ""))
    return found.group("policy") if found else ""


def _l7_row(record: Mapping[str, Any], names: Mapping[str, str], identities: Mapping[str, int],
            policy_sources: Callable[[], Mapping[str, str]] = dict) -> dict[str, Any]:
    src_addr, src_port = _split(str(record.get("source", "")))
    upstream = str(record.get("upstreamPod") or "")
    dst_addr, dst_port = _split(str(record.get("upstream") or ""))
    source = names.get(src_addr, src_addr)
    destination = upstream or names.get(dst_addr, "") or str(record.get("listener", ""))
    denied = _l7_denied(record)
    policy = denying_policy(record) if denied else ""
    return {
        "kind": "l7", "time": _stamp(record.get("time")),
        "verdict": "DROPPED" if denied else "FORWARDED", "reason": "policy-denied" if denied else "",
        "direction": "", "protocol": str(record.get("protocol") or "HTTP"),
        "source": source, "sourceNamespace": _namespace(source), "sourceIdentity": identities.get(src_addr, 0),
        "sourceAddress": src_addr, "sourcePort": src_port,
        "destination": destination, "destinationNamespace": _namespace(destination),
        "destinationIdentity": identities.get(dst_addr, 0),
        "destinationAddress": dst_addr, "destinationPort": dst_port,
        "policy": policy, "policySource": policy_sources().get(policy, "") if policy else "",
        "method": str(record.get("method", "")), "path": str(record.get("path", "")),
        "status": int(record.get("status") or 0), "latencyMs": float(record.get("latencyMs") or 0.0),
        "upstreamPod": upstream, "flags": [str(f) for f in record.get("flags") or []],
    }


def row(record: Mapping[str, Any], names: Mapping[str, str],
        identities: Mapping[str, int] | None = None,
        policy_sources: Callable[[], Mapping[str, str]] = dict) -> dict[str, Any]:
    """A logged flow (either kind) as the record `observe` prints.

    ``identities`` fills L7 peers' identities; ``policy_sources`` (called only for a request
    refused by RBAC) maps ``namespace/name`` of a policy to where it was defined.
    """
    out = _l4_row(record, names) if record.get("kind") == "l4" else _l7_row(record, names, identities or {},
                                                                           policy_sources)
    out["node"] = str(record.get("node") or "")
    return out


def _policy_sources(lab: Lab) -> Callable[[], Mapping[str, str]]:
    """Where each authorization policy of the lab's input was defined, computed on first use."""
    cache: dict[str, str] = {}
    loaded = False

    def get() -> Mapping[str, str]:
        nonlocal loaded
        if not loaded:
            loaded = True
            try:
                snapshot = translate(objects=lab.objects()).snapshot
            except LabError:
                return cache
            cache.update({f"{p.namespace}/{p.name}": p.source.location or str(p.source)
                          for p in snapshot.policies})
        return cache

    return get


def _is_pod(end: str, pod: str) -> bool:
    return end == pod or end.endswith(f"/{pod}")


def matches(r: Mapping[str, Any], *, pod: str | None = None, namespace: str | None = None,
            verdict: str | None = None, kind: str | None = None) -> bool:
    """Whether a record passes every given filter."""
    ends = [str(r["source"]), str(r["destination"]), str(r["upstreamPod"])]
    if pod is not None and not any(_is_pod(e, pod) for e in ends):
        return False
    if namespace is not None and namespace not in (r["sourceNamespace"], r["destinationNamespace"]):
        return False
    if verdict is not None and str(r["verdict"]).lower() != verdict.lower():
        return False
    return kind is None or r["kind"] == kind.lower()


def flows(lab: Lab, *, follow: bool = False, pod: str | None = None, namespace: str | None = None,
          verdict: str | None = None, kind: str | None = None,
          follow_for: float | None = None) -> Iterator[dict[str, Any]]:
    """The lab's logged flows as printable records, oldest first; with ``follow``, new ones as they come."""
    state = LabState.load(lab.dir) if lab.is_up else None
    names = pod_names(state) if state is not None else {}
    identities: dict[str, int] = {}  # learnt from L3/L4 verdicts, to name the identities of L7 peers
    sources = _policy_sources(lab)
    dirs = {n.name: Path(n.state_dir) for n in state.nodes.values()} if state is not None else {"": lab.dir}
    source = _follow_nodes(dirs, follow_for) if follow else iter(node_flows(dirs))
    for data in source:
        r = row(data, names, identities, sources)
        if r["kind"] == "l4":
            for side in ("source", "destination"):
                if r[f"{side}Identity"]:
                    identities[r[f"{side}Address"]] = r[f"{side}Identity"]
        if matches(r, pod=pod, namespace=namespace, verdict=verdict, kind=kind):
            yield r


def _end(name: str, address: str, port: int, identity: int) -> str:
    where = name if name and name != address else (f"[{address}]" if ":" in address else address)
    text = f"{where}:{port}" if port else where
    return f"{text} (ID:{identity})" if identity else text


def format_row(r: Mapping[str, Any], *, with_node: bool = False) -> str:
    """One flow as a line of text (``with_node``: after the time, the node that logged it)."""
    src = _end(r["source"], r["sourceAddress"], r["sourcePort"], r["sourceIdentity"])
    dst = _end(r["destination"], r["destinationAddress"], r["destinationPort"], r["destinationIdentity"])
    verdict = f"{r['verdict']} ({r['reason']})" if r["reason"] else str(r["verdict"])
    node = f"{r.get('node') or '-'}  " if with_node else ""
    head = f"{r['time'][11:]}  {node}{src} -> {dst}"
    if r["kind"] == "l4":
        text = f"{head}  {r['protocol']} {r['direction']}  {verdict}"
        if r["policy"]:
            text += f"  by {r['policy']}"
            if r["policySource"]:
                text += f" at {r['policySource']}"
        return text
    flags = f" [{','.join(r['flags'])}]" if r["flags"] else ""
    return (f"{head}  {r['protocol']} {r['method']} {r['path']} {r['status']}  {float(r['latencyMs']):.1f}ms  "
            f"{verdict}{flags}")


@click.command()
@click.option("--name", "lab_name", default=None, help="The lab (default: the only lab that is up).")
@click.option("--follow", is_flag=True, help="Keep printing new flows as they are logged (Ctrl-C stops).")
@click.option("-o", "--output", "fmt", type=click.Choice(("table", "json")), default="table", show_default=True,
              help="Text lines, or one JSON object per flow.")
@click.option("--pod", default=None, help="Only flows from or to this pod (name or namespace/name).")
@click.option("--node", default=None, help="Only flows the agent of this node logged.")
@click.option("--namespace", default=None, help="Only flows from or to pods of this namespace.")
@click.option("--verdict", type=click.Choice(VERDICTS, case_sensitive=False), default=None,
              help="Only flows with this verdict.")
@click.option("--kind", type=click.Choice(KINDS, case_sensitive=False), default=None,
              help="Only L3/L4 verdicts (l4) or only requests through the node proxy (l7).")
def observe(lab_name: str | None, follow: bool, fmt: str, pod: str | None, node: str | None,
            namespace: str | None, verdict: str | None, kind: str | None) -> None:
    """Show the lab's flows: L3/L4 verdicts (identities, ports, verdict, reason, policy) and L7 requests."""
    try:
        lab = Lab.select(lab_name)
        if not lab.is_up:
            raise LabError(f"lab {lab.name!r} is not up")
        several = len(LabState.load(lab.dir).nodes) > 1
        for r in flows(lab, follow=follow, pod=pod, namespace=namespace, verdict=verdict, kind=kind):
            if node is None or r["node"] == node:
                click.echo(json.dumps(r) if fmt == "json" else format_row(r, with_node=several))
    except LabError as exc:
        click.echo(f"meshcore observe: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
