// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A pod's sidecar without iptables: its connections are steered through it, both ways.
 *
 * Outbound (connect4/6, sockops, getsockopt; attached at the pod's cgroup, so they run
 * before the node's socket LB and tunnel programs, which are attached at an ancestor):
 * a TCP connect() by the pod's processes to anything but loopback goes to the sidecar's
 * outbound listener on loopback instead. The original destination is kept by socket
 * cookie, then, once the source port is bound (TCP_CONNECT_CB), by the client's network
 * namespace, address and port (loopback addresses repeat in every pod); the sidecar reads
 * it back with getsockopt(SO_ORIGINAL_DST), answered here. The sidecar's own connections
 * pass untouched, except those into a tunnel it holds (sc_steer), which come back to it.
 *
 * Inbound (sk_lookup, attached to the pod's network namespace): TCP to the pod's address
 * from outside the pod is delivered to the sidecar's inbound listener whatever its port,
 * keeping the destination address (the listener's socket is put in sc_listeners by the
 * sockops program when the sidecar listens). While capture is on and no sidecar listens,
 * such connections are refused rather than let past it.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "sidecar.h"
#include "lib/addr.h"
#include "lib/ctx_addr.h"
#include "lib/origdst.h"
#include "lib/steer.h"

#define SK_DROP 0
#define SK_PASS 1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct sc_pod);
} sc_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct steer_orig);
} sc_cookies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct sc_peer_key);
	__type(value, struct steer_orig);
} sc_origs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct steer_dest_key);
	__type(value, __u32);
} sc_steer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct sc_addr_key);
	__type(value, struct sc_inbound);
} sc_inbound SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 8192);
	__type(key, struct sc_addr_key);
	__type(value, __u64);
} sc_listeners SEC(".maps");

/* Keep the structs user space mirrors in the object's BTF. */
struct sc_pod *sc_pod_anchor __attribute__((unused));
struct steer_orig *steer_orig_anchor __attribute__((unused));
struct sc_peer_key *sc_peer_key_anchor __attribute__((unused));
struct steer_dest_key *steer_dest_key_anchor __attribute__((unused));
struct sc_addr_key *sc_addr_key_anchor __attribute__((unused));
struct sc_inbound *sc_inbound_anchor __attribute__((unused));

static __always_inline int sc_is_loopback(const __u32 addr[4])
{
	if (addr_is_v4(addr))
		return (bpf_ntohl(addr[3]) >> 24) == 127;
	return addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && addr[3] == bpf_htonl(1);
}

/* True when the sidecar holds a tunnel to addr:port (an entry for the port, else for every port). */
static __always_inline int sc_tunnelled(const __u32 addr[4], __u16 port)
{
	__u32 *tunnelled = steer_dest_lookup(&sc_steer, addr, port);

	return tunnelled && *tunnelled;
}

/*
 * Decide for a connect() to addr:port; rewrites addr/port to the sidecar's outbound
 * listener and returns 1 when the connection is steered.
 */
static __always_inline int sc_steer_connect(struct bpf_sock_addr *ctx, __u32 addr[4], __u16 *port)
{
	struct sc_pod *pod;
	struct steer_orig orig;
	__u64 netns, cookie;

	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	netns = bpf_get_netns_cookie(ctx);
	pod = bpf_map_lookup_elem(&sc_pods, &netns);
	if (!pod || !(pod->flags & SC_F_CAPTURE))
		return 0;
	if (bpf_get_current_cgroup_id() == pod->sidecar_cgroup) {
		if (!sc_tunnelled(addr, *port))
			return 0;
	} else if (sc_is_loopback(addr) || addr_is_zero(addr)) {
		return 0;
	}
	steer_orig_init(&orig, addr, *port);
	cookie = bpf_get_socket_cookie(ctx);
	bpf_map_update_elem(&sc_cookies, &cookie, &orig, BPF_ANY);
	if (addr_is_v4(addr)) {
		addr_set_v4(addr, bpf_htonl(0x7f000001));
	} else {
		addr[0] = 0;
		addr[1] = 0;
		addr[2] = 0;
		addr[3] = bpf_htonl(1);
	}
	*port = pod->outbound_port;
	return 1;
}

SEC("cgroup/connect4")
int sc_connect4(struct bpf_sock_addr *ctx)
{
	__u32 addr[4];
	__u16 port = (__u16)ctx->user_port;

	addr_set_v4(addr, ctx->user_ip4);
	if (sc_steer_connect(ctx, addr, &port)) {
		ctx->user_ip4 = addr[3];
		ctx->user_port = port;
	}
	return 1;
}

SEC("cgroup/connect6")
int sc_connect6(struct bpf_sock_addr *ctx)
{
	__u32 addr[4];
	__u16 port = (__u16)ctx->user_port;

	ctx_user_ip6(ctx, addr);
	if (sc_steer_connect(ctx, addr, &port)) {
		ctx_set_user_ip6(ctx, addr);
		ctx->user_port = port;
	}
	return 1;
}

/*
 * TCP_CONNECT_CB: a steered connection's original destination, re-keyed by the client's
 * address and port. TCP_LISTEN_CB: the sidecar's inbound listener, recorded for sk_lookup.
 */
