"""The ``meshcore`` command: one client of the public API."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import attrs
import click
from rich.markup import escape

from . import _extras
from . import _output as out
from . import _plan_tunnel
from ._codes import with_mtls
from ._translate import Translation, translate
from .compile import BpfService, CompileOptions, Plan, TunnelPlan, compile_plan
from .kube import ServiceRanges
from .model import BackendState, Service, ServiceRef, Severity, Snapshot, VipAssignment, to_data
from .observe import configure_logging
from .registry import ConfigSourceError, disabled_names, discover, read_config_source, config_source_names

_output_option = click.option(
    "-o", "--output", "fmt", type=click.Choice(out.FORMATS), default=None,
    help="Output format: table (the default on a terminal); text (the default otherwise: plain columns, "
         "one line per diagnostic); json or yaml; github (diagnostics as GitHub workflow annotations).",
)
_fail_on_option = click.option(
    "--fail-on", type=click.Choice(tuple(out.FAIL_ON)), default="error", show_default=True,
    help="Exit with status 1 when any diagnostic is at or above this severity.",
)
_files_option = click.option(
    "-f", "--filename", "files", multiple=True, metavar="PATH",
    help="A file, a directory (read recursively) or '-' for standard input; repeatable.",
)
_sources_option = click.option(
    "--from", "sources", multiple=True, metavar="SOURCE[=ADDRESS]",
    help="Also read objects from a config source, e.g. istiod=istiod.istio-system:15010, or kube "
         "(the API server of the kubeconfig's context) (installed sources are listed by `meshcore adapters`); "
         "repeatable.",
)


def _kube_options(command: Any) -> Any:
    """``--context`` and ``--kubeconfig``, which go with ``--from kube``."""
    command = click.option("--kubeconfig", default=None, metavar="FILE",
                           help="The kubeconfig for --from kube [default $KUBECONFIG, ~/.kube/config].")(command)
    return click.option("--context", default=None, help="The kubeconfig context for --from kube.")(command)

_source_timeout_option = click.option(
    "--source-timeout", default=10.0, show_default=True, metavar="SECONDS",
    help="How long to wait for each --from source.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="meshcore")
def cli() -> None:
    """meshcore: a sidecar-free service-mesh data plane (eBPF where possible, Envoy where necessary)."""


@cli.command()
@_output_option
def adapters(fmt: str | None) -> None:
    """List installed adapters: name, distribution, version and the kinds they handle."""
    infos, errors = discover()
    off = sorted(disabled_names())
    fmt = out.choose_format(fmt)
    if fmt in out.DATA_FORMATS:
        out.dump({
            "adapters": [
                {"name": i.name, "distribution": i.distribution, "version": i.version,
                 "kinds": [{"apiVersion": k.api_version, "kind": k.kind} for k in i.kinds]}
                for i in infos
            ],
            "disabled": off,
            "sources": config_source_names(),
            "errors": [{"name": e.name, "distribution": e.distribution, "message": e.message} for e in errors],
        }, fmt)
        return
    rows = []
    for i in infos:
        groups: dict[str, list[str]] = {}
        for k in i.kinds:
            groups.setdefault(k.kind, []).append(k.api_version.rpartition("/")[2])
        kinds = ", ".join(f"{kind} ({'/'.join(v)})" for kind, v in groups.items())
        rows.append((i.name, i.distribution, i.version, kinds))
    out.print_table(fmt, "Adapters", ("name", "distribution", "version", "kinds"), rows)
    if off:
        out.remark(fmt, f"disabled by MESHCORE_DISABLE_ADAPTERS: {', '.join(off)}")
    sources = config_source_names()
    if sources:
        out.remark(fmt, f"config sources (--from NAME=ADDRESS): {', '.join(sources)}")
    for e in errors:
        out.remark(fmt, f"[bold red]adapter {e.name!r} ({e.distribution}) could not be loaded:[/] {escape(e.message)}")


def _run_translate(files: Sequence[str], sources: Sequence[str] = (), timeout: float = 10.0,
                   assign_addresses: bool = False, context: str | None = None,
                   kubeconfig: str | None = None) -> Translation:
    if not files and not sources:
        raise click.UsageError("give the input with -f/--filename or --from SOURCE=ADDRESS")
    names = [spec.partition("=")[0] for spec in sources]
    if (context or kubeconfig) and "kube" not in names:
        raise click.UsageError("--context and --kubeconfig go with --from kube")
    if sources:
        # A source's retries are debug detail; its final error is reported below.
        configure_logging(sys.stderr, logging.WARNING)
    objects = []
    for spec in sources:
        name, sep, address = spec.partition("=")
        if not name or (sep and not address) or (not sep and name != "kube"):
            raise click.UsageError(f"--from {spec!r}: expected SOURCE=ADDRESS, e.g. istiod=istiod.istio-system:15010, "
                                   "or kube")
        options = {"context": context, "kubeconfig": kubeconfig} if name == "kube" and (context or kubeconfig) else {}
        try:
            objects += read_config_source(name, address, timeout, **options)
        except ConfigSourceError as exc:
            raise click.ClickException(str(exc)) from None
    return translate(files, objects=objects, assign_addresses=assign_addresses)


def _vips(service: Service) -> str:
    """A service's VIPs, or why it has none."""
    if service.vips:
        return ", ".join(service.vips)
    return {VipAssignment.PENDING: "assigned by the API server",
            VipAssignment.HEADLESS: "headless"}.get(service.vip_assignment, "none")


