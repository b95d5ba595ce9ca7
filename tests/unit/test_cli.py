"""The ``meshcore`` command: tables on a terminal, lines in a pipe, JSON/YAML and annotations for machines, no tracebacks."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from click.testing import CliRunner
import yaml

import meshcore
from meshcore import _output as out
from meshcore.cli import cli
from meshcore.model import Diagnostic, Severity, Source

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


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Exit status and standard output; standard output is not a terminal (a pipe) unless a test says so."""
    result = CliRunner(env=env).invoke(cli, list(args), input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout


def run_both(*args: str) -> tuple[int, str, str]:
    """Exit status, standard output and standard error."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def rows(text: str, title: str) -> list[list[str]]:
    """The cells of a plain table (columns are two or more spaces apart) printed under ``title``."""
    lines = text.splitlines()
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start:end]]


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
    code, text = run("plan", "-f", str(app))
    assert rows(text, "Plan") == [
        ["SERVICE", "PORT", "ADDRESSES", "DATAPATH", "BACKENDS", "REASON"],
        ["shop/cart", "80/TCP", "10.96.0.10, fd00:10:96::a", "ebpf", "10.244.0.5:8080 [fd00:10:244::5]:8080",
         "no route or policy needs L7"],
    ]


def test_plan_shows_each_workload_proxy_mode_and_why(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(APP.replace("metadata: {name: shop}",
                                "metadata: {name: shop, annotations: {meshcore.io/proxy-mode: sidecar}}"))
    code, output = run("plan", "-f", str(path), "-o", "json")
    assert code == 0
    (workload,) = json.loads(output)["workloads"]
    assert (workload["workload"], workload["mode"]) == ("shop/cart-1", "sidecar")
    assert workload["reason"] == "annotation meshcore.io/proxy-mode on Namespace shop"
    code, text = run("plan", "-f", str(path))
    assert rows(text, "Proxy modes") == [
        ["WORKLOAD", "MODE", "WHY"],
        ["shop/cart-1", "sidecar", "annotation meshcore.io/proxy-mode on Namespace shop"],
    ]


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


FINDINGS = """\
apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  ports:
  - port: "50%"
---
apiVersion: v1
kind: Service
metadata: {name: t}
spec:
  selector: {app: none}
  ports:
  - port: 80
"""
ERROR_MESSAGE = "expected an integer, got string '50%'"
WARNING_MESSAGE = "selector app=none selects no pods in namespace default; the service has no backends"


@pytest.fixture()
def findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An error (line 6, column 5) and a warning (line 12, column 3), in a file whose name needs escaping.

    The path is relative, as users give it, and longer than a narrow column.
    """
    monkeypatch.chdir(tmp_path)
    path = Path("deploy/overlays/production/services/odd,name:1.yaml")
    path.parent.mkdir(parents=True)
    path.write_text(FINDINGS)
    return path


def test_in_a_pipe_diagnostics_are_one_line_each_compiler_style(findings: Path) -> None:
    expected = [
        f"{findings}:6:5: error MC0102 Service default/s spec.ports[0].port: {ERROR_MESSAGE}",
        f"{findings}:12:3: warning MC1004 Service default/t spec.selector: {WARNING_MESSAGE}",
    ]
    for chosen in ((), ("-o", "text")):
        code, stdout, stderr = run_both("analyze", "-f", str(findings), *chosen)
        assert code == 1
        assert stdout.splitlines() == expected
        assert stderr == "1 error(s), 1 warning(s), 0 info; 2 object(s) read\n"


def test_commands_with_other_output_print_diagnostic_lines_on_stderr(findings: Path) -> None:
    for command in ("translate", "plan", "status"):
        code, stdout, stderr = run_both(command, "-f", str(findings))
        assert code == 1, command
        assert f"{findings}:6:5: error MC0102 Service default/s spec.ports[0].port: {ERROR_MESSAGE}" in stderr.splitlines()
        assert "MC0102" not in stdout


def test_github_annotations_are_exact_and_escaped(findings: Path) -> None:
    escaped_path = str(findings).replace(",", "%2C").replace(":", "%3A")
    code, output = run("analyze", "-f", str(findings), "-o", "github")
    assert code == 1
    assert output.splitlines() == [
        f"::error file={escaped_path},line=6,col=5,title=MC0102::Service default/s spec.ports[0].port: "
        "expected an integer, got string '50%25'",
        f"::warning file={escaped_path},line=12,col=3,title=MC1004::Service default/t spec.selector: {WARNING_MESSAGE}",
    ]
    # GitHub reads workflow commands from standard output, so plan prints them there after its table.
    code, output = run("plan", "-f", str(findings), "-o", "github")
    assert code == 1 and output.splitlines()[-1].startswith(f"::warning file={escaped_path},line=12,col=3,")


def test_github_escapes_line_breaks_and_names_objects_without_a_file() -> None:
    source = Source("Service", "shop", "cart", file="<objects>")
    d = Diagnostic("MC0102", Severity.INFO, "100% sure,\r\nreally: yes", source, "spec.ports")
    assert out.github_annotation(d) == (
        "::notice title=MC0102::Service shop/cart spec.ports: 100%25 sure,%0D%0Areally: yes")
    d = Diagnostic("MC0004", Severity.ERROR, "cannot read it", Source(file="x,y.yaml"))
    assert out.github_annotation(d) == "::error file=x%2Cy.yaml,title=MC0004::cannot read it"
    d = Diagnostic("MC7001", Severity.WARNING, "no host", Source("VirtualService", "shop", "r", file="istiod://i:15010/vs"))
    assert out.github_annotation(d) == "::warning title=MC7001::istiod://i:15010/vs: VirtualService shop/r: no host"


def test_diagnostics_of_objects_passed_as_data_name_the_object_not_a_position() -> None:
    result = meshcore.translate(objects=[
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "shop"},
         "spec": {"ports": [{"port": "eighty"}]}},
    ])
    [error] = result.errors
    line = out.diagnostic_line(error)
    assert line == ("<Service shop/s>: error MC0102 Service shop/s spec.ports[0].port: "
                    "expected an integer, got string 'eighty'")
    assert ":0" not in line
    assert out.diagnostic_line(Diagnostic("MC0220", Severity.ERROR, "inconsistent")) == "<input>: error MC0220: inconsistent"


