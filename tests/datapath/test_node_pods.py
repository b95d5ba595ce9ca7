"""Finding pods on a node as the kubelet lays them out, against the real kernel: cgroups, namespaces, veths.

The test plays kubelet and runtime: under a cgroup of its own it makes the kubelet's pod
cgroups (the cgroupfs driver's ``kubepods/besteffort/pod<uid>`` and the systemd driver's
``kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`` with a
container's scope below it), a "node" network namespace, one network namespace per pod
joined to the node's by a veth whose pod end carries the pod's address, and a ``sleep``
in each pod's cgroup and namespace. Everything is removed in the fixture's teardown.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from pyroute2 import NetNS, netns

from meshcore import linux
from meshcore.agent import PodSandbox
from meshcore.kubesource import FoundPod, ScheduledPod, find_pods
from meshcore.model import WorkloadRef

pytestmark = pytest.mark.root


@attrs.define
class Node:
    """The fake node: its namespace, the kubelet's cgroup root, and what was made (for the teardown)."""

    tag: str
    netns: str
    root: Path
    namespaces: list[str] = attrs.Factory(list)
    processes: list[subprocess.Popen[bytes]] = attrs.Factory(list)

    def pod_netns(self, name: str, address: str, host_veth: str) -> str:
        """A pod network namespace whose eth0 (address/24) is a veth to ``host_veth`` in the node's."""
        ns = f"mcnp-{self.tag}-{name}"
        netns.create(ns)
        self.namespaces.append(ns)
        with NetNS(self.netns) as node:
            node.link("add", ifname=host_veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": ns})
            node.link("set", index=node.link_lookup(ifname=host_veth)[0], state="up")
        with NetNS(ns) as pod:
            index = pod.link_lookup(ifname="eth0")[0]
            pod.addr("add", index=index, address=address, prefixlen=24)
            pod.link("set", index=index, state="up")
        return ns

    def run_in(self, cgroup: Path, ns: str) -> int:
        """A ``sleep`` in ``cgroup`` (created) and the network namespace ``ns``; its pid."""
        cgroup.mkdir(parents=True, exist_ok=True)

        def join() -> None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

        proc = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "600"], preexec_fn=join)
        self.processes.append(proc)
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{proc.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "the sleep never entered its namespace"
            time.sleep(0.01)
        return proc.pid


@pytest.fixture
def node() -> Iterator[Node]:
    tag = secrets.token_hex(3)
    root = linux.cgroup2() / f"meshcore-test-{tag}"
    root.mkdir()
    made = Node(tag, f"mcnp-{tag}-node", root)
    netns.create(made.netns)
    try:
        yield made
    finally:
        for proc in made.processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                reverse=True):
            directory.rmdir()
        root.rmdir()
        for ns in [*made.namespaces, made.netns]:
            netns.remove(ns)


def _pod(name: str, uid: str, address: str, **kwargs: object) -> ScheduledPod:
    return ScheduledPod(WorkloadRef("shop", name), uid, (address,), **kwargs)  # type: ignore[arg-type]


def test_pods_in_both_kubelet_layouts_are_found_with_their_cgroup_netns_and_host_interface(node: Node) -> None:
    web_uid, api_uid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "6fa459ea-ee8a-3ca4-894e-db77e160355e"
    web_ns = node.pod_netns("web", "10.78.0.11", "vethweb")
    api_ns = node.pod_netns("api", "10.78.0.12", "vethapi")
    web_cgroup = node.root / "kubepods" / "besteffort" / f"pod{web_uid}"
    node.run_in(web_cgroup, web_ns)  # the sandbox's pause process, right in the pod's cgroup
    api_cgroup = (node.root / "kubepods.slice" / "kubepods-burstable.slice"
                  / f"kubepods-burstable-pod{api_uid.replace('-', '_')}.slice")
    node.run_in(api_cgroup / "cri-containerd-0a1b2c.scope", api_ns)  # only a container's process, below it
    (api_cgroup / "cri-containerd-5d6e7f.scope").mkdir()  # the sidecar container's cgroup

    found = find_pods([_pod("web", web_uid, "10.78.0.11"),
                       _pod("api", api_uid, "10.78.0.12", sidecar_container="containerd://5d6e7f")],
                      node.root, host_netns=node.netns)

    assert found.missing == ()
    assert found.interfaces() == {WorkloadRef("shop", "web"): "vethweb", WorkloadRef("shop", "api"): "vethapi"}
    assert found.sandboxes() == {
        # The runtime's bind mount of the namespace is named, not a process's /proc entry.
        WorkloadRef("shop", "web"): PodSandbox(str(web_cgroup), str(web_cgroup / "meshcore-sidecar"),
                                               str(linux.NETNS_RUN / web_ns)),
        WorkloadRef("shop", "api"): PodSandbox(str(api_cgroup), str(api_cgroup / "cri-containerd-5d6e7f.scope"),
                                               str(linux.NETNS_RUN / api_ns)),
    }


