/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Parsing the headers policy needs from an Ethernet frame into a flow tuple. */
#ifndef MESHCORE_LIB_PKT_H
#define MESHCORE_LIB_PKT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "addr.h"

#define PKT_NOT_IP 0
#define PKT_OK 1
#define PKT_BAD 2

struct pkt {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport; /* network order; 0 without ports */
	__u16 dport;
	__u8 proto;
	__u8 family; /* 4 or 6 */
	__u8 tcp_flags;
	__u8 icmp_type;
};

#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

static __always_inline int pkt_ports(struct __sk_buff *skb, __u32 off, struct pkt *p)
{
	__u16 ports[2];

	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP || p->proto == IPPROTO_SCTP) {
		if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
			return PKT_BAD;
		p->sport = ports[0];
		p->dport = ports[1];
		if (p->proto == IPPROTO_TCP && bpf_skb_load_bytes(skb, off + 13, &p->tcp_flags, 1) < 0)
			return PKT_BAD;
	} else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		if (bpf_skb_load_bytes(skb, off, &p->icmp_type, 1) < 0)
			return PKT_BAD;
	}
	return PKT_OK;
}

/* pkt_parse through bpf_skb_load_bytes: for headers outside the linear data. */
static __always_inline int pkt_parse_copied(struct __sk_buff *skb, struct pkt *p)
{
	__u16 proto;

	__builtin_memset(p, 0, sizeof(*p));
	if (bpf_skb_load_bytes(skb, 12, &proto, sizeof(proto)) < 0)
		return PKT_BAD;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return PKT_BAD;
		p->family = 4;
		p->proto = ip.protocol;
		addr_set_v4(p->saddr, ip.saddr);
		addr_set_v4(p->daddr, ip.daddr);
		/* Later fragments carry no ports; they are judged as portless packets. */
		if (ip.frag_off & bpf_htons(0x1fff))
			return PKT_OK;
		return pkt_ports(skb, ETH_HLEN + ip.ihl * 4, p);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return PKT_BAD;
		p->family = 6;
		p->proto = ip6.nexthdr;
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
		return pkt_ports(skb, ETH_HLEN + sizeof(ip6), p);
	}
	return PKT_NOT_IP;
}

/* Ports and TCP flags (or the ICMP type) read in place; PKT_BAD when they lie beyond ``end``. */
static __always_inline int pkt_ports_direct(const __u8 *l4, const void *end, struct pkt *p)
{
	if (p->proto == IPPROTO_TCP) {
		if ((const void *)(l4 + 14) > end)
			return PKT_BAD;
		p->tcp_flags = l4[13];
	} else if (p->proto == IPPROTO_UDP || p->proto == IPPROTO_SCTP) {
		if ((const void *)(l4 + 4) > end)
			return PKT_BAD;
	} else {
		if ((p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6)) {
			if ((const void *)(l4 + 1) > end)
				return PKT_BAD;
			p->icmp_type = l4[0];
		}
		return PKT_OK;
	}
	p->sport = *(const __u16 *)l4;
	p->dport = *(const __u16 *)(l4 + 2);
	return PKT_OK;
}

/*
 * Fill p from skb; PKT_NOT_IP for frames policy does not govern (ARP, ...). The headers are
 * read in place from the linear data (no helper call per field), or copied when they are
 * not all there.
 */
static __always_inline int pkt_parse(struct __sk_buff *skb, struct pkt *p)
{
	const void *data = (const void *)(long)skb->data;
	const void *end = (const void *)(long)skb->data_end;
	const struct ethhdr *eth = data;

	if ((const void *)(eth + 1) > end)
		return pkt_parse_copied(skb, p);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		const struct iphdr *ip = (const void *)(eth + 1);
		__u32 ihl;

		if ((const void *)(ip + 1) > end)
			return pkt_parse_copied(skb, p);
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return PKT_BAD;
		__builtin_memset(p, 0, sizeof(*p));
		p->family = 4;
		p->proto = ip->protocol;
		addr_set_v4(p->saddr, ip->saddr);
		addr_set_v4(p->daddr, ip->daddr);
		if (ip->frag_off & bpf_htons(0x1fff))
			return PKT_OK;
		if (pkt_ports_direct((const __u8 *)ip + ihl, end, p) == PKT_OK)
			return PKT_OK;
		return pkt_parse_copied(skb, p);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		const struct ipv6hdr *ip6 = (const void *)(eth + 1);

		if ((const void *)(ip6 + 1) > end)
			return pkt_parse_copied(skb, p);
		__builtin_memset(p, 0, sizeof(*p));
		p->family = 6;
		p->proto = ip6->nexthdr;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		if (pkt_ports_direct((const __u8 *)(ip6 + 1), end, p) == PKT_OK)
			return PKT_OK;
		return pkt_parse_copied(skb, p);
	}
	__builtin_memset(p, 0, sizeof(*p));
	return PKT_NOT_IP;
}

/* Neighbour discovery and link-local ICMPv6 (ND, MLD): the link works before policy. */
static __always_inline int pkt_is_link_local_control(const struct pkt *p)
{
	if (p->family != 6 || p->proto != IPPROTO_ICMPV6)
		return 0;
	if (p->icmp_type >= 133 && p->icmp_type <= 137)
		return 1;
	return (p->saddr[0] & bpf_htonl(0xffc00000)) == bpf_htonl(0xfe800000) || addr_is_zero(p->saddr);
}

/* Multicast and broadcast destinations are not flows between identities. */
static __always_inline int pkt_is_multicast(const struct pkt *p)
{
	if (p->family == 4) {
		__u32 d = bpf_ntohl(p->daddr[3]);
		return (d >> 28) == 0xe || d == 0xffffffff;
	}
	return (p->daddr[0] & bpf_htonl(0xff000000)) == bpf_htonl(0xff000000);
}

#endif /* MESHCORE_LIB_PKT_H */
