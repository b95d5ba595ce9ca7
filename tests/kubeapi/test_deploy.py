"""deploy/base: it renders, kubectl applies it, it matches the Kubernetes schema, and its RBAC is what the code uses.

`kubectl apply --dry-run=client` still needs an API server (discovery and the OpenAPI
document), so kubectl applies the manifests to the stand-in API server; the schema check
is the Kubernetes API's own types (the pinned `kubernetes` client's models: unknown
fields, wrong types and missing required fields are errors). The RBAC rules are compared
with what the code reads (every watched kind) and writes (the kinds adapters compute
status for, the Lease), and every request a node's source and status writer send to the
stand-in must be granted by them.
"""

from __future__ import annotations

import copy
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes.client as k8s
import pydantic
import pytest
import yaml
from _agent_support import LEASE_NAME, Agent
from _kubectl_support import Kubectl, get_json
from standin_apiserver import GATEWAY, StandInApiServer

import meshcore
from meshcore.agent._cli import DEFAULT_LEASE_NAME, DEFAULT_STATE_ROOT, agent_command
from meshcore.kubesource import NODE_KIND, watched_kinds
from meshcore.linux import BPFFS_DEFAULT, CGROUP2_FALLBACK
from meshcore.observe import DEFAULT_METRICS_PORT, parse_address

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "base"
GOLDEN = ROOT / "tests" / "golden"

#: The Kubernetes type of each kind the manifests hold.
MODELS: dict[tuple[str, str], type[pydantic.BaseModel]] = {
    ("v1", "Namespace"): k8s.V1Namespace,
    ("v1", "ServiceAccount"): k8s.V1ServiceAccount,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): k8s.V1ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): k8s.V1ClusterRoleBinding,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.V1Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.V1RoleBinding,
    ("apps/v1", "DaemonSet"): k8s.V1DaemonSet,
}


