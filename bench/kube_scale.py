"""Scale of the Kubernetes source: N Services × M endpoints through list and watch, beside the same objects from files.

One run measures both ways a node agent gets its configuration, each in a fresh process:

- ``kube``: ``KubeSource`` against the stand-in API server (tests/kubeapi, in a process of
  its own, serving JSON lists in pages of 500 and watch streams as kube-apiserver does);
- ``files``: ``ManifestFiles`` on a directory of YAML files, one per namespace.

For each: the initial sync (start → the first generation written to the socket LB), the
agent process's memory (RSS after the sync and peak), and the time from one
EndpointSlice change (a merge patch sent to the API server, or one file rewritten) to
the kernel map holding the new endpoint, p50 and p99 over ``--changes`` changes, with
where it went: the source (watch delivery and the settle delay, or the files' poll and
re-read), handing out the update, and the agent (translate, compile, diff and write).

With ``--kernel`` (root) the socket LB is the real one, on a cgroup of its own; without,
a stand-in records what would be written.

    PYTHONPATH=src .venv/bin/python bench/kube_scale.py [--services 10000] [--endpoints 10] [--changes 20]
    sudo PYTHONPATH=src .venv/bin/python bench/kube_scale.py --kernel

Where the agent's endpoint path goes incremental (only the changed EndpointSlice
translated and compiled), the ``agent`` share of the change latency is what shrinks;
the source's share is the watch and the settle delay (0.2 s by default).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ipaddress
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _harness import alive, owner  # noqa: E402
from compile_scale import synthetic_yaml  # noqa: E402

PREFIX = "mcbenchkube"
NODE = "node-1"
#: Changed endpoints get addresses from here (outside the synthetic cluster's).
MARKERS = ipaddress.IPv4Address("10.250.0.0")


def cluster(services: int, endpoints: int) -> list[dict[str, Any]]:
    """The synthetic cluster of bench/compile_scale.py as plain objects."""
    return [d for d in yaml.load_all(synthetic_yaml(services, endpoints), Loader=yaml.CSafeLoader) if d]


def target(k: int, services: int) -> tuple[str, str]:
    """(namespace, name) of the EndpointSlice change ``k`` touches, spread over the cluster."""
    i = (k * 7919) % services
    return f"ns-{i % 100}", f"svc-{i}-abcde"


def with_marker(eps: Mapping[str, Any], k: int) -> tuple[list[dict[str, Any]], str]:
    """The slice's endpoints with the first one's address replaced by change ``k``'s marker address."""
    marker = str(MARKERS + k)
    endpoints = copy.deepcopy(list(eps["endpoints"]))
    endpoints[0]["addresses"] = [marker]
    return endpoints, marker


def rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# --- the stand-in API server, in a process of its own ------------------------------------------


