"""An Ingress's ``spec.tls`` → TLS terminations on its port 443, and its assigned address.

Each ``tls`` entry terminates TLS for its ``hosts`` (none: any server name) with the
certificate of Secret ``secretName`` in the Ingress's namespace. An entry whose Secret
cannot serve (missing, unparseable, expired, key not matching) or that names none is
reported (MC6010) and its hosts stay closed: there is no default certificate, and
nothing is served in clear text on port 443. A host named by an earlier entry keeps
that entry's certificate. The Ingress's address is what an address manager wrote into
``status.loadBalancer.ingress[].ip`` (the lab does, as a LoadBalancer controller would),
and its status reports it back.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs

from meshcore.kube import Fields, Inventory, KubeObject, Report
from meshcore.model import Certificate, ServiceRef, TlsTermination

from ._codes import GatewayCode
from ._hostnames import check_hostname

HTTPS_PORT = 443


@attrs.frozen
class IngressTls:
    """The TLS terminations an Ingress's ``tls`` entries give, with their certificates."""

    terminations: tuple[TlsTermination, ...] = ()
    certificates: tuple[Certificate, ...] = ()


def ingress_tls(obj: KubeObject, inventory: Inventory, report: Report) -> IngressTls:
    """Terminations for the ``tls`` entries whose certificate can serve; the others are reported."""
    terminations: list[TlsTermination] = []
    certificates: list[Certificate] = []
    claimed: set[str] = set()
    for i, entry in enumerate(Fields.of(obj).map("spec").maps("tls")):
        hosts = [check_hostname(h, f"{entry.path}.hosts[{j}]") for j, h in enumerate(entry.strs("hosts"))]
        fresh = tuple(dict.fromkeys(h for h in hosts if h not in claimed))
        label = f"hosts {', '.join(hosts)} are" if hosts else "connections for any server name are"
        if hosts and not fresh:
            continue  # every host already has an earlier entry's certificate
        if not hosts and "" in claimed:
            continue
        secret = entry.str("secretName")
        if not secret:
            report.warn(obj, GatewayCode.CERTIFICATE_REF, f"spec.tls[{i}] names no secretName and meshcore has no "
                        f"default certificate: {label} not served on port {HTTPS_PORT}", entry.path)
            continue
        certificate, problem = inventory.certificate(obj.namespace, secret)
        if certificate is None:
            report.warn(obj, GatewayCode.CERTIFICATE_REF, f"{problem}: {label} not served on port {HTTPS_PORT} (never "
                        "without TLS)", f"{entry.path}.secretName")
            continue
        claimed.update(fresh or ("",))
        terminations.append(TlsTermination(ServiceRef(obj.namespace, obj.name), HTTPS_PORT, fresh,
                                           (certificate.ref,), source=obj.source_at(entry.path)))
        certificates.append(certificate)
    return IngressTls(tuple(terminations), tuple(certificates))


def assigned_addresses(obj: KubeObject) -> tuple[str, ...]:
    """The IP addresses of ``status.loadBalancer.ingress`` (hostname-only and odd entries are skipped)."""
    found: list[str] = []
    for entry in Fields.of(obj).map("status").map("loadBalancer").maps("ingress"):
        try:
            found.append(str(ipaddress.ip_address(entry.str("ip") or "")))
        except ValueError:
            continue  # written by a controller, not the user: not an input error
    return tuple(dict.fromkeys(found))


def ingress_status(addresses: tuple[str, ...]) -> dict[str, Any]:
    """The Ingress ``status`` stanza: the addresses it is served on."""
    return {"loadBalancer": {"ingress": [{"ip": a} for a in addresses]}}
