"""Envoy API message classes by ``@type`` URL, loaded from xds-protos on demand.

The generated modules of a package register their messages in the default descriptor
pool when imported; JSON parsing of ``Any`` fields (``typed_config``) looks them up
there. Common extensions are imported up front; any other type under the Envoy, xDS or
UDPA namespaces is found by importing the generated modules of its package, so every
extension xds-protos ships can be used without a list to maintain.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from typing import Any

from google.protobuf import descriptor_pool, message_factory

from meshcore.model import ENVOY_RESOURCE_TYPES

TYPE_PREFIX = "type.googleapis.com/"

#: Short names of the top-level resource types, for messages.
SHORT_NAMES = {url: url.rpartition(".")[2] for url in ENVOY_RESOURCE_TYPES}

# Packages whose messages a typed config may name; nothing outside them is imported.
_ALLOWED_ROOTS = ("envoy.", "xds.", "udpa.", "google.protobuf.", "validate.")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")

_PRELOADED = (
    "envoy.config.listener.v3.listener_pb2",
    "envoy.config.route.v3.route_pb2",
    "envoy.config.cluster.v3.cluster_pb2",
    "envoy.config.endpoint.v3.endpoint_pb2",
    "envoy.extensions.transport_sockets.tls.v3.secret_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
)
_loaded_packages: set[str] = set()


class UnknownType(Exception):
    """A ``@type`` URL that names no message of the Envoy API."""

    def __init__(self, type_url: str, reason: str) -> None:
        super().__init__(f"{type_url}: {reason}")
        self.type_url = type_url
        self.reason = reason


def preload() -> None:
    """Import the modules of the resource types and the most used extensions."""
    if not _loaded_packages:
        for module in _PRELOADED:
            importlib.import_module(module)
        _loaded_packages.add("")


def _find(name: str) -> Any:
    try:
        return descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        return None


def _import_package(package: str) -> None:
    """Import every generated module of ``package`` (once)."""
    if package in _loaded_packages:
        return
    _loaded_packages.add(package)
    try:
        pkg = importlib.import_module(package)
    except ImportError:
        return
    for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
        if info.name.endswith("_pb2"):
            try:
                importlib.import_module(f"{package}.{info.name}")
            except ImportError:
                continue


def descriptor_for(type_url: str) -> Any:
    """The message descriptor a ``type.googleapis.com/<name>`` URL names; raises :class:`UnknownType`."""
    preload()
    if not type_url.startswith(TYPE_PREFIX):
        raise UnknownType(type_url, f"a type URL must start with {TYPE_PREFIX}")
    name = type_url[len(TYPE_PREFIX):]
    if not _NAME.match(name):
        raise UnknownType(type_url, "not a protobuf message name")
    found = _find(name)
    if found is None and name.startswith(_ALLOWED_ROOTS):
        # Nested messages (Outer.Inner) live in the package of their outer message, so
        # try each shorter prefix as the package.
        parts = name.split(".")
        for cut in range(len(parts) - 1, 1, -1):
            _import_package(".".join(parts[:cut]))
            found = _find(name)
            if found is not None:
                break
    if found is None:
        hint = ""
        if name.startswith("envoy.api.v2") or ".v2." in name:
            hint = " (the v2 xDS API is gone from Envoy: use the v3 message)"
        raise UnknownType(type_url, f"no message {name} in the Envoy API{hint}")
    return found


def message_class(descriptor: Any) -> Any:
    """The generated Python class of a message descriptor."""
    return message_factory.GetMessageClass(descriptor)
