/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Address → identity through the LPM trie; unknown addresses are the world. */
#ifndef MESHCORE_LIB_IPCACHE_H
#define MESHCORE_LIB_IPCACHE_H

#include "addr.h"
#include "pol_maps.h"

static __always_inline __u32 ipcache_identity(const __u32 addr[4])
{
	struct pol_ipcache_key key = { .prefixlen = 128 };
	struct pol_ipcache_value *val;

	addr_copy(key.addr, addr);
	val = bpf_map_lookup_elem(&pol_ipcache, &key);
	return val ? val->identity : POL_ID_WORLD;
}

#endif /* MESHCORE_LIB_IPCACHE_H */
