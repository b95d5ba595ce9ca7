"""The real :class:`~._api.KubeApi`: lightkube's configuration and HTTP client, our requests."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx2 as httpx
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError as LightkubeConfigError

from ._api import ApiError, ConfigError, Unreachable

__all__ = ["HttpApi"]

_JSON = {"Accept": "application/json"}

# The HTTP client logs every request at INFO: with Lease renewals every few seconds that
# would drown the agent's own log, whose root level is INFO.
logging.getLogger(httpx.__name__).setLevel(logging.WARNING)


def _api_error(response: httpx.Response) -> ApiError:
    """The Status the server sent with an error (or what the response says when it is not one)."""
    url = str(response.request.url)
    try:
        status = response.json()
    except ValueError:
        status = {}
    if not isinstance(status, Mapping):
        status = {}
    return ApiError(int(status.get("code") or response.status_code), str(status.get("reason") or response.reason_phrase),
                    str(status.get("message") or ""), url)


class HttpApi:
    """One API server over HTTP(S), authenticated as the configuration says."""

    def __init__(self, config: SingleConfig, origin: str, timeout: float) -> None:
        self.origin = origin
        self.server = config.cluster.server
        try:
            self._client = client_adapter.Client(config, client_adapter.ConnectionParams(timeout=httpx.Timeout(timeout)))
        except (LightkubeConfigError, OSError, ValueError) as exc:
            raise ConfigError(f"{origin}: {exc}") from None
        self._timeout = timeout
        self._open: set[httpx.Response] = set()
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_kubeconfig(cls, path: Path, context: str | None, timeout: float) -> HttpApi:
        """The server of ``context`` (the current one when None) in the kubeconfig at ``path``."""
        try:
            config = KubeConfig.from_file(path).get(context)
        except (LightkubeConfigError, OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"kubeconfig {path}: {exc}") from None
        if config is None:
            raise ConfigError(f"kubeconfig {path} has no current context; name one with --context")
        return cls(_with_user(config), f"kube://{config.context_name}", timeout)

    @classmethod
    def in_cluster(cls, account: Path, timeout: float) -> HttpApi:
        """The pod's own cluster, authenticated as its service account (the token is re-read when it rotates)."""
        try:
            config = KubeConfig.from_service_account(account).get()
        except (LightkubeConfigError, OSError, KeyError) as exc:
            raise ConfigError(f"in-cluster configuration: {exc}") from None
        assert config is not None
        return cls(config, "kube://in-cluster", timeout)

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The JSON answer to GET ``path``."""
        try:
            response = self._client.get(path, params=dict(params or {}), headers=_JSON)
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise Unreachable(f"{self.server}{path}: {exc or type(exc).__name__}") from None
        return _answer(response)

    def send(self, method: str, path: str, body: Mapping[str, Any], *,
             content_type: str = "application/json") -> dict[str, Any]:
        """The JSON answer to ``method`` with ``body`` (JSON) at ``path``."""
        try:
            response = self._client.request(method, path, content=json.dumps(body).encode(),
                                            headers={**_JSON, "Content-Type": content_type})
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise Unreachable(f"{self.server}{path}: {exc or type(exc).__name__}") from None
        return _answer(response)

    def watch(self, path: str, params: Mapping[str, str], timeout: float) -> Iterator[dict[str, Any]]:
        """The events of a watch on ``path``; each line of the stream is one event."""
        limits = httpx.Timeout(self._timeout, read=timeout)
        try:
            with self._client.stream("GET", path, params=dict(params), headers=_JSON, timeout=limits) as response:
                with self._lock:
                    if self._closed:
                        return
                    self._open.add(response)
                try:
                    if response.status_code >= 400:
                        response.read()
                        raise _api_error(response)
                    for line in response.iter_lines():
                        if line.strip():
                            yield _event(line, str(response.url))
                finally:
                    with self._lock:
                        self._open.discard(response)
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise Unreachable(f"{self.server}{path}: {exc or type(exc).__name__}") from None

    def close(self) -> None:
        """Close open watches and the connection pool."""
        with self._lock:
            self._closed = True
            responses = list(self._open)
        for response in responses:
            try:
                response.close()
            except Exception:  # noqa: BLE001,S110 - closing from another thread may race the reader
                pass
        self._client.close()


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON object a response carries; :class:`ApiError` for an error status or anything but an object."""
    if response.status_code >= 400:
        raise _api_error(response)
    try:
        data = response.json()
    except ValueError:
        raise ApiError(response.status_code, "BadResponse", "the answer is not JSON", str(response.url)) from None
    if not isinstance(data, dict):
        raise ApiError(response.status_code, "BadResponse", "the answer is not a JSON object", str(response.url))
    return data


def _event(line: str, url: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        raise ApiError(200, "BadResponse", f"a watch line is not JSON: {line[:80]!r}", url) from None
    if not isinstance(event, dict):
        raise ApiError(200, "BadResponse", f"a watch event is not a JSON object: {line[:80]!r}", url)
    return event


def _with_user(config: SingleConfig) -> SingleConfig:
    """The configuration with an empty user when the context names none (an unauthenticated server)."""
    if config.user is not None:
        return config
    from lightkube.config.models import User  # noqa: PLC0415

    return config._replace(user=User())
