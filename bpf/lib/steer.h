/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Steering a connection to a local listener: which destinations are steered, and the
 * original destination kept for the listener to read back (see origdst.h).
 *
 * Both structs are map keys and values user space reads and writes: they must match
 * SteerDestKey and SteerOrig in src/meshcore/datapath/maps/_steer.py (checked against the
 * object's BTF at load). Addresses are 16 bytes, network order, IPv4 v4-mapped (addr.h).
 */
#ifndef MESHCORE_LIB_STEER_H
#define MESHCORE_LIB_STEER_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#include "addr.h"

/* A steered destination; port 0 stands for every port without an entry of its own. */
struct steer_dest_key {
	__u32 addr[4];
	__u16 port; /* network order */
	__u16 pad;
};

/* The original destination of a steered connection. */
struct steer_orig {
	__u32 addr[4];
	__u16 port;  /* network order */
	__u8 family; /* 4 or 6 */
	__u8 pad;
};

/* The value of map (keyed by struct steer_dest_key) for addr:port, else for every port; NULL when neither. */
static __always_inline void *steer_dest_lookup(void *map, const __u32 addr[4], __u16 port)
{
	struct steer_dest_key key;
	void *val;

	__builtin_memset(&key, 0, sizeof(key));
	addr_copy(key.addr, addr);
	key.port = port;
	val = bpf_map_lookup_elem(map, &key);
	if (val)
		return val;
	key.port = 0;
	return bpf_map_lookup_elem(map, &key);
}

/* Fills orig with the destination addr:port (network order) a connection asked for. */
static __always_inline void steer_orig_init(struct steer_orig *orig, const __u32 addr[4], __u16 port)
{
	__builtin_memset(orig, 0, sizeof(*orig));
	addr_copy(orig->addr, addr);
	orig->port = port;
	orig->family = addr_is_v4(addr) ? 4 : 6;
}

#endif /* MESHCORE_LIB_STEER_H */
