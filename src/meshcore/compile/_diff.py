"""Diffing two BpfPlans: which frontends appear, change or go."""

from __future__ import annotations

import attrs

from ._plan import BpfPlan, BpfService


@attrs.frozen
class BpfDiff:
    """Frontends added, changed (same key, new content) and removed."""

    added: tuple[BpfService, ...] = ()
    changed: tuple[BpfService, ...] = ()
    removed: tuple[BpfService, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def diff_bpf(old: BpfPlan, new: BpfPlan) -> BpfDiff:
    """The difference that turns ``old`` into ``new``.

    One pass over each plan; a service object shared by both plans is unchanged without
    being compared, so a plan built by reusing the previous plan's unchanged services
    costs a dictionary lookup per frontend.
    """
    # The key is spelled out rather than read through BpfService.key: this loop runs once
    # per frontend (10,000s) on every endpoint change, and the property call doubles it.
    before = {(s.vip, s.port, s.protocol): s for s in old.services}
    added: list[BpfService] = []
    changed: list[BpfService] = []
    pop = before.pop
    for s in new.services:
        o = pop((s.vip, s.port, s.protocol), None)
        if o is None:
            added.append(s)
        elif o is not s and o != s:
            changed.append(s)
    return BpfDiff(added=tuple(added), changed=tuple(changed), removed=tuple(before.values()))


class BpfIndex:
    """The frontends last applied, by key, so the next diff is one pass over the new plan.

    :meth:`diff` compares a new plan with the index without changing it; :meth:`commit`
    moves the index to the plan a diff led to, touching only the frontends it names
    (for an agent: call it once the diff reached the kernel).
    """

    def __init__(self, plan: BpfPlan | None = None) -> None:
        self._by_key: dict[tuple[str, int, str], BpfService] = {
            (s.vip, s.port, s.protocol): s for s in (plan.services if plan is not None else ())}

    def __len__(self) -> int:
        return len(self._by_key)

    def diff(self, new: BpfPlan) -> BpfDiff:
        """The difference that turns the indexed plan into ``new`` (same result as :func:`diff_bpf`)."""
        get = self._by_key.get
        added: list[BpfService] = []
        changed: list[BpfService] = []
        for s in new.services:
            o = get((s.vip, s.port, s.protocol))
            if o is None:
                added.append(s)
            elif o is not s and o != s:
                changed.append(s)
        removed: tuple[BpfService, ...] = ()
        if len(self._by_key) > len(new.services) - len(added):
            # Some indexed frontend is gone: only then is a pass over the keys needed.
            kept = {(s.vip, s.port, s.protocol) for s in new.services}
            removed = tuple(s for k, s in self._by_key.items() if k not in kept)
        return BpfDiff(added=tuple(added), changed=tuple(changed), removed=removed)

    def commit(self, diff: BpfDiff) -> None:
        """Record that ``diff`` was applied."""
        for s in diff.removed:
            self._by_key.pop((s.vip, s.port, s.protocol), None)
        for s in (*diff.added, *diff.changed):
            self._by_key[(s.vip, s.port, s.protocol)] = s
