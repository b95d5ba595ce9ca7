"""networking.k8s.io/v1 NetworkPolicy → model AuthorizationPolicy (one per policy type).

A NetworkPolicy selecting pods for a direction makes them deny, in that direction, what
none of its rules allows — exactly an ALLOW policy of the model. The translation:

- ``podSelector`` → the policy's workload selector (``matchLabels`` only: the model
  selects by labels; ``matchExpressions`` there is an error naming the field).
- ``policyTypes`` (default: Ingress, plus Egress when ``spec.egress`` is set) → one
  AuthorizationPolicy per type; an empty rule list allows nothing in that direction.
- peers: ``podSelector`` → same-namespace workloads with those labels;
  ``namespaceSelector`` → workloads in matching namespaces (``matchExpressions`` are
  resolved against the known namespaces); both → both; ``ipBlock`` (with ``except``)
  → addresses outside the mesh's workloads.
- ports: number, ``endPort`` ranges, or a name resolved against the declared container
  ports (of the selected pods for ingress, of any pod for egress); a name no pod declares
  matches nothing (warning MC1015).
- a ``podSelector`` with labels no pod of the namespace carries is a warning (MC1016): the
  policy restricts nothing. An empty one (every pod of the namespace) is not reported, even
  in a namespace without pods.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from ..model import (
    AuthorizationPolicy,
    Direction,
    IpBlock,
    Namespace,
    Operation,
    PeerSelector,
    PolicyRule,
    PortRange,
    Workload,
    WorkloadSelector,
)
from ._codes import FieldCode, KubeCode
from ._fields import FieldError, Fields, Problems
from ._objects import KubeObject
from ._selector import LabelSelector, read_selector
from ._values import Findings, build, is_port_name, read_metadata, selector_text

_TYPES = ("Ingress", "Egress")


def _labels_only(fields: Fields) -> dict[str, str]:
    selector = read_selector(fields)
    if selector.expressions:
        raise FieldError(
            f"{fields.path}.matchExpressions",
            "matchExpressions is not supported here (the mesh selects workloads by labels); use matchLabels",
            KubeCode.SELECTOR_EXPRESSIONS,
        )
    return dict(selector.match_labels)


def _cidr(text: str, path: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise FieldError(path, f"{text!r} is not a CIDR such as 10.0.0.0/8 or fd00::/64",
                         KubeCode.INVALID_VALUE) from None


def _peer(peer: Fields, namespace: str, namespaces: Sequence[Namespace]) -> PeerSelector | None:
    """The model peer, or None when it can match nothing (a namespace selector matching none)."""
    if peer.has("ipBlock"):
        if peer.has("podSelector") or peer.has("namespaceSelector"):
            raise FieldError(peer.path, "ipBlock cannot be combined with podSelector or namespaceSelector",
                             KubeCode.INVALID_VALUE)
        block = peer.map("ipBlock")
        cidr = block.req_str("cidr")
        outer = _cidr(cidr, f"{block.path}.cidr")
        excepts = block.strs("except")
        for i, e in enumerate(excepts):
            inner = _cidr(e, f"{block.path}.except[{i}]")
            if inner.version != outer.version or not inner.subnet_of(outer) or inner == outer:  # type: ignore[arg-type]
                raise FieldError(f"{block.path}.except[{i}]", f"{e} must be a strict subnet of {cidr}",
                                 KubeCode.INVALID_VALUE)
        return PeerSelector(ip_blocks=[IpBlock(str(outer), [str(_cidr(e, "")) for e in excepts])])
    if not peer.has("podSelector") and not peer.has("namespaceSelector"):
        raise FieldError(peer.path, "a peer needs podSelector, namespaceSelector or ipBlock", KubeCode.INVALID_VALUE)
    workload_labels = _labels_only(peer.map("podSelector")) if peer.has("podSelector") else {}
    if not peer.has("namespaceSelector"):
        return PeerSelector(namespaces=[namespace], workload_labels=workload_labels)
    selector: LabelSelector = read_selector(peer.map("namespaceSelector"))
    if selector.expressions:
        names = [n.name for n in namespaces if selector.matches(n.labels)]
        if not names:
            return None
        return PeerSelector(namespaces=names, workload_labels=workload_labels)
    return PeerSelector(namespace_labels=dict(selector.match_labels), workload_labels=workload_labels)


def _ports(entry: Fields, candidates: Sequence[Workload], findings: Findings) -> list[PortRange]:
    protocol = entry.str("protocol", "TCP", choices=("TCP", "UDP", "SCTP")) or "TCP"
    port = entry.int_or_str("port")
    end = entry.int("endPort", minimum=1, maximum=65535)
    if port is None:
        if end is not None:
            raise FieldError(f"{entry.path}.endPort", "endPort needs a numeric port", KubeCode.INVALID_VALUE)
        return [PortRange(0, 65535, protocol)]
    if isinstance(port, str):
        if end is not None:
            raise FieldError(f"{entry.path}.endPort", "endPort needs a numeric port, not a named one",
                             KubeCode.INVALID_VALUE)
        if not is_port_name(port):
            raise FieldError(f"{entry.path}.port", f"{port!r} is neither a port number nor a port name",
                             KubeCode.INVALID_VALUE)
        numbers = sorted({
            p.port for w in candidates for p in w.ports if p.name == port and p.protocol.transport == protocol
        })
        if not numbers:
            findings.warn(KubeCode.NAMED_PORT_UNDECLARED, f"no pod declares a {protocol} port named {port!r}; "
                          "this entry matches no traffic", f"{entry.path}.port")
        return [PortRange.single(n, protocol) for n in numbers]
    if not 1 <= port <= 65535:
        raise FieldError(f"{entry.path}.port", f"{port} is out of range (1..65535)", FieldCode.OUT_OF_RANGE)
    if end is not None and end < port:
        raise FieldError(f"{entry.path}.endPort", f"{end} is below port {port}", KubeCode.INVALID_VALUE)
    return [PortRange(port, end or port, protocol)]


def _rules(spec: Fields, key: str, peer_key: str, namespace: str, namespaces: Sequence[Namespace],
           candidates: Sequence[Workload], findings: Findings, problems: Problems) -> list[PolicyRule]:
    rules = []
    for rule in problems.read(spec.maps, [], key):
        peers_in: list[Fields] = problems.read(rule.maps, [], peer_key)
        read = [problems.read(_peer, False, f, namespace, namespaces) for f in peers_in]
        peers = [p for p in read if isinstance(p, PeerSelector)]
        ports_in: list[Fields] = problems.read(rule.maps, [], "ports")
        ports = [r for entry in ports_in for r in problems.read(_ports, [], entry, candidates, findings)]
        if (peers_in and not peers) or (ports_in and not ports):
            continue  # every peer (or port) matches nothing: so does the rule
        rules.append(PolicyRule(sources=peers, operations=[Operation(ports=ports)] if ports else []))
    return rules


def translate_network_policy(
    obj: KubeObject, findings: Findings, namespaces: Sequence[Namespace], workloads: Sequence[Workload],
) -> list[AuthorizationPolicy]:
    """The ALLOW policies (one per policy type) a NetworkPolicy stands for.

    Every bad field is reported (:class:`~meshcore.kube.FieldErrors`), not only the first.
    """
    problems = Problems()
    problems.read(read_metadata, None, obj)
    spec = Fields.of(obj).map("spec", required=True)
    namespace = obj.namespace or "default"
    labels: dict[str, str] | None = problems.read(lambda: _labels_only(spec.map("podSelector", required=True)), None)
    types: list[str] = problems.read(spec.strs, [], "policyTypes")
    for i, t in enumerate(types):
        if t not in _TYPES:
            problems.add(FieldError(f"spec.policyTypes[{i}]", f"{t!r} is not one of Ingress, Egress",
                                    FieldCode.NOT_ONE_OF))
    if not types:
        types = ["Ingress", *(["Egress"] if spec.has("egress") else [])]
    selected = [w for w in workloads if labels is not None and w.namespace == namespace and w.labels.matches(labels)]
    rules = {
        "Ingress": _rules(spec, "ingress", "from", namespace, namespaces, selected, findings, problems)
        if "Ingress" in types else [],
        "Egress": _rules(spec, "egress", "to", namespace, namespaces, workloads, findings, problems)
        if "Egress" in types else [],
    }
    problems.check()
    assert labels is not None
    selector = WorkloadSelector(namespace, labels)
    if labels and not selected:
        # An empty podSelector (the whole namespace) is often written before the pods: never reported.
        findings.warn(KubeCode.POLICY_SELECTS_NO_PODS, f"no pod in namespace {namespace} has the labels "
                      f"{selector_text(labels)}: this NetworkPolicy selects no pod and restricts nothing",
                      "spec.podSelector.matchLabels")
    out = []
    for t in _TYPES:
        if t not in types:
            continue
        direction = Direction.INGRESS if t == "Ingress" else Direction.EGRESS
        out.append(build(
            {"name": "metadata.name", "namespace": "metadata.namespace"}, "spec",
            lambda: AuthorizationPolicy(
                obj.name, namespace, selector, "ALLOW", rules[t], direction, source=obj.source,
            ),
        ))
    return out
