"""The adapter carries every field of the Istio kinds it reads, as the pinned istio/api release defines them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from meshcore_istio._api import KIND_MESSAGES

ROOT = Path(__file__).resolve().parents[3]
FIELDS = ROOT / "tests" / "data" / "istio-api" / "fields.txt"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_istio_fields", ROOT / "scripts" / "gen_istio_fields.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pinned() -> set[str]:
    return {line for line in FIELDS.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")}


def test_every_field_and_enum_value_of_the_pinned_release_is_carried_with_its_number_and_type() -> None:
    ours = set(_generator().listing([m.DESCRIPTOR for m in KIND_MESSAGES.values()]))
    missing = sorted(_pinned() - ours)
    extra = sorted(ours - _pinned())
    assert not missing, "fields of the pinned Istio release the adapter's protos lack (or define differently):\n" \
        + "\n".join(missing)
    assert not extra, "fields the adapter's protos define that the pinned Istio release does not:\n" + "\n".join(extra)


def test_the_list_covers_the_kinds_the_adapter_reads_and_names_the_release() -> None:
    generator = _generator()
    text = FIELDS.read_text(encoding="utf-8")
    assert f"istio/api {generator.RELEASE}." in text.splitlines()[0]
    assert set(generator.KINDS) == set(KIND_MESSAGES)
    for kind, (_, message) in generator.KINDS.items():
        assert KIND_MESSAGES[kind].DESCRIPTOR.full_name == message
    # Fields the adapter once refused as unknown are in the pinned release and so carried.
    for field in ("istio.security.v1beta1.Source field service_accounts ",
                  "istio.security.v1beta1.Source field trust_domains ",
                  "istio.security.v1beta1.JWTRule field space_delimited_claims ",
                  "istio.networking.v1alpha3.LoadBalancerSettings field warmup ",
                  "istio.networking.v1alpha3.TrafficPolicy field retry_budget "):
        assert any(field in line for line in _pinned()), field


def test_docs_name_the_pinned_release() -> None:
    assert f"Istio {_generator().RELEASE}" in (ROOT / "docs" / "adapters.md").read_text(encoding="utf-8")
