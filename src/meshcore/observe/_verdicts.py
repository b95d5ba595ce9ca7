"""The kernel's verdict records and flow sums, decoded into :class:`Flow` with a node's name tables.

Records stay raw bytes wherever they are kept (the agent's ring, the journal) and are
decoded only when read, with the :class:`KernelNames` in force when they were taken, so
reading needs neither libbpf nor the plan. The layouts are those of ``struct pol_event``
and :data:`SUM_RECORD` (a ``struct pol_flow_key`` with its count and time); the datapath
checks them against its BTF-checked mirrors.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from ..model import Direction, WorkloadRef
from ._flow import Enforcer, Flow, Layer, Peer, Verdict

__all__ = ["EVENT_RECORD", "REASONS", "SUM_RECORD", "VERDICTS", "KernelNames", "decode_events", "decode_sums",
           "event_keys"]

#: ``struct pol_event``: ts_ns, saddr, daddr, src/dst identity, policy index, ifindex,
#: sport, dport (network order), proto, verdict, reason, direction.
EVENT_RECORD = struct.Struct("<Q16s16sIIIIHHBBBB")
#: A flow sum: the interval's end (monotonic ns), the ``struct pol_flow_key`` fields
#: (src/dst identity, policy index, ifindex, dport in network order, proto, direction,
#: verdict, reason, pad) and the flows counted.
SUM_RECORD = struct.Struct("<QIIIIHBBBBHQ")

#: Must match POL_FORWARDED / POL_DROPPED in bpf/policy.h.
VERDICTS = {1: Verdict.FORWARDED, 2: Verdict.DROPPED}
#: Must match POL_R_* in bpf/policy.h.
REASONS = {
    1: "policy-allowed",
    2: "no-policy",
    3: "policy-denied",
    4: "default-deny",
    5: "spoofed-source",
    6: "unknown-endpoint",
    7: "from-host",
}
_DIRECTIONS = {1: Direction.INGRESS, 2: Direction.EGRESS}
_PROTOCOLS = {socket.IPPROTO_TCP: "TCP", socket.IPPROTO_UDP: "UDP", socket.IPPROTO_ICMP: "ICMP",
              socket.IPPROTO_ICMPV6: "ICMPv6", socket.IPPROTO_SCTP: "SCTP"}
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"


def _workload(text: str) -> WorkloadRef | None:
    namespace, _, name = text.partition("/")
    return WorkloadRef(namespace, name) if namespace and name else None


def _address(raw: bytes) -> str:
    if raw[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    import ipaddress  # noqa: PLC0415 - IPv6 only: the forms the plans use, not glibc's ::a.b.c.d

    return str(ipaddress.IPv6Address(raw))


@attrs.frozen
class KernelNames:
    """What a node's kernel verdicts are decoded with: its names for identities, addresses,
    interfaces and policies when the records were taken, in a JSON-able form.

    ``identities``: numeric identity → namespace; ``addresses``: workload address →
    ``ns/name``; ``interfaces``: host-side ifindex → ``ns/name``; ``origins``: policy index →
    (policy text, source); ``default_deny``: ``ns/name`` → direction → (the ALLOW policies'
    text, the first one's source); ``clock_offset_ns``: wall clock minus the monotonic clock
    the kernel stamps records with.
    """

    identities: Mapping[int, str] = attrs.field(factory=dict)
    addresses: Mapping[str, str] = attrs.field(factory=dict)
    interfaces: Mapping[int, str] = attrs.field(factory=dict)
    origins: Mapping[int, tuple[str, str]] = attrs.field(factory=dict)
    default_deny: Mapping[str, Mapping[str, tuple[str, str]]] = attrs.field(factory=dict)
    clock_offset_ns: int = 0

    def to_data(self) -> dict[str, Any]:
        """The tables as JSON data (see :meth:`from_data`)."""
        return {"identities": {str(k): v for k, v in self.identities.items()}, "addresses": dict(self.addresses),
                "interfaces": {str(k): v for k, v in self.interfaces.items()},
                "origins": {str(k): list(v) for k, v in self.origins.items()},
                "defaultDeny": {k: {d: list(t) for d, t in v.items()} for k, v in self.default_deny.items()},
                "clockOffsetNs": self.clock_offset_ns}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> KernelNames:
        """Tables from :meth:`to_data`'s form."""
        return cls({int(k): str(v) for k, v in dict(data.get("identities") or {}).items()},
                   {str(k): str(v) for k, v in dict(data.get("addresses") or {}).items()},
                   {int(k): str(v) for k, v in dict(data.get("interfaces") or {}).items()},
                   {int(k): (str(v[0]), str(v[1])) for k, v in dict(data.get("origins") or {}).items()},
                   {str(k): {str(d): (str(t[0]), str(t[1])) for d, t in dict(v).items()}
                    for k, v in dict(data.get("defaultDeny") or {}).items()},
                   int(data.get("clockOffsetNs") or 0))

    def time(self, ts_ns: int) -> datetime:
        """A kernel timestamp on the wall clock."""
        return datetime.fromtimestamp((ts_ns + self.clock_offset_ns) / 1e9, tz=UTC)

    def peer(self, address: str, port: int, identity: int) -> Peer:
        """One end of a flow, named by address when it is a workload's."""
        pod = _workload(self.addresses.get(address, ""))
        namespace = pod.namespace if pod is not None else self.identities.get(identity, "")
        return Peer(address, port, pod, namespace, identity)

    def policy(self, index: int, reason: str, local: WorkloadRef | None,
               direction: Direction | None) -> tuple[str, str]:
        """The deciding policy's text and source: the rule that matched, or for a default deny
        the ALLOW policies that selected the endpoint."""
        if index:
            return self.origins.get(index, ("", ""))
        if reason == "default-deny" and local is not None and direction is not None:
            return self.default_deny.get(str(local), {}).get(direction.value, ("", ""))
        return "", ""


def _records(raw: bytes, layout: struct.Struct) -> Iterator[tuple[Any, ...]]:
    usable = len(raw) - len(raw) % layout.size
    return layout.iter_unpack(raw[:usable] if usable != len(raw) else raw)


def decode_events(raw: bytes, names: KernelNames, node: str) -> list[Flow]:
    """The flows of concatenated ``struct pol_event`` records (a trailing partial record is ignored)."""
    out = []
    for (ts, saddr, daddr, src_id, dst_id, index, _ifindex, sport, dport, proto, verdict_code, reason_code,
         direction_code) in _records(raw, EVENT_RECORD):
        verdict = VERDICTS.get(verdict_code)
        if verdict is None:
            continue  # a record of another program version
        source = names.peer(_address(saddr), socket.ntohs(sport), src_id)
        destination = names.peer(_address(daddr), socket.ntohs(dport), dst_id)
        reason = REASONS.get(reason_code, str(reason_code))
        direction = _DIRECTIONS.get(direction_code)
        local = source if direction is Direction.EGRESS else destination
        policy, policy_source = names.policy(index, reason, local.workload, direction)
        out.append(Flow(time=names.time(ts), node=node, layer=Layer.L4, verdict=verdict, enforcer=Enforcer.KERNEL,
                        source=source, destination=destination, protocol=_PROTOCOLS.get(proto, str(proto)),
                        direction=direction, reason=reason, policy=policy, policy_source=policy_source))
    return out


def decode_sums(raw: bytes, names: KernelNames, node: str) -> list[Flow]:
    """The summary flows of concatenated :data:`SUM_RECORD` records."""
    out = []
    for (ts, src_id, dst_id, index, ifindex, dport, proto, direction_code, verdict_code, reason_code, _pad,
         flows) in _records(raw, SUM_RECORD):
        verdict = VERDICTS.get(verdict_code)
        if verdict is None or not flows:
            continue
        direction = _DIRECTIONS.get(direction_code)
        local = _workload(names.interfaces.get(ifindex, ""))
        local_identity = src_id if direction is Direction.EGRESS else dst_id
        remote_identity = dst_id if direction is Direction.EGRESS else src_id
        here = Peer("", 0, local, local.namespace if local else names.identities.get(local_identity, ""),
                    local_identity)
        there = Peer("", 0, None, names.identities.get(remote_identity, ""), remote_identity)
        source, destination = (here, there) if direction is Direction.EGRESS else (there, here)
        destination = attrs.evolve(destination, port=socket.ntohs(dport))
        reason = REASONS.get(reason_code, str(reason_code))
        policy, policy_source = names.policy(index, reason, local, direction)
        out.append(Flow(time=names.time(ts), node=node, layer=Layer.L4, verdict=verdict, enforcer=Enforcer.KERNEL,
                        source=source, destination=destination, protocol=_PROTOCOLS.get(proto, str(proto)),
                        direction=direction, reason=reason, policy=policy, policy_source=policy_source,
                        count=int(flows), summary=True))
    return out


def event_keys(raw: bytes) -> Iterator[tuple[int, int, int]]:
    """(verdict, reason, direction) codes of each ``struct pol_event`` record, for counting without decoding."""
    size = EVENT_RECORD.size
    whole = raw[:len(raw) - len(raw) % size]
    # Strided slices pick one byte of every record in C, not a Python step per record.
    return zip(whole[61::size], whole[62::size], whole[63::size])
