"""`meshcore demo`: the bundled example app in a lab — the mesh's three jobs, then tear-down.

The app (``examples/demo``) has a web tier (three replicas, dual-stack Service), an API
tier (two replicas, an HTTP port and a UDP port), a client pod, an HTTPRoute on web
(``/api`` → api) and a NetworkPolicy admitting only client and web to api, plus a
stranger pod whose connections it drops. The demo shows:

1. the plan: per service port, eBPF or Envoy, and why;
2. load balancing: a batch of requests from the client to every service address and port,
   each answer naming the pod that sent it;
3. an L7 route: ``GET /api/...`` on web, answered by an api pod through the node Envoy;
4. policy: the stranger's connection to api dropped by the kernel (it times out), with its flow as
   ``meshcore observe`` shows it.

The lab is removed at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.table import Table

from ..observe import Flow
from ._errors import LabError
from ._lab import Lab
from ._status import LabStatus

DEMO_NAMESPACE = "demo"
CLIENT_POD = "client"

# Runs inside the client pod with the standard library only: one new connection (or UDP
# socket) per request, so every request is load-balanced on its own.
_CLIENT_SCRIPT = r"""
import http.client, json, socket, sys
targets, count = json.loads(sys.argv[1]), int(sys.argv[2])
results = []
for t in targets:
    answers, errors = {}, {}
    for _ in range(count):
        try:
            if t["protocol"] == "UDP":
                family = socket.AF_INET6 if ":" in t["host"] else socket.AF_INET
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.settimeout(2)
                    s.connect((t["host"], t["port"]))
                    s.send(b"whoami")
                    pod = json.loads(s.recv(4096))["pod"]
            else:
                c = http.client.HTTPConnection(t["host"], t["port"], timeout=2)
                c.request("GET", t.get("path", "/demo"))
                pod = json.loads(c.getresponse().read())["pod"]
                c.close()
            answers[pod] = answers.get(pod, 0) + 1
        except Exception as e:
            key = f"{type(e).__name__}: {e}"
            errors[key] = errors.get(key, 0) + 1
    results.append({**t, "answers": answers, "errors": errors})
print(json.dumps(results))
"""


# Runs inside the stranger pod: one TCP connection attempt, "connected" or why it failed.
_CONNECT_SCRIPT = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
    print("connected")
except OSError as e:
    print(type(e).__name__)
"""
STRANGER_POD = "stranger"
ROUTED_PATH = "/api/hello"


def demo_dir() -> Path:
    """The demo manifests shipped inside the package (``meshcore/examples/demo``)."""
    candidate = Path(__file__).resolve().parents[1] / "examples" / "demo"
    if not candidate.is_dir():
        raise LabError(f"the demo manifests are missing from this installation ({candidate})")
    return candidate


def targets(status: LabStatus) -> list[dict[str, Any]]:
    """Every service of the demo namespace, by name and by each ClusterIP, on each port."""
    out: list[dict[str, Any]] = []
    for service in status.services:
        if service.namespace != DEMO_NAMESPACE or not service.cluster_ips:
            continue
        for port in service.ports:
            protocol = str(port.get("protocol", "TCP"))
            label = f"{service.name}:{port['port']}/{protocol}"
            out.append({"service": label, "via": service.name, "host": service.name,
                        "port": port["port"], "protocol": protocol})
            for vip in service.cluster_ips:
                out.append({"service": label, "via": vip, "host": vip, "port": port["port"],
                            "protocol": protocol})
    return out


def _table(results: Sequence[dict[str, Any]], count: int) -> Table:
    table = Table(title=f"Which pod answered ({count} requests per row)", title_justify="left")
    for column in ("service", "via", "pod", "answers", ""):
        table.add_column(column)
    for result in results:
        first = True
        rows = sorted(result["answers"].items()) + [(f"[red]{e}[/]", n) for e, n in result["errors"].items()]
        for pod, n in rows or [("[red]no answer[/]", 0)]:
            bar = "█" * round(20 * n / max(count, 1))
            table.add_row(result["service"] if first else "", result["via"] if first else "", pod, str(n), bar)
            first = False
        table.add_section()
    return table


def plan_table(lab: Lab) -> Table:
    """The node's plan as the agent compiles it: per service port, eBPF or Envoy, and why."""
    from .. import compile_plan, translate  # noqa: PLC0415 - the core API, as a controller uses it

    snapshot = translate(objects=lab.objects()).snapshot
    plan = compile_plan(snapshot, lab.status().node)
    table = Table(title="The plan: who handles each service port, and why", title_justify="left")
    for column in ("service port", "datapath", "why"):
        table.add_column(column)
    for d in plan.decisions:
        if d.service.namespace == DEMO_NAMESPACE:
            table.add_row(f"{d.service.name}:{d.port}/{d.protocol}", d.datapath.value, d.reason)
    return table