@cli.command("translate")
@_files_option
@_sources_option
@_kube_options
@_source_timeout_option
@_output_option
@click.option("--no-sources", is_flag=True, help="Leave out where each object came from.")
@_fail_on_option
def translate_cmd(files: tuple[str, ...], sources: tuple[str, ...], context: str | None, kubeconfig: str | None,
                  source_timeout: float, fmt: str | None, no_sources: bool, fail_on: str) -> None:
    """Translate Kubernetes YAML/JSON into the mesh model (the Snapshot)."""
    result = _run_translate(files, sources, source_timeout, context=context, kubeconfig=kubeconfig)
    snap = result.snapshot
    fmt = out.choose_format(fmt)
    if fmt in out.DATA_FORMATS:
        out.dump({
            "hash": snap.content_hash,
            "snapshot": snap.to_data(with_sources=not no_sources),
            "diagnostics": [out.diagnostic_data(d) for d in result.diagnostics],
        }, fmt)
    else:
        out.print_table(fmt, "Services", ("service", "vips", "ports", "backends", "source"), (
            (str(s.ref), _vips(s),
             ", ".join(f"{p.port}/{p.protocol.value}" for p in s.ports),
             sum(len(p.backends) for p in s.ports), s.source)
            for s in snap.services), keep=("service",))
        out.print_table(fmt, "Workloads", ("workload", "addresses", "identity", "labels"), (
            (str(w.ref), ", ".join(w.addresses) or "-", w.identity.spiffe_id,
             ",".join(f"{k}={v}" for k, v in w.labels.items()))
            for w in snap.workloads), keep=("workload",))
        for title, items in (("Route tables", snap.routes), ("Authorization policies", snap.policies)):
            if items:
                out.print_table(fmt, title, ("object", "source"), ((type(i).__name__, i.source) for i in items))
        out.remark(fmt, f"snapshot {snap.content_hash[:16]}: {len(snap.namespaces)} namespaces, "
                        f"{len(snap.workloads)} workloads, {len(snap.services)} services, "
                        f"{len(snap.routes)} route tables, {len(snap.policies)} policies")
        out.print_diagnostics(result.diagnostics, fmt, stderr=True)
    sys.exit(1 if out.fails(result.diagnostics, fail_on) else 0)


