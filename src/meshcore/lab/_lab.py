"""The lab: run Kubernetes objects on this machine, reconcile them, and remove it all again."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .. import translate
from ..kube import KubeObject, load_paths
from ..model import Diagnostic, Severity
from . import _cgroups as cgroups
from . import _hosts as hosts
from . import _netns as netns
from . import _procs as procs
from ._containers import PodContext, ProcessSpec, container_process, python_env
from ._errors import LabError
from ._gateways import assign_gateway_addresses, enrich_gateway, our_gateways
from ._host import NETNS_ETC, bpffs_mount, cgroup2_mount, check_lab_name, require_root, tool
from ._ipam import LabRanges, next_pod_index
from ._manifest import (
    Desired,
    DesiredPod,
    assign_cluster_ips,
    desired_state,
    enrich_pod,
    enrich_service,
    object_entry,
    objects_from_entries,
)
from ._ready import bound_ports
from ._state import (
    AGENT_LOG,
    OBJECTS_VERSION,
    STATE_FILE,
    LabState,
    PodRecord,
    ProcRecord,
    labs_up,
    lab_dir,
    locked,
    remember_shared_dir,
    remove_lock,
    write_json,
)

#: The lab name used when none is given and no lab is up.
DEFAULT_LAB = "lab"
AGENT_CGROUP = "_agent"

Progress = Callable[[str], None]


class LabInputError(LabError):
    """The input has errors; nothing was changed. ``diagnostics`` lists them."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        count = len(self.diagnostics)
        first = "\n".join(f"  {d}" for d in self.diagnostics[:20])
        more = f"\n  ... and {count - 20} more" if count > 20 else ""
        super().__init__(f"the input has {count} error(s); nothing was changed:\n{first}{more}")


@attrs.frozen
class ContainerStatus:
    """A container's process as the lab sees it."""

    name: str
    pid: int
    running: bool
    command: tuple[str, ...]
    log: str