SEC("sockops")
int sc_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	__u32 addr[4], port;

	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		struct sc_peer_key key;
		struct steer_orig *orig;
		__u64 cookie = bpf_get_socket_cookie(skops);

		orig = bpf_map_lookup_elem(&sc_cookies, &cookie);
		if (!orig)
			return 1;
		ctx_sockops_local(skops, addr, &port);
		__builtin_memset(&key, 0, sizeof(key));
		key.netns = bpf_get_netns_cookie(skops);
		addr_copy(key.addr, addr);
		key.port = (__u16)port;
		bpf_map_update_elem(&sc_origs, &key, orig, BPF_ANY);
		bpf_map_delete_elem(&sc_cookies, &cookie);
	} else if (op == BPF_SOCK_OPS_TCP_LISTEN_CB) {
		struct sc_addr_key key;
		struct sc_inbound *in;

		ctx_sockops_local(skops, addr, &port);
		__builtin_memset(&key, 0, sizeof(key));
		addr_copy(key.addr, addr);
		in = bpf_map_lookup_elem(&sc_inbound, &key);
		if (in && in->inbound_port == port)
			bpf_sock_hash_update(skops, &sc_listeners, &key, BPF_ANY);
	}
	return 1;
}

/*
 * getsockopt(SO_ORIGINAL_DST) on a connection the sidecar accepted: a steered client's
 * destination; for one the kernel delivered to its inbound listener, the address the client
 * connected to, which the connection kept (as with TPROXY).
 */
SEC("cgroup/getsockopt")
int sc_getsockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct sc_peer_key key;
	struct sc_addr_key local;
	struct steer_orig found, *orig;
	__u32 family, addr[4], port, local_port;

	if (!origdst_asked(ctx) || !sk)
		return 1;
	family = ctx_sk_remote(sk, addr, &port);
	ctx_sk_local(sk, family, local.addr, &local_port);
	__builtin_memset(&key, 0, sizeof(key));
	key.netns = bpf_get_netns_cookie(ctx);
	addr_copy(key.addr, addr);
	key.port = bpf_ntohs((__u16)port);
	orig = bpf_map_lookup_elem(&sc_origs, &key);
	if (!orig) {
		if (!bpf_map_lookup_elem(&sc_inbound, &local))
			return 1;
		__builtin_memset(&found, 0, sizeof(found));
		addr_copy(found.addr, local.addr);
		found.port = bpf_htons((__u16)local_port);
		found.family = family == AF_INET ? 4 : 6;
		orig = &found;
	}
	return origdst_answer(ctx, orig);
}

/* TCP to the pod's address from outside the pod: to the sidecar's inbound listener. */
SEC("sk_lookup")
int sc_lookup(struct bpf_sk_lookup *ctx)
{
	struct sc_addr_key key;
	struct sc_inbound *in;
	struct bpf_sock *sk;
	__u32 protocol, family, local4, remote4, local6[4], remote6[4], local_port;
	__u32 remote[4];
	long err;

	/* Every field read once, before any branch: the verifier refuses offset context pointers. */
	protocol = ctx->protocol;
	ctx_keep(protocol);
	family = ctx->family;
	ctx_keep(family);
	local4 = ctx->local_ip4;
	ctx_keep(local4);
	remote4 = ctx->remote_ip4;
	ctx_keep(remote4);
	local6[0] = ctx->local_ip6[0];
	ctx_keep(local6[0]);
	local6[1] = ctx->local_ip6[1];
	ctx_keep(local6[1]);
	local6[2] = ctx->local_ip6[2];
	ctx_keep(local6[2]);
	local6[3] = ctx->local_ip6[3];
	ctx_keep(local6[3]);
	remote6[0] = ctx->remote_ip6[0];
	ctx_keep(remote6[0]);
	remote6[1] = ctx->remote_ip6[1];
	ctx_keep(remote6[1]);
	remote6[2] = ctx->remote_ip6[2];
	ctx_keep(remote6[2]);
	remote6[3] = ctx->remote_ip6[3];
	ctx_keep(remote6[3]);
	local_port = ctx->local_port;
	ctx_keep(local_port);
	if (protocol != IPPROTO_TCP)
		return SK_PASS;
	__builtin_memset(&key, 0, sizeof(key));
	if (family == AF_INET) {
		addr_set_v4(key.addr, local4);
		addr_set_v4(remote, remote4);
	} else {
		addr_copy(key.addr, local6);
		addr_copy(remote, remote6);
	}
	in = bpf_map_lookup_elem(&sc_inbound, &key);
	if (!in || !(in->flags & SC_IN_CAPTURE))
		return SK_PASS;
	/* The pod's own connections (the sidecar's upstream ones come from loopback) stay as they are. */
	if (sc_is_loopback(remote) || (remote[0] == key.addr[0] && remote[1] == key.addr[1] &&
				       remote[2] == key.addr[2] && remote[3] == key.addr[3]))
		return SK_PASS;
	if (local_port == in->inbound_port)
		return SK_PASS;
	sk = bpf_map_lookup_elem(&sc_listeners, &key);
	if (!sk)
		return SK_DROP;
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	return err ? SK_DROP : SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
