"""Helpers for end-to-end lab tests: unique lab names, manifests, running code in pods, clean-up checks."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from meshcore.lab import Lab, LabError
from meshcore.lab._machine import NETNS_ETC, bpffs_mount, cgroup2_mount, state_root
from meshcore.lab._netns import NETNS_DIR
from meshcore.lab._observe_command import node_dirs, node_flows
from meshcore.observe import Flow

SRC = str(Path(__file__).resolve().parents[2] / "src")


def unique_name() -> str:
    """A lab name no other test run uses: ``t`` and 8 hex digits."""
    return f"t{secrets.token_hex(4)}"


def meshcore_cli(*args: str, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run the `meshcore` command as a user would."""
    env = {**os.environ, "PYTHONPATH": SRC + (":" + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}
    return subprocess.run([sys.executable, "-m", "meshcore.cli", *args], input=input, capture_output=True,
                          timeout=timeout, env=env, check=False)


def run_python(lab: Lab, pod: str, code: str, *args: str, namespace: str = "default",
               timeout: float = 60) -> Any:
    """Run Python ``code`` (standard library only) inside a pod; its stdout parsed as JSON."""
    result = lab.run(pod, [sys.executable, "-S", "-c", code, *args], namespace=namespace, timeout=timeout)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return json.loads(result.stdout)


def leftovers(name: str, pids: list[tuple[int, int]]) -> list[str]:
    """Everything of lab ``name`` still on the machine (empty when `lab down` was complete)."""
    from meshcore.lab._procs import alive

    found = []
    found += [f"netns {n}" for n in os.listdir(NETNS_DIR)
              if n.startswith((f"mc-{name}.", f"mc-{name}-node-")) or n in (f"mc-{name}-node", f"mc-{name}-fabric")] \
        if NETNS_DIR.exists() else []
    found += [f"/etc/netns/{n}" for n in os.listdir(NETNS_ETC) if n.startswith(f"mc-{name}.")] \
        if NETNS_ETC.exists() else []
    cgroup = cgroup2_mount() / "meshcore" / name
    if cgroup.exists():
        found.append(f"cgroup {cgroup}")
    pins = bpffs_mount() / "meshcore" / f"lab-{name}"
    if pins.exists():
        found.append(f"pins {pins}")
    if (state_root() / name).exists():
        found.append(f"state {state_root() / name}")
    if (state_root() / f".{name}.lock").exists():
        found.append("lock file")
    found += [f"process {pid}" for pid, started in pids if alive(pid, started)]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "cgroup").read_text()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state == "Z":
                continue  # exited, waiting for init to collect it
            if f"/meshcore/{name}/" in text or text.rstrip().endswith(f"/meshcore/{name}"):
                found.append(f"process {entry.name} in the lab's cgroup")
    return found


def recorded_pids(lab: Lab) -> list[tuple[int, int]]:
    """(pid, start time) of every process the lab recorded, the agents and name servers included."""
    from meshcore.lab._state import LabState

    state = LabState.load(lab.dir)
    pids = [(p.pid, p.start_time) for r in state.pods.values() for p in r.processes]
    pids += [(n.agent.pid, n.agent.start_time) for n in state.nodes.values() if n.agent]
    pids += [(n.dns.pid, n.dns.start_time) for n in state.nodes.values() if n.dns]
    return pids


def node_processes(lab: Lab) -> list[tuple[int, int]]:
    """(pid, start time) of every node's agent and name server: they outlive any pod."""
    from meshcore.lab._state import LabState

    state = LabState.load(lab.dir)
    return [(r.pid, r.start_time) for n in state.nodes.values() for r in (n.agent, n.dns) if r is not None]


def write(tmp: Path, name: str, text: str) -> Path:
    """Write a manifest file."""
    path = tmp / name
    path.write_text(text)
    return path


ECHO_APP = """
apiVersion: v1
kind: Namespace
metadata:
  name: other
  labels: {team: other}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 2
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      containers:
      - name: echo
        image: meshcore/echo
        args: ["--http", "8080", "--tcp", "9000", "--udp", "9001"]
        env:
        - {name: GREETING, value: "hello $(POD_NAME)"}
        ports:
        - {name: http, containerPort: 8080}
        - {name: tcp-echo, containerPort: 9000}
        - {name: udp-echo, containerPort: 9001, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: tcp-echo, port: 9000}
  - {name: udp-echo, port: 9001, protocol: UDP}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: basic
  namespace: other
spec:
  replicas: 1
  selector:
    matchLabels: {app: basic}
  template:
    metadata:
      labels: {app: basic}
    spec:
      containers:
      - name: basic
        image: gcr.io/k8s-staging-gateway-api/echo-basic:v20231214-v1.0.0-140-gf544a46e
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
---
apiVersion: v1
kind: Service
metadata:
  name: basic
  namespace: other
spec:
  clusterIP: 10.96.77.77
  selector: {app: basic}
  ports:
  - {name: http, port: 8080, targetPort: 3000}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  labels: {app: client}
spec:
  containers:
  - name: client
    image: busybox
    command: ["sleep", "infinity"]
"""