@cli.command()
@_files_option
@_sources_option
@_kube_options
@_source_timeout_option
@_output_option
@_fail_on_option
def analyze(files: tuple[str, ...], sources: tuple[str, ...], context: str | None, kubeconfig: str | None,
            source_timeout: float, fmt: str | None, fail_on: str) -> None:
    """Report problems in the input; exit status 1 when any is an error (see --fail-on)."""
    result = _run_translate(files, sources, source_timeout, context=context, kubeconfig=kubeconfig)
    fmt = out.choose_format(fmt)
    if fmt in out.DATA_FORMATS:
        out.dump({"diagnostics": [out.diagnostic_data(d) for d in result.diagnostics]}, fmt)
    else:
        out.print_diagnostics(result.diagnostics, fmt, stderr=False)
        counts = {s: sum(d.severity is s for d in result.diagnostics) for s in Severity}
        out.remark(fmt, f"{counts[Severity.ERROR]} error(s), {counts[Severity.WARNING]} warning(s), "
                        f"{counts[Severity.INFO]} info; {len(result.objects)} object(s) read")
    sys.exit(1 if out.fails(result.diagnostics, fail_on) else 0)


@cli.command()
@click.option("-f", "--filename", "files", multiple=True, metavar="PATH",
              help="A file, a directory (read recursively) or '-' for standard input; repeatable.")
@click.option("--lab", "lab_name", default=None, metavar="NAME",
              help="Read a running lab's objects instead, with what its node's Envoy accepted.")
@_output_option
@_fail_on_option
def status(files: tuple[str, ...], lab_name: str | None, fmt: str | None, fail_on: str) -> None:
    """Show the status adapters compute for their objects (conditions, as a controller writes back).

    With ``--lab``, raw Envoy configs the lab's node Envoy rejected show ``Accepted=False``
    with reason ``Rejected`` and Envoy's message.
    """
    if bool(files) == bool(lab_name):
        raise click.UsageError("give the input with -f/--filename or a running lab with --lab, not both")
    live: dict[tuple[Any, Any, Any], Any] = {}
    if lab_name:
        if absent := _extras.missing("lab"):
            raise click.ClickException(_extras.hint("lab", "meshcore status --lab", absent))
        from .lab import Lab, LabError  # noqa: PLC0415 - the lab extra, checked above

        try:
            target = Lab(lab_name)
            result = translate(objects=target.objects())
            live = {(c.kind, c.namespace, c.name): c.to_data() for c in target.status().agent.config_status}
        except LabError as exc:
            click.echo(f"meshcore: {exc}", err=True)
            sys.exit(1)
    else:
        result = _run_translate(files)
    statuses: list[dict[str, Any]] = [
        {"apiVersion": s.api_version, "kind": s.kind, "namespace": s.namespace, "name": s.name,
         "status": _with_live(dict(s.status), live.get((s.kind, s.namespace or "", s.name)))}
        for s in result.statuses
    ]
    fmt = out.choose_format(fmt)
    if fmt in out.DATA_FORMATS:
        out.dump({"statuses": statuses, "diagnostics": [out.diagnostic_data(d) for d in result.diagnostics]}, fmt)
    else:
        rows = []
        for s in statuses:
            conds = _conditions(s["status"])
            errors = "; ".join(s["status"].get("errors") or ())
            rows.append((s["kind"], f"{s['namespace']}/{s['name']}" if s["namespace"] else s["name"],
                         conds + (f": {errors}" if errors else "")))
        out.print_table(fmt, "Status", ("kind", "object", "conditions"), rows)
        out.print_diagnostics(result.diagnostics, fmt, stderr=True)
    rejected = any(not c.get("accepted", True) for c in live.values())
    sys.exit(1 if out.fails(result.diagnostics, fail_on) or rejected else 0)


def _with_live(status: dict[str, Any], live: Any) -> dict[str, Any]:
    """``status`` with ``Accepted`` False when the node's Envoy refused it (``Rejected``) or could not serve it."""
    if not isinstance(live, dict) or live.get("accepted", True):
        return status
    errors = [f"resource {e.get('resource')} ({e.get('type')} {e.get('name')}): {e.get('message')}"
              for e in live.get("errors") or ()]
    reason = str(live.get("reason") or "Rejected")
    why = errors[0] if errors else str(live.get("message") or "see the agent log")
    message = (f"the node's Envoy rejected this config: {why}" if reason == "Rejected"
               else f"the node cannot serve this config: {why}")
    refused = {"type": "Accepted", "status": "False", "reason": reason, "message": message}
    conditions = [c for c in status.get("conditions") or () if not (isinstance(c, dict) and c.get("type") == "Accepted")]
    for c in status.get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == "Accepted" and "observedGeneration" in c:
            refused["observedGeneration"] = c["observedGeneration"]
    return {**status, "conditions": [refused, *conditions], "errors": [*(status.get("errors") or ()), *errors,
                                                                       *([] if errors else [message])]}


