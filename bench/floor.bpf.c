// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The floor of any per-call monitor, for bench/percall.py: EMPTY programs on the hooks
 * sockscope uses on every send and receive. Their cost is the invocation alone (trampoline,
 * retpolined indirect call, return). percall.py attaches floor_send and floor_recv for the
 * "floor" configuration, and floor_rcvspace as well for "floor+3"; with --hooks fentry or
 * kprobe, the programs of that group below.
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

/* The same floor for the fallback hook groups (bench/percall.py --hooks), on the functions
 * sockscope's groups hook that the bench's IPv4 calls pass: fexit ("fentry"), and kprobe with
 * kretprobe ("kprobe", whose returns are what count). Loaded only where the group is measured
 * (Floor's names): a kernel without the length tracepoints has no tp_btf programs above. */
SEC("fexit/inet_sendmsg")
int floor_fx_send(void *ctx)
{
	return 0;
}

SEC("fexit/inet_recvmsg")
int floor_fx_recv(void *ctx)
{
	return 0;
}

SEC("kprobe/inet_sendmsg")
int floor_kp_send(void *ctx)
{
	return 0;
}

SEC("kretprobe/inet_sendmsg")
int floor_krp_send(void *ctx)
{
	return 0;
}

SEC("kprobe/inet_recvmsg")
int floor_kp_recv(void *ctx)
{
	return 0;
}

SEC("kretprobe/inet_recvmsg")
int floor_krp_recv(void *ctx)
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

/* The counter in the fentry group: the same body, on fexit (the kprobe group has no counter: its
 * return cannot see the socket without an entry program to stash it, no longer the least). */
SEC("fexit/inet_sendmsg")
int BPF_PROG(count_fx_send, struct socket *sock, struct msghdr *msg, size_t size, int ret)
{
	return count(sock->sk, ret, 0);
}

SEC("fexit/inet_recvmsg")
int BPF_PROG(count_fx_recv, struct socket *sock, struct msghdr *msg, size_t size, int flags, int ret)
{
	return count(sock->sk, ret, 1);
}
