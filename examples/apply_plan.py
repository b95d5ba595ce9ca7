"""Apply a plan to this machine from Python, with no lab: the node agent's public API end to end.

    sudo .venv/bin/python examples/apply_plan.py

It makes what a node would already have — a network namespace with a backend server, a
client namespace wired to it, and a cgroup for the client — then translates a Service
(with its EndpointSlice) from plain dicts, compiles it, applies the plan with
``NodeAgent.apply_plan`` and connects to the Service's VIP from the cgroup: the kernel
sends the connection to the backend. Everything it made is removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import meshcore
from meshcore import linux
from meshcore.agent import NodeAgent, NodeFacts

VIP, BACKEND, CLIENT = "10.96.200.1", "10.77.200.2", "10.77.200.1"

SERVICE = [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
     "spec": {"clusterIP": VIP, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
    {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
     "metadata": {"name": "web-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
     "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
     "endpoints": [{"addresses": [BACKEND]}]},
]

SERVER = "import http.server as h; h.HTTPServer(('0.0.0.0', 8080), type('H', (h.BaseHTTPRequestHandler,), " \
         "{'do_GET': lambda s: (s.send_response(200), s.end_headers(), s.wfile.write(b'backend says hi'))}))" \
         ".serve_forever()"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


@contextlib.contextmanager
def two_namespaces(tag: str) -> Iterator[tuple[str, str]]:
    """A client and a server namespace joined by a veth pair, the server listening on :8080."""
    client, server = f"mcex-{tag}-c", f"mcex-{tag}-s"
    server_proc = None
    try:
        ip("netns", "add", client)
        ip("netns", "add", server)
        ip("link", "add", f"mcex{tag}c", "netns", client, "type", "veth", "peer", "name", f"mcex{tag}s", "netns", server)
        for ns, dev, addr in ((client, f"mcex{tag}c", CLIENT), (server, f"mcex{tag}s", BACKEND)):
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        server_proc = subprocess.Popen(["ip", "netns", "exec", server, sys.executable, "-c", SERVER])
        time.sleep(0.5)
        yield client, server
    finally:
        if server_proc is not None:
            server_proc.terminate()
            server_proc.wait()
        for ns in (client, server):
            subprocess.run(["ip", "netns", "del", ns], check=False)


@contextlib.contextmanager
def cgroup(tag: str) -> Iterator[Path]:
    """A cgroup v2 directory of our own (the cgroup2 hierarchy is found, or mounted, by meshcore)."""
    path = linux.cgroup2() / f"mcex-{tag}"
    path.mkdir()
    try:
        yield path
    finally:
        path.rmdir()


def request_from(client_ns: str, group: Path) -> str:
    """One HTTP request to the VIP from a process in the client namespace and the cgroup."""
    code = (f"import urllib.request; print(urllib.request.urlopen('http://{VIP}/', timeout=3).read().decode())")
    # Join the cgroup first: `ip netns exec` remounts /sys, where the cgroup2 hierarchy may live.
    shell = f"echo $$ > {group}/cgroup.procs && exec ip netns exec {client_ns} {sys.executable} -c \"{code}\""
    return subprocess.run(["sh", "-c", shell], capture_output=True, text=True, check=True).stdout.strip()


def main() -> int:
    tag = secrets.token_hex(3)
    result = meshcore.translate(objects=SERVICE)
    assert result.ok, result.diagnostics
    plan = meshcore.compile_plan(result.snapshot, node=f"example-{tag}")
    with two_namespaces(tag) as (client_ns, _), cgroup(tag) as group, tempfile.TemporaryDirectory() as state:
        agent = NodeAgent(NodeFacts(f"example-{tag}", cgroup=group, state_dir=state))
        try:
            report = agent.apply_plan(plan)
            print(report.summary)
            answer = request_from(client_ns, group)
            print(f"GET http://{VIP}/ -> {answer!r}")
        finally:
            agent.destroy()
    print(json.dumps({"applied": report.applied, "answer": answer}))
    return 0 if report.applied and answer == "backend says hi" else 1


if __name__ == "__main__":
    sys.exit(main())
