/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* 16-byte address helpers: IPv4 is carried v4-mapped (::ffff:a.b.c.d). */
#ifndef MESHCORE_LIB_ADDR_H
#define MESHCORE_LIB_ADDR_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>

static __always_inline void addr_set_v4(__u32 addr[4], __u32 ip4)
{
	addr[0] = 0;
	addr[1] = 0;
	addr[2] = bpf_htonl(0x0000ffff);
	addr[3] = ip4;
}

static __always_inline int addr_is_v4(const __u32 addr[4])
{
	return addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0x0000ffff);
}

static __always_inline void addr_copy(__u32 dst[4], const __u32 src[4])
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
}

static __always_inline int addr_is_zero(const volatile __u32 addr[4])
{
	return (addr[0] | addr[1] | addr[2] | addr[3]) == 0;
}

#endif /* MESHCORE_LIB_ADDR_H */