def _conditions(status: Any) -> str:
    """``Type=Status(Reason)`` for every condition found anywhere in a status stanza."""
    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for cond in node.get("conditions", []) or []:
                if isinstance(cond, dict):
                    found.append(f"{prefix}{cond.get('type')}={cond.get('status')}({cond.get('reason')})")
            for key, value in node.items():
                if key != "conditions" and isinstance(value, list):
                    for item in value:
                        label = item.get("name") or item.get("parentRef", {}).get("name", "") if isinstance(item, dict) else ""
                        walk(item, f"{prefix}{label}: " if label else prefix)
    walk(status, "")
    return "; ".join(found) or "-"


def plan_data(plan: Plan) -> dict[str, Any]:
    """A plan as plain data (with ``mtls``, its tunnels, when compiled with mutual TLS)."""
    data = {
        "node": plan.node,
        "snapshot": plan.snapshot_hash,
        "decisions": [
            {"service": str(d.service), "port": d.port, "protocol": d.protocol,
             "datapath": d.datapath.value, "reason": d.reason, "source": str(d.source)}
            for d in plan.decisions
        ],
        "bpf": {"services": [
            {"service": str(s.service), "vip": s.vip, "port": s.port, "protocol": s.protocol,
             "proxy_port": s.proxy_port,
             "backends": [to_data(b) for b in s.backends]}
            for s in plan.bpf.services
        ]},
        "workloads": [
            {"workload": str(m.workload), "mode": m.mode.value, "reason": m.reason, "source": str(m.source)}
            for m in plan.modes
        ],
        "sidecars": [
            {"workload": str(sc.workload), "serving": sc.serving,
             "serves": [f"{o.service}:{o.port}" for o in sc.outbound],
             "passes": [{"service": f"{p.service}:{p.port}", "reason": p.reason} for p in sc.passed],
             "checks": [listener.port for listener in sc.inbound]}
            for sc in plan.sidecars
        ],
    }
    if plan.tunnel is not None:
        data["mtls"] = _plan_tunnel.tunnel_data(plan.tunnel)
    return data


@cli.command()
@_files_option
@_sources_option
@_kube_options
@_source_timeout_option
@_output_option
@_fail_on_option
@click.option("--node", default="", help="The node to compile for.")
@click.option("--assign-addresses", is_flag=True,
              help="Give Services without ClusterIPs addresses first, as the lab does "
                   f"(from {ServiceRanges().ipv4} and {ServiceRanges().ipv6}).")
@click.option("--mtls", is_flag=True,
              help="Compile as a node agent running mutual TLS does (--ca-socket): show identities, "
                   "peer-authentication modes, the destinations tunnelled and the egress refused in the tunnels. "
                   "Needs --node.")
