"""Reading Kubernetes YAML/JSON: positions of fields, empty documents, Lists, errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from meshcore.kube import load_objects, load_paths, load_text
from meshcore.model import Diagnostic, Severity

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: s
  labels:
    app.kubernetes.io/name: x
spec:
  ports:
  - name: http
    port: 80
---
"""


def test_field_positions_including_dotted_keys() -> None:
    [obj], diagnostics = load_text(SERVICE, "a.yaml")
    assert diagnostics == []
    assert obj.source_at("metadata.labels.app.kubernetes.io/name").line == 6
    assert obj.source_at("spec.ports[0].port").line == 10
    assert obj.source_at("spec.ports[0].port").column == 5
    # a path that does not exist points at its nearest existing parent
    assert obj.source_at("spec.ports[7].port").line == 8


def test_trailing_separator_and_comment_documents_are_empty() -> None:
    objects, diagnostics = load_text(SERVICE + "# just a comment\n---\n", "a.yaml")
    assert len(objects) == 1 and diagnostics == []


def test_list_items_keep_their_lines() -> None:
    text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n" \
           "- apiVersion: v1\n  kind: Namespace\n  metadata: {name: b}\n"
    objects, _ = load_text(text, "l.yaml")
    assert [(o.name, o.source.line) for o in objects] == [("a", 4), ("b", 7)]


def test_json_input_is_read_fast_and_located_lazily() -> None:
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "j"}, "spec": {"ports": [{"port": 1}]}}
    [obj], _ = load_text(json.dumps(doc, indent=2), "j.json")
    assert obj.name == "j" and obj.source_at("spec.ports[0].port").line == 10


def test_duplicate_keys_reject_the_file() -> None:
    objects, [diag] = load_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\nkind: Pod\n", "d.yaml")
    assert objects == [] and diag.code == "MC0005" and diag.source.line == 4


def test_character_yaml_does_not_allow_is_located() -> None:
    objects, [diag] = load_text("apiVersion: v1\nkind: Na\x99me\n", "c.yaml")
    assert objects == [] and diag.code == "MC0001"
    assert (diag.source.file, diag.source.line, diag.source.column) == ("c.yaml", 2, 9)
    assert "U+0099" in diag.message and "<unicode string>" not in diag.message


def test_error_at_the_end_of_a_text_without_final_newline_is_on_its_last_line() -> None:
    _, [diag] = load_text("a: b\nc: [1", "e.yaml")
    assert diag.code == "MC0001" and (diag.source.line, diag.source.column) == (2, 6)
    assert "line 2, column 6" in diag.message
    _, [diag] = load_text("a: b\rc: [1", "cr.yaml")  # a lone CR ends a line for YAML too
    assert (diag.source.line, diag.source.column) == (2, 6)


def test_non_mapping_document_is_reported() -> None:
    objects, [diag] = load_text("- a\n- b\n", "x.yaml")
    assert objects == [] and diag.code == "MC0002" and "list" in diag.message


@pytest.mark.parametrize(("text", "words"), [
    ("hello world\n", "is a plain string ('hello world'), not a Kubernetes object"),
    ("42\n", "is a number (42), not a Kubernetes object"),
    ("true\n", "is a boolean (true), not a Kubernetes object"),
    ("- a\n", "is a list (several objects go in documents separated by '---'"),
])
def test_non_objects_are_described_in_yaml_terms(text: str, words: str) -> None:
    _, [diag] = load_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n" + text, "x.yaml")
    assert diag.message.startswith(f"document 2 {words}")
    assert (diag.source.file, diag.source.line, diag.source.column) == ("x.yaml", 5, 1)


def test_parsed_items_are_described_in_yaml_terms() -> None:
    _, [diag] = load_objects(["hello"])  # type: ignore[list-item]
    assert diag.message == "item 1 is a plain string ('hello'), not a Kubernetes object (a mapping)"


def test_a_misshapen_name_is_pointed_at() -> None:
    _, [diag] = load_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [a]\n", "n.yaml")
    assert diag.code == "MC0003" and diag.field == "metadata.name" and diag.source.line == 4


def _only(diagnostics: list[Diagnostic], code: str) -> Diagnostic:
    [diag] = diagnostics
    assert diag.code == code and diag.severity is Severity.ERROR, diag
    return diag


def test_empty_input_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing yet\n---\n")
    (tmp_path / "none").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.yaml").write_text("")
    for path, says in [
        (tmp_path / "empty.yaml", "empty.yaml holds no Kubernetes object"),
        (tmp_path / "none", "none holds no .yaml, .yml or .json file"),
        (tmp_path / "notes", "none of the 1 file(s) under"),
    ]:
        objects, diagnostics = load_paths([path])
        diag = _only(diagnostics, "MC0006")
        assert objects == [] and diag.message.startswith("no objects passed (") and says in diag.message
    diag = _only(load_paths(["-"], stdin=io.StringIO(""))[1], "MC0006")
    assert "standard input holds no Kubernetes object" in diag.message
    # One path with objects is enough; a reading error already says why nothing was read.
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    assert load_paths([tmp_path / "empty.yaml", tmp_path / "ns.yaml"])[1] == []
    (tmp_path / "bad.yaml").write_text("a: [\n")
    assert [d.code for d in load_paths([tmp_path / "bad.yaml"])[1]] == ["MC0001"]


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    diag = _only(load_paths([tmp_path / "nope.yaml"])[1], "MC0004")
    assert diag.source.file == "" and str(tmp_path / "nope.yaml") in diag.message
    (tmp_path / "latin1.yaml").write_bytes(b"apiVersion: v1\nkind: Namespace\nmetadata: {name: caf\xe9}\n")
    diag = _only(load_paths([tmp_path / "latin1.yaml"])[1], "MC0004")
    assert (diag.source.line, diag.source.column) == (3, 21)
    assert "is not UTF-8 text (byte 0xe9 at line 3, column 21)" in diag.message


def test_helm_charts_and_templates_say_to_render_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    chart = Path("shop")
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: shop\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("replicas: 1\n")
    template = chart / "templates" / "service.yaml"
    template.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}\n")
    Path("app").mkdir()
    Path("app", "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")

    diag = _only(load_paths([chart])[1], "MC0007")
    assert (diag.source.file, diag.source.line) == ("shop/Chart.yaml", 1)
    assert "shop is a Helm chart: render it first, e.g. `helm template shop | meshcore analyze -f -`" in diag.message
    diag = _only(load_paths([template])[1], "MC0007")
    assert (diag.source.file, diag.source.line) == (str(template), 4)
    assert "belongs to the Helm chart shop" in diag.message and "helm template shop |" in diag.message
    # A directory holding a chart reads everything else and reports the chart once.
    objects, diagnostics = load_paths(["."])
    assert [o.name for o in objects] == ["a"] and [d.code for d in diagnostics] == ["MC0007"]
    # A template outside a chart: the reading error says how to render it.
    _, [diag] = load_text(template.read_text(), "loose.yaml")
    assert diag.code == "MC0003" and "line 4 holds a template directive" in diag.message
    assert "helm template <chart> | meshcore analyze -f -" in diag.message
