"""`meshcore agent`: the node agent as a process, node facts from flags or the environment."""

from __future__ import annotations

import logging
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..compile import PROXY_PORT_BASE, PROXY_PORT_RANGE, CompileOptions
from ..model import WorkloadRef
from ..observe import DEFAULT_METRICS_ADDRESS, configure_logging
from ._agent import DEFAULT_FLOW_EVENT_RATE, NodeAgent
from ._facts import NodeFacts
from ._journal import JournalLimits, parse_size
from ._report import GenerationReport
from ._run import POLL_SECONDS, AgentRunner
from ._source import ManifestFiles, ObjectsFile, SnapshotSource, Update

if TYPE_CHECKING:
    from ..kubesource import KubeSource
    from ..kubestatus import StatusWriteBack

__all__ = ["agent_command", "main"]

DEFAULT_STATE_ROOT = Path("/run/meshcore/agent")
#: The Lease naming the one agent that writes status back.
DEFAULT_LEASE_NAME = "meshcore-status"


def _pairs(values: tuple[str, ...], what: str, example: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise click.BadParameter(f"{value!r}: expected {example}", param_hint=what)
        out[key] = item
    return out


def _interfaces(values: tuple[str, ...]) -> dict[WorkloadRef, str] | None:
    """The workloads' interfaces given on the command line; None when none were (something else wires them)."""
    if not values:
        return None
    out = {}
    for key, name in _pairs(values, "--interface", "NAMESPACE/POD=INTERFACE, e.g. default/web-0=veth1").items():
        namespace, sep, pod = key.partition("/")
        if not sep or not namespace or not pod:
            raise click.BadParameter(f"{key!r}: expected NAMESPACE/POD", param_hint="--interface")
        out[WorkloadRef(namespace, pod)] = name
    return out


def _compile_options(proxy_ports: str) -> CompileOptions:
    first, _, last = proxy_ports.partition("-")
    if not (first.isdigit() and last.isdigit()):
        raise click.BadParameter(f"{proxy_ports!r} is not FIRST-LAST, e.g. {PROXY_PORT_BASE}-"
                                 f"{PROXY_PORT_BASE + PROXY_PORT_RANGE - 1}", param_hint="--proxy-ports")
    try:
        return CompileOptions(proxy_port_base=int(first), proxy_port_range=int(last) - int(first) + 1)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--proxy-ports") from None


@click.command("agent")
@click.option("--node", envvar="MESHCORE_NODE", required=True, help="This node's name [env MESHCORE_NODE].")
@click.option("--cgroup", envvar="MESHCORE_CGROUP", default=".", show_default=True,
              help="cgroup v2 directory whose processes get socket-level load balancing (relative to the "
                   "cgroup2 mount; '.' is the whole node) [env MESHCORE_CGROUP].")
@click.option("--ipv4", envvar="MESHCORE_NODE_IPV4", default="", help="The node's IPv4 address [env MESHCORE_NODE_IPV4].")
@click.option("--ipv6", envvar="MESHCORE_NODE_IPV6", default="", help="The node's IPv6 address [env MESHCORE_NODE_IPV6].")
@click.option("--proxy-ipv4", envvar="MESHCORE_PROXY_IPV4", default="",
              help="The IPv4 address (of this node) the node proxy connects to endpoints from; policy on "
                   "every node tells it apart from the node [env MESHCORE_PROXY_IPV4].")
@click.option("--proxy-ipv6", envvar="MESHCORE_PROXY_IPV6", default="",
              help="The IPv6 address the node proxy connects to endpoints from [env MESHCORE_PROXY_IPV6].")
@click.option("--dns-resolver", "dns_resolvers", multiple=True, metavar="ADDRESS[:PORT]",
              help="A name server the node proxy asks for the addresses of DNS-resolved services (ServiceEntry "
                   "resolution DNS); repeatable [default: the system's, /etc/resolv.conf].")
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
@click.option("--from", "from_source", type=click.Choice(["kube"]), default=None,
              help="Read configuration from the Kubernetes API server (the kubeconfig, or in a pod its "
                   "service account); needs the 'kube' extra.")
@click.option("--context", default=None, help="The kubeconfig context (with --from kube).")
@click.option("--kubeconfig", type=click.Path(path_type=Path), default=None,
              help="The kubeconfig file (with --from kube) [default $KUBECONFIG, ~/.kube/config, in a pod "
                   "its service account].")
@click.option("--write-status/--no-write-status", "write_status", default=None,
              help="With --from kube: write the status adapters compute (Gateway API conditions, raw Envoy "
                   "configs' Accepted) back to the API server, from one agent at a time (the Lease holder) "
                   "[default: on with --from kube].")
@click.option("--lease-namespace", envvar="MESHCORE_NAMESPACE", default=None,
              help="Namespace of the status writers' Lease [env MESHCORE_NAMESPACE; default: in a pod its "
                   "own namespace, else 'default'].")
@click.option("--lease-name", default=DEFAULT_LEASE_NAME, show_default=True,
              help="Name of the status writers' Lease (coordination.k8s.io/v1).")
@click.option("--interface", "interfaces", multiple=True, metavar="NAMESPACE/POD=INTERFACE",
              help="A workload's host-side interface, for policy (with -f or --from kube); repeatable. With "
                   "--from kube and none given, the node's pods are found in the kubelet's cgroups instead.")
@click.option("--pod-cgroups", envvar="MESHCORE_POD_CGROUPS", default=".", show_default=True, metavar="DIR",
              help="With --from kube: the kubelet's cgroup root, under which its kubepods (cgroupfs driver) or "
                   "kubepods.slice (systemd driver) holds the pods' cgroups (relative to the cgroup2 mount; '.' "
                   "is the kubelet's default --cgroup-root /) [env MESHCORE_POD_CGROUPS].")
@click.option("--metrics", default=DEFAULT_METRICS_ADDRESS, show_default=True,
              help="HOST:PORT for Prometheus metrics, or 'off'.")
@click.option("--proxy-ports", default=f"{PROXY_PORT_BASE}-{PROXY_PORT_BASE + PROXY_PORT_RANGE - 1}",
              show_default=True, metavar="FIRST-LAST",
              help="Ports the node proxy's listeners are given (on the node's addresses).")
@click.option("--poll", default=POLL_SECONDS, show_default=True, help="Seconds between looks at the source.")
@click.option("--flows-max-size", default="8MiB", show_default=True, metavar="SIZE",
              help="Size at which the flow journal is rotated (bytes, or with KiB, MiB, GiB).")
@click.option("--ca-socket", type=click.Path(path_type=Path), envvar="MESHCORE_CA_SOCKET", default=None,
              help="meshcore's CA (`meshcore ca serve`): turns on mutual TLS between meshed workloads "
                   "[env MESHCORE_CA_SOCKET].")
@click.option("--ca-token-file", type=click.Path(path_type=Path, exists=True), envvar="MESHCORE_CA_TOKEN_FILE",
              default=None, help="This node's token for the CA (`meshcore ca token NODE`) [env MESHCORE_CA_TOKEN_FILE].")
@click.option("--flows-keep", type=click.IntRange(min=0), default=3, show_default=True,
              help="Rotated flow journal files kept besides the current one (the oldest flows go first).")
@click.option("--flows-journal/--no-flows-journal", default=True, show_default=True,
              help="Keep flows on disk in the state directory; without it they are kept in memory only.")
@click.option("--flows-memory", default="8MiB", show_default=True, metavar="SIZE",
              help="Recent flows kept in memory, as the kernel and the node proxy reported them.")
@click.option("--flow-events", default=str(DEFAULT_FLOW_EVENT_RATE), show_default=True, metavar="RATE|all",
              help="Allowed flows per second the kernel reports one by one; past it, it counts them per "
                   "identity pair and they show as summaries. Drops are always reported.")
def agent_command(node: str, cgroup: str, ipv4: str, ipv6: str, proxy_ipv4: str, proxy_ipv6: str,
                  dns_resolvers: tuple[str, ...], state_dir: Path | None, pin_root: Path | None,
                  netns: str | None, labels: tuple[str, ...], objects_file: Path | None, files: tuple[str, ...],
                  from_source: str | None, context: str | None, kubeconfig: Path | None,
                  write_status: bool | None, lease_namespace: str | None, lease_name: str,
                  interfaces: tuple[str, ...], pod_cgroups: str, metrics: str, proxy_ports: str, poll: float, flows_max_size: str,
                  flows_keep: int, flows_journal: bool, flows_memory: str, flow_events: str,
                  ca_socket: Path | None, ca_token_file: Path | None) -> None:
    """Run the node agent: apply each new configuration to this node's kernel and proxy.

    Exactly one source: --objects FILE, -f PATH or --from kube. SIGHUP makes it look at
    the source at once; SIGTERM stops it (pinned programs keep enforcing; the node proxy
    stops). The metrics address also answers /healthz and /readyz (ready once a
    generation is applied).
    """
    if [objects_file is not None, bool(files), from_source is not None].count(True) != 1:
        raise click.UsageError("give the configuration with --objects FILE, -f PATH or --from kube (one of them)")
    if objects_file is not None and interfaces:
        raise click.UsageError("--interface goes with -f or --from kube; an objects file names its interfaces itself")
    kube_only = [flag for flag, value in (("--context", context), ("--kubeconfig", kubeconfig),
                                          ("--write-status", write_status)) if value]
    if from_source is None and kube_only:
        raise click.UsageError(f"{' and '.join(kube_only)} {'goes' if len(kube_only) == 1 else 'go'} with --from kube")
    try:
        journal = JournalLimits(parse_size(flows_max_size), flows_keep)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--flows-max-size") from None
    options = _compile_options(proxy_ports)
    try:
        memory = parse_size(flows_memory)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--flows-memory") from None
    rate = None if flow_events.strip().lower() == "all" else flow_events.strip()
    if rate is not None and not rate.isdigit():
        raise click.BadParameter(f"{flow_events!r}: expected a number of flows per second, or 'all'",
                                 param_hint="--flow-events")
    if (ca_socket is None) != (ca_token_file is None):
        raise click.UsageError("--ca-socket and --ca-token-file go together (the CA and this node's token for it)")
    svids = None
    if ca_socket is not None and ca_token_file is not None:
        from ._mtls import source_from_files  # noqa: PLC0415 - cryptography only with mutual TLS

        try:
            svids = source_from_files(ca_socket, node, ca_token_file)
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--ca-token-file") from None
    configure_logging(sys.stderr, logging.INFO)
    source: SnapshotSource
    writeback: StatusWriteBack | None = None
    if from_source == "kube":
        kube = _kube_source(node, context, kubeconfig, _interfaces(interfaces), pod_cgroups, netns)
        if write_status is not False:
            writeback = _status_writeback(kube, node, lease_namespace, lease_name)
        source = kube
    elif objects_file is not None:
        source = ObjectsFile(objects_file)
    else:
        source = ManifestFiles(files, _interfaces(interfaces))
    facts = NodeFacts(node, cgroup, state_dir or DEFAULT_STATE_ROOT / node, ipv4, ipv6, pin_root,
                      _pairs(labels, "--label", "KEY=VALUE"), netns, proxy_ipv4, proxy_ipv6, dns_resolvers)
    facts.state_dir.mkdir(parents=True, exist_ok=True)
    agent = NodeAgent(facts, options=options, journal=journal, flow_journal=flows_journal,
                      flow_event_rate=None if rate is None else int(rate), flow_memory=memory, svids=svids)

    def hand_over(update: Update, report: GenerationReport) -> None:
        if writeback is not None:  # an update of changes names only those: the leader reads every object
            writeback.submit(update.objects if update.changes is None else kube.objects)

    runner = AgentRunner(agent, source, poll=poll, metrics_address=metrics, settle_heap=True,
                         on_update=hand_over if writeback is not None else None)
    subscribe = getattr(source, "subscribe", None)
    if subscribe is not None:
        subscribe(runner.wake)  # a settled burst of API events is applied at once, not at the next poll
    runner.handle_signals()
    try:
        if writeback is not None:
            writeback.start()
        code = runner.run()
    finally:
        if writeback is not None:
            writeback.close()  # releases the Lease: another agent writes status at once
        close = getattr(source, "close", None)
        if close is not None:
            close()
    sys.exit(code)


def _kube_source(node: str, context: str | None, kubeconfig: Path | None,
                 interfaces: dict[WorkloadRef, str] | None, pod_cgroups: str, netns: str | None) -> KubeSource:
    """The Kubernetes source for this node; a usage error naming what is missing when it cannot be set up.

    Without ``interfaces`` it finds the node's pods under the kubelet's cgroup root
    ``pod_cgroups`` (relative to the cgroup2 mount), their host-side interfaces in ``netns``.
    """
    from ..kubesource import ConfigError, KubeSource  # noqa: PLC0415 - the 'kube' extra only when asked for
    from ..linux import HostError, cgroup2  # noqa: PLC0415

    root = None
    if interfaces is None:
        try:
            root = Path(pod_cgroups) if Path(pod_cgroups).is_absolute() else cgroup2() / pod_cgroups
        except HostError as exc:
            raise click.UsageError(f"--pod-cgroups: {exc}") from None
    try:
        return KubeSource(context=context, kubeconfig=kubeconfig, node=node, interfaces=interfaces,
                          pods_cgroup=root, host_netns=netns)
    except ConfigError as exc:
        raise click.UsageError(f"--from kube: {exc}") from None


def _status_writeback(source: KubeSource, node: str, namespace: str | None, lease: str) -> StatusWriteBack:
    """Status write-back over the source's connection, led through the Lease ``namespace/lease``."""
    from ..kubesource import SERVICE_ACCOUNT, in_cluster  # noqa: PLC0415 - the 'kube' extra only when asked for
    from ..kubestatus import LeaderElection, StatusWriteBack  # noqa: PLC0415

    if not namespace:
        account = SERVICE_ACCOUNT / "namespace"
        namespace = account.read_text(encoding="utf-8").strip() if in_cluster() and account.is_file() else "default"
    # Unique per process: an agent restarted on the same node is a new candidate, not the old holder.
    election = LeaderElection(source.api, namespace, lease, f"{node}-{uuid.uuid4().hex[:8]}")
    return StatusWriteBack(source, election)


def main() -> None:
    """``python -m meshcore.agent``."""
    agent_command.main(prog_name="meshcore agent")
