/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The policy maps. Sizes are defaults; the enforcer may change them before load. */
#ifndef MESHCORE_LIB_POL_MAPS_H
#define MESHCORE_LIB_POL_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../policy.h"

/* Address prefix → identity, longest prefix wins; IPv4 v4-mapped. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pol_ipcache_key);
	__type(value, struct pol_ipcache_value);
} pol_ipcache SEC(".maps");

/* Host-side interface index → the endpoint behind it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct pol_endpoint_value);
} pol_endpoints SEC(".maps");

/* (endpoint, direction, protocol, remote, port block) → verdict. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pol_policy_key);
	__type(value, struct pol_policy_value);
} pol_policy SEC(".maps");

/* Connections already allowed, so their later packets and replies pass with one lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct pol_ct_key);
	__type(value, struct pol_ct_value);
} pol_ct SEC(".maps");

/* Verdicts on new flows and drops, for flows and `meshcore observe`. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} pol_events SEC(".maps");

/* What the node agent asks of the programs (see struct pol_settings). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pol_settings);
} pol_settings SEC(".maps");

/* Flows counted per identity pair, port and verdict instead of sent one by one. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	/* Freed after a grace period, so a count racing the agent's drain is lost, never misplaced. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pol_flow_key);
	__type(value, struct pol_flow_sum);
} pol_flow_sums SEC(".maps");

/* Counters of what became of each verdict (POL_STAT_*). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, POL_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} pol_event_stats SEC(".maps");

/* This CPU's allowed-flow events in the current one-second window. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pol_event_budget);
} pol_event_budget SEC(".maps");

#endif /* MESHCORE_LIB_POL_MAPS_H */
