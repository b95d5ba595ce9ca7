"""Diffing BpfPlans: the agent's incremental index agrees with the plain diff."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshcore.compile import BpfBackend, BpfIndex, BpfPlan, BpfService, diff_bpf
from meshcore.model import ServiceRef

REF = ServiceRef("shop", "web")


def _service(vip_octet: int, port: int, backend_octets: tuple[int, ...]) -> BpfService:
    return BpfService(f"10.96.0.{vip_octet}", port, "TCP", REF,
                      backends=[BpfBackend(f"10.244.0.{b}", 8080) for b in backend_octets])


plans = st.lists(
    st.builds(_service, st.integers(1, 6), st.sampled_from([80, 443]),
              st.lists(st.integers(1, 4), max_size=3, unique=True).map(tuple)),
    max_size=8,
).map(lambda services: BpfPlan(list({s.key: s for s in services}.values())))


def _keys(services: tuple[BpfService, ...]) -> list[tuple[str, int, str]]:
    return sorted(s.key for s in services)


@settings(max_examples=200, deadline=None)
@given(plans, plans)
def test_index_diff_equals_plain_diff(old: BpfPlan, new: BpfPlan) -> None:
    plain = diff_bpf(old, new)
    indexed = BpfIndex(old).diff(new)
    for part in ("added", "changed", "removed"):
        assert _keys(getattr(indexed, part)) == _keys(getattr(plain, part)), part


@settings(max_examples=100, deadline=None)
@given(plans, plans, plans)
def test_committed_index_tracks_a_sequence_of_plans(first: BpfPlan, second: BpfPlan, third: BpfPlan) -> None:
    index = BpfIndex(first)
    for plan in (second, third):
        index.commit(index.diff(plan))
        assert not index.diff(plan), "after commit the index equals the plan"
    assert not diff_bpf(third, BpfPlan(list(third.services)))
