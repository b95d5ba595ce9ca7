"""The error raised when the host lacks something meshcore needs."""

from __future__ import annotations

__all__ = ["HostError"]


class HostError(OSError):
    """This machine cannot provide a mount or namespace meshcore needs; the message says how to fix it."""
