"""Several nodes without the kernel: node subnets, placement, the state file, Node objects and identities."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import meshcore
from meshcore.compile import CompileOptions, EnvoyCluster, EnvoyPlan, compile_plan
from meshcore.datapath import PolicyEnforcer
from meshcore.datapath.maps import pol_ipcache
from meshcore.kube import load_text
from meshcore.lab import LabError, LabRanges
from meshcore.lab._ipam import lone_node_ranges, next_pod_index, node_ranges
from meshcore.lab._manifest import desired_state, enrich_node
from meshcore.lab._placement import PlacementNode, lab_node_labels, place, unknown_nodes
from meshcore.lab._state import STATE_VERSION, LabState, NodeRecord
from meshcore.model import Identity, Node, ReservedIdentity, ServiceRef, Snapshot, Workload
from meshcore.proxy import CLUSTER, ProxySettings, build_resources


def test_each_node_takes_a_subnet_with_its_own_and_its_proxys_address_first() -> None:
    ranges = LabRanges()
    one, two = node_ranges(ranges, 1), node_ranges(ranges, 2)
    assert (one.pod_ipv4, one.pod_ipv6) == ("10.244.1.0/24", "fd00:10:244:0:1::/80")
    assert two.node_addresses == ("10.244.2.1", "fd00:10:244:0:2::1")
    assert two.proxy_addresses == ("10.244.2.2", "fd00:10:244:0:2::2")
    assert two.pod_addresses(next_pod_index(two, ())) == ("10.244.2.3", "fd00:10:244:0:2::3")
    # A lab of one node keeps the whole ranges and its old addresses: no proxy address.
    lone = lone_node_ranges(ranges)
    assert lone.node_addresses == ("10.244.0.1", "fd00:10:244::1") and lone.proxy_addresses == ()
    assert lone.pod_addresses(next_pod_index(lone, ())) == ("10.244.0.2", "fd00:10:244::2")
    with pytest.raises(LabError, match="too small for several nodes"):
        node_ranges(LabRanges(pod_ipv4="10.1.0.0/24"), 1)
    with pytest.raises(LabError, match="1 to 255 nodes"):
        node_ranges(ranges, 256)


PODS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {disk: ssd}
      containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: pinned}
spec:
  nodeName: node-3
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: free}
spec:
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: lost}
spec:
  nodeName: node-9
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: picky}
spec:
  nodeSelector: {disk: tape}
  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: []}}}
  containers: [{name: c, image: busybox}]
"""

NODES = [PlacementNode("node-1", {"disk": "hdd"}), PlacementNode("node-2", {"disk": "ssd"}),
         PlacementNode("node-3", {"disk": "ssd"})]


def _desired(text: str = PODS) -> list[object]:
    objects, diagnostics = load_text(text, "pods.yaml")
    assert not diagnostics
    return list(desired_state(objects).pods)


def test_pods_go_where_nodename_and_nodeselector_say_else_spread_deterministically() -> None:
    pods = _desired()
    placed, warnings = place(pods, NODES, {})  # type: ignore[arg-type]
    web = sorted(v for k, v in placed.items() if k.startswith("default/web-"))
    assert web == ["node-2", "node-2", "node-3"]  # only ssd nodes, fewest pods first
    assert placed["default/pinned"] == "node-3"
    assert placed["default/free"] == "node-1"  # the least loaded
    assert place(pods, NODES, {}) == (placed, warnings)  # the same input places the same way
    # A pod that runs keeps its node; a node that is down gets no new pod.
    kept, _ = place(pods, [NODES[0], PlacementNode("node-2", {"disk": "ssd"}, up=False), NODES[2]],
                    {"default/free": "node-2"})  # type: ignore[arg-type]
    assert kept["default/free"] == "node-2"
    assert {v for k, v in kept.items() if k.startswith("default/web-")} == {"node-3"}


def test_what_placement_cannot_honour_is_a_warning_naming_the_field_and_where_the_pod_runs() -> None:
    _, warnings = place(_desired(), NODES, {})  # type: ignore[arg-type]
    found = {(d.code, d.field): d for d in warnings}
    lost = found[("MC0600", "spec.nodeName")]
    assert "node-9" in lost.message and "node-1, node-2, node-3" in lost.message and "placed as if" in lost.message
    assert str(lost.source).startswith("pods.yaml:31 Pod default/lost"), lost.source  # the nodeName line
    assert ("MC0601", "spec.nodeSelector") in found and "disk" in found[("MC0601", "spec.nodeSelector")].message
    assert ("MC0602", "spec.affinity.nodeAffinity") in found
    assert all(d.severity.value == "warning" for d in warnings)
    # A Deployment's template is reported once, at the Deployment.
    text = PODS.replace("{disk: ssd}", "{disk: floppy}")
    _, warnings = place(_desired(text), NODES, {})  # type: ignore[arg-type]
    template = [d for d in warnings if d.field == "spec.template.spec.nodeSelector"]
    assert len(template) == 1 and str(template[0].source).startswith("pods.yaml:11 Deployment default/web"), template