def _run_script(lab: Lab, pod: str, script: str, *args: str) -> str:
    """What a standard-library Python ``script`` printed, run inside a demo pod."""
    run = lab.run(pod, [sys.executable, "-S", "-c", script, *args], namespace=DEMO_NAMESPACE, timeout=120)
    if run.returncode != 0:
        raise LabError(f"the demo's script in pod {pod} failed: {run.stderr.decode(errors='replace').strip()}")
    return run.stdout.decode().strip()


def _requests(lab: Lab, chosen: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """``count`` requests from the client to each target; who answered each, and the errors."""
    results: list[dict[str, Any]] = json.loads(_run_script(lab, CLIENT_POD, _CLIENT_SCRIPT, json.dumps(chosen),
                                                            str(count)))
    return results


def routed_request(lab: Lab, con: Console) -> bool:
    """``GET /api/...`` on web from the client: an api pod must answer, through the node Envoy."""
    [result] = _requests(lab, [{"service": "web", "via": "web", "host": "web", "port": 80, "protocol": "TCP",
                                "path": ROUTED_PATH}], 1)
    pods = list(result["answers"])
    ok = len(pods) == 1 and pods[0].startswith("api-")
    proxy = lab.status().agent.proxy
    con.print(f"GET http://web{ROUTED_PATH} from {DEMO_NAMESPACE}/{CLIENT_POD} → answered by "
              f"{', '.join(pods) or 'nobody'} (route /api → api, served by the node Envoy, pid {proxy.pid})"
              if ok else f"[red]GET http://web{ROUTED_PATH} was not routed to api: {result}[/]")
    return ok


def refused_connection(lab: Lab, con: Console) -> bool:
    """The stranger's connection to api must be dropped (it times out), and its flow logged as dropped."""
    from ..observe import FlowFilter  # noqa: PLC0415 - with the reader below
    from ._observe_command import flows  # noqa: PLC0415 - the `observe` command's reader

    outcome = _run_script(lab, STRANGER_POD, _CONNECT_SCRIPT, "api", "8080")
    con.print(f"{DEMO_NAMESPACE}/{STRANGER_POD} → api:8080: {outcome} (NetworkPolicy api-from-client-and-web)")
    deadline = time.monotonic() + 5
    dropped: list[Flow] = []
    keep = FlowFilter(pod=f"{DEMO_NAMESPACE}/{STRANGER_POD}", verdict="dropped")
    while not dropped and time.monotonic() < deadline:
        dropped = list(flows(lab, keep=keep))
        time.sleep(0.1)
    for flow in dropped[-1:]:
        con.print(f"meshcore observe --verdict dropped: {flow}", soft_wrap=True, markup=False)
    if outcome == "connected" or not dropped:
        con.print("[red]the stranger's connection was not dropped by policy[/]")
        return False
    return True


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the lab is still torn down."""
    owner = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            # A forked helper inherits this handler: it must end, not unwind into the demo.
            os._exit(128 + signum)
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(requests: int = 20, name: str = "demo", files: Sequence[str | Path] | None = None,
             console: Console | None = None) -> int:
    """Bring the demo app up, send ``requests`` per service address, show who answered, tear down.

    Returns 0 when every request was answered, 1 otherwise.
    """
    con = console or Console()
    lab = Lab(name)
    if lab.is_up:
        raise LabError(f"a lab named {name!r} is already up; remove it with `meshcore lab down --name {name}` "
                       "or choose another name with --name")
    paths = list(files) if files else [demo_dir()]
    with _terminate_as_interrupt():
        try:
            con.print(f"[bold]meshcore demo[/]: bringing up lab {name!r} from {', '.join(map(str, paths))}")
            result = lab.up(paths, progress=lambda m: con.print(f"  [dim]{m}[/]"))
            for warning in result.warnings:
                con.print(f"[yellow]warning:[/] {warning}")
            status = lab.status()
            con.print(f"{len(status.pods)} pods up; node agent applied {status.agent.frontends} service frontend(s) "
                      "(socket-level load balancing at the lab's cgroup root)")
            con.print(plan_table(lab))
            chosen = targets(status)
            con.print(f"sending {requests} requests to each of {len(chosen)} service addresses from pod "
                      f"{DEMO_NAMESPACE}/{CLIENT_POD} ...")
            results = _requests(lab, chosen, requests)
            con.print(_table(results, requests))
            failed = sum(sum(r["errors"].values()) for r in results)
            if failed:
                con.print(f"[red]{failed} request(s) failed[/]")
            else:
                con.print("every request was answered; each service spread its requests over its pods")
            routed = routed_request(lab, con)
            refused = refused_connection(lab, con)
            return 1 if failed or not routed or not refused else 0
        finally:
            con.print(f"tearing down lab {name!r} ...")
            lab.down()
            con.print("done: nothing is left behind")
