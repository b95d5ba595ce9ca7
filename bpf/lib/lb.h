/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Service lookup and weighted backend selection. */
#ifndef MESHCORE_LIB_LB_H
#define MESHCORE_LIB_LB_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "addr.h"
#include "maps.h"

/*
 * Userspace rewrites slots and deletes backends while programs run; a reader holding an
 * older service entry can land on a slot or backend that is already gone. A few fresh
 * draws make that window invisible instead of refusing the connection.
 */
#define LB_PICK_ATTEMPTS 4

static __always_inline struct lb_service_value *lb_lookup_service(const __u32 addr[4], __u16 port, __u8 proto)
{
	struct lb_service_key key;

	__builtin_memset(&key, 0, sizeof(key));
	addr_copy(key.addr, addr);
	key.port = port;
	key.proto = proto;
	return bpf_map_lookup_elem(&lb_services, &key);
}

/* A backend drawn at random from the service's weighted slots, or NULL. */
static __always_inline struct lb_backend_value *lb_pick_backend(const struct lb_service_value *svc, __u32 *backend_id)
{
	__u32 count = svc->slot_count;
	__u32 service_id = svc->id;

	if (count == 0)
		return NULL;
	for (int i = 0; i < LB_PICK_ATTEMPTS; i++) {
		struct lb_slot_key skey = {
			.service_id = service_id,
			.slot = bpf_get_prandom_u32() % count,
		};
		__u32 *id = bpf_map_lookup_elem(&lb_slots, &skey);
		struct lb_backend_value *be;

		if (!id)
			continue;
		be = bpf_map_lookup_elem(&lb_backends, id);
		if (!be || be->service_id != service_id)
			continue;
		*backend_id = *id;
		return be;
	}
	return NULL;
}

/* The backend this UDP socket already uses for the service, if it still belongs to it. */
static __always_inline struct lb_backend_value *lb_affine_backend(__u64 cookie, const struct lb_service_value *svc)
{
	struct lb_affinity_key key = { .cookie = cookie, .service_id = svc->id };
	struct lb_backend_value *be;
	__u32 *id;

	id = bpf_map_lookup_elem(&lb_affinity, &key);
	if (!id)
		return NULL;
	be = bpf_map_lookup_elem(&lb_backends, id);
	if (!be || be->service_id != svc->id)
		return NULL;
	return be;
}

static __always_inline void lb_remember_backend(__u64 cookie, const struct lb_service_value *svc, __u32 backend_id)
{
	struct lb_affinity_key key = { .cookie = cookie, .service_id = svc->id };

	bpf_map_update_elem(&lb_affinity, &key, &backend_id, BPF_ANY);
}

/*
 * Record what the socket asked for, keyed by what it really talks to. A connected socket
 * talks to one address: its cookie's slot holds it. An unconnected UDP socket may send to
 * several services, so each destination is an entry of the LRU map.
 */
static __always_inline void lb_remember_vip(__u64 cookie, int connected, const __u32 real[4], __u16 real_port,
					    const __u32 vip[4], __u16 vip_port)
{
	struct lb_rev_nat_key key;
	struct lb_rev_nat_value val;

	if (connected) {
		__u32 slot = (__u32)cookie & (LB_REV_SOCK_SLOTS - 1);
		struct lb_rev_sock_value *rev = bpf_map_lookup_elem(&lb_rev_sock, &slot);

		if (!rev)
			return;
		addr_copy(rev->real, real);
		rev->real_port = real_port;
		addr_copy(rev->vip, vip);
		rev->vip_port = vip_port;
		rev->cookie = cookie; /* last: the slot is this socket's once the rest is written */
		return;
	}
	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memset(&val, 0, sizeof(val));
	key.cookie = cookie;
	addr_copy(key.addr, real);
	key.port = real_port;
	addr_copy(val.addr, vip);
	val.port = vip_port;
	bpf_map_update_elem(&lb_rev_nat, &key, &val, BPF_ANY);
}

/* The VIP and port a socket asked for, given what it really talks to; 0 when it asked for none. */
static __always_inline int lb_lookup_vip(__u64 cookie, const __u32 real[4], __u16 real_port, __u32 vip[4],
					 __u16 *vip_port)
{
	__u32 slot = (__u32)cookie & (LB_REV_SOCK_SLOTS - 1);
	struct lb_rev_sock_value *rev = bpf_map_lookup_elem(&lb_rev_sock, &slot);
	struct lb_rev_nat_value *val;
	struct lb_rev_nat_key key;

	if (rev && rev->cookie == cookie && rev->real_port == real_port && rev->real[0] == real[0] &&
	    rev->real[1] == real[1] && rev->real[2] == real[2] && rev->real[3] == real[3]) {
		addr_copy(vip, rev->vip);
		*vip_port = rev->vip_port;
		return 1;
	}
	__builtin_memset(&key, 0, sizeof(key));
	key.cookie = cookie;
	addr_copy(key.addr, real);
	key.port = real_port;
	val = bpf_map_lookup_elem(&lb_rev_nat, &key);
	if (!val)
		return 0;
	addr_copy(vip, val->addr);
	*vip_port = val->port;
	return 1;
}

#endif /* MESHCORE_LIB_LB_H */
