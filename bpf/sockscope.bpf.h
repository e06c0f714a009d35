/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Kernel-only helpers for sockscope.bpf.c. */
#ifndef SOCKSCOPE_BPF_H
#define SOCKSCOPE_BPF_H

#define AF_INET 2
#define AF_INET6 10
#define AF_PACKET 17
#define MSG_PEEK 2
#define SS_ENOENT 2
#define SS_EEXIST 17
#define SS_E2BIG 7

/* Sockets whose cookie could not be read (kprobe fallback on an unseen socket)
 * are keyed by their address with this bit set, so they never collide with a cookie. */
#define SS_COOKIE_FROM_PTR (1ULL << 63)

static __always_inline int ss_is_inet(__u16 family)
{
	return family == AF_INET || family == AF_INET6;
}

/* Sockets whose bytes are counted: IP (TCP, UDP, ping, raw) and packet sockets. */
static __always_inline int ss_is_counted(__u16 family)
{
	/* One test of a bit, not three compares: this runs on every socket's every call. */
	return family < 32 && ((1U << AF_INET | 1U << AF_INET6 | 1U << AF_PACKET) >> family) & 1;
}

/* IPv4 stored as v4-mapped IPv6 (::ffff:a.b.c.d), so one peer is one key whichever hook saw it. */
static __always_inline void ss_addr_v4(__u8 *dst, __u32 be_addr)
{
	__u32 *d = (__u32 *)dst;
	d[0] = 0;
	d[1] = 0;
	d[2] = bpf_htonl(0x0000ffff);
	d[3] = be_addr;
}

static __always_inline void ss_addr_v6(__u8 *dst, const __u32 *src)
{
	__u32 *d = (__u32 *)dst;
	d[0] = src[0];
	d[1] = src[1];
	d[2] = src[2];
	d[3] = src[3];
}

#endif /* SOCKSCOPE_BPF_H */
