"""DestinationRule traffic policies → model :class:`~meshcore.model.TrafficPolicy` per service.

Istio picks a DestinationRule per client: the client's namespace first, then the
service's, then the root namespace. The node proxy serves every client of a service
alike, so the rule the service's own namespace would use applies (its namespace, then
the root namespace, then any other rule exported there; among several, an exact host
before a wildcard). A rule that Istio would apply only to the clients of another
namespace is reported (MC7013) and not applied. Rules with a ``workloadSelector``
configure chosen client workloads only, which the shared node proxy cannot do; they are
reported too. Each layer of the chosen rule becomes one TrafficPolicy (the model layers
them: a ``portLevelSettings`` entry replaces all four settings of the level above it, so
an entry with only ``port`` resets that port to defaults; a subset's settings override
the rule's one by one).
"""

from __future__ import annotations

from meshcore.kube import FieldCode, Report
from meshcore.model import ModelError, Service, TrafficPolicy

from ._codes import IstioCode
from ._common import ROOT_NAMESPACE, visible
from ._destinationrule import DestRule
from ._hosts import HostIndex


def _rank(rule: DestRule, service: Service) -> tuple[int, int, int, str, str]:
    ns = rule.obj.namespace
    where = 0 if ns == service.namespace else 1 if ns == ROOT_NAMESPACE else 2
    wildcard = 1 if "*" in rule.host else 0
    return (where, wildcard, -len(rule.host), ns, rule.obj.name)


def traffic_policies(rules: list[DestRule], hosts: HostIndex, report: Report) -> list[TrafficPolicy]:
    """The traffic policies of ``rules`` for the services their hosts name (see the module documentation)."""
    covering: dict[Service, list[DestRule]] = {}
    for rule in rules:
        if not rule.layers:
            continue
        if rule.selector:
            report.info(rule.obj, IstioCode.NOT_CARRIED, "a DestinationRule with a workloadSelector configures only "
                        "the selected clients, which the shared node proxy cannot tell apart; its traffic policy is "
                        "not applied", "spec.workloadSelector")
            continue
        for service in hosts.lookup(rule.host, rule.obj.namespace):
            covering.setdefault(service, []).append(rule)
    out: list[TrafficPolicy] = []
    applied: set[int] = set()
    passed_over: dict[int, tuple[DestRule, Service, DestRule | None]] = {}
    for service, found in sorted(covering.items(), key=lambda item: item[0].ref):
        usable = [r for r in found if visible(r.exported, r.obj.namespace, service.namespace)]
        chosen = min(usable, key=lambda r: _rank(r, service)) if usable else None
        for rule in found:
            if rule is not chosen:
                passed_over.setdefault(id(rule), (rule, service, chosen))
        if chosen is None:
            continue
        applied.add(id(chosen))
        for layer in chosen.layers:
            fields = layer.settings.fields()
            # A port entry replaces every setting, even with none of its own (back to defaults).
            replaces_all = layer.port is not None
            if not fields and not replaces_all:
                continue
            subset = layer.subset
            try:
                out.append(TrafficPolicy(service.ref, layer.port, subset.name if subset else "",
                                         subset.labels if subset else (), replaces_all=replaces_all,
                                         source=chosen.obj.source, **fields))
            except ModelError as exc:
                report.error(chosen.obj, FieldCode.MODEL_REJECTED, f"{layer.path}: {exc}", layer.path)
    for key, (rule, service, chosen) in passed_over.items():
        if key in applied:
            continue
        instead = (f"DestinationRule {chosen.obj.namespace}/{chosen.obj.name} applies instead" if chosen
                   else "no traffic policy applies")
        report.info(rule.obj, IstioCode.NOT_CARRIED, f"Istio applies this rule only to clients in namespace "
                    f"{rule.obj.namespace}; the node proxy serves every client of {service.ref} alike, with the rule "
                    f"of the service's namespace ({instead})", rule.layers[0].path)
    return out
