"""Which parts of meshcore need which extra, and the error that says what to install.

The core (``meshcore.translate``, ``meshcore.compile_plan``) needs only attrs, PyYAML and
google-re2. The ``meshcore`` command, the node agent and the lab need the extras of the same
names (pyproject.toml); a part used without its extra fails with :class:`MissingExtra`
naming the ``pip install`` that fixes it, not with a bare ``No module named ...``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

__all__ = ["EXTRAS", "MissingExtra", "hint", "missing", "require"]

_CLI = (("click", "click"), ("rich", "rich"), ("structlog", "structlog"))
_AGENT = (
    *_CLI,
    ("prometheus_client", "prometheus-client"),
    ("grpc", "grpcio"),
    ("google.protobuf", "protobuf"),
    ("envoy.config.core.v3", "xds-protos"),
    ("cryptography", "cryptography"),
)

#: Each extra → (a module it provides, the distribution providing it); the same sets as
#: pyproject.toml's extras, with the extras they include expanded.
EXTRAS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "cli": _CLI,
    "agent": _AGENT,
    "lab": (*_AGENT, ("pyroute2", "pyroute2")),
}


class MissingExtra(ImportError):
    """A part of meshcore used where the extra that installs its dependencies is not installed."""


def missing(extra: str) -> list[str]:
    """The distributions of ``extra`` that cannot be imported here (empty when it is installed)."""
    return [dist for module, dist in EXTRAS[extra] if not _importable(module)]


def hint(extra: str, feature: str, absent: list[str]) -> str:
    """``<feature> needs the '<extra>' extra: pip install 'meshcore[<extra>]' (missing: ...)``."""
    return (f"{feature} needs the '{extra}' extra: pip install 'meshcore[{extra}]' "
            f"(missing: {', '.join(absent)})")


def require(extra: str, feature: str) -> None:
    """Raise :class:`MissingExtra` when ``extra`` is not installed; ``feature`` is what needs it."""
    absent = missing(extra)
    if absent:
        raise MissingExtra(hint(extra, feature, absent))


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package of a dotted name is missing as well
        return False