def test_a_node_object_naming_no_lab_node_is_a_warning() -> None:
    objects, _ = load_text("apiVersion: v1\nkind: Node\nmetadata: {name: nod-2, labels: {zone: b}}\n", "n.yaml")
    nodes = {o.name: o for o in objects}
    [warning] = unknown_nodes(nodes, ["node-1", "node-2"])
    assert warning.code == "MC0603" and "nod-2" in warning.message and warning.field == "metadata.name"
    assert lab_node_labels("node-2", None)["kubernetes.io/hostname"] == "node-2"
    assert lab_node_labels("nod-2", objects[0])["zone"] == "b"


def _node(tmp_path: Path, name: str = "node-2", down: bool = False) -> NodeRecord:
    return NodeRecord(name, f"mc-x-{name}", f"/sys/fs/cgroup/meshcore/x/{name}", str(tmp_path / name),
                      "/sys/fs/bpf/meshcore/lab-x", node_ranges(LabRanges(), 2), "fabric0", down=down)


def test_lab_nodes_are_node_objects_with_addresses_proxy_addresses_and_readiness(tmp_path: Path) -> None:
    given, _ = load_text("apiVersion: v1\nkind: Node\nmetadata: {name: node-2, annotations: {team: x}}\n", "n.yaml")
    body = enrich_node(_node(tmp_path), {"zone": "b"}, given[0])
    assert body["metadata"]["annotations"] == {"team": "x", "meshcore.io/proxy-addresses":
                                               "10.244.2.2,fd00:10:244:0:2::2"}
    assert body["status"]["conditions"][0]["status"] == "True"
    assert enrich_node(_node(tmp_path, down=True), {}, None)["status"]["conditions"][0]["status"] == "False"
    # What every agent reads back: a model Node the policy compiler knows.
    result = meshcore.translate(objects=[body])
    assert result.snapshot.nodes == (Node("node-2", ("10.244.2.1", "fd00:10:244:0:2::1"),
                                          ("10.244.2.2", "fd00:10:244:0:2::2"), {"zone": "b"}),)
    assert not result.diagnostics


def test_a_state_file_of_a_lab_of_one_node_from_before_is_read_as_one_node(tmp_path: Path) -> None:
    old = {"version": 1, "name": "old", "node_name": "lab-old", "node_netns": "mc-old-node",
           "cgroup_root": "/sys/fs/cgroup/meshcore/old", "bpf_pin_dir": "/sys/fs/bpf/meshcore/lab-old",
           "ranges": LabRanges().to_data(), "node_setup": "ready", "generation": 3,
           "agent": {"container": "agent", "pid": 42, "start_time": 7, "argv": ["x"]},
           "pods": {"default/a": {"namespace": "default", "name": "a", "netns": "mc-old.default.a",
                                  "host_veth": "mc2", "cgroup": "/sys/fs/cgroup/meshcore/old/default/a",
                                  "etc_dir": "/etc/netns/mc-old.default.a", "workdir": "/w", "index": 2,
                                  "ipv4": "10.244.0.2", "ipv6": "fd00:10:244::2", "spec_hash": "h"}}}
    (tmp_path / "state.json").write_text(json.dumps(old))
    state = LabState.load(tmp_path)
    node = state.first_node
    assert (node.name, node.netns, node.cgroup, node.bpf_pin_dir) == (
        "lab-old", "mc-old-node", "/sys/fs/cgroup/meshcore/old", "/sys/fs/bpf/meshcore/lab-old")
    assert node.agent is not None and node.agent.pid == 42 and node.state_dir == str(tmp_path)
    assert node.ranges == lone_node_ranges(LabRanges()) and state.fabric is None
    assert state.pods["default/a"].node == "lab-old" and state.generation == 3
    state.save()
    assert json.loads((tmp_path / "state.json").read_text())["version"] == STATE_VERSION
    assert LabState.load(tmp_path).nodes == state.nodes
    (tmp_path / "state.json").write_text(json.dumps({**old, "version": 99}))
    with pytest.raises(LabError, match="state version 99.*lab down"):
        LabState.load(tmp_path)


