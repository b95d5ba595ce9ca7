// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level service load balancing on cgroup v2 sock_addr hooks.
 *
 * connect() and unconnected UDP sendmsg() to a service VIP:port are rewritten to a backend
 * chosen by weight (or to the node proxy), once per connection, so packets carry real
 * addresses and cost nothing extra. getpeername() and UDP recvmsg() translate back, so the
 * application only ever sees the VIP it asked for. Anything that is not a service passes
 * untouched. A connected socket's translation is kept in its own slot of an array (see
 * lib/maps.h), so a translated connect costs no more than one that is not.
 */
#include <linux/bpf.h>
#include <linux/errno.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "sock_lb.h"
#include "lib/addr.h"
#include "lib/ctx_addr.h"
#include "lib/maps.h"
#include "lib/lb.h"

/* Load-time settings, written by the loader before load. */
const volatile __u32 proxy_ip4 = 0;                 /* node proxy IPv4, network order; 0 = none */
const volatile __u32 proxy_ip6[4] = { 0, 0, 0, 0 }; /* node proxy IPv6, network order; :: = none */

enum lb_verdict {
	LB_PASS,       /* not a service: leave the socket alone */
	LB_TRANSLATED, /* destination rewritten */
	LB_REFUSE,     /* a service with nowhere to go: fail the call now */
};

/*
 * Translate addr/port in place if they name a service. want_v4 is set for AF_INET sockets,
 * which cannot reach an IPv6 destination. udp_msg is set for unconnected UDP sends, which
 * keep the socket on the backend it already uses for the service.
 */
static __always_inline enum lb_verdict lb_translate(struct bpf_sock_addr *ctx, __u32 addr[4], __u16 *port,
						     int want_v4, int udp_msg)
{
	struct lb_service_value *svc;
	__u32 proto = ctx->protocol;
	__u32 vip[4];
	__u16 vip_port = *port;
	__u64 cookie;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return LB_PASS;
	svc = lb_lookup_service(addr, *port, (__u8)proto);
	if (!svc)
		return LB_PASS;

	addr_copy(vip, addr);
	cookie = bpf_get_socket_cookie(ctx);
	if (svc->flags & LB_SVC_F_PROXY) {
		if (addr_is_v4(vip)) {
			if (proxy_ip4 == 0)
				return LB_REFUSE;
			addr_set_v4(addr, proxy_ip4);
		} else {
			if (addr_is_zero(proxy_ip6))
				return LB_REFUSE;
			addr[0] = proxy_ip6[0];
			addr[1] = proxy_ip6[1];
			addr[2] = proxy_ip6[2];
			addr[3] = proxy_ip6[3];
		}
		*port = svc->proxy_port;
	} else {
		struct lb_backend_value *be = NULL;
		__u32 backend_id = 0;

		if (udp_msg)
			be = lb_affine_backend(cookie, svc);
		if (!be) {
			be = lb_pick_backend(svc, &backend_id);
			if (!be)
				return LB_REFUSE;
			if (udp_msg)
				lb_remember_backend(cookie, svc, backend_id);
		}
		addr_copy(addr, be->addr);
		*port = be->port;
	}
	if (want_v4 && !addr_is_v4(addr))
		return LB_REFUSE;
	lb_remember_vip(cookie, !udp_msg, addr, *port, vip, vip_port);
	return LB_TRANSLATED;
}

static __always_inline int lb_refuse(void)
{
	bpf_set_retval(-ECONNREFUSED);
	return 0;
}

static __always_inline int lb_forward4(struct bpf_sock_addr *ctx, int udp_msg)
{
	__u32 addr[4];
	__u16 port = (__u16)ctx->user_port;

	addr_set_v4(addr, ctx->user_ip4);
	switch (lb_translate(ctx, addr, &port, 1, udp_msg)) {
	case LB_TRANSLATED:
		ctx->user_ip4 = addr[3];
		ctx->user_port = port;
		return 1;
	case LB_REFUSE:
		return lb_refuse();
	default:
		return 1;
	}
}

static __always_inline int lb_forward6(struct bpf_sock_addr *ctx, int udp_msg)
{
	__u32 addr[4];
	__u16 port = (__u16)ctx->user_port;

	ctx_user_ip6(ctx, addr);
	switch (lb_translate(ctx, addr, &port, 0, udp_msg)) {
	case LB_TRANSLATED:
		ctx_set_user_ip6(ctx, addr);
		ctx->user_port = port;
		return 1;
	case LB_REFUSE:
		return lb_refuse();
	default:
		return 1;
	}
}

static __always_inline void lb_reverse4(struct bpf_sock_addr *ctx)
{
	__u32 real[4], vip[4];
	__u16 vip_port;

	addr_set_v4(real, ctx->user_ip4);
	if (lb_lookup_vip(bpf_get_socket_cookie(ctx), real, (__u16)ctx->user_port, vip, &vip_port) &&
	    addr_is_v4(vip)) {
		ctx->user_ip4 = vip[3];
		ctx->user_port = vip_port;
	}
}

static __always_inline void lb_reverse6(struct bpf_sock_addr *ctx)
{
	__u32 real[4], vip[4];
	__u16 vip_port;

	ctx_user_ip6(ctx, real);
	if (lb_lookup_vip(bpf_get_socket_cookie(ctx), real, (__u16)ctx->user_port, vip, &vip_port)) {
		ctx_set_user_ip6(ctx, vip);
		ctx->user_port = vip_port;
	}
}

SEC("cgroup/connect4")
int lb_connect4(struct bpf_sock_addr *ctx)
{
	return lb_forward4(ctx, 0);
}

SEC("cgroup/connect6")
int lb_connect6(struct bpf_sock_addr *ctx)
{
	return lb_forward6(ctx, 0);
}

SEC("cgroup/sendmsg4")
int lb_sendmsg4(struct bpf_sock_addr *ctx)
{
	return lb_forward4(ctx, 1);
}

SEC("cgroup/sendmsg6")
int lb_sendmsg6(struct bpf_sock_addr *ctx)
{
	return lb_forward6(ctx, 1);
}

SEC("cgroup/recvmsg4")
int lb_recvmsg4(struct bpf_sock_addr *ctx)
{
	lb_reverse4(ctx);
	return 1;
}

SEC("cgroup/recvmsg6")
int lb_recvmsg6(struct bpf_sock_addr *ctx)
{
	lb_reverse6(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int lb_getpeername4(struct bpf_sock_addr *ctx)
{
	lb_reverse4(ctx);
	return 1;
}

SEC("cgroup/getpeername6")
int lb_getpeername6(struct bpf_sock_addr *ctx)
{
	lb_reverse6(ctx);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
