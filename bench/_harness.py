"""Pieces the benchmarks share: their C tools, namespaces and cgroups that clean up after
themselves, leftovers of killed runs, signals, and robust statistics.

Every bench names what it creates ``<prefix>-<pid>-...`` (its own prefix, its own pid), so
a later run can tell a leftover of a run that was killed outright from a run still going.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TypeVar

from pyroute2 import netns

from meshcore import linux

TOOLS = Path(__file__).resolve().parent / "tools"
T = TypeVar("T")


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: unwind and clean up like Ctrl-C does."""


# --- the C tools ----------------------------------------------------------------------------


def tool(name: str) -> Path:
    """The bench tool built from ``bench/tools/<name>.c``; make rebuilds it when missing or stale."""
    if shutil.which("make") is None:
        raise SystemExit("make is not installed: the bench tools are built with it (Debian packages make, gcc)")
    done = subprocess.run(["make", "-s", "-C", str(TOOLS), f"build/{name}"], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise SystemExit(f"building bench/tools/{name}.c failed:\n{done.stdout}{done.stderr}")
    return TOOLS / "build" / name


def spawn(stack: contextlib.ExitStack, argv: Sequence[str], what: str, *, stdin: bool = False, ready: bool = True,
          quiet: bool = False, preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[str]:
    """A process killed (by pid) when ``stack`` closes; waits for its ``ready`` line if asked.

    Its stdout is a pipe when it says ready or takes requests on stdin (answers are read
    from it), else discarded; ``quiet`` discards its stderr too.
    """
    talks = ready or stdin
    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE if stdin else None,
                            stdout=subprocess.PIPE if talks else subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL if quiet else None, text=True, preexec_fn=preexec_fn)

    def stop() -> None:
        proc.kill()
        proc.wait()
    stack.callback(stop)
    if ready:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"{what} did not start (exit code {proc.wait()})")
    return proc


def ask(proc: subprocess.Popen[str], request: str, what: str) -> list[str]:
    """Send one request line to a tool and return the fields of its one-line answer."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{request}\n")
    proc.stdin.flush()
    answer = proc.stdout.readline().split()
    if not answer:
        raise SystemExit(f"{what} stopped (exit code {proc.wait()})")
    return answer


# --- namespaces, cgroups, leftovers ---------------------------------------------------------


def remove_netns(name: str) -> None:
    """Remove a named network namespace if it is still there."""
    with contextlib.suppress(FileNotFoundError):
        netns.remove(name)


def make_netns(stack: contextlib.ExitStack, name: str) -> str:
    """A named network namespace, removed when ``stack`` closes."""
    netns.create(name)
    stack.callback(remove_netns, name)
    return name


def make_cgroup(stack: contextlib.ExitStack, name: str) -> Path:
    """A cgroup v2 directory of our own, removed (once its processes are gone) when ``stack`` closes."""
    path = linux.cgroup2() / name
    path.mkdir()

    def remove() -> None:
        for _ in range(50):  # a killed client may take a moment to leave
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        path.rmdir()
    stack.callback(remove)
    return path


def alive(pid: int) -> bool:
    """True while a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner(prefix: str, name: str) -> int | None:
    """The pid a run embedded in a ``<prefix>-<pid>-...`` name, or ``None``."""
    m = re.match(rf"^{re.escape(prefix)}-(\d+)-", name)
    return int(m.group(1)) if m else None


