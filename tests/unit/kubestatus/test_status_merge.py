"""The status to write and the patch to it: what is replaced, what is kept, when times move."""

from __future__ import annotations

from typing import Any

from meshcore.kubestatus import merge_patch, status_to_write

NOW = "2025-06-01T12:00:00Z"
THEN = "2024-01-01T00:00:00Z"


def cond(kind: str, status: str, reason: str = "R", when: str | None = None) -> dict[str, Any]:
    out = {"type": kind, "status": status, "reason": reason, "message": ""}
    if when:
        out["lastTransitionTime"] = when
    return out


def parent(name: str, controller: str, *conditions: dict[str, Any]) -> dict[str, Any]:
    return {"parentRef": {"kind": "Gateway", "name": name}, "controllerName": controller, "conditions": list(conditions)}


def test_unchanged_conditions_keep_their_time_so_the_status_equals_the_current_one() -> None:
    current = {"conditions": [cond("Accepted", "True", when=THEN)]}
    assert status_to_write(current, {"conditions": [cond("Accepted", "True")]}, NOW) == current


def test_a_changed_condition_gets_now_and_a_changed_message_alone_keeps_the_time() -> None:
    current = {"conditions": [cond("Accepted", "True", when=THEN), cond("Programmed", "True", when=THEN)]}
    computed = {"conditions": [cond("Accepted", "True", reason="Other"), cond("Programmed", "False")]}
    written = status_to_write(current, computed, NOW)
    assert [(c["reason"], c["lastTransitionTime"]) for c in written["conditions"]] == [("Other", THEN), ("R", NOW)]


def test_keys_controllers_write_are_removed_when_no_longer_computed_and_others_are_kept() -> None:
    current = {"addresses": [{"type": "IPAddress", "value": "192.0.2.1"}], "errors": ["old"],
               "conditions": [cond("Accepted", "False", when=THEN)]}
    written = status_to_write(current, {"conditions": [cond("Accepted", "True")]}, NOW)
    assert written == {"addresses": current["addresses"], "conditions": [cond("Accepted", "True", when=NOW)]}


def test_route_parents_of_other_controllers_are_kept_first_and_ours_replaced() -> None:
    theirs = parent("other", "example.com/gw", cond("Accepted", "True", when=THEN))
    old_ours = parent("edge", "meshcore.io/gateway-controller", cond("Accepted", "False", when=THEN))
    current = {"parents": [old_ours, theirs]}
    computed = {"parents": [parent("edge", "meshcore.io/gateway-controller", cond("Accepted", "True"))]}
    written = status_to_write(current, computed, NOW)
    assert written["parents"] == [theirs, parent("edge", "meshcore.io/gateway-controller",
                                                 cond("Accepted", "True", when=NOW))]


def test_a_route_no_longer_ours_keeps_an_empty_parents_list_the_schema_requires() -> None:
    current = {"parents": [parent("edge", "meshcore.io/mesh-controller", cond("Accepted", "True", when=THEN))]}
    assert status_to_write(current, None, NOW) == {"parents": []}


def test_merge_patch_sets_changed_keys_recursively_and_nulls_removed_ones() -> None:
    current = {"a": 1, "b": {"x": 1, "y": 2}, "c": [1, 2], "gone": True}
    desired = {"a": 1, "b": {"x": 1, "z": 3}, "c": [2]}
    patch = merge_patch(current, desired)
    assert patch == {"b": {"y": None, "z": 3}, "c": [2], "gone": None}
    assert merge_patch(desired, desired) == {}


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies it."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out


def test_the_patch_applied_to_the_current_status_gives_the_desired_one() -> None:
    current = {"addresses": [{"value": "a"}], "listeners": [{"name": "l", "conditions": []}],
               "conditions": [cond("Accepted", "True", when=THEN)], "errors": ["x"]}
    desired = status_to_write(current, {"conditions": [cond("Accepted", "False")], "listeners": []}, NOW)
    assert apply_merge_patch(current, merge_patch(current, desired)) == desired
