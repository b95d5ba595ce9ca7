"""Tearing down leaves no pins, links, cgroups, namespaces or processes behind."""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest
from pyroute2 import netns

from _datapath_support import Clients, make_cgroup, plan, service, topology
from meshcore import linux
from meshcore.datapath import SocketLB

pytestmark = pytest.mark.root


def test_destroy_and_teardown_leave_nothing_behind() -> None:
    tag = secrets.token_hex(3)
    pin_root = linux.bpffs() / f"mcdp-{tag}"
    with topology(tag) as net, make_cgroup(tag) as cgroup:
        with SocketLB(f"mcdp-{tag}", cgroup, pin_root) as lb:
            lb.apply(plan(service("10.96.77.30", 80, [("b1", 1)])))
        clients = Clients(net, cgroup)
        try:
            assert clients.run({"op": "tcp", "host": "10.96.77.30", "port": 80})["backend"] == "b1"
        finally:
            clients.close()
        SocketLB(f"mcdp-{tag}", cgroup, pin_root).destroy()
        attached = subprocess.run(["bpftool", "cgroup", "show", str(cgroup)], capture_output=True, text=True)
        assert attached.stdout.strip() == "", attached.stdout
        server_pid = net.server_pid
    assert not pin_root.exists()
    assert not cgroup.exists()
    assert not [n for n in netns.listnetns() if tag in n]
    assert not os.path.exists(f"/proc/{server_pid}") or "zombie" in open(f"/proc/{server_pid}/status").read().lower()
