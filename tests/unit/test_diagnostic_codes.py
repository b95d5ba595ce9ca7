"""Diagnostic codes: each is stated once, as a member of its area's enum, and docs/codes.md is made from them."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import yaml

from meshcore.kube import KUBE_CODES, KubeCode
from meshcore.model import Diagnostic, DiagnosticCode, Severity, Source, to_data
from meshcore_envoycrd import ENVOYCRD_CODES, EnvoyCrdCode
from meshcore_gateway import GATEWAY_CODES, GatewayCode
from meshcore_istio import ISTIO_CODES, IstioCode

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
CODES_PAGE = ROOT / "docs" / "codes.md"
_CODE = re.compile(r"MC\d{4}")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_codes_doc", ROOT / "scripts" / "gen_codes_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()
AREAS: list[type[DiagnosticCode]] = GEN.areas()
MEMBERS: dict[str, DiagnosticCode] = {m.value: m for area in AREAS for m in area}


def _sources() -> list[Path]:
    # Only the sources: build/ trees (a local wheel build) and generated code hold copies.
    skip = {"__pycache__", "build", "_gen"}
    files = sorted(p for p in SRC.rglob("*.py") if not skip & set(p.parts))
    assert files, f"no Python sources under {SRC}"
    return files


def _is_code_enum(node: ast.ClassDef) -> bool:
    return any(isinstance(b, ast.Name) and b.id == "DiagnosticCode" for b in node.bases)


def test_docs_codes_page_is_generated_from_the_enums() -> None:
    assert GEN.generate() == CODES_PAGE.read_text(encoding="utf-8"), (
        "docs/codes.md differs from the code enums: run .venv/bin/python scripts/gen_codes_doc.py and read the diff"
    )


def test_code_strings_are_written_only_in_the_code_enums() -> None:
    # A code written anywhere else would be emitted without a documented meaning: every
    # place that reports one names an enum member.
    outside: list[str] = []
    in_enums: set[str] = set()
    enums: set[str] = set()
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        enum_nodes = {id(n) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and _is_code_enum(c)
                      for n in ast.walk(c)}
        enums |= {c.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and _is_code_enum(c)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _CODE.fullmatch(node.value):
                if id(node) in enum_nodes:
                    in_enums.add(node.value)
                else:
                    outside.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value}")
    assert not outside, f"codes written outside a DiagnosticCode enum (use its member): {outside}"
    assert in_enums == set(MEMBERS), "the scan no longer finds the enums' codes"
    assert enums == {area.__name__ for area in AREAS}, "an area enum is missing from scripts/gen_codes_doc.py AREAS"


def test_every_code_is_one_member_of_one_area() -> None:
    owners: dict[str, list[str]] = {}
    for area in AREAS:
        # Two members with one code would make the second a silent alias of the first.
        assert len(area.__members__) == len(area), f"{area.__name__} gives one code two names"
        for member in area:
            owners.setdefault(member.value, []).append(area.__name__)
    assert {code: areas for code, areas in owners.items() if len(areas) > 1} == {}


def test_codes_lie_in_the_blocks_their_area_names() -> None:
    for area in AREAS:
        block = re.search(r"\(blocks? (MC[\dx]{4})(?:-(MC[\dx]{4}))?\)", area.__doc__ or "")
        assert block, f"{area.__name__}'s docstring names no block"
        first, last = block[1], block[2] or block[1]
        stray = [m.value for m in area if not first.replace("x", "0") <= m.value <= last.replace("x", "9")]
        assert not stray, f"{area.__name__}: {stray} outside {block[0]}"


def test_every_code_has_a_severity_and_a_one_line_meaning() -> None:
    for member in MEMBERS.values():
        assert isinstance(member.severity, Severity)
        text = member.description
        assert text[:1].isupper() or text.startswith("`"), f"{member.value}: {text!r}"
        assert text.endswith(".") and "\n" not in text and "``" not in text, f"{member.value}: {text!r}"


def test_golden_diagnostics_carry_documented_codes_at_documented_severities() -> None:
    reported = 0
    for path in sorted((ROOT / "tests" / "golden").rglob("*.out.yaml")):
        for diagnostic in yaml.safe_load(path.read_text(encoding="utf-8")).get("diagnostics") or []:
            member = MEMBERS.get(diagnostic["code"])
            assert member is not None, f"{path.name}: {diagnostic['code']} is no documented code"
            severity = diagnostic["severity"]
            # A code reported at another severity in some case says so in its meaning.
            assert severity == member.severity.value or f" {severity} " in member.description, (
                f"{path.name}: {member.value} reported as {severity}, documented as {member.severity.value}")
            reported += 1
    assert reported > 100, "the golden outputs no longer list diagnostics where this test looks"


def test_public_code_mappings_follow_the_enums() -> None:
    for mapping, area in ((KUBE_CODES, KubeCode), (GATEWAY_CODES, GatewayCode), (ISTIO_CODES, IstioCode),
                          (ENVOYCRD_CODES, EnvoyCrdCode)):
        assert dict(mapping) == {m.value: m.description for m in area}
        assert all(type(code) is str for code in mapping)


def test_a_diagnostic_given_a_member_is_the_same_as_one_given_its_code() -> None:
    source = Source(kind="Service", namespace="web", name="api", file="app.yaml", line=3)
    by_member = Diagnostic(KubeCode.UNKNOWN_FIELD, Severity.WARNING, "unknown field 'selectr'", source, "spec")
    by_string = Diagnostic("MC1017", Severity.WARNING, "unknown field 'selectr'", source, "spec")
    assert by_member == by_string and hash(by_member) == hash(by_string)
    assert type(by_member.code) is str
    assert str(by_member) == "app.yaml:3 Service web/api: spec warning MC1017: unknown field 'selectr'"
    assert repr(by_member) == repr(by_string)
    data = to_data(by_member)
    assert data["code"] == "MC1017"
    assert yaml.safe_dump(data) == yaml.safe_dump(to_data(by_string))
    assert json.dumps(data) == json.dumps(to_data(by_string))


def test_a_member_is_its_code_with_severity_and_meaning() -> None:
    member = KubeCode.UNKNOWN_FIELD
    assert member == "MC1017" and f"{member}" == "MC1017" and str(member) == "MC1017"
    assert KubeCode("MC1017") is member
    assert member.severity is Severity.WARNING
    assert "closest valid name" in member.description
