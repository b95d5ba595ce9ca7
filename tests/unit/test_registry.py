"""Adapters load through the entry-point group; broken ones are reported, never fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import meshcore
from meshcore.adapter import ApiKind, Fragment
from meshcore.registry import discover, register, unregister

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "tiny-adapter"
BUILTINS = {"istio": "meshcore-istio", "gateway": "meshcore-gateway", "envoycrd": "meshcore-envoycrd"}


def test_builtin_adapters_load_through_entry_points() -> None:
    infos, errors = discover()
    found = {i.name: i.distribution for i in infos}
    for name, dist in BUILTINS.items():
        assert found.get(name) == dist
    assert not [e for e in errors if e.name in BUILTINS]


def test_disable_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHCORE_DISABLE_ADAPTERS", "istio, envoycrd")
    names = {i.name for i in discover()[0]}
    assert "istio" not in names and "envoycrd" not in names and "gateway" in names
    result = meshcore.translate(text="apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\n")
    assert any("disabled by MESHCORE_DISABLE_ADAPTERS" in d.message for d in result.diagnostics)


class _InCode:
    name = "incode"
    kinds = (ApiKind("demo.example/v1", "Thing"),)

    def translate(self, objects: object, inventory: object) -> Fragment:
        return Fragment()


def test_register_in_code_and_reject_invalid() -> None:
    register(_InCode())
    try:
        assert "incode" in {i.name for i in discover()[0]}
    finally:
        unregister("incode")
    with pytest.raises(ValueError, match="has no 'kinds'"):
        register(type("Bad", (), {"name": "bad", "kinds": (), "translate": lambda *a: None})())


def test_crashing_adapter_is_reported_and_discarded() -> None:
    class Crashing(_InCode):
        name = "crashing"

        def translate(self, objects: object, inventory: object) -> Fragment:
            raise RuntimeError("boom")

    result = meshcore.translate(
        text="apiVersion: demo.example/v1\nkind: Thing\nmetadata: {name: t}\n", adapters=[Crashing()])
    [diag] = [d for d in result.diagnostics if d.code == "MC0300"]
    assert "adapter 'crashing'" in diag.message and "RuntimeError: boom" in diag.message
    assert not result.ok


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny third-party adapter distribution, really installed (pip) into a target dir."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(TINY)],
        check=True, capture_output=True, timeout=180,
    )
    yield target


def _meshcore(site: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "meshcore.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_third_party_distribution_is_listed_and_used(tiny_site: Path) -> None:
    listed = _meshcore(tiny_site, "adapters", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    tiny = next(a for a in data["adapters"] if a["name"] == "tiny")
    assert tiny["distribution"] == "meshcore-tiny" and tiny["version"] == "0.0.7"
    assert tiny["kinds"] == [{"apiVersion": "example.com/v1", "kind": "Echo"}]
    errors = {e["name"]: e["message"] for e in data["errors"]}
    assert "ModuleNotFoundError" in errors["broken"]
    assert "has no 'name'" in errors["shapeless"]

    doc = "apiVersion: example.com/v1\nkind: Echo\nmetadata: {name: hello, namespace: demo}\nspec: {vip: 10.96.9.9, port: 7, backend: 10.244.0.9}\n"
    translated = _meshcore(tiny_site, "translate", "-f", "-", "-o", "json", stdin=doc)
    assert translated.returncode == 0, translated.stderr
    [svc] = json.loads(translated.stdout)["snapshot"]["services"]
    assert (svc["namespace"], svc["name"], svc["vips"]) == ("demo", "hello", ["10.96.9.9"])
    assert svc["ports"][0]["backends"][0]["address"] == "10.244.0.9"


def test_third_party_adapter_errors_name_the_field(tiny_site: Path) -> None:
    doc = "apiVersion: example.com/v1\nkind: Echo\nmetadata: {name: hello}\nspec:\n  vip: 10.96.9.9\n  port: 99999\n  backend: x\n"
    res = _meshcore(tiny_site, "analyze", "-f", "-", "-o", "json", stdin=doc)
    assert res.returncode == 1
    [diag] = json.loads(res.stdout)["diagnostics"]
    assert diag["field"] == "spec.port" and diag["line"] == 6 and "out of range" in diag["message"]
