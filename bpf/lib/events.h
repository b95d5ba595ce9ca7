/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Verdict events to the ring buffer; a full buffer loses events, never packets. */
#ifndef MESHCORE_LIB_EVENTS_H
#define MESHCORE_LIB_EVENTS_H

#include "addr.h"
#include "pkt.h"
#include "pol_maps.h"

static __always_inline void event_emit(const struct pkt *p, __u32 ifindex, __u32 src_id, __u32 dst_id,
				       __u8 dir, __u8 verdict, __u8 reason, __u32 index)
{
	struct pol_event *e = bpf_ringbuf_reserve(&pol_events, sizeof(*e), 0);

	if (!e)
		return;
	e->ts_ns = bpf_ktime_get_ns();
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
	bpf_ringbuf_submit(e, 0);
}

#endif /* MESHCORE_LIB_EVENTS_H */
