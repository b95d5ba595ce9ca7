"""The stand-in API server driven by the real kubectl: what kubectl sends, the stand-in answers as the API server would.

The stand-in replaces kube-apiserver in these tests (none can run here); these tests
show it is faithful where meshcore's Kubernetes source and kubectl depend on it.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

from _kubectl_support import Kubectl, get_json
from standin_apiserver import StandInApiServer

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: echo, ports: [{containerPort: 8080, name: http}], env: [{name: A, value: "1"}]}
      - {name: side, image: busybox}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{kind: Service, group: "", name: web, port: 80}]
  rules:
  - backendRefs: [{name: web, port: 80}]
"""
TEAM = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"


def test_apply_creates_and_get_reads_back_with_server_fields(kubectl: Kubectl) -> None:
    out = kubectl("apply", "-f", "-", input=APP).stdout
    assert out.split("\n")[:3] == ["deployment.apps/web created", "service/web created",
                                   "httproute.gateway.networking.k8s.io/web created"]
    service = get_json(kubectl, "service", "web")
    assert service["spec"]["clusterIP"].startswith("10.96.")  # assigned as the API server does
    assert service["spec"]["ports"][0]["protocol"] == "TCP"
    assert service["metadata"]["uid"] and int(service["metadata"]["resourceVersion"]) > 1
    names = kubectl("get", "deploy,svc,httproute", "-o", "name").stdout.split()
    assert names == ["deployment.apps/web", "service/web", "httproute.gateway.networking.k8s.io/web"]


def test_apply_again_patches_lists_by_their_merge_keys(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=APP)
    changed = (APP.replace("port: 80, targetPort: http", "port: 8080, targetPort: http")
               .replace('value: "1"', 'value: "2"').replace("      - {name: side, image: busybox}\n", "")
               .replace("backendRefs: [{name: web, port: 80}]", "backendRefs: [{name: web, port: 8080, weight: 3}]"))
    out = kubectl("apply", "-f", "-", input=changed).stdout
    assert out.count("configured") == 3
    service = get_json(kubectl, "service", "web")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(8080, "http")]
    assert service["spec"]["clusterIP"].startswith("10.96.")  # kept across the patch
    containers = get_json(kubectl, "deploy", "web")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web"]  # strategic merge: the removed container is deleted
    assert containers[0]["env"] == [{"name": "A", "value": "2"}]
    route = get_json(kubectl, "httproute", "web")  # a custom resource: JSON merge patch
    assert route["spec"]["rules"] == [{"backendRefs": [{"name": "web", "port": 8080, "weight": 3}]}]


def test_status_changes_only_through_the_status_subresource(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=APP)
    kubectl("patch", "deploy", "web", "--subresource=status", "--type=merge", "-p", '{"status":{"replicas":1}}')
    kubectl("patch", "httproute", "web", "--subresource=status", "--type=merge", "-p",
            '{"status":{"parents":[{"parentRef":{"name":"web"},"controllerName":"meshcore.io/mesh","conditions":[]}]}}')
    deploy = get_json(kubectl, "deploy", "web")
    generation = deploy["metadata"]["generation"]
    assert deploy["status"] == {"replicas": 1}
    assert get_json(kubectl, "httproute", "web")["status"]["parents"][0]["controllerName"] == "meshcore.io/mesh"
    # The main resource ignores status; the status subresource ignores the rest.
    kubectl("patch", "deploy", "web", "--type=merge", "-p", '{"spec":{"replicas":3},"status":{"replicas":9}}')
    kubectl("patch", "deploy", "web", "--subresource=status", "--type=merge", "-p",
            '{"spec":{"replicas":7},"status":{"replicas":2}}')
    deploy = get_json(kubectl, "deploy", "web")
    assert deploy["spec"]["replicas"] == 3 and deploy["status"] == {"replicas": 2}
    assert deploy["metadata"]["generation"] == generation + 1  # only the spec change counts


def test_get_watch_streams_changes(kubectl: Kubectl, kubeconfig: object, tmp_path: Path) -> None:
    kubectl("apply", "-f", "-", input=APP)
    # HOME too: without one kubectl caches discovery in ./.kube of the working directory.
    env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    watch = subprocess.Popen(["kubectl", "get", "svc", "--watch", "-o", "jsonpath={.metadata.labels.tier}{\"\\n\"}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(1.5)
        kubectl("label", "svc", "web", "tier=front")
        kubectl("delete", "svc", "web")
        time.sleep(1.0)
    finally:
        watch.terminate()
        out, err = watch.communicate(timeout=10)
    assert out.split("\n")[:3] == ["", "front", "front"], err  # listed, relabelled, deleted


def test_errors_are_the_api_servers(kubectl: Kubectl) -> None:
    missing = kubectl("get", "pod", "nope", check=False)
    assert missing.returncode == 1 and 'pods "nope" not found' in missing.stderr
    kubectl("create", "-f", "-", input=TEAM)
    again = kubectl("create", "-f", "-", input=TEAM, check=False)
    assert 'namespaces "team" already exists' in again.stderr
    nowhere = kubectl("apply", "-n", "ghost", "-f", "-", input=APP.split("---")[1], check=False)
    assert 'namespaces "ghost" not found' in nowhere.stderr
    stale = get_json(kubectl, "namespace", "team")
    kubectl("label", "namespace", "team", "a=b")
    conflict = kubectl("replace", "-f", "-", input=json.dumps(stale), check=False)
    assert "the object has been modified" in conflict.stderr  # optimistic concurrency on resourceVersion


def test_leases_can_be_created_and_renewed(kubectl: Kubectl) -> None:
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "meshcore-node-1", "namespace": "kube-system"},
             "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 15}}
    kubectl("apply", "-f", "-", input=json.dumps(lease))
    kubectl("patch", "lease", "-n", "kube-system", "meshcore-node-1", "--type=merge",
            "-p", '{"spec":{"holderIdentity":"node-2"}}')
    assert get_json(kubectl, "lease", "-n", "kube-system", "meshcore-node-1")["spec"]["holderIdentity"] == "node-2"


def _watch_lines(url: str, seconds: float) -> list[dict[str, object]]:
    lines = []
    with urllib.request.urlopen(url, timeout=seconds + 5) as response:
        for raw in response:
            lines.append(json.loads(raw))
    return lines


def test_watch_from_a_version_bookmarks_and_410_after_a_restart(apiserver: StandInApiServer, kubectl: Kubectl) -> None:
    kubectl("create", "-f", "-", input=TEAM)
    rv = get_json(kubectl, "namespace", "team")["metadata"]["resourceVersion"]
    kubectl("label", "namespace", "team", "a=b")
    events = _watch_lines(f"{apiserver.url}/api/v1/namespaces?watch=1&resourceVersion={rv}"
                          "&allowWatchBookmarks=true&timeoutSeconds=1", 1)
    assert events[0]["type"] == "MODIFIED" and events[0]["object"]["metadata"]["labels"] == {"a": "b"}
    assert any(e["type"] == "BOOKMARK" for e in events[1:])
    latest = [e for e in events if e["type"] == "BOOKMARK"][-1]["object"]["metadata"]["resourceVersion"]
    apiserver.stop()
    apiserver.start(compacted=True)
    expired = _watch_lines(f"{apiserver.url}/api/v1/namespaces?watch=1&resourceVersion={latest}", 1)
    assert expired == [{"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
        "message": expired[0]["object"]["message"]}}]
    assert expired[0]["object"]["message"].startswith("too old resource version")
    assert get_json(kubectl, "namespace", "team")["metadata"]["labels"] == {"a": "b"}  # the objects survived
