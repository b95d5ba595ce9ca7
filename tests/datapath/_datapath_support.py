"""Helpers for the datapath tests: topology, cgroups, clients and plan builders.

Everything created here is named ``mcdp-<tag>`` (namespaces, pins) or
``meshcore-test-<tag>`` (cgroups) and removed in ``finally`` blocks, so concurrent runs of
other suites on the same machine are never touched.

Topology: a client namespace and a server namespace joined by one veth. The server side
carries three backend addresses per family, each served by ``_peer.py serve`` (TCP and UDP
on port 8080, greeting with the backend's name). VIPs live in 10.96.77.0/24 and fd96::/64,
which have no route anywhere: only the socket LB can make them reachable.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
from pyroute2 import NetNS, netns

from meshcore.compile import BpfBackend, BpfPlan, BpfService
from meshcore.datapath import SocketLB, cgroup2_mount
from meshcore.model import BackendState, ServiceRef

PEER = Path(__file__).with_name("_peer.py")
SRC = Path(__file__).resolve().parents[2] / "src"
PORT = 8080
V4 = {"b1": "10.77.0.11", "b2": "10.77.0.12", "b3": "10.77.0.13"}
V6 = {"b1": "fd77::11", "b2": "fd77::12", "b3": "fd77::13"}
IFA_F_NODAD = 0x02


@attrs.frozen
class Net:
    """The two namespaces of one topology."""

    tag: str
    client_ns: str
    server_ns: str
    server_pid: int


def _wait_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"process {proc.args!r} printed nothing within {timeout}s")
    return proc.stdout.readline().strip()


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@contextlib.contextmanager
def topology(tag: str) -> Iterator[Net]:
    """Client and server namespaces with backends serving; always removed on exit."""
    client_ns, server_ns = f"mcdp-{tag}-c", f"mcdp-{tag}-s"
    created: list[str] = []
    server: subprocess.Popen[str] | None = None
    try:
        for name in (client_ns, server_ns):
            netns.create(name)
            created.append(name)
        with NetNS(client_ns) as ns:
            ns.link("add", ifname="c0", kind="veth", peer={"ifname": "s0", "net_ns_fd": server_ns})
            idx = ns.link_lookup(ifname="c0")[0]
            ns.addr("add", index=idx, address="10.77.0.1", prefixlen=24)
            ns.addr("add", index=idx, address="fd77::1", prefixlen=64, flags=IFA_F_NODAD)
            ns.link("set", index=idx, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        with NetNS(server_ns) as ns:
            idx = ns.link_lookup(ifname="s0")[0]
            for addr in V4.values():
                ns.addr("add", index=idx, address=addr, prefixlen=24)
            for addr in V6.values():
                ns.addr("add", index=idx, address=addr, prefixlen=64, flags=IFA_F_NODAD)
            ns.link("set", index=idx, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        specs = [f"{n}={a}" for n, a in V4.items()] + [f"{n}={a}" for n, a in V6.items()]
        server = subprocess.Popen(
            ["ip", "netns", "exec", server_ns, sys.executable, str(PEER), "serve", str(PORT), *specs],
            stdout=subprocess.PIPE, text=True,
        )
        line = _wait_line(server, 20)
        assert line == "ready", f"backend server did not start: {line!r}"
        yield Net(tag, client_ns, server_ns, server.pid)
    finally:
        if server is not None:
            _stop(server)
        for name in created:
            netns.remove(name)


@contextlib.contextmanager
def make_cgroup(tag: str) -> Iterator[Path]:
    """A fresh cgroup v2 directory; processes left in it are killed before removal."""
    path = cgroup2_mount() / f"meshcore-test-{tag}"
    path.mkdir()
    try:
        yield path
    finally:
        deadline = time.monotonic() + 10
        while True:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
            if not pids:
                break
            for pid in pids:  # only our clients ever join this cgroup
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise AssertionError(f"processes {pids} would not leave {path}")
            time.sleep(0.05)
        path.rmdir()


class Clients:
    """Runs ``_peer.py`` clients inside the client namespace and the test's cgroup."""

    def __init__(self, net: Net, cgroup: Path) -> None:
        self.net = net
        self.cgroup = cgroup
        self._procs: list[subprocess.Popen[str]] = []

    def _join_cgroup(self) -> None:
        # Runs in the child between fork and exec: the client is covered from its first syscall.
        with open(self.cgroup / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start a peer command in the client namespace and cgroup."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.net.client_ns, sys.executable, str(PEER), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=self._join_cgroup,
        )
        self._procs.append(proc)
        return proc

    def run(self, op: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        """Run one client operation and return its JSON result."""
        proc = self.popen("client", json.dumps(op))
        out, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"client {op} failed"
        result: dict[str, Any] = json.loads(out)
        return result

    def read_json(self, proc: subprocess.Popen[str], timeout: float = 10) -> dict[str, Any]:
        """The next JSON line a long-running peer printed."""
        result: dict[str, Any] = json.loads(_wait_line(proc, timeout))
        return result

    def close(self) -> None:
        """Stop every client still running."""
        for proc in self._procs:
            _stop(proc)


def service(
    vip: str, port: int, backends: Sequence[tuple[str, int] | tuple[str, int, BackendState]],
    protocol: str = "TCP", *, proxy_port: int | None = None, name: str = "svc",
) -> BpfService:
    """A BpfService whose backends are (name or address, weight[, state]) on port 8080."""
    out = []
    for b in backends:
        who, weight = b[0], b[1]
        state = b[2] if len(b) > 2 else BackendState.ACTIVE
        addr = who if who not in V4 else (V6[who] if ":" in vip else V4[who])
        out.append(BpfBackend(addr, PORT, weight, state))
    return BpfService(vip, port, protocol, ServiceRef("test", name), backends=tuple(out), proxy_port=proxy_port)


def plan(*services: BpfService) -> BpfPlan:
    """A BpfPlan of these services."""
    return BpfPlan(services=services)
