"""The `lab` command group (`meshcore lab up|exec|status|node|down`) and `meshcore demo`.

Until it is reached through `meshcore`, run it as ``python -m meshcore.lab.cli ...``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click
from rich.markup import escape

from ..agent import ResourceError

from .. import _output as out
from ._errors import LabError, lab_command
from ._ipam import LabRanges
from ._ipam import MAX_NODES
from ._lab import DEFAULT_LAB, Lab, LabInputError
from ._agents import AgentStatus
from ._status import ContainerStatus, LabStatus, UpResult

F = TypeVar("F", bound=Callable[..., Any])

_name_option = click.option(
    "--name", default=None, metavar="NAME",
    help="The lab's name (default: the only lab that is up).",
)
#: For the commands that change or remove a lab: without --name they act on the lab named `lab` only.
_changed_name_option = click.option(
    "--name", default=None, metavar="NAME",
    help=f"The lab's name (default: {DEFAULT_LAB}; never another lab that happens to be up).",
)


def _reporting(func: F) -> F:
    """Turn lab errors into a message and exit status 1 (no traceback)."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        name = kwargs.get("name") or DEFAULT_LAB
        try:
            return func(*args, **kwargs)
        except LabInputError as exc:
            out.print_diagnostics(exc.diagnostics, out.choose_format(None), stderr=True)
            click.echo(f"lab: the input has {len(exc.diagnostics)} error(s); nothing was changed", err=True)
            sys.exit(1)
        except LabError as exc:
            click.echo(f"lab: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo(f"lab: interrupted; what was created is recorded: run `{lab_command(name, 'up', '-f', 'FILES')}` "
                       f"again or `{lab_command(name, 'down')}`", err=True)
            sys.exit(130)
    return wrapper  # type: ignore[return-value]


def _ranges(pod_cidrs: tuple[str, ...], service_cidrs: tuple[str, ...]) -> LabRanges | None:
    if not pod_cidrs and not service_cidrs:
        return None
    values = LabRanges().to_data()
    for cidr in pod_cidrs:
        values["pod_ipv6" if ":" in cidr else "pod_ipv4"] = cidr
    for cidr in service_cidrs:
        values["service_ipv6" if ":" in cidr else "service_ipv4"] = cidr
    return LabRanges.from_data(values)


@click.group("lab", context_settings={"help_option_names": ["-h", "--help"]})
def lab() -> None:
    """A local multi-pod lab: Kubernetes YAML run as namespaces, veths, cgroups and processes."""


@lab.command("up")
@_changed_name_option
@click.option("-f", "--filename", "files", multiple=True, required=True, metavar="PATH",
              help="A file, a directory (read recursively) or '-' for standard input; repeatable.")
@click.option("--pod-cidr", "pod_cidrs", multiple=True, metavar="CIDR",
              help="Pod range, IPv4 and/or IPv6 (default 10.244.0.0/16, fd00:10:244::/64).")
@click.option("--service-cidr", "service_cidrs", multiple=True, metavar="CIDR",
              help="ClusterIP range, IPv4 and/or IPv6 (default 10.96.0.0/16, fd00:10:96::/112).")
@click.option("--nodes", type=click.IntRange(1, MAX_NODES), default=None, metavar="N",
              help="Make a new lab of N nodes (node-1 ... node-N, each with a pod subnet, agent and proxy) "
                   "joined by a fabric; default: one node, lab-NAME.")
@click.option("--timeout", default=20.0, show_default=True, metavar="SECONDS",
              help="How long to wait for pods to serve their ports and for the agents to apply.")
@click.option("--mtls/--no-mtls", default=None,
              help="Make a new lab whose meshed traffic between nodes goes in mutual-TLS tunnels (the lab runs "
                   "meshcore's CA, and PeerAuthentication is enforced).")
@_reporting
def up(name: str | None, files: tuple[str, ...], pod_cidrs: tuple[str, ...], service_cidrs: tuple[str, ...],
       nodes: int | None, timeout: float, mtls: bool | None) -> None:
    """Bring a lab up from Kubernetes YAML, or reconcile a lab that is up to these files."""
    target = Lab.to_change(name)
    ranges = _ranges(pod_cidrs, service_cidrs)
    err = out.console(stderr=True)
    result = target.up(files, ranges=ranges, nodes=nodes, timeout=timeout,
                       progress=lambda m: err.print(f"[dim]{m}[/]"), mtls=mtls)
    _print_up(result)


