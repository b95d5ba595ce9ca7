"""Running commands in a pod: its network namespace, cgroup and environment.

A command joins the pod's cgroup between fork and exec and enters its network namespace
through ``ip netns exec`` (which also bind-mounts the pod's /etc/netns files, so the
pod's hosts file applies). Commands run in the foreground receive Ctrl-C themselves.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ._errors import LabError
from ._machine import tool
from ._state import PodRecord


def pod_command(record: PodRecord, argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run ``argv`` in the pod."""
    if not argv:
        raise LabError("no command given (put it after `--`)")
    env = dict(record.env)
    if not env:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "POD_NAME": record.name,
               "POD_NAMESPACE": record.namespace, "POD_IP": record.ipv4}
    for passed in ("TERM", "COLUMNS", "LINES"):
        if passed in os.environ:
            env[passed] = os.environ[passed]
    return [tool("ip"), "netns", "exec", record.netns, *argv], env


def joiner(cgroup: str) -> Callable[[], None]:
    """A pre-exec hook that moves the child into ``cgroup`` and restores Ctrl-C for it."""
    def join() -> None:  # runs in the child between fork and exec
        with open(Path(cgroup) / "cgroup.procs", "w") as f:
            f.write("0")
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    return join


@contextlib.contextmanager
def ignoring_interrupts() -> Iterator[None]:
    """While a command runs in the foreground, Ctrl-C is for it, not for us."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    quit_previous = signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGQUIT, quit_previous)
