"""`meshcore agent`: the node agent as a process, node facts from flags or the environment."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ..model import WorkloadRef
from ..observe import DEFAULT_METRICS_ADDRESS, configure_logging
from ._agent import NodeAgent
from ._facts import NodeFacts
from ._run import POLL_SECONDS, AgentRunner
from ._source import ManifestFiles, ObjectsFile, SnapshotSource

__all__ = ["agent_command", "main"]

DEFAULT_STATE_ROOT = Path("/run/meshcore/agent")


def _pairs(values: tuple[str, ...], what: str, example: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise click.BadParameter(f"{value!r}: expected {example}", param_hint=what)
        out[key] = item
    return out


def _interfaces(values: tuple[str, ...]) -> dict[WorkloadRef, str]:
    out = {}
    for key, name in _pairs(values, "--interface", "NAMESPACE/POD=INTERFACE, e.g. default/web-0=veth1").items():
        namespace, sep, pod = key.partition("/")
        if not sep or not namespace or not pod:
            raise click.BadParameter(f"{key!r}: expected NAMESPACE/POD", param_hint="--interface")
        out[WorkloadRef(namespace, pod)] = name
    return out


@click.command("agent")
@click.option("--node", envvar="MESHCORE_NODE", required=True, help="This node's name [env MESHCORE_NODE].")
@click.option("--cgroup", envvar="MESHCORE_CGROUP", default=".", show_default=True,
              help="cgroup v2 directory whose processes get socket-level load balancing (relative to the "
                   "cgroup2 mount; '.' is the whole node) [env MESHCORE_CGROUP].")
@click.option("--ipv4", envvar="MESHCORE_NODE_IPV4", default="", help="The node's IPv4 address [env MESHCORE_NODE_IPV4].")
@click.option("--ipv6", envvar="MESHCORE_NODE_IPV6", default="", help="The node's IPv6 address [env MESHCORE_NODE_IPV6].")
@click.option("--state-dir", type=click.Path(path_type=Path), envvar="MESHCORE_STATE_DIR",
              help=f"Where the report, the proxy's files and flows go [default {DEFAULT_STATE_ROOT}/NODE].")
@click.option("--pin-root", type=click.Path(path_type=Path), default=None,
              help="Where BPF pins live [default <bpffs>/meshcore].")
@click.option("--netns", default=None, help="Network namespace holding the workloads' host-side interfaces.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="A node label; repeatable.")
@click.option("--objects", "objects_file", type=click.Path(path_type=Path), default=None,
              help="Read configuration from an objects file (JSON, rewritten whole on each change).")
@click.option("-f", "--filename", "files", multiple=True, metavar="PATH",
              help="Read configuration from Kubernetes YAML/JSON files or directories; repeatable.")
@click.option("--interface", "interfaces", multiple=True, metavar="NAMESPACE/POD=INTERFACE",
              help="A workload's host-side interface, for policy (with -f); repeatable.")
@click.option("--metrics", default=DEFAULT_METRICS_ADDRESS, show_default=True,
              help="HOST:PORT for Prometheus metrics, or 'off'.")
@click.option("--poll", default=POLL_SECONDS, show_default=True, help="Seconds between looks at the source.")
def agent_command(node: str, cgroup: str, ipv4: str, ipv6: str, state_dir: Path | None, pin_root: Path | None,
                  netns: str | None, labels: tuple[str, ...], objects_file: Path | None, files: tuple[str, ...],
                  interfaces: tuple[str, ...], metrics: str, poll: float) -> None:
    """Run the node agent: apply each new configuration to this node's kernel and proxy.

    Exactly one source: --objects FILE or -f PATH. SIGHUP makes it look at the source at
    once; SIGTERM stops it (pinned programs keep enforcing; the node proxy stops).
    """
    if (objects_file is None) == (not files):
        raise click.UsageError("give the configuration with --objects FILE or -f PATH (one of them)")
    if objects_file is not None and interfaces:
        raise click.UsageError("--interface goes with -f; an objects file names its interfaces itself")
    source: SnapshotSource = ObjectsFile(objects_file) if objects_file is not None else ManifestFiles(
        files, _interfaces(interfaces))
    facts = NodeFacts(node, cgroup, state_dir or DEFAULT_STATE_ROOT / node, ipv4, ipv6, pin_root,
                      _pairs(labels, "--label", "KEY=VALUE"), netns)
    facts.state_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(sys.stderr, logging.INFO)
    runner = AgentRunner(NodeAgent(facts), source, poll=poll, metrics_address=metrics, settle_heap=True)
    runner.handle_signals()
    sys.exit(runner.run())


def main() -> None:
    """``python -m meshcore.agent``."""
    agent_command.main(prog_name="meshcore agent")
