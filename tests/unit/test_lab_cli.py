"""The `lab` commands and `observe` as a user types them: which lab they act on, the hints they print, their
options and their tables (labs recorded in a state root of the test's own, nothing of them running)."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from meshcore.agent import FLOWS_FILE, FlowJournal
from meshcore.lab import DEFAULT_LAB, Lab, LabError, LabRanges
from meshcore.lab._ipam import lone_node_ranges, node_ranges
from meshcore.lab._state import FabricRecord, LabState, NodeRecord, PodRecord, ProcRecord, lab_dir
from meshcore.lab._observe_command import observe
from meshcore.lab.cli import lab
from meshcore.linux import start_time
from meshcore.model import Direction, WorkloadRef
from meshcore.observe import Enforcer, Flow, Layer, Peer, Verdict


@pytest.fixture(autouse=True)
def state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state root of the test's own: the labs other runs have up on this machine are not seen."""
    root = tmp_path / "labs"
    monkeypatch.setenv("MESHCORE_LAB_STATE_ROOT", str(root))
    return root


def unique(stem: str) -> str:
    """A lab name no lab on this machine has: were a command to act on the recorded lab after all, the
    namespaces it removes by name are nobody's."""
    return f"{stem}-{secrets.token_hex(4)}"


def record_lab(name: str, *, nodes: int = 1, down: tuple[str, ...] = (), pods: tuple[PodRecord, ...] = ()) -> Path:
    """Record lab ``name`` as up (its state file only; its cgroups and namespaces are paths nothing made)."""
    directory = lab_dir(name)
    directory.mkdir(parents=True)
    ranges = LabRanges()
    cgroup = directory / "cgroup"
    state = LabState(name=name, dir=directory, cgroup_root=str(cgroup), ranges=ranges.to_data())
    if nodes == 1:
        state.nodes[f"lab-{name}"] = NodeRecord(f"lab-{name}", f"mc-{name}-node", str(cgroup), str(directory),
                                                str(directory / "pins"), lone_node_ranges(ranges), setup="ready")
    else:
        state.fabric = FabricRecord(f"mc-{name}-fabric", "fabric", setup="ready")
        for number in range(1, nodes + 1):
            node = f"node-{number}"
            state.nodes[node] = NodeRecord(node, f"mc-{name}-{node}", str(cgroup / node), str(directory / node),
                                           str(directory / "pins"), node_ranges(ranges, number), setup="ready",
                                           down=node in down)
    state.pods = {p.key: p for p in pods}
    state.save()
    return directory


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(lab, list(args))
    return result.exit_code, result.output


# ---------------------------------------------------------------- which lab a command acts on


@pytest.mark.parametrize("command", [("up", "-f", "app.yaml"), ("up", "--nodes", "2", "-f", "app.yaml"), ("down",),
                                     ("node", "down", "node-1"), ("node", "up", "node-1")])
def test_without_a_name_a_changing_command_never_acts_on_a_lab_of_another_name(command: tuple[str, ...]) -> None:
    name = unique("demo")
    demo = record_lab(name, nodes=2)
    code, output = invoke(*command)
    assert code == 1, output
    assert f"no lab named 'lab' is up; the lab up is '{name}': pass --name {name}" in output
    assert (demo / "state.json").is_file() and LabState.load(demo).nodes["node-1"].down is False


def test_with_several_other_labs_up_a_changing_command_names_them_all() -> None:
    names = sorted((unique("demo"), unique("shop")))
    for name in names:
        record_lab(name)
    code, output = invoke("down")
    assert code == 1 and f"the labs up are '{names[0]}', '{names[1]}': pass --name with one of them" in output, output


def test_without_a_name_a_changing_command_acts_on_the_lab_named_lab_even_beside_others() -> None:
    assert Lab.to_change(None).name == DEFAULT_LAB  # none up: `lab up` makes it
    record_lab(unique("demo"))
    record_lab(DEFAULT_LAB)
    assert Lab.to_change(None).name == DEFAULT_LAB
    assert Lab.to_change("demo").name == "demo"


def test_a_reading_command_still_takes_the_only_lab_up_whatever_its_name() -> None:
    name = unique("demo")
    record_lab(name)
    assert Lab.select(None).name == name
    code, output = invoke("status", "-o", "json")
    assert code == 0 and f'"name": "{name}"' in output, output
    record_lab(unique("shop"))
    with pytest.raises(LabError, match="several labs are up"):
        Lab.select(None)


# ---------------------------------------------------------------- hints work as printed


