"""Raw Envoy configs on this node: which Envoy refused, and each config's live status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..model import EnvoyConfig, Labels, Snapshot
from ..proxy import Nack, NackError
from ._report import ConfigReason, ConfigStatus, ResourceError

__all__ = ["config_key", "config_statuses", "rejected_configs"]

ConfigKey = tuple[str, str, str]


def config_key(config: EnvoyConfig) -> ConfigKey:
    """(input kind, namespace, name) of a raw Envoy config."""
    return (config.source.kind or "EnvoyConfig", config.namespace or "", config.name)


def rejected_configs(exc: BaseException, snapshot: Snapshot) -> list[EnvoyConfig]:
    """The raw Envoy configs behind a NACK when every rejected resource came from one (else none)."""
    if not isinstance(exc, NackError) or any(not nack.origins for nack in exc.nacks):
        return []
    origins = [o for nack in exc.nacks for o in nack.origins]
    if not origins or any(o.raw is None for o in origins):
        return []
    by_key = {config_key(c): c for c in snapshot.envoy_configs}
    keys = {(o.raw.config_kind, o.raw.config_namespace, o.raw.config_name) for o in origins if o.raw is not None}
    if not keys <= by_key.keys():
        return []
    return [by_key[k] for k in sorted(keys)]


def _resource_errors(nacks: Sequence[Nack]) -> dict[ConfigKey, list[ResourceError]]:
    errors: dict[ConfigKey, list[ResourceError]] = {}
    for nack in nacks:
        kind = nack.type_url.rsplit(".", 1)[-1]
        message = (f"Envoy rejected {kind} {', '.join(nack.resources) or '(unnamed)'} "
                   f"(version {nack.version}): {nack.message}")
        for origin in nack.origins:
            raw = origin.raw
            if raw is None:
                continue
            key = (raw.config_kind, raw.config_namespace, raw.config_name)
            errors.setdefault(key, []).append(ResourceError(raw.index, raw.type, raw.name, raw.qualified_name, message))
    return errors


def config_statuses(snapshot: Snapshot, node_labels: Mapping[str, str], *,
                    refused: BaseException | None = None, unserved: str = "") -> tuple[ConfigStatus, ...]:
    """Every raw Envoy config's status on this node.

    Selected configs are Accepted once applied, Rejected with Envoy's message per resource
    when ``refused`` (a NACK) names them, and NotServed with ``unserved`` as the message
    when no node proxy could serve them.
    """
    errors = _resource_errors(refused.nacks) if isinstance(refused, NackError) else {}
    labels = Labels(dict(node_labels))
    out = []
    for config in snapshot.envoy_configs:
        key = config_key(config)
        found = tuple(errors.get(key, ()))
        if not labels.matches(config.node_selector):
            out.append(ConfigStatus(*key, ConfigReason.NOT_SELECTED, "its nodeSelector does not select this node"))
        elif found:
            out.append(ConfigStatus(*key, ConfigReason.REJECTED, found[0].message, found))
        elif unserved:
            out.append(ConfigStatus(*key, ConfigReason.NOT_SERVED, unserved))
        else:
            out.append(ConfigStatus(*key, ConfigReason.ACCEPTED))
    return tuple(out)
