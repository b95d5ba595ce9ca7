// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Steering connections between meshed workloads into the node proxy's mutual-TLS tunnel.
 *
 * connect() to a meshed destination (after the socket LB chose a backend: this program is
 * attached after it) goes to the node proxy's outbound tunnel listener instead; the
 * original destination is kept by socket cookie, then, once the source port is bound
 * (sockops TCP_CONNECT_CB), by the client's address and port. The node proxy reads it
 * back with getsockopt(SO_ORIGINAL_DST), answered here from that map, as netfilter
 * would answer it after a REDIRECT. UDP to a destination that refuses clear text is
 * refused, and so is TCP to one when the node proxy has no address of its family; each refusal
 * is counted in tun_refusals, which the agent drains into flows. The node proxy's own connections are never steered, nor those of the cgroups in
 * tun_exempt (sidecars, which carry their pods' connections in tunnels of their own).
 */
#include <linux/bpf.h>
#include <linux/errno.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "tunnel.h"
#include "lib/addr.h"

#define SOL_IP 0
#define SOL_IPV6 41
#define SO_ORIGINAL_DST 80 /* and IP6T_SO_ORIGINAL_DST */
#define AF_INET 2
#define AF_INET6 10

/* Keeps clang from merging context reads into one offset pointer, which the verifier refuses. */
#define tun_keep(var) asm volatile("" : "+r"(var))

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tun_dest_key);
	__type(value, struct tun_dest_value);
} tun_dests SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tun_config);
} tun_config SEC(".maps");

/* Cgroups whose connections are never steered besides the node proxy's: sidecars, which tunnel their own. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} tun_exempt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tun_orig);
} tun_cookies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct tun_peer_key);
	__type(value, struct tun_orig);
} tun_origs SEC(".maps");

/* Refusals by client, destination and reason; the agent takes (reads and deletes) them each interval. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tun_refusal_key);
	__type(value, struct tun_refusal);
} tun_refusals SEC(".maps");

/* Keep the structs user space mirrors in the object's BTF. */
struct tun_dest_key *tun_dest_key_anchor __attribute__((unused));
struct tun_dest_value *tun_dest_value_anchor __attribute__((unused));
struct tun_config *tun_config_anchor __attribute__((unused));
struct tun_orig *tun_orig_anchor __attribute__((unused));
struct tun_peer_key *tun_peer_key_anchor __attribute__((unused));
struct tun_refusal_key *tun_refusal_key_anchor __attribute__((unused));
struct tun_refusal *tun_refusal_anchor __attribute__((unused));

static __always_inline struct tun_dest_value *tun_lookup(const __u32 addr[4], __u16 port)
{
	struct tun_dest_key key;
	struct tun_dest_value *val;

	__builtin_memset(&key, 0, sizeof(key));
	addr_copy(key.addr, addr);
	key.port = port;
	val = bpf_map_lookup_elem(&tun_dests, &key);
	if (val)
		return val;
	key.port = 0;
	return bpf_map_lookup_elem(&tun_dests, &key);
}

