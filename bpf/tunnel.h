/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map keys and values shared by tunnel.bpf.c and meshcore.datapath: they must match the
 * mirrors in src/meshcore/datapath/maps/tunnel.py (checked against this object's BTF at
 * load). The destination key and the original destination are lib/steer.h's, as the
 * sidecar programs use them. Addresses are 16 bytes, network order, IPv4 v4-mapped, as in
 * sock_lb.h.
 */
#ifndef MESHCORE_TUNNEL_H
#define MESHCORE_TUNNEL_H

#include <linux/types.h>

#include "lib/steer.h"

/* tun_dest_value.flags */
#define TUN_F_STEER 0x1  /* TCP to this destination goes to the node proxy's outbound tunnel listener */
#define TUN_F_STRICT 0x2 /* the destination refuses clear text: UDP to it is refused at the socket */

/* Map tun_dests (key: a meshed destination, struct steer_dest_key): how it is steered. */
struct tun_dest_value {
	__u32 flags; /* TUN_F_* */
};

/* Map tun_config (array, key 0): where the node proxy's outbound tunnel listener is. */
struct tun_config {
	__u32 proxy4;        /* IPv4, network order; 0 = no proxy (steered TCP is refused) */
	__u32 proxy6[4];     /* IPv6, network order; :: = none */
	__u16 port;          /* outbound listener port, network order */
	__u16 pad;
	__u64 exempt_cgroup; /* the node proxy's cgroup: its own connections are never steered */
};

/* Map tun_origs: the client's (address, port) as the node proxy sees it → its struct steer_orig. */
struct tun_peer_key {
	__u32 addr[4];
	__u16 port; /* host order */
	__u16 pad;
};

/* tun_refusal_key.reason: why a call to a STRICT destination was refused at the client's socket. */
#define TUN_R_UDP_STRICT 1 /* UDP: the tunnel carries TCP only, and clear text is refused */
#define TUN_R_NO_PROXY 2   /* TCP: the node proxy has no address of the destination's family */

/* Map tun_refusals: refused calls counted by client (network namespace and cgroup), destination and reason. */
struct tun_refusal_key {
	__u64 netns;   /* the client's network namespace cookie (its pod) */
	__u64 cgroup;  /* the client's cgroup id */
	__u32 addr[4]; /* destination */
	__u16 port;    /* network order */
	__u8 proto;    /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 reason;   /* TUN_R_* */
	__u32 pad;
};

struct tun_refusal {
	__u64 count;    /* calls refused since the agent last took the entry */
	__u64 last_ns;  /* bpf_ktime_get_ns() of the last one */
	__u32 saddr[4]; /* the last refused socket's bound address (zero when unbound) */
	__u16 sport;    /* its bound port, host order (0: none) */
	__u16 pad;
	__u32 pad2;
};

#endif /* MESHCORE_TUNNEL_H */
