"""The lab's error type: a message meant for the user, never a traceback."""

from __future__ import annotations


class LabError(Exception):
    """A lab operation failed; the message says what and, where possible, what to do."""
