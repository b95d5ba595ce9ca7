/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-endpoint flow memory: a flow allowed in one direction lets its later packets and its
 * replies through. Entries are scoped by interface and direction, so two pods on one node
 * each judge the same flow by their own policy. Entries age out by LRU only.
 */
#ifndef MESHCORE_LIB_CONNTRACK_H
#define MESHCORE_LIB_CONNTRACK_H

#include "addr.h"
#include "pkt.h"
#include "pol_maps.h"

static __always_inline void ct_key(struct pol_ct_key *k, const struct pkt *p, __u32 ifindex, __u8 dir, int reverse)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (reverse) {
		addr_copy(k->saddr, p->daddr);
		addr_copy(k->daddr, p->saddr);
		k->sport = p->dport;
		k->dport = p->sport;
	} else {
		addr_copy(k->saddr, p->saddr);
		addr_copy(k->daddr, p->daddr);
		k->sport = p->sport;
		k->dport = p->dport;
	}
	k->ifindex = ifindex;
	k->proto = p->proto;
	k->direction = dir;
}

/* True when p belongs to a flow this endpoint already allowed, either way round. */
static __always_inline int ct_known(const struct pkt *p, __u32 ifindex, __u8 dir)
{
	struct pol_ct_key k;

	ct_key(&k, p, ifindex, dir, 0);
	if (bpf_map_lookup_elem(&pol_ct, &k))
		return 1;
	ct_key(&k, p, ifindex, dir == POL_DIR_INGRESS ? POL_DIR_EGRESS : POL_DIR_INGRESS, 1);
	return bpf_map_lookup_elem(&pol_ct, &k) != NULL;
}

static __always_inline void ct_create(const struct pkt *p, __u32 ifindex, __u8 dir, __u32 index)
{
	struct pol_ct_key k;
	struct pol_ct_value v = { .created_ns = bpf_ktime_get_ns(), .policy_index = index };

	ct_key(&k, p, ifindex, dir, 0);
	bpf_map_update_elem(&pol_ct, &k, &v, BPF_ANY);
}

#endif /* MESHCORE_LIB_CONNTRACK_H */
