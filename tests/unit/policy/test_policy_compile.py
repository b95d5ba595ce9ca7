"""Compile of L3/L4 policy: identities, ipcache, flattened entries, default deny, DENY wins."""

from __future__ import annotations

import socket

from meshcore.compile import (
    ANY_IDENTITY,
    ANY_PROTOCOL,
    CIDR_IDENTITY_BASE,
    CompileOptions,
    PolicyEndpoint,
    PolicyEntry,
    PolicyPlan,
    PolicyVerdict,
    compile_plan,
)
from meshcore.compile._policy import compile_policy, port_blocks
from meshcore.model import (
    FIRST_ALLOCATED_IDENTITY,
    AuthorizationPolicy,
    Direction,
    Identity,
    Backend,
    Condition,
    IpBlock,
    JwtRule,
    Namespace,
    Operation,
    PeerSelector,
    PolicyAction,
    PolicyRule,
    PortRange,
    RequestAuthentication,
    ReservedIdentity,
    Service,
    ServicePort,
    Snapshot,
    Workload,
    WorkloadRef,
    WorkloadSelector,
)

TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP


def wl(name: str, ns: str, app: str, addr: str, sa: str = "default") -> Workload:
    return Workload(name, ns, Identity(ns, sa), (addr,), {"app": app}, node="n1")


def pol(name: str, app: str, action: str, *rules: PolicyRule, direction: str = "ingress", ns: str = "a") -> AuthorizationPolicy:
    return AuthorizationPolicy(name, ns, WorkloadSelector(ns, {"app": app}), action, rules, direction)


WORKLOADS = (
    wl("web-1", "a", "web", "10.0.0.1"), wl("web-2", "a", "web", "10.0.0.2"),
    wl("db", "a", "db", "10.0.0.3"), wl("cli", "b", "cli", "fd00::4", sa="client"),
)


def verdict(plan: PolicyPlan, endpoint: int, direction: Direction, remote: int, proto: int, port: int) -> str:
    """What the kernel would decide from these entries (same algorithm, in Python)."""
    if remote in (ReservedIdentity.HOST, ReservedIdentity.NODE_PROXY):
        return "from-host"  # exempt before any lookup, as in bpf/policy.bpf.c
    hits = []
    for r in (remote, ANY_IDENTITY):
        for p in (proto, ANY_PROTOCOL):
            best: PolicyEntry | None = None
            for e in plan.entries:
                if (e.endpoint, e.direction, e.protocol, e.remote) != (endpoint, direction, p, r):
                    continue
                lo, hi = e.port_range
                if lo <= port <= hi and (best is None or e.port_bits > best.port_bits):
                    best = e
            if best:
                hits.append(best.verdict)
    if PolicyVerdict.DENY in hits:
        return "deny"
    if hits:
        return "allow"
    ep = next(e for e in plan.endpoints if e.identity == endpoint)
    dd = ep.ingress_default_deny if direction is Direction.INGRESS else ep.egress_default_deny
    return "default-deny" if dd else "default-allow"


def test_identities_stable_and_shared_by_same_labels() -> None:
    snap = Snapshot(workloads=WORKLOADS)
    plan = compile_policy(snap, "n1")
    again = compile_policy(Snapshot(workloads=tuple(reversed(WORKLOADS)) + (wl("x", "c", "x", "10.9.9.9"),)), "n1")
    ids = {e.workload.name: e.identity for e in plan.endpoints}
    assert ids["web-1"] == ids["web-2"] != ids["db"]
    assert all(FIRST_ALLOCATED_IDENTITY <= i < CIDR_IDENTITY_BASE for i in ids.values())
    assert {e.workload.name: e.identity for e in again.endpoints if e.workload.name in ids} == ids
    cache = {c.prefix: c.identity for c in plan.ipcache}
    assert cache["10.0.0.1/32"] == ids["web-1"] and cache["fd00::4/128"] == ids["cli"]


def test_allow_default_deny_and_deny_precedence() -> None:
    allow = pol("allow-web", "db", "ALLOW", PolicyRule(
        sources=[PeerSelector(workload_labels={"app": "web"})],
        operations=[Operation(ports=[PortRange(5432, 5433), PortRange.single(53, "UDP")])],
    ))
    deny = pol("deny-5433", "db", "DENY", PolicyRule(operations=[Operation(ports=[PortRange.single(5433)])]))
    plan = compile_plan(Snapshot(workloads=WORKLOADS, policies=(allow, deny)), "n1").policy
    ids = {e.workload.name: e.identity for e in plan.endpoints}
    db, web, cli = ids["db"], ids["web-1"], ids["cli"]
    ing = Direction.INGRESS
    assert verdict(plan, db, ing, web, TCP, 5432) == "allow"
    assert verdict(plan, db, ing, web, TCP, 5433) == "deny"
    assert verdict(plan, db, ing, web, UDP, 53) == "allow"
    assert verdict(plan, db, ing, web, TCP, 53) == "default-deny"
    assert verdict(plan, db, ing, cli, TCP, 5432) == "default-deny"
    assert verdict(plan, db, Direction.EGRESS, cli, TCP, 1) == "default-allow"
    assert verdict(plan, web, ing, cli, TCP, 1) == "default-allow"
    denied = [e for e in plan.entries if e.verdict is PolicyVerdict.DENY]
    origin = plan.origin(denied[0].policy_index)
    assert origin is not None and origin.policy == "a/deny-5433" and origin.action == "DENY"


