"""Authorization policies enforced by the node proxy's RBAC filters (peers by address)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _proxy_support import NS, ProxyEnv, backends, proxy_port, request, service, snapshot
from test_flows import collect

from meshcore import model as m
from meshcore.compile import Datapath, Plan
from meshcore.observe import Verdict

pytestmark = pytest.mark.envoy
Apply = Callable[[m.Snapshot], Plan]
CLIENT, STRANGER = "127.0.0.20", "127.0.0.21"


def _workload(name: str, address: str) -> m.Workload:
    return m.Workload(name, NS, m.Identity(NS, name), addresses=(address,), labels={"app": name})


def test_allow_deny_and_audit(apply: Apply, proxy_env: ProxyEnv) -> None:
    with backends("web") as (web,):
        svc = service("web", [web])
        web_only = m.WorkloadSelector(NS, {"app": "web"})
        allow = m.AuthorizationPolicy("clients-read", NS, web_only, "ALLOW", [m.PolicyRule(
            sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/client"])],
            operations=[m.Operation(methods=["GET", "HEAD"])],
        )])
        deny = m.AuthorizationPolicy("no-admin", NS, web_only, "DENY", [m.PolicyRule(
            operations=[m.Operation(paths=["/admin*"])],
        )], source=m.Source("AuthorizationPolicy", NS, "no-admin", "authz.yaml", 4))
        audit = m.AuthorizationPolicy("watch-orders", NS, web_only, "AUDIT", [m.PolicyRule(
            operations=[m.Operation(paths=["/orders"])],
        )])
        snap = snapshot([svc], [], [web.workload(), _workload("client", CLIENT), _workload("stranger", STRANGER)],
                        [allow, deny, audit])
        plan = apply(snap)
        (decision,) = plan.decisions
        assert decision.datapath is Datapath.ENVOY
        assert decision.reason.startswith("authorization policy shop/")
        port = proxy_port(plan, "web")
        with proxy_env.cp.subscribe_flows() as flows:
            assert request(port, "/orders", source=CLIENT).status == 200
            assert request(port, "/orders", method="POST", source=CLIENT).status == 403
            assert request(port, "/orders", source=STRANGER).status == 403
            denied = request(port, "/admin/users", source=CLIENT)
            assert (denied.status, denied.body) == (403, b"RBAC: access denied")
            got = collect(flows, "shop/web:80", 4)
        assert [f.l7.status for f in got if f.l7] == [200, 403, 403, 403]
        assert [f.verdict for f in got] == [Verdict.AUDIT, Verdict.DROPPED, Verdict.DROPPED, Verdict.DROPPED]
        assert got[3].l7 is not None and got[3].l7.details == "rbac_access_denied_matched_policy[shop/no-admin[0]]"
        assert (got[3].reason, got[3].policy) == ("policy-denied", "shop/no-admin")
        assert got[3].policy_source == f"authz.yaml:4 AuthorizationPolicy {NS}/no-admin", got[3]
        assert got[2].l7 is not None and got[2].l7.details == "rbac_access_denied_matched_policy[none]"
        assert [s["path"] for s in web.seen] == ["/orders"]