def sweep_stale(prefix: str, release_pins: Callable[[Path], None] | None = None) -> None:
    """Remove what runs of a bench that no longer exist left behind, saying what went on stderr.

    Looked for: bpffs pin directories, network namespaces and cgroups named
    ``<prefix>-<pid>-...``. ``release_pins`` undoes what a pin directory holds (detaching
    programs, say) before the directory goes; by default the directory is just deleted.
    """
    gone: list[str] = []
    for root in sorted(linux.bpffs().glob(f"{prefix}-*")):
        pid = owner(prefix, root.name + "-")
        if pid is None or alive(pid):
            continue
        if release_pins is not None:
            with contextlib.suppress(Exception):
                release_pins(root)
        shutil.rmtree(root, ignore_errors=True)
        gone.append(str(root))
    for name in sorted(netns.listnetns()):
        pid = owner(prefix, name)
        if pid is not None and not alive(pid):
            with contextlib.suppress(OSError):
                netns.remove(name)
                gone.append(f"netns {name}")
    for group in sorted(linux.cgroup2().glob(f"{prefix}-*")):
        pid = owner(prefix, group.name)
        if pid is not None and not alive(pid):
            with contextlib.suppress(OSError):
                group.rmdir()
                gone.append(str(group))
    for what in gone:
        print(f"removed a leftover of an earlier run: {what}", file=sys.stderr)


# --- running with cleanup -------------------------------------------------------------------


def lab_bench_parser(description: str, *, duration: str = "seconds per run",
                     rounds: int = 3) -> argparse.ArgumentParser:
    """A parser with the options every lab bench takes: --duration, --rounds, --connections (wrk's) and --json."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--duration", type=int, default=5, help=f"{duration} (default 5)")
    parser.add_argument("--rounds", type=int, default=rounds, help=f"interleaved rounds (default {rounds})")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    return parser


def require_root(script: str, why: str) -> None:
    """Stop with a message unless running as root."""
    if os.geteuid() != 0:
        raise SystemExit(f"{script} needs root ({why})")


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into an exception so every cleanup runs."""
    main = os.getpid()

    def raise_(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != main:
            # A forked helper (pyroute2 runs one per NetNS) must not run our cleanup.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Interrupted(signal.Signals(signum).name)
    old = {s: signal.signal(s, raise_) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Let cleanup finish even if the user presses Ctrl-C again."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_cleanly(script: str, body: Callable[[contextlib.ExitStack], T],
                failures: tuple[type[BaseException], ...] = ()) -> T:
    """Run ``body`` with a stack of cleanups that is unwound whatever happens.

    Ctrl-C, SIGTERM and SIGHUP end the run with exit code 130, the ``failures`` listed with
    their message and exit code 1; either way everything on the stack is removed first.
    """
    stack = contextlib.ExitStack()
    main = os.getpid()
    try:
        with signals_interrupt():
            return body(stack)
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\ninterrupted ({str(e) or 'SIGINT'}): cleaning up", file=sys.stderr)
        raise SystemExit(130) from None
    except failures as e:
        print(f"\n{script} failed: {e}; cleaning up", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        if os.getpid() == main:  # never in a forked helper that caught the same Ctrl-C
            with signals_ignored():
                stack.close()


# --- statistics -----------------------------------------------------------------------------


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    """First quartile, median, third quartile."""
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Ratios a/b of the same round."""
    return [x / y for x, y in zip(a, b, strict=True)]


def ratio_text(xs: list[float]) -> str:
    """Median of per-round ratios with the interquartile range."""
    q1, m, q3 = quartiles(xs)
    return f"{m:5.3f} [{q1:.3f}-{q3:.3f}]"


def value_text(xs: list[float], fmt: str) -> str:
    """Median (formatted with ``fmt``) with its interquartile range as ± percent."""
    q1, m, q3 = quartiles(xs)
    return f"{format(m, fmt)} ±{50 * (q3 - q1) / m:4.1f}%"


def percentile_ms(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of durations in seconds, in milliseconds."""
    ordered = sorted(values)
    return 1e3 * ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def verdict(ok: bool) -> str:
    """A word for a target."""
    return "met" if ok else "MISSED"


def compile_tool(source: Path, directory: Path) -> Path:
    """``source`` (a C file of bench/tools) built with gcc -O2 into ``directory``; the binary."""
    binary = directory / source.stem
    done = subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", str(binary), str(source)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"building {source} failed: {done.stderr}")
    return binary


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root``."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total