def test_a_diagnostic_without_a_file_names_the_input_alike_in_the_cli_and_in_python(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.yaml")
    code, stdout = run("analyze", "-f", missing)
    [error] = meshcore.translate([missing]).errors
    assert error.code == "MC0004"
    assert stdout.splitlines()[0] == str(error) == f"<input>: error MC0004: no such file or directory: {missing}"


def test_fail_on_sets_the_exit_status_by_severity(tmp_path: Path, findings: Path) -> None:
    warned = tmp_path / "warned.yaml"
    warned.write_text(FINDINGS.partition("---\n")[2])
    for command in ("analyze", "translate", "plan", "status"):
        assert run(command, "-f", str(warned))[0] == 0, command
        assert run(command, "-f", str(warned), "--fail-on", "error")[0] == 0, command
        assert run(command, "-f", str(warned), "--fail-on", "warning")[0] == 1, command
        assert run(command, "-f", str(findings), "--fail-on", "error")[0] == 1, command
    code, _, stderr = run_both("analyze", "-f", str(warned), "--fail-on", "info")
    assert code == 2 and "'info' is not one of 'error', 'warning'" in stderr


def test_a_terminal_gets_tables_at_its_width_without_breaking_locations(
        findings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(out, "is_terminal", lambda stream: True)
    code, output = run("analyze", "-f", str(findings), env={"COLUMNS": "80"})
    lines = output.splitlines()
    assert code == 1 and lines[0] == "Diagnostics"
    assert max(len(line) for line in lines) <= 80
    assert any(line.strip().startswith(f"{findings}:6:5 ") for line in lines), output
    assert any(line.strip().startswith(f"{findings}:12:3 ") for line in lines), output
    column = next(line.index("diagnostic") for line in lines if "diagnostic" in line)
    message = " ".join(" ".join(line[column:].split()) for line in lines[4:] if line[column:].strip())
    assert f"error MC0102 {ERROR_MESSAGE} warning MC1004 {WARNING_MESSAGE}" in message, output


def test_a_table_too_wide_for_the_terminal_becomes_records(app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(out, "is_terminal", lambda stream: True)
    code, wide = run("plan", "-f", str(app), env={"COLUMNS": "160"})
    assert code == 0
    assert [line.split() for line in wide.splitlines()[2:3]] == [
        ["service", "port", "addresses", "datapath", "backends", "reason"]]
    code, narrow = run("plan", "-f", str(app), env={"COLUMNS": "60"})
    assert code == 0 and max(len(line) for line in narrow.splitlines()) <= 60
    assert [line.strip() for line in narrow.splitlines() if line.strip()][:6] == [
        "Plan", "shop/cart", "port       80/TCP", "addresses  10.96.0.10, fd00:10:96::a", "datapath   ebpf",
        "backends   10.244.0.5:8080 [fd00:10:244::5]:8080"]


def _in_terminal(args: list[str], columns: int) -> tuple[int, str]:
    """Run ``meshcore`` with a real terminal of ``columns`` columns as stdout and stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE")}
    proc = subprocess.Popen([sys.executable, "-m", "meshcore.cli", *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env={**env, "TERM": "xterm", "NO_COLOR": "1"})
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    return proc.wait(timeout=60), text.replace("\r\n", "\n")


def test_the_format_follows_whether_stdout_is_a_terminal(findings: Path) -> None:
    code, shown = _in_terminal(["analyze", "-f", str(findings)], columns=80)
    lines = shown.splitlines()
    assert code == 1 and "Diagnostics" in lines, shown
    assert max(len(line) for line in lines) <= 80, shown
    assert any(line.strip().startswith(f"{findings}:6:5 ") for line in lines), shown
    piped = subprocess.run([sys.executable, "-m", "meshcore.cli", "analyze", "-f", str(findings)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert piped.returncode == 1
    assert piped.stdout.splitlines()[0] == f"{findings}:6:5: error MC0102 Service default/s spec.ports[0].port: {ERROR_MESSAGE}"


OFFLINE = """\
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: c, image: echo, ports: [{containerPort: 8080}]}]
status: {podIPs: [{ip: 10.244.0.7}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-pods, namespace: shop}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: given, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


def test_plan_of_manifests_without_clusterips_shows_every_port(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(OFFLINE)
    code, stdout, stderr = run_both("plan", "-f", str(path))
    assert code == 0
    assert rows(stdout, "Plan") == [
        ["SERVICE", "PORT", "ADDRESSES", "DATAPATH", "BACKENDS", "REASON"],
        ["shop/given", "80/TCP", "10.96.0.10", "ebpf", "10.244.0.7:8080", "no route or policy needs L7"],
        ["shop/web", "80/TCP", "assigned by the API server", "ebpf", "10.244.0.7:8080", "no route or policy needs L7"],
        ["shop/web-pods", "80/TCP", "headless", "ebpf", "10.244.0.7:8080", "no route or policy needs L7"],
    ]
    assert "1 service(s) have no ClusterIPs yet" in stderr and "--assign-addresses" in stderr


def test_plan_assign_addresses_gives_clusterips_as_the_lab_does(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(OFFLINE)
    code, stdout, stderr = run_both("plan", "-f", str(path), "--assign-addresses")
    assert code == 0 and stderr == ""
    assert [r[:3] for r in rows(stdout, "Plan")[1:]] == [
        ["shop/given", "80/TCP", "10.96.0.10"],
        ["shop/web", "80/TCP", "10.96.0.11"],  # the next free one: 10.96.0.10 is given
        ["shop/web-pods", "80/TCP", "headless"],
    ]
    code, output = run("plan", "-f", str(path), "--assign-addresses", "-o", "json")
    fronts = {(s["service"], s["vip"]) for s in json.loads(output)["bpf"]["services"]}
    assert fronts == {("shop/given", "10.96.0.10"), ("shop/web", "10.96.0.11")}


WAITING = """\
apiVersion: v1
kind: Pod
metadata: {name: api-0, namespace: shop, labels: {app: api}}
spec:
  containers: [{name: c, image: echo, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: sql, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: gone, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: gone}
  ports: [{name: http, port: 80}]
"""


def test_plan_says_why_a_port_has_no_backends(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(WAITING)
    code, stdout, _ = run_both("plan", "-f", str(path), "--assign-addresses")
    assert code == 0
    assert {r[0]: r[4] for r in rows(stdout, "Plan")[1:]} == {
        "shop/api": "(none yet: its pod has no address until running)",  # a manifest's pod, not running yet
        "shop/db": "(none; headless: no VIP, no frontend)",
        "shop/gone": "(none: connections are refused)",
    }


def test_translate_names_why_a_service_has_no_vips(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(OFFLINE)
    code, output = run("translate", "-f", str(path))
    assert [r[:2] for r in rows(output, "Services")] == [
        ["SERVICE", "VIPS"], ["shop/given", "10.96.0.10"], ["shop/web", "assigned by the API server"],
        ["shop/web-pods", "headless"]]
    code, output = run("translate", "-f", str(path), "-o", "json")
    assert {s["name"]: s["vip_assignment"] for s in json.loads(output)["snapshot"]["services"]} == {
        "given": "given", "web": "pending", "web-pods": "headless"}


ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-api, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: web, port: 80}]
"""


def test_plan_of_a_routed_port_without_clusterips_says_envoy(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(OFFLINE + "---\n" + ROUTE)
    code, output = run("plan", "-f", str(path))
    assert code == 0
    [web] = [r for r in rows(output, "Plan") if r[0] == "shop/web"]
    assert web[2:4] == ["assigned by the API server", "envoy"]
    assert web[5] == "route 0 (shop/web-api.rules[0].matches[0]) matches on path PathPrefix:/api"


MTLS_MESH = """\
apiVersion: v1
kind: Node
metadata: {name: node-1}
status: {addresses: [{type: InternalIP, address: 10.0.1.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-2}
status: {addresses: [{type: InternalIP, address: 10.0.2.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {nodeName: node-1, serviceAccountName: client, containers: [{name: c, image: curl}]}
status: {podIPs: [{ip: 10.244.1.5}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: node-2, containers: [{name: c, image: echo, ports: [{containerPort: 8080}]}]}
status: {podIPs: [{ip: 10.244.2.5}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: node-2, containers: [{name: c, image: pg, ports: [{containerPort: 5432}]}]}
status: {podIPs: [{ip: 10.244.2.6}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: client-strict, namespace: shop}
spec:
  selector: {matchLabels: {app: client}}
  mtls: {mode: STRICT}
  portLevelMtls: {9090: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: db-disable, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  mtls: {mode: DISABLE}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-to-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 8080}]
"""


def test_plan_mtls_shows_identities_modes_tunnels_and_egress_refused_in_them(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(MTLS_MESH)
    code, stdout, stderr = run_both("plan", "-f", str(path), "--node", "node-1", "--mtls")
    assert code == 0
    assert "MC0260" not in stderr  # STRICT is enforced with mutual TLS: no warning that it may not be
    assert rows(stdout, "Mutual TLS") == [
        ["WORKLOAD", "IDENTITY", "PORTS", "MODE", "SET BY"],
        ["shop/client", "spiffe://cluster.local/ns/shop/sa/client", "other ports", "STRICT",
         f"PeerAuthentication shop/client-strict ({path}:29)"],
        ["shop/client", "spiffe://cluster.local/ns/shop/sa/client", "9090", "PERMISSIVE",
         f"PeerAuthentication shop/client-strict ({path}:29)"],
    ]
    # web on node-2 is tunnelled; db (DISABLE) is not; the client itself only through the proxy where STRICT.
    assert rows(stdout, "Tunnels") == [
        ["DESTINATION", "PORTS", "WORKLOAD", "PATH"],
        ["10.244.1.5", "other ports", "shop/client", "tunnel to this node's proxy; clear text refused (STRICT)"],
        ["10.244.1.5", "9090", "shop/client", "direct: same node"],
        ["10.244.2.5", "every port", "shop/web", "tunnel to node-2 (10.0.2.1)"],
    ]
    assert rows(stdout, "Egress refused in the tunnels") == [
        ["CLIENT", "DESTINATION", "PORTS", "POLICY", "WRITTEN AT"],
        ["shop/client", "10.244.1.5 (shop/client)", "every port", "shop/client-to-web", f"{path}:44"],
        ["shop/client", "10.244.2.5 (shop/web)", "1-8079", "shop/client-to-web", f"{path}:44"],
        ["shop/client", "10.244.2.5 (shop/web)", "8081-65535", "shop/client-to-web", f"{path}:44"],
    ]
    code, output = run("plan", "-f", str(path), "--node", "node-1", "--mtls", "-o", "json")
    mtls = json.loads(output)["mtls"]
    (client,) = mtls["workloads"]
    assert (client["spiffe_id"], client["mode"], client["ports"]) == (
        "spiffe://cluster.local/ns/shop/sa/client", "STRICT", [{"port": 9090, "mode": "PERMISSIVE"}])
    assert client["source"] == f"{path}:29 PeerAuthentication shop/client-strict"
    assert client["egress_refused"][1] == {"address": "10.244.2.5", "first": 1, "last": 8079,
                                           "policy": "shop/client-to-web",
                                           "source": f"{path}:44 NetworkPolicy shop/client-to-web"}
    assert [(d["address"], d["port"], d["tunnelled"]) for d in mtls["destinations"]] == [
        ("10.244.1.5", 0, True), ("10.244.1.5", 9090, False), ("10.244.2.5", 0, True)]


def test_plan_without_mtls_has_no_tunnels_and_mtls_needs_a_node(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(MTLS_MESH)
    code, stdout, stderr = run_both("plan", "-f", str(path), "--node", "node-1")
    assert code == 0
    assert "Mutual TLS" not in stdout and "Tunnels" not in stdout
    assert "MC0260" in stderr  # without mutual TLS, STRICT may not be enforced: said so
    code, output = run("plan", "-f", str(path), "--node", "node-1", "-o", "json")
    assert "mtls" not in json.loads(output)
    code, stdout, stderr = run_both("plan", "-f", str(path), "--mtls")
    assert code == 2 and "--mtls needs --node NAME" in stderr


def test_plan_mtls_says_which_nodes_no_tunnel_reaches(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(MTLS_MESH.split("---\n", 2)[2])  # no Node objects: no node addresses known
    code, stdout, stderr = run_both("plan", "-f", str(path), "--node", "node-1", "--mtls")
    assert code == 0
    assert "Tunnels" not in stdout
    assert "node node-2 has no addresses (no Node object in the input)" in stderr


def test_misspelt_field_is_reported_with_file_line_and_the_name_meant(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    doc = Path("svc.yaml")
    doc.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selectr: {app: web}\n"
                   "  ports: [{port: 80}]\n")
    code, output = run("analyze", "-f", str(doc), "-o", "json")
    assert code == 0  # the API server accepts and drops an unknown field: a warning
    [diag] = json.loads(output)["diagnostics"]
    assert (diag["code"], diag["severity"], diag["field"]) == ("MC1017", "warning", "spec.selectr")
    assert (diag["file"], diag["line"], diag["column"]) == (str(doc), 5, 3)
    assert 'did you mean "selector"?' in diag["message"]
    code, table = run("analyze", "-f", str(doc))
    assert table.startswith("svc.yaml:5:3: warning MC1017 Service default/web spec.selectr: ")


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
