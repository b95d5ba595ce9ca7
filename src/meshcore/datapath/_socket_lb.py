"""SocketLB: socket-level service load balancing on one node's cgroup, pinned in bpffs.

Applying a plan is a diff against what the maps hold (read once, then tracked): only
entries that differ are written, in an order that never exposes a half-written service.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from types import TracebackType

import attrs

from .. import model
from ..compile import BpfDiff, BpfPlan, BpfService
from . import _libbpf
from ._bpffs import default_pin_root, pins_on_bpffs
from ._cgroup import resolve_cgroup
from ._desired import Frontend, canonical, frontend, frontend_text, slot_counts, validate_service
from ._errors import DatapathError
from ._loader import BpfObject, map_info, object_path
from ._pins import NodePins
from ._types import STATE_CODES, STATE_NAMES, ApplyReport, BackendEntry, DatapathState, LbSettings, ServiceState
from .maps import ALL_SPECS, BpfMap, backends, services, slots

__all__ = ["SocketLB", "default_pin_root"]

OBJECT_NAME = "sock_lb"
_NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_MAX_ID = 0xFFFFFFFF


@attrs.define
class _SvcCache:
    id: int
    value: bytes


class SocketLB:
    """Socket-level load balancing for every process under one cgroup v2 directory.

    Entering opens the node's pinned maps and links under ``pin_root/node`` (loading and
    attaching the programs the first time); leaving closes handles only, so enforcement
    continues without this process. :meth:`destroy` detaches and removes the pins.
    """

    def __init__(
        self,
        node: str,
        cgroup: str | os.PathLike[str],
        pin_root: Path | None = None,
        *,
        settings: LbSettings | None = None,
        bpf_object: Path | None = None,
    ) -> None:
        if not _NODE_RE.match(node):
            raise DatapathError(
                f"node name {node!r} is not valid: use 1-63 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        self.node = node
        self.cgroup = Path(cgroup)
        self.pin_dir = Path(pin_root if pin_root is not None else default_pin_root()) / node
        self.pins = NodePins(node, self.pin_dir)
        self._requested_settings = settings
        self._bpf_object = bpf_object
        self.settings = settings or LbSettings()
        self._maps: dict[str, BpfMap] = {}  # type: ignore[type-arg]
        self._lock = threading.RLock()
        self._svc: dict[Frontend, _SvcCache] = {}
        self._backends: dict[int, dict[tuple[str, int], tuple[int, bytes]]] = {}
        self._slots: dict[int, dict[int, int]] = {}
        self._applied: dict[Frontend, BpfService] = {}
        self._by_key: dict[tuple[str, int, str], tuple[Frontend, BpfService]] = {}
        self._orphans: set[int] = set()
        self._n_backends = 0
        self._n_slots = 0
        self._capacity: dict[str, int] = {}
        self._next_service_id = 1
        self._next_backend_id = 1
        self._stale = True

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> SocketLB:
        self.open()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Attach (or re-open the pinned attachment) and read the maps' current state."""
        with self._lock:
            if self._maps:
                return
            cgroup = resolve_cgroup(self.cgroup)
            pins_on_bpffs(self.pin_dir)
            path = self._bpf_object or object_path(OBJECT_NAME)
            with BpfObject.open(path) as obj:
                for spec in ALL_SPECS:
                    obj.check_mirror(spec)
                loaded = self.pins.loaded_settings(obj)
                want = self._requested_settings or loaded or LbSettings()
                if self.pins.complete() and loaded == want:
                    self.pins.check_links(cgroup)
                else:
                    self.pins.attach(obj, cgroup, want)
                self.settings = want
            try:
                for spec in ALL_SPECS:
                    self._maps[spec.name] = self.pins.open_map(spec)
                self._recover()
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        """Close map handles; pinned programs keep enforcing."""
        with self._lock:
            for m in self._maps.values():
                m.close()
            self._maps = {}
            self._capacity = {}
            self._stale = True

    def destroy(self) -> None:
        """Detach the programs from the cgroup and remove every pin of this node."""
        with self._lock:
            self.close()
            self.pins.destroy()
            self._applied.clear()
            self._by_key.clear()

    def _need_open(self) -> None:
        if not self._maps:
            raise DatapathError(f"SocketLB for node {self.node} is not open: use it in a `with` block")

    # --- reading the kernel state ---------------------------------------------------------

    def _recover(self) -> None:
        """Rebuild the view of the maps (and id allocation) from the kernel."""
        self._svc, self._backends, self._slots = {}, {}, {}
        max_sid, max_bid = 0, 0
        for k, v in self._maps["lb_services"].items():
            self._svc[k.frontend()] = _SvcCache(int(v.id), bytes(v))
            max_sid = max(max_sid, int(v.id))
        for bk, bv in self._maps["lb_backends"].items():
            bid = int(bk.value)
            self._backends.setdefault(int(bv.service_id), {})[bv.endpoint()] = (bid, bytes(bv))
            max_bid = max(max_bid, bid)
            max_sid = max(max_sid, int(bv.service_id))
        for sk, sv in self._maps["lb_slots"].items():
            self._slots.setdefault(int(sk.service_id), {})[int(sk.slot)] = int(sv.value)
            max_sid = max(max_sid, int(sk.service_id))
        self._next_service_id = max(self._next_service_id, max_sid + 1)
        self._next_backend_id = max(self._next_backend_id, max_bid + 1)
        live = {c.id for c in self._svc.values()}
        self._orphans = (set(self._backends) | set(self._slots)) - live
        self._n_backends = sum(len(t) for t in self._backends.values())
        self._n_slots = sum(len(t) for t in self._slots.values())
        self._applied.clear()
        self._by_key.clear()
        self._stale = False

    def state(self) -> DatapathState:
        """Read every frontend, backend and slot back from the kernel maps."""
        with self._lock:
            self._need_open()
            frontends = {int(v.id): (k.frontend(), v) for k, v in self._maps["lb_services"].items()}
            members: dict[int, list[tuple[int, backends.BackendValue]]] = {}
            for bk, bv in self._maps["lb_backends"].items():
                members.setdefault(int(bv.service_id), []).append((int(bk.value), bv))
            tables: dict[int, dict[int, int]] = {}
            for sk, sv in self._maps["lb_slots"].items():
                tables.setdefault(int(sk.service_id), {})[int(sk.slot)] = int(sv.value)
            out = [
                _service_state(sid, fe, val, members.get(sid, []), tables.get(sid, {}))
                for sid, (fe, val) in frontends.items()
            ]
            return DatapathState(
                node=self.node, settings=self.settings,
                services=tuple(sorted(out, key=lambda s: s.key)),
                orphan_backends=sum(len(v) for k, v in members.items() if k not in frontends),
                orphan_slots=sum(len(v) for k, v in tables.items() if k not in frontends),
            )

    # --- applying plans -------------------------------------------------------------------

    def _alloc_service_id(self) -> int:
        # Ids only grow (recovery starts above every id found in any map), so they never
        # collide with a live service or with leftovers still to be cleaned up.
        sid = self._next_service_id
        if sid > _MAX_ID:
            raise DatapathError("service ids exhausted; destroy and re-create the node datapath")
        self._next_service_id = sid + 1
        return sid

    def _alloc_backend_id(self) -> int:
        bid = self._next_backend_id
        if bid > _MAX_ID:
            raise DatapathError("backend ids exhausted; destroy and re-create the node datapath")
        self._next_backend_id = bid + 1
        return bid

    def apply(self, plan: BpfPlan) -> ApplyReport:
        """Make the maps enforce exactly ``plan``, writing only entries that differ.

        Order per service: backends, then slots, then the service entry, then stale slots
        and backends; a removed service loses its entry before its slots and backends. A
        connection therefore never sees a service whose slots or backends are missing.
        Validation happens before any write; a failing write raises DatapathError and the
        next apply reconciles from what the kernel holds. Services equal to what this
        instance last applied are skipped without being re-examined.
        """
        with self._lock:
            self._prepare()
            families = self.settings.families()
            seen: dict[Frontend, BpfService] = {}
            changed: dict[Frontend, BpfService] = {}
            for svc in plan.services:
                hit = self._by_key.get(svc.key)
                if hit is not None and (hit[1] is svc or hit[1] == svc):
                    fe = hit[0]
                else:
                    validate_service(svc, families)
                    fe = frontend(svc)
                    changed[fe] = svc
                if fe in seen:
                    raise DatapathError(
                        f"service {svc.service}: frontend {frontend_text(fe)} is also used by {seen[fe].service}"
                    )
                seen[fe] = svc
            removed = [fe for fe in self._svc if fe not in seen]
            return self._write(changed, removed)

    def apply_diff(self, diff: BpfDiff) -> ApplyReport:
        """Apply only what ``diff`` (see :func:`meshcore.compile.diff_bpf`) adds, changes and
        removes, on top of what the maps hold: cost grows with the change, not the plan."""
        with self._lock:
            self._prepare()
            families = self.settings.families()
            changed: dict[Frontend, BpfService] = {}
            for svc in (*diff.added, *diff.changed):
                validate_service(svc, families)
                fe = frontend(svc)
                if fe in changed:
                    raise DatapathError(
                        f"service {svc.service}: frontend {frontend_text(fe)} is also used by {changed[fe].service}"
                    )
                changed[fe] = svc
            removed = []
            for svc in diff.removed:
                try:
                    fe = frontend(svc)
                except ValueError:
                    continue  # never valid, so never written
                if fe in self._svc and fe not in changed:
                    removed.append(fe)
            return self._write(changed, removed)

    def _prepare(self) -> None:
        self._need_open()
        if self._stale:
            self._recover()

    def _write(self, changed: dict[Frontend, BpfService], removed: list[Frontend]) -> ApplyReport:
        try:
            return self._write_entries(changed, removed)
        except _libbpf.BpfError as e:
            self._stale = True
            raise DatapathError(
                f"node {self.node}: applying the plan stopped part-way ({e}); no service was left "
                "half-written and the next apply reconciles from the maps"
            ) from e

    def _write_entries(self, changed: dict[Frontend, BpfService], removed: list[Frontend]) -> ApplyReport:
        smap, bmap, slmap = self._maps["lb_services"], self._maps["lb_backends"], self._maps["lb_slots"]

        # Work out every changed service first, so capacity problems surface before writing.
        work = []
        grow_backends = grow_slots = new_services = 0
        for fe, svc in changed.items():
            cur = self._svc.get(fe)
            if cur is None:
                new_services += 1
            sid = cur.id if cur else self._alloc_service_id()
            cur_b = self._backends.get(sid, {})
            new_b: dict[tuple[str, int], tuple[int, bytes]] = {}
            for b in svc.backends:
                ep = (canonical(b.address), b.port)
                bid = cur_b[ep][0] if ep in cur_b else self._alloc_backend_id()
                bval = backends.BackendValue.of(ep[0], ep[1], sid, b.weight, STATE_CODES[model.BackendState(b.state)])
                new_b[ep] = (bid, bytes(bval))
                grow_backends += ep not in cur_b
            new_slots: dict[int, int] = {}
            active = 0
            if svc.proxy_port is None:
                eps = sorted(new_b)
                weight = {
                    (canonical(b.address), b.port): b.weight if b.state == model.BackendState.ACTIVE else 0
                    for b in svc.backends
                }
                for ep, n in zip(eps, slot_counts([weight[ep] for ep in eps])):
                    active += n > 0
                    for _ in range(n):
                        new_slots[len(new_slots)] = new_b[ep][0]
            grow_slots += max(0, len(new_slots) - len(self._slots.get(sid, {})))
            svalue = services.ServiceValue(
                id=sid, slot_count=len(new_slots), backend_count=active,
                flags=services.FLAG_PROXY if svc.proxy_port is not None else 0,
                proxy_port=socket.htons(svc.proxy_port) if svc.proxy_port is not None else 0,
            )
            work.append((fe, sid, cur, new_b, new_slots, bytes(svalue)))
        self._check_capacity({
            "lb_services": len(self._svc) + new_services,
            "lb_backends": self._n_backends + grow_backends,
            "lb_slots": self._n_slots + grow_slots,
        })

        written = deleted = 0
        added: list[str] = []
        updated: list[str] = []
        gone: list[str] = []
        b_added: list[str] = []
        b_updated: list[str] = []
        b_removed: list[str] = []
        # 1. backends (new ids are unreachable until a slot points at them)
        for fe, sid, cur, new_b, _, _ in work:
            cache = self._backends.setdefault(sid, {})
            for ep, (bid, val) in new_b.items():
                old = cache.get(ep)
                if old == (bid, val):
                    continue
                bmap.update(backends.BackendId(bid), backends.BackendValue.from_buffer_copy(val))
                cache[ep] = (bid, val)
                written += 1
                if old is None:
                    self._n_backends += 1
                (b_updated if old else b_added).append(f"{frontend_text(fe)} -> {_ep_text(ep)}")
        # 2. slots within the new slot count
        for fe, sid, cur, _, new_slots, _ in work:
            table = self._slots.setdefault(sid, {})
            for idx, bid in new_slots.items():
                old_bid = table.get(idx)
                if old_bid == bid:
                    continue
                slmap.update(slots.SlotKey(sid, idx), slots.SlotValue(bid))
                table[idx] = bid
                written += 1
                if old_bid is None:
                    self._n_slots += 1
        # 3. service entries: from here on the new slot table is live
        for fe, sid, cur, _, _, sval in work:
            if cur is not None and cur.value == sval:
                continue
            smap.update(services.ServiceKey.of(*fe), services.ServiceValue.from_buffer_copy(sval))
            self._svc[fe] = _SvcCache(sid, sval)
            written += 1
            (updated if cur else added).append(frontend_text(fe))
        # 4. slots past the new count, then backends no slot can reach any more
        for fe, sid, cur, new_b, new_slots, _ in work:
            table = self._slots.get(sid, {})
            for idx in sorted(i for i in table if i not in new_slots):
                slmap.delete(slots.SlotKey(sid, idx))
                del table[idx]
                self._n_slots -= 1
                deleted += 1
            cache = self._backends.get(sid, {})
            for ep in [e for e in cache if e not in new_b]:
                bmap.delete(backends.BackendId(cache[ep][0]))
                del cache[ep]
                self._n_backends -= 1
                deleted += 1
                b_removed.append(f"{frontend_text(fe)} -> {_ep_text(ep)}")
            svc = changed[fe]
            old_svc = self._applied.get(fe)
            if old_svc is not None:
                self._by_key.pop(old_svc.key, None)
            self._applied[fe] = svc
            self._by_key[svc.key] = (fe, svc)
        # 5. removed services: entry first, then what it pointed to
        for fe in removed:
            sid = self._svc[fe].id
            smap.delete(services.ServiceKey.of(*fe))
            del self._svc[fe]
            old_svc = self._applied.pop(fe, None)
            if old_svc is not None:
                self._by_key.pop(old_svc.key, None)
            deleted += 1
            gone.append(frontend_text(fe))
            deleted += self._drop_tables(sid, fe, b_removed)
        # 6. leftovers of an interrupted apply found at recovery, unreachable from any service
        for sid in sorted(self._orphans):
            deleted += self._drop_tables(sid, None, b_removed)
        self._orphans.clear()
        return ApplyReport(
            services_added=tuple(added), services_updated=tuple(updated), services_removed=tuple(gone),
            backends_added=tuple(b_added), backends_updated=tuple(b_updated), backends_removed=tuple(b_removed),
            entries_written=written, entries_deleted=deleted,
        )

    def _drop_tables(self, sid: int, fe: Frontend | None, b_removed: list[str]) -> int:
        n = 0
        for idx in sorted(self._slots.pop(sid, {})):
            self._maps["lb_slots"].delete(slots.SlotKey(sid, idx))
            self._n_slots -= 1
            n += 1
        for ep, (bid, _) in self._backends.pop(sid, {}).items():
            self._maps["lb_backends"].delete(backends.BackendId(bid))
            self._n_backends -= 1
            n += 1
            if fe is not None:
                b_removed.append(f"{frontend_text(fe)} -> {_ep_text(ep)}")
        return n

    def _check_capacity(self, need: dict[str, int]) -> None:
        for name, n in need.items():
            cap = self._capacity.get(name)
            if cap is None:
                cap = self._capacity[name] = map_info(self._maps[name].fd).max_entries
            if n > cap:
                raise DatapathError(
                    f"node {self.node}: the plan needs {n} entries in map {name}, which holds {cap}; "
                    "nothing was written"
                )


def _service_state(
    sid: int, fe: Frontend, val: services.ServiceValue,
    members: list[tuple[int, backends.BackendValue]], table: dict[int, int],
) -> ServiceState:
    held: dict[int, int] = {}
    for idx, bid in table.items():
        if idx < val.slot_count:
            held[bid] = held.get(bid, 0) + 1
    entries = [
        BackendEntry(
            id=bid, address=bv.endpoint()[0], port=bv.endpoint()[1], weight=int(bv.weight),
            state=STATE_NAMES.get(int(bv.state), model.BackendState.ACTIVE), slots=held.get(bid, 0),
        )
        for bid, bv in members
    ]
    return ServiceState(
        vip=fe[0], port=fe[1], protocol=fe[2], id=sid,
        proxy_port=socket.ntohs(val.proxy_port) if val.flags & services.FLAG_PROXY else None,
        backends=tuple(sorted(entries, key=lambda b: (b.address, b.port))),
        slot_count=int(val.slot_count),
    )


def _ep_text(ep: tuple[str, int]) -> str:
    return f"[{ep[0]}]:{ep[1]}" if ":" in ep[0] else f"{ep[0]}:{ep[1]}"

