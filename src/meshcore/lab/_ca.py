"""The lab's certificate authority: `meshcore ca serve` as one more supervised process.

With mutual TLS (``lab up --mtls``) the lab keeps a CA in ``<lab dir>/ca/`` (its key,
certificate and the nodes' tokens), serves it on ``<lab dir>/ca/ca.sock`` from the lab's
cgroup, writes every generation's objects where the CA reads which node runs which
workloads, and starts each node's agent with the socket and the node's own token.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..identity import NodeTokens
from . import _procs as procs
from ._containers import python_env
from ._errors import LabError
from ._state import LabState, NodeRecord, ProcRecord

__all__ = ["ca_agent_args", "ca_dir", "ensure_ca", "write_ca_objects"]

CA_SOCKET = "ca.sock"
CA_OBJECTS = "objects.json"
CA_LOG = "ca.log"
TOKEN_FILE = "ca.token"


def ca_dir(state: LabState) -> Path:
    """Where the lab's CA keeps its files."""
    return state.dir / "ca"


def write_ca_objects(state: LabState, entries: Sequence[Mapping[str, Any]]) -> None:
    """The objects of this generation as a List, for the CA's placement checks (written atomically)."""
    directory = ca_dir(state)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{CA_OBJECTS}.tmp"
    tmp.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [e["body"] for e in entries]}),
                   encoding="utf-8")
    tmp.replace(directory / CA_OBJECTS)


def ensure_ca(state: LabState, timeout: float = 10.0) -> None:
    """Start the CA unless it runs; wait until it serves."""
    directory = ca_dir(state)
    sock = directory / CA_SOCKET
    if state.ca is not None and procs.alive(state.ca.pid, state.ca.start_time) and sock.exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / CA_OBJECTS).exists():
        write_ca_objects(state, [])
    argv = [sys.executable, "-c", "from meshcore.cli import main; main()", "ca", "serve", "--socket", str(sock),
            "--dir", str(directory), "--objects", str(directory / CA_OBJECTS)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": os.environ.get("LANG", "C.UTF-8"),
           **python_env()}
    if os.environ.get("MESHCORE_CA_TTL"):
        env["MESHCORE_CA_TTL"] = os.environ["MESHCORE_CA_TTL"]
    sock.unlink(missing_ok=True)
    log = str(directory / CA_LOG)
    pid, started = procs.spawn(argv, env=env, cwd=str(directory), cgroup=state.cgroup_root, log=log)
    state.ca = ProcRecord("ca", pid, started, tuple(argv), log)
    state.save()
    deadline = time.monotonic() + timeout
    while not sock.exists():
        if time.monotonic() > deadline or not procs.alive(pid, started):
            raise LabError(f"the lab's CA did not start serving within {timeout:.0f}s; see {log}")
        time.sleep(0.05)


def ca_agent_args(state: LabState, node: NodeRecord) -> list[str]:
    """The agent flags that give ``node`` mutual TLS: the CA's socket and the node's own token."""
    if not state.mtls:
        return []
    token = NodeTokens(ca_dir(state) / "tokens").issue(node.name)
    path = Path(node.state_dir) / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return ["--ca-socket", str(ca_dir(state) / CA_SOCKET), "--ca-token-file", str(path)]
