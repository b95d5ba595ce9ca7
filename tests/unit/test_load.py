"""Reading Kubernetes YAML/JSON: positions of fields, empty documents, Lists, errors."""

from __future__ import annotations

import json

from meshcore.kube import load_text

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
