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
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "tunnel.h"
#include "lib/addr.h"
#include "lib/ctx_addr.h"
#include "lib/origdst.h"
#include "lib/steer.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct steer_dest_key);
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
	__type(value, struct steer_orig);
} tun_cookies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct tun_peer_key);
	__type(value, struct steer_orig);
} tun_origs SEC(".maps");

/* Refusals by client, destination and reason; the agent takes (reads and deletes) them each interval. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tun_refusal_key);
	__type(value, struct tun_refusal);
} tun_refusals SEC(".maps");

/* Keep the structs user space mirrors in the object's BTF. */
struct steer_dest_key *steer_dest_key_anchor __attribute__((unused));
struct tun_dest_value *tun_dest_value_anchor __attribute__((unused));
struct tun_config *tun_config_anchor __attribute__((unused));
struct steer_orig *steer_orig_anchor __attribute__((unused));
struct tun_peer_key *tun_peer_key_anchor __attribute__((unused));
struct tun_refusal_key *tun_refusal_key_anchor __attribute__((unused));
struct tun_refusal *tun_refusal_anchor __attribute__((unused));

/* Count a refused call under its client, destination and reason (best effort: a full map evicts the oldest). */
static __always_inline void tun_note_refusal(struct bpf_sock_addr *ctx, const __u32 addr[4], __u16 port,
					     __u8 proto, __u8 reason)
{
	struct tun_refusal_key key;
	struct tun_refusal one, *val;
	struct bpf_sock *sk = ctx->sk;
	__u32 family, local[4], sport;

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
		family = sk->family;
		ctx_keep(family);
		ctx_sk_local(sk, family, local, &sport);
		if (family != AF_INET || local[3]) /* an unbound IPv4 socket: no source yet */
			addr_copy(one.saddr, local);
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
	struct steer_orig orig;
	__u32 zero = 0;
	__u64 cookie, cgroup;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 1;
	cfg = bpf_map_lookup_elem(&tun_config, &zero);
	cgroup = bpf_get_current_cgroup_id();
	if (!cfg || cgroup == cfg->exempt_cgroup || bpf_map_lookup_elem(&tun_exempt, &cgroup))
		return 1;
	dest = steer_dest_lookup(&tun_dests, addr, *port);
	if (!dest || !(dest->flags & TUN_F_STEER))
		return 1;
	if (ctx->protocol == IPPROTO_UDP)
		return (dest->flags & TUN_F_STRICT) ? tun_refuse(ctx, addr, *port, IPPROTO_UDP, TUN_R_UDP_STRICT) : 1;

	steer_orig_init(&orig, addr, *port);
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

	ctx_user_ip6(ctx, addr);
	ok = tun_steer(ctx, addr, &port, 0);
	if (ok) {
		ctx_set_user_ip6(ctx, addr);
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

	ctx_user_ip6(ctx, addr);
	return tun_steer(ctx, addr, &port, 0);
}

/* Once the source port is bound, re-key the original destination by the client's address and port. */
SEC("sockops")
int tun_sockops(struct bpf_sock_ops *skops)
{
	struct tun_peer_key key;
	struct steer_orig *orig;
	__u32 addr[4], port;
	__u64 cookie;

	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	orig = bpf_map_lookup_elem(&tun_cookies, &cookie);
	if (!orig)
		return 1;
	ctx_sockops_local(skops, addr, &port);
	__builtin_memset(&key, 0, sizeof(key));
	addr_copy(key.addr, addr);
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
	struct steer_orig *orig;
	__u32 addr[4], port;

	if (!origdst_asked(ctx) || !sk)
		return 1;
	ctx_sk_remote(sk, addr, &port);
	__builtin_memset(&key, 0, sizeof(key));
	addr_copy(key.addr, addr);
	key.port = bpf_ntohs((__u16)port);
	orig = bpf_map_lookup_elem(&tun_origs, &key);
	if (!orig)
		return 1;
	return origdst_answer(ctx, orig);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
