/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map keys and values shared by sock_lb.bpf.c and meshcore.datapath.
 *
 * Every struct here has a ctypes mirror in src/meshcore/datapath/maps/; the loader checks
 * the mirror against this object's BTF (size, member names, offsets and sizes) before it
 * touches a map, so a change here without the matching Python change fails loudly.
 *
 * Addresses are 16 bytes in network byte order; IPv4 is stored v4-mapped (::ffff:a.b.c.d)
 * so one map serves both families and dual-stack sockets find IPv4 services too.
 * Ports are in network byte order. Padding is explicit so hash keys are fully defined.
 */
#ifndef MESHCORE_SOCK_LB_H
#define MESHCORE_SOCK_LB_H

#include <linux/types.h>

/* lb_service_value.flags */
#define LB_SVC_F_PROXY 0x1 /* send new connections to the node proxy on proxy_port */

/* lb_backend_value.state */
#define LB_BACKEND_ACTIVE 0
#define LB_BACKEND_TERMINATING 1

/* Map lb_services: must match ServiceKey in src/meshcore/datapath/maps/services.py */
struct lb_service_key {
	__u32 addr[4]; /* VIP */
	__u16 port;    /* VIP port */
	__u8 proto;    /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

/* Map lb_services: must match ServiceValue in src/meshcore/datapath/maps/services.py */
struct lb_service_value {
	__u32 id;            /* service id, stable for the life of the frontend */
	__u32 slot_count;    /* weighted slots 0..slot_count-1 in lb_slots; 0 refuses */
	__u32 backend_count; /* backends that take new connections */
	__u32 flags;         /* LB_SVC_F_* */
	__u16 proxy_port;    /* node proxy port when LB_SVC_F_PROXY */
	__u16 pad;
};

/* Map lb_backends (key: __u32 backend id): must match BackendValue in src/meshcore/datapath/maps/backends.py */
struct lb_backend_value {
	__u32 addr[4];
	__u16 port;
	__u8 family; /* 4 or 6 */
	__u8 state;  /* LB_BACKEND_*; only slots decide selection, this is for readers */
	__u32 service_id;
	__u32 weight;
};

/* Map lb_slots (value: __u32 backend id): must match SlotKey in src/meshcore/datapath/maps/slots.py */
struct lb_slot_key {
	__u32 service_id;
	__u32 slot;
};

/*
 * Map lb_rev_sock (key: __u32 slot, the socket cookie modulo LB_REV_SOCK_SLOTS): must match
 * RevSockValue in src/meshcore/datapath/maps/rev_sock.py
 */
#define LB_REV_SOCK_SLOTS 131072 /* a power of two: the slot is cookie & (LB_REV_SOCK_SLOTS - 1) */

struct lb_rev_sock_value {
	__u64 cookie;   /* the socket's cookie; 0: empty (no socket has cookie 0) */
	__u32 real[4];  /* address the socket really talks to (backend or proxy) */
	__u16 real_port;
	__u16 vip_port; /* the VIP port the application asked for */
	__u32 vip[4];   /* the VIP the application asked for */
	__u32 pad;
};

/* Map lb_rev_nat: must match RevNatKey in src/meshcore/datapath/maps/rev_nat.py */
struct lb_rev_nat_key {
	__u64 cookie;   /* socket cookie */
	__u32 addr[4];  /* address the socket really talks to (backend or proxy) */
	__u16 port;
	__u16 pad;
	__u32 pad2;
};

/* Map lb_rev_nat: must match RevNatValue in src/meshcore/datapath/maps/rev_nat.py */
struct lb_rev_nat_value {
	__u32 addr[4]; /* the VIP the application asked for */
	__u16 port;
	__u16 pad;
};

/* Map lb_affinity (value: __u32 backend id): must match AffinityKey in src/meshcore/datapath/maps/affinity.py */
struct lb_affinity_key {
	__u64 cookie;
	__u32 service_id;
	__u32 pad;
};

#endif /* MESHCORE_SOCK_LB_H */
