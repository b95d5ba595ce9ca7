"""The lab: run Kubernetes objects on this machine, reconcile them, and remove it all again."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import attrs

from .. import translate
from .._codes import with_mtls
from ..kube import KubeObject, load_paths
from ..model import Diagnostic, ProxyMode, Severity
from . import _cgroups as cgroups
from . import _fabric as fabric
from . import _netns as netns
from . import _procs as procs
from ._errors import LabError, lab_command
from ._exec import ignoring_interrupts, joiner, pod_command
from ._gateways import assign_gateway_addresses, our_gateways, our_ingresses
from ._outside import ensure_outside, remove_outside, run_outside
from ._machine import NETNS_ETC, bpffs_mount, cgroup2_mount, check_lab_name, require_root, tool
from ._ipam import LabRanges, lone_node_ranges, node_ranges
from ..agent import SourceError, read_objects_file
from ..agent._proxy import recorded_processes
from ._manifest import (
    Desired,
    assign_cluster_ips,
    desired_pods_of,
    desired_state,
    input_nodes,
    last_objects,
    rewrite_statuses,
    write_objects,
)
from ._agents import AGENT_CGROUP, AgentStatus, ensure_agents, stop_agent
from ._resolver import DNS_CGROUP, ensure_dns, stop_dns, write_table
from ._ca import ensure_ca
from ._placement import PlacementNode, lab_node_labels, place, unknown_nodes
from ._pods import create_pod, remove_path, start_containers, teardown_pod, wait_ready, write_hosts
from ._sidecar import ensure_sidecars, stop_sidecars, wait_serving
from ._state import (
    STATE_FILE,
    FabricRecord,
    LabState,
    NodeRecord,
    PodRecord,
    labs_up,
    lab_dir,
    locked,
    remember_shared_dir,
    remove_lock,
)
from ._status import LabStatus, UpResult, lab_status

#: The lab name used when none is given to a command that changes a lab.
DEFAULT_LAB = "lab"

Progress = Callable[[str], None]


class LabInputError(LabError):
    """The input has errors; nothing was changed. ``diagnostics`` lists them."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        count = len(self.diagnostics)
        first = "\n".join(f"  {d}" for d in self.diagnostics[:20])
        more = f"\n  ... and {count - 20} more" if count > 20 else ""
        super().__init__(f"the input has {count} error(s); nothing was changed:\n{first}{more}")


def _dedupe(diagnostics: Sequence[Diagnostic]) -> list[Diagnostic]:
    seen: set[tuple[str, str, str, int, str]] = set()
    out = []
    for d in diagnostics:
        key = (d.code, d.message, d.source.file, d.source.line, d.field)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _sidecar_log(record: PodRecord) -> str:
    return record.sidecar.log if record.sidecar is not None else "none"