def plan(files: tuple[str, ...], sources: tuple[str, ...], context: str | None, kubeconfig: str | None,
         source_timeout: float, fmt: str | None, fail_on: str, node: str, assign_addresses: bool,
         mtls: bool) -> None:
    """Show what a node with the node proxy would do: per service port, eBPF or Envoy and why, and the backends;
    per workload, its proxy mode and why.

    Services read from files have no ClusterIPs until the API server assigns them; their
    ports are listed without frontends unless --assign-addresses assigns them here.
    """
    if mtls and not node:
        raise click.UsageError("--mtls needs --node NAME: tunnels run between nodes, so the plan is that of one node "
                               "(its workloads, and the destinations on other nodes its clients reach)")
    result = _run_translate(files, sources, source_timeout, assign_addresses, context, kubeconfig)
    if mtls:
        result = attrs.evolve(result, diagnostics=tuple(with_mtls(result.diagnostics)))
    compiled = compile_plan(result.snapshot, node, CompileOptions(mtls=mtls))
    fmt = out.choose_format(fmt)
    if fmt in out.DATA_FORMATS:
        out.dump({**plan_data(compiled), "diagnostics": [out.diagnostic_data(d) for d in result.diagnostics]}, fmt)
    else:
        out.print_table(fmt, "Plan", ("service", "port", "addresses", "datapath", "backends", "reason"),
                        _plan_rows(result.snapshot, compiled, _unaddressed_pods(result)),
                        keep=("service", "port", "datapath"))
        out.print_table(fmt, "Proxy modes", ("workload", "mode", "why"),
                        [(str(m.workload), m.mode.value, m.reason) for m in compiled.modes],
                        keep=("workload", "mode"))
        if compiled.sidecars:
            out.print_table(fmt, "Sidecars", ("workload", "service port", "handled by", "why"),
                            _sidecar_rows(compiled), keep=("workload", "service port", "handled by"))
        pending = [s for s in result.snapshot.services if s.vip_assignment is VipAssignment.PENDING]
        if pending:
            out.remark(fmt, f"{len(pending)} service(s) have no ClusterIPs yet, so no frontends: "
                            "--assign-addresses assigns them as the lab does")
        if compiled.tunnel is not None:
            _print_tunnel(fmt, result.snapshot, compiled.tunnel, node)
        out.print_diagnostics(result.diagnostics, fmt, stderr=True)
    sys.exit(1 if out.fails(result.diagnostics, fail_on) else 0)


def _print_tunnel(fmt: str, snapshot: Snapshot, tunnel: TunnelPlan, node: str) -> None:
    """The Mutual TLS section: the node's identities and modes, the destinations tunnelled, the egress refused."""
    if tunnel.workloads:
        out.print_table(fmt, "Mutual TLS", ("workload", "identity", "ports", "mode", "set by"),
                        _plan_tunnel.mode_rows(tunnel), keep=("workload", "ports", "mode"))
    else:
        out.remark(fmt, f"Mutual TLS: no meshed workload with an address runs on node {escape(node)}")
    if tunnel.destinations:
        out.print_table(fmt, "Tunnels", ("destination", "ports", "workload", "path"),
                        _plan_tunnel.destination_rows(tunnel, node), keep=("destination", "ports", "path"))
    refusals = _plan_tunnel.refusal_rows(tunnel)
    if refusals:
        out.print_table(fmt, "Egress refused in the tunnels", ("client", "destination", "ports", "policy", "written at"),
                        refusals, keep=("client", "destination", "ports"))
    for other in _plan_tunnel.untunnelled_nodes(snapshot):
        out.remark(fmt, f"node {escape(other)} has no addresses (no Node object in the input): "
                        "its meshed workloads are not reached through tunnels")


def _sidecar_rows(compiled: Plan) -> list[tuple[str, ...]]:
    """Per sidecar and service port: whether the sidecar serves it or passes it to the node proxy, and why."""
    rows: list[tuple[str, ...]] = []
    for sc in compiled.sidecars:
        rows += [(str(sc.workload), f"{o.service}:{o.port}", "sidecar", "") for o in sc.outbound]
        rows += [(str(sc.workload), f"{p.service}:{p.port}", "node proxy", p.reason) for p in sc.passed]
        rows += [(str(sc.workload), f"own port {listener.port}", "sidecar", "checks its L7 policy or tokens")
                 for listener in sc.inbound]
    return rows


def _unaddressed_pods(result: Translation) -> dict[ServiceRef, int]:
    """Per Service read with a selector: how many of the pods it selects have no address (not running yet)."""
    waiting = [w for w in result.snapshot.workloads if not w.addresses]
    found: dict[ServiceRef, int] = {}
    for obj in result.objects:
        selector = obj.spec.get("selector") if obj.api_version == "v1" and obj.kind == "Service" else None
        if not isinstance(selector, dict) or not selector:
            continue
        count = sum(1 for w in waiting if w.namespace == obj.namespace
                    and all(w.labels.get(str(k)) == str(v) for k, v in selector.items()))
        if count:
            found[ServiceRef(obj.namespace, obj.name)] = count
    return found


