"""Processes: start them detached inside a cgroup, recognise them later, stop them safely.

A process is identified by (pid, start time); before any signal the start time is
checked again through a pidfd, so a pid the kernel has recycled is never signalled.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from ..linux import alive as alive, enter_netns, start_time as start_time, stat_fields as stat_fields
from ._errors import LabError


_guarding = 0


def _plain_signals_in_child() -> None:
    if _guarding:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_plain_signals_in_child)


@contextlib.contextmanager
def forks_end_on_signals() -> Iterator[None]:
    """While active, a forked child (e.g. a netlink helper) dies on SIGINT/SIGTERM.

    Without this such a child would raise KeyboardInterrupt and unwind into the lab's
    own code, running its clean-up a second time from a copy of the process.
    """
    global _guarding
    _guarding += 1
    try:
        yield
    finally:
        _guarding -= 1


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    cgroup: str,
    log: str,
    netns: str | None = None,
) -> tuple[int, int]:
    """Start ``argv`` detached (own session, re-parented to init) inside ``cgroup``.

    Output goes to ``log`` (appended), input is /dev/null. Returns (pid, start time).
    The process joins the cgroup (and the network namespace file ``netns``, if given)
    before it executes, so it never runs outside them.
    """
    env_list = {str(k): str(v) for k, v in env.items()}
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            os.setsid()
            child = os.fork()
            if child == 0:
                _exec(argv, env_list, cwd, cgroup, log, netns)
            # The middle process is the parent: the pid cannot be recycled before this read.
            os.write(write_end, f"{child} {start_time(child)}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    while True:
        chunk = os.read(read_end, 64)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(middle, 0)
    text = b"".join(chunks).decode()
    if not text:
        raise LabError(f"could not start {' '.join(argv)}")
    pid, started = (int(x) for x in text.split())
    return pid, started


def _exec(argv: Sequence[str], env: dict[str, str], cwd: str, cgroup: str, log: str,
          netns: str | None) -> None:  # pragma: no cover
    """In the child: join the cgroup and namespace, set up stdio, execute; never returns."""
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.closerange(3, 65536)
        with open(Path(cgroup) / "cgroup.procs", "w") as f:
            f.write("0")
        if netns is not None:
            enter_netns(netns)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.chdir(cwd)
        os.execve(argv[0], list(argv), env)
    except BaseException as exc:
        try:
            os.write(2, f"meshcore lab: cannot start {' '.join(argv)}: {exc}\n".encode())
        finally:
            os._exit(127)


def signal_process(pid: int, started: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` if it is still the process that started at ``started``."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        # The pidfd pins this exact process: checking the start time after opening it
        # closes the window in which the pid could be reused.
        if not alive(pid, started):
            return False
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return False
            raise
        return True
    finally:
        os.close(pidfd)


def stop(processes: Iterable[tuple[int, int]], timeout: float = 3.0) -> None:
    """SIGTERM each (pid, start time) still alive, then SIGKILL those left after ``timeout``."""
    pending = [(pid, started) for pid, started in processes if signal_process(pid, started, signal.SIGTERM)]
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        time.sleep(0.02)
        pending = [(pid, started) for pid, started in pending if alive(pid, started)]
    for pid, started in pending:
        signal_process(pid, started, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while pending and time.monotonic() < deadline:
        time.sleep(0.02)
        pending = [(pid, started) for pid, started in pending if alive(pid, started)]
