// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * L3/L4 identity policy on tc hooks of each pod's host-side veth.
 *
 * pol_from_pod runs on the veth's ingress (packets the pod sends: its egress policy and
 * anti-spoofing); pol_to_pod on its egress (packets to the pod: its ingress policy).
 * The first packet of a flow (and every TCP SYN) is judged against the policy map; an
 * allowed flow is remembered so its packets and replies pass on one conntrack lookup. Every verdict on a new flow
 * and every drop is reported (lib/events.h): as an event, or counted with its identity pair
 * once allowed flows outrun the rate the agent set. An interface without an endpoint entry
 * drops everything (fail closed).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "policy.h"
#include "lib/addr.h"
#include "lib/pkt.h"
#include "lib/pol_maps.h"
#include "lib/ipcache.h"
#include "lib/pol_lookup.h"
#include "lib/conntrack.h"
#include "lib/events.h"

/* Keeps struct pol_event in the object's BTF, where user space checks its mirror. */
struct pol_event *pol_event_btf_anchor __attribute__((unused));

static __always_inline int addr_eq(const __u32 a[4], const __u32 b[4])
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	__u32 ifindex = skb->ifindex;
	struct pol_endpoint_value *ep;
	struct pkt p;
	__u32 remote, index = 0;
	__u8 reason;
	__u64 now;
	int rc;

	rc = pkt_parse(skb, &p);
	if (rc == PKT_NOT_IP)
		return TC_ACT_OK;
	if (rc == PKT_BAD)
		return TC_ACT_SHOT;
	if (pkt_is_link_local_control(&p))
		return TC_ACT_OK;

	/*
	 * A packet of a connection this interface already allowed passes on one lookup. Its
	 * entry was made for this interface with the pod's own (checked) address at one end,
	 * so the endpoint and anti-spoofing checks below have nothing to add. A bare SYN opens
	 * a new connection even over a remembered tuple: judge it again.
	 */
	if (!(p.proto == IPPROTO_TCP && (p.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) && ct_known(&p, ifindex))
		return TC_ACT_OK;

	ep = bpf_map_lookup_elem(&pol_endpoints, &ifindex);
	if (!ep) {
		flow_report(&p, ifindex, 0, 0, dir, POL_DROPPED, POL_R_UNKNOWN_ENDPOINT, 0, bpf_ktime_get_ns());
		return TC_ACT_SHOT;
	}
	if (dir == POL_DIR_EGRESS) {
		int own = p.family == 4 ? (ep->flags & POL_EP_HAS_V4) && addr_eq(p.saddr, ep->addr4)
					: (ep->flags & POL_EP_HAS_V6) && addr_eq(p.saddr, ep->addr6);
		if (!own) {
			flow_report(&p, ifindex, ep->identity, ipcache_identity(p.daddr), dir, POL_DROPPED,
				    POL_R_SPOOFED, 0, bpf_ktime_get_ns());
			return TC_ACT_SHOT;
		}
	}
	if (pkt_is_multicast(&p))
		return TC_ACT_OK;

	remote = ipcache_identity(dir == POL_DIR_EGRESS ? p.daddr : p.saddr);
	/*
	 * The node and every node proxy are exempt, as Cilium exempts the host by default:
	 * traffic handed to a node Envoy is judged there, with the identities of both ends.
	 * Another node (POL_ID_REMOTE_NODE) is judged like any peer.
	 */
	if (remote == POL_ID_HOST || remote == POL_ID_NODE_PROXY)
		reason = POL_R_FROM_HOST;
	else
		reason = pol_decide(ep, dir, p.proto, remote, p.dport, &index);
	now = bpf_ktime_get_ns();
	if (reason == POL_R_POLICY_DENY || reason == POL_R_DEFAULT_DENY) {
		flow_report(&p, ifindex, dir == POL_DIR_EGRESS ? ep->identity : remote,
			    dir == POL_DIR_EGRESS ? remote : ep->identity, dir, POL_DROPPED, reason, index, now);
		return TC_ACT_SHOT;
	}
	ct_create(&p, ifindex, dir, index, now);
	flow_report(&p, ifindex, dir == POL_DIR_EGRESS ? ep->identity : remote,
		    dir == POL_DIR_EGRESS ? remote : ep->identity, dir, POL_FORWARDED, reason, index, now);
	return TC_ACT_OK;
}

SEC("tc")
int pol_from_pod(struct __sk_buff *skb)
{
	return handle(skb, POL_DIR_EGRESS);
}

SEC("tc")
int pol_to_pod(struct __sk_buff *skb)
{
	return handle(skb, POL_DIR_INGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