def _no_backends(service: Service | None, unaddressed: int) -> str:
    """Why a service port lists no backends."""
    if unaddressed:
        pods = "its pod has" if unaddressed == 1 else f"its {unaddressed} pods have"
        return f"(none yet: {pods} no address until running)"
    if service is not None and service.vip_assignment is VipAssignment.HEADLESS:
        return "(none; headless: no VIP, no frontend)"
    return "(none: connections are refused)"


def _plan_rows(snapshot: Snapshot, compiled: Plan,
               unaddressed: dict[ServiceRef, int] | None = None) -> list[tuple[str, ...]]:
    """One row per service port: service, port, addresses (or why none), datapath, backends (or why none), reason."""
    frontends: dict[tuple[ServiceRef, int, str], list[BpfService]] = {}
    for f in compiled.bpf.services:
        frontends.setdefault((f.service, f.port, f.protocol), []).append(f)
    rows: list[tuple[str, ...]] = []
    for d in compiled.decisions:
        service = snapshot.service(d.service)
        fronts = frontends.get((d.service, d.port, d.protocol), [])
        if fronts:
            backends = [(b.address, b.port, b.weight, b.state) for f in fronts for b in f.backends]
        else:
            # No frontend (no VIP yet, or none): the port's own backends, as a frontend would take them.
            port = service.port(d.port, d.protocol) if service else None
            backends = [(b.address, b.port, b.weight, b.state) for b in (port.backends if port else ())
                        if b.weight > 0 or b.state is BackendState.TERMINATING]
        shown = " ".join(
            (f"[{address}]:{number}" if ":" in address else f"{address}:{number}")
            + (f"×{weight}" if weight != 1 else "")
            + ("(terminating)" if state is BackendState.TERMINATING else "")
            for address, number, weight, state in backends
        ) or _no_backends(service, (unaddressed or {}).get(d.service, 0))
        rows.append((str(d.service), f"{d.port}/{d.protocol}", _vips(service) if service else "none",
                     d.datapath.value, shown, d.reason))
    return rows


def _needs_extra(name: str, extra: str) -> click.Command:
    """A stand-in for command ``name`` that says which extra installs it."""
    absent = _extras.missing(extra)

    def refuse() -> None:
        raise click.ClickException(_extras.hint(extra, f"meshcore {name}", absent))

    return click.Command(
        name, callback=refuse, help=f"(not installed: pip install 'meshcore[{extra}]')",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


def _register_optional_groups() -> None:
    """Add the commands that need an extra (the node agent, the lab, the demo), or stand-ins naming it."""
    if _extras.missing("agent"):
        cli.add_command(_needs_extra("agent", "agent"))
        cli.add_command(_needs_extra("ca", "agent"))
    else:
        from .agent._cli import agent_command  # noqa: PLC0415 - the agent extra, checked above

        cli.add_command(agent_command)
        from .identity._cli import ca_command  # noqa: PLC0415 - the agent extra (cryptography), checked above

        cli.add_command(ca_command)
    if _extras.missing("lab"):
        for name in ("lab", "demo", "observe"):
            cli.add_command(_needs_extra(name, "lab"))
        return
    from .lab._observe_command import observe  # noqa: PLC0415 - the lab extra, checked above
    from .lab.cli import demo, lab  # noqa: PLC0415

    cli.add_command(lab)
    cli.add_command(demo)
    cli.add_command(observe)


_register_optional_groups()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI; internal errors are reported without a traceback."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="meshcore", standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the last line of defence: no traceback reaches the user
        if os.environ.get("MESHCORE_DEBUG"):
            traceback.print_exc()
        click.echo(f"meshcore: internal error: {type(exc).__name__}: {exc} "
                   "(set MESHCORE_DEBUG=1 for the traceback)", err=True)
        sys.exit(70)


if __name__ == "__main__":
    main()
