/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * getsockopt(SO_ORIGINAL_DST) answered from a steered connection's original destination
 * (steer.h), as netfilter answers it after a REDIRECT: a struct sockaddr_in for SOL_IP
 * (only for an IPv4 destination), a struct sockaddr_in6 for SOL_IPV6.
 */
#ifndef MESHCORE_LIB_ORIGDST_H
#define MESHCORE_LIB_ORIGDST_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>

#include "ctx_addr.h"
#include "steer.h"

#define SOL_IP 0
#define SOL_IPV6 41
#define SO_ORIGINAL_DST 80 /* and IP6T_SO_ORIGINAL_DST */

/* True when ctx is getsockopt(SOL_IP or SOL_IPV6, SO_ORIGINAL_DST); its socket the caller checks. */
static __always_inline int origdst_asked(const struct bpf_sockopt *ctx)
{
	return ctx->optname == SO_ORIGINAL_DST && (ctx->level == SOL_IP || ctx->level == SOL_IPV6);
}

/*
 * Answers with orig when the caller's buffer holds the answer (otherwise the kernel's own
 * answer stands); returns the program's verdict, which lets the call go on.
 */
static __always_inline int origdst_answer(struct bpf_sockopt *ctx, const struct steer_orig *orig)
{
	void *optval = ctx->optval;
	void *end = ctx->optval_end;

	if (ctx->level == SOL_IP) {
		struct sockaddr_in *sin = optval;

		if (orig->family != 4 || (void *)(sin + 1) > end)
			return 1;
		__builtin_memset(sin, 0, sizeof(*sin));
		sin->sin_family = AF_INET;
		sin->sin_port = orig->port;
		sin->sin_addr.s_addr = orig->addr[3];
		ctx->optlen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = optval;

		if ((void *)(sin6 + 1) > end)
			return 1;
		__builtin_memset(sin6, 0, sizeof(*sin6));
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = orig->port;
		sin6->sin6_addr.in6_u.u6_addr32[0] = orig->addr[0];
		sin6->sin6_addr.in6_u.u6_addr32[1] = orig->addr[1];
		sin6->sin6_addr.in6_u.u6_addr32[2] = orig->addr[2];
		sin6->sin6_addr.in6_u.u6_addr32[3] = orig->addr[3];
		ctx->optlen = sizeof(*sin6);
	}
	ctx->retval = 0;
	return 1;
}

#endif /* MESHCORE_LIB_ORIGDST_H */