@attrs.frozen
class PodStatus:
    """A pod: where it runs, its addresses, phase and containers."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    addresses: tuple[str, ...]
    phase: str
    ready: bool
    owner: str
    netns: str
    cgroup: str
    containers: tuple[ContainerStatus, ...]
    notes: tuple[str, ...] = ()

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {
            "namespace": self.namespace, "name": self.name, "labels": dict(self.labels),
            "addresses": list(self.addresses), "phase": self.phase, "ready": self.ready,
            "owner": self.owner, "netns": self.netns, "cgroup": self.cgroup,
            "containers": [{"name": c.name, "pid": c.pid, "running": c.running,
                            "command": list(c.command), "log": c.log} for c in self.containers],
            "notes": list(self.notes),
        }


@attrs.frozen
class ServiceStatus:
    """A service: its ClusterIPs and ports."""

    namespace: str
    name: str
    cluster_ips: tuple[str, ...]
    ports: tuple[Mapping[str, Any], ...]

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {"namespace": self.namespace, "name": self.name, "clusterIPs": list(self.cluster_ips),
                "ports": [dict(p) for p in self.ports]}


@attrs.frozen
class AgentStatus:
    """The node agent: whether it runs and what it last applied."""

    running: bool
    pid: int
    wanted_generation: int
    applied_generation: int
    ok: bool
    error: str
    frontends: int
    log: str
    #: The node proxy as the agent reports it (``running``, ``pid``, ``listeners``, ...).
    proxy: Mapping[str, Any] = attrs.field(factory=dict)
    #: Each raw Envoy config as Envoy took it: ``kind``, ``namespace``, ``name``, ``accepted``,
    #: ``reason`` and ``errors`` (resource index, type, name and Envoy's message).
    config_status: tuple[Mapping[str, Any], ...] = ()

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {"running": self.running, "pid": self.pid, "wantedGeneration": self.wanted_generation,
                "appliedGeneration": self.applied_generation, "ok": self.ok, "error": self.error,
                "frontends": self.frontends, "log": self.log, "proxy": dict(self.proxy),
                "configStatus": [dict(c) for c in self.config_status]}


@attrs.frozen
class LabStatus:
    """Everything `lab status` shows."""

    name: str
    node: str
    node_netns: str
    cgroup: str
    files: tuple[str, ...]
    pods: tuple[PodStatus, ...]
    services: tuple[ServiceStatus, ...]
    agent: AgentStatus
    notes: tuple[str, ...] = ()

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {
            "name": self.name, "node": self.node, "nodeNetns": self.node_netns, "cgroup": self.cgroup,
            "files": list(self.files), "agent": self.agent.to_data(),
            "pods": [p.to_data() for p in self.pods],
            "services": [s.to_data() for s in self.services],
            "notes": list(self.notes),
        }


@attrs.frozen
class UpResult:
    """What one `lab up` changed."""

    name: str
    created: tuple[str, ...]
    removed: tuple[str, ...]
    restarted: tuple[str, ...]
    kept: tuple[str, ...]
    not_ready: tuple[str, ...]
    diagnostics: tuple[Diagnostic, ...]
    notes: tuple[str, ...]
    agent: AgentStatus | None
    warnings: tuple[str, ...] = ()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_netns_name(lab: str, namespace: str, name: str) -> str:
    """``mc-<lab>.<namespace>.<pod>`` (dots cannot occur in lab or namespace names)."""
    full = f"mc-{lab}.{namespace}.{name}"
    if len(full) <= 200:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    return f"{full[:189]}-{digest}"


def _dedupe(diagnostics: Sequence[Diagnostic]) -> list[Diagnostic]:
    seen: set[tuple[str, str, str, int, str]] = set()
    out = []
    for d in diagnostics:
        key = (d.code, d.message, d.source.file, d.source.line, d.field)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _remove_path(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


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
    def select(cls, name: str | None, *, default: str | None = None) -> Lab:
        """The named lab, else the only lab up, else ``default``; an error when ambiguous."""
        if name:
            return cls(name)
        names = labs_up()
        if len(names) == 1:
            return cls(names[0])
        if len(names) > 1:
            raise LabError(f"several labs are up ({', '.join(names)}); choose one with --name")
        if default is not None:
            return cls(default)
        raise LabError("no lab is up; start one with `meshcore lab up -f FILES`")

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
        timeout: float = 20.0,
        progress: Progress | None = None,
    ) -> UpResult:
        """Bring the lab to the objects in ``files``; a lab that is up is reconciled.

        Added objects appear, removed ones go, pods whose spec is unchanged keep running.
        Invalid input raises :class:`LabInputError` before anything changes.
        """
        say = progress or (lambda _: None)
        require_root()
        tool("ip")
        objects, diagnostics = load_paths(files)
        if any(d.severity is Severity.ERROR for d in diagnostics):
            raise LabInputError([d for d in diagnostics if d.severity is Severity.ERROR])
        checked = translate(objects=objects)
        desired = desired_state(objects)
        found = _dedupe([*diagnostics, *checked.diagnostics, *desired.diagnostics])
        errors = [d for d in found if d.severity is Severity.ERROR]
        if errors:
            raise LabInputError(errors)
        with locked(self.name), procs.forks_end_on_signals():
            state = self._load_or_init(ranges)
            given = [f if str(f) == "-" else Path(f).resolve() for f in files]
            return self._reconcile(state, desired, [str(f) for f in given], found, timeout, say)

    def _load_or_init(self, ranges: LabRanges | None) -> LabState:
        if self.is_up:
            state = LabState.load(self.dir)
            if ranges is not None and ranges.to_data() != state.ranges:
                raise LabError(f"lab {self.name!r} is up with ranges {state.ranges}; run "
                               "`meshcore lab down` first to change them")
            return state
        ranges = ranges or LabRanges()
        cgroup_parent = cgroup2_mount() / "meshcore"
        node = f"lab-{self.name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        state = LabState(
            name=self.name, dir=self.dir, node_name=node, node_netns=f"mc-{self.name}-node",
            cgroup_root=str(cgroup_parent / self.name),
            bpf_pin_dir=str(bpffs_mount() / "meshcore" / node), ranges=ranges.to_data(),
        )
        for shared in (cgroup_parent, NETNS_ETC):
            if not shared.exists():
                remember_shared_dir(shared)
        state.save()
        return state

    def _ensure_node(self, state: LabState, ranges: LabRanges) -> None:
        (self.dir / "logs").mkdir(exist_ok=True)
        (self.dir / "pods").mkdir(exist_ok=True)
        cgroups.create(Path(state.cgroup_root) / AGENT_CGROUP)
        if state.node_setup == "ready" and netns.exists(state.node_netns):
            return
        state.node_setup = "creating"
        state.save()
        netns.setup_node(state.node_netns, ranges)
        state.node_setup = "ready"
        state.save()

    def _reconcile(self, state: LabState, desired: Desired, files: list[str], diagnostics: list[Diagnostic],
                   timeout: float, say: Progress) -> UpResult:
        ranges = LabRanges.from_data(state.ranges)
        self._ensure_node(state, ranges)
        state.files = files
        services = assign_cluster_ips(desired.services, state.services, ranges)
        # A Gateway is served as a Service of its name: its assigned VIP is kept with the
        # ClusterIPs, so it stays stable across runs and pods resolve the Gateway's name.
        gateways = assign_gateway_addresses(our_gateways(desired.others), services, state.services, ranges)
        state.services = {**services, **gateways}
        state.save()
        wanted = {p.key: p for p in desired.pods}
        stale = [r for k, r in state.pods.items()
                 if r.setup != "ready" or (k in wanted and wanted[k].spec_hash != r.spec_hash)]
        stale_keys = {r.key for r in stale}
        leaving = [r for k, r in state.pods.items() if k not in wanted and k not in stale_keys]
        warnings: list[str] = []
        with netns.NodeNetwork(state.node_netns, ranges) as net:
            for record in stale:
                say(f"replacing pod {record.key}")
                self._teardown_pod(state, record, net)
            new = [p for p in desired.pods if p.key not in state.pods]
            for pod in new:
                say(f"creating pod {pod.key}")
                self._create_pod(state, pod, net, ranges)
            self._write_hosts(state)
            started = [p.key for p in new]
            restarted = self._start_containers(state, desired, new, timeout)
            self._wait_ready(state, [*started, *restarted], timeout)
            generation = self._write_objects(state, desired, ranges)
            agent = self._ensure_agent(state, generation, timeout, warnings)
            for record in leaving:
                say(f"removing pod {record.key}")
                self._teardown_pod(state, record, net)
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
            agent=agent,
            warnings=tuple(warnings),
        )

    # ------------------------------------------------------------------ pods

    def _create_pod(self, state: LabState, pod: DesiredPod, net: netns.NodeNetwork, ranges: LabRanges) -> None:
        index = next_pod_index(ranges, {r.index for r in state.pods.values()})
        ipv4, ipv6 = ranges.pod_addresses(index)
        name = pod_netns_name(self.name, pod.namespace, pod.name)
        record = PodRecord(
            namespace=pod.namespace, name=pod.name, netns=name, host_veth=f"mc{index}",
            cgroup=str(Path(state.cgroup_root) / pod.namespace / pod.name),
            etc_dir=str(NETNS_ETC / name), workdir=str(self.dir / "pods" / f"{pod.namespace}_{pod.name}"),
            index=index, ipv4=ipv4, ipv6=ipv6, spec_hash=pod.spec_hash, owner=pod.owner,
            ordinal=pod.ordinal, uid=str(uuid.uuid4()), created_at=time.time(), labels=pod.labels,
        )
        # Write-ahead: the record names everything below before any of it exists.
        state.pods[pod.key] = record
        state.save()
        netns.setup_pod_namespace(name)
        net.add_pod(name, record.host_veth, ipv4, ipv6)
        cgroups.create(Path(record.cgroup))
        Path(record.etc_dir).mkdir(parents=True, exist_ok=True)
        Path(record.workdir).mkdir(parents=True, exist_ok=True)
        state.pods[pod.key] = attrs.evolve(record, setup="ready")
        state.save()

    def _teardown_pod(self, state: LabState, record: PodRecord, net: netns.NodeNetwork | None) -> None:
        procs.stop([(p.pid, p.start_time) for p in record.processes])
        cgroup = Path(record.cgroup)
        cgroups.kill(cgroup)
        netns.remove(record.netns)
        if net is not None:
            # The pod's namespace may linger while the kernel frees it: free the name now.
            net.remove_link(record.host_veth)
        cgroups.remove_tree(cgroup)
        with contextlib.suppress(OSError):
            cgroup.parent.rmdir()  # the namespace's cgroup, once its last pod is gone
        _remove_path(record.etc_dir)
        _remove_path(record.workdir)
        del state.pods[record.key]
        state.save()

    def _write_hosts(self, state: LabState) -> None:
        entries = [hosts.HostEntry(s.namespace, s.name, s.cluster_ips)
                   for s in state.services.values() if s.cluster_ips]
        nsswitch = hosts.render_nsswitch()
        for record in state.pods.values():
            etc = Path(record.etc_dir)
            if not etc.is_dir():
                continue
            text = hosts.render(self.name, record.namespace, record.name, record.addresses, entries)
            hosts.write_in_place(etc / "hosts", text)
            hosts.write_in_place(etc / "nsswitch.conf", nsswitch)

    def _base_env(self, state: LabState, pod: DesiredPod, record: PodRecord) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "HOSTNAME": pod.name,
            "LANG": os.environ.get("LANG") or "C.UTF-8",
        }
        if pod.spec.get("enableServiceLinks", True) is not False:
            env.update(self._service_links(state, pod.namespace))
        env.update({
            "POD_NAME": pod.name,
            "POD_NAMESPACE": pod.namespace,
            "POD_IP": record.ipv4,
            "POD_IPS": ",".join(record.addresses),
            "NODE_NAME": state.node_name,
        })
        return env

    def _service_links(self, state: LabState, namespace: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for service in state.services.values():
            if service.namespace != namespace or not service.cluster_ips or not service.ports:
                continue
            prefix = service.name.upper().replace("-", "_")
            env[f"{prefix}_SERVICE_HOST"] = service.cluster_ips[0]
            env[f"{prefix}_SERVICE_PORT"] = str(service.ports[0]["port"])
            for port in service.ports:
                if port.get("name"):
                    env[f"{prefix}_SERVICE_PORT_{str(port['name']).upper().replace('-', '_')}"] = str(port["port"])
        return env

    def _process_specs(self, state: LabState, pod: DesiredPod, record: PodRecord,
                       init: bool = False) -> list[ProcessSpec]:
        """The pod's containers as processes (``init``: its run-to-completion init containers)."""
        ranges = LabRanges.from_data(state.ranges)
        meta = pod.body.get("metadata") or {}
        context = PodContext(
            namespace=pod.namespace, name=pod.name, uid=record.uid, addresses=record.addresses,
            node_name=state.node_name, host_addresses=(ranges.node_ipv4, ranges.node_ipv6),
            labels=pod.labels, annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
            service_account=str(pod.spec.get("serviceAccountName") or "default"),
        )
        base = self._base_env(state, pod, record)
        inits = [c for c in pod.spec.get("initContainers") or [] if isinstance(c, Mapping)]
        if init:
            containers = [c for c in inits if c.get("restartPolicy") != "Always"]
        else:
            containers = [c for c in pod.spec.get("containers") or [] if isinstance(c, Mapping)]
            # Sidecar containers (init containers that keep running) run alongside the others.
            containers += [c for c in inits if c.get("restartPolicy") == "Always"]
        return [container_process(c, context, base) for c in containers]

    def _run_init_containers(self, state: LabState, pod: DesiredPod, record: PodRecord, timeout: float) -> str:
        """Run the pod's init containers one after another; a problem ends the sequence."""
        for spec in self._process_specs(state, pod, record, init=True):
            env = dict(spec.env)
            command = shutil.which(spec.argv[0], path=env.get("PATH")) if spec.argv else None
            if command is None:
                return f"init container {spec.container}: command {spec.argv[:1]} not found"
            log = self.dir / "logs" / f"{record.namespace}_{record.name}_{spec.container}.log"
            with open(log, "ab") as out:
                try:
                    result = subprocess.run([tool("ip"), "netns", "exec", record.netns, command, *spec.argv[1:]],
                                            env=env, cwd=record.workdir, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=out, timeout=timeout, check=False,
                                            preexec_fn=_joiner(record.cgroup))
                except subprocess.TimeoutExpired:
                    return f"init container {spec.container} did not finish within {timeout:.0f}s"
            if result.returncode != 0:
                return f"init container {spec.container} exited with status {result.returncode} (log: {log})"
        return ""

    def _spawn(self, record: PodRecord, spec: ProcessSpec) -> tuple[ProcRecord | None, str]:
        env = dict(spec.env)
        command = shutil.which(spec.argv[0], path=env.get("PATH")) if spec.argv else None
        if command is None:
            return None, f"container {spec.container}: command {spec.argv[0] if spec.argv else '(none)'!r} not found"
        log = str(self.dir / "logs" / f"{record.namespace}_{record.name}_{spec.container}.log")
        argv = [tool("ip"), "netns", "exec", record.netns, command, *spec.argv[1:]]
        pid, started = procs.spawn(argv, env=env, cwd=record.workdir, cgroup=record.cgroup, log=log)
        return ProcRecord(spec.container, pid, started, tuple(spec.argv), log), ""

    def _start_containers(self, state: LabState, desired: Desired, new: Sequence[DesiredPod],
                          timeout: float) -> list[str]:
        """Start the containers of new pods and restart dead ones (restartPolicy Always)."""
        new_keys = {p.key for p in new}
        restarted = []
        for pod in desired.pods:
            record = state.pods[pod.key]
            if pod.key in new_keys or not record.processes:
                problem = self._run_init_containers(state, pod, record, timeout)
                if problem:
                    state.pods[pod.key] = attrs.evolve(record, notes=(problem,))
                    state.save()
                    continue
            specs = self._process_specs(state, pod, record)
            running = {p.container: p for p in record.processes if procs.alive(p.pid, p.start_time)}
            if pod.key not in new_keys:
                record = attrs.evolve(record, labels=pod.labels)
                policy = pod.spec.get("restartPolicy") or "Always"
                if policy != "Always" or len(running) == len(specs):
                    state.pods[pod.key] = record
                    continue
                restarted.append(pod.key)
            notes = [n for s in specs for n in s.notes]
            processes = list(running.values())
            for spec in specs:
                if spec.container in running:
                    continue
                process, problem = self._spawn(record, spec)
                if process is None:
                    notes.append(problem)
                    continue
                processes.append(process)
                record = attrs.evolve(record, processes=tuple(processes))
                state.pods[pod.key] = record
                state.save()
            env = specs[0].env if specs else ()
            ports = sorted({port for spec in specs for port in spec.ports})
            state.pods[pod.key] = attrs.evolve(record, processes=tuple(processes), env=env, notes=tuple(notes),
                                               ports=ports, ready=False)
            state.save()
        return restarted

    def _wait_ready(self, state: LabState, keys: Sequence[str], timeout: float) -> None:
        """Wait until these pods' ports are bound (their processes serve) or ``timeout`` passes."""
        pending = {key: set(state.pods[key].ports) for key in keys}
        deadline = time.monotonic() + timeout
        while True:
            for key in list(pending):
                record = state.pods[key]
                live = [p for p in record.processes if procs.alive(p.pid, p.start_time)]
                if not live:
                    del pending[key]
                    continue
                pending[key] -= bound_ports(live[0].pid, frozenset(proto for _, proto in pending[key]))
                if not pending[key]:
                    del pending[key]
                    state.pods[key] = attrs.evolve(record, ready=True)
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        state.save()

    def _write_objects(self, state: LabState, desired: Desired, ranges: LabRanges) -> int:
        gateways = {id(o) for o in our_gateways(desired.others)}
        entries = [object_entry(enrich_gateway(o, state.services.get(f"{o.namespace}/{o.name}"))
                                if id(o) in gateways else o.body, o.source) for o in desired.others]
        for obj in desired.services:
            service = state.services[f"{obj.namespace}/{obj.name}"]
            entries.append(object_entry(enrich_service(obj, service), obj.source))
        for pod in desired.pods:
            record = state.pods[pod.key]
            running = bool(record.processes) and all(procs.alive(p.pid, p.start_time) for p in record.processes)
            body = enrich_pod(
                pod, uid=record.uid, node_name=state.node_name, addresses=record.addresses,
                host_addresses=(ranges.node_ipv4, ranges.node_ipv6),
                # Ready as a kubelet without probes reports it: once the containers run.
                phase="Running" if running else "Failed", ready=running,
                started=datetime.datetime.fromtimestamp(record.created_at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            entries.append(object_entry(body, pod.source))
        state.generation += 1
        write_json(state.objects_path, {
            "version": OBJECTS_VERSION, "lab": self.name, "generation": state.generation,
            "node": state.node_name, "cgroup": state.cgroup_root, "pinDir": state.bpf_pin_dir,
            "nodeIPs": [ranges.node_ipv4, ranges.node_ipv6], "written": _now(), "objects": entries,
            # Each pod's node-side veth, where the agent attaches L3/L4 policy.
            "veths": {pod.key: state.pods[pod.key].host_veth for pod in desired.pods},
        })
        state.save()
        return state.generation

    # ------------------------------------------------------------------ agent

    def _agent_alive(self, state: LabState) -> bool:
        return state.agent is not None and procs.alive(state.agent.pid, state.agent.start_time)

    def _ensure_agent(self, state: LabState, generation: int, timeout: float, warnings: list[str]) -> AgentStatus:
        if self._agent_alive(state):
            assert state.agent is not None
            procs.signal_process(state.agent.pid, state.agent.start_time, signal.SIGHUP)
        else:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": os.environ.get("LANG", "C.UTF-8"),
                   **python_env()}
            if os.environ.get("MESHCORE_DEBUG"):
                env["MESHCORE_DEBUG"] = os.environ["MESHCORE_DEBUG"]
            # Not `ip netns exec`: it remounts /sys, hiding the cgroup and BPF filesystems.
            argv = [sys.executable, "-m", "meshcore.lab.agent", "--lab", self.name, "--state-dir", str(self.dir)]
            log = str(self.dir / AGENT_LOG)
            pid, started = procs.spawn(argv, env=env, cwd=str(self.dir),
                                       cgroup=str(Path(state.cgroup_root) / AGENT_CGROUP), log=log,
                                       netns=str(netns.path(state.node_netns)))
            state.agent = ProcRecord("agent", pid, started, tuple(argv), log)
            state.save()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self._agent_status(state)
            if status.applied_generation == generation or not status.running:
                break
            time.sleep(0.05)
        status = self._agent_status(state)
        if not status.running:
            warnings.append(f"the node agent is not running; see {state.dir / AGENT_LOG}")
        elif status.applied_generation != generation:
            warnings.append(f"the node agent has not applied this configuration within {timeout:.0f}s; "
                            f"see {state.dir / AGENT_LOG}")
        elif not status.ok:
            warnings.append(f"the node agent could not apply this configuration: {status.error} "
                            "(the previous datapath state keeps enforcing)")
        elif status.error:
            warnings.append(f"the node agent applied this configuration except: {status.error}")
        return status

    def _agent_status(self, state: LabState) -> AgentStatus:
        data: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(state.agent_status_path.read_text())
        running = self._agent_alive(state)
        agent_pid = state.agent.pid if state.agent else 0
        if data.get("pid") != agent_pid:
            data = {}  # written by an agent that is gone
        return AgentStatus(
            running=running, pid=agent_pid, wanted_generation=state.generation,
            applied_generation=int(data.get("generation", 0)), ok=bool(data.get("ok", False)),
            error=str(data.get("error", "")), frontends=int(data.get("frontends", 0)),
            log=str(state.dir / AGENT_LOG), proxy=dict(data.get("proxy") or {}) if running else {},
            config_status=tuple(c for c in data.get("configStatus") or () if isinstance(c, dict)),
        )

    def objects(self) -> list[KubeObject]:
        """The enriched objects the lab last handed to its node agent (what the agent translates)."""
        state = self._load()
        try:
            data = json.loads(state.objects_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LabError(f"cannot read the objects of lab {self.name!r} ({state.objects_path}): {exc}") from exc
        return objects_from_entries(data.get("objects") or [])

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
                _remove_path(self.dir)
                remove_lock(self.name)
                return [str(self.dir)]
            state = LabState.load(self.dir)
            processes = [(p.pid, p.start_time) for r in state.pods.values() for p in r.processes]
            if state.agent:
                processes.append((state.agent.pid, state.agent.start_time))
            from ._proxy import recorded_processes  # noqa: PLC0415 - the node Envoy the agent started
            processes += recorded_processes(self.dir)
            procs.stop(processes)
            if not cgroups.kill(Path(state.cgroup_root)):
                problems.append(f"processes in {state.cgroup_root} did not exit")
            removed.append(f"{len(processes)} process(es)")
            problems += self._destroy_datapath(state)
            removed.append(f"datapath pins {state.bpf_pin_dir}")
            for record in state.pods.values():
                netns.remove(record.netns)
                _remove_path(record.etc_dir)
            netns.remove(state.node_netns)
            removed.append(f"{len(state.pods) + 1} network namespace(s)")
            problems += cgroups.remove_tree(Path(state.cgroup_root))
            removed.append(f"cgroup {state.cgroup_root}")
            _remove_path(self.dir)
            removed.append(f"state {self.dir}")
            remove_lock(self.name)
        leftovers = [n for n in [state.node_netns, *(r.netns for r in state.pods.values())] if netns.exists(n)]
        problems += [f"network namespace {n} still exists" for n in leftovers]
        if problems:
            raise LabError(f"lab {self.name!r} is down, but some things could not be removed:\n  "
                           + "\n  ".join(problems))
        return removed

    def _destroy_datapath(self, state: LabState) -> list[str]:
        try:
            from ._datapath import destroy  # noqa: PLC0415 - needs libbpf only when used
        except ImportError as exc:
            pins = Path(state.bpf_pin_dir)
            _remove_path(pins)
            return [f"datapath unavailable ({exc}); removed {pins}"] if pins.exists() else []
        return destroy(state.node_name, state.cgroup_root, state.bpf_pin_dir)

    # ------------------------------------------------------------------ status

    def status(self) -> LabStatus:
        """Pods, services and the agent as they are now."""
        state = self._load()
        pods = []
        for record in sorted(state.pods.values(), key=lambda r: (r.namespace, r.name)):
            containers = tuple(
                ContainerStatus(p.container, p.pid, procs.alive(p.pid, p.start_time), p.argv, p.log)
                for p in record.processes
            )
            pods.append(PodStatus(
                namespace=record.namespace, name=record.name, labels=record.labels,
                addresses=record.addresses, phase=_phase(record, containers),
                ready=record.ready and bool(containers) and all(c.running for c in containers),
                owner=record.owner, netns=record.netns, cgroup=record.cgroup, containers=containers,
                notes=record.notes,
            ))
        services = tuple(
            ServiceStatus(s.namespace, s.name, s.cluster_ips, s.ports)
            for s in sorted(state.services.values(), key=lambda s: (s.namespace, s.name))
        )
        return LabStatus(
            name=self.name, node=state.node_name, node_netns=state.node_netns, cgroup=state.cgroup_root,
            files=tuple(state.files), pods=tuple(pods), services=services,
            agent=self._agent_status(state), notes=tuple(state.notes),
        )

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

    def _command(self, record: PodRecord, argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        if not argv:
            raise LabError("no command given (put it after `--`)")
        env = dict(record.env)
        if not env:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "POD_NAME": record.name,
                   "POD_NAMESPACE": record.namespace, "POD_IP": record.ipv4}
        for passed in ("TERM", "COLUMNS", "LINES"):
            if passed in os.environ:
                env[passed] = os.environ[passed]
        return [tool("ip"), "netns", "exec", record.netns, *argv], env

    def exec(self, target: str, argv: Sequence[str], *, namespace: str | None = None) -> int:
        """Run ``argv`` in the pod's namespace and cgroup with this terminal; its exit code.

        A command killed by a signal gives 128 + the signal number, as a shell reports it.
        """
        record = self.pod(target, namespace)
        command, env = self._command(record, argv)
        with _ignoring_interrupts():
            result = subprocess.run(command, env=env, cwd=record.workdir, check=False,
                                    preexec_fn=_joiner(record.cgroup))
        return 128 - result.returncode if result.returncode < 0 else result.returncode

    def run(self, target: str, argv: Sequence[str], *, namespace: str | None = None,
            input: bytes | None = None, timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` in the pod and capture its output (for programs and tests)."""
        record = self.pod(target, namespace)
        command, env = self._command(record, argv)
        return subprocess.run(command, env=env, cwd=record.workdir, input=input, capture_output=True,
                              timeout=timeout, check=False, preexec_fn=_joiner(record.cgroup))


def _phase(record: PodRecord, containers: Sequence[ContainerStatus]) -> str:
    if record.setup != "ready":
        return "Pending"
    if not containers:
        return "Failed"  # no container could be started (see the pod's notes)
    running = sum(c.running for c in containers)
    if running == len(containers):
        return "Running"
    return "Exited" if running == 0 else "Degraded"


def _joiner(cgroup: str) -> Callable[[], None]:
    def join() -> None:  # runs in the child between fork and exec
        with open(Path(cgroup) / "cgroup.procs", "w") as f:
            f.write("0")
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    return join


@contextlib.contextmanager
def _ignoring_interrupts() -> Iterator[None]:
    """While a command runs in the foreground, Ctrl-C is for it, not for us."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    quit_previous = signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGQUIT, quit_previous)

