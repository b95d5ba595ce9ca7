"""The ``meshcore`` command: tables for people, JSON/YAML for machines, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
import yaml

from meshcore.cli import cli

APP = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-1, namespace: shop, labels: {app: cart}}
spec:
  containers: [{name: c, image: echo, ports: [{containerPort: 8080, name: http}]}]
status: {podIPs: [{ip: 10.244.0.5}, {ip: "fd00:10:244::5"}]}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  selector: {app: cart}
  ipFamilyPolicy: PreferDualStack
  clusterIPs: [10.96.0.10, "fd00:10:96::a"]
  ports: [{name: http, port: 80, targetPort: http}]
"""


@pytest.fixture()
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(APP)
    return path


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_every_command_speaks_json_and_yaml(app: Path, fmt: str) -> None:
    for command in (["adapters"], ["translate", "-f", str(app)], ["analyze", "-f", str(app)], ["plan", "-f", str(app)]):
        code, output = run(*command, "-o", fmt)
        assert code == 0, output
        data = json.loads(output) if fmt == "json" else yaml.safe_load(output)
        assert isinstance(data, dict)


def test_plan_shows_frontends_backends_and_decision(app: Path) -> None:
    code, output = run("plan", "-f", str(app), "-o", "json")
    assert code == 0
    data = json.loads(output)
    fronts = {(s["vip"], s["port"]): s for s in data["bpf"]["services"]}
    assert fronts[("10.96.0.10", 80)]["backends"][0] == {"address": "10.244.0.5", "port": 8080, "weight": 1, "state": "active"}
    assert fronts[("fd00:10:96::a", 80)]["backends"][0]["address"] == "fd00:10:244::5"
    assert data["decisions"][0]["datapath"] == "ebpf"
    code, table = run("plan", "-f", str(app))
    assert "10.96.0.10:80/TCP" in table and "10.244.0.5:8080" in table and "ebpf" in table


def test_translate_reads_directories_and_stdin(app: Path) -> None:
    code, output = run("translate", "-f", str(app.parent), "-o", "json")
    from_dir = json.loads(output)
    code, output = run("translate", "-f", "-", "-o", "json", stdin=APP)
    from_stdin = json.loads(output)
    assert from_dir["hash"] == from_stdin["hash"]
    assert [s["name"] for s in from_dir["snapshot"]["services"]] == ["cart"]


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n")
    code, output = run("analyze", "-f", str(bad), "-o", "json")
    assert code == 1
    [diag] = json.loads(output)["diagnostics"]
    assert diag["code"] == "MC0001" and diag["file"] == str(bad)
    assert diag["line"] == 5 and "column" in diag["message"]


def test_unknown_kinds_name_the_adapter(tmp_path: Path) -> None:
    doc = tmp_path / "x.yaml"
    doc.write_text(
        "apiVersion: networking.istio.io/v1alpha1\nkind: VirtualService\nmetadata: {name: a}\n---\n"
        "apiVersion: foo.example/v1\nkind: Widget\nmetadata: {name: b}\n"
    )
    code, output = run("analyze", "-f", str(doc), "-o", "json")
    messages = {d["name"]: d["message"] for d in json.loads(output)["diagnostics"]}
    assert "adapter 'istio' handles VirtualService in networking.istio.io/v1" in messages["a"]
    assert "no installed adapter handles it" in messages["b"]
    assert code == 0  # unknown kinds are warnings


def test_wrong_type_reports_field_path_and_exit_status(tmp_path: Path) -> None:
    doc = tmp_path / "svc.yaml"
    doc.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - port: eighty\n")
    code, output = run("analyze", "-f", str(doc), "-o", "json")
    assert code == 1
    [diag] = [d for d in json.loads(output)["diagnostics"] if d["severity"] == "error"]
    assert diag["field"] == "spec.ports[0].port" and diag["line"] == 6
    code, table = run("analyze", "-f", str(doc))
    assert "spec.ports[0].port" in table and "Traceback" not in table


def test_missing_file_and_garbage_never_trace(tmp_path: Path) -> None:
    garbage = tmp_path / "g.yaml"
    garbage.write_bytes(b"\xff\xfe\x00 not yaml \x00")
    for path in (str(garbage), str(tmp_path / "nope.yaml")):
        code, output = run("translate", "-f", path)
        assert code == 1 and "Traceback" not in output


def test_misspelt_field_is_reported_with_file_line_and_the_name_meant(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    doc = Path("svc.yaml")
    doc.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selectr: {app: web}\n"
                   "  ports: [{port: 80}]\n")
    code, output = run("analyze", "-f", str(doc), "-o", "json")
    assert code == 0  # the API server accepts and drops an unknown field: a warning
    [diag] = json.loads(output)["diagnostics"]
    assert (diag["code"], diag["severity"], diag["field"]) == ("MC1016", "warning", "spec.selectr")
    assert (diag["file"], diag["line"], diag["column"]) == (str(doc), 5, 3)
    assert 'did you mean "selector"?' in diag["message"]
    code, table = run("analyze", "-f", str(doc))
    assert "svc.yaml:5" in table and "spec.selectr" in table and "MC1016" in table
    assert "0 error(s), 1 warning(s)" in table


def test_empty_input_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "dir").mkdir()
    for path in (tmp_path / "empty.yaml", tmp_path / "dir"):
        code, output = run("analyze", "-f", str(path), "-o", "json")
        [diag] = json.loads(output)["diagnostics"]
        assert code == 1 and diag["code"] == "MC0006" and diag["message"].startswith("no objects passed")
    code, table = run("analyze", "-f", "-", stdin="")
    assert code == 1 and "no objects passed (standard input holds no Kubernetes object)" in table


def test_helm_template_gets_a_hint_to_render_it(tmp_path: Path) -> None:
    doc = tmp_path / "deploy.yaml"
    doc.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n"
                   "  replicas: {{ .Values.replicas }}\n  selector: {{- include \"sel\" . }}\n")
    code, output = run("analyze", "-f", str(doc), "-o", "json")
    assert code == 1
    messages = [d["message"] for d in json.loads(output)["diagnostics"]]
    assert any("helm template <chart> | meshcore analyze -f -" in m for m in messages), messages