/* Count a refused call under its client, destination and reason (best effort: a full map evicts the oldest). */
static __always_inline void tun_note_refusal(struct bpf_sock_addr *ctx, const __u32 addr[4], __u16 port,
					     __u8 proto, __u8 reason)
{
	struct tun_refusal_key key;
	struct tun_refusal one, *val;
	struct bpf_sock *sk = ctx->sk;
	__u32 family, ip4, ip6[4], sport;

	__builtin_memset(&key, 0, sizeof(key));
	key.netns = bpf_get_netns_cookie(ctx);
	key.cgroup = bpf_get_current_cgroup_id();
	addr_copy(key.addr, addr);
	key.port = port;
	key.proto = proto;
	key.reason = reason;
	__builtin_memset(&one, 0, sizeof(one));
	one.count = 1;
	one.last_ns = bpf_ktime_get_ns();
	if (sk) {
		/* Every field read once, before any branch: the verifier refuses offset context pointers. */
		family = sk->family;
		tun_keep(family);
		ip4 = sk->src_ip4;
		tun_keep(ip4);
		ip6[0] = sk->src_ip6[0];
		tun_keep(ip6[0]);
		ip6[1] = sk->src_ip6[1];
		tun_keep(ip6[1]);
		ip6[2] = sk->src_ip6[2];
		tun_keep(ip6[2]);
		ip6[3] = sk->src_ip6[3];
		tun_keep(ip6[3]);
		sport = sk->src_port;
		tun_keep(sport);
		if (family == AF_INET) {
			if (ip4)
				addr_set_v4(one.saddr, ip4);
		} else {
			addr_copy(one.saddr, ip6);
		}
		one.sport = (__u16)sport;
	}
	val = bpf_map_lookup_elem(&tun_refusals, &key);
	if (!val && bpf_map_update_elem(&tun_refusals, &key, &one, BPF_NOEXIST) == 0)
		return;
	if (!val)
		val = bpf_map_lookup_elem(&tun_refusals, &key); /* another CPU created it meanwhile */
	if (!val)
		return;
	__sync_fetch_and_add(&val->count, 1);
	val->last_ns = one.last_ns;
	addr_copy(val->saddr, one.saddr);
	val->sport = one.sport;
}

static __always_inline int tun_refuse(struct bpf_sock_addr *ctx, const __u32 addr[4], __u16 port, __u8 proto,
				      __u8 reason)
{
	tun_note_refusal(ctx, addr, port, proto, reason);
	bpf_set_retval(-ECONNREFUSED);
	return 0;
}

/*
 * Decide for a connect() or sendmsg() to addr:port; rewrites addr/port to the proxy when
 * steered. Returns 1 to let the call go on, 0 (with the error set) to refuse it.
 */
static __always_inline int tun_steer(struct bpf_sock_addr *ctx, __u32 addr[4], __u16 *port, int v4_only)
{
	struct tun_dest_value *dest;
	struct tun_config *cfg;
	struct tun_orig orig;
	__u32 zero = 0;
	__u64 cookie, cgroup;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 1;
	cfg = bpf_map_lookup_elem(&tun_config, &zero);
	cgroup = bpf_get_current_cgroup_id();
	if (!cfg || cgroup == cfg->exempt_cgroup || bpf_map_lookup_elem(&tun_exempt, &cgroup))
		return 1;
	dest = tun_lookup(addr, *port);
	if (!dest || !(dest->flags & TUN_F_STEER))
		return 1;
	if (ctx->protocol == IPPROTO_UDP)
		return (dest->flags & TUN_F_STRICT) ? tun_refuse(ctx, addr, *port, IPPROTO_UDP, TUN_R_UDP_STRICT) : 1;

	__builtin_memset(&orig, 0, sizeof(orig));
	addr_copy(orig.addr, addr);
	orig.port = *port;
	orig.family = addr_is_v4(addr) ? 4 : 6;
	if (addr_is_v4(addr)) {
		if (cfg->proxy4 == 0)
			return (dest->flags & TUN_F_STRICT) ? tun_refuse(ctx, addr, *port, IPPROTO_TCP, TUN_R_NO_PROXY) : 1;
		addr_set_v4(addr, cfg->proxy4);
	} else {
		if (v4_only || addr_is_zero(cfg->proxy6))
			return (dest->flags & TUN_F_STRICT) ? tun_refuse(ctx, addr, *port, IPPROTO_TCP, TUN_R_NO_PROXY) : 1;
		addr[0] = cfg->proxy6[0];
		addr[1] = cfg->proxy6[1];
		addr[2] = cfg->proxy6[2];
		addr[3] = cfg->proxy6[3];
	}
	*port = cfg->port;
	cookie = bpf_get_socket_cookie(ctx);
	bpf_map_update_elem(&tun_cookies, &cookie, &orig, BPF_ANY);
	return 1;
}

SEC("cgroup/connect4")
int tun_connect4(struct bpf_sock_addr *ctx)
{
	__u32 addr[4];
	__u16 port = (__u16)ctx->user_port;
	int ok;

	addr_set_v4(addr, ctx->user_ip4);
	ok = tun_steer(ctx, addr, &port, 1);
	if (ok) {
		ctx->user_ip4 = addr[3];
		ctx->user_port = port;
	}
	return ok;
}

