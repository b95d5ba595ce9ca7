"""Capped exponential backoff with jitter, as a watch uses between failed attempts."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from ``initial`` up to ``cap`` seconds; :meth:`reset` after a success.

    Each delay is shortened by up to ``jitter`` (a fraction) at random, so many agents
    that lost the same API server do not come back at the same instant.
    """

    def __init__(self, initial: float = 0.5, cap: float = 30.0, *, factor: float = 2.0, jitter: float = 0.2,
                 rand: Callable[[], float] = random.random) -> None:
        if initial <= 0 or cap < initial or factor < 1 or not 0 <= jitter < 1:
            raise ValueError(f"invalid backoff: initial={initial} cap={cap} factor={factor} jitter={jitter}")
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self._rand = rand
        self._next = initial
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt; each call grows the following one, up to the cap."""
        delay = self._next
        self._next = min(self.cap, self._next * self.factor)
        self.failures += 1
        return delay * (1.0 - self.jitter * self._rand())

    def reset(self) -> None:
        """Start again from ``initial`` (the last attempt succeeded)."""
        self._next = self.initial
        self.failures = 0
