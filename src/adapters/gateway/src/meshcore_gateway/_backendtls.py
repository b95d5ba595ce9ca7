"""BackendTLSPolicy → TLS from the node proxy to a Service, verified with its CA and hostname.

A policy targets Services (``targetRefs``; v1alpha2 ``targetRef``), optionally one port
by its name (``sectionName``). Its ``validation`` (v1alpha2 ``tls``) names the CA
certificates — ConfigMaps with a ``ca.crt`` — and the ``hostname`` the proxy sends as
SNI and checks the backend's certificate against (or the ``subjectAltNames`` when
given). Gateway routes to a targeted Service send to its :data:`SUBSET` (all its
backends, with a traffic policy originating TLS), so the mesh's own traffic to that
Service is untouched. A policy that cannot be applied (CA missing, well-known CAs, URI
names) makes routes to its Services fail closed, never send plaintext.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from meshcore.kube import Fields, Inventory, KubeObject
from meshcore.model import ServiceRef, Source, TlsMode, TrafficPolicy, UpstreamTls

from ._refs import CORE_GROUPS

#: The subset Gateway routes send to for a Service a BackendTLSPolicy targets.
SUBSET = "backend-tls"


@attrs.frozen
class BackendTls:
    """TLS to one Service (one port, or all of them), or why a policy cannot give it."""

    namespace: str
    name: str
    port: int | None
    tls: UpstreamTls | None
    problem: str
    source: Source
    #: The status reasons of a problem: (Accepted reason, ResolvedRefs reason or "" when references resolve).
    reasons: tuple[str, str] = ("Accepted", "")

    def policy(self) -> TrafficPolicy | None:
        """The traffic policy of the Service's TLS subset, when the policy can be applied."""
        if self.tls is None:
            return None
        return TrafficPolicy(ServiceRef(self.namespace, self.name), self.port, SUBSET, tls=self.tls, source=self.source)


def _validation(obj: KubeObject, inventory: Inventory) -> tuple[UpstreamTls | None, str, tuple[str, str]]:
    """The TLS settings of a policy, or the problem with its status reasons (Accepted, ResolvedRefs)."""
    spec = Fields.of(obj).map("spec", required=True)
    validation = spec.map("validation") if spec.has("validation") else spec.map("tls", required=True)
    hostname = validation.req_str("hostname")
    if validation.str("wellKnownCACertificates") or validation.str("wellKnownCACerts"):
        return None, "wellKnownCACertificates is not supported; name the CA with caCertificateRefs", ("Invalid", "")
    bundles = []
    for ref in validation.maps("caCertificateRefs") or validation.maps("caCertRefs"):
        group, kind, name = ref.str("group", "") or "", ref.req_str("kind"), ref.req_str("name")
        if group not in CORE_GROUPS or kind != "ConfigMap":
            return (None, f"CA certificate reference {kind} {name}: only ConfigMaps are supported",
                    ("NoValidCACertificate", "InvalidKind"))
        bundle = inventory.ca_bundle(obj.namespace, name)
        if bundle is None:
            return (None, f"ConfigMap {obj.namespace}/{name} with a ca.crt holding PEM certificates not found",
                    ("NoValidCACertificate", "InvalidCACertificateRef"))
        bundles.append(bundle)
    if not bundles:
        return None, "no caCertificateRefs: the backend's certificate could not be verified", ("Invalid", "")
    names: list[str] = []
    for entry in validation.maps("subjectAltNames"):
        if (entry.str("type", "Hostname") or "Hostname") != "Hostname":
            return None, "subjectAltNames of type URI are not supported", ("Invalid", "")
        names.append(entry.req_str("hostname"))
    return UpstreamTls(TlsMode.SIMPLE, sni=hostname, subject_alt_names=tuple(names or [hostname]),
                       ca_bundle="".join(b if b.endswith("\n") else b + "\n" for b in bundles)), "", ("Accepted", "")


def read_backend_tls(obj: KubeObject, inventory: Inventory) -> list[BackendTls]:
    """The Services (and ports) a BackendTLSPolicy targets, each with its TLS settings or the problem."""
    spec = Fields.of(obj).map("spec", required=True)
    entries = spec.maps("targetRefs") or ([spec.map("targetRef")] if spec.has("targetRef") else [])
    tls, problem, reasons = _validation(obj, inventory)
    out = []
    for entry in entries:
        group, kind, name = entry.str("group", "") or "", entry.req_str("kind"), entry.req_str("name")
        if group not in CORE_GROUPS or kind != "Service":
            continue
        port: int | None = None
        section = entry.str("sectionName")
        service = inventory.service(obj.namespace, name)
        if section and service is not None:
            port = next((p.port for p in service.ports if p.name == section), None)
            if port is None:
                continue  # no such port: the policy applies to nothing of this Service
        out.append(BackendTls(obj.namespace, name, port, tls, problem, obj.source_at(entry.path), reasons))
    return out


def applicable(policies: Mapping[tuple[str, str], Sequence[BackendTls]], namespace: str, name: str,
               port: int) -> BackendTls | None:
    """The policy for ``port`` of Service ``namespace/name``: one naming the port first, then one for all ports."""
    found = [p for p in policies.get((namespace, name), ()) if p.port in (None, port)]
    return min(found, key=lambda p: p.port is None) if found else None