def test_without_a_bind_mount_the_namespace_is_a_process_s(node: Node, tmp_path: Path) -> None:
    uid = "0d9e5c1a-1111-4a2b-9c3d-4e5f6a7b8c9d"
    ns = node.pod_netns("web", "10.78.0.11", "vethweb")
    cgroup = node.root / "kubepods" / f"pod{uid}"  # a Guaranteed pod: no QoS level
    pid = node.run_in(cgroup, ns)
    found = find_pods([_pod("web", uid, "10.78.0.11")], node.root, host_netns=node.netns, netns_dir=tmp_path)
    [pod] = found.found
    assert pod == FoundPod(WorkloadRef("shop", "web"), "vethweb",
                           PodSandbox(str(cgroup), str(cgroup / "meshcore-sidecar"), f"/proc/{pid}/ns/net"))


def test_pods_that_are_not_there_are_reported_with_the_reason_never_guessed(node: Node) -> None:
    late_uid, hostnet_uid, wrong_uid = ("a1a1a1a1-0000-4000-8000-000000000001", "b2b2b2b2-0000-4000-8000-000000000002",
                                        "c3c3c3c3-0000-4000-8000-000000000003")
    late_ns = node.pod_netns("late", "10.78.0.13", "vethlate")
    # Runs in the node's own namespace though the API does not say hostNetwork.
    node.run_in(node.root / "kubepods" / "besteffort" / f"pod{hostnet_uid}", node.netns)
    wrong_ns = node.pod_netns("wrong", "10.78.0.14", "vethwrong")
    node.run_in(node.root / "kubepods" / "burstable" / f"pod{wrong_uid}", wrong_ns)
    empty_uid = "d4d4d4d4-0000-4000-8000-000000000004"
    (node.root / "kubepods" / "besteffort" / f"pod{empty_uid}").mkdir()
    pods = [_pod("late", late_uid, "10.78.0.13"), _pod("hostnet", hostnet_uid, "10.78.0.20"),
            _pod("declared", "e5e5e5e5-0000-4000-8000-000000000005", "192.0.2.9", host_network=True),
            _pod("wrong", wrong_uid, "10.78.0.99"), _pod("empty", empty_uid, "10.78.0.15")]

    first = find_pods(pods, node.root, host_netns=node.netns)
    assert first.found == ()
    reasons = {p.ref.name: p.reason for p in first.missing}
    assert reasons["late"].startswith(f"no cgroup for pod uid {late_uid} under {node.root}"), reasons
    assert "runs in the node's network namespace" in reasons["hostnet"], reasons
    assert "hostNetwork" in reasons["declared"], reasons
    assert reasons["wrong"] == (f"no interface in its network namespace {linux.NETNS_RUN / wrong_ns} has its "
                                "address 10.78.0.99"), reasons
    assert reasons["empty"] == (f"its cgroup {node.root / 'kubepods' / 'besteffort' / f'pod{empty_uid}'} holds no "
                                "process yet"), reasons

    # The sandbox appears: the next look finds the pod.
    node.run_in(node.root / "kubepods" / "besteffort" / f"pod{late_uid}", late_ns)
    again = find_pods(pods, node.root, host_netns=node.netns)
    assert again.interfaces() == {WorkloadRef("shop", "late"): "vethlate"}
    assert {p.ref.name for p in again.missing} == {"hostnet", "declared", "wrong", "empty"}