NODE_OBJECTS = """
apiVersion: v1
kind: Node
metadata:
  name: node-1
  annotations: {meshcore.io/proxy-addresses: "10.244.1.2,fd00:10:244:0:1::2"}
status:
  addresses: [{type: InternalIP, address: 10.244.1.1}, {type: Hostname, address: node-1}]
---
apiVersion: v1
kind: Node
metadata:
  name: node-2
  annotations: {meshcore.io/proxy-addresses: "10.244.2.2"}
status:
  addresses: [{type: InternalIP, address: 10.244.2.1}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: node-2, containers: [{name: c, image: x}]}
status: {podIPs: [{ip: 10.244.2.3}]}
"""


def test_node_addresses_are_the_host_on_their_node_a_remote_node_elsewhere_and_proxies_everywhere() -> None:
    snapshot = meshcore.translate(text=NODE_OBJECTS).snapshot
    ipcache = {node: {e.prefix: e.identity for e in compile_plan(snapshot, node, CompileOptions()).policy.ipcache}
               for node in ("node-1", "node-2")}
    host, remote, proxy = (int(ReservedIdentity.HOST), int(ReservedIdentity.REMOTE_NODE),
                           int(ReservedIdentity.NODE_PROXY))
    assert ipcache["node-1"]["10.244.1.1/32"] == host and ipcache["node-1"]["10.244.2.1/32"] == remote
    assert ipcache["node-2"]["10.244.1.1/32"] == remote and ipcache["node-2"]["10.244.2.1/32"] == host
    for node in ipcache.values():
        assert node["10.244.1.2/32"] == node["fd00:10:244:0:1::2/128"] == node["10.244.2.2/32"] == proxy
        assert node["10.244.2.3/32"] >= 256  # every node knows every pod's identity
    # A workload sharing a node's address (a host-network pod) is that node.
    shared = Snapshot(nodes=snapshot.nodes, workloads=[
        Workload("agent", "kube-system", Identity("kube-system"), ("10.244.2.1",), node="node-2")])
    assert {e.prefix: e.identity for e in compile_plan(shared, "node-1", CompileOptions()).policy.ipcache}[
        "10.244.2.1/32"] == remote


def test_a_bad_node_address_is_an_error_naming_the_field() -> None:
    bad = NODE_OBJECTS.replace('"10.244.2.2"', '"10.244.2.x"').replace("address: 10.244.2.1}", "address: 10.244.2}")
    result = meshcore.translate(text=bad)
    errors = {(d.code, d.field) for d in result.errors}
    assert errors == {("MC1006", "metadata.annotations.meshcore.io/proxy-addresses"),
                      ("MC1006", "status.addresses[0].address")}, result.errors
    assert [n.name for n in result.snapshot.nodes] == ["node-1"]  # the bad Node contributes nothing


def test_the_policy_enforcer_gives_its_own_proxy_addresses_the_node_proxy_identity() -> None:
    enforcer = PolicyEnforcer("n1", Path("/nonexistent"), host_addresses=("10.244.1.1",),
                              proxy_addresses=("10.244.1.2", "fd00:10:244:0:1::2"))
    written = enforcer.desired(compile_plan(Snapshot(), "n1").policy)["pol_ipcache"]
    ipcache = {pol_ipcache.IpcacheKey.from_buffer_copy(k).prefix(): pol_ipcache.IpcacheValue.from_buffer_copy(v).identity
               for k, v in written.items()}
    assert ipcache == {"10.244.1.1/32": int(ReservedIdentity.HOST), "10.244.1.2/32": int(ReservedIdentity.NODE_PROXY),
                       "fd00:10:244:0:1::2/128": int(ReservedIdentity.NODE_PROXY)}


def test_the_node_proxy_connects_to_endpoints_from_its_source_addresses() -> None:
    plan = EnvoyPlan(clusters=(EnvoyCluster("shop/web:80", ServiceRef("shop", "web"), 80),))
    plain = build_resources(plan, ProxySettings(listen_ipv4="10.244.1.1"))
    assert "upstream_bind_config" not in plain.of(CLUSTER)["shop/web:80"].body
    bound = build_resources(plan, ProxySettings(listen_ipv4="10.244.1.1", source_ipv4="10.244.1.2",
                                                source_ipv6="fd00:10:244:0:1::2"))
    config = bound.of(CLUSTER)["shop/web:80"].message.upstream_bind_config  # parsed by Envoy's own schema
    assert config.source_address.address == "10.244.1.2"
    assert [a.address.address for a in config.extra_source_addresses] == ["fd00:10:244:0:1::2"]
