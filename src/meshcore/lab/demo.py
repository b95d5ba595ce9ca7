"""`meshcore demo`: the bundled example app in a lab, which pod answered, then tear-down.

The app (``examples/demo``) has a web tier (three replicas, dual-stack Service), an API
tier (two replicas, an HTTP port and a UDP port) and a client pod. From the client, a
batch of requests goes to every service address and port; each answer names the pod that
sent it, so the table shows the kernel's load balancing at work. The lab is removed at
the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.table import Table

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
                c.request("GET", "/demo")
                pod = json.loads(c.getresponse().read())["pod"]
                c.close()
            answers[pod] = answers.get(pod, 0) + 1
        except Exception as e:
            key = f"{type(e).__name__}: {e}"
            errors[key] = errors.get(key, 0) + 1
    results.append({**t, "answers": answers, "errors": errors})
print(json.dumps(results))
"""


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
            chosen = targets(status)
            con.print(f"sending {requests} requests to each of {len(chosen)} service addresses from pod "
                      f"{DEMO_NAMESPACE}/{CLIENT_POD} ...")
            run = lab.run(CLIENT_POD, [sys.executable, "-S", "-c", _CLIENT_SCRIPT, json.dumps(chosen), str(requests)],
                          namespace=DEMO_NAMESPACE, timeout=120)
            if run.returncode != 0:
                raise LabError(f"the client failed: {run.stderr.decode(errors='replace').strip()}")
            results = json.loads(run.stdout)
            con.print(_table(results, requests))
            failed = sum(sum(r["errors"].values()) for r in results)
            if failed:
                con.print(f"[red]{failed} request(s) failed[/]")
            else:
                con.print("every request was answered; each service spread its requests over its pods")
            return 1 if failed else 0
        finally:
            con.print(f"tearing down lab {name!r} ...")
            lab.down()
            con.print("done: nothing is left behind")
