"""`meshcore observe` for a lab: the L3/L4 verdicts and L7 requests its node agents journaled.

Each node's agent keeps one flow journal in its state directory (see
:class:`~meshcore.agent.FlowJournal`); this reads every node's back as
:class:`~meshcore.observe.Flow`, merged oldest first, like ``hubble observe``: time, node,
source and destination (workload, namespace, identity, address, port), protocol,
direction, verdict, drop reason and the deciding policy with its source; L7 flows add
method, path, status, latency and the upstream that answered. Filters combine (all must
match).

Past the node's flow event rate the kernel counts allowed flows per identity pair instead
of reporting each: those show as one summary line per pair and port (``xN (summary)``,
``count`` in JSON). Verdicts it could neither report nor count are said on stderr.
"""

from __future__ import annotations

import heapq
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import click

from .. import _output as out
from ..agent import FLOWS_FILE, FlowJournalReader, FlowLoss
from ..agent._flowserver import FLOWS_SOCKET, read_served
from ..observe import Flow, FlowFilter, Layer, Verdict
from ._errors import LabError
from ._lab import Lab
from ._state import LabState

LAYERS = tuple(layer.value for layer in Layer)
VERDICTS = tuple(verdict.value.lower() for verdict in Verdict)
#: How often a followed journal is looked at for new flows.
FOLLOW_INTERVAL = 0.2


def node_dirs(lab: Lab) -> dict[str, Path]:
    """Each node's state directory, where its agent journals its flows."""
    return {node.name: Path(node.state_dir) for node in LabState.load(lab.dir).nodes.values()}


def node_flows(state_dirs: Mapping[str, Path]) -> list[Flow]:
    """Every flow the nodes' agents journaled, merged oldest first."""
    readers = [FlowJournalReader(path / FLOWS_FILE, from_start=True) for path in state_dirs.values()]
    try:
        return list(heapq.merge(*(r.poll() for r in readers), key=lambda f: f.time))
    finally:
        for reader in readers:
            reader.close()


def flows(lab: Lab, *, follow: bool = False, keep: FlowFilter | None = None,
          on_loss: Callable[[FlowLoss], None] | None = None) -> Iterator[Flow]:
    """The lab's journaled flows (every node's) that ``keep`` accepts, oldest first; with ``follow``,
    then new ones as they come, until the caller stops iterating. ``on_loss`` hears of verdicts
    the kernel could neither report nor count, as the journals record them."""
    wanted = keep or FlowFilter()
    dirs = node_dirs(lab)
    [only] = dirs.values() if len(dirs) == 1 else [None]
    if only is not None and not (only / FLOWS_FILE).exists() and (only / FLOWS_SOCKET).exists():
        yield from _served(only, follow, wanted)
        return
    readers = [FlowJournalReader(path / FLOWS_FILE, from_start=True) for path in dirs.values()]
    told = [0] * len(readers)
    try:
        while True:
            batches = [reader.poll() for reader in readers]
            yield from (flow for flow in heapq.merge(*batches, key=lambda f: f.time) if wanted(flow))
            if on_loss is not None:
                for i, reader in enumerate(readers):
                    for loss in reader.losses[told[i]:]:
                        on_loss(loss)
                    told[i] = len(reader.losses)
            if not follow:
                return
            time.sleep(FOLLOW_INTERVAL)
    finally:
        for reader in readers:
            reader.close()


def _served(state_dir: Path, follow: bool, wanted: FlowFilter) -> Iterator[Flow]:
    """The flows a node's agent holds in memory (its journal is off)."""
    try:
        for item in read_served(state_dir / FLOWS_SOCKET, follow=follow):
            if isinstance(item, int):
                click.echo(f"{item} entries of flows were pushed out of the agent's memory before they were read",
                           err=True)
            elif wanted(item):
                yield item
    except OSError as exc:
        raise LabError(f"cannot read the lab's flows from its agent: {exc}") from exc


def _shown(flow: Flow, fmt: str | None, *, several: bool) -> str:
    """The flow as ``-o`` says; a text line names the node when the lab has several."""
    if fmt == "json":
        return json.dumps(flow.to_data())
    if fmt == "yaml":
        return "---\n" + out.to_yaml(flow.to_data())
    return flow.line(node=several)


@click.command()
@click.option("--name", "lab_name", default=None, help="The lab (default: the only lab that is up).")
@click.option("--follow", is_flag=True, help="Keep printing new flows as they are logged (Ctrl-C stops).")
@click.option("-o", "--output", "fmt", type=click.Choice(("table", "text", *out.DATA_FORMATS)), default=None,
              help="table or text (the default; the same: one line per flow), json (one JSON object per line) "
                   "or yaml (one document per flow).")
@click.option("--pod", default=None, help="Only flows from or to this pod (name or namespace/name).")
@click.option("--node", default=None, help="Only flows a given node's agent saw (node-1, ...).")
@click.option("--namespace", default=None, help="Only flows from or to pods of this namespace.")
@click.option("--verdict", type=click.Choice(VERDICTS, case_sensitive=False), default=None,
              help="Only flows with this verdict (audit: forwarded, and an AUDIT policy matched it).")
@click.option("--layer", "--kind", "layer", type=click.Choice(LAYERS, case_sensitive=False), default=None,
              help="Only L3/L4 verdicts of the kernel (l4) or only flows through the node proxy (l7).")
def observe(lab_name: str | None, follow: bool, fmt: str | None, pod: str | None, node: str | None, namespace: str | None,
            verdict: str | None, layer: str | None) -> None:
    """Show the lab's flows (every node's): L3/L4 verdicts (identities, ports, verdict, reason, policy) and L7 requests."""
    try:
        lab = Lab.select(lab_name)
        if not lab.is_up:
            raise LabError(f"lab {lab.name!r} is not up")
        nodes = list(node_dirs(lab))
        if node is not None and node not in nodes:
            raise click.BadParameter(f"lab {lab.name!r} has no node {node!r} (its nodes: {', '.join(nodes)})",
                                     param_hint="'--node'")
        keep = FlowFilter(pod=pod, node=node, namespace=namespace, verdict=verdict, layer=layer)
        for flow in flows(lab, follow=follow, keep=keep, on_loss=lambda loss: click.echo(str(loss), err=True)):
            click.echo(_shown(flow, fmt, several=len(nodes) > 1), nl=fmt != "yaml")
    except LabError as exc:
        click.echo(f"meshcore observe: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
