"""Which cluster the Kubernetes source talks to: kubeconfig as kubectl chooses it, else the pod's service account."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshcore.kubesource import ConfigError, _api, _http, connect


def kubeconfig(path: Path, server: str = "http://127.0.0.1:1", context: str = "dev") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "secret"}}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}},
                     {"name": "other", "context": {"cluster": "c", "user": "u"}}]}))
    return path


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(_api, "SERVICE_ACCOUNT", tmp_path / "no-account")


def test_the_kubeconfig_flag_and_its_context(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config")
    assert connect(kubeconfig=path).origin == "kube://dev"
    assert connect("other", path).origin == "kube://other"
    with pytest.raises(ConfigError, match="Context 'prod' not found"):
        connect("prod", path)
    with pytest.raises(ConfigError, match=f"kubeconfig {tmp_path}/missing does not exist"):
        connect(kubeconfig=tmp_path / "missing")


def test_kubeconfig_environment_takes_the_first_file_that_exists(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig(tmp_path / "b", context="from-b")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert connect().origin == "kube://from-b"


def test_without_any_kubeconfig_or_account_the_default_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kubeconfig .*home/\.kube/config does not exist"):
        connect()


def test_in_a_pod_the_service_account_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    account = tmp_path / "account"
    account.mkdir()
    (account / "token").write_text("t")
    monkeypatch.setattr(_api, "SERVICE_ACCOUNT", account)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    used: list[Any] = []
    monkeypatch.setattr(_http.HttpApi, "in_cluster", classmethod(lambda cls, where, timeout: used.append(where)))
    connect()
    assert used == [account]
    with pytest.raises(ConfigError, match="context 'prod' asked for, but there is no kubeconfig"):
        connect("prod")


def test_without_the_kube_extra_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "meshcore.kubesource._http", None)
    with pytest.raises(ConfigError, match=r"pip install 'meshcore\[kube\]'"):
        connect()
