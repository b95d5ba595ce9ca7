"""Errors raised when a model object is constructed with invalid values."""

from __future__ import annotations


class ModelError(ValueError):
    """A model value is invalid; ``field`` names the attribute path that holds it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
