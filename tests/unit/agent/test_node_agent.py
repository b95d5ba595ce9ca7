"""The node agent against fake enforcers: order, transactions, fallbacks and reports.

The fakes stand in for the kernel and Envoy so every failure can be provoked at will;
tests/e2e and tests/datapath drive the real enforcers.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest

from meshcore.agent import (
    REPORT_FILE,
    AgentRunner,
    ConfigReason,
    GenerationReport,
    ManifestFiles,
    NodeAgent,
    NodeFacts,
    ObjectsFile,
    ProxyStatus,
    Stage,
    object_entry,
    read_report,
    write_objects_file,
)
from meshcore.compile import BpfPlan, EnvoyPlan, PolicyPlan
from meshcore.kube import load_text
from meshcore.model import Direction, Source, WorkloadRef
from meshcore.observe import Enforcer, Flow, Layer, Peer, Verdict
from meshcore.proxy import EnvoyStartError, Nack, NackError
from meshcore_envoycrd import adapter as envoycrd
from meshcore_gateway import adapter as gateway

T = TypeVar("T")
_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

APP = """
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: default, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: c, image: echo}]}
status: {phase: Running, podIP: 10.244.0.5, podIPs: [{ip: 10.244.0.5}], conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""

CEC = """
apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {name: edge, namespace: default}
spec:
  services: [{name: web, namespace: default, listener: edge}]
  resources:
  - "@type": %s
    name: edge
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": %s
          stat_prefix: edge
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: "default/web:80"}}]}]
          http_filters: [{name: router, typed_config: {"@type": %s}}]
""" % (_LISTENER, _HCM, _ROUTER)


@attrs.define
class Applied:
    """A fake enforcer's change report."""

    what: str
    changed: bool = True

    def summary(self) -> str:
        return self.what


@attrs.define
class FakeLB:
    plans: list[BpfPlan] = attrs.field(factory=list)
    fail_next: Exception | None = None
    calls: list[str] = attrs.field(factory=list)

    def apply(self, plan: BpfPlan) -> Applied:
        self.calls.append("kernel")
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        self.plans.append(plan)
        return Applied(f"{len(plan.services)} frontends")

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.calls.append("close")

    @property
    def current(self) -> BpfPlan | None:
        return self.plans[-1] if self.plans else None


@attrs.define
class FakePolicy:
    applied: list[tuple[PolicyPlan, dict[WorkloadRef, str] | None]] = attrs.field(factory=list)
    fail_next: Exception | None = None

    def apply(self, plan: PolicyPlan, interfaces: Mapping[WorkloadRef, str] | None) -> Applied:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        self.applied.append((plan, None if interfaces is None else dict(interfaces)))
        return Applied("policy written")

    #: Verdicts the fake kernel reports, once, to whoever reads its flows.
    verdicts: list[Flow] = attrs.field(factory=list)

    def flows(self, timeout: float, *, follow: bool) -> Iterator[Flow]:
        yield from self.verdicts

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


@attrs.define
class FakeProxy:
    """Serves plans around the kernel callback and records the order of events."""

    lb: FakeLB
    served: list[EnvoyPlan] = attrs.field(factory=list)
    reject: Callable[[EnvoyPlan], Exception | None] = lambda plan: None
    cannot_start: Exception | None = None
    started: bool = False
    stopped: bool = False

    @property
    def running(self) -> bool:
        return self.started

    def apply(self, plan: EnvoyPlan, apply_kernel: Callable[[], T]) -> T:
        if not self.started:
            if not plan.needs_proxy:
                return apply_kernel()
            if self.cannot_start is not None:
                raise self.cannot_start
            self.started = True
        refused = self.reject(plan)
        if refused is not None:
            raise refused
        self.lb.calls.append("proxy")
        self.served.append(plan)
        return apply_kernel()

    def status(self) -> ProxyStatus:
        return ProxyStatus(running=self.started, listeners=len(self.served[-1].listeners) if self.served else 0)

    def watch(self) -> None:
        pass

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def facts(tmp_path: Path) -> NodeFacts:
    return NodeFacts("node-a", "meshcore/test", tmp_path, ipv4="10.244.0.1")


def make_agent(facts: NodeFacts, **kwargs: Any) -> tuple[NodeAgent, FakeLB, FakePolicy, FakeProxy]:
    lb, policy = FakeLB(), FakePolicy()
    proxy = FakeProxy(lb, **kwargs)
    agent = NodeAgent(facts, load_balancer=lb, policy=policy, proxy=proxy, adapters=[envoycrd, gateway])
    return agent, lb, policy, proxy


def objects(*docs: str) -> list[Any]:
    found, problems = load_text("\n---\n".join(docs), "node.yaml")
    assert not problems, problems
    return found


def frontend(lb: FakeLB) -> Any:
    assert lb.current is not None
    [web] = [s for s in lb.current.services if s.vip == "10.96.0.10"]
    return web


def test_a_raw_envoy_config_alone_starts_the_node_proxy_and_its_port_is_handed_over(facts: NodeFacts) -> None:
    agent, lb, _, proxy = make_agent(facts)
    report = agent.apply_objects(objects(APP, CEC))
    assert report.applied and not report.refused, report
    assert proxy.started, "nothing but a raw config needs Envoy, and it must still start"
    assert proxy.served[-1].raw and not proxy.served[-1].listeners
    assert frontend(lb).proxy_port is not None
    assert lb.calls[:2] == ["proxy", "kernel"], "the listener is served before the kernel points at it"
    [status] = report.config_status
    assert (status.name, status.reason, status.accepted) == ("edge", ConfigReason.ACCEPTED, True)


def test_without_any_envoy_need_the_proxy_never_starts(facts: NodeFacts) -> None:
    agent, lb, _, proxy = make_agent(facts)
    report = agent.apply_objects(objects(APP))
    assert report.applied and not proxy.started and lb.calls == ["kernel"]
    assert frontend(lb).proxy_port is None


def test_when_no_proxy_can_start_the_port_stays_on_the_kernel_and_the_config_is_not_served(facts: NodeFacts) -> None:
    agent, lb, _, proxy = make_agent(facts, cannot_start=EnvoyStartError("no envoy executable found"))
    report = agent.apply_objects(objects(APP, CEC))
    assert report.applied, report
    web = frontend(lb)
    assert web.proxy_port is None and [b.address for b in web.backends] == ["10.244.0.5"], \
        "the port keeps working on the kernel datapath instead of refusing connections"
    [refusal] = report.refused
    assert refusal.what == "node proxy" and "no envoy executable found" in refusal.reason
    [status] = report.config_status
    assert status.reason is ConfigReason.NOT_SERVED and not status.accepted
    assert "no envoy executable found" in status.message
    assert "no envoy executable found" in report.error


def test_a_config_envoy_rejects_is_left_out_and_the_rest_applies(facts: NodeFacts) -> None:
    def reject(plan: EnvoyPlan) -> Exception | None:
        raws = [r for r in plan.raw if r.origin.raw is not None]
        if not raws:
            return None
        nack = Nack("node-a", _LISTENER, "3", tuple(r.name for r in raws), "duplicate filter chain match",
                    tuple(r.origin for r in raws), datetime.datetime.now(datetime.UTC))
        return NackError([nack])

    agent, lb, _, proxy = make_agent(facts, reject=reject)
    report = agent.apply_objects(objects(APP, CEC))
    assert report.applied and frontend(lb).proxy_port is None
    [refusal] = report.refused
    assert refusal.what == "CiliumEnvoyConfig default/edge"
    [status] = report.config_status
    assert status.reason is ConfigReason.REJECTED and not status.accepted
    [error] = status.errors
    assert (error.index, error.type, error.name, error.qualified_name) == (0, "Listener", "edge", "default/edge/edge")
    assert "duplicate filter chain match" in error.message
    assert any(d.code == "MC5001" and d.source.name == "edge" for d in report.diagnostics)


def test_a_kernel_failure_changes_nothing_and_the_report_says_where(facts: NodeFacts) -> None:
    agent, lb, _, _ = make_agent(facts)
    first = agent.apply_objects(objects(APP), generation=1)
    assert first.applied
    lb.fail_next = OSError(28, "No space left on device")
    second = agent.apply_objects(objects(APP.replace("10.244.0.5", "10.244.0.6")), generation=2)
    assert not second.applied and second.stage is Stage.KERNEL and "No space left" in second.error
    assert [b.address for b in frontend(lb).backends] == ["10.244.0.5"]
    assert read_report(facts.state_dir / REPORT_FILE) == second


def test_a_policy_failure_puts_the_previous_kernel_state_back(facts: NodeFacts) -> None:
    agent, lb, policy, _ = make_agent(facts)
    agent.apply_objects(objects(APP), generation=1)
    policy.fail_next = RuntimeError("plan does not fit the policy map")
    report = agent.apply_objects(objects(APP.replace("10.244.0.5", "10.244.0.6")), generation=2)
    assert not report.applied and report.stage is Stage.POLICY
    assert [b.address for b in frontend(lb).backends] == ["10.244.0.5"], "nothing may stay half-applied"


def test_apply_plan_takes_interfaces_and_keeps_them_until_told_otherwise(facts: NodeFacts) -> None:
    agent, lb, policy, _ = make_agent(facts)
    import meshcore

    plan = meshcore.compile_plan(meshcore.translate(objects=objects(APP)).snapshot, "node-a")
    web = WorkloadRef("default", "web-0")
    report = agent.apply_plan(plan, interfaces={web: "veth-web"})
    assert report.applied and report.changes == ("kernel 1 frontends", "policy policy written")
    agent.apply_plan(plan)
    assert [i for _, i in policy.applied] == [{web: "veth-web"}, {web: "veth-web"}]


def test_reports_round_trip_through_json(facts: NodeFacts) -> None:
    agent, *_ = make_agent(facts, cannot_start=EnvoyStartError("no envoy"))
    report = agent.apply_objects(objects(APP, CEC), generation=7)
    data = json.loads((facts.state_dir / REPORT_FILE).read_text())
    assert data["generation"] == 7 and data["configStatus"][0]["reason"] == "NotServed"
    assert GenerationReport.from_data(data) == report


def test_the_report_file_is_read_back_from_a_str_or_a_path(facts: NodeFacts) -> None:
    agent, *_ = make_agent(facts)
    report = agent.apply_objects(objects(APP), generation=3)
    assert report.summary.startswith("generation 3 applied (whole): 1 frontends; kernel ")
    assert read_report(str(facts.state_dir / REPORT_FILE)) == report
    assert read_report(facts.state_dir / REPORT_FILE) == report
    assert read_report(str(facts.state_dir / "missing.json")) is None


def test_runner_applies_an_objects_file_and_reports_a_broken_one(facts: NodeFacts) -> None:
    agent, lb, policy, _ = make_agent(facts)
    path = facts.state_dir / "objects.json"
    entries = [object_entry(o.body, Source(file="app.yaml", line=3)) for o in objects(APP)]
    write_objects_file(path, 4, entries, {WorkloadRef("default", "web-0"): "veth9"})
    runner = AgentRunner(agent, ObjectsFile(path), metrics_address="off")
    report = runner.step()
    assert report is not None and report.applied and report.generation == 4
    assert policy.applied[-1][1] == {WorkloadRef("default", "web-0"): "veth9"}
    assert runner.step() is None, "an unchanged file is not applied again"
    path.write_text("{not json")
    broken = runner.step()
    assert broken is not None and not broken.applied and broken.stage is Stage.SOURCE
    assert str(path) in broken.error
    assert len(lb.plans) == 1


def test_manifest_files_are_a_new_generation_on_each_change(tmp_path: Path) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(APP)
    source = ManifestFiles([tmp_path])
    first = source.poll()
    assert first is not None and first.generation == 1 and {o.kind for o in first.objects} == {"Pod", "Service"}
    assert source.poll() is None
    manifest.write_text(APP.replace("web-0", "web-1"))
    second = source.poll()
    assert second is not None and second.generation == 2
    assert any(o.name == "web-1" for o in second.objects)


def test_closing_stops_the_proxy_and_releases_the_kernel_handles(facts: NodeFacts) -> None:
    agent, lb, _, proxy = make_agent(facts)
    with agent:
        agent.apply_objects(objects(APP, CEC))
    assert proxy.stopped and lb.calls[-1] == "close"


def test_an_enforcer_that_cannot_open_is_a_failed_generation_not_a_crash(facts: NodeFacts) -> None:
    def no_kernel(facts: NodeFacts) -> FakeLB:
        raise OSError(1, "Operation not permitted")

    agent = NodeAgent(facts, load_balancer=no_kernel, policy=FakePolicy(), adapters=[])
    report = agent.apply_objects(objects(APP))
    assert not report.applied and report.stage is Stage.KERNEL and "Operation not permitted" in report.error


def _drop(second: float) -> Flow:
    return Flow(datetime.datetime.fromtimestamp(1_790_000_000 + second, datetime.UTC), "node-a", Layer.L4,
                Verdict.DROPPED, Enforcer.KERNEL, Peer("10.244.9.9", 5000), Peer("10.244.0.5", 8080),
                "TCP", Direction.INGRESS, "default-deny")


def _request_batch(path: str, second: int) -> bytes:
    """One access-log batch of the node proxy: web-0 asked for ``path``."""
    from envoy.config.core.v3 import address_pb2, base_pb2
    from envoy.service.accesslog.v3 import als_pb2

    msg = als_pb2.StreamAccessLogsMessage()
    entry = msg.http_logs.log_entry.add()
    entry.common_properties.start_time.FromSeconds(1_790_000_000 + second)
    entry.common_properties.downstream_remote_address.CopyFrom(
        address_pb2.Address(socket_address=address_pb2.SocketAddress(address="10.244.0.5", port_value=40000)))
    entry.request.request_method = base_pb2.GET
    entry.request.path = path
    entry.response.response_code.value = 200
    return bytes(msg.SerializeToString())


def _until(found: Callable[[], T | None], wait: float = 5.0) -> T:
    deadline = time.monotonic() + wait
    while (value := found()) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert value is not None, "not in time"
    return value


def test_both_layers_come_back_as_flows_from_the_journal(facts: NodeFacts) -> None:
    agent, _, policy, _ = make_agent(facts)
    policy.verdicts = [_drop(1)]
    assert agent.apply_objects(objects(APP)).applied
    _until(lambda: list(agent.flows()) or None)  # the kernel's verdicts are journaled by a thread of their own
    agent.journal.add_batch("node-a", _request_batch("/hello", 2))  # as the node proxy hands them over
    drop, request = list(agent.flows())
    assert drop == _drop(1)
    assert (request.layer, request.enforcer, request.verdict) == (Layer.L7, Enforcer.PROXY, Verdict.FORWARDED)
    assert request.l7 is not None and request.l7.path == "/hello"
    # The requests' peers are named from the applied policy plan: workload, namespace, identity.
    assert request.source.workload == WorkloadRef("default", "web-0") and request.source.namespace == "default"
    assert request.source.identity > 0

    async def collect() -> list[Flow]:
        return [flow async for flow in agent.aflows()]

    assert asyncio.run(collect()) == [drop, request]
    # Another process (or a later agent) reads the same journal.
    reader, *_ = make_agent(facts)
    assert list(reader.flows()) == [drop, request]


def test_following_flows_gives_those_there_then_each_new_one(facts: NodeFacts) -> None:
    agent, _, _, _ = make_agent(facts)
    agent.journal.add([_drop(1)])
    live = agent.flows(follow=True, interval=0.01)
    assert next(live) == _drop(1)
    agent.journal.add([_drop(2)])
    assert next(live) == _drop(2)
    live.close()

    async def follow() -> list[Flow]:
        got: list[Flow] = []
        async for flow in agent.aflows(follow=True, interval=0.01):
            got.append(flow)
            if len(got) == 2:
                agent.journal.add([_drop(3)])
            if len(got) == 3:
                break
        return got

    assert asyncio.run(follow()) == [_drop(1), _drop(2), _drop(3)]


def test_the_journal_is_bounded_as_configured(facts: NodeFacts) -> None:
    from meshcore.agent import JournalLimits

    agent = NodeAgent(facts, load_balancer=FakeLB(), policy=FakePolicy(), journal=JournalLimits(65536, keep=1))
    for second in range(2000):
        agent.journal.add([_drop(second)])
    files = sorted(p.name for p in facts.state_dir.iterdir() if p.name.startswith("flows"))
    assert files == ["flows.journal", "flows.journal.1"]
    assert sum((facts.state_dir / f).stat().st_size for f in files) <= 2 * 65536
    kept = list(agent.flows())
    assert 0 < len(kept) < 2000 and kept[-1] == _drop(1999), "the newest flows are kept"


def test_without_the_journal_flows_are_kept_in_memory_and_read_through_the_agents_socket(facts: NodeFacts) -> None:
    lb, policy = FakeLB(), FakePolicy()
    agent = NodeAgent(facts, load_balancer=lb, policy=policy, proxy=FakeProxy(lb), flow_journal=False)
    policy.verdicts = [_drop(1), _drop(2)]
    try:
        assert agent.apply_objects(objects(APP)).applied
        assert _until(lambda: list(agent.flows()) or None) == [_drop(1), _drop(2)]
        assert not [p for p in facts.state_dir.iterdir() if p.name.startswith("flows.journal")], "nothing on disk"
        # Another process (an agent object that enforces nothing) reads the enforcing agent's memory.
        reader = NodeAgent(facts, flow_journal=False)
        assert list(reader.flows()) == [_drop(1), _drop(2)]
    finally:
        agent.close()
    assert not (facts.state_dir / "flows.sock").exists(), "the socket goes with the agent"


@pytest.mark.parametrize(("size", "message"), [
    ("lots", "size 'lots': expected a number of bytes with an optional unit"),
    ("1KiB", "flow journal max_bytes 1024: must be at least 65536"),
])
def test_agent_command_refuses_a_journal_size_naming_the_option(tmp_path: Path, size: str, message: str) -> None:
    from click.testing import CliRunner

    from meshcore.agent._cli import agent_command

    result = CliRunner().invoke(agent_command, ["--node", "n1", "--state-dir", str(tmp_path), "--objects",
                                                str(tmp_path / "objects.json"), "--flows-max-size", size])
    assert result.exit_code == 2 and "--flows-max-size" in result.output and message in result.output, result.output


def test_a_source_that_does_not_know_interfaces_leaves_the_attachments_alone(facts: NodeFacts) -> None:
    agent, _, policy, _ = make_agent(facts)
    agent.apply_objects(objects(APP))
    web = WorkloadRef("default", "web-0")
    agent.apply_objects(objects(APP), interfaces={web: "veth-web"})
    agent.apply_objects(objects(APP))
    assert [i for _, i in policy.applied] == [None, {web: "veth-web"}, {web: "veth-web"}]


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--flow-events", "lots", "'lots': expected a number of flows per second, or 'all'"),
    ("--flows-memory", "big", "size 'big': expected a number of bytes with an optional unit"),
])
def test_agent_command_refuses_bad_flow_settings_naming_the_option(tmp_path: Path, option: str, value: str,
                                                                   message: str) -> None:
    from click.testing import CliRunner

    from meshcore.agent._cli import agent_command

    result = CliRunner().invoke(agent_command, ["--node", "n1", "--state-dir", str(tmp_path), "--objects",
                                                str(tmp_path / "objects.json"), option, value])
    assert result.exit_code == 2 and option in result.output and message in result.output, result.output


def test_a_node_without_addresses_is_told_which_facts_the_node_proxy_needs(tmp_path: Path) -> None:
    facts = NodeFacts("node-a", "meshcore/test", tmp_path)  # no ipv4, no ipv6
    agent = NodeAgent(facts, load_balancer=FakeLB(), policy=FakePolicy(), adapters=[envoycrd, gateway])
    report = agent.apply_objects(objects(APP, CEC))
    assert not report.applied and report.stage is Stage.PROXY
    assert "NodeFacts(ipv4=...) or ipv6=..." in report.error, report
    assert "ProxySettings" not in report.summary
