"""The CA as a service: SVIDs and the trust bundle over HTTP on a Unix socket.

``POST /v1/svid`` with ``{"node", "token", "spiffe_id", "csr"}`` answers
``{"chain", "bundle"}`` or an error ``{"error"}`` (403 for a refused identity or node, 400
for a bad request); ``GET /v1/bundle`` answers ``{"trust_domain", "bundle"}``. Every
answer is logged with the node and identity, so refusals can be audited.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import socketserver
import threading
from pathlib import Path
from typing import Any

from ._authorize import NodeAuthorizer, NodeTokens
from ._ca import CaError, CertificateAuthority

__all__ = ["BUNDLE_FILE", "CaServer"]

#: An operator's trust bundle in the CA's directory, served instead of the CA's own root.
BUNDLE_FILE = "bundle.pem"

log = logging.getLogger("meshcore.ca")
_MAX_BODY = 64 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _UnixServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug(format, *args)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        ca = self.server.owner.ca
        if self.path == "/v1/bundle":
            self._answer(200, {"trust_domain": ca.trust_domain, "bundle": self.server.owner.bundle_pem()})
        else:
            self._answer(404, {"error": f"no such path {self.path}"})

    def do_POST(self) -> None:  # noqa: N802 - the base class's name
        if self.path != "/v1/svid":
            self._answer(404, {"error": f"no such path {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= _MAX_BODY:
            self._answer(400, {"error": f"a request body of 1 to {_MAX_BODY} bytes is needed"})
            return
        try:
            request = json.loads(self.rfile.read(length))
            node, token, spiffe_id, csr = (str(request[k]) for k in ("node", "token", "spiffe_id", "csr"))
        except (ValueError, KeyError, TypeError):
            self._answer(400, {"error": "the body must be JSON with node, token, spiffe_id and csr"})
            return
        owner = self.server.owner
        try:
            owner.tokens.verify(node, token)
            owner.authorizer.check(node, spiffe_id)
            chain = owner.ca.sign(csr, spiffe_id)
        except CaError as exc:
            log.warning("refused an SVID for %s to node %s: %s", spiffe_id, node, exc)
            self._answer(403, {"error": str(exc)})
            return
        log.info("issued an SVID for %s to node %s", spiffe_id, node)
        self._answer(200, {"chain": chain, "bundle": owner.bundle_pem()})


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    owner: CaServer


class CaServer:
    """Serves ``ca`` on the Unix socket ``path`` to nodes holding a token, for the identities they run."""

    def __init__(self, ca: CertificateAuthority, path: Path, tokens: NodeTokens, authorizer: NodeAuthorizer,
                 *, bundle_file: Path | None = None) -> None:
        self.ca = ca
        self.path = Path(path)
        self.tokens = tokens
        self.authorizer = authorizer
        #: When this file exists, its PEM is the bundle served instead of the CA's root.
        self.bundle_file = bundle_file
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None

    def bundle_pem(self) -> str:
        """The trust bundle served: the bundle file's certificates when it exists, else the CA's root."""
        if self.bundle_file is not None:
            try:
                return self.bundle_file.read_text(encoding="ascii")
            except FileNotFoundError:
                pass
        return self.ca.bundle.pem

    def start(self) -> CaServer:
        """Listen and serve in a background thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.path.unlink()
        server = _UnixServer(str(self.path), _Handler)
        os.chmod(self.path, 0o600)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="ca", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.path.exists():
            self.path.unlink()
