"""Fixtures for the datapath tests (see _datapath_support.py for the topology they build)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from _datapath_support import Clients, Net, make_cgroup, topology
from meshcore import linux
from meshcore.datapath import SocketLB


@pytest.fixture(scope="session")
def net() -> Iterator[Net]:
    """One topology shared by the session (namespaces and backend servers)."""
    if os.geteuid() != 0:
        pytest.fail("the datapath tests need root and the real kernel; run them as root")
    with topology(secrets.token_hex(3)) as n:
        yield n


@pytest.fixture
def cgroup() -> Iterator[Path]:
    """A cgroup for this test's clients."""
    with make_cgroup(secrets.token_hex(4)) as path:
        yield path


@pytest.fixture
def pin_root() -> Iterator[Path]:
    """A bpffs directory of this test's own, checked empty afterwards."""
    root = linux.bpffs() / f"mcdp-{secrets.token_hex(4)}"
    try:
        yield root
    finally:
        leftover = list(root.rglob("*")) if root.exists() else []
        if root.exists():
            for p in sorted(leftover, key=lambda p: len(p.parts), reverse=True):
                p.unlink() if not p.is_dir() else p.rmdir()
            root.rmdir()
        assert not leftover, f"pins left behind: {leftover}"


@pytest.fixture
def lb(cgroup: Path, pin_root: Path) -> Iterator[SocketLB]:
    """An open SocketLB on the test's cgroup, destroyed afterwards."""
    sock_lb = SocketLB(f"mcdp-{secrets.token_hex(3)}", cgroup, pin_root)
    try:
        with sock_lb:
            yield sock_lb
    finally:
        sock_lb.destroy()


@pytest.fixture
def clients(net: Net, cgroup: Path) -> Iterator[Clients]:
    """Client runner bound to the session topology and this test's cgroup."""
    c = Clients(net, cgroup)
    try:
        yield c
    finally:
        c.close()


