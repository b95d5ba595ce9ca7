"""SidecarSteering against the real kernel: a pod's connections through a stand-in sidecar, both ways.

A pod network namespace joined to a peer namespace by a veth, a pod cgroup with a
``sidecar`` cgroup below it, and a small Python "sidecar" in that cgroup listening where a
sidecar Envoy would (loopback 15001 outbound, the pod's address 15006 inbound) and saying
what it saw: the local address, the peer, and the original destination the kernel gives
back through getsockopt(SO_ORIGINAL_DST).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshcore import linux
from meshcore.datapath import SidecarPod, SidecarSteering

pytestmark = pytest.mark.root

POD = "10.77.0.2"
PEER = "10.77.0.1"

_SIDECAR = r"""
import json, socket, struct, sys, threading
def serve(address, tag):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(address); s.listen(16)
    while True:
        c, peer = s.accept()
        try:
            port, ip = struct.unpack("!2xH4s8x", c.getsockopt(socket.SOL_IP, 80, 16))
            original = f"{socket.inet_ntoa(ip)}:{port}"
        except OSError as exc:
            original = f"error {exc.errno}"
        c.sendall(json.dumps({"via": tag, "local": list(c.getsockname()), "peer": peer[0],
                              "original": original}).encode() + b"\n")
        c.close()
threading.Thread(target=serve, args=(("127.0.0.1", 15001), "outbound"), daemon=True).start()
serve((sys.argv[1], 15006), "inbound")
"""

_CONNECT = r"""
import json, socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print(s.recv(500).decode().strip() or json.dumps({"closed": True}))
except OSError as exc:
    print(json.dumps({"error": type(exc).__name__}))
"""


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class Pod:
    """The pod's namespace, cgroups and stand-in sidecar; a peer namespace on the other end of its veth."""

    def __init__(self, tag: str) -> None:
        self.netns, self.peer = f"mcsc-{tag}", f"mcsc-{tag}-peer"
        self.cgroup = linux.cgroup2() / f"mcsc-{tag}"
        self.sidecar_cgroup = self.cgroup / "sidecar"
        self.sidecar: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Pod:
        for ns in (self.netns, self.peer):
            _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", "sc0", "netns", self.netns, "type", "veth", "peer", "name", "sc1", "netns", self.peer)
        for ns, dev, address in ((self.netns, "sc0", POD), (self.peer, "sc1", PEER)):
            _sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        self.sidecar_cgroup.mkdir(parents=True)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_sidecar()
        for ns in (self.netns, self.peer):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        for cg in (self.sidecar_cgroup, self.cgroup):
            for _ in range(50):
                try:
                    cg.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)

    def _in(self, cgroup: Path, netns: str, code: str, *args: str) -> subprocess.Popen[bytes]:
        def join() -> None:
            (cgroup / "cgroup.procs").write_text("0")
        return subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-S", "-c", code, *args],
                                preexec_fn=join, stdout=subprocess.PIPE)

    def start_sidecar(self) -> None:
        self.sidecar = self._in(self.sidecar_cgroup, self.netns, _SIDECAR, POD)
        time.sleep(0.5)

    def stop_sidecar(self) -> None:
        if self.sidecar is not None:
            self.sidecar.kill()
            self.sidecar.wait()
            self.sidecar = None

    def connect(self, host: str, port: int, *, from_peer: bool = False, cgroup: Path | None = None) -> dict[str, object]:
        """What a process of the pod (or of the peer) gets connecting to host:port."""
        proc = self._in(cgroup or self.cgroup, self.peer if from_peer else self.netns, _CONNECT, host, str(port))
        out, _ = proc.communicate(timeout=10)
        return json.loads(out)  # type: ignore[no-any-return]

    def steered(self, capture: bool) -> SidecarPod:
        return SidecarPod("default/p", self.cgroup, self.sidecar_cgroup, f"/run/netns/{self.netns}", (POD,),
                          15001, 15006, capture)


@pytest.fixture
def pod() -> Iterator[Pod]:
    with Pod(secrets.token_hex(3)) as p:
        yield p


@pytest.fixture
def steering(pin_root: Path, tmp_path: Path) -> Iterator[SidecarSteering]:
    s = SidecarSteering(f"mcsc-{secrets.token_hex(3)}", tmp_path / "sidecars.json", pin_root)
    try:
        yield s
    finally:
        s.destroy()


def test_the_pods_connections_reach_its_sidecar_with_their_destination(pod: Pod, steering: SidecarSteering) -> None:
    change = steering.apply([pod.steered(False)])
    assert change.attached == ("default/p",) and not change.capturing
    pod.start_sidecar()
    # Attached but not steered: the pod's connection goes where it was going (nowhere here).
    assert "error" in pod.connect("10.1.2.3", 80)
    assert steering.apply([pod.steered(True)]).capturing == ("default/p",)
    got = pod.connect("10.1.2.3", 80)
    assert got == {"via": "outbound", "local": ["127.0.0.1", 15001], "peer": "127.0.0.1", "original": "10.1.2.3:80"}
    # Loopback is never steered; the sidecar's own connections are its own.
    assert pod.connect("127.0.0.1", 15001)["original"] == "error 2"
    assert pod.connect(PEER, 7, cgroup=pod.sidecar_cgroup) == {"error": "ConnectionRefusedError"}


def test_connections_to_the_pod_reach_its_sidecar_keeping_their_destination(pod: Pod,
                                                                             steering: SidecarSteering) -> None:
    steering.apply([pod.steered(False)])
    pod.start_sidecar()  # it listens after the pod was attached: the kernel records its listener
    assert pod.connect(POD, 8080, from_peer=True) == {"error": "ConnectionRefusedError"}  # not steered yet
    steering.apply([pod.steered(True)])
    got = pod.connect(POD, 8080, from_peer=True)
    assert got == {"via": "inbound", "local": [POD, 8080], "peer": PEER, "original": f"{POD}:8080"}
    # With steering on and no sidecar listening, the pod refuses rather than letting anything past it.
    pod.stop_sidecar()
    assert pod.connect(POD, 8080, from_peer=True) == {"error": "ConnectionRefusedError"}
    # Steering off, then the pod detached: connections reach the pod's own sockets again.
    assert steering.apply([pod.steered(False)]).released == ("default/p",)
    assert steering.apply([]).detached == ("default/p",)
    assert steering.held() == {}


def test_a_sidecar_is_steered_back_to_itself_only_into_the_tunnels_it_holds(pod: Pod,
                                                                            steering: SidecarSteering) -> None:
    steering.apply([pod.steered(False)])
    pod.start_sidecar()
    steering.apply([pod.steered(True)])
    steering.steer([("10.9.9.9", 0, True), ("10.9.9.9", 8443, False)])
    got = pod.connect("10.9.9.9", 80, cgroup=pod.sidecar_cgroup)
    assert got["via"] == "outbound" and got["original"] == "10.9.9.9:80"
    # A port excepted from the tunnel (DISABLE) goes straight on.
    assert "error" in pod.connect("10.9.9.9", 8443, cgroup=pod.sidecar_cgroup)
    steering.steer([])
    assert "error" in pod.connect("10.9.9.9", 80, cgroup=pod.sidecar_cgroup)
