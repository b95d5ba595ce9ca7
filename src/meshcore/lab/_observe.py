"""`meshcore observe` for a lab: the flows its node agent logged, filtered and printed.

The agent appends flows as JSON lines to ``flows.jsonl`` in the lab directory (rotated
to ``flows.jsonl.1``). Each line has ``kind`` (``l7`` for requests through the node
Envoy); addresses are shown as ``namespace/pod`` where the lab knows them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ._errors import LabError
from ._lab import Lab
from ._proxy import FLOWS_FILE
from ._state import LabState


def _host(address: str) -> str:
    """``10.0.0.1:80`` / ``[fd00::1]:80`` → the address without port."""
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


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


def _follow(path: Path, stop_after: float | None = None) -> Iterator[str]:
    """Lines appended to ``path`` from now on, across rotations."""
    started = time.monotonic()
    f = None
    inode = None
    while stop_after is None or time.monotonic() - started < stop_after:
        if f is None:
            try:
                f = open(path, encoding="utf-8")  # noqa: SIM115 - kept open across iterations
                inode = path.stat().st_ino
            except FileNotFoundError:
                time.sleep(0.2)
                continue
        line = f.readline()
        if line:
            yield line
            continue
        try:
            rotated = path.stat().st_ino != inode
        except FileNotFoundError:
            rotated = True
        if rotated:
            f.close()
            f = None
            continue
        time.sleep(0.2)
    if f is not None:
        f.close()


def row(flow: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """A flow as the record `observe` prints: time, source, destination, method, path, status, latency, upstream."""
    source = str(flow.get("source", ""))
    upstream = str(flow.get("upstreamPod") or flow.get("upstream") or "")
    return {
        "kind": flow.get("kind", ""),
        "time": datetime.fromtimestamp(float(flow.get("time", 0))).isoformat(timespec="milliseconds"),
        "source": names.get(_host(source), source),
        "destination": flow.get("listener", ""),
        "method": flow.get("method", ""),
        "path": flow.get("path", ""),
        "status": flow.get("status", 0),
        "latencyMs": flow.get("latencyMs", 0.0),
        "upstreamPod": upstream,
        "flags": flow.get("flags", []),
    }


def _matches(r: Mapping[str, Any], pod: str | None, namespace: str | None) -> bool:
    ends = [str(r["source"]), str(r["upstreamPod"])]
    if pod is not None and not any(e == pod or e.endswith(f"/{pod}") for e in ends):
        return False
    if namespace is not None and not any(e.startswith(f"{namespace}/") for e in ends):
        return False
    return True


def flows(lab: Lab, *, follow: bool = False, pod: str | None = None, namespace: str | None = None,
          follow_for: float | None = None) -> Iterator[dict[str, Any]]:
    """The lab's logged flows as printable records, oldest first; with ``follow``, new ones as they come."""
    state = LabState.load(lab.dir) if lab.is_up else None
    names = pod_names(state) if state is not None else {}
    path = lab.dir / FLOWS_FILE
    source = _follow(path, follow_for) if follow else _lines(path)
    for line in source:
        try:
            data = json.loads(line)
        except ValueError:
            continue  # a line cut by a rotation
        if not isinstance(data, dict):
            continue
        r = row(data, names)
        if _matches(r, pod, namespace):
            yield r


def format_row(r: Mapping[str, Any]) -> str:
    """One flow as a line of text."""
    flags = f" [{','.join(r['flags'])}]" if r.get("flags") else ""
    return (f"{r['time'][11:]}  {r['source']} → {r['destination']}  {r['method']} {r['path']}  {r['status']}  "
            f"{float(r['latencyMs']):.1f}ms  → {r['upstreamPod'] or '-'}{flags}")


@click.command()
@click.option("--name", "lab_name", default=None, help="The lab (default: the only lab that is up).")
@click.option("--follow", is_flag=True, help="Keep printing new flows as they are logged (Ctrl-C stops).")
@click.option("-o", "--output", "fmt", type=click.Choice(("table", "json")), default="table", show_default=True,
              help="Text lines, or one JSON object per flow.")
@click.option("--pod", default=None, help="Only flows from or to this pod (name or namespace/name).")
@click.option("--namespace", default=None, help="Only flows from or to pods of this namespace.")
def observe(lab_name: str | None, follow: bool, fmt: str, pod: str | None, namespace: str | None) -> None:
    """Show the lab's flows: time, source, destination, method, path, status, latency, upstream pod."""
    try:
        lab = Lab.select(lab_name)
        if not lab.is_up:
            raise LabError(f"lab {lab.name!r} is not up")
        for r in flows(lab, follow=follow, pod=pod, namespace=namespace):
            click.echo(json.dumps(r) if fmt == "json" else format_row(r))
    except LabError as exc:
        click.echo(f"meshcore observe: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
