"""A pod's life on the node: its namespace, veth and cgroup, its containers, and removal.

Each pod is created write-ahead (its record names the namespace, veth, cgroup and
directories before any exists), so teardown and `lab down` remove exactly what was made.
Containers run as processes in the pod's namespace and cgroup with the environment a
kubelet gives them; init containers run to completion first; a pod is ready once its
processes have bound the ports its containers declare.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from . import _cgroups as cgroups
from . import _hostsfiles as hosts
from . import _netns as netns
from . import _procs as procs
from ._containers import PodContext, ProcessSpec, container_process
from ._exec import joiner
from ._machine import NETNS_ETC, tool
from ._ipam import next_pod_index
from ._manifest import Desired, DesiredPod
from ._ready import bound_ports
from ._state import LabState, NodeRecord, PodRecord, ProcRecord


def pod_netns_name(lab: str, namespace: str, name: str) -> str:
    """``mc-<lab>.<namespace>.<pod>`` (dots cannot occur in lab or namespace names)."""
    full = f"mc-{lab}.{namespace}.{name}"
    if len(full) <= 200:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    return f"{full[:189]}-{digest}"


def remove_path(path: str | Path) -> None:
    """Remove the directory tree at ``path``; nothing when it is already gone."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def create_pod(state: LabState, pod: DesiredPod, net: netns.NodeNetwork, node: NodeRecord) -> None:
    """Create the pod's namespace, veth, cgroup and directories on ``node``, recording them first."""
    index = next_pod_index(node.ranges, {r.index for r in state.pods.values() if r.node == node.name})
    ipv4, ipv6 = node.ranges.pod_addresses(index)
    name = pod_netns_name(state.name, pod.namespace, pod.name)
    record = PodRecord(
        namespace=pod.namespace, name=pod.name, netns=name, host_veth=f"mc{index}",
        cgroup=str(Path(node.cgroup) / pod.namespace / pod.name),
        etc_dir=str(NETNS_ETC / name), workdir=str(state.dir / "pods" / f"{pod.namespace}_{pod.name}"),
        index=index, ipv4=ipv4, ipv6=ipv6, spec_hash=pod.spec_hash, owner=pod.owner,
        ordinal=pod.ordinal, uid=str(uuid.uuid4()), created_at=time.time(), labels=pod.labels, node=node.name,
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


def teardown_pod(state: LabState, record: PodRecord, net: netns.NodeNetwork | None) -> None:
    """Stop the pod's processes and remove all it had; ``net`` frees its veth name too."""
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
    remove_path(record.etc_dir)
    remove_path(record.workdir)
    del state.pods[record.key]
    state.save()


def write_hosts(state: LabState) -> None:
    """Write every pod's hosts file: the services, and the pod's own names."""
    entries = [hosts.HostEntry(s.namespace, s.name, s.cluster_ips)
               for s in state.services.values() if s.cluster_ips]
    nsswitch = hosts.render_nsswitch()
    for record in state.pods.values():
        etc = Path(record.etc_dir)
        if not etc.is_dir():
            continue
        text = hosts.render(state.name, record.namespace, record.name, record.addresses, entries)
        hosts.write_in_place(etc / "hosts", text)
        hosts.write_in_place(etc / "nsswitch.conf", nsswitch)


def _base_env(state: LabState, pod: DesiredPod, record: PodRecord) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "HOSTNAME": pod.name,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }
    if pod.spec.get("enableServiceLinks", True) is not False:
        env.update(_service_links(state, pod.namespace))
    env.update({
        "POD_NAME": pod.name,
        "POD_NAMESPACE": pod.namespace,
        "POD_IP": record.ipv4,
        "POD_IPS": ",".join(record.addresses),
        "NODE_NAME": record.node,
    })
    return env


def _service_links(state: LabState, namespace: str) -> dict[str, str]:
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


def _process_specs(state: LabState, pod: DesiredPod, record: PodRecord,
                   init: bool = False) -> list[ProcessSpec]:
    """The pod's containers as processes (``init``: its run-to-completion init containers)."""
    node = state.node_of(record)
    meta = pod.body.get("metadata") or {}
    context = PodContext(
        namespace=pod.namespace, name=pod.name, uid=record.uid, addresses=record.addresses,
        node_name=node.name, host_addresses=node.ranges.node_addresses,
        labels=pod.labels, annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        service_account=str(pod.spec.get("serviceAccountName") or "default"),
    )
    base = _base_env(state, pod, record)
    inits = [c for c in pod.spec.get("initContainers") or [] if isinstance(c, Mapping)]
    if init:
        containers = [c for c in inits if c.get("restartPolicy") != "Always"]
    else:
        containers = [c for c in pod.spec.get("containers") or [] if isinstance(c, Mapping)]
        # Sidecar containers (init containers that keep running) run alongside the others.
        containers += [c for c in inits if c.get("restartPolicy") == "Always"]
    return [container_process(c, context, base) for c in containers]


def _run_init_containers(state: LabState, pod: DesiredPod, record: PodRecord, timeout: float) -> str:
    """Run the pod's init containers one after another; a problem ends the sequence."""
    for spec in _process_specs(state, pod, record, init=True):
        env = dict(spec.env)
        command = shutil.which(spec.argv[0], path=env.get("PATH")) if spec.argv else None
        if command is None:
            return f"init container {spec.container}: command {spec.argv[:1]} not found"
        log = state.dir / "logs" / f"{record.namespace}_{record.name}_{spec.container}.log"
        with open(log, "ab") as out:
            try:
                result = subprocess.run([tool("ip"), "netns", "exec", record.netns, command, *spec.argv[1:]],
                                        env=env, cwd=record.workdir, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=out, timeout=timeout, check=False,
                                        preexec_fn=joiner(record.cgroup))
            except subprocess.TimeoutExpired:
                return f"init container {spec.container} did not finish within {timeout:.0f}s"
        if result.returncode != 0:
            return f"init container {spec.container} exited with status {result.returncode} (log: {log})"
    return ""


def _spawn(state: LabState, record: PodRecord, spec: ProcessSpec) -> tuple[ProcRecord | None, str]:
    env = dict(spec.env)
    command = shutil.which(spec.argv[0], path=env.get("PATH")) if spec.argv else None
    if command is None:
        return None, f"container {spec.container}: command {spec.argv[0] if spec.argv else '(none)'!r} not found"
    log = str(state.dir / "logs" / f"{record.namespace}_{record.name}_{spec.container}.log")
    argv = [tool("ip"), "netns", "exec", record.netns, command, *spec.argv[1:]]
    pid, started = procs.spawn(argv, env=env, cwd=record.workdir, cgroup=record.cgroup, log=log)
    return ProcRecord(spec.container, pid, started, tuple(spec.argv), log), ""


def start_containers(state: LabState, desired: Desired, new: Sequence[DesiredPod],
                      timeout: float) -> list[str]:
    """Start the containers of new pods and restart dead ones (restartPolicy Always), on nodes that are up."""
    new_keys = {p.key for p in new}
    restarted = []
    for pod in desired.pods:
        record = state.pods[pod.key]
        if state.node_of(record).down:
            continue  # started when its node is up again
        if pod.key in new_keys or not record.processes:
            problem = _run_init_containers(state, pod, record, timeout)
            if problem:
                state.pods[pod.key] = attrs.evolve(record, notes=(problem,))
                state.save()
                continue
        specs = _process_specs(state, pod, record)
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
            process, problem = _spawn(state, record, spec)
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


def wait_ready(state: LabState, keys: Sequence[str], timeout: float) -> None:
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
