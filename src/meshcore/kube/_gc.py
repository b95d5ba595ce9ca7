"""Pausing the cyclic garbage collector (kept in the model, which every stage may import)."""

from ..model._gc import gc_paused

__all__ = ["gc_paused"]
