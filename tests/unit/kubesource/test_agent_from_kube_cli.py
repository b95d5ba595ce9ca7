"""`meshcore agent --from kube`: what the command line accepts and how it says what is wrong."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from meshcore.agent._cli import _kube_source, agent_command
from meshcore.model import WorkloadRef


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(agent_command, ["--node", "n1", "--metrics", "off", *args])
    return result.exit_code, result.output


def test_one_source_only(tmp_path: Path) -> None:
    code, out = run("--from", "kube", "--objects", str(tmp_path / "o.json"))
    assert code == 2 and "--objects FILE, -f PATH or --from kube (one of them)" in out


def test_context_kubeconfig_and_write_status_go_with_from_kube(tmp_path: Path) -> None:
    code, out = run("-f", str(tmp_path), "--context", "prod")
    assert code == 2 and "--context goes with --from kube" in out
    code, out = run("-f", str(tmp_path), "--kubeconfig", str(tmp_path / "k"), "--write-status")
    assert code == 2 and "--kubeconfig and --write-status go with --from kube" in out


def test_a_missing_kubeconfig_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    code, out = run("--from", "kube", "--kubeconfig", str(tmp_path / "nope"), "--state-dir", str(tmp_path / "s"))
    assert code == 2 and f"--from kube: kubeconfig {tmp_path / 'nope'} does not exist" in out
    assert not (tmp_path / "s").exists()  # nothing was started


def test_only_kube_is_a_source_name() -> None:
    code, out = run("--from", "istiod")
    assert code == 2 and "'istiod' is not 'kube'" in out


def test_without_interfaces_the_node_s_pods_are_looked_for_under_the_kubelet_s_cgroup_root(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("""
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
""")
    looking = _kube_source("n1", None, kubeconfig, None, "/sys/fs/cgroup/kubelet-root", "nodens")
    told = _kube_source("n1", None, kubeconfig, {WorkloadRef("shop", "web"): "veth0"}, ".", None)
    try:
        assert (looking.pods_cgroup, looking.host_netns) == (Path("/sys/fs/cgroup/kubelet-root"), "nodens")
        assert told.pods_cgroup is None and told.interfaces == {WorkloadRef("shop", "web"): "veth0"}
    finally:
        looking.close()
        told.close()