def _print_up(result: UpResult) -> None:
    con = out.console()
    err = out.console(stderr=True)
    out.print_diagnostics(result.diagnostics, out.choose_format(None), stderr=True)
    parts = [f"{len(result.created)} created", f"{len(result.restarted)} restarted",
             f"{len(result.removed)} removed", f"{len(result.kept)} unchanged"]
    con.print(f"lab [bold]{result.name}[/] is up: pods {', '.join(parts)}")
    for note in result.notes:
        con.print(f"[cyan]note:[/] {note}")
    if result.not_ready:
        err.print(f"[yellow]not serving all their ports yet:[/] {', '.join(result.not_ready)}")
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    for agent in result.agents:
        if agent.ok:
            which = f"node agent of {agent.node}" if len(result.agents) > 1 else "node agent"
            con.print(f"{which} (pid {agent.pid}) applied {agent.frontends} service frontend(s)")
    con.print(f"see `meshcore lab status --name {result.name}`")


@lab.command("status")
@_name_option
@click.option("-o", "--output", "fmt", type=click.Choice(("table", "text", *out.DATA_FORMATS)), default=None,
              help="Output format: table (the default on a terminal), text (plain columns, the default "
                   "otherwise), json or yaml.")
@_reporting
def status(name: str | None, fmt: str | None) -> None:
    """Show the lab's pods (addresses, phase), services (ClusterIPs, ports) and agent."""
    current = Lab.select(name).status()
    fmt = out.choose_format(fmt)
    if fmt in out.DATA_FORMATS:
        out.dump(current.to_data(), fmt)
        return
    _print_status(current, fmt)


def _print_status(current: LabStatus, fmt: str) -> None:
    con = out.console()
    several = current.fabric is not None
    if several:
        assert current.fabric is not None
        con.print(f"lab [bold]{current.name}[/]: {len(current.nodes)} nodes on fabric {current.fabric.bridge} "
                  f"(netns {current.fabric.netns}), cgroup {current.cgroup}")
        out.print_table(fmt, "Nodes", ("name", "state", "netns", "pod CIDRs", "addresses", "proxy addresses"), (
            (n.name, "up" if n.up else "down", n.netns, " ".join(n.pod_cidrs), " ".join(n.addresses),
             " ".join(n.proxy_addresses))
            for n in current.nodes
        ))
    else:
        con.print(f"lab [bold]{current.name}[/]: node {current.node} (netns {current.node_netns}), "
                  f"cgroup {current.cgroup}")
    sidecars = any(p.sidecar is not None for p in current.pods)
    columns = ("namespace", "name", *(("node",) if several else ()), "phase", "ready",
               *(("sidecar",) if sidecars else ()), "addresses", "labels", "owner")
    out.print_table(fmt, "Pods", columns, (
        (p.namespace, p.name, *((p.node,) if several else ()), p.phase, "yes" if p.ready else "no",
         *((_sidecar(p.sidecar),) if sidecars else ()),
         " ".join(p.addresses), ",".join(f"{k}={v}" for k, v in sorted(p.labels.items())), p.owner)
        for p in current.pods
    ))
    out.print_table(fmt, "Services", ("namespace", "name", "cluster IPs", "ports"), (
        (s.namespace, s.name, " ".join(s.cluster_ips) or "None",
         ", ".join(f"{p['name'] + ' ' if p.get('name') else ''}{p['port']}/{p['protocol']}"
                   f"→{p['targetPort']}" for p in s.ports))
        for s in current.services
    ))
    for node in current.nodes:
        _print_agent(node.agent, fmt, f"{node.name} " if several else "", node.up, current.name)
    for note in current.notes:
        con.print(f"[cyan]note:[/] {note}")


def _sidecar(sidecar: ContainerStatus | None) -> str:
    """A pod's sidecar Envoy in the pods table: ``running (pid N)``, ``not running``, or ``-`` for none."""
    if sidecar is None:
        return "-"
    return f"running (pid {sidecar.pid})" if sidecar.running else "not running"


