"""Diffing BpfPlans: what a change of the input does to the kernel's frontends, and the agent's index agrees."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import meshcore
from meshcore.compile import (
    PROXY_PORT_BASE,
    PROXY_PORT_RANGE,
    BpfBackend,
    BpfDiff,
    BpfIndex,
    BpfPlan,
    BpfService,
    CompileOptions,
    diff_bpf,
)
from meshcore.model import ServiceRef

NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"


def _pod(name: str, app: str, ip: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}
spec: {{containers: [{{name: c, image: x}}]}}
status: {{podIPs: [{{ip: {ip}}}]}}
"""


def _service(name: str, vip: str, *ports: int, app: str | None = None) -> str:
    port_list = ", ".join(f"{{name: p{p}, port: {p}, targetPort: 8080}}" for p in ports)
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec: {{selector: {{app: {app or name}}}, clusterIP: {vip}, ports: [{port_list}]}}
"""


def _split(weights: dict[str, int], path: str | None = None) -> str:
    """An HTTPRoute on Service web splitting its traffic by weight (a path match makes it need L7)."""
    backends = ", ".join(f"{{name: {name}, port: 80, weight: {w}}}" for name, w in weights.items())
    matches = f"matches: [{{path: {{type: PathPrefix, value: {path}}}}}], " if path else ""
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: split, namespace: shop}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web, port: 80}}]
  rules: [{{{matches}backendRefs: [{backends}]}}]
"""


WEB = [NAMESPACE, _service("web", "10.96.0.10", 80), _pod("web-1", "web", "10.244.0.1"),
       _pod("web-2", "web", "10.244.0.2")]
#: Web's traffic split between two versions, each a Service of its own.
VERSIONS = [*WEB, _service("web-v1", "10.96.0.11", 80), _service("web-v2", "10.96.0.12", 80),
            _pod("v1-a", "web-v1", "10.244.1.1"), _pod("v2-a", "web-v2", "10.244.2.1")]


def _plan(*documents: str, proxy: bool = False) -> BpfPlan:
    """Translate and compile ``documents`` from scratch, as the agent does on every change."""
    result = meshcore.translate(text="\n---\n".join(documents))
    assert result.ok, result.errors
    return meshcore.compile_plan(result.snapshot, "node-a", CompileOptions(proxy_enabled=proxy)).bpf


def _backends(*address_weights: tuple[str, int]) -> tuple[BpfBackend, ...]:
    return tuple(BpfBackend(address, 8080, weight) for address, weight in address_weights)


def _frontend(diff_part: tuple[BpfService, ...], vip: str, port: int = 80) -> BpfService:
    [frontend] = [s for s in diff_part if s.key == (vip, port, "TCP")]
    return frontend


def test_equal_input_compiled_twice_is_no_change() -> None:
    # Independently built plans share no objects: the diff compares their content.
    documents = [*VERSIONS, _split({"web-v1": 90, "web-v2": 10})]
    first, second = _plan(*documents), _plan(*reversed(documents))
    assert first.services and not set(map(id, first.services)) & set(map(id, second.services))
    assert diff_bpf(first, second) == BpfDiff()
    assert BpfIndex(first).diff(second) == BpfDiff()


def test_endpoint_change_is_a_changed_frontend_with_the_new_backends() -> None:
    old = _plan(*WEB, _service("other", "10.96.0.20", 80), _pod("other-1", "other", "10.244.9.1"))
    # web-2 goes, web-3 comes; the other service is untouched.
    new = _plan(*WEB[:3], _pod("web-3", "web", "10.244.0.3"),
                _service("other", "10.96.0.20", 80), _pod("other-1", "other", "10.244.9.1"))
    diff = diff_bpf(old, new)
    assert not diff.added and not diff.removed
    [web] = diff.changed
    assert web.key == ("10.96.0.10", 80, "TCP") and web.service == ServiceRef("shop", "web")
    assert web.backends == _backends(("10.244.0.1", 1), ("10.244.0.3", 1))
    assert web.proxy_port is None


def test_added_and_removed_services_carry_their_frontends() -> None:
    old = _plan(*WEB)
    new = _plan(*WEB, _service("api", "10.96.0.30", 80, 9090), _pod("api-1", "api", "10.244.3.1"))
    diff = diff_bpf(old, new)
    assert not diff.changed and not diff.removed
    assert sorted(s.key for s in diff.added) == [("10.96.0.30", 80, "TCP"), ("10.96.0.30", 9090, "TCP")]
    for frontend in diff.added:
        assert frontend.service == ServiceRef("shop", "api")
        assert frontend.backends == _backends(("10.244.3.1", 1))

    back = diff_bpf(new, old)
    assert not back.added and not back.changed
    assert _by_key(back.removed) == _by_key(diff.added)


