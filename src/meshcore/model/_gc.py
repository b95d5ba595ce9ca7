"""Pausing the cyclic garbage collector while building many acyclic objects."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block.

    Reading, translating and compiling allocate hundreds of thousands of small objects
    that form no cycles; the collector would rescan the growing heap over and over, which
    makes the cost grow faster than the input.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