def _print_agent(agent: AgentStatus, fmt: str, prefix: str, up: bool, lab_name: str) -> None:
    """One node's agent, its node proxy and the raw Envoy configs it serves."""
    con = out.console()
    if not up:
        con.print(f"{prefix}node agent: [red]node down[/] (`{lab_command(lab_name, 'node', 'up', agent.node)}`)")
        return
    state = "running" if agent.running else "[red]not running[/]"
    applied = (f"applied generation {agent.applied_generation} of {agent.wanted_generation}, "
               f"{agent.frontends} frontend(s)")
    con.print(f"{prefix}node agent: {state} (pid {agent.pid}), {applied}"
              + ("" if not agent.error else f", [red]error:[/] {agent.error}"))
    proxy = agent.proxy
    if proxy.running:
        con.print(f"{prefix}node proxy: Envoy running (pid {proxy.pid}), {proxy.listeners} listener(s), "
                  f"{proxy.restarts} restart(s)")
    elif proxy.listeners:
        con.print(f"{prefix}node proxy: [red]not running[/] (Envoy is being restarted)")
    else:
        con.print(f"{prefix}node proxy: not running (no service port needs L7)")
    if agent.config_status:
        out.print_table(fmt, f"{prefix}Envoy configs", ("kind", "object", "Accepted", "reason / error"), (
            (escape(c.kind), escape(f"{c.namespace}/{c.name}" if c.namespace else c.name),
             "True" if c.accepted else "[red]False[/]",
             escape("; ".join(_config_error(e) for e in c.errors)
                    or f"{c.reason.value}{': ' + c.message if c.message else ''}"))
            for c in agent.config_status
        ), markup=True)
    con.print(f"{prefix}agent log: {agent.log}")


def _config_error(error: ResourceError) -> str:
    """``resource 0 (Listener twins): Envoy's message`` for one error of a config's live status."""
    return f"resource {error.index} ({error.type} {error.name}): {error.message}"


@lab.command("exec")
@_name_option
@click.option("-n", "--namespace", default="default", show_default=True, help="The pod's namespace.")
@click.argument("target", metavar="POD|deploy/NAME")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- COMMAND...")
@_reporting
def exec_cmd(name: str | None, namespace: str, target: str, command: tuple[str, ...]) -> None:
    """Run a command inside a pod (its network namespace, hosts file and cgroup).

    Standard input, output and errors are the terminal's; the exit status is the command's.
    """
    code = Lab.select(name).exec(target, list(command), namespace=namespace)
    sys.exit(code)


@lab.command("down")
@_changed_name_option
@_reporting
def down(name: str | None) -> None:
    """Remove everything the lab created: processes, namespaces, cgroups, pins, files."""
    if name is None and not Lab.names():
        click.echo("no lab is up")
        return
    target = Lab.to_change(name)
    if not target.dir.exists():
        click.echo(f"lab {target.name} is not up")
        return
    removed = target.down()
    click.echo(f"lab {target.name} is down (removed {', '.join(removed)})")


@lab.group("node")
def node() -> None:
    """Take a node of a lab of several nodes down, or bring it back."""


@node.command("down")
@_changed_name_option
@click.argument("node_name", metavar="NODE")
@click.option("--timeout", default=20.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the other nodes' agents to apply.")
@_reporting
def node_down(name: str | None, node_name: str, timeout: float) -> None:
    """Take NODE down: its agent, proxy and pods stop, its link goes down, its pods leave every service."""
    target = Lab.to_change(name)
    target.node_down(node_name, timeout=timeout)
    click.echo(f"node {node_name} of lab {target.name} is down; its pods are not ready and unreachable")


@node.command("up")
@_changed_name_option
@click.argument("node_name", metavar="NODE")
@click.option("--timeout", default=20.0, show_default=True, metavar="SECONDS",
              help="How long to wait for pods to serve their ports and for the agents to apply.")
@_reporting
def node_up(name: str | None, node_name: str, timeout: float) -> None:
    """Bring NODE back: its link and routes, its pods' containers and its agent."""
    target = Lab.to_change(name)
    target.node_up(node_name, timeout=timeout)
    click.echo(f"node {node_name} of lab {target.name} is up")


@click.command("demo")
@click.option("--requests", "count", default=20, show_default=True, help="Requests per service and address.")
@click.option("--name", default="demo", show_default=True, help="Name of the lab the demo runs in.")
@_reporting
def demo(count: int, name: str) -> None:
    """Run the bundled example app in a lab, show which pod answered, and tear it down."""
    from .demo import run_demo  # noqa: PLC0415 - keeps `meshcore --help` fast

    sys.exit(run_demo(requests=count, name=name))


if __name__ == "__main__":
    lab(prog_name="python -m meshcore.lab.cli")