def serve(services: int, endpoints: int, kubeconfig: Path) -> None:
    """Fill a stand-in API server with the cluster and serve it until terminated."""
    sys.path.insert(0, str(ROOT / "tests" / "kubeapi"))
    from standin_apiserver import StandInApiServer

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    server = StandInApiServer(bookmark_seconds=5.0)
    store = server.store
    for body in cluster(services, endpoints):
        kind = next(k for k in store.kinds if k.api_version == body["apiVersion"] and k.kind == body["kind"])
        store.create(kind, body["metadata"].get("namespace", ""), body)
    server.start()
    server.kubeconfig(kubeconfig)
    print(server.url, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


# --- one variant, in a fresh process --------------------------------------------------------------


class Timeline:
    """When the change being measured was sent, handed out as an update, and written to the kernel."""

    def __init__(self) -> None:
        self.marker = ""
        self.sent = 0.0
        self.polled = 0.0
        self.first_polled = 0.0
        self.written = threading.Event()
        self.first_applied = threading.Event()
        self.written_at = 0.0


class TimedLoadBalancer:
    """The socket LB (real or a recording stand-in), noting when the plan holding the marker address is written."""

    def __init__(self, inner: Any, timeline: Timeline) -> None:
        self.inner = inner
        self.timeline = timeline

    def apply(self, plan: Any) -> Any:
        report = self.inner.apply(plan)
        now = time.perf_counter()
        marker = self.timeline.marker
        if not self.timeline.first_applied.is_set():
            self.timeline.written_at = now
            self.timeline.first_applied.set()
        elif marker and any(b.address == marker for s in plan.services for b in s.backends):
            self.timeline.written_at = now
            self.timeline.written.set()
        return report

    def counts(self) -> dict[str, int]:
        return dict(self.inner.counts())

    def close(self) -> None:
        self.inner.close()


class Recorded:
    """What a socket LB would have written (without root)."""

    changed = True

    def summary(self) -> str:
        return "recorded"


class RecordingLoadBalancer:
    def apply(self, plan: Any) -> Recorded:
        return Recorded()

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


class NoPolicy:
    """The policy enforcer is not measured here (the synthetic cluster has no policy)."""

    def apply(self, plan: Any, interfaces: Mapping[Any, str] | None) -> Recorded:
        return Recorded()

    def flows(self, timeout: float, *, follow: bool) -> Iterator[Any]:
        return iter(())

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


class TimedSource:
    """The source, noting when a changed configuration is handed to the agent."""

    def __init__(self, inner: Any, timeline: Timeline) -> None:
        self.inner = inner
        self.timeline = timeline

    def poll(self) -> Any:
        update = self.inner.poll()
        if update is not None:
            self.timeline.polled = time.perf_counter()
            self.timeline.first_polled = self.timeline.first_polled or self.timeline.polled
        return update


@contextlib.contextmanager
def kernel_lb(variant: str) -> Iterator[Any]:
    """The real socket LB on a cgroup and pin root of this run's own, removed afterwards."""
    from meshcore import linux
    from meshcore.agent import KernelLoadBalancer
    from meshcore.datapath import SocketLB, cgroup2_mount

    name = f"{PREFIX}-{os.getpid()}-{variant}"
    group = cgroup2_mount() / name
    group.mkdir()
    lb = SocketLB(name, group, linux.bpffs() / name)
    try:
        yield KernelLoadBalancer(lb)
    finally:
        with contextlib.suppress(Exception):
            lb.destroy()
        with contextlib.suppress(OSError):
            group.rmdir()


def sweep_stale() -> None:
    """Remove what killed runs left behind (cgroups, pins and state directories named for their pid)."""
    from meshcore import linux
    from meshcore.datapath import SocketLB, cgroup2_mount

    for tmp in Path(tempfile.gettempdir()).glob(f"{PREFIX}-*"):
        pid = owner(PREFIX, tmp.name)
        if pid is not None and not alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
    for root in [*linux.bpffs().glob(f"{PREFIX}-*"), *cgroup2_mount().glob(f"{PREFIX}-*")]:
        pid = owner(PREFIX, root.name)
        if pid is None or alive(pid):
            continue
        with contextlib.suppress(Exception):
            if root.parent == linux.bpffs():
                SocketLB(root.name, "/", root).destroy()
            root.rmdir()


#: Prepares one change of an EndpointSlice (reading it, building the new version) and returns
#: what makes it (the timed part): (namespace, name, change number) → (marker address, act).
Change = Callable[[str, str, int], tuple[str, Callable[[], None]]]


def run_variant(args: argparse.Namespace) -> dict[str, Any]:
    """Start an agent on the variant's source, sync, then time ``args.changes`` endpoint changes."""
    from meshcore.agent import AgentRunner, ManifestFiles, NodeAgent, NodeFacts

    timeline = Timeline()
    state = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{os.getpid()}-"))
    stack = contextlib.ExitStack()
    stack.callback(shutil.rmtree, state, ignore_errors=True)
    inner = stack.enter_context(kernel_lb(args.variant)) if args.kernel else RecordingLoadBalancer()
    lb = TimedLoadBalancer(inner, timeline)
    agent = NodeAgent(NodeFacts(NODE, "/", state), load_balancer=lb, policy=NoPolicy(), adapters=[])
    change: Change
    server_cpu = cpu_seconds(args.server_pid)
    start = time.perf_counter()
    if args.variant == "kube":
        from meshcore.kubesource import KubeSource

        source: Any = KubeSource(kubeconfig=args.kubeconfig, node=NODE)
        stack.callback(source.close)
        runner = AgentRunner(agent, TimedSource(source, timeline), metrics_address="off")
        source.subscribe(runner.wake)
        change = patcher(Path(args.kubeconfig))
    else:
        runner = AgentRunner(agent, TimedSource(ManifestFiles([args.dir]), timeline), poll=0.1,
                             metrics_address="off")
        change = rewriter(Path(args.dir))
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    if not timeline.first_applied.wait(900):
        raise SystemExit(f"{args.variant}: no generation applied within 900 s")
    synced = {"sync_s": timeline.written_at - start, "sync_source_s": timeline.first_polled - start,
              "sync_agent_s": timeline.written_at - timeline.first_polled, "rss_mib": rss_mib(), "peak_mib": peak_mib(),
              "load": os.getloadavg()[0], "server_cpu_s": cpu_seconds(args.server_pid) - server_cpu}
    latencies, source_s, agent_s = [], [], []
    for k in range(args.changes):
        marker, act = change(*target(k, args.services), args.round * args.changes + k)
        time.sleep(0.3)  # apart from the last change, so each is its own generation
        timeline.marker = marker
        timeline.written.clear()
        timeline.sent = time.perf_counter()
        act()
        if not timeline.written.wait(300):
            raise SystemExit(f"{args.variant}: change {k} ({marker}) not written within 300 s")
        latencies.append(timeline.written_at - timeline.sent)
        source_s.append(timeline.polled - timeline.sent)
        agent_s.append(timeline.written_at - timeline.polled)
    stop.set()
    runner.wake()
    thread.join(timeout=60)
    stack.close()
    return {**synced, "latency_s": latencies, "source_s": source_s, "agent_s": agent_s, "end_peak_mib": peak_mib(),
            "end_load": os.getloadavg()[0]}


def patcher(kubeconfig: Path) -> Change:
    """Read the EndpointSlice, then send its new endpoints as a merge patch (what the controller does)."""
    server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]

    def change(namespace: str, name: str, k: int) -> tuple[str, Callable[[], None]]:
        url = f"{server}/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}"
        with urllib.request.urlopen(url, timeout=30) as answer:
            endpoints, marker = with_marker(json.load(answer), k)
        request = urllib.request.Request(url, data=json.dumps({"endpoints": endpoints}).encode(), method="PATCH",
                                         headers={"Content-Type": "application/merge-patch+json"})

        def act() -> None:
            with urllib.request.urlopen(request, timeout=30) as answer:
                answer.read()

        return marker, act

    return change