def test_ip_blocks_with_except_and_namespace_labels() -> None:
    allow = pol("egress", "web", "ALLOW", PolicyRule(sources=[
        PeerSelector(ip_blocks=[IpBlock("192.168.0.0/16", ["192.168.1.0/24"])]),
        PeerSelector(namespace_labels={"team": "b"}),
    ]), direction="egress")
    snap = Snapshot(namespaces=[Namespace("a"), Namespace("b", {"team": "b"})], workloads=WORKLOADS, policies=[allow])
    plan = compile_policy(snap, "n1")
    cache = {c.prefix: c.identity for c in plan.ipcache}
    outer, inner = cache["192.168.0.0/16"], cache["192.168.1.0/24"]
    ids = {e.workload.name: e.identity for e in plan.endpoints}
    eg = Direction.EGRESS
    assert verdict(plan, ids["web-1"], eg, outer, TCP, 443) == "allow"
    assert verdict(plan, ids["web-1"], eg, inner, TCP, 443) == "default-deny"
    assert verdict(plan, ids["web-1"], eg, int(ReservedIdentity.WORLD), TCP, 443) == "default-deny"
    assert verdict(plan, ids["web-1"], eg, ids["cli"], UDP, 9) == "allow"
    assert verdict(plan, ids["web-1"], eg, ids["db"], UDP, 9) == "default-deny"


def test_l7_rules_split() -> None:
    allow = pol("l7", "db", "ALLOW", PolicyRule(operations=[Operation(ports=[PortRange.single(80)], methods=["GET"])]))
    deny = pol("l7d", "db", "DENY", PolicyRule(operations=[Operation(paths=["/admin"])]))
    plan = compile_policy(Snapshot(workloads=WORKLOADS, policies=[allow, deny]), "n1")
    assert {h.policy for h in plan.l7} == {"a/l7", "a/l7d"}
    db = plan.endpoint(WorkloadRef("a", "db"))
    assert db is not None
    proxy = int(ReservedIdentity.NODE_PROXY)
    # Only the node proxy is admitted on the ALLOW rule's port: a client dialling the pod
    # address directly would skip the method check, so it matches no ALLOW rule at L4.
    proxy_entries = [e for e in plan.entries if e.endpoint == db.identity and e.remote == proxy]
    assert [(e.port_range, e.verdict) for e in proxy_entries] == [((80, 80), PolicyVerdict.ALLOW)]
    assert verdict(plan, db.identity, Direction.INGRESS, proxy, TCP, 80) == "from-host"
    reasons = {h.policy: h.reason for h in plan.l7}
    assert "admits only the node proxy" in reasons["a/l7"]
    # The DENY rule on a path is applied at L4 without its path, as Istio does for TCP: it
    # denies more, never less (the node proxy, exempt in the datapath, applies it exactly).
    assert verdict(plan, db.identity, Direction.INGRESS, 999, TCP, 80) == "deny"
    assert verdict(plan, db.identity, Direction.INGRESS, 999, UDP, 53) == "deny"
    assert "without its L7 parts" in reasons["a/l7d"]


def test_l7_policies_admit_only_the_node_proxy_on_http_backend_ports() -> None:
    db = WORKLOADS[2]
    service = Service("db", "a", ["10.96.0.3"], [
        ServicePort(80, "HTTP", "http", [Backend("10.0.0.3", 8080, workload=db.ref)]),
        ServicePort(5432, "TCP", "pg", [Backend("10.0.0.3", 5432, workload=db.ref)]),
    ])
    deny = pol("no-admin", "db", "DENY", PolicyRule(
        sources=[PeerSelector(namespaces=["b"])], operations=[Operation(ports=[PortRange.single(8080)], paths=["/admin"])]))
    plan = compile_policy(Snapshot(workloads=WORKLOADS, services=[service], policies=[deny]), "n1")
    ids = {e.workload.name: e.identity for e in plan.endpoints}
    ing = Direction.INGRESS
    # HTTP port: only the node proxy, which checks the path; TCP port: untouched by the rule.
    assert verdict(plan, ids["db"], ing, ids["web-1"], TCP, 8080) == "deny"
    assert verdict(plan, ids["db"], ing, ids["web-1"], TCP, 5432) == "default-allow"
    origins = {plan.origin(e.policy_index).action for e in plan.entries  # type: ignore[union-attr]
               if e.endpoint == ids["db"] and e.verdict is PolicyVerdict.DENY}
    assert origins == {"PROXY-ONLY", "DENY"}, origins


