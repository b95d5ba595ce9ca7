"""Fixtures for end-to-end lab tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _lab_support import leftovers, unique_name

from meshcore.lab import Lab, LabError


@pytest.fixture
def lab_factory() -> Iterator[Any]:
    """Make labs with unique names; every one is torn down (and checked) after the test."""
    made: list[Lab] = []

    def make() -> Lab:
        lab = Lab(unique_name())
        made.append(lab)
        return lab

    yield make
    problems = []
    for lab in made:
        try:
            lab.down()
        except LabError as exc:
            problems.append(str(exc))
        problems += leftovers(lab.name, [])
    assert not problems, problems
