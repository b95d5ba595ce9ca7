"""The shipped field names of the core kinds come from the Kubernetes API models and cannot drift."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

from meshcore.kube import CORE_KINDS
from meshcore.kube._strict import schema

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "src" / "meshcore" / "kube" / "_schema.json"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_kube_schema", ROOT / "scripts" / "gen_kube_schema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_schema_is_what_the_pinned_kubernetes_client_generates() -> None:
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        pytest.fail("the kubernetes client (the dev extra) is needed to check _schema.json: "
                    "pip install -e '.[dev]'")
    assert _generator().generate() == SCHEMA.read_text(encoding="utf-8"), (
        "src/meshcore/kube/_schema.json differs from what the installed kubernetes client gives: "
        "run .venv/bin/python scripts/gen_kube_schema.py and read the diff"
    )


def test_schema_records_the_client_version_pinned_for_development() -> None:
    recorded = json.loads(SCHEMA.read_text(encoding="utf-8"))
    pins = re.findall(r'"kubernetes==([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pins == [recorded["client"]]
    assert re.fullmatch(r"release-1\.\d+", recorded["kubernetes"])
    assert schema().kubernetes == recorded["kubernetes"]


def test_every_core_kind_and_node_have_field_names() -> None:
    kinds = schema().kinds
    assert CORE_KINDS | {("v1", "Node")} <= kinds.keys()
    service = kinds[("v1", "Service")]
    assert {"apiVersion", "kind", "metadata", "spec", "status"} == service.fields
    spec = {field: child for field, _, child in service.nested}["spec"]
    ports = {field: (marker, child) for field, marker, child in spec.nested}["ports"]
    assert ports[0] == "[]" and {"port", "targetPort", "protocol", "name"} <= ports[1].fields
