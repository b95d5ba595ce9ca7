/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The policy decision for a new flow: DENY anywhere wins, then ALLOW, then the default. */
#ifndef MESHCORE_LIB_POL_LOOKUP_H
#define MESHCORE_LIB_POL_LOOKUP_H

#include "pol_maps.h"

#define POL_KEY_FIXED_BITS 96

static __always_inline struct pol_policy_value *pol_entry(__u32 ep, __u8 dir, __u8 proto, __u32 remote, __u16 port)
{
	struct pol_policy_key key;

	__builtin_memset(&key, 0, sizeof(key));
	key.prefixlen = POL_KEY_FIXED_BITS + 16;
	key.endpoint = ep;
	key.direction = dir;
	key.proto = proto;
	key.remote = remote;
	key.port = port;
	return bpf_map_lookup_elem(&pol_policy, &key);
}

/*
 * Four longest-prefix lookups: (remote | any) x (protocol | any). Each entry's verdict
 * already folds in the DENYs of the port blocks containing it, so combining these four is
 * the whole decision. Returns POL_R_*; *index is the deciding policy, 0 for defaults.
 */
static __always_inline __u8 pol_decide(const struct pol_endpoint_value *ep, __u8 dir, __u8 proto,
				       __u32 remote, __u16 port, __u32 *index)
{
	struct pol_policy_value *v;
	__u32 allow = 0, deny = 0;

#define POL_TRY(r, p)                                                  \
	v = pol_entry(ep->identity, dir, p, r, port);                  \
	if (v) {                                                       \
		if (v->verdict == POL_DENY && !deny)                   \
			deny = v->policy_index ? v->policy_index : ~0U; \
		else if (v->verdict == POL_ALLOW && !allow)            \
			allow = v->policy_index ? v->policy_index : ~0U; \
	}
	POL_TRY(remote, proto);
	POL_TRY(remote, 0);
	POL_TRY(POL_ID_ANY, proto);
	POL_TRY(POL_ID_ANY, 0);
#undef POL_TRY
	if (deny) {
		*index = deny == ~0U ? 0 : deny;
		return POL_R_POLICY_DENY;
	}
	if (allow) {
		*index = allow == ~0U ? 0 : allow;
		return POL_R_POLICY_ALLOW;
	}
	*index = 0;
	if (ep->flags & (dir == POL_DIR_INGRESS ? POL_EP_INGRESS_DENY : POL_EP_EGRESS_DENY))
		return POL_R_DEFAULT_DENY;
	return POL_R_NO_POLICY;
}

#endif /* MESHCORE_LIB_POL_LOOKUP_H */
