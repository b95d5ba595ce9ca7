"""Leader election over a Lease: acquire, renew, wait while held, take over when it lapses, release.

The API is an in-memory Lease store with the server's optimistic concurrency (a write
carrying an old resourceVersion is 409); the clocks are the test's.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from meshcore.kubesource import ApiError, Unreachable
from meshcore.kubestatus import LeaderElection, StatusWriteBack, WriteResult

PATH = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/status"


class LeaseApi:
    """Leases in memory, as the API server keeps them; ``down`` makes every request fail."""

    origin = "kube://test"

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.down = False
        self.writes: list[tuple[str, str]] = []

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        if self.down:
            raise Unreachable("connection refused")
        if path not in self.leases:
            raise ApiError(404, "NotFound", "leases not found", path)
        return copy.deepcopy(self.leases[path])

    def send(self, method: str, path: str, body: Mapping[str, Any], *,
             content_type: str = "application/json") -> dict[str, Any]:
        if self.down:
            raise Unreachable("connection refused")
        if method == "POST":
            path = f"{path}/{body['metadata']['name']}"
            if path in self.leases:
                raise ApiError(409, "AlreadyExists", "exists", path)
        elif body["metadata"].get("resourceVersion") != self.leases[path]["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified", path)
        self.version += 1
        stored = copy.deepcopy(dict(body))
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.leases[path] = stored
        self.writes.append((method, stored["spec"]["holderIdentity"]))
        return copy.deepcopy(stored)

    def watch(self, path: str, params: Mapping[str, str], timeout: float) -> Iterator[dict[str, Any]]:
        raise AssertionError("a Lease is never watched")

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api() -> LeaseApi:
    return LeaseApi()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def candidate(api: LeaseApi, clock: Clock, identity: str, changes: list[tuple[str, bool]] | None = None,
              **kwargs: Any) -> LeaderElection:
    def changed(leading: bool) -> None:
        if changes is not None:
            changes.append((identity, leading))
    return LeaderElection(api, "ops", "status", identity, duration=15, renew_deadline=10, retry=2, clock=clock,
                          wall=lambda: 1_700_000_000.0 + clock.now, on_change=changed, **kwargs)


def spec(api: LeaseApi) -> dict[str, Any]:
    return api.leases[PATH]["spec"]


def test_the_first_candidate_creates_the_lease_and_leads(api: LeaseApi, clock: Clock) -> None:
    changes: list[tuple[str, bool]] = []
    a = candidate(api, clock, "a", changes)
    assert a.step() and a.leading
    assert api.writes == [("POST", "a")]
    assert spec(api)["leaseDurationSeconds"] == 15 and spec(api)["leaseTransitions"] == 0
    assert spec(api)["renewTime"].endswith("Z") and "." in spec(api)["renewTime"]  # a MicroTime
    assert changes == [("a", True)]


def test_a_held_lease_is_renewed_by_its_holder_and_waited_for_by_the_others(api: LeaseApi, clock: Clock) -> None:
    a, b = candidate(api, clock, "a"), candidate(api, clock, "b")
    a.step()
    for _ in range(20):  # 40 s: far past the 15 s duration, but renewed every 2 s
        clock.now += 2
        assert a.step() and not b.step()
    assert not b.leading and spec(api)["holderIdentity"] == "a"
    assert [w for w in api.writes if w[1] == "b"] == [], "b never writes while a's Lease is renewed"


def test_a_lapsed_lease_is_taken_over_timed_on_the_takers_own_clock(api: LeaseApi, clock: Clock) -> None:
    changes: list[tuple[str, bool]] = []
    a, b = candidate(api, clock, "a", changes), candidate(api, clock, "b", changes)
    a.step()
    clock.now += 2
    assert not b.step()  # b first sees a's record now
    clock.now += 14
    assert not b.step(), "14 s after b saw it: not lapsed yet"
    clock.now += 2
    assert b.step() and b.leading
    assert spec(api)["holderIdentity"] == "b" and spec(api)["leaseTransitions"] == 1
    assert not a.step() and not a.leading, "the old holder sees the new one and stops leading"
    assert changes == [("a", True), ("b", True), ("a", False)]


def test_of_two_candidates_taking_over_at_once_only_one_wins(api: LeaseApi, clock: Clock) -> None:
    a, b, c = (candidate(api, clock, n) for n in "abc")
    a.step()
    b.step(), c.step()
    clock.now += 16
    # b and c both read the lapsed Lease; b writes first, so c's write carries an old resourceVersion.
    real_get = api.get
    seen = real_get(PATH)
    api.get = lambda path, params=None: copy.deepcopy(seen)  # type: ignore[method-assign]
    assert b.step()
    assert not c.step() and not c.leading
    api.get = real_get  # type: ignore[method-assign]
    assert spec(api)["holderIdentity"] == "b"


def test_a_holder_that_cannot_renew_stops_leading_at_its_deadline_before_others_may_take_over(
        api: LeaseApi, clock: Clock) -> None:
    a = candidate(api, clock, "a")
    a.step()
    api.down = True
    clock.now += 2
    assert a.step() and a.leading, "one failed renewal is not a lost Lease"
    clock.now += 8.5
    assert not a.leading, "past the 10 s renew deadline (5 s before the Lease lapses for the others)"
    assert not a.step()


def test_release_empties_the_holder_and_another_candidate_leads_at_its_next_look(api: LeaseApi, clock: Clock) -> None:
    a, b = candidate(api, clock, "a"), candidate(api, clock, "b")
    a.step()
    b.step()
    a.release()
    assert not a.leading and spec(api)["holderIdentity"] == ""
    clock.now += 2
    assert b.step(), "no holder: taken at once, without waiting for the duration"
    assert spec(api)["leaseTransitions"] == 1


def test_timing_that_could_let_two_lead_is_refused(api: LeaseApi) -> None:
    with pytest.raises(ValueError, match="retry .* < renew deadline .* < duration"):
        LeaderElection(api, "ops", "status", "a", duration=10, renew_deadline=10, retry=2)


def test_write_back_writes_once_leading_releases_on_close_and_the_elections_listener_still_hears(
        api: LeaseApi, clock: Clock) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.passes = 0

        def write(self, statuses: Any) -> WriteResult:
            self.passes += 1
            return WriteResult()

    changes: list[tuple[str, bool]] = []
    recorder = Recorder()
    writeback = StatusWriteBack(cache=None, election=candidate(api, clock, "a", changes),  # type: ignore[arg-type]
                                writer=recorder)  # type: ignore[arg-type]
    writeback.submit([])
    writeback.start()
    deadline = time.monotonic() + 5
    while not recorder.passes and time.monotonic() < deadline:
        time.sleep(0.01)
    writeback.close()
    assert recorder.passes == 1, "the objects handed over are written once the Lease is held"
    assert changes == [("a", True), ("a", False)]
    assert spec(api)["holderIdentity"] == "", "closing released the Lease"
