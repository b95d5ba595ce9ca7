"""The status types, settings and small helpers of :class:`~meshcore_istio.IstiodSource`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
import structlog

from meshcore.kube import KubeObject

from ._istiod_decode import IstiodError

#: A node ID istiod accepts (``type~ip~id~domain``); the api generator ignores the rest.
DEFAULT_NODE_ID = "sidecar~127.0.0.1~meshcore.istio-system~istio-system.svc.cluster.local"
MIN_BACKOFF = 0.1
# Status codes that say the server refuses this subscription, not that it is unavailable.
REJECTIONS = {"INVALID_ARGUMENT", "UNIMPLEMENTED", "NOT_FOUND", "PERMISSION_DENIED", "UNAUTHENTICATED",
               "FAILED_PRECONDITION"}


def log() -> Any:
    """The source's structlog logger over the standard library's ``meshcore_istio.istiod`` logger.

    Its events go through the standard library, so a program that configures no logging
    sees warnings and errors only (on stderr), never the debug lines of retries; the
    ``meshcore`` command renders them with its own (``meshcore.observe.configure_logging``).
    Looked up per call so test log capture sees it.
    """
    return structlog.wrap_logger(logging.getLogger("meshcore_istio.istiod"))


def check_address(address: str) -> str:
    """``address`` as a gRPC target; raises :class:`IstiodError` unless it is host:port or unix:/path."""
    if address.startswith("unix:"):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise IstiodError(f"istiod address {address!r}: expected host:port (e.g. istiod.istio-system:15010) "
                          "or unix:/path")
    return address


@attrs.frozen
class IstiodTypeStatus:
    """One subscribed type: the version accepted last, its object count, the last rejection."""

    version: str
    objects: int
    error: str = ""


@attrs.frozen
class IstiodStatus:
    """The source's connection and what it holds per type URL (types not received yet are absent)."""

    address: str
    connected: bool
    types: Mapping[str, IstiodTypeStatus]
    error: str = ""


@attrs.define
class TypeState:
    """What the source holds for one type URL."""

    received: bool = False
    objects: list[KubeObject] = attrs.field(factory=list)
    version: str = ""
    error: str = ""
