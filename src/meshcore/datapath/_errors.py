"""Errors raised by the datapath."""

from __future__ import annotations

__all__ = ["DatapathError", "MirrorMismatch"]


class DatapathError(Exception):
    """The datapath cannot do what was asked; the message says what and how to fix it."""


class MirrorMismatch(DatapathError):
    """A Python mirror of a map key/value does not match the BTF of the compiled object."""
