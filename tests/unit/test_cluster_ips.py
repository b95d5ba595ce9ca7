"""ClusterIPs assigned as the API server would, so manifests from a repository plan with frontends."""

from __future__ import annotations

import pytest

import meshcore
from meshcore.kube import ServiceRanges, assign_addresses, load_text
from meshcore.model import VipAssignment

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: a}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: given, namespace: a}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: dual, namespace: a}
spec: {ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: a}
spec: {clusterIP: None, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: external, namespace: a}
spec: {type: ExternalName, externalName: example.com}
---
apiVersion: v1
kind: Service
metadata: {name: bad, namespace: a}
spec: {clusterIP: banana, ports: [{port: 80}]}
"""


def _cluster_ips(text: str, ranges: ServiceRanges = ServiceRanges()) -> dict[str, object]:
    objects, diagnostics = load_text(text, "services.yaml")
    assert not diagnostics
    return {o.name: (o.spec.get("clusterIPs"), o.spec.get("ipFamilyPolicy")) for o in assign_addresses(objects, ranges)}


def test_services_without_clusterips_get_the_next_free_ones_of_their_families() -> None:
    assert _cluster_ips(SERVICES) == {
        "plain": (["10.96.0.11"], "SingleStack"),  # 10.96.0.10 is given to another Service
        "given": (["10.96.0.10"], "SingleStack"),
        "dual": (["10.96.0.12", "fd00:10:96::a"], "PreferDualStack"),
        "headless": (None, None),
        "external": (None, None),
        "bad": (None, None),  # left for translation to report
    }


def test_other_ranges_are_used_and_checked() -> None:
    ranges = ServiceRanges(ipv4="10.0.0.0/24", ipv6="fd00:1::/120")
    assert _cluster_ips(SERVICES, ranges)["dual"] == (["10.0.0.11", "fd00:1::a"], "PreferDualStack")
    with pytest.raises(ValueError, match="service IPv4 range: fd00::/64 is not an IPv4 network"):
        ServiceRanges(ipv4="fd00::/64")


def test_translate_assigns_addresses_on_request_and_keeps_positions() -> None:
    plain = meshcore.translate(text=SERVICES)
    assigned = meshcore.translate(text=SERVICES, assign_addresses=True)
    before = {s.name: (s.vips, s.vip_assignment) for s in plain.snapshot.services}
    after = {s.name: (s.vips, s.vip_assignment) for s in assigned.snapshot.services}
    assert before["plain"] == ((), VipAssignment.PENDING)
    assert after["plain"] == (("10.96.0.11",), VipAssignment.GIVEN)
    assert after["headless"] == before["headless"] == ((), VipAssignment.HEADLESS)
    # Diagnostics still point into the file, for assigned Services as for the others.
    found = {(d.source.name, d.code, d.source.line, d.field) for d in assigned.diagnostics}
    assert found == {(d.source.name, d.code, d.source.line, d.field) for d in plain.diagnostics} == {
        ("plain", "MC1004", 5, "spec.selector"), ("external", "MC1003", 26, "spec.type"),
        ("bad", "MC1006", 31, "spec.clusterIP")}


def test_a_full_range_is_reported_and_nothing_is_assigned() -> None:
    many = "".join(f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: a}}\n"
                   "spec: {ports: [{port: 80}]}\n" for i in range(6))
    result = meshcore.translate(text=many, assign_addresses=ServiceRanges(ipv4="10.0.0.0/28"))
    [warning] = result.diagnostics
    assert (warning.code, warning.severity) == ("MC0250", meshcore.Severity.WARNING)
    assert "the service range 10.0.0.0/28 is full" in warning.message
    assert {s.vip_assignment for s in result.snapshot.services} == {VipAssignment.PENDING}
