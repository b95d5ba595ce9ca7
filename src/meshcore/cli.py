"""The ``meshcore`` command: one client of the public API."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from . import _extras
from . import _output as out
from ._translate import Translation, translate
from .compile import CompileOptions, Plan, compile_plan
from .model import Severity, to_data
from .observe import configure_logging
from .registry import SourceError, disabled_names, discover, read_source, source_names

_output_option = click.option(
    "-o", "--output", "fmt", type=click.Choice(out.FORMATS), default="table", show_default=True,
    help="Output format: a readable table, or JSON/YAML for machines.",
)
_files_option = click.option(
    "-f", "--filename", "files", multiple=True, metavar="PATH",
    help="A file, a directory (read recursively) or '-' for standard input; repeatable.",
)
_sources_option = click.option(
    "--from", "sources", multiple=True, metavar="SOURCE=ADDRESS",
    help="Also read objects from a config source, e.g. istiod=istiod.istio-system:15010 "
         "(installed sources are listed by `meshcore adapters`); repeatable.",
)
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
def adapters(fmt: str) -> None:
    """List installed adapters: name, distribution, version and the kinds they handle."""
    infos, errors = discover()
    off = sorted(disabled_names())
    if fmt != "table":
        out.dump({
            "adapters": [
                {"name": i.name, "distribution": i.distribution, "version": i.version,
                 "kinds": [{"apiVersion": k.api_version, "kind": k.kind} for k in i.kinds]}
                for i in infos
            ],
            "disabled": off,
            "sources": source_names(),
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
    con = out.console()
    con.print(out.table("Adapters", ("name", "distribution", "version", "kinds"), rows))
    if off:
        con.print(f"disabled by MESHCORE_DISABLE_ADAPTERS: {', '.join(off)}")
    sources = source_names()
    if sources:
        con.print(f"config sources (--from NAME=ADDRESS): {', '.join(sources)}")
    for e in errors:
        con.print(f"[bold red]adapter {e.name!r} ({e.distribution}) could not be loaded:[/] {e.message}")


def _run_translate(files: Sequence[str], sources: Sequence[str] = (), timeout: float = 10.0) -> Translation:
    if not files and not sources:
        raise click.UsageError("give the input with -f/--filename or --from SOURCE=ADDRESS")
    if sources:
        # A source's retries are debug detail; its final error is reported below.
        configure_logging(sys.stderr, logging.WARNING)
    objects = []
    for spec in sources:
        name, sep, address = spec.partition("=")
        if not sep or not name or not address:
            raise click.UsageError(f"--from {spec!r}: expected SOURCE=ADDRESS, e.g. istiod=istiod.istio-system:15010")
        try:
            objects += read_source(name, address, timeout)
        except SourceError as exc:
            raise click.ClickException(str(exc)) from None
    return translate(files, objects=objects)


def _print_diagnostics(result: Translation, fmt: str) -> None:
    if fmt == "table" and result.diagnostics:
        out.console(stderr=True).print(out.diagnostics_table(result.diagnostics))


@cli.command("translate")
@_files_option
@_sources_option
@_source_timeout_option
@_output_option
@click.option("--no-sources", is_flag=True, help="Leave out where each object came from.")
def translate_cmd(files: tuple[str, ...], sources: tuple[str, ...], source_timeout: float, fmt: str,
                  no_sources: bool) -> None:
    """Translate Kubernetes YAML/JSON into the mesh model (the Snapshot)."""
    result = _run_translate(files, sources, source_timeout)
    snap = result.snapshot
    if fmt != "table":
        out.dump({
            "hash": snap.content_hash,
            "snapshot": snap.to_data(with_sources=not no_sources),
            "diagnostics": [out.diagnostic_data(d) for d in result.diagnostics],
        }, fmt)
    else:
        con = out.console()
        con.print(out.table("Services", ("namespace", "name", "vips", "ports", "backends", "source"), (
            (s.namespace, s.name, ", ".join(s.vips) or "-",
             ", ".join(f"{p.port}/{p.protocol.value}" for p in s.ports),
             sum(len(p.backends) for p in s.ports), s.source)
            for s in snap.services)))
        con.print(out.table("Workloads", ("namespace", "name", "addresses", "identity", "labels"), (
            (w.namespace, w.name, ", ".join(w.addresses) or "-", w.identity.spiffe_id,
             ",".join(f"{k}={v}" for k, v in w.labels.items()))
            for w in snap.workloads)))
        for title, items in (("Route tables", snap.routes), ("Authorization policies", snap.policies)):
            if items:
                con.print(out.table(title, ("object", "source"), ((type(i).__name__, i.source) for i in items)))
        con.print(f"snapshot {snap.content_hash[:16]}: {len(snap.namespaces)} namespaces, "
                  f"{len(snap.workloads)} workloads, {len(snap.services)} services, "
                  f"{len(snap.routes)} route tables, {len(snap.policies)} policies")
    _print_diagnostics(result, fmt)
    sys.exit(0 if result.ok else 1)


@cli.command()
@_files_option
@_sources_option
@_source_timeout_option
@_output_option
def analyze(files: tuple[str, ...], sources: tuple[str, ...], source_timeout: float, fmt: str) -> None:
    """Report problems in the input; exit status 1 when any is an error."""
    result = _run_translate(files, sources, source_timeout)
    if fmt != "table":
        out.dump({"diagnostics": [out.diagnostic_data(d) for d in result.diagnostics]}, fmt)
    else:
        con = out.console()
        if result.diagnostics:
            con.print(out.diagnostics_table(result.diagnostics))
        counts = {s: sum(d.severity is s for d in result.diagnostics) for s in Severity}
        con.print(f"{counts[Severity.ERROR]} error(s), {counts[Severity.WARNING]} warning(s), "
                  f"{counts[Severity.INFO]} info; {len(result.objects)} object(s) read")
    sys.exit(0 if result.ok else 1)


@cli.command()
@click.option("-f", "--filename", "files", multiple=True, metavar="PATH",
              help="A file, a directory (read recursively) or '-' for standard input; repeatable.")
@click.option("--lab", "lab_name", default=None, metavar="NAME",
              help="Read a running lab's objects instead, with what its node's Envoy accepted.")
@_output_option
def status(files: tuple[str, ...], lab_name: str | None, fmt: str) -> None:
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
    if fmt != "table":
        out.dump({"statuses": statuses}, fmt)
    else:
        rows = []
        for s in statuses:
            conds = _conditions(s["status"])
            errors = "; ".join(s["status"].get("errors") or ())
            rows.append((s["kind"], f"{s['namespace']}/{s['name']}" if s["namespace"] else s["name"],
                         conds + (f": {errors}" if errors else "")))
        out.console().print(out.table("Status", ("kind", "object", "conditions"), rows))
    _print_diagnostics(result, fmt)
    rejected = any(not c.get("accepted", True) for c in live.values())
    sys.exit(0 if result.ok and not rejected else 1)


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
    """A plan as plain data."""
    return {
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
    }


@cli.command()
@_files_option
@_sources_option
@_source_timeout_option
@_output_option
@click.option("--node", default="", help="The node to compile for.")
def plan(files: tuple[str, ...], sources: tuple[str, ...], source_timeout: float, fmt: str, node: str) -> None:
    """Show what compile would do: frontends, backends with weights, eBPF or Envoy and why."""
    result = _run_translate(files, sources, source_timeout)
    compiled = compile_plan(result.snapshot, node, CompileOptions())
    if fmt != "table":
        out.dump(plan_data(compiled), fmt)
    else:
        con = out.console()
        decisions = {(d.service, d.port, d.protocol): d for d in compiled.decisions}
        rows = []
        for s in compiled.bpf.services:
            d = decisions[(s.service, s.port, s.protocol)]
            backends = " ".join(
                f"{b.address}:{b.port}" + (f"×{b.weight}" if b.weight != 1 else "")
                + ("(terminating)" if b.state.value == "terminating" else "")
                for b in s.backends
            ) or "(none: connections are refused)"
            rows.append((str(s.service), f"{s.vip}:{s.port}/{s.protocol}", d.datapath.value, backends, d.reason))
        con.print(out.table("Plan", ("service", "frontend", "datapath", "backends", "reason"), rows))
        without_vip = [d for d in compiled.decisions
                       if not any(s.service == d.service for s in compiled.bpf.services)]
        if without_vip:
            con.print(f"{len(without_vip)} service port(s) have no VIP (headless) and get no frontend")
    _print_diagnostics(result, fmt)
    sys.exit(0 if result.ok else 1)


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
    else:
        from .agent._cli import agent_command  # noqa: PLC0415 - the agent extra, checked above

        cli.add_command(agent_command)
    if _extras.missing("lab"):
        for name in ("lab", "demo", "observe"):
            cli.add_command(_needs_extra(name, "lab"))
        return
    from .lab._observe import observe  # noqa: PLC0415 - the lab extra, checked above
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
