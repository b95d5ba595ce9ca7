/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map keys and values shared by sidecar.bpf.c and meshcore.datapath: they must match the
 * mirrors in src/meshcore/datapath/maps/sidecar.py (checked against this object's BTF at
 * load). The destination key and the original destination are lib/steer.h's, as the
 * tunnel programs use them. Addresses are 16 bytes, network order, IPv4 v4-mapped, as in
 * sock_lb.h.
 */
#ifndef MESHCORE_SIDECAR_H
#define MESHCORE_SIDECAR_H

#include <linux/types.h>

#include "lib/steer.h"

/* sc_pod.flags */
#define SC_F_CAPTURE 0x1 /* steering is on (off: the pod's programs let everything pass) */

/*
 * Map sc_pods (key: the pod's network namespace cookie): how its connections are steered.
 * The pod's own processes' TCP connections go to the sidecar's outbound listener on
 * loopback; the sidecar's own (its cgroup) only when they go into a tunnel it holds
 * (sc_steer), back to that same listener.
 */
struct sc_pod {
	__u64 sidecar_cgroup; /* the sidecar's cgroup id */
	__u32 flags;          /* SC_F_* */
	__u16 outbound_port;  /* the sidecar's outbound listener on loopback, network order */
	__u16 pad;
};

/* Map sc_origs: the steered client's (network namespace, address, port) → its struct steer_orig. */
struct sc_peer_key {
	__u64 netns;    /* network namespace cookie: loopback addresses repeat across pods */
	__u32 addr[4];
	__u16 port;     /* host order */
	__u16 pad;
	__u32 pad2;
};

/* Map sc_steer (key: struct steer_dest_key; value 1: the sidecar tunnels it itself, 0: an exception). */

/* sc_inbound.flags */
#define SC_IN_CAPTURE 0x1 /* TCP to this pod address from outside the pod goes to its sidecar */

/* Map sc_inbound (key: a pod address, struct sc_addr_key): the pod's inbound capture. */
struct sc_addr_key {
	__u32 addr[4];
};

struct sc_inbound {
	__u32 flags;         /* SC_IN_* */
	__u16 inbound_port;  /* the sidecar's inbound listener on this address, host order */
	__u16 pad;
};

#endif /* MESHCORE_SIDECAR_H */
