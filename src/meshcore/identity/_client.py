"""Where a node agent gets SVIDs: the :class:`SvidSource` protocol and meshcore's CA client.

An agent depends only on :class:`SvidSource`, so a SPIFFE Workload API client (a SPIRE
agent's socket) can take the CA client's place: it would hand out the same :class:`Svid`
and :class:`TrustBundle` values.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Protocol

from ._ca import CaError
from ._svid import Svid, TrustBundle, csr_for, key_pem, new_key

__all__ = ["CaClient", "SvidSource"]


class SvidSource(Protocol):
    """Something that issues SVIDs for this node's identities and tells the trust bundle."""

    def fetch(self, spiffe_id: str) -> tuple[Svid, TrustBundle]:
        """A fresh SVID for ``spiffe_id`` and the current bundle; raises :class:`CaError` when refused."""
        ...


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class CaClient:
    """Asks meshcore's CA (``meshcore ca serve``) on a Unix socket, as ``node`` with its token.

    The private key of each SVID is made here and never sent: the CA signs a request for it.
    """

    def __init__(self, socket_path: Path, node: str, token: str, *, timeout: float = 5.0) -> None:
        self.socket_path = Path(socket_path)
        self.node = node
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, str] | None = None) -> dict[str, str]:
        conn = _UnixConnection(str(self.socket_path), self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = json.loads(response.read() or b"{}")
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise CaError(f"cannot reach the CA at {self.socket_path}: {exc}") from None
        finally:
            conn.close()
        if response.status != 200:
            raise CaError(str(answer.get("error") or f"the CA answered {response.status}"))
        return {str(k): str(v) for k, v in answer.items()}

    def fetch(self, spiffe_id: str) -> tuple[Svid, TrustBundle]:
        """A new key and its SVID for ``spiffe_id``, and the CA's bundle."""
        key = new_key()
        answer = self._call("POST", "/v1/svid", {"node": self.node, "token": self.token, "spiffe_id": spiffe_id,
                                                 "csr": csr_for(key, spiffe_id)})
        svid = Svid.from_pem(answer["chain"], key_pem(key))
        if svid.spiffe_id != spiffe_id:
            raise CaError(f"the CA issued {svid.spiffe_id} when asked for {spiffe_id}")
        return svid, TrustBundle(spiffe_id.split("/")[2], answer["bundle"])

    def bundle(self) -> TrustBundle:
        """The CA's trust bundle."""
        answer = self._call("GET", "/v1/bundle")
        return TrustBundle(answer["trust_domain"], answer["bundle"])
