"""Sidecar Envoys in the lab: started like a container of their pod, stopped after a graceful drain.

A pod whose proxy mode is ``sidecar`` gets an Envoy in its network namespace and in a cgroup
of its own below the pod's (``<pod cgroup>/sidecar``), as a kubelet runs a sidecar container
in the pod's sandbox. It asks the node agent's control plane (``<node state dir>/xds.sock``, a
Unix socket reachable from every network namespace) for its configuration as node
``sidecar/<namespace>/<pod>``; the agent steers the pod's connections through it once it
serves. When the pod leaves sidecar mode its agent stops steering first; the lab then
drains the Envoy (new requests on its open connections are answered with ``Connection:
close``, so clients move to new connections, which the kernel no longer steers) and stops
it. In Kubernetes the sidecar is a container of the pod, with the socket from a hostPath.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

import attrs

from ..compile import sidecar_node_id
from ..linux import socket_in_netns
from ..model import ProxyMode, WorkloadRef
from ..proxy import XdsEndpoint, bootstrap, find_envoy
from . import _cgroups as cgroups
from . import _netns as netns
from . import _procs as procs
from ._agents import agent_status
from ._state import LabState, PodRecord, ProcRecord

__all__ = ["ADMIN_FILE", "DRAIN_SECONDS", "ensure_sidecars", "stop_sidecars", "wait_serving"]

#: Where a sidecar writes its admin address, in the pod's work directory.
ADMIN_FILE = "sidecar-admin.txt"
#: How long a sidecar that leaves drains its connections before it stops.
DRAIN_SECONDS = 2.0
#: The sidecar's worker threads (Istio's sidecars default to two as well).
CONCURRENCY = 2


def _running(record: PodRecord) -> bool:
    return record.sidecar is not None and procs.alive(record.sidecar.pid, record.sidecar.start_time)


def _start(state: LabState, record: PodRecord) -> PodRecord:
    """Start the pod's sidecar Envoy (recorded write-ahead by its cgroup: `lab down` kills the pod's subtree)."""
    node = state.node_of(record)
    work = Path(record.workdir) / "sidecar"
    work.mkdir(parents=True, exist_ok=True)
    node_id = sidecar_node_id(WorkloadRef(record.namespace, record.name))
    config = bootstrap(node_id, XdsEndpoint(path=str(Path(node.state_dir) / "xds.sock")))
    (work / "bootstrap.json").write_text(json.dumps(config), encoding="utf-8")
    admin = Path(record.workdir) / ADMIN_FILE
    admin.unlink(missing_ok=True)
    cgroups.create(Path(record.sidecar_cgroup))
    log = str(state.dir / "logs" / f"{record.namespace}_{record.name}_sidecar.log")
    argv = [find_envoy(), "-c", str(work / "bootstrap.json"), "--disable-hot-restart", "--concurrency",
            str(CONCURRENCY), "--admin-address-path", str(admin), "--drain-strategy", "immediate",
            "--drain-time-s", str(int(DRAIN_SECONDS)), "--log-level", "warning"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    pid, started = procs.spawn(argv, env=env, cwd=str(work), cgroup=record.sidecar_cgroup, log=log,
                               netns=str(netns.path(record.netns)))
    return attrs.evolve(record, sidecar=ProcRecord("sidecar", pid, started, tuple(argv), log))


def ensure_sidecars(state: LabState, modes: Mapping[str, ProxyMode]) -> list[str]:
    """Start the sidecar of every pod in sidecar mode on a node that is up and has none running; started keys."""
    started = []
    for key, record in sorted(state.pods.items()):
        if modes.get(key) is not ProxyMode.SIDECAR or state.node_of(record).down or _running(record):
            continue
        state.pods[key] = _start(state, record)
        state.save()
        started.append(key)
    return started


def _drain(record: PodRecord) -> None:
    """Ask the sidecar to close its connections gracefully (through its admin endpoint in the pod)."""
    try:
        address = (Path(record.workdir) / ADMIN_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return
    host, _, port = address.rpartition(":")
    sock = socket_in_netns(netns.path(record.netns))
    try:
        sock.settimeout(2.0)
        sock.connect((host, int(port)))
        sock.sendall(b"POST /drain_listeners?graceful HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n")
        sock.recv(256)
    except OSError:
        pass
    finally:
        sock.close()


def stop_sidecars(state: LabState, modes: Mapping[str, ProxyMode]) -> list[str]:
    """Drain and stop the sidecars of pods no longer in sidecar mode (after their agents stopped steering)."""
    leaving = [key for key, r in sorted(state.pods.items())
               if r.sidecar is not None and modes.get(key) is not ProxyMode.SIDECAR]
    running = [state.pods[k] for k in leaving if _running(state.pods[k])]
    for record in running:
        _drain(record)
    if running:
        time.sleep(DRAIN_SECONDS)
    for key in leaving:
        record = state.pods[key]
        assert record.sidecar is not None
        procs.stop([(record.sidecar.pid, record.sidecar.start_time)])
        cgroups.kill(Path(record.sidecar_cgroup))
        cgroups.remove_tree(Path(record.sidecar_cgroup))
        state.pods[key] = attrs.evolve(record, sidecar=None)
        state.save()
    return leaving


def wait_serving(state: LabState, keys: list[str], timeout: float) -> list[str]:
    """Wait until the agents steer these pods through their sidecars; the keys still not served."""
    pending = set(keys)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for node in state.nodes.values():
            report = agent_status(state, node).report
            for sidecar in report.sidecars if report is not None else ():
                if sidecar.serving:
                    pending.discard(sidecar.workload)
        if pending:
            time.sleep(0.1)
    return sorted(pending)

