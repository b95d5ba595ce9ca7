"""Errors of the node proxy: unusable plans, Envoy rejections (NACKs), process failures."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import attrs

from ..compile import Origin, ProxyCode
from ..model import Diagnostic, Severity, Source


class ProxyError(Exception):
    """Base class of the node proxy's errors."""


class ProxyConfigError(ProxyError):
    """The plan cannot be expressed as Envoy configuration; nothing was changed."""

    def __init__(self, message: str, origin: Origin | None = None) -> None:
        self.message = message
        self.origin = origin
        where = f"{origin.source}: {origin.what}: " if origin is not None else ""
        super().__init__(f"{where}{message}")

    def diagnostic(self) -> Diagnostic:
        """This error as a model diagnostic attributed to the source object."""
        source = self.origin.source if self.origin is not None else Source()
        what = f"{self.origin.what}: " if self.origin is not None else ""
        return Diagnostic(ProxyCode.NOT_EXPRESSIBLE, Severity.ERROR, f"{what}{self.message}", source)


@attrs.frozen
class Nack:
    """Envoy rejected a response: which node, type, version and resources, and why.

    ``origins`` are the model objects that produced the rejected resources (narrowed to
    the parts Envoy's message quotes, when it quotes any).
    """

    node: str
    type_url: str
    version: str
    resources: tuple[str, ...]
    message: str
    origins: tuple[Origin, ...]
    time: datetime

    def diagnostics(self) -> tuple[Diagnostic, ...]:
        """One error diagnostic per model object behind the rejected resources."""
        kind = self.type_url.rsplit(".", 1)[-1]
        names = ", ".join(self.resources) or "(unnamed)"
        text = f"node {self.node}: Envoy rejected {kind} {names} (version {self.version}): {self.message}"
        if not self.origins:
            return (Diagnostic(ProxyCode.NACK, Severity.ERROR, text),)
        return tuple(Diagnostic(ProxyCode.NACK, Severity.ERROR, f"{o.what}: {text}", o.source) for o in self.origins)

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics())


class NackError(ProxyError):
    """Envoy rejected (part of) a plan; ``nacks`` say what and which model objects caused it."""

    def __init__(self, nacks: Sequence[Nack]) -> None:
        self.nacks = tuple(nacks)
        super().__init__("\n".join(str(n) for n in self.nacks))


class EnvoyStartError(ProxyError):
    """Envoy could not be started or did not become ready; the message ends with its log."""
