// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The floor of any per-call monitor, for bench/percall.py: EMPTY programs on the hooks
 * sockscope uses on every send and receive. Their cost is the invocation alone (trampoline,
 * retpolined indirect call, return). percall.py attaches floor_send and floor_recv for the
 * "floor" configuration, and floor_rcvspace as well for "floor+3".
 * Compiled at run time: clang -g -O2 -target bpf -D__TARGET_ARCH_x86 -I build -c floor.bpf.c
 */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>

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
