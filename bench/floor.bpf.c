// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The floor of any per-call monitor, for bench/percall.py: EMPTY programs on the hooks
 * sockscope uses on every send and receive. Their cost is the invocation alone (trampoline,
 * retpolined indirect call, return). percall.py attaches floor_send and floor_recv for the
 * "floor" configuration, and floor_rcvspace as well for "floor+3".
 * Compiled at run time: clang -g -O2 -target bpf -D__TARGET_ARCH_x86 -I build -c floor.bpf.c
 */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tp_btf/sock_send_length")
int floor_send(void *ctx)
{
	return 0;
}

SEC("tp_btf/sock_recv_length")
int floor_recv(void *ctx)
{
	return 0;
}

SEC("tp_btf/tcp_rcv_space_adjust")
int floor_rcvspace(void *ctx)
{
	return 0;
}

/* "counter": the least a per-(socket, process) count does on each call, for scale (not exact:
 * a key that lands on another's slot takes it over). The current process, the socket's
 * cookie, a per-CPU slot picked by both, an add. percall_toggle.py attaches count_send and
 * count_recv. */
struct count_slot {
	__u64 cookie;
	__u32 tgid;
	__u32 pad;
	__u64 bytes[2];
	__u64 calls[2];
	__u64 pad2[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct count_slot);
} count_slots SEC(".maps");

static __always_inline int count(struct sock *sk, int ret, int dir)
{
	__u64 cookie;
	__u32 tgid, slot;
	struct count_slot *s;

	if (ret <= 0 || !sk)
		return 0;
	cookie = sk->__sk_common.skc_cookie.counter;
	tgid = bpf_get_current_pid_tgid() >> 32;
	slot = (cookie ^ tgid) & 63;
	s = bpf_map_lookup_elem(&count_slots, &slot);
	if (!s)
		return 0;
	if (s->cookie != cookie || s->tgid != tgid) {
		s->cookie = cookie;
		s->tgid = tgid;
	}
	s->bytes[dir] += ret;
	s->calls[dir] += 1;
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(count_send, struct sock *sk, int ret, int flags)
{
	return count(sk, ret, 0);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(count_recv, struct sock *sk, int ret, int flags)
{
	return count(sk, ret, 1);
}
