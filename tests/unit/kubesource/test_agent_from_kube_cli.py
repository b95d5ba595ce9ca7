"""`meshcore agent --from kube`: what the command line accepts and how it says what is wrong."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from meshcore.agent._cli import agent_command


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
