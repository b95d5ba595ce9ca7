"""Helpers for tests that run kubectl against the stand-in API server."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

#: Runs kubectl with the given arguments (``input=``, ``check=``); see the ``kubectl`` fixture.
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def get_json(kubectl: Kubectl, *args: str) -> Any:
    """``kubectl get ARGS -o json``, parsed."""
    return json.loads(kubectl("get", *args, "-o", "json").stdout)
