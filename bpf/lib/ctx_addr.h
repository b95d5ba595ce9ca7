/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Program contexts' addresses as 16-byte addresses (see addr.h): the destination of a
 * sock_addr hook, read and rewritten, and the ends of a socket as sockops and bpf_sock
 * show them, each field read once before any branch.
 */
#ifndef MESHCORE_LIB_CTX_ADDR_H
#define MESHCORE_LIB_CTX_ADDR_H

#include <linux/bpf.h>
#include <linux/types.h>

#include "addr.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/*
 * Keeps clang from merging context reads into one offset pointer, which the verifier
 * refuses: once a field's value is in a register it is used from there.
 */
#define ctx_keep(var) asm volatile("" : "+r"(var))

/* The IPv6 destination of a connect/sendmsg/recvmsg/getpeername hook. */
static __always_inline void ctx_user_ip6(const struct bpf_sock_addr *ctx, __u32 addr[4])
{
	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];
}

/* Rewrites that IPv6 destination. */
static __always_inline void ctx_set_user_ip6(struct bpf_sock_addr *ctx, const __u32 addr[4])
{
	ctx->user_ip6[0] = addr[0];
	ctx->user_ip6[1] = addr[1];
	ctx->user_ip6[2] = addr[2];
	ctx->user_ip6[3] = addr[3];
}

/* A sockops connection's local address and port (host order). */
static __always_inline void ctx_sockops_local(struct bpf_sock_ops *skops, __u32 addr[4], __u32 *port)
{
	__u32 family, ip4, ip6[4], local_port;

	family = skops->family;
	ctx_keep(family);
	ip4 = skops->local_ip4;
	ctx_keep(ip4);
	ip6[0] = skops->local_ip6[0];
	ctx_keep(ip6[0]);
	ip6[1] = skops->local_ip6[1];
	ctx_keep(ip6[1]);
	ip6[2] = skops->local_ip6[2];
	ctx_keep(ip6[2]);
	ip6[3] = skops->local_ip6[3];
	ctx_keep(ip6[3]);
	local_port = skops->local_port;
	ctx_keep(local_port);
	if (family == AF_INET)
		addr_set_v4(addr, ip4);
	else
		addr_copy(addr, ip6);
	*port = local_port;
}

/* A socket's remote address and port (network order, as bpf_sock keeps it); returns its family. */
static __always_inline __u32 ctx_sk_remote(const struct bpf_sock *sk, __u32 addr[4], __u32 *port)
{
	__u32 family, ip4, ip6[4], dst_port;

	family = sk->family;
	ctx_keep(family);
	ip4 = sk->dst_ip4;
	ctx_keep(ip4);
	ip6[0] = sk->dst_ip6[0];
	ctx_keep(ip6[0]);
	ip6[1] = sk->dst_ip6[1];
	ctx_keep(ip6[1]);
	ip6[2] = sk->dst_ip6[2];
	ctx_keep(ip6[2]);
	ip6[3] = sk->dst_ip6[3];
	ctx_keep(ip6[3]);
	dst_port = sk->dst_port;
	ctx_keep(dst_port);
	if (family == AF_INET)
		addr_set_v4(addr, ip4);
	else
		addr_copy(addr, ip6);
	*port = dst_port;
	return family;
}

/* A socket's local address and port (host order, as bpf_sock keeps it), for its family. */
static __always_inline void ctx_sk_local(const struct bpf_sock *sk, __u32 family, __u32 addr[4], __u32 *port)
{
	__u32 ip4, ip6[4], src_port;

	ip4 = sk->src_ip4;
	ctx_keep(ip4);
	ip6[0] = sk->src_ip6[0];
	ctx_keep(ip6[0]);
	ip6[1] = sk->src_ip6[1];
	ctx_keep(ip6[1]);
	ip6[2] = sk->src_ip6[2];
	ctx_keep(ip6[2]);
	ip6[3] = sk->src_ip6[3];
	ctx_keep(ip6[3]);
	src_port = sk->src_port;
	ctx_keep(src_port);
	if (family == AF_INET)
		addr_set_v4(addr, ip4);
	else
		addr_copy(addr, ip6);
	*port = src_port;
}

#endif /* MESHCORE_LIB_CTX_ADDR_H */