def envoy_pid(lab: Lab, node: str | None = None) -> int:
    """The pid of a node's Envoy (the first node's by default) as recorded in ``proxy.json`` (0 when none ran)."""
    dirs = node_dirs(lab)
    try:
        data = json.loads((dirs[node or next(iter(dirs))] / "proxy.json").read_text())
    except (OSError, ValueError):
        return 0
    return int((data.get("envoy") or {}).get("pid") or 0)


@contextlib.contextmanager
def running_lab(files: Sequence[Path], *, name: str | None = None, timeout: float = 60.0,
                all_ready: bool = False, nodes: int | None = None, mtls: bool | None = None) -> Iterator[Lab]:
    """A lab up from ``files`` (of ``nodes`` nodes) for the block, then torn down; fails if anything is left behind.

    ``all_ready`` also requires every pod to be ready after ``lab up``.
    """
    lab = Lab(name or unique_name())
    try:
        result = lab.up(list(files), timeout=timeout, nodes=nodes, mtls=mtls)
        if all_ready:
            assert not result.not_ready, result
        assert result.agents and all(a.ok for a in result.agents), result.agents
        yield lab
    finally:
        pids = recorded_pids(lab) if lab.is_up else []
        envoys = [envoy_pid(lab, n) for n in node_dirs(lab)] if lab.is_up else []
        try:
            lab.down()
        except LabError as exc:
            pytest.fail(str(exc))
        problems = leftovers(lab.name, pids)
        problems += [f"envoy {pid}" for pid in envoys if pid and Path(f"/proc/{pid}").exists()]
        assert not problems, problems


_CONNECT = """
import json, socket, sys
out = []
for host, port in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(1.0)
    try:
        s.connect((host, port)); out.append("ok")
    except OSError as e:
        out.append(type(e).__name__)
    s.close()
print(json.dumps(out))
"""


def connect(lab: Lab, pod: str, targets: list[tuple[str, int]]) -> list[str]:
    """Try a TCP connection from ``pod`` to each (host, port): "ok" or the exception's name."""
    result = lab.run(pod, [sys.executable, "-S", "-c", _CONNECT, json.dumps(targets)], timeout=30)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    answer: list[str] = json.loads(result.stdout)
    return answer


_CONNECT_ONCE = """
import json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family)
s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
s.settimeout(1.0)
try:
    s.connect((host, port)); outcome = "ok"
except OSError as e:
    outcome = type(e).__name__
print(json.dumps([outcome, s.getsockname()[1]]))
"""


def connect_once(lab: Lab, pod: str, host: str, port: int, *, namespace: str = "default") -> tuple[str, int]:
    """One TCP connection from ``pod``: "ok" or the exception's name, and its source port (to find its flows)."""
    outcome, source_port = run_python(lab, pod, _CONNECT_ONCE, host, str(port), namespace=namespace, timeout=30)
    return str(outcome), int(source_port)


def _labels_yaml(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f"{key}: {value}" for key, value in labels.items()) + "}"


def echo_deployment(name: str, namespace: str, *, port: int = 8080, labels: dict[str, str] | None = None,
                    account: str | None = None, replicas: int = 1) -> str:
    """Deployment YAML of ``replicas`` echo pods serving HTTP on ``port``, labelled ``labels`` (``app: name``)."""
    selector = _labels_yaml(labels if labels is not None else {"app": name})
    account_line = f"\n      serviceAccountName: {account}" if account else ""
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {selector}}}
  template:
    metadata: {{labels: {selector}}}
    spec:{account_line}
      containers:
      - {{name: echo, image: meshcore/echo, args: ["--http", "{port}"], ports: [{{name: http, containerPort: {port}}}]}}
"""


def echo_app(name: str, namespace: str, *, port: int = 8080, service_port: int = 80,
             labels: dict[str, str] | None = None, account: str | None = None) -> str:
    """Deployment + Service YAML: one echo pod, and Service ``name`` on ``service_port`` to its http port."""
    selector = _labels_yaml(labels if labels is not None else {"app": name})
    return echo_deployment(name, namespace, port=port, labels=labels, account=account) + f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {selector}
  ports: [{{name: http, port: {service_port}, targetPort: http}}]
"""