def test_request_authentication_admits_only_the_node_proxy_on_http_backend_ports() -> None:
    db = WORKLOADS[2]
    service = Service("db", "a", ["10.96.0.3"], [
        ServicePort(80, "HTTP", "http", [Backend("10.0.0.3", 8080, workload=db.ref)]),
        ServicePort(5432, "TCP", "pg", [Backend("10.0.0.3", 5432, workload=db.ref)]),
    ])
    authn = RequestAuthentication("jwt", "a", WorkloadSelector("a", {"app": "db"}), [JwtRule("https://issuer.test")])
    plan = compile_policy(Snapshot(workloads=WORKLOADS, services=[service], request_authentications=[authn]), "n1")
    ids = {e.workload.name: e.identity for e in plan.endpoints}
    ing, proxy = Direction.INGRESS, int(ReservedIdentity.NODE_PROXY)
    # The JWT is checked by the node proxy: a client dialling the pod's HTTP port is refused,
    # the TCP port (no JWTs there) and other workloads are left alone.
    assert verdict(plan, ids["db"], ing, ids["cli"], TCP, 8080) == "deny"
    assert verdict(plan, ids["db"], ing, ids["cli"], TCP, 5432) == "default-allow"
    assert verdict(plan, ids["web-1"], ing, ids["cli"], TCP, 8080) == "default-allow"
    denied = next(e for e in plan.entries if e.verdict is PolicyVerdict.DENY)
    origin = plan.origin(denied.policy_index)
    assert origin is not None and (origin.policy, origin.action) == ("a/jwt", "PROXY-ONLY")
    assert proxy not in {e.remote for e in plan.entries if e.verdict is PolicyVerdict.DENY}
    assert any("8080" in h.reason for h in plan.l7 if h.policy == "a/jwt"), plan.l7


def test_port_blocks_cover_exactly() -> None:
    for lo, hi in ((0, 65535), (1, 65535), (80, 80), (1000, 2000), (32768, 60999)):
        covered: list[int] = []
        for start, bits in port_blocks(lo, hi):
            size = 1 << (16 - bits)
            assert start % size == 0
            covered.extend(range(start, start + size))
        assert covered == list(range(lo, hi + 1))
    assert len(port_blocks(1, 65535)) == 16


def test_allow_rule_with_l7_parts_admits_no_client_directly() -> None:
    allow = pol("get", "db", "ALLOW", PolicyRule(
        sources=[PeerSelector(namespaces=["b"])], operations=[Operation(ports=[PortRange.single(80)], methods=["GET"])]))
    plan = compile_policy(Snapshot(workloads=WORKLOADS, policies=[allow]), "n1")
    ids = {e.workload.name: e.identity for e in plan.endpoints}
    # cli (namespace b) is named by the rule, but the method can only be checked by the proxy.
    assert verdict(plan, ids["db"], Direction.INGRESS, ids["cli"], TCP, 80) == "default-deny"


def test_conditions_on_namespace_principal_and_port_are_enforced_in_the_kernel() -> None:
    deny = pol("no-b", "db", "DENY", PolicyRule(conditions=[Condition("source.namespace", ["b"])]))
    allow = pol("a-on-5432", "db", "ALLOW", PolicyRule(conditions=[
        Condition("source.principal", ["cluster.local/ns/a/sa/default"]), Condition("destination.port", ["5432"])]))
    plan = compile_policy(Snapshot(workloads=WORKLOADS, policies=[deny, allow]), "n1")
    ids = {e.workload.name: e.identity for e in plan.endpoints}
    ing = Direction.INGRESS
    # Only namespace b is denied (not every client, as dropping the condition would do).
    assert verdict(plan, ids["db"], ing, ids["cli"], TCP, 5432) == "deny"
    assert verdict(plan, ids["db"], ing, ids["web-1"], TCP, 5432) == "allow"
    assert verdict(plan, ids["db"], ing, ids["web-1"], TCP, 80) == "default-deny"
    assert not plan.l7