SEC("cgroup/connect6")
int tun_connect6(struct bpf_sock_addr *ctx)
{
	__u32 addr[4];
	__u16 port = (__u16)ctx->user_port;
	int ok;

	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];
	ok = tun_steer(ctx, addr, &port, 0);
	if (ok) {
		ctx->user_ip6[0] = addr[0];
		ctx->user_ip6[1] = addr[1];
		ctx->user_ip6[2] = addr[2];
		ctx->user_ip6[3] = addr[3];
		ctx->user_port = port;
	}
	return ok;
}

SEC("cgroup/sendmsg4")
int tun_sendmsg4(struct bpf_sock_addr *ctx)
{
	__u32 addr[4];
	__u16 port = (__u16)ctx->user_port;

	addr_set_v4(addr, ctx->user_ip4);
	return tun_steer(ctx, addr, &port, 1); /* UDP only: never rewritten, at most refused */
}

SEC("cgroup/sendmsg6")
int tun_sendmsg6(struct bpf_sock_addr *ctx)
{
	__u32 addr[4];
	__u16 port = (__u16)ctx->user_port;

	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];
	return tun_steer(ctx, addr, &port, 0);
}

/* Once the source port is bound, re-key the original destination by the client's address and port. */
SEC("sockops")
int tun_sockops(struct bpf_sock_ops *skops)
{
	struct tun_peer_key key;
	struct tun_orig *orig;
	__u32 family, ip4, ip6[4], port;
	__u64 cookie;

	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	orig = bpf_map_lookup_elem(&tun_cookies, &cookie);
	if (!orig)
		return 1;
	/* Every field read once, before any branch: the verifier refuses offset context pointers. */
	family = skops->family;
	tun_keep(family);
	ip4 = skops->local_ip4;
	tun_keep(ip4);
	ip6[0] = skops->local_ip6[0];
	tun_keep(ip6[0]);
	ip6[1] = skops->local_ip6[1];
	tun_keep(ip6[1]);
	ip6[2] = skops->local_ip6[2];
	tun_keep(ip6[2]);
	ip6[3] = skops->local_ip6[3];
	tun_keep(ip6[3]);
	port = skops->local_port;
	tun_keep(port);
	__builtin_memset(&key, 0, sizeof(key));
	if (family == AF_INET)
		addr_set_v4(key.addr, ip4);
	else
		addr_copy(key.addr, ip6);
	key.port = (__u16)port;
	bpf_map_update_elem(&tun_origs, &key, orig, BPF_ANY);
	bpf_map_delete_elem(&tun_cookies, &cookie);
	return 1;
}

/* getsockopt(SO_ORIGINAL_DST) on a connection the node proxy accepted: the steered client's destination. */
SEC("cgroup/getsockopt")
int tun_getsockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct tun_peer_key key;
	struct tun_orig *orig;
	void *optval = ctx->optval;
	void *end = ctx->optval_end;

	__u32 family, ip4, ip6[4], port;

	if (ctx->optname != SO_ORIGINAL_DST || (ctx->level != SOL_IP && ctx->level != SOL_IPV6) || !sk)
		return 1;
	family = sk->family;
	tun_keep(family);
	ip4 = sk->dst_ip4;
	tun_keep(ip4);
	ip6[0] = sk->dst_ip6[0];
	tun_keep(ip6[0]);
	ip6[1] = sk->dst_ip6[1];
	tun_keep(ip6[1]);
	ip6[2] = sk->dst_ip6[2];
	tun_keep(ip6[2]);
	ip6[3] = sk->dst_ip6[3];
	tun_keep(ip6[3]);
	port = sk->dst_port;
	tun_keep(port);
	__builtin_memset(&key, 0, sizeof(key));
	if (family == AF_INET)
		addr_set_v4(key.addr, ip4);
	else
		addr_copy(key.addr, ip6);
	key.port = bpf_ntohs((__u16)port);
	orig = bpf_map_lookup_elem(&tun_origs, &key);
	if (!orig)
		return 1;
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

char LICENSE[] SEC("license") = "Dual BSD/GPL";
