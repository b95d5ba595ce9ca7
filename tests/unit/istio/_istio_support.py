"""Helpers for the Istio adapter's unit tests: translate YAML through the adapter alone."""

from __future__ import annotations

import textwrap

import meshcore
from meshcore.model import Diagnostic, HttpRoute, RouteTable, ServiceRef, TcpRoute
from meshcore_istio import adapter


def translate(*docs: str) -> meshcore.Translation:
    """Translate YAML documents (joined with ---) through the Istio adapter only."""
    text = "\n---\n".join(textwrap.dedent(d).strip() for d in docs)
    return meshcore.translate(text=text, adapters=[adapter])


def service(name: str, namespace: str = "default", ports: str = "[{name: http, port: 80}]",
            vip: str = "10.96.0.1", selector: str = "") -> str:
    """A Service (selector-less unless ``selector`` is given)."""
    sel = f"selector: {selector}" if selector else ""
    return f"""
    apiVersion: v1
    kind: Service
    metadata: {{name: {name}, namespace: {namespace}}}
    spec:
      clusterIP: {vip}
      {sel}
      ports: {ports}
    """


def pod(name: str, labels: str, ip: str, namespace: str = "default", account: str = "default") -> str:
    """A running Pod with labels and an IP."""
    return f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: {name}, namespace: {namespace}, labels: {labels}}}
    spec: {{serviceAccountName: {account}, containers: [{{name: app, image: echo, ports: [{{containerPort: 80}}]}}]}}
    status: {{podIP: {ip}, phase: Running}}
    """


def istio(kind: str, name: str, spec: str, namespace: str = "default", version: str = "networking.istio.io/v1",
          extra_meta: str = "") -> str:
    """An Istio object with the given spec (YAML text, indented freely)."""
    body = textwrap.indent(textwrap.dedent(spec).strip(), "  ")
    meta = f"{{name: {name}, namespace: {namespace}{', ' + extra_meta if extra_meta else ''}}}"
    return f"apiVersion: {version}\nkind: {kind}\nmetadata: {meta}\nspec:\n{body}\n"


def table(result: meshcore.Translation, name: str, port: int, namespace: str = "default") -> RouteTable:
    """The route table of one service port."""
    ref = ServiceRef(namespace, name)
    found = [t for t in result.snapshot.routes if t.service == ref and t.port == port]
    assert len(found) == 1, f"expected one table for {ref}:{port}, got {result.snapshot.routes}"
    return found[0]


def http(result: meshcore.Translation, name: str, port: int = 80, namespace: str = "default") -> list[HttpRoute]:
    """The HTTP routes of one service port."""
    return list(table(result, name, port, namespace).http)


def tcp(result: meshcore.Translation, name: str, port: int, namespace: str = "default") -> list[TcpRoute]:
    """The TCP routes of one service port."""
    return list(table(result, name, port, namespace).tcp)


def codes(result: meshcore.Translation) -> list[str]:
    """The diagnostic codes, in order."""
    return [d.code for d in result.diagnostics]


def find(result: meshcore.Translation, code: str) -> Diagnostic:
    """The one diagnostic with ``code``."""
    found = [d for d in result.diagnostics if d.code == code]
    assert len(found) == 1, f"expected one {code}, got {result.diagnostics}"
    return found[0]
