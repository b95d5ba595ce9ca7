"""Helpers for the gateway adapter's unit tests: translate YAML through the adapter alone."""

from __future__ import annotations

import textwrap
from typing import Any

import functools

import meshcore
from meshcore.model import HttpRoute, RouteTable, ServiceRef, Severity
from meshcore_gateway import adapter
from testcerts import Authority

CLASS = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: meshcore}
spec: {controllerName: meshcore.io/gateway-controller}
"""


def translate(*docs: str) -> meshcore.Translation:
    """Translate YAML documents (joined with ---) through the gateway adapter only."""
    text = "\n---\n".join(textwrap.dedent(d).strip() for d in docs)
    return meshcore.translate(text=text, adapters=[adapter])


@functools.cache
def authority() -> Authority:
    """One test CA for the module (made at test time)."""
    return Authority()


@functools.cache
def tls_secret(name: str, namespace: str = "default", hosts: tuple[str, ...] = ("example.com",)) -> str:
    """A kubernetes.io/tls Secret with a valid certificate for ``hosts``."""
    return authority().issue(hosts).secret(name, namespace)


def service(name: str, namespace: str = "default", port: int = 80, vip: str = "10.96.0.1",
            protocol: str = "TCP", port_name: str = "http") -> str:
    """A selector-less Service with one port."""
    return f"""
    apiVersion: v1
    kind: Service
    metadata: {{name: {name}, namespace: {namespace}}}
    spec:
      clusterIP: {vip}
      ports: [{{name: {port_name}, port: {port}, protocol: {protocol}}}]
    """


def gateway(name: str = "gw", namespace: str = "default", listeners: str = "[{name: http, port: 80, protocol: HTTP}]",
            address: str = "192.0.2.1") -> str:
    """A Gateway of meshcore's class."""
    return f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata: {{name: {name}, namespace: {namespace}}}
    spec:
      gatewayClassName: meshcore
      addresses: [{{value: {address}}}]
      listeners: {listeners}
    """


def tables(result: meshcore.Translation, namespace: str, name: str, port: int | None = None) -> list[RouteTable]:
    """The route tables of one Service (optionally one port)."""
    ref = ServiceRef(namespace, name)
    return [t for t in result.snapshot.routes if t.service == ref and (port is None or t.port == port)]


def table(result: meshcore.Translation, namespace: str, name: str, port: int,
          hostnames: tuple[str, ...] = ()) -> RouteTable:
    """The one table of a Service port with these hostnames."""
    found = [t for t in tables(result, namespace, name, port) if t.hostnames == hostnames]
    assert len(found) == 1, f"expected one table for {namespace}/{name}:{port} {hostnames}, got {found}"
    return found[0]


def names(routes: tuple[HttpRoute, ...] | list[HttpRoute]) -> list[str]:
    """The names of model routes, in table order."""
    return [r.name for r in routes]


def status(result: meshcore.Translation, kind: str, namespace: str, name: str) -> dict[str, Any]:
    """The status stanza computed for one object."""
    found = [s for s in result.statuses if s.kind == kind and s.namespace == namespace and s.name == name]
    assert len(found) == 1, f"expected one status for {kind} {namespace}/{name}, got {len(found)}"
    return dict(found[0].status)


def conditions(entry: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """A condition list as type → (status, reason)."""
    return {c["type"]: (c["status"], c["reason"]) for c in entry["conditions"]}


def parent(result: meshcore.Translation, kind: str, namespace: str, name: str,
           index: int = 0) -> dict[str, tuple[str, str]]:
    """The conditions of one route parent status entry."""
    return conditions(status(result, kind, namespace, name)["parents"][index])


def codes(result: meshcore.Translation, severity: Severity | None = None) -> list[str]:
    """The diagnostic codes (optionally of one severity)."""
    return [d.code for d in result.diagnostics if severity is None or d.severity is severity]
