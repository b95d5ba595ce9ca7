/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The socket load-balancing maps. Sizes are defaults; the loader may change them before load. */
#ifndef MESHCORE_LIB_MAPS_H
#define MESHCORE_LIB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../sock_lb.h"

/* Frontends: (VIP, port, protocol) → service. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lb_service_key);
	__type(value, struct lb_service_value);
} lb_services SEC(".maps");

/* Backends by id; one entry per (service, address, port), so a service owns its backends. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct lb_backend_value);
} lb_backends SEC(".maps");

/* Weighted slots: each active backend holds slots in proportion to its weight. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lb_slot_key);
	__type(value, __u32);
} lb_slots SEC(".maps");

/*
 * Reverse translation for getpeername() and recvmsg() of connected sockets: one slot per
 * socket, at its cookie modulo the size. Written with plain stores (no lock, no allocation,
 * nothing to evict), so a translated connect costs no more than one that is not; a slot is
 * taken over by the socket that comes LB_REV_SOCK_SLOTS cookies later.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_REV_SOCK_SLOTS);
	__type(key, __u32);
	__type(value, struct lb_rev_sock_value);
} lb_rev_sock SEC(".maps");

/* Reverse translation for unconnected UDP sends, which may reach several services from one socket. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct lb_rev_nat_key);
	__type(value, struct lb_rev_nat_value);
} lb_rev_nat SEC(".maps");

/* Backend chosen per (unconnected UDP socket, service), so one flow stays on one backend. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct lb_affinity_key);
	__type(value, __u32);
} lb_affinity SEC(".maps");

#endif /* MESHCORE_LIB_MAPS_H */