def test_weight_change_is_a_changed_frontend_with_the_new_weights() -> None:
    old = _plan(*VERSIONS, _split({"web-v1": 90, "web-v2": 10}))
    new = _plan(*VERSIONS, _split({"web-v1": 50, "web-v2": 50}))
    assert _frontend(old.services, "10.96.0.10").backends == _backends(("10.244.1.1", 900), ("10.244.2.1", 100))
    diff = diff_bpf(old, new)
    assert not diff.added and not diff.removed
    [web] = diff.changed
    assert web.key == ("10.96.0.10", 80, "TCP")
    assert web.backends == _backends(("10.244.1.1", 500), ("10.244.2.1", 500))


def test_port_handed_to_the_node_proxy_and_back_changes_its_proxy_port() -> None:
    # Only the hand-off changes: the route sends every request to web's own pods.
    plain = _plan(*WEB, proxy=True)
    l7 = _plan(*WEB, _split({"web": 1}, path="/api"), proxy=True)
    diff = diff_bpf(plain, l7)
    assert not diff.added and not diff.removed
    [web] = diff.changed
    assert web.key == ("10.96.0.10", 80, "TCP")
    assert web.proxy_port is not None and PROXY_PORT_BASE <= web.proxy_port < PROXY_PORT_BASE + PROXY_PORT_RANGE
    assert web.backends == _frontend(plain.services, "10.96.0.10").backends
    assert _frontend(plain.services, "10.96.0.10").proxy_port is None

    back = diff_bpf(l7, plain)
    assert [s.key for s in back.changed] == [web.key] and back.changed[0].proxy_port is None
    assert not back.added and not back.removed


def _by_key(frontends: tuple[BpfService, ...]) -> list[BpfService]:
    return sorted(frontends, key=lambda s: s.key)


def _same(one: BpfDiff, other: BpfDiff) -> bool:
    """Equal diffs: the same frontends in each part, in whatever order."""
    return all(_by_key(getattr(one, part)) == _by_key(getattr(other, part)) for part in ("added", "changed", "removed"))


def _applied(old: BpfPlan, diff: BpfDiff) -> dict[tuple[str, int, str], BpfService]:
    """The frontends the kernel holds after applying ``diff`` to ``old``."""
    frontends = {s.key: s for s in old.services}
    for s in diff.removed:
        del frontends[s.key]
    for s in (*diff.added, *diff.changed):
        frontends[s.key] = s
    return frontends


def _random_service(vip_octet: int, port: int, backends: dict[int, int], proxy_port: int | None) -> BpfService:
    return BpfService(f"10.96.0.{vip_octet}", port, "TCP", ServiceRef("shop", f"s{vip_octet}"),
                      backends=[BpfBackend(f"10.244.0.{b}", 8080, w) for b, w in backends.items()],
                      proxy_port=proxy_port)


plans = st.lists(
    st.builds(_random_service, st.integers(1, 6), st.sampled_from([80, 443]),
              st.dictionaries(st.integers(1, 4), st.sampled_from([1, 100, 900]), max_size=3),
              st.sampled_from([None, None, 15001, 15002])),
    max_size=8,
).map(lambda services: BpfPlan(list({s.key: s for s in services}.values())))


@settings(max_examples=300, deadline=None)
@given(plans, plans)
def test_applying_the_diff_gives_the_new_plan(old: BpfPlan, new: BpfPlan) -> None:
    diff = diff_bpf(old, new)
    assert _applied(old, diff) == {s.key: s for s in new.services}
    # Nothing is rewritten needlessly: every changed frontend differs from what it replaces.
    before = {s.key: s for s in old.services}
    assert all(before[s.key] != s for s in diff.changed)
    assert not {s.key for s in diff.added} & before.keys()
    assert bool(diff) == (old != new)


@settings(max_examples=300, deadline=None)
@given(plans, plans)
def test_index_diff_equals_plain_diff(old: BpfPlan, new: BpfPlan) -> None:
    assert _same(BpfIndex(old).diff(new), diff_bpf(old, new))


@settings(max_examples=100, deadline=None)
@given(plans, plans, plans)
def test_committed_index_tracks_a_sequence_of_plans(first: BpfPlan, second: BpfPlan, third: BpfPlan) -> None:
    index = BpfIndex(first)
    for previous, plan in ((first, second), (second, third)):
        diff = index.diff(plan)
        assert _same(diff, diff_bpf(previous, plan))
        index.commit(diff)
        assert not index.diff(plan), "after commit the index equals the plan"
    assert len(index) == len(third.services)
