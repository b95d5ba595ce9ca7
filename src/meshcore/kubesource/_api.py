"""The API server as meshcore sees it: JSON GETs, watch streams and writes, and how to reach it.

:class:`KubeApi` is all the informers and the status writer need, so tests can hand them
a scripted one; :func:`connect` builds the real one from a kubeconfig or the pod's
service account.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

__all__ = ["ApiError", "ConfigError", "KubeApi", "Unreachable", "connect", "in_cluster"]

#: Where a pod finds its service account (token, CA, namespace).
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = Path("~/.kube/config")


class ApiError(Exception):
    """The API server answered with an error status (``status`` is the HTTP code)."""

    def __init__(self, status: int, reason: str, message: str, url: str) -> None:
        super().__init__(f"{url}: {status} {reason}: {message}" if message else f"{url}: {status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message
        self.url = url

    @property
    def gone(self) -> bool:
        """410 Gone: the resourceVersion asked for is older than the server keeps; list again."""
        return self.status == 410

    @property
    def conflict(self) -> bool:
        """409 Conflict: the object changed since the resourceVersion sent (or already exists)."""
        return self.status == 409

    @property
    def not_found(self) -> bool:
        """404 Not Found: no such object, or the server does not serve the resource."""
        return self.status == 404

    @property
    def forbidden(self) -> bool:
        """403 Forbidden: the account may not do this (its RBAC rules lack the verb)."""
        return self.status == 403


class Unreachable(Exception):
    """The API server could not be reached, or the connection broke."""


class ConfigError(Exception):
    """No usable configuration: the kubeconfig, its context or the in-cluster account is missing or wrong."""


class KubeApi(Protocol):
    """JSON requests to one API server."""

    @property
    def origin(self) -> str:
        """Where objects come from, for their source: ``kube://<context>``."""

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The JSON answer to GET ``path``; :class:`ApiError` or :class:`Unreachable` otherwise."""

    def watch(self, path: str, params: Mapping[str, str], timeout: float) -> Iterator[dict[str, Any]]:
        """The events of a watch stream, one JSON object each, until the server ends it.

        ``timeout`` bounds the wait for the next line, so a silent dead connection ends
        too. Closing the iterator closes the stream.
        """

    def send(self, method: str, path: str, body: Mapping[str, Any], *,
             content_type: str = "application/json") -> dict[str, Any]:
        """The JSON answer to ``method`` (POST, PUT or PATCH) with ``body`` at ``path``.

        ``content_type`` names the patch type for PATCH (e.g.
        ``application/merge-patch+json``). Raises :class:`ApiError` or :class:`Unreachable`.
        """

    def close(self) -> None:
        """Close open streams and connections; blocked watches end."""


def in_cluster() -> bool:
    """True when running in a pod with a service account and the API server's address in the environment."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SERVICE_ACCOUNT / "token").is_file()


def _kubeconfig_path(kubeconfig: str | os.PathLike[str] | None) -> Path | None:
    """The kubeconfig file to use as kubectl chooses it: the flag, ``$KUBECONFIG``, ``~/.kube/config``."""
    if kubeconfig:
        return Path(kubeconfig).expanduser()
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        found = [Path(p).expanduser() for p in listed if Path(p).expanduser().is_file()]
        return found[0] if found else Path(listed[0]).expanduser()
    default = DEFAULT_KUBECONFIG.expanduser()
    return default if default.is_file() or not in_cluster() else None


def connect(context: str | None = None, kubeconfig: str | os.PathLike[str] | None = None, *,
            timeout: float = 10.0) -> KubeApi:
    """The API server of ``context`` in the kubeconfig, or the pod's own cluster.

    The kubeconfig is chosen as kubectl does (``kubeconfig``, then ``$KUBECONFIG``, then
    ``~/.kube/config``); with none of them and a service account mounted, the in-cluster
    configuration is used. ``timeout`` bounds connecting and each non-watch request.
    Raises :class:`ConfigError` naming what is missing.
    """
    try:
        from ._http import HttpApi  # noqa: PLC0415 - lightkube only when the source is used
    except ImportError as exc:
        raise ConfigError(f"the Kubernetes source needs lightkube ({exc}); "
                          "install it with: pip install 'meshcore[kube]'") from None
    path = _kubeconfig_path(kubeconfig)
    if path is None:
        if context:
            raise ConfigError(f"context {context!r} asked for, but there is no kubeconfig "
                              f"(--kubeconfig, $KUBECONFIG or {DEFAULT_KUBECONFIG}); in a pod, leave --context out")
        return HttpApi.in_cluster(SERVICE_ACCOUNT, timeout)
    if not path.is_file():
        raise ConfigError(f"kubeconfig {path} does not exist")
    return HttpApi.from_kubeconfig(path, context, timeout)
