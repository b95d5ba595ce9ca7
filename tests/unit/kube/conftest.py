"""Fixtures for the core-kinds translation tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kube_text import Translate
from kube_text import translate as _translate
from kube_text import translate_ok as _translate_ok

from meshcore.kube import Inventory


@pytest.fixture
def translate() -> Translate:
    """Translate inline YAML (read as ``test.yaml``) into (inventory, diagnostics)."""
    return _translate


@pytest.fixture
def translate_ok() -> Callable[[str], Inventory]:
    """Translate inline YAML that must produce no diagnostics."""
    return _translate_ok
