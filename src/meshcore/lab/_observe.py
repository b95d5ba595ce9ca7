"""`meshcore observe` for a lab: the L3/L4 verdicts and L7 requests its node agent journaled.

The lab's agent keeps one flow journal in the lab directory (see
:class:`~meshcore.agent.FlowJournal`); this reads it back as :class:`~meshcore.observe.Flow`,
oldest first, like ``hubble observe``: time, source and destination (workload, namespace,
identity, address, port), protocol, direction, verdict, drop reason and the deciding
policy with its source; L7 flows add method, path, status, latency and the upstream that
answered. Filters combine (all must match).

Past the node's flow event rate the kernel counts allowed flows per identity pair instead
of reporting each: those show as one summary line per pair and port (``xN (summary)``,
``count`` in JSON). Verdicts it could neither report nor count are said on stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator

import click

from ..agent import FLOWS_FILE, FlowJournalReader, FlowLoss
from ..agent._flowserver import FLOWS_SOCKET, read_served
from ..observe import Flow, FlowFilter, Layer, Verdict
from ._errors import LabError
from ._lab import Lab

LAYERS = tuple(layer.value for layer in Layer)
VERDICTS = tuple(verdict.value.lower() for verdict in Verdict)


def flows(lab: Lab, *, follow: bool = False, keep: FlowFilter | None = None,
          on_loss: Callable[[FlowLoss], None] | None = None) -> Iterator[Flow]:
    """The lab's journaled flows that ``keep`` accepts, oldest first; with ``follow``, then new ones
    as they come, until the caller stops iterating. ``on_loss`` hears of verdicts the kernel
    could neither report nor count, as the journal records them."""
    wanted = keep or FlowFilter()
    if not (lab.dir / FLOWS_FILE).exists() and (lab.dir / FLOWS_SOCKET).exists():
        yield from _served(lab, follow, wanted)
        return
    reader = FlowJournalReader(lab.dir / FLOWS_FILE, from_start=True)
    told = 0
    try:
        while True:
            yield from (flow for flow in reader.poll() if wanted(flow))
            if on_loss is not None:
                for loss in reader.losses[told:]:
                    on_loss(loss)
                told = len(reader.losses)
            if not follow:
                return
            time.sleep(0.2)
    finally:
        reader.close()


def _served(lab: Lab, follow: bool, wanted: FlowFilter) -> Iterator[Flow]:
    """The flows the lab's agent holds in memory (its journal is off)."""
    try:
        for item in read_served(lab.dir / FLOWS_SOCKET, follow=follow):
            if isinstance(item, int):
                click.echo(f"{item} entries of flows were pushed out of the agent's memory before they were read",
                           err=True)
            elif wanted(item):
                yield item
    except OSError as exc:
        raise LabError(f"cannot read the lab's flows from its agent: {exc}") from exc


@click.command()
@click.option("--name", "lab_name", default=None, help="The lab (default: the only lab that is up).")
@click.option("--follow", is_flag=True, help="Keep printing new flows as they are logged (Ctrl-C stops).")
@click.option("-o", "--output", "fmt", type=click.Choice(("table", "json")), default="table", show_default=True,
              help="Text lines, or one JSON object per flow.")
@click.option("--pod", default=None, help="Only flows from or to this pod (name or namespace/name).")
@click.option("--namespace", default=None, help="Only flows from or to pods of this namespace.")
@click.option("--verdict", type=click.Choice(VERDICTS, case_sensitive=False), default=None,
              help="Only flows with this verdict (audit: forwarded, and an AUDIT policy matched it).")
@click.option("--layer", "--kind", "layer", type=click.Choice(LAYERS, case_sensitive=False), default=None,
              help="Only L3/L4 verdicts of the kernel (l4) or only flows through the node proxy (l7).")
def observe(lab_name: str | None, follow: bool, fmt: str, pod: str | None, namespace: str | None,
            verdict: str | None, layer: str | None) -> None:
    """Show the lab's flows: L3/L4 verdicts (identities, ports, verdict, reason, policy) and L7 requests."""
    try:
        lab = Lab.select(lab_name)
        if not lab.is_up:
            raise LabError(f"lab {lab.name!r} is not up")
        keep = FlowFilter(pod=pod, namespace=namespace, verdict=verdict, layer=layer)
        for flow in flows(lab, follow=follow, keep=keep, on_loss=lambda loss: click.echo(str(loss), err=True)):
            click.echo(json.dumps(flow.to_data()) if fmt == "json" else str(flow))
    except LabError as exc:
        click.echo(f"meshcore observe: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