def test_the_commands_the_lab_suggests_name_the_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = unique("demo")
    record_lab(name, nodes=2, down=("node-2",))
    code, output = invoke("status", "--name", name, "-o", "text")
    assert code == 0 and f"node-2 node agent: node down (`meshcore lab node up --name {name} node-2`)" in output, output
    # Refused before anything changes: it needs neither root nor the machine's tools.
    monkeypatch.setattr("meshcore.lab._lab.require_root", lambda: None)
    (tmp_path / "app.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    code, output = invoke("up", "--name", name, "--nodes", "3", "-f", str(tmp_path / "app.yaml"))
    assert code == 1 and f"run `meshcore lab down --name {name}` first to change --nodes" in output, output
    code, output = invoke("up", "--name", name, "--mtls", "-f", str(tmp_path / "app.yaml"))
    assert code == 1 and f"run `meshcore lab down --name {name}` first to change --mtls" in output, output


# ---------------------------------------------------------------- observe


def journal(node: str, state_dir: Path, second: int) -> None:
    """One kernel verdict in ``node``'s flow journal, ``second`` seconds into the day."""
    state_dir.mkdir(parents=True, exist_ok=True)
    when = datetime(2026, 5, 1, 12, 0, second, tzinfo=UTC)
    flow = Flow(when, node, Layer.L4, Verdict.DROPPED, Enforcer.KERNEL,
                Peer("10.244.1.7", 5000, WorkloadRef("shop", "client"), "shop", 1001),
                Peer("10.244.2.9", 8080, WorkloadRef("shop", "web-1"), "shop", 1002), "TCP", Direction.INGRESS,
                "default-deny")
    writer = FlowJournal(state_dir / FLOWS_FILE)
    writer.add([flow])
    writer.close()


def observe_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(observe, list(args))
    return result.exit_code, result.output


def test_observe_text_lines_name_the_node_in_a_lab_of_several() -> None:
    several = unique("two")
    directory = record_lab(several, nodes=2)
    for number in (1, 2):
        journal(f"node-{number}", directory / f"node-{number}", number)
    code, output = observe_cli("--name", several)
    lines = output.splitlines()
    assert code == 0 and len(lines) == 2, output
    assert [line.split()[1] for line in lines] == ["node-1", "node-2"], output
    assert lines[0].split()[2].startswith("shop/client:5000"), output
    # A lab of one node says nothing of it: the line is as before.
    one = unique("one")
    directory = record_lab(one)
    journal(f"lab-{one}", directory, 1)
    code, output = observe_cli("--name", one)
    assert code == 0 and output.split()[1].startswith("shop/client:5000") and f"lab-{one}" not in output, output


def test_observe_refuses_an_unknown_node_naming_the_lab_s_nodes_and_takes_o_as_other_commands() -> None:
    name = unique("two")
    directory = record_lab(name, nodes=2)
    journal("node-2", directory / "node-2", 1)
    code, output = observe_cli("--name", name, "--node", "nope")
    assert code == 2, output
    assert f"Invalid value for '--node': lab '{name}' has no node 'nope' (its nodes: node-1, node-2)" in output
    code, output = observe_cli("--name", name, "--node", "node-2")
    assert code == 0 and "node-2  shop/client:5000" in output, output
    for fmt in ("table", "text"):
        code, text = observe_cli("--name", name, "-o", fmt)
        assert code == 0 and text == output, text
    code, output = observe_cli("--name", name, "-o", "yaml")
    assert code == 0 and next(yaml.safe_load_all(output))["node"] == "node-2", output


# ---------------------------------------------------------------- status


def pod(lab_name: str, name: str, index: int, sidecar: ProcRecord | None = None) -> PodRecord:
    return PodRecord("shop", name, f"mc-{lab_name}.shop.{name}", f"veth{index}", f"/nowhere/{name}",
                     f"/nowhere/etc/{name}", f"/nowhere/{name}", index, f"10.244.0.{index}", f"fd00:10:244::{index}",
                     "hash", setup="ready", node=f"lab-{lab_name}", sidecar=sidecar)


def test_status_tables_show_each_pod_s_sidecar_when_any_pod_has_one() -> None:
    name = unique("shop")
    me = ProcRecord("sidecar", os.getpid(), start_time(os.getpid()), ("envoy",))
    gone = ProcRecord("sidecar", me.pid, me.start_time + 1, ("envoy",))  # a pid the kernel recycled
    record_lab(name, pods=(pod(name, "a", 2, me), pod(name, "b", 3, gone), pod(name, "c", 4)))
    code, output = invoke("status", "--name", name, "-o", "text")
    assert code == 0, output
    lines = output.splitlines()
    header = next(line for line in lines if line.startswith("NAMESPACE"))
    assert header.split()[:6] == ["NAMESPACE", "NAME", "PHASE", "READY", "SIDECAR", "ADDRESSES"], output
    rows = {line.split()[1]: line for line in lines if line.startswith("shop ")}
    assert f"running (pid {me.pid})" in rows["a"] and "not running" in rows["b"], output
    assert rows["c"].split()[4] == "-", output
    code, output = invoke("status", "--name", name, "-o", "table")
    assert code == 0 and "SIDECAR" in output.upper() and f"running (pid {me.pid})" in output, output
    # Without sidecars the table is as it was.
    plain = unique("plain")
    record_lab(plain, pods=(pod(plain, "c", 4),))
    assert "SIDECAR" not in invoke("status", "--name", plain, "-o", "text")[1]
