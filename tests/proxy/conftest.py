"""Fixtures for the node-proxy tests: one control plane and one Envoy for the session.

Every test sets the node's whole plan (so nothing of an earlier test stays configured)
on ports of its own, and waits until Envoy acknowledged it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _proxy_support import PORT_BLOCK, ProxyEnv, free_port_block

from meshcore import model as m
from meshcore.compile import Plan
from meshcore.proxy import ControlPlane, EnvoyOptions, EnvoySupervisor



@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    """A short directory of the session's own (Unix socket paths are limited to 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mcpx-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def control_plane(work_dir: Path) -> Iterator[ControlPlane]:
    with ControlPlane(f"unix:{work_dir}/xds.sock") as cp:
        yield cp


@pytest.fixture(scope="session")
def proxy_env(control_plane: ControlPlane, work_dir: Path) -> Iterator[ProxyEnv]:
    node = f"mcpx-{os.getpid()}"
    sup = EnvoySupervisor(EnvoyOptions(node, control_plane.endpoint, work_dir / "envoy", concurrency=2,
                                       drain_time_s=1))
    sup.start()
    try:
        yield ProxyEnv(control_plane, sup, node, work_dir)
    finally:
        sup.stop(drain_timeout=0)
        assert sup.pid is None


@pytest.fixture
def port_base() -> int:
    """The first of 16 free ports for this test's proxy listeners."""
    return free_port_block(PORT_BLOCK)


@pytest.fixture
def apply(proxy_env: ProxyEnv, port_base: int) -> Callable[[m.Snapshot], Plan]:
    """Compile a snapshot for the session node, serve it, wait for Envoy's ACK."""
    def run(snap: m.Snapshot) -> Plan:
        return proxy_env.apply(snap, port_base)
    return run
