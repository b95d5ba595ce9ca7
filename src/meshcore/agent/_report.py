"""The agent's typed report: one per generation, readable back from JSON by the CLI and the lab."""

from __future__ import annotations

import enum
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..model import Diagnostic, Severity, Source

__all__ = [
    "ConfigReason", "ConfigStatus", "GenerationReport", "ProxyStatus", "Refusal", "ResourceError", "SidecarStatus",
    "Stage", "read_report", "write_report",
]

#: Format version of the report file.
REPORT_VERSION = 1


class Stage(enum.StrEnum):
    """Where a generation stopped when it was not applied."""

    SOURCE = "source"
    TRANSLATE = "translate"
    COMPILE = "compile"
    PROXY = "proxy"
    KERNEL = "kernel"
    POLICY = "policy"


class ConfigReason(enum.StrEnum):
    """Why a raw Envoy config has the status it has on this node."""

    ACCEPTED = "Accepted"        # served, and Envoy acknowledged it
    REJECTED = "Rejected"        # Envoy refused one of its resources (NACK)
    NOT_SELECTED = "NotSelected"  # its node selector leaves this node out
    NOT_SERVED = "NotServed"     # no node proxy could serve it; its ports stay on the kernel datapath


@attrs.frozen
class ResourceError:
    """One resource of a raw Envoy config that Envoy refused, with Envoy's message."""

    index: int | None
    type: str
    name: str
    qualified_name: str
    message: str

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {"resource": self.index, "type": self.type, "name": self.name,
                "qualifiedName": self.qualified_name, "message": self.message}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ResourceError:
        """Read back what :meth:`to_data` wrote."""
        index = data.get("resource")
        return cls(None if index is None else int(index), str(data.get("type", "")), str(data.get("name", "")),
                   str(data.get("qualifiedName", "")), str(data.get("message", "")))


@attrs.frozen
class ConfigStatus:
    """A raw Envoy config as this node's proxy took it."""

    kind: str
    namespace: str
    name: str
    reason: ConfigReason = attrs.field(converter=ConfigReason)
    message: str = ""
    errors: tuple[ResourceError, ...] = ()

    @property
    def accepted(self) -> bool:
        """True when nothing of it is refused or left unserved on this node."""
        return self.reason in (ConfigReason.ACCEPTED, ConfigReason.NOT_SELECTED)

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "accepted": self.accepted,
                "reason": self.reason.value, "message": self.message, "errors": [e.to_data() for e in self.errors]}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ConfigStatus:
        """Read back what :meth:`to_data` wrote."""
        return cls(str(data.get("kind", "")), str(data.get("namespace", "")), str(data.get("name", "")),
                   ConfigReason(str(data.get("reason", "Accepted"))), str(data.get("message", "")),
                   tuple(ResourceError.from_data(e) for e in data.get("errors") or ()))


@attrs.frozen
class ProxyStatus:
    """The node proxy: whether it runs, which Envoy, what it serves."""

    running: bool = False
    pid: int = 0
    restarts: int = 0
    listeners: int = 0
    version: str = ""
    synced: bool = False
    log: str = ""
    error: str = ""

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return attrs.asdict(self)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ProxyStatus:
        """Read back what :meth:`to_data` wrote."""
        names = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@attrs.frozen
class SidecarStatus:
    """One sidecar as the agent sees it: connected, acknowledged its configuration, steered through."""

    workload: str
    node_id: str
    connected: bool = False
    synced: bool = False
    #: The kernel steers the workload's connections through it.
    serving: bool = False
    #: Why it cannot serve, when it cannot (e.g. the agent does not know where the pod is).
    problem: str = ""

    def to_data(self) -> dict[str, object]:
        """Plain data for JSON."""
        return attrs.asdict(self)

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> SidecarStatus:
        """Read back what :meth:`to_data` wrote."""
        names = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]


@attrs.frozen
class Refusal:
    """Part of a generation that was left out while the rest was applied, and why."""

    what: str
    reason: str
    diagnostics: tuple[Diagnostic, ...] = ()

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {"what": self.what, "reason": self.reason, "diagnostics": [_diagnostic_data(d) for d in self.diagnostics]}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Refusal:
        """Read back what :meth:`to_data` wrote."""
        return cls(str(data.get("what", "")), str(data.get("reason", "")),
                   tuple(_diagnostic_from(d) for d in data.get("diagnostics") or ()))