class Lab:
    """One named lab on this machine; its state lives in ``/run/meshcore/lab/<name>``."""

    def __init__(self, name: str) -> None:
        self.name = check_lab_name(name)
        self.dir = lab_dir(name)

    def __repr__(self) -> str:
        return f"Lab({self.name!r})"

    # ------------------------------------------------------------------ discovery

    @staticmethod
    def names() -> list[str]:
        """The labs that are up on this machine."""
        return labs_up()

    @classmethod
    def select(cls, name: str | None) -> Lab:
        """The lab a command that only reads one looks at: the named lab, else the only lab up.

        An error when none or several are up (see :meth:`to_change` for commands that change one).
        """
        if name:
            return cls(name)
        names = labs_up()
        if len(names) == 1:
            return cls(names[0])
        if len(names) > 1:
            raise LabError(f"several labs are up ({', '.join(names)}); choose one with --name")
        raise LabError("no lab is up; start one with `meshcore lab up -f FILES`")

    @classmethod
    def to_change(cls, name: str | None) -> Lab:
        """The lab a command that changes or removes one acts on: the named lab, else the one named ``lab``.

        Without a name it never picks a lab of another name: when ``lab`` is not up but
        others are, it raises :class:`LabError` naming them (so nothing is changed).
        """
        if name:
            return cls(name)
        target = cls(DEFAULT_LAB)
        others = [n for n in labs_up() if n != DEFAULT_LAB]
        if target.is_up or not others:
            return target
        if len(others) == 1:
            raise LabError(f"no lab named {DEFAULT_LAB!r} is up; the lab up is {others[0]!r}: "
                           f"pass --name {others[0]}")
        raise LabError(f"no lab named {DEFAULT_LAB!r} is up; the labs up are {', '.join(map(repr, others))}: "
                       "pass --name with one of them")

    @property
    def is_up(self) -> bool:
        """True when this lab has state on this machine."""
        return (self.dir / STATE_FILE).is_file()

    def _load(self) -> LabState:
        if not self.is_up:
            others = labs_up()
            hint = f" (labs up: {', '.join(others)})" if others else ""
            raise LabError(f"lab {self.name!r} is not up{hint}")
        return LabState.load(self.dir)

    # ------------------------------------------------------------------ up

    def up(
        self,
        files: Sequence[str | Path],
        *,
        ranges: LabRanges | None = None,
        nodes: int | None = None,
        timeout: float = 20.0,
        progress: Progress | None = None,
        mtls: bool | None = None,
    ) -> UpResult:
        """Bring the lab to the objects in ``files``; a lab that is up is reconciled.

        Added objects appear, removed ones go, pods whose spec is unchanged keep running.
        ``nodes`` makes a new lab of that many nodes (``node-1`` ...) joined by a fabric;
        without it a new lab has one node, ``lab-<name>``. ``mtls`` makes a new lab whose
        meshed traffic between nodes goes in mutual-TLS tunnels (the lab runs meshcore's CA;
        see :mod:`meshcore.lab._ca`). Invalid input raises
        :class:`LabInputError` before anything changes.
        """
        say = progress or (lambda _: None)
        require_root()
        tool("ip")
        if nodes is not None and nodes < 1:
            raise LabError(f"--nodes {nodes}: a lab has at least one node")
        objects, diagnostics = load_paths(files)
        if any(d.severity is Severity.ERROR for d in diagnostics):
            raise LabInputError([d for d in diagnostics if d.severity is Severity.ERROR])
        checked = translate(objects=objects)
        desired = desired_state(objects)
        found = _dedupe([*diagnostics, *checked.diagnostics, *desired.diagnostics])
        if self._with_mtls(mtls):
            found = with_mtls(found)  # the agents will run it
        errors = [d for d in found if d.severity is Severity.ERROR]
        if errors:
            raise LabInputError(errors)
        modes = {str(w.ref): w.proxy_mode for w in checked.snapshot.workloads}
        with locked(self.name), procs.forks_end_on_signals():
            state = self._load_or_init(ranges, nodes, mtls)
            given = [f if str(f) == "-" else Path(f).resolve() for f in files]
            return self._reconcile(state, desired, [str(f) for f in given], found, timeout, say, modes)

    def _with_mtls(self, mtls: bool | None) -> bool:
        """Whether the lab runs mutual TLS after this `up`: as asked, else as it is up (a new lab: without)."""
        if mtls is not None:
            return mtls
        return self.is_up and LabState.load(self.dir).mtls

    def _load_or_init(self, ranges: LabRanges | None, nodes: int | None, mtls: bool | None = None) -> LabState:
        if self.is_up:
            state = LabState.load(self.dir)
            if mtls is not None and mtls != state.mtls:
                raise LabError(f"lab {self.name!r} is up {'with' if state.mtls else 'without'} mutual TLS; run "
                               f"`{lab_command(self.name, 'down')}` first to change --mtls")
            if ranges is not None and ranges.to_data() != state.ranges:
                raise LabError(f"lab {self.name!r} is up with ranges {state.ranges}; run "
                               f"`{lab_command(self.name, 'down')}` first to change them")
            if nodes is not None and (state.fabric is None or nodes != len(state.nodes)):
                has = f"{len(state.nodes)} nodes" if state.fabric is not None else f"one node ({state.first_node.name})"
                raise LabError(f"lab {self.name!r} is up with {has}; run `{lab_command(self.name, 'down')}` "
                               "first to change --nodes")
            return state
        ranges = ranges or LabRanges()
        cgroup_parent = cgroup2_mount() / "meshcore"
        root = cgroup_parent / self.name
        state = LabState(name=self.name, dir=self.dir, cgroup_root=str(root), ranges=ranges.to_data(),
                         mtls=bool(mtls))
        if nodes is None:
            name = f"lab-{self.name}"
            state.nodes[name] = NodeRecord(name, f"mc-{self.name}-node", str(root), str(self.dir),
                                           str(bpffs_mount() / "meshcore"), lone_node_ranges(ranges))
        else:
            pins = bpffs_mount() / "meshcore" / f"lab-{self.name}"
            for number in range(1, nodes + 1):
                name = f"node-{number}"
                state.nodes[name] = NodeRecord(
                    name, fabric.node_netns_name(self.name, name), str(root / name), str(self.dir / "nodes" / name),
                    str(pins), node_ranges(ranges, number), fabric_link=fabric.NODE_LINK)
            state.fabric = FabricRecord(fabric.fabric_netns_name(self.name), fabric.BRIDGE)
        self.dir.mkdir(parents=True, exist_ok=True)
        for shared in (cgroup_parent, NETNS_ETC):
            if not shared.exists():
                remember_shared_dir(shared)
        state.save()
        return state

    def _ensure_nodes(self, state: LabState) -> None:
        """Create the fabric and every node that does not exist yet (each recorded before it is made)."""
        (self.dir / "logs").mkdir(exist_ok=True)
        (self.dir / "pods").mkdir(exist_ok=True)
        if state.fabric is not None and not (state.fabric.setup == "ready" and netns.exists(state.fabric.netns)):
            state.fabric = attrs.evolve(state.fabric, setup="creating")
            state.save()
            fabric.setup_fabric(state.fabric)
            state.fabric = attrs.evolve(state.fabric, setup="ready")
            state.save()
        made = False
        for node in state.nodes.values():
            Path(node.state_dir).mkdir(parents=True, exist_ok=True)
            cgroups.create(Path(node.cgroup) / AGENT_CGROUP)
            cgroups.create(Path(node.cgroup) / DNS_CGROUP)
            if node.setup == "ready" and netns.exists(node.netns):
                continue
            node.setup = "creating"
            state.save()
            netns.setup_node(node.netns, node.ranges)
            if state.fabric is not None:
                fabric.connect_node(state.fabric, node)
            node.setup = "ready"
            state.save()
            made = True
        if state.fabric is not None and made:
            self._route(state)

    @staticmethod
    def _route(state: LabState) -> None:
        """Each node's fabric port and the routes of nodes and pods as the nodes being up or down says."""
        assert state.fabric is not None
        for node in state.nodes.values():
            fabric.set_port(state.fabric, node, up=not node.down)
        fabric.route_nodes(list(state.nodes.values()))
        fabric.route_pods(list(state.pods.values()), state.nodes)

    def _reconcile(self, state: LabState, desired: Desired, files: list[str], diagnostics: list[Diagnostic],
                   timeout: float, say: Progress, modes: dict[str, ProxyMode]) -> UpResult:
        ranges = LabRanges.from_data(state.ranges)
        self._ensure_nodes(state)
        state.files = files
        services = assign_cluster_ips(desired.services, state.services, ranges)
        # A Gateway is served as a Service of its name: its assigned VIP is kept with the
        # ClusterIPs, so it stays stable across runs and pods resolve the Gateway's name.
        edge = [*our_gateways(desired.others), *our_ingresses(desired.others)]
        gateways = assign_gateway_addresses(edge, services, state.services, ranges)
        state.services = {**services, **gateways}
        state.save()
        wanted = {p.key: p for p in desired.pods}
        stale = [r for k, r in state.pods.items()
                 if r.setup != "ready" or (k in wanted and wanted[k].spec_hash != r.spec_hash)]
        stale_keys = {r.key for r in stale}
        leaving = [r for k, r in state.pods.items() if k not in wanted and k not in stale_keys]
        given_nodes = input_nodes(desired.others)
        labels = {name: lab_node_labels(name, given_nodes.get(name)) for name in state.nodes}
        kept = {k: r.node for k, r in state.pods.items() if k in wanted and k not in stale_keys}
        placement, placed_diagnostics = place(
            desired.pods, [PlacementNode(n.name, labels[n.name], not n.down) for n in state.nodes.values()], kept)
        diagnostics = [*diagnostics, *placed_diagnostics, *unknown_nodes(given_nodes, list(state.nodes))]
        warnings: list[str] = []
        with self._networks(state, ranges) as network:
            for record in stale:
                say(f"replacing pod {record.key}")
                teardown_pod(state, record, network(record.node))
            new = [p for p in desired.pods if p.key not in state.pods]
            for pod in new:
                node = state.nodes[placement[pod.key]]
                say(f"creating pod {pod.key}" + (f" on {node.name}" if len(state.nodes) > 1 else ""))
                create_pod(state, pod, network(node.name), node)
            if new and any(n.down for n in state.nodes.values()):
                fabric.route_pods([state.pods[p.key] for p in new], state.nodes)
            write_hosts(state)
            warnings += write_table(state, desired.others)
            ensure_dns(state)
            started = [p.key for p in new]
            restarted = start_containers(state, desired, new, timeout)
            wait_ready(state, [*started, *restarted], timeout)
            generation = write_objects(state, desired, labels)
            if state.mtls:
                ensure_ca(state)
            agents = ensure_agents(state, generation, timeout, warnings)
            # Sidecars start once their agent serves them (and steers through them once they serve);
            # those of pods that left sidecar mode stop once their agent no longer steers through them.
            warnings += self._sidecars(state, modes, timeout, say)
            ensure_outside(state, list(gateways.values()))
            for record in leaving:
                say(f"removing pod {record.key}")
                teardown_pod(state, record, network(record.node))
        warnings += [f"node {n.name} is down: its pods do not run until "
                     f"`{lab_command(self.name, 'node', 'up', n.name)}`"
                     for n in state.nodes.values() if n.down and any(r.node == n.name for r in state.pods.values())]
        notes = sorted({n for key in wanted for n in state.pods[key].notes})
        state.notes = notes
        state.save()
        replaced = [r.key for r in stale if r.key in wanted]
        return UpResult(
            name=self.name,
            created=tuple(k for k in started if k not in replaced),
            removed=tuple(r.key for r in [*stale, *leaving] if r.key not in wanted),
            restarted=tuple(sorted({*replaced, *restarted})),
            kept=tuple(k for k in wanted if k not in started and k not in restarted),
            not_ready=tuple(k for k in wanted if not state.pods[k].ready),
            diagnostics=tuple(d for d in diagnostics if d.severity is not Severity.ERROR),
            notes=tuple(notes),
            agents=tuple(agents),
            warnings=tuple(warnings),
            placement={k: state.pods[k].node for k in wanted},
        )

    @staticmethod
    def _sidecars(state: LabState, modes: dict[str, ProxyMode], timeout: float, say: Progress) -> list[str]:
        """Start the sidecars pods in sidecar mode lack and wait until they serve; stop those no pod wants."""
        started = ensure_sidecars(state, modes)
        for key in started:
            say(f"starting the sidecar of {key}")
        late = wait_serving(state, started, timeout)
        warnings = [f"the sidecar of {key} does not serve yet (its log: {_sidecar_log(state.pods[key])}); its pod is "
                    "handled in node mode until it does" for key in late]
        for key in stop_sidecars(state, modes):
            say(f"stopped the sidecar of {key}")
        return warnings

    @contextlib.contextmanager
    def _networks(self, state: LabState, ranges: LabRanges) -> Iterator[Callable[[str], netns.NodeNetwork]]:
        """A function giving each node's open netlink handle (opened on first use, all closed after)."""
        with contextlib.ExitStack() as stack:
            opened: dict[str, netns.NodeNetwork] = {}

            def network(name: str) -> netns.NodeNetwork:
                if name not in opened:
                    node = state.nodes[name]
                    opened[name] = stack.enter_context(netns.NodeNetwork(node.netns, ranges, node.ranges))
                return opened[name]

            yield network

    # ------------------------------------------------------------------ nodes

    def node_down(self, name: str, *, timeout: float = 20.0) -> list[AgentStatus]:
        """Take a node down as if it lost power and its link: its agent, proxy and pods stop.

        Its fabric port goes down and every other node routes its pod subnet as
        unreachable, so connections to its pods fail at once; its pods turn not ready in
        what the other agents get, which take them out of every service. Returns the
        other nodes' agents after they applied that.
        """
        require_root()
        with locked(self.name), procs.forks_end_on_signals():
            state = self._load()
            node = self._node(state, name)
            node.down = True
            state.save()
            stop_agent(state, node)
            stop_dns(state, node)
            for record in state.pods.values():
                if record.node == node.name:
                    procs.stop([(p.pid, p.start_time) for p in record.processes])
                    cgroups.kill(Path(record.cgroup))
            self._route(state)
            for key, record in list(state.pods.items()):
                if record.node == node.name:
                    state.pods[key] = attrs.evolve(record, ready=False)
            generation = rewrite_statuses(state)
            warnings: list[str] = []
            agents = ensure_agents(state, generation, timeout, warnings)
        if warnings:
            raise LabError(f"node {name} is down, but: " + "; ".join(warnings))
        return agents

    def node_up(self, name: str, *, timeout: float = 20.0) -> list[AgentStatus]:
        """Bring a node that is down back: its link, routes, pods' containers and agent.

        Returns every node's agent after they applied the generation with its pods ready.
        """
        require_root()
        with locked(self.name), procs.forks_end_on_signals():
            state = self._load()
            node = self._node(state, name)
            node.down = False
            state.save()
            self._route(state)
            ensure_dns(state)
            pods = [p for p in desired_pods_of(last_objects(state), state) if state.pods[p.key].node == name]
            restarted = start_containers(state, Desired(tuple(pods), (), (), ()), [], timeout)
            wait_ready(state, restarted, timeout)
            generation = rewrite_statuses(state)
            warnings: list[str] = []
            agents = ensure_agents(state, generation, timeout, warnings)
            modes = {str(w.ref): w.proxy_mode for w in translate(objects=last_objects(state)).snapshot.workloads}
            warnings += self._sidecars(state, modes, timeout, lambda _: None)
        if warnings:
            raise LabError(f"node {name} is up, but: " + "; ".join(warnings))
        return agents

    def _node(self, state: LabState, name: str) -> NodeRecord:
        if state.fabric is None:
            raise LabError(f"lab {self.name!r} has one node; taking nodes down needs a lab of several "
                           "(made by `meshcore lab up --name NAME --nodes N -f FILES`)")
        node = state.nodes.get(name)
        if node is None:
            raise LabError(f"lab {self.name!r} has no node {name!r} (its nodes: {', '.join(state.nodes)})")
        return node

    # ------------------------------------------------------------------ agent

    def objects(self) -> list[KubeObject]:
        """The enriched objects the lab last handed to its node agent (what the agent translates)."""
        state = self._load()
        try:
            return list(read_objects_file(state.first_node.objects_path).objects)
        except SourceError as exc:
            raise LabError(f"cannot read the objects of lab {self.name!r}: {exc}") from exc

    # ------------------------------------------------------------------ down

    def down(self) -> list[str]:
        """Remove everything this lab created (also after a crash); returns what was removed.

        Raises :class:`LabError` listing anything that could not be removed.
        """
        require_root()
        if not self.dir.exists():
            return []
        removed: list[str] = []
        problems: list[str] = []
        with locked(self.name), procs.forks_end_on_signals():
            if not (self.dir / STATE_FILE).exists():
                # A crash before the first record: nothing else can exist.
                remove_path(self.dir)
                remove_lock(self.name)
                return [str(self.dir)]
            state = LabState.load(self.dir)
            processes = [(p.pid, p.start_time) for r in state.pods.values()
                         for p in (*r.processes, *((r.sidecar,) if r.sidecar else ()))]
            if state.ca is not None:
                processes.append((state.ca.pid, state.ca.start_time))
            for node in state.nodes.values():
                if node.agent:
                    processes.append((node.agent.pid, node.agent.start_time))
                if node.dns:
                    processes.append((node.dns.pid, node.dns.start_time))
                processes += recorded_processes(Path(node.state_dir))  # the node Envoy the agent started
            procs.stop(processes)
            if not cgroups.kill(Path(state.cgroup_root)):
                problems.append(f"processes in {state.cgroup_root} did not exit")
            removed.append(f"{len(processes)} process(es)")
            for node in state.nodes.values():
                problems += self._destroy_datapath(node)
                removed.append(f"datapath pins {node.bpf_pin_dir}")
            for node in state.nodes.values():
                # The pins' directories (a lab's own, then meshcore's), once no other lab pins there.
                for directory in (Path(node.pin_root), Path(node.pin_root).parent):
                    if directory.name in (f"lab-{self.name}", "meshcore"):
                        with contextlib.suppress(OSError):
                            directory.rmdir()
            for record in state.pods.values():
                netns.remove(record.netns)
                remove_path(record.etc_dir)
            remove_outside(state)
            namespaces = [n.netns for n in state.nodes.values()]
            if state.fabric is not None:
                namespaces.append(state.fabric.netns)
            for name in namespaces:
                netns.remove(name)
            removed.append(f"{len(state.pods) + len(namespaces)} network namespace(s)")
            problems += cgroups.remove_tree(Path(state.cgroup_root))
            removed.append(f"cgroup {state.cgroup_root}")
            remove_path(self.dir)
            removed.append(f"state {self.dir}")
            remove_lock(self.name)
        leftovers = [n for n in [*namespaces, *(r.netns for r in state.pods.values())] if netns.exists(n)]
        problems += [f"network namespace {n} still exists" for n in leftovers]
        if problems:
            raise LabError(f"lab {self.name!r} is down, but some things could not be removed:\n  "
                           + "\n  ".join(problems))
        return removed

    def _destroy_datapath(self, node: NodeRecord) -> list[str]:
        try:
            from ._datapath import destroy  # noqa: PLC0415 - needs libbpf only when used
        except ImportError as exc:
            pins = Path(node.bpf_pin_dir)
            remove_path(pins)
            return [f"datapath unavailable ({exc}); removed {pins}"] if pins.exists() else []
        return destroy(node.name, node.cgroup, node.bpf_pin_dir)

    # ------------------------------------------------------------------ status

    def status(self) -> LabStatus:
        """Pods, services and the agent as they are now."""
        return lab_status(self._load())

    # ------------------------------------------------------------------ exec

    def pod(self, target: str, namespace: str | None = None) -> PodRecord:
        """The pod named by ``NAME``, ``pod/NAME`` or ``deploy/NAME`` (its first pod)."""
        state = self._load()
        namespace = namespace or "default"
        kind, _, name = target.rpartition("/")
        kind = kind.lower()
        if kind in ("deploy", "deployment", "deployments", "deploy.apps", "deployment.apps"):
            owned = sorted((r for r in state.pods.values()
                            if r.namespace == namespace and r.owner == f"Deployment/{name}"),
                           key=lambda r: (not any(procs.alive(p.pid, p.start_time) for p in r.processes),
                                          r.ordinal, r.name))
            if not owned:
                raise LabError(f"no pods of Deployment {namespace}/{name} in lab {self.name!r}")
            return owned[0]
        if kind not in ("", "pod", "pods", "po"):
            raise LabError(f"{target!r}: use POD, pod/POD or deploy/DEPLOYMENT")
        record = state.pods.get(f"{namespace}/{name}")
        if record is None:
            elsewhere = sorted(r.namespace for r in state.pods.values() if r.name == name)
            hint = f" (it is in namespace {', '.join(elsewhere)}: add -n)" if elsewhere else ""
            raise LabError(f"no pod {namespace}/{name} in lab {self.name!r}{hint}")
        return record

    def _running_pod(self, target: str, namespace: str | None) -> PodRecord:
        """The pod, refusing one whose node is down (nothing runs there)."""
        record = self.pod(target, namespace)
        node = LabState.load(self.dir).nodes.get(record.node)
        if node is not None and node.down:
            raise LabError(f"pod {record.key} is on node {node.name}, which is down "
                           f"(`{lab_command(self.name, 'node', 'up', node.name)}`)")
        return record

    def exec(self, target: str, argv: Sequence[str], *, namespace: str | None = None) -> int:
        """Run ``argv`` in the pod's namespace and cgroup with this terminal; its exit code.

        A command killed by a signal gives 128 + the signal number, as a shell reports it.
        """
        record = self._running_pod(target, namespace)
        command, env = pod_command(record, argv)
        with ignoring_interrupts():
            result = subprocess.run(command, env=env, cwd=record.workdir, check=False,
                                    preexec_fn=joiner(record.cgroup))
        return 128 - result.returncode if result.returncode < 0 else result.returncode

    def run_outside(self, argv: Sequence[str], *, input: bytes | None = None,
                    timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` on the lab's internet client, outside every pod network (see ``_outside``)."""
        return run_outside(self._load(), argv, input=input, timeout=timeout)

    def run(self, target: str, argv: Sequence[str], *, namespace: str | None = None,
            input: bytes | None = None, timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` in the pod and capture its output (for programs and tests)."""
        record = self._running_pod(target, namespace)
        command, env = pod_command(record, argv)
        return subprocess.run(command, env=env, cwd=record.workdir, input=input, capture_output=True,
                              timeout=timeout, check=False, preexec_fn=joiner(record.cgroup))
