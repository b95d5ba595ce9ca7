/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map keys, values and events shared by policy.bpf.c and meshcore.datapath.
 *
 * Every struct has a ctypes mirror in src/meshcore/datapath/maps/pol_*.py; the enforcer
 * checks each mirror against this object's BTF before it touches a map.
 *
 * Addresses are 16 bytes in network order, IPv4 v4-mapped (::ffff:a.b.c.d), so one map
 * serves both families. Ports are in network order. Padding is explicit and zeroed.
 */
#ifndef MESHCORE_POLICY_H
#define MESHCORE_POLICY_H

#include <linux/types.h>

/* Reserved identities: must match meshcore.model.ReservedIdentity. */
#define POL_ID_ANY 0        /* wildcard in policy keys */
#define POL_ID_HOST 1       /* the node's own addresses */
#define POL_ID_WORLD 2      /* any address the ipcache does not know */
#define POL_ID_NODE_PROXY 3 /* a node proxy (Envoy), which enforces L7 policy itself */
#define POL_ID_REMOTE_NODE 4 /* another node's own addresses: judged by policy like any peer */

/* Directions (of the local endpoint): must match DIRECTION_CODES in maps/pol_policy.py */
#define POL_DIR_INGRESS 1
#define POL_DIR_EGRESS 2

/* pol_endpoint_value.flags: must match maps/pol_endpoints.py */
#define POL_EP_INGRESS_DENY 0x1 /* an ALLOW policy selects it for ingress: default deny */
#define POL_EP_EGRESS_DENY 0x2  /* ... for egress */
#define POL_EP_HAS_V4 0x4
#define POL_EP_HAS_V6 0x8

/* pol_policy_value.verdict: must match maps/pol_policy.py */
#define POL_ALLOW 1
#define POL_DENY 2

/* pol_event.verdict and .reason: must match meshcore.datapath._flows */
#define POL_FORWARDED 1
#define POL_DROPPED 2

#define POL_R_POLICY_ALLOW 1     /* an ALLOW entry matched */
#define POL_R_NO_POLICY 2        /* no ALLOW policy selects the endpoint: allowed by default */
#define POL_R_POLICY_DENY 3      /* a DENY entry matched */
#define POL_R_DEFAULT_DENY 4     /* selected by an ALLOW policy, no entry allows it */
#define POL_R_SPOOFED 5          /* source address is not the pod's own */
#define POL_R_UNKNOWN_ENDPOINT 6 /* interface carries no known endpoint: fail closed */
#define POL_R_FROM_HOST 7        /* the node or its proxy: always reachable, Envoy applies L7 policy */

/* Map pol_ipcache (LPM trie): must match IpcacheKey in maps/pol_ipcache.py */
struct pol_ipcache_key {
	__u32 prefixlen; /* v4 prefixes are 96 + length */
	__u32 addr[4];
};

/* Map pol_ipcache: must match IpcacheValue in maps/pol_ipcache.py */
struct pol_ipcache_value {
	__u32 identity;
	__u32 pad;
};

/* Map pol_endpoints (key: __u32 ifindex of the host-side veth): must match EndpointValue in maps/pol_endpoints.py */
struct pol_endpoint_value {
	__u32 identity;
	__u32 flags;    /* POL_EP_* */
	__u32 addr4[4]; /* the pod's IPv4 address, v4-mapped, when POL_EP_HAS_V4 */
	__u32 addr6[4]; /* the pod's IPv6 address, when POL_EP_HAS_V6 */
};

/*
 * Map pol_policy (LPM trie): must match PolicyKey in maps/pol_policy.py.
 * Everything before port is always fully matched (96 bits); prefixlen = 96 + the number of
 * fixed leading bits of the port, so one entry covers an aligned port block.
 */
struct pol_policy_key {
	__u32 prefixlen;
	__u32 endpoint; /* local identity */
	__u8 direction; /* POL_DIR_* */
	__u8 proto;     /* IPPROTO_*, 0 = any */
	__u16 pad;
	__u32 remote;   /* remote identity, 0 = any */
	__u16 port;     /* destination port, network order */
	__u16 pad2;
};

/* Map pol_policy: must match PolicyValue in maps/pol_policy.py */
struct pol_policy_value {
	__u8 verdict; /* POL_ALLOW / POL_DENY (already merged with containing blocks) */
	__u8 pad[3];
	__u32 policy_index; /* PolicyOrigin.index in the plan */
};

/*
 * Map pol_ct (LRU): must match CtKey in maps/pol_conntrack.py. One entry per connection and
 * interface, its ends in a fixed order (the lower address, then the lower port, first), so a
 * packet either way finds it with one lookup.
 */
struct pol_ct_key {
	__u32 addr_lo[4];
	__u32 addr_hi[4];
	__u16 port_lo;
	__u16 port_hi;
	__u32 ifindex;
	__u8 proto;
	__u8 pad[3];
};

/* Map pol_ct: must match CtValue in maps/pol_conntrack.py */
struct pol_ct_value {
	__u64 created_ns;
	__u32 policy_index;
	__u8 direction; /* POL_DIR_* of the endpoint that allowed it */
	__u8 pad[3];
};

/* Map pol_settings (array, one entry): must match Settings in maps/pol_flows.py */
#define POL_SET_LIMIT_ALLOWED 0x1 /* allowed_events_per_cpu applies; unset (as created): every flow is an event */
struct pol_settings {
	__u32 flags; /* POL_SET_* */
	/*
	 * With POL_SET_LIMIT_ALLOWED: verdict events per second and CPU for allowed flows; past
	 * it, allowed flows are only counted in pol_flow_sums. Drops are always events.
	 */
	__u32 allowed_events_per_cpu;
};

/* Map pol_flow_sums (per-CPU hash): must match FlowSumKey in maps/pol_flows.py */
struct pol_flow_key {
	__u32 src_identity;
	__u32 dst_identity;
	__u32 policy_index;
	__u32 ifindex;
	__u16 dport; /* network order */
	__u8 proto;
	__u8 direction;
	__u8 verdict;
	__u8 reason;
	__u16 pad;
};

/* Map pol_flow_sums: must match FlowSumValue in maps/pol_flows.py */
struct pol_flow_sum {
	__u64 flows; /* flows (or dropped packets) counted here instead of sent as events */
};

/* Map pol_event_stats (per-CPU array) indexes: must match STAT_* in maps/pol_flows.py */
#define POL_STAT_EVENTS 0      /* verdict events sent */
#define POL_STAT_SAMPLED 1     /* allowed flows past the event rate, counted in pol_flow_sums */
#define POL_STAT_RING_FULL 2   /* events the ring buffer had no room for, counted in pol_flow_sums */
#define POL_STAT_LOST 3        /* flows neither sent nor counted: pol_flow_sums was full */
#define POL_STAT_COUNT 4

/* Per-CPU event budget (internal; the programs alone use it). */
struct pol_event_budget {
	__u64 window_ns;
	__u32 used;
	__u32 pad;
};

/* Ring buffer pol_events: must match Event in maps/pol_events.py */
struct pol_event {
	__u64 ts_ns; /* bpf_ktime_get_ns() */
	__u32 saddr[4];
	__u32 daddr[4];
	__u32 src_identity;
	__u32 dst_identity;
	__u32 policy_index;
	__u32 ifindex;
	__u16 sport; /* network order */
	__u16 dport;
	__u8 proto;
	__u8 verdict;   /* POL_FORWARDED / POL_DROPPED */
	__u8 reason;    /* POL_R_* */
	__u8 direction; /* POL_DIR_* of the endpoint */
};

#endif /* MESHCORE_POLICY_H */