def client_pod(name: str, namespace: str | None = None, account: str | None = None,
               labels: dict[str, str] | None = None, container: str = "main") -> str:
    """Pod YAML of a busybox client that sleeps, labelled ``labels`` (``app: name``; ``{}`` for none)."""
    labels = labels if labels is not None else {"app": name}
    meta = f"name: {name}" + (f", namespace: {namespace}" if namespace else "") \
        + (f", labels: {_labels_yaml(labels)}" if labels else "")
    account_line = f"\n  serviceAccountName: {account}" if account else ""
    return f"""
apiVersion: v1
kind: Pod
metadata: {{{meta}}}
spec:{account_line}
  containers: [{{name: {container}, image: busybox, command: ["sleep", "infinity"]}}]
"""


def curl_json(lab: Lab, pod: str, url: str, *args: str, namespace: str | None = None,
              timeout: float = 30) -> tuple[int, Any]:
    """Status and JSON body (or text) of one curl request from ``pod`` (5 s limit)."""
    result = lab.run(pod, ["curl", "-sS", "-m", "5", "-w", "\\n%{http_code}", *args, url], namespace=namespace,
                     timeout=timeout)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    body, _, status = result.stdout.decode(errors="replace").rpartition("\n")
    try:
        return int(status), json.loads(body)
    except ValueError:
        return int(status), body


def wait_for_rows(fetch: Callable[[], list[dict[str, Any]]], keep: Callable[[dict[str, Any]], bool], *,
                  at_least: int = 1, wait: float = 8.0, every: float = 0.3) -> list[dict[str, Any]]:
    """Rows of ``fetch()`` that ``keep`` accepts, polled until there are ``at_least`` of them or ``wait`` runs out.

    The node proxy's workers flush their access logs independently, so the first rows to
    appear may be only some of those a test caused: wait for as many as it expects.
    """
    deadline = time.monotonic() + wait
    while True:
        found = [row for row in fetch() if keep(row)]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(every)


def logged(lab: Lab, keep: Callable[[Flow], bool], *, at_least: int = 1, wait: float = 8.0) -> list[Flow]:
    """Flows of the lab's agents' journals (every node's, both layers) that ``keep`` accepts; see `wait_for_rows`."""
    return wait_for_rows(lambda: node_flows(node_dirs(lab)), keep,  # type: ignore[arg-type,return-value]
                         at_least=at_least, wait=wait)


def observed(lab: Lab, *args: str, keep: Callable[[dict[str, Any]], bool], at_least: int = 1,
             wait: float = 8.0) -> list[dict[str, Any]]:
    """Rows of ``meshcore observe -o json ARGS`` that ``keep`` accepts; see `wait_for_rows`."""
    def fetch() -> list[dict[str, Any]]:
        out = meshcore_cli("observe", "--name", lab.name, "-o", "json", *args)
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.decode().splitlines()]
    return wait_for_rows(fetch, keep, at_least=at_least, wait=wait)


_SERVER = """import http.server, json, os, socket
{setup}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
{answer}
        self.send_response(status); self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
S(('::', 8080), H).serve_forever()
"""


def http_server_code(answer: str, setup: str = "") -> str:
    """Python (standard library) serving HTTP on port 8080, IPv4 and IPv6, for a pod's command.

    ``answer`` is the body of the GET handler, indented by 8 spaces: it sets ``status``
    and ``body`` (bytes) from ``self``; ``setup`` runs first at module level.
    """
    return _SERVER.format(setup=setup, answer=answer)


def response_header(lab: Lab, pod: str, namespace: str, url: str, name: str) -> tuple[int, str | None]:
    """Status and the value of response header ``name`` (``None`` when absent) of one request from ``pod``."""
    result = lab.run(pod, ["curl", "-sS", "-m", "5", "-o", "/dev/null", "-D", "-", url], namespace=namespace,
                     timeout=30)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    lines = result.stdout.decode(errors="replace").lower().splitlines()
    return int(lines[0].split()[1]), next((x.split(":", 1)[1].strip() for x in lines
                                           if x.startswith(f"{name.lower()}:")), None)


# Runs in a pod: one `whoami` per target over TCP or UDP; the pod that answered and the
# address the answer came from (for UDP: the VIP, after reverse translation).
WHOAMI = r"""
import json, socket, sys
out = []
for host, port, proto in json.loads(sys.argv[1]):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM if proto == "UDP" else socket.SOCK_STREAM)
    s.settimeout(3)
    if proto == "UDP":
        s.sendto(b"whoami", (host, port))
        data, peer = s.recvfrom(4096)
    else:
        s.connect((host, port))
        s.sendall(b"whoami\n")
        data, peer = s.recv(4096), s.getpeername()
    s.close()
    out.append({"pod": json.loads(data)["pod"], "peer": peer[0]})
print(json.dumps(out))
"""
