/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-endpoint connection memory: a connection allowed in one direction lets its later
 * packets and its replies through. Entries are scoped by interface, so two pods on one node
 * each judge the same connection by their own policy. A TCP reset ends a connection and
 * its entry; everything else ages out by LRU.
 */
#ifndef MESHCORE_LIB_CONNTRACK_H
#define MESHCORE_LIB_CONNTRACK_H

#include "addr.h"
#include "pkt.h"
#include "pol_maps.h"

/* True when end (a, pa) sorts after end (b, pb): the key puts the lower end first. */
static __always_inline int ct_end_after(const __u32 a[4], __u16 pa, const __u32 b[4], __u16 pb)
{
	if (a[3] != b[3])
		return a[3] > b[3];
	if (a[2] != b[2])
		return a[2] > b[2];
	if (a[1] != b[1])
		return a[1] > b[1];
	if (a[0] != b[0])
		return a[0] > b[0];
	return pa > pb;
}

static __always_inline void ct_key(struct pol_ct_key *k, const struct pkt *p, __u32 ifindex)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (ct_end_after(p->saddr, p->sport, p->daddr, p->dport)) {
		addr_copy(k->addr_lo, p->daddr);
		addr_copy(k->addr_hi, p->saddr);
		k->port_lo = p->dport;
		k->port_hi = p->sport;
	} else {
		addr_copy(k->addr_lo, p->saddr);
		addr_copy(k->addr_hi, p->daddr);
		k->port_lo = p->sport;
		k->port_hi = p->dport;
	}
	k->ifindex = ifindex;
	k->proto = p->proto;
}

/* True when p belongs to a connection this endpoint already allowed, either way round. */
static __always_inline int ct_known(const struct pkt *p, __u32 ifindex)
{
	struct pol_ct_key k;

	ct_key(&k, p, ifindex);
	if (!bpf_map_lookup_elem(&pol_ct, &k))
		return 0;
	/* A reset ends the connection here; a new one over the same ports is judged afresh. */
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & TCP_RST))
		bpf_map_delete_elem(&pol_ct, &k);
	return 1;
}

static __always_inline void ct_create(const struct pkt *p, __u32 ifindex, __u8 dir, __u32 index, __u64 now)
{
	struct pol_ct_key k;
	struct pol_ct_value v = { .created_ns = now, .policy_index = index, .direction = dir };

	ct_key(&k, p, ifindex);
	bpf_map_update_elem(&pol_ct, &k, &v, BPF_ANY);
}

#endif /* MESHCORE_LIB_CONNTRACK_H */