def test_a_condition_no_peer_can_satisfy_matches_nothing() -> None:
    allow = pol("none", "db", "ALLOW", PolicyRule(sources=[PeerSelector(namespaces=["a"])],
                                                  conditions=[Condition("source.namespace", ["b"])]))
    plan = compile_policy(Snapshot(workloads=WORKLOADS, policies=[allow]), "n1")
    ids = {e.workload.name: e.identity for e in plan.endpoints}
    for client in ("web-1", "cli"):
        assert verdict(plan, ids["db"], Direction.INGRESS, ids[client], TCP, 80) == "default-deny"


def test_gates_cover_every_workload_of_an_identity_and_spare_shared_tcp_targets() -> None:
    idle = Workload("db-0", "a", Identity("a", "default"), ("10.0.0.9",), {"app": "db"}, node="n1")
    db = WORKLOADS[2]
    service = Service("db", "a", ["10.96.0.3"], [
        ServicePort(80, "HTTP", "http", [Backend("10.0.0.3", 8080, workload=db.ref)]),
        ServicePort(81, "HTTP", "admin", [Backend("10.0.0.3", 9090, workload=db.ref)]),
        ServicePort(9000, "TCP", "raw", [Backend("10.0.0.3", 9090, workload=db.ref)]),
    ])
    authn = RequestAuthentication("jwt", "a", WorkloadSelector("a", {"app": "db"}), [JwtRule("https://issuer.test")])
    empty = RequestAuthentication("empty", "a", WorkloadSelector("a", {"app": "web"}))
    # db-0 (no service yet) sorts first and shares db's identity: the gate must still apply.
    web = Service("web", "a", ["10.96.0.1"], [
        ServicePort(80, "HTTP", "http", [Backend("10.0.0.1", 8080, workload=WORKLOADS[0].ref)])])
    snap = Snapshot(workloads=(idle, *WORKLOADS), services=[service, web], request_authentications=[authn, empty])
    plan = compile_policy(snap, "n1")
    ids = {e.workload.name: e.identity for e in plan.endpoints}
    assert ids["db-0"] == ids["db"]
    ing = Direction.INGRESS
    assert verdict(plan, ids["db"], ing, ids["cli"], TCP, 8080) == "deny"
    # 9090 is also the target of the TCP port 9000, which is not proxied as HTTP: not gated.
    assert verdict(plan, ids["db"], ing, ids["cli"], TCP, 9090) == "default-allow"
    # A RequestAuthentication without rules validates nothing and gates nothing.
    assert verdict(plan, ids["web-1"], ing, ids["cli"], TCP, 8080) == "default-allow"


def test_an_ip_block_selects_outside_peers_of_its_family_only() -> None:
    allow = pol("v4-out", "db", "ALLOW", PolicyRule(sources=[PeerSelector(ip_blocks=[IpBlock("0.0.0.0/0")])]))
    plan = compile_policy(Snapshot(workloads=WORKLOADS, policies=[allow]), "n1")
    cache = {c.prefix: c.identity for c in plan.ipcache}
    db = next(e.identity for e in plan.endpoints if e.workload.name == "db")
    ing = Direction.INGRESS
    assert verdict(plan, db, ing, cache["0.0.0.0/0"], TCP, 80) == "allow"
    assert verdict(plan, db, ing, cache["::/0"], TCP, 80) == "default-deny"


def test_a_gated_port_not_handed_to_the_proxy_says_its_connections_are_refused() -> None:
    db = WORKLOADS[2]
    headless = Service("db", "a", [], [ServicePort(80, "HTTP", "http", [Backend("10.0.0.3", 8080, workload=db.ref)])])
    authn = RequestAuthentication("jwt", "a", WorkloadSelector("a", {"app": "db"}), [JwtRule("https://issuer.test")])
    plan = compile_plan(Snapshot(workloads=WORKLOADS, services=[headless], request_authentications=[authn]),
                        "n1", CompileOptions(proxy_enabled=True))
    [decision] = plan.decisions
    assert "no virtual IP" in decision.reason and "refused" in decision.reason, decision.reason


def test_a_plan_keeps_its_items_in_their_own_order_whatever_order_they_come_in() -> None:
    entries = [PolicyEntry(e, d, p, r, 80, 16, v, 1) for e in (2, 1) for d in (Direction.EGRESS, Direction.INGRESS)
               for p in (17, 6) for r in (0, 5) for v in (PolicyVerdict.DENY, PolicyVerdict.ALLOW)]
    endpoints = [PolicyEndpoint(WorkloadRef(ns, name), 1) for ns in ("b", "a") for name in ("y", "x")]
    plan = PolicyPlan(entries=entries, endpoints=endpoints)
    # The order attrs defines for each item (what the maps' writes follow).
    assert list(plan.entries) == sorted(entries)
    assert list(plan.endpoints) == sorted(endpoints)
    assert PolicyPlan(entries=reversed(entries), endpoints=reversed(endpoints)) == plan
