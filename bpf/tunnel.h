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

#endif /* MESHCORE_TUNNEL_H */