def namespace_file(directory: Path, namespace: str) -> Path:
    return directory / f"{namespace}.yaml"


def write_files(directory: Path, objects: list[dict[str, Any]]) -> None:
    """One YAML file per namespace (the Namespace objects in their own)."""
    by_file: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_file.setdefault(obj["metadata"].get("namespace") or "cluster", []).append(obj)
    for name, docs in by_file.items():
        namespace_file(directory, name).write_text(yaml.dump_all(docs, Dumper=yaml.CSafeDumper))


def rewriter(directory: Path) -> Change:
    """Write the namespace's file anew with the changed EndpointSlice; the act replaces the file (atomically)."""
    def change(namespace: str, name: str, k: int) -> tuple[str, Callable[[], None]]:
        path = namespace_file(directory, namespace)
        docs = [d for d in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader) if d]
        eps = next(d for d in docs if d["kind"] == "EndpointSlice" and d["metadata"]["name"] == name)
        eps["endpoints"], marker = with_marker(eps, k)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.dump_all(docs, Dumper=yaml.CSafeDumper))
        return marker, lambda: os.replace(tmp, path)

    return change


# --- the run --------------------------------------------------------------------------------------


def child(variant: str, round_: int, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--variant", variant, "--round", str(round_), "--services", str(args.services),
               "--endpoints", str(args.endpoints), "--changes", str(args.changes),
               *(["--kernel"] if args.kernel else []), *extra]
    out = subprocess.run(command, check=False, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"the {variant} variant failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(kube: list[dict[str, Any]], files: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Medians over the rounds; change latencies pooled over them."""
    def value(runs: list[dict[str, Any]], key: str) -> float:
        return median([r[key] for r in runs])

    def pooled(runs: list[dict[str, Any]], key: str) -> list[float]:
        return [x for r in runs for x in r[key]]

    print(f"kube_scale: {args.services:,} services × {args.endpoints} endpoints "
          f"({args.services * args.endpoints:,} endpoints), {args.rounds} round(s) of {args.changes} changes, "
          f"socket LB: {'real (kernel)' if args.kernel else 'recorded (no root)'}")
    loads = ", ".join(f"{r['load']:.1f}–{r['end_load']:.1f}" for pair in zip(kube, files) for r in pair)
    print(f"  load average (1 min) during each variant, in run order: {loads}")
    print(f"  {'':36} {'kube (watch)':>13} {'files (YAML)':>13} {'kube/files':>11}")
    for label, key in (("initial sync (start → kernel)", "sync_s"), ("  of which: source → first update", "sync_source_s"),
                       ("  of which: agent (first apply)", "sync_agent_s")):
        a, b = value(kube, key), value(files, key)
        print(f"  {label:36} {a:11.2f} s {b:11.2f} s {a / b:10.2f}×")
    print(f"  {'  (the API server used meanwhile)':36} {value(kube, 'server_cpu_s'):9.2f} s CPU")
    for label, key in (("RSS after the sync", "rss_mib"), ("peak RSS", "end_peak_mib")):
        a, b = value(kube, key), value(files, key)
        print(f"  {label:36} {a:9.0f} MiB {b:9.0f} MiB {a / b:10.2f}×")
    for label, key in (("change → kernel", "latency_s"), ("  of which: source → update", "source_s"),
                       ("  of which: agent (translate…write)", "agent_s")):
        for p in (50, 99):
            a, b = pct(pooled(kube, key), p), pct(pooled(files, key), p)
            print(f"  {label + f' p{p}':36} {1e3 * a:10.0f} ms {1e3 * b:10.0f} ms {a / b:10.2f}×")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="alternate the variants this many times (medians)")
    parser.add_argument("--kernel", action="store_true", help="write to a real socket LB (root)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=["kube", "files"], help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)  # markers differ per round
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.services, args.endpoints, args.serve)
        return 0
    if args.variant:
        print(json.dumps(run_variant(args)))
        return 0
    if args.kernel:
        if os.geteuid() != 0:
            print("--kernel needs root", file=sys.stderr)
            return 2
        sweep_stale()
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-{os.getpid()}-") as tmp:
        directory = Path(tmp) / "manifests"
        directory.mkdir()
        write_files(directory, cluster(args.services, args.endpoints))
        kubeconfig = Path(tmp) / "kubeconfig"
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(kubeconfig), "--services",
                                   str(args.services), "--endpoints", str(args.endpoints)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            server.stdout.readline()  # its address, once filled and listening
            kube, files = [], []
            for n in range(args.rounds):  # alternated, so a change of the machine's load hits both
                kube.append(child("kube", n, args, ["--kubeconfig", str(kubeconfig), "--server-pid", str(server.pid)]))
                files.append(child("files", n, args, ["--dir", str(directory)]))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    report(kube, files, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