@attrs.frozen
class GenerationReport:
    """What one generation did on this node.

    ``applied`` False means nothing of it changed: ``stage`` and ``error`` say where and
    why, and the previous state keeps enforcing. When applied, ``refused`` lists the
    parts left out (e.g. a raw Envoy config Envoy rejected), ``changes`` what moved in the
    kernel and the proxy, and ``config_status`` every raw Envoy config's live status.
    ``scope`` is what the agent rebuilt for it: ``whole`` (everything translated and
    compiled again), ``compiled whole`` (translated as a change, compiled again), or
    ``N service(s)`` (a change rebuilt and recompiled only those); empty for a plan
    applied as given.
    """

    generation: int
    applied: bool
    stage: Stage | None = None
    error: str = ""
    frontends: int = 0
    changes: tuple[str, ...] = ()
    refused: tuple[Refusal, ...] = ()
    config_status: tuple[ConfigStatus, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    proxy: ProxyStatus = ProxyStatus()
    pid: int = attrs.field(factory=os.getpid)
    time: float = 0.0
    scope: str = ""
    #: The node's sidecars as they are now.
    sidecars: tuple[SidecarStatus, ...] = ()

    @property
    def summary(self) -> str:
        """One line for logs and the CLI."""
        if not self.applied:
            return f"generation {self.generation} not applied ({self.stage}): {self.error}"
        left = f"; left out: {'; '.join(r.what for r in self.refused)}" if self.refused else ""
        scope = f" ({self.scope})" if self.scope else ""
        return (f"generation {self.generation} applied{scope}: {self.frontends} frontends; "
                f"{'; '.join(self.changes)}{left}")

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON (the agent's report file)."""
        return {
            "version": REPORT_VERSION, "pid": self.pid, "generation": self.generation, "applied": self.applied,
            "stage": self.stage.value if self.stage else None, "error": self.error, "frontends": self.frontends,
            "changes": list(self.changes), "refused": [r.to_data() for r in self.refused],
            "configStatus": [c.to_data() for c in self.config_status],
            "diagnostics": [_diagnostic_data(d) for d in self.diagnostics],
            "proxy": self.proxy.to_data(), "time": self.time, "scope": self.scope,
            "sidecars": [sc.to_data() for sc in self.sidecars],
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> GenerationReport:
        """Read back what :meth:`to_data` wrote."""
        if data.get("version") != REPORT_VERSION:
            raise ValueError(f"agent report version {data.get('version')!r}; this meshcore reads {REPORT_VERSION}")
        stage = data.get("stage")
        return cls(
            generation=int(data.get("generation", 0)), applied=bool(data.get("applied")),
            stage=Stage(stage) if stage else None, error=str(data.get("error", "")),
            frontends=int(data.get("frontends", 0)), changes=tuple(str(c) for c in data.get("changes") or ()),
            refused=tuple(Refusal.from_data(r) for r in data.get("refused") or ()),
            config_status=tuple(ConfigStatus.from_data(c) for c in data.get("configStatus") or ()),
            diagnostics=tuple(_diagnostic_from(d) for d in data.get("diagnostics") or ()),
            proxy=ProxyStatus.from_data(data.get("proxy") or {}), pid=int(data.get("pid", 0)),
            time=float(data.get("time", 0.0)), scope=str(data.get("scope", "")),
            sidecars=tuple(SidecarStatus.from_data(sc) for sc in data.get("sidecars") or ()),
        )


def _diagnostic_data(d: Diagnostic) -> dict[str, Any]:
    return {"code": d.code, "severity": d.severity.value, "message": d.message, "field": d.field,
            "source": attrs.asdict(d.source)}


def _diagnostic_from(data: Mapping[str, Any]) -> Diagnostic:
    source = data.get("source") or {}
    return Diagnostic(str(data.get("code", "")), Severity(str(data.get("severity", "error"))),
                      str(data.get("message", "")), Source(**{k: source[k] for k in source if k in _SOURCE_FIELDS}),
                      str(data.get("field", "")))


_SOURCE_FIELDS = frozenset(f.name for f in attrs.fields(Source))


def write_report(path: Path, report: GenerationReport) -> None:
    """Write ``report`` as JSON atomically (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(report.to_data(), f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_report(path: str | os.PathLike[str]) -> GenerationReport | None:
    """The report at ``path`` (a str or a path); None when there is none or it cannot be read."""
    try:
        return GenerationReport.from_data(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def diagnostics_text(diagnostics: Sequence[Diagnostic]) -> list[str]:
    """Each diagnostic as one line."""
    return [str(d) for d in diagnostics]
