"""Leadership through a coordination.k8s.io/v1 Lease: one holder at a time, taken over when it lapses."""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ..kubesource import ApiError, KubeApi, Unreachable

__all__ = ["LEASES_PATH", "LeaderElection", "LeaseRecord", "micro_time", "rfc3339"]

log = logging.getLogger("meshcore.kubestatus")

#: Where Leases are served (coordination.k8s.io/v1, namespaced).
LEASES_PATH = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


def micro_time(seconds: float) -> str:
    """``seconds`` since the epoch as a Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339(seconds: float) -> str:
    """``seconds`` since the epoch as a Kubernetes Time (RFC 3339 to the second, UTC), as conditions carry it."""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.frozen
class LeaseRecord:
    """What a Lease's spec says: who holds it, for how long, and since when."""

    holder: str = ""
    duration: int = 0
    transitions: int = 0
    acquire_time: str = ""
    renew_time: str = ""

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        """The record of a Lease object (missing fields read as empty)."""
        spec = lease.get("spec")
        spec = spec if isinstance(spec, Mapping) else {}
        return cls(str(spec.get("holderIdentity") or ""), int(spec.get("leaseDurationSeconds") or 0),
                   int(spec.get("leaseTransitions") or 0), str(spec.get("acquireTime") or ""),
                   str(spec.get("renewTime") or ""))

    def spec(self) -> dict[str, Any]:
        """The Lease spec holding this record."""
        return {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration,
                "leaseTransitions": self.transitions, "acquireTime": self.acquire_time, "renewTime": self.renew_time}


class LeaderElection:
    """Holds the Lease ``namespace/name`` as ``identity`` while it can; at most one holder leads.

    Every ``retry`` seconds (:meth:`run`) the holder renews the Lease and every other
    candidate looks at it. A Lease with no holder, or whose record did not change for its
    ``leaseDurationSeconds`` — timed on the candidate's own clock from when it first saw
    that record, so the nodes' clocks need not agree — is taken over. Every write carries
    the resourceVersion read, so of two candidates at most one wins (the other gets 409).
    A holder that could not renew for ``renew_deadline`` seconds stops leading, before
    the others may take over. :meth:`release` gives the Lease up so another candidate
    takes it at its next look. ``on_change(leading)`` is called on every change of
    leadership, on the thread that noticed it.
    """

    def __init__(self, api: KubeApi, namespace: str, name: str, identity: str, *, duration: int = 15,
                 renew_deadline: float = 10.0, retry: float = 2.0,
                 on_change: Callable[[bool], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        if not identity:
            raise ValueError("a leader election needs an identity")
        if not 0 < retry < renew_deadline < duration:
            raise ValueError(f"lease timing must satisfy 0 < retry ({retry}) < renew deadline ({renew_deadline}) "
                             f"< duration ({duration})")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.renew_deadline = renew_deadline
        self.retry = retry
        self.on_change = on_change
        self._clock = clock
        self._wall = wall
        self._leading = False
        self._renewed_at = 0.0
        self._observed = LeaseRecord()
        self._observed_at = 0.0
        self._last_problem = ""

    @property
    def path(self) -> str:
        """The Lease's URL path."""
        return f"{LEASES_PATH.format(namespace=self.namespace)}/{self.name}"

    @property
    def leading(self) -> bool:
        """True while this candidate holds the Lease and renewed it less than ``renew_deadline`` ago."""
        return self._leading and self._clock() - self._renewed_at < self.renew_deadline

    @property
    def holder(self) -> str:
        """The holder as last seen ("" when none)."""
        return self._observed.holder

    # ------------------------------------------------------------------ one look

    def step(self) -> bool:
        """Acquire or renew the Lease once; True when this candidate leads afterwards."""
        now = self._clock()
        try:
            won = self._try(now)
        except (ApiError, Unreachable) as exc:
            self._problem(f"Lease {self.namespace}/{self.name}: {exc}")
            won = False
            if self._leading and now - self._renewed_at < self.renew_deadline:
                return True  # keep leading until the deadline: one failed renewal is not a lost Lease
        else:
            self._last_problem = ""
        if won:
            self._renewed_at = now
        self._set_leading(won)
        return won

    def _try(self, now: float) -> bool:
        try:
            lease = self.api.get(self.path)
        except ApiError as exc:
            if not exc.not_found:
                raise
            return self._create(now)
        record = LeaseRecord.of(lease)
        if record != self._observed:
            self._observed, self._observed_at = record, now
        ours = record.holder == self.identity
        if record.holder and not ours and now < self._observed_at + max(record.duration, 1):
            return False
        stamp = micro_time(self._wall())
        new = LeaseRecord(self.identity, self.duration, record.transitions if ours else record.transitions + 1,
                          record.acquire_time if ours and record.acquire_time else stamp, stamp)
        version = str((lease.get("metadata") or {}).get("resourceVersion") or "")
        try:
            self.api.send("PUT", self.path, self._body(new, version))
        except ApiError as exc:
            if exc.conflict:
                return False  # another candidate wrote first
            raise
        if not ours:
            log.info("took the Lease %s/%s over from %s", self.namespace, self.name, record.holder or "nobody")
        self._observed, self._observed_at = new, now
        return True

    def _create(self, now: float) -> bool:
        stamp = micro_time(self._wall())
        record = LeaseRecord(self.identity, self.duration, 0, stamp, stamp)
        try:
            self.api.send("POST", LEASES_PATH.format(namespace=self.namespace), self._body(record, ""))
        except ApiError as exc:
            if exc.conflict:
                return False  # created by another candidate at the same time
            raise
        log.info("created the Lease %s/%s", self.namespace, self.name)
        self._observed, self._observed_at = record, now
        return True

    def _body(self, record: LeaseRecord, version: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if version:
            meta["resourceVersion"] = version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": record.spec()}

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            log.info("leading as %s (Lease %s/%s)", self.identity, self.namespace, self.name)
        else:
            log.info("no longer leading (Lease %s/%s held by %s)", self.namespace, self.name,
                     self._observed.holder or "nobody")
        if self.on_change is not None:
            self.on_change(leading)

    def _problem(self, message: str) -> None:
        if message != self._last_problem:  # once per distinct problem, not every retry
            self._last_problem = message
            log.warning("%s; retrying every %.1fs", message, self.retry)

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> None:
        """Look at the Lease every ``retry`` seconds until ``stop`` is set."""
        while not stop.is_set():
            self.step()
            stop.wait(self.retry)

    def release(self) -> None:
        """Give the Lease up when held (its holder emptied), so another candidate leads at once."""
        if not self._leading:
            return
        try:
            lease = self.api.get(self.path)
            record = LeaseRecord.of(lease)
            if record.holder == self.identity:
                version = str((lease.get("metadata") or {}).get("resourceVersion") or "")
                released = attrs.evolve(record, holder="", renew_time=micro_time(self._wall()))
                self.api.send("PUT", self.path, self._body(released, version))
                log.info("released the Lease %s/%s", self.namespace, self.name)
        except (ApiError, Unreachable) as exc:
            log.warning("could not release the Lease %s/%s (the others take over when it lapses): %s",
                        self.namespace, self.name, exc)
        self._set_leading(False)
