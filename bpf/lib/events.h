/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Verdicts to user space: one event per new flow and per dropped packet, through the ring
 * buffer. Allowed flows past the rate pol_settings sets, and any verdict the ring buffer has
 * no room for, are counted per identity pair, port and verdict in pol_flow_sums instead, so
 * a busy node costs the agent a read per interval, not a record per connection. Nothing
 * here ever holds a packet back.
 */
#ifndef MESHCORE_LIB_EVENTS_H
#define MESHCORE_LIB_EVENTS_H

#include "addr.h"
#include "pkt.h"
#include "pol_maps.h"

#define POL_NS_PER_SEC 1000000000ULL

static __always_inline void event_stat(__u32 index)
{
	__u64 *count = bpf_map_lookup_elem(&pol_event_stats, &index);

	if (count)
		*count += 1;
}

/* True when this CPU may still send an allowed flow's event in the current second. */
static __always_inline int event_budget_take(__u64 now)
{
	__u32 zero = 0;
	struct pol_settings *settings = bpf_map_lookup_elem(&pol_settings, &zero);
	struct pol_event_budget *budget;
	__u32 limit;

	if (!settings || !(settings->flags & POL_SET_LIMIT_ALLOWED))
		return 1;
	limit = settings->allowed_events_per_cpu;
	budget = bpf_map_lookup_elem(&pol_event_budget, &zero);
	if (!budget)
		return 1;
	if (now - budget->window_ns >= POL_NS_PER_SEC) {
		budget->window_ns = now;
		budget->used = 0;
	}
	if (budget->used >= limit)
		return 0;
	budget->used += 1;
	return 1;
}

/* Count one flow under its identity pair, port and verdict (per CPU: no atomics). */
static __always_inline void flow_sum_add(const struct pkt *p, __u32 ifindex, __u32 src_id, __u32 dst_id,
					 __u8 dir, __u8 verdict, __u8 reason, __u32 index)
{
	struct pol_flow_key key = {
		.src_identity = src_id,
		.dst_identity = dst_id,
		.policy_index = index,
		.ifindex = ifindex,
		.dport = p->dport,
		.proto = p->proto,
		.direction = dir,
		.verdict = verdict,
		.reason = reason,
	};
	struct pol_flow_sum one = { .flows = 1 }, *sum;

	sum = bpf_map_lookup_elem(&pol_flow_sums, &key);
	if (sum) {
		sum->flows += 1;
		return;
	}
	if (bpf_map_update_elem(&pol_flow_sums, &key, &one, BPF_NOEXIST) == 0)
		return;
	/* Another CPU created the entry meanwhile (each CPU counts in its own slot), or the map is full. */
	sum = bpf_map_lookup_elem(&pol_flow_sums, &key);
	if (sum)
		sum->flows += 1;
	else
		event_stat(POL_STAT_LOST);
}

static __always_inline void flow_report(const struct pkt *p, __u32 ifindex, __u32 src_id, __u32 dst_id,
					__u8 dir, __u8 verdict, __u8 reason, __u32 index, __u64 now)
{
	struct pol_event *e;

	if (verdict == POL_FORWARDED && !event_budget_take(now)) {
		event_stat(POL_STAT_SAMPLED);
		flow_sum_add(p, ifindex, src_id, dst_id, dir, verdict, reason, index);
		return;
	}
	e = bpf_ringbuf_reserve(&pol_events, sizeof(*e), 0);
	if (!e) {
		event_stat(POL_STAT_RING_FULL);
		flow_sum_add(p, ifindex, src_id, dst_id, dir, verdict, reason, index);
		return;
	}
	e->ts_ns = now;
	addr_copy(e->saddr, p->saddr);
	addr_copy(e->daddr, p->daddr);
	e->src_identity = src_id;
	e->dst_identity = dst_id;
	e->policy_index = index;
	e->ifindex = ifindex;
	e->sport = p->sport;
	e->dport = p->dport;
	e->proto = p->proto;
	e->verdict = verdict;
	e->reason = reason;
	e->direction = dir;
	/* The agent reads on a timer; only a drop is worth waking it for. */
	bpf_ringbuf_submit(e, verdict == POL_DROPPED ? 0 : BPF_RB_NO_WAKEUP);
	event_stat(POL_STAT_EVENTS);
}

#endif /* MESHCORE_LIB_EVENTS_H */