def rendered() -> str:
    result = subprocess.run(["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered()) if d]


def one(kind: str) -> dict[str, Any]:
    [found] = [d for d in documents() if d["kind"] == kind]
    return found


def plural(kind: str) -> str:
    """The resource name Kubernetes gives a kind (as its CRDs and built-in types spell them)."""
    name = kind.lower()
    if name.endswith("s"):
        return f"{name}es"
    if name.endswith("y") and name[-2] not in "aeiou":
        return f"{name[:-1]}ies"
    return f"{name}s"


def group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def granted(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(group, resource) → verbs, from RBAC rules without resourceNames."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for rule in rules:
        if rule.get("resourceNames"):
            continue
        for g in rule["apiGroups"]:
            for resource in rule["resources"]:
                out[(g, resource)].update(rule["verbs"])
    return out


def test_kubectl_applies_the_rendered_manifests_and_applying_again_changes_nothing(kubectl: Kubectl) -> None:
    text = rendered()
    dry = kubectl("apply", "--dry-run=client", "-f", "-", input=text).stdout.splitlines()
    assert sorted(dry) == sorted([
        "namespace/meshcore-system created (dry run)", "serviceaccount/meshcore-agent created (dry run)",
        "clusterrole.rbac.authorization.k8s.io/meshcore-agent created (dry run)",
        "clusterrolebinding.rbac.authorization.k8s.io/meshcore-agent created (dry run)",
        "role.rbac.authorization.k8s.io/meshcore-agent created (dry run)",
        "rolebinding.rbac.authorization.k8s.io/meshcore-agent created (dry run)",
        "daemonset.apps/meshcore-agent created (dry run)"])
    assert all(line.endswith(" created") for line in kubectl("apply", "-k", str(BASE)).stdout.splitlines())
    # The upgrade path of docs/operations.md: applying the same manifests again changes nothing.
    assert all(line.endswith(" unchanged") for line in kubectl("apply", "-k", str(BASE)).stdout.splitlines())
    daemonset = get_json(kubectl, "daemonset", "meshcore-agent", "-n", "meshcore-system")
    assert daemonset["spec"]["template"]["spec"]["serviceAccountName"] == "meshcore-agent"


def test_every_manifest_matches_the_kubernetes_schema() -> None:
    docs = documents()
    assert sorted(d["kind"] for d in docs) == sorted(k for _, k in MODELS)
    for doc in docs:
        MODELS[(doc["apiVersion"], doc["kind"])].model_validate(doc)
    # The check finds what a typo would be: an unknown field, a wrong type.
    broken = copy.deepcopy(one("DaemonSet"))
    broken["spec"]["template"]["spec"]["hostNetwrk"] = True
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "metrics"
    with pytest.raises(pydantic.ValidationError) as failed:
        k8s.V1DaemonSet.model_validate(broken)
    assert {e["loc"][-1] for e in failed.value.errors()} == {"hostNetwrk", "containerPort"}


def test_the_cluster_role_lists_and_watches_exactly_the_kinds_the_agent_reads() -> None:
    wanted = {(group(v), plural(k)) for v, k in [*watched_kinds(), NODE_KIND]}
    rules = granted(one("ClusterRole")["rules"])
    reads = {key for key, verbs in rules.items() if verbs == {"list", "watch"}}
    missing, extra = sorted(wanted - reads), sorted(reads - wanted)
    assert not missing and not extra, f"deploy/base/clusterrole.yaml: add {missing}, remove {extra}"


def test_the_cluster_role_writes_status_of_exactly_the_kinds_adapters_compute_status_for() -> None:
    computed = {(s.api_version, s.kind) for case in sorted(GOLDEN.glob("*/*.in.yaml"))
                for s in meshcore.translate([case]).statuses}
    wanted = {(group(v), f"{plural(k)}/status") for v, k in computed}
    rules = granted(one("ClusterRole")["rules"])
    writes = {key for key, verbs in rules.items() if key[1].endswith("/status")}
    assert writes == wanted, f"deploy/base/clusterrole.yaml: add {sorted(wanted - writes)}, remove {sorted(writes - wanted)}"
    assert all(rules[key] == {"get", "patch"} for key in writes)
    assert set(map(frozenset, rules.values())) == {frozenset({"list", "watch"}), frozenset({"get", "patch"})}


def verb_and_resource(request: str) -> tuple[str, str, str, str] | None:
    """(verb, group, resource, name) of one logged request; None for discovery (allowed to every account)."""
    method, _, target = request.partition(" ")
    url = urlsplit(target)
    parts = url.path.strip("/").split("/")
    if parts[0] == "api" and len(parts) > 2:
        g, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) > 3:
        g, rest = parts[1], parts[3:]
    else:
        return None
    if rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    if method == "GET":
        verb = ("watch" if parse_qs(url.query).get("watch") else "list") if not name else "get"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    return verb, g, resource, name


def test_every_request_of_a_node_reading_and_writing_status_is_granted_and_every_lease_verb_used(
        apiserver: StandInApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    routes = apiserver.store.kind(f"{GATEWAY}/v1", "httproutes")
    apiserver.store.create(apiserver.store.kind("v1", "services"), "default", {
        "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})
    apiserver.store.create(routes, "default", {"metadata": {"name": "mesh"}, "spec": {
        "parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
        "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}})
    agent = Agent(kubeconfig, "node-a", tmp_path)
    deadline = time.monotonic() + 10
    while not (apiserver.store.get(routes, "default", "mesh").get("status") or {}).get("parents"):
        assert time.monotonic() < deadline, "no status written"
        time.sleep(0.05)
    agent.stop()  # releases the Lease

    cluster = granted(one("ClusterRole")["rules"])
    role = one("Role")["rules"]
    used: dict[tuple[str, str], set[str]] = defaultdict(set)
    for request in apiserver.requests:
        found = verb_and_resource(request)
        if found is None:
            continue
        verb, g, resource, name = found
        used[(g, resource)].add(verb)
        by_name = any(g in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
                      and name in r.get("resourceNames", [name]) for r in role)
        assert verb in cluster.get((g, resource), set()) or by_name, f"not granted by deploy/base: {request}"
    assert used[("coordination.k8s.io", "leases")] == {"create", "get", "update"}
    assert {v for r in role for v in r["verbs"]} == {"create", "get", "update"}, "the Role grants only what is used"
    assert used[(GATEWAY, "httproutes/status")] == {"get", "patch"}
    assert [r.get("resourceNames") for r in role if "get" in r["verbs"]] == [[LEASE_NAME]]


def test_the_daemonset_runs_the_agent_with_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    daemonset, role = one("DaemonSet"), one("Role")
    pod = daemonset["spec"]["template"]
    [agent] = pod["spec"]["containers"]
    [init] = pod["spec"]["initContainers"]
    namespace = daemonset["metadata"]["namespace"]

    # The command line is one the agent accepts, with the environment the pod gives it.
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in agent["env"]}
    assert env == {"MESHCORE_NODE": "spec.nodeName", "MESHCORE_NAMESPACE": "metadata.namespace",
                   "MESHCORE_HOST_IP": "status.hostIP", "MESHCORE_NODE_IPV4": "status.hostIP"}
    values = {"MESHCORE_NODE": "node-1", "MESHCORE_NAMESPACE": namespace, "MESHCORE_HOST_IP": "192.0.2.7",
              "MESHCORE_NODE_IPV4": "192.0.2.7"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    assert agent["command"] == ["meshcore", "agent"]
    args = [a.replace("$(MESHCORE_HOST_IP)", values["MESHCORE_HOST_IP"]) for a in agent["args"]]
    params = agent_command.make_context("agent", args).params
    assert params["from_source"] == "kube" and params["node"] == "node-1" and params["ipv4"] == "192.0.2.7"
    assert params["write_status"] is None, "status write-back is on (the default with --from kube)"
    assert params["lease_namespace"] == namespace == role["metadata"]["namespace"]
    assert params["lease_name"] == DEFAULT_LEASE_NAME == LEASE_NAME
    assert parse_address(params["metrics"]) == ("192.0.2.7", DEFAULT_METRICS_PORT)

    # Probed and scraped where the agent serves.
    probe = agent["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/readyz", DEFAULT_METRICS_PORT)
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(DEFAULT_METRICS_PORT)

    # The node's network, the BPF filesystem shared with the host, the host's cgroup v2 root.
    assert pod["spec"]["hostNetwork"] is True
    # The node's processes: each pod's network namespace is found through one of its processes.
    assert pod["spec"]["hostPID"] is True
    assert params["interfaces"] == () and params["pod_cgroups"] == ".", "pods are found under the host's kubepods"
    assert pod["spec"]["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]
    for binding in (one("ClusterRoleBinding"), one("RoleBinding")):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "meshcore-agent", "namespace": namespace}]
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    assert volumes == {"bpffs": "/sys/fs/bpf", "cgroup2": "/sys/fs/cgroup", "state": str(DEFAULT_STATE_ROOT)}
    assert (mounts["bpffs"]["mountPath"], mounts["bpffs"]["mountPropagation"]) == (str(BPFFS_DEFAULT),
                                                                                   "HostToContainer")
    assert mounts["cgroup2"]["mountPath"] == str(CGROUP2_FALLBACK), "meshcore prefers this cgroup2 mount"
    assert mounts["state"]["mountPath"] == str(DEFAULT_STATE_ROOT)
    [init_mount] = init["volumeMounts"]
    assert (init_mount["mountPath"], init_mount["mountPropagation"]) == (str(BPFFS_DEFAULT), "Bidirectional")
    assert init["securityContext"]["privileged"] is True, "Bidirectional propagation needs a privileged container"
    assert {"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"} <= set(agent["securityContext"]["capabilities"]["add"])
    assert agent["resources"]["requests"]["memory"]


def test_the_image_installs_every_adapter_the_cluster_role_reads_for_and_the_extras_the_agent_needs() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for adapter in sorted((ROOT / "src" / "adapters").iterdir()):
        assert f"/src/src/adapters/{adapter.name}" in dockerfile, f"deploy/Dockerfile does not install {adapter.name}"
    assert '"/src[agent,kube,envoy]"' in dockerfile and "MESHCORE_BUILD_BPF=yes" in dockerfile
    assert "libbpf1" in dockerfile
