// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sockscope kernel side: count bytes and calls per (socket, process) in
 * per-CPU maps; record socket and process facts once, off the hot path.
 *
 * Hook groups (user space loads one counting group, the best the kernel allows):
 *   tracepoint  tp_btf sock:sock_send_length / sock:sock_recv_length (>= 6.3)
 *   fentry      fexit on inet/inet6/packet sendmsg, recvmsg (and inet_sendpage before 6.5)
 *   kprobe      kprobe + kretprobe on the same functions
 * each with tcp:tcp_destroy_sock and a TCP iterator, which claim TCP bytes read without a
 * receive call (see ss_rxseq; the kprobe group also claims at tcp:tcp_rcv_space_adjust),
 * plus, whenever they load: tp_btf sock:inet_sock_set_state (TCP facts and
 * state) and cgroup sendmsg/recvmsg hooks (peers of unconnected UDP sockets).
 *
 * Counters live in one of two identical per-CPU hash maps; ss_flows points to
 * the active one. User space swaps them each interval (the map-in-map update
 * waits for running programs) and drains the idle one, so nothing is lost
 * between reads and no entry is deleted on the hot path.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "sockscope.h"
#include "sockscope.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile struct ss_config ss_cfg = {};

struct ss_flows_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ss_flow_key);
	__type(value, struct ss_flow_val);
} ss_flows_a SEC(".maps"), ss_flows_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct ss_flows_map);
} ss_flows SEC(".maps") = {
	.values = { [0] = &ss_flows_a },
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} ss_events SEC(".maps");

/* DNS answers (struct ss_dns_event): rare, and bulky, so apart from the connection events. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 512 * 1024);
} ss_dns SEC(".maps");

struct ss_dns_event *ss_dns_event_btf __attribute__((unused));

/* Puts struct ss_event in the object's BTF, where tests/unit/test_abi.py checks its layout
 * (a ring buffer map has no value type to carry it). */
struct ss_event *ss_event_btf __attribute__((unused));

/* The hot slots, two sets of SS_HOT_SLOTS: programs count into the set from index ss_hot_base
 * (0 or SS_HOT_SLOTS) while user space reads and zeroes the other. One array addressed directly,
 * not a map-in-map like ss_flows: the fast path then does one inlined array lookup, not two
 * dependent ones. User space sets ss_hot_base before it swaps ss_flows, whose update waits for
 * every running program, so no program still counts into the set it then reads. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * SS_HOT_SLOTS);
	__type(key, __u32);
	__type(value, struct ss_hot);
} ss_hot SEC(".maps");

/* In a section of its own, so user space writes it whole without touching other globals. */
__u32 ss_hot_base SEC(".data.hotset") = 0;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct ss_sock_info);
} ss_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct ss_proc_info);
} ss_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ss_stats);
} ss_stats SEC(".maps");

/* Scratch space: a process record is too large for the BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ss_proc_info);
} ss_scratch SEC(".maps");

/* The peer of an unconnected UDP call, parked by a cgroup sock_addr hook
 * earlier in the same syscall and taken by the counting hook. */
struct ss_peer {
	__u64 cookie;
	__u8 addr[16];
	__u16 port;
	__u8 dir;
	__u8 pad[5];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid: one call in flight per thread */
	__type(value, struct ss_peer);
} ss_peers SEC(".maps");

/* Live events: who listens on a port, for the connections accepted there (the accept side
 * reaches ESTABLISHED in softirq, before any process took it). Written at listen(). */
struct ss_listen_key {
	__u32 netns;
	__u16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ss_listen_key);
	__type(value, __u32); /* tgid */
} ss_listeners SEC(".maps");

/* Live events: UDP flows announced (value: when, CLOCK_BOOTTIME), so a flow's first datagram is
 * announced once. Looked up once per flow per interval. User space deletes a flow's entry when
 * it ends the flow (udp_end, after udp.idle_timeout of quiet): its next datagram is a new start,
 * by the same rule for both ends. An evicted flow is announced again when it next moves one. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, struct ss_flow_key);
	__type(value, __u64);
} ss_udp_seen SEC(".maps");

/* kprobe fallback: the socket and flags of a call, from entry to return, in the calling
 * thread's task storage (one call in flight per thread). A slot reached through the task costs
 * no hash table update and delete a call, as an LRU hash keyed by thread did; it lives as long as
 * the thread, so its memory is bounded by the threads that make socket calls. */
struct ss_call {
	__u64 sk; /* 0: no call in flight (taken by the return) */
	__u64 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ss_call);
} ss_calls SEC(".maps");

static __always_inline void ss_stat_add(__u32 idx, __u64 n)
{
	__u32 zero = 0;
	struct ss_stats *s = bpf_map_lookup_elem(&ss_stats, &zero);

	if (s && idx < SS_STAT_MAX)
		s->v[idx] += n;
}

/* ---- slow path: facts, once per socket / process ---- */

/* An inet socket's local and remote addresses, IPv6 or v4-mapped (socket facts, live events). */
static __always_inline void ss_read_addrs(struct sock *sk, __u16 family, __u8 *laddr, __u8 *raddr)
{
	if (family == AF_INET) {
		ss_addr_v4(laddr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		ss_addr_v4(raddr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
	} else {
		struct in6_addr a;

		a = BPF_CORE_READ(sk, __sk_common.skc_v6_rcv_saddr);
		ss_addr_v6(laddr, a.in6_u.u6_addr32);
		a = BPF_CORE_READ(sk, __sk_common.skc_v6_daddr);
		ss_addr_v6(raddr, a.in6_u.u6_addr32);
	}
}

static __always_inline void ss_fill_sock(struct ss_sock_info *si, struct sock *sk, __u64 cookie)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	si->cookie = cookie;
	si->family = family;
	si->protocol = BPF_CORE_READ(sk, sk_protocol);
	si->type = BPF_CORE_READ(sk, sk_type);
	si->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	si->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	si->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	si->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (family == AF_PACKET) {
		/* No addresses; the protocol is the ethertype, in network order. */
		si->protocol = bpf_ntohs(si->protocol);
		si->ifindex = BPF_CORE_READ((struct packet_sock *)sk, ifindex);
		si->lport = 0;
		si->rport = 0;
	} else {
		ss_read_addrs(sk, family, si->laddr, si->raddr);
	}
}

static __always_inline void ss_note_sock(struct sock *sk, __u64 cookie, __u8 state, __u32 tgid)
{
	struct ss_sock_info *old = bpf_map_lookup_elem(&ss_socks, &cookie);
	struct ss_sock_info si = {};

	/* A UDP socket that connect()s later changes state: record its peer then. */
	if (old && old->state == state)
		return;
	ss_fill_sock(&si, sk, cookie);
	if (old) {
		/* Keep what was captured when it opened: after TCP_CLOSE ports read 0. */
		si.open_ns = old->open_ns;
		si.initiator = old->initiator;
		si.owner_tgid = old->owner_tgid;
		if (state == TCP_CLOSE && si.lport == 0) {
			si = *old;
			si.state = state;
		}
	} else {
		si.open_ns = bpf_ktime_get_boot_ns();
		si.owner_tgid = tgid;
	}
	if (bpf_map_update_elem(&ss_socks, &cookie, &si, BPF_ANY))
		ss_stat_add(SS_STAT_SOCK_INFO_FULL, 1);
}

static __always_inline void ss_note_proc(__u32 tgid)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	__u64 start = BPF_CORE_READ(leader, start_boottime);
	__u64 comm[SS_COMM_LEN / 8] = {};
	struct ss_proc_info *old, *p;
	__u32 zero = 0;

	bpf_probe_read_kernel_str(comm, sizeof(comm), &leader->comm);
	old = bpf_map_lookup_elem(&ss_procs, &tgid);
	if (old && old->start_ns == start) {
		__u64 *oc = (__u64 *)old->comm;

		/* Same process, same program (an exec changes the comm). */
		if (oc[0] == comm[0] && oc[1] == comm[1])
			return;
	}
	p = bpf_map_lookup_elem(&ss_scratch, &zero);
	if (!p)
		return;
	__builtin_memset(p, 0, sizeof(*p));
	p->start_ns = start;
	p->tgid = tgid;
	p->ppid = BPF_CORE_READ(leader, real_parent, tgid);
	bpf_probe_read_kernel_str(p->pcomm, sizeof(p->pcomm), BPF_CORE_READ(leader, real_parent, group_leader)->comm);
	p->netns = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	p->cgroup_id = bpf_get_current_cgroup_id();
	__u64 ug = bpf_get_current_uid_gid();
	p->uid = (__u32)ug;
	p->gid = ug >> 32;
	__builtin_memcpy(p->comm, comm, sizeof(comm));

	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	if (mm) {
		const unsigned char *name = BPF_CORE_READ(mm, exe_file, f_path.dentry, d_name.name);

		if (name)
			bpf_probe_read_kernel_str(p->exe, sizeof(p->exe), name);
		if (ss_cfg.capture_args) {
			unsigned long start_arg = BPF_CORE_READ(mm, arg_start);
			unsigned long end_arg = BPF_CORE_READ(mm, arg_end);
			__u64 len = end_arg - start_arg;

			/* A fixed-size read (the environment follows argv); only len bytes are kept.
			 * Arguments may be paged out: then user space reads /proc instead. */
			if (len > SS_ARGS_LEN)
				len = SS_ARGS_LEN;
			if (len && bpf_probe_read_user(p->args, SS_ARGS_LEN, (void *)start_arg) == 0)
				p->args_len = len;
		}
	}
	if (bpf_map_update_elem(&ss_procs, &tgid, p, BPF_ANY))
		ss_stat_add(SS_STAT_PROC_INFO_FULL, 1);
}

/* ---- hot path ---- */

static __always_inline struct ss_peer *ss_find_peer(__u64 pid_tgid, __u64 cookie, int dir)
{
	struct ss_peer *p = bpf_map_lookup_elem(&ss_peers, &pid_tgid);

	if (!p || p->cookie != cookie || p->dir != dir)
		return NULL;
	return p;
}

static __always_inline void ss_add(struct ss_flow_val *v, __u64 bytes, int dir)
{
	if (dir == SS_TX) {
		v->tx_bytes += bytes;
		v->tx_calls += 1;
	} else {
		v->rx_bytes += bytes;
		v->rx_calls += 1;
	}
}

/* Add val to key's entry in flows, creating it; a full map is counted, not silent. */
static __always_inline int ss_merge(void *flows, struct ss_flow_key *key, struct ss_flow_val *val)
{
	struct ss_flow_val *v = bpf_map_lookup_elem(flows, key);
	long err;

	if (!v) {
		err = bpf_map_update_elem(flows, key, val, BPF_NOEXIST);
		if (err == 0)
			return 1; /* new entry */
		if (err == -SS_EEXIST)
			v = bpf_map_lookup_elem(flows, key);
		if (!v) {
			ss_stat_add(SS_STAT_DROPPED_EVENTS, val->tx_calls + val->rx_calls);
			ss_stat_add(SS_STAT_DROPPED_BYTES, val->tx_bytes + val->rx_bytes);
			return 0;
		}
	}
	v->tx_bytes += val->tx_bytes;
	v->rx_bytes += val->rx_bytes;
	v->tx_calls += val->tx_calls;
	v->rx_calls += val->rx_calls;
	return 0;
}

/* The endpoints of a socket into a live event (family, addresses, ports, netns). */
static __always_inline void ss_event_addrs(struct ss_event *e, struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	e->family = family;
	e->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	ss_read_addrs(sk, family, e->laddr, e->raddr);
}

/* Live: announce a UDP flow's first datagram (or its first after a quiet spell). Runs on the
 * first call of a key in an interval, so once per flow per interval at most. */
static __always_inline void ss_udp_start(struct sock *sk, struct ss_flow_key *key, __u64 bytes, int dir)
{
	struct ss_event *e;
	__u64 now;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP ||
	    BPF_CORE_READ(sk, __sk_common.skc_family) == AF_PACKET)
		return;
	if (bpf_map_lookup_elem(&ss_udp_seen, key))
		return;
	now = bpf_ktime_get_boot_ns();
	bpf_map_update_elem(&ss_udp_seen, key, &now, BPF_ANY);
	e = bpf_ringbuf_reserve(&ss_events, sizeof(*e), 0);
	if (!e) {
		ss_stat_add(SS_STAT_EVENTS_LOST, 1);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	ss_event_addrs(e, sk);
	e->ts_ns = now;
	e->cookie = key->cookie;
	e->tgid = key->tgid;
	e->protocol = IPPROTO_UDP;
	e->type = SS_EV_UDP_START;
	e->tx_bytes = bytes;
	e->flags = dir == SS_RX ? SS_EVF_RX : 0;
	if (key->rport) { /* an unconnected socket's datagram: its own peer */
		__builtin_memcpy(e->raddr, key->raddr, sizeof(e->raddr));
		e->rport = key->rport;
	}
	bpf_ringbuf_submit(e, 0);
}

/* The hot slot of a socket: its cookie's low bits. Cookies come from a counter, so the sockets
 * a thread opened together hold distinct slots (a hash would collide among 8 keys in 64
 * slots one time in 4); the shifted bits spread cookies from other CPUs' batches and
 * socket addresses (the kprobe fallback's keys, aligned to the slab object). By socket
 * alone, since the fast path knows the thread only once it holds a slot (ss_ident). */
static __always_inline __u32 ss_hot_slot(__u64 cookie)
{
	return (cookie ^ (cookie >> 6) ^ (cookie >> 12)) & (SS_HOT_SLOTS - 1);
}

/* The slot of a socket on this CPU, in the set programs count into now (NULL: none). */
static __always_inline struct ss_hot *ss_hot_of(__u64 cookie)
{
	__u32 idx = (ss_hot_base & SS_HOT_SLOTS) | ss_hot_slot(cookie);

	return bpf_map_lookup_elem(&ss_hot, &idx);
}

/* ---- the calling thread without a helper call ----
 * bpf_get_current_pid_tgid() is a helper call, whose return costs about 20 ns a program on CPUs
 * whose returns are mitigated (Safe RET), as much as the rest of a fast path. A thread is told
 * instead by the kernel stack its program runs on: a 16 KiB block of it names one live task. A
 * dead task's stack may go to a new one, so each block has a generation that every new task moves
 * for its stack's blocks before it can run (ss_tp_newtask); a slot names (block, generation), and
 * its process (tgid) as the slow path found it when it filled the slot with a block it checked
 * against its task's own stack (ss_ident_checked). A hit therefore is the same thread, so the same
 * process; any doubt (another thread, a new generation, a frame not on its task's stack: a private
 * or interrupt stack) is a miss, and the slow path asks the helpers. */

#define SS_STACKGEN (1 << 12)  /* generations, by block (a hash: a collision is a needless miss) */
#define SS_STACK_BLOCKS 4      /* a task's stack: up to 64 KiB (KASAN, 64 KiB pages) */

__u32 ss_stackgen[SS_STACKGEN] SEC(".data.stackgen") = {};

static __always_inline __u64 ss_ident_of(__u64 block)
{
	return block | (__u64)ss_stackgen[block & (SS_STACKGEN - 1)] << SS_IDENT_GEN_SHIFT;
}

/* The calling thread's ident, from the address of a variable in this frame, stored into the CPU's
 * slot and read back (the verifier lets a privileged program turn a pointer into a number by way
 * of a map value only). 0 (which no slot holds): read back changed, as when another program on
 * this CPU ran in between. */
static __always_inline __u64 ss_ident(struct ss_hot *hot)
{
	__u64 here, sp, num;

	hot->scratch = (__u64)&here;
	asm volatile("" ::: "memory");
	sp = *(volatile __u64 *)&hot->scratch;
	/* A copy the compiler cannot tie to &here: past the test below it would compute with the
	 * pointer itself, which the verifier refuses. */
	asm volatile("%0 = %1" : "=r"(num) : "r"(sp));
	if (sp != (__u64)&here)
		return 0;
	return ss_ident_of(num >> SS_STACK_SHIFT);
}

/* What a slot may hold for the calling thread: ident if its block is the bottom of the task's own
 * stack, else SS_IDENT_NONE (a frame on another stack, or a stack of more than a block with the
 * frame higher up: that thread's calls take the slow path). Off the fast path: two helper calls. */
static __always_inline __u64 ss_ident_checked(__u64 ident)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 block = (__u64)BPF_CORE_READ(task, stack) >> SS_STACK_SHIFT; /* a number, not a pointer */

	if ((ident & ((1ULL << SS_IDENT_GEN_SHIFT) - 1)) != block)
		return SS_IDENT_NONE;
	return ident;
}

/* What ss_count_slow needs of a call besides the socket, cookie and pid, in one argument (a
 * BPF function takes five): the byte count (a call's int), direction, whether the call may name
 * a datagram peer, and the socket's state. */
#define SS_ARG_DIR (1ULL << 32)
#define SS_ARG_UNCONNECTED (1ULL << 33)
#define SS_ARG_KIND_SHIFT 34 /* 3 bits: enum ss_hot_flag */
#define SS_ARG_STATE_SHIFT 40

/* The rest of ss_count, out of line (a BPF-to-BPF call): a key not in its CPU's slot, or the
 * datagram of an unconnected socket. Kept apart so the inline fast path stays small and its
 * values stay in registers. */
static __noinline __u16 ss_count_slow(struct sock *sk, __u64 cookie, __u64 pid_tgid, __u64 arg, __u64 ident)
{
	__u32 tgid = pid_tgid >> 32;
	int dir = arg & SS_ARG_DIR ? SS_RX : SS_TX;
	__u64 bytes = (__u32)arg;
	__u8 state = arg >> SS_ARG_STATE_SHIFT;
	__u32 kind = (arg >> SS_ARG_KIND_SHIFT) & 7;
	struct ss_peer *peer = NULL;
	struct ss_hot *hot = NULL;
	__u32 zero = 0;
	void *flows;

	if (arg & SS_ARG_UNCONNECTED)
		peer = ss_find_peer(pid_tgid, cookie, dir);
	if (!peer) {
		hot = ss_hot_of(cookie);
		/* Held already: by another thread of the process, or this one whose block has a new
		 * generation or could not be told (the slot now names this thread); an unconnected
		 * socket's call that named no peer (recv() without an address). */
		if (hot && hot->cookie == cookie && hot->tgid == tgid) {
			hot->ident = ss_ident_checked(ident);
			ss_add(&hot->val, bytes, dir);
			return 0;
		}
	}

	struct ss_flow_key key = {};
	struct ss_flow_val nv = {};

	key.cookie = cookie;
	key.tgid = tgid;
	if (peer) {
		__builtin_memcpy(key.raddr, peer->addr, sizeof(key.raddr));
		key.rport = peer->port;
		peer->cookie = 0; /* consumed: a later call without an address must not reuse it */
	}

	flows = bpf_map_lookup_elem(&ss_flows, &zero);
	if (!flows)
		return key.rport;
	ss_add(&nv, bytes, dir);
	if (ss_merge(flows, &key, &nv)) {
		/* First call of this key in this interval. */
		ss_note_sock(sk, cookie, state, key.tgid);
		ss_note_proc(key.tgid);
		if (ss_cfg.live)
			ss_udp_start(sk, &key, bytes, dir);
	}
	if (!hot)
		return key.rport;
	/* This key takes the CPU's cache; what the previous key gathered goes to the map. */
	if (hot->val.tx_calls | hot->val.rx_calls) {
		struct ss_flow_key old = {};

		old.cookie = hot->cookie;
		old.tgid = hot->tgid;
		ss_merge(flows, &old, &hot->val);
	}
	hot->cookie = cookie;
	hot->ident = ss_ident_checked(ident);
	hot->tgid = tgid;
	hot->kind = kind;
	__builtin_memset(&hot->val, 0, sizeof(hot->val));
	return key.rport;
}

/* A call whose key the caller found not in its slot (or may name a datagram peer): straight
 * to the slow path, without looking at the slot again inline. */
static __always_inline __u16 ss_count_miss(struct sock *sk, __u64 cookie, int unconnected_udp, __u8 state,
					   __u64 bytes, int dir, __u64 pid_tgid, __u32 kind, __u64 ident)
{
	return ss_count_slow(sk, cookie, pid_tgid,
			     (__u32)bytes | (dir == SS_RX ? SS_ARG_DIR : 0) |
				     (unconnected_udp ? SS_ARG_UNCONNECTED : 0) | ((__u64)kind << SS_ARG_KIND_SHIFT) |
				     ((__u64)state << SS_ARG_STATE_SHIFT),
			     ident);
}

/* Count one call. sk is only dereferenced (CO-RE reads) on first sight of a key. Returns the
 * port of the datagram's peer when the call named one (unconnected UDP), else 0. The fast
 * path, inline: a connected key whose slot on this CPU names the calling thread. */
static __always_inline __u16 ss_count(struct sock *sk, __u64 cookie, int unconnected_udp, __u8 state,
				     __u64 bytes, int dir, __u64 pid_tgid, __u32 kind)
{
	struct ss_hot *hot = ss_hot_of(cookie);
	__u64 ident = 0;

	if (hot) {
		ident = ss_ident(hot);
		if (!unconnected_udp && hot->cookie == cookie && hot->ident == ident) {
			ss_add(&hot->val, bytes, dir);
			return 0;
		}
	}
	return ss_count_miss(sk, cookie, unconnected_udp, state, bytes, dir, pid_tgid, kind, ident);
}

/* Group "tp": the socket layer's own length tracepoints (kernel >= 6.3). */

/* The cookie without a helper call once the kernel assigned it (the helper assigns it once). */
static __always_inline __u64 ss_cookie(struct sock *sk)
{
	__u64 cookie = sk->__sk_common.skc_cookie.counter;

	return cookie ? cookie : bpf_get_socket_cookie(sk);
}

/* Which sockets may carry a datagram peer parked by the cgroup hooks. */
static __always_inline int ss_unconnected_udp(__u16 family, __u16 protocol, __u8 state)
{
	return family != AF_PACKET && protocol == IPPROTO_UDP && state != TCP_ESTABLISHED;
}

static __always_inline __u32 ss_hot_kind(__u16 family, __u16 protocol)
{
	__u32 dns = ss_cfg.dns ? SS_HOT_DNS : 0;

	if (family == AF_PACKET)
		return 0; /* sk_protocol is the ethertype there */
	if (protocol == IPPROTO_TCP)
		return (ss_cfg.tcp_rx_by_seq ? SS_HOT_CLAIM : 0) | dns;
	return protocol == IPPROTO_UDP ? SS_HOT_UDP | dns : 0;
}

/* TCP receives are counted as advances of copied_seq, which every way of reading moves:
 * recvmsg, splice() (tcp_read_sock, which sock_recv_length does not see), zero-copy
 * receive, io_uring. A struct ss_rxclaim holds where the count stopped (in the socket's slot
 * of ss_claims, else in its storage, ss_rxseq). Each advance is claimed once,
 * by compare-and-swap, by whichever comes first: the reader's own receive hook (in its
 * context: that call's bytes and whatever was read since without one), the iterator user
 * space runs before a read (ss_iter_rxseq: the splice() reads of a socket that makes no
 * receive call), the socket's end (tcp_destroy_sock), and in the kprobe group, whose
 * returns cannot reach socket storage, tcp_rcv_space_adjust. */

/* Where a socket's reads were claimed up to: the sequence number and a tag (the low half of the
 * socket's cookie) in one 64-bit word, compared and swapped as one, so a claim on a slot of
 * ss_claims that changed hands in between fails instead of moving another socket's count. */
union ss_seqtag {
	struct {
		__u32 seq;
		__u32 tag;
	};
	__u64 word;
};

struct ss_rxclaim {
	union ss_seqtag at;
	__u32 tgid;     /* the last process that read it by a call: who the other claims count for */
	__u16 fin_seen; /* the FIN's sequence number was taken off once */
	__u16 valid;    /* at.seq is set (storage and slots start zeroed) */
};

struct ss_rxseq {
	struct ss_rxclaim c; /* used only when the socket holds no slot of ss_claims */
	/* Live totals at the end (ss_tp_end): the counters as the connection reached ESTABLISHED.
	 * bytes_acked and bytes_received are 64-bit; the 32-bit sequence differences beside them
	 * are what was queued but not yet acked, or received but not yet read. */
	__u64 acked0;
	__u64 received0;
	__u32 unacked0;   /* write_seq - snd_una */
	__u32 unread0;    /* rcv_nxt - copied_seq */
	__u32 owner;      /* connect()/listen() caller: who the end counts for if no reader is known */
	__u8 started;     /* the snapshot above is set */
	__u8 fin_sent;    /* we queued a FIN (went to FIN_WAIT1 or LAST_ACK): one sequence number, no byte */
	__u8 initiator;
	__u8 closed;      /* reached CLOSE with data still to read: the end waits for the socket's free */
	/* At CLOSE: the totals then, and the sequence numbers they were taken at (see ss_tp_end). */
	__u64 tx_close;
	__u64 rx_close;
	__u32 write_close;
	__u32 copied_close;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ss_rxseq);
} ss_rxseq SEC(".maps");

/* The claim state of TCP sockets, direct-mapped by cookie: a receive finds its socket's state
 * with an inlined array lookup, not a helper call (bpf_sk_storage_get costs as much as the rest
 * of the program on machines whose returns are mitigated). A slot is taken when a socket is
 * first claimed for (ESTABLISHED, or its first read) and given back at its end; a socket whose
 * slot is held by another keeps its state in its storage (ss_rxseq.c) for its whole life.
 * User space sizes the map (a power of two) and sets ss_cfg.claim_mask to match. */
#define SS_CLAIM_SLOTS (1 << 16)

struct ss_claim_slot {
	__u64 cookie; /* the holder; 0: free */
	struct ss_rxclaim c;
	__u64 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SS_CLAIM_SLOTS);
	__type(key, __u32);
	__type(value, struct ss_claim_slot);
} ss_claims SEC(".maps");

static __always_inline struct ss_claim_slot *ss_claim_slot(__u64 cookie)
{
	__u32 idx = cookie & ss_cfg.claim_mask;

	return bpf_map_lookup_elem(&ss_claims, &idx);
}

/* A socket's claim state: its slot if it holds one, else its storage's (st may be NULL). */
static __always_inline struct ss_rxclaim *ss_claim_find(__u64 cookie, struct ss_rxseq *st)
{
	struct ss_claim_slot *s = ss_claim_slot(cookie);

	if (s && s->cookie == cookie)
		return &s->c;
	return st ? &st->c : NULL;
}

/* Start claiming at seq: in the socket's slot, taken now if free, unless its storage's state is
 * in use already (a socket never moves its state). NULL: neither could be had. */
static __always_inline struct ss_rxclaim *ss_claim_begin(__u64 cookie, struct ss_rxseq *st, __u32 seq)
{
	struct ss_claim_slot *s = ss_claim_slot(cookie);
	struct ss_rxclaim *c = NULL;
	union ss_seqtag at;

	if (s && (s->cookie == cookie ||
		  ((!st || !st->c.valid) && __sync_val_compare_and_swap(&s->cookie, 0, cookie) == 0)))
		c = &s->c;
	else if (st)
		c = &st->c;
	if (c) {
		at.seq = seq;
		at.tag = cookie;
		c->at.word = at.word; /* one store: a stale claim's compare-and-swap sees no half of it */
		c->fin_seen = 0;
		c->valid = 1;
	}
	return c;
}

/* The socket's end: its slot is free for another (the last reader is kept for ss_tp_end). */
static __always_inline void ss_claim_end(__u64 cookie, struct ss_rxseq *st)
{
	struct ss_claim_slot *s = ss_claim_slot(cookie);

	if (!s || s->cookie != cookie)
		return;
	if (st)
		st->c.tgid = s->c.tgid;
	s->c.valid = 0;
	__sync_val_compare_and_swap(&s->cookie, cookie, 0);
}

/* The kernel's tcp_sock of a TCP socket. cast: by bpf_rdonly_cast, which the verifier turns into
 * a move (kernels >= 6.2: the tracepoint group's, whose programs alone use it), else by the
 * bpf_skc_to_tcp_sock helper. The kfunc is weak: an object whose programs that call it are not
 * loaded still loads where it is missing. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

static __always_inline struct tcp_sock *ss_tcp_sock(struct sock *sk, int cast)
{
	if (cast)
		return bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
	return bpf_skc_to_tcp_sock(sk);
}

static __always_inline struct ss_rxseq *ss_rxseq_start(struct sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	struct ss_rxseq *st;

	if (!tp)
		return NULL;
	st = bpf_sk_storage_get(&ss_rxseq, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (ss_cfg.tcp_rx_by_seq)
		ss_claim_begin(ss_cookie(sk), st, tp->copied_seq);
	if (st) {
		st->acked0 = tp->bytes_acked;
		st->received0 = tp->bytes_received;
		st->unacked0 = tp->write_seq - tp->snd_una;
		st->unread0 = tp->rcv_nxt - tp->copied_seq;
		st->fin_sent = 0;
		st->closed = 0;
		st->started = 1; /* again after a disconnect and a new connect() on the same socket */
	}
	return st;
}

/* The bytes read since the last claim; 0 when another claimant took them first (a claim
 * that loses the race leaves the rest to the next one: nothing is counted twice or lost). */
static __always_inline __u32 ss_claim(struct sock *sk, struct tcp_sock *tp, struct ss_rxclaim *c)
{
	union ss_seqtag cur, next;
	__u32 seq = tp->copied_seq, delta;

	cur.word = c->at.word;
	delta = seq - cur.seq; /* u32: sequence wrap is fine */
	if (delta == 0 || delta > (1U << 30))
		return 0;
	next.word = cur.word;
	next.seq = seq;
	if (__sync_val_compare_and_swap(&c->at.word, cur.word, next.word) != cur.word)
		return 0;
	/* A consumed FIN advances copied_seq by one (tcp_recvmsg and tcp_read_sock alike): once
	 * the peer's FIN is in (SOCK_DONE) and all is consumed, one of those numbers was no byte. */
	if (!c->fin_seen &&
	    (sk->__sk_common.skc_flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) &&
	    seq == tp->rcv_nxt) { /* rcv_nxt last: this test is false on almost every call */
		c->fin_seen = 1;
		delta--;
	}
	return delta;
}

/* Add bytes read to (socket, tgid) from outside the reader's context: no call, no peer. */
static __always_inline void ss_count_for(struct sock *sk, __u64 cookie, __u32 tgid, __u32 bytes)
{
	struct ss_flow_key key = {};
	struct ss_flow_val nv = {};
	__u32 zero = 0;
	void *flows;

	key.cookie = cookie;
	key.tgid = tgid;
	nv.rx_bytes = bytes;
	flows = bpf_map_lookup_elem(&ss_flows, &zero);
	if (flows && ss_merge(flows, &key, &nv))
		ss_note_sock(sk, cookie, sk->__sk_common.skc_state, tgid);
}

/* Claim what was read without a receive call, for the last process that read by one, else
 * the one that opened it (0, unattributed, when neither is known). Returns the bytes claimed. */
static __always_inline __u32 ss_claim_rest(struct sock *sk, __u64 cookie, struct ss_rxclaim *c)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	struct ss_sock_info *si;
	__u32 bytes, tgid;

	if (!tp || !c->valid)
		return 0;
	bytes = ss_claim(sk, tp, c);
	if (!bytes)
		return 0;
	tgid = c->tgid;
	if (!tgid) {
		si = bpf_map_lookup_elem(&ss_socks, &cookie);
		if (si)
			tgid = si->owner_tgid;
	}
	ss_count_for(sk, cookie, tgid, bytes);
	return bytes;
}

/* A read by tgid, in its context, off the slot fast path: what it claims of copied_seq. First
 * sight (no claim state yet: a socket open before sockscope started, or whose open was missed)
 * starts the count here and returns -1: the caller knows what to count for the read under way. */
static __always_inline long ss_claim_read(struct sock *sk, struct tcp_sock *tp, __u64 cookie, __u32 tgid)
{
	struct ss_rxseq *st = bpf_sk_storage_get(&ss_rxseq, sk, 0, 0);
	struct ss_rxclaim *c = ss_claim_find(cookie, st);

	if (!c || !c->valid) {
		if (!st)
			st = bpf_sk_storage_get(&ss_rxseq, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		c = ss_claim_begin(cookie, st, tp->copied_seq);
		if (c)
			c->tgid = tgid;
		return -1;
	}
	c->tgid = tgid;
	return ss_claim(sk, tp, c);
}

/* A TCP receive whose socket holds no slot yet, or keeps its state in its storage; on first
 * sight the call's own bytes are counted. */
static __noinline int ss_tcp_rx_slow(struct sock *sk, __u64 cookie, int ret, __u32 tgid)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	long bytes;

	if (!tp)
		return ret;
	bytes = ss_claim_read(sk, tp, cookie, tgid);
	return bytes < 0 ? ret : bytes;
}

/* A TCP receive's bytes: what it claims of copied_seq. cast: see ss_tcp_sock. */
static __always_inline int ss_tcp_rx(struct sock *sk, __u64 cookie, int ret, __u32 tgid, int cast)
{
	struct ss_claim_slot *s = ss_claim_slot(cookie);
	struct tcp_sock *tp;

	if (!s || s->cookie != cookie || !s->c.valid)
		return ss_tcp_rx_slow(sk, cookie, ret, tgid);
	tp = ss_tcp_sock(sk, cast);
	if (!tp)
		return ret;
	if (s->c.tgid != tgid)
		s->c.tgid = tgid;
	return ss_claim(sk, tp, &s->c);
}

/* ---- DNS answers, as the process that asked read them ---- */

#define SS_NR_READ 0 /* x86-64 system call numbers */
#define SS_NR_READV 19
#define SS_NR_RECVFROM 45
#define SS_NR_RECVMSG 47

/* The user buffer the current receive call copied into: from the system call's own arguments
 * (the registers saved at its entry), so no program runs on any path but the receive hook.
 * 0 when the call is none of these (recvmmsg, io_uring: counted as unread). */
static __always_inline __u64 ss_user_buffer(__u64 *room)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	struct user_msghdr msg;
	struct iovec iov;
	__u64 iovp;

	*room = ~0ULL;
	switch (BPF_CORE_READ(regs, orig_ax)) {
	case SS_NR_READ:
	case SS_NR_RECVFROM:
		return BPF_CORE_READ(regs, si);
	case SS_NR_RECVMSG:
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)BPF_CORE_READ(regs, si)))
			return 0;
		iovp = (__u64)msg.msg_iov;
		break;
	case SS_NR_READV:
		iovp = BPF_CORE_READ(regs, si);
		break;
	default:
		return 0;
	}
	/* The first buffer of the vector: what fits there (a DNS answer comes in one, in practice). */
	if (bpf_probe_read_user(&iov, sizeof(iov), (void *)iovp))
		return 0;
	*room = iov.iov_len;
	return (__u64)iov.iov_base;
}

/* Out of line: rare, and long. */
static __noinline void ss_dns_capture(struct sock *sk, __u64 cookie, __u32 tgid, int ret, __u8 protocol)
{
	struct ss_dns_event *e;
	__u64 buf, room;
	__u64 len = (__u32)ret; /* 64-bit all through: older verifiers lose a 32-bit bound here */

	buf = ss_user_buffer(&room);
	if (!buf) {
		ss_stat_add(SS_STAT_DNS_UNREAD, 1);
		return;
	}
	if (len > room)
		len = room;
	if (len > SS_DNS_MAX)
		len = SS_DNS_MAX;
	e = bpf_ringbuf_reserve(&ss_dns, sizeof(*e), 0);
	if (!e) {
		ss_stat_add(SS_STAT_DNS_LOST, 1);
		return;
	}
	if (bpf_probe_read_user(e->data, len, (void *)buf)) {
		bpf_ringbuf_discard(e, 0);
		ss_stat_add(SS_STAT_DNS_UNREAD, 1);
		return;
	}
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->cookie = cookie;
	e->tgid = tgid;
	e->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	e->len = ret;
	e->captured = len;
	e->protocol = protocol;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
}

/* Whether a receive is DNS: its peer is port 53 (the datagram's, for an unconnected socket;
 * else the socket's, dport in network order). */
static __always_inline int ss_is_dns(__u16 protocol, __u16 peer_port, __u16 dport)
{
	if (protocol != IPPROTO_UDP && protocol != IPPROTO_TCP)
		return 0;
	return peer_port ? peer_port == 53 : dport == bpf_htons(53);
}

/* The fast path of a call (tp_btf, fexit): its socket's slot on this CPU names the calling
 * thread, as most calls' do. It reads two fields of the socket, tells the thread by its stack,
 * and adds; no helper call. NULL: the slow path, with *ident (0 if not told). */
static __always_inline struct ss_hot *ss_hot_hit(struct sock *sk, __u64 cookie, __u64 *ident)
{
	struct ss_hot *hot = ss_hot_of(cookie); /* a cookie not assigned yet (0) uses slot 0's scratch */

	*ident = 0;
	if (!hot)
		return NULL;
	*ident = ss_ident(hot);
	if (!cookie || hot->cookie != cookie || hot->ident != *ident)
		return NULL;
	/* A UDP socket no longer connected may name a peer per datagram: the slow path looks. */
	if ((hot->kind & SS_HOT_UDP) && sk->__sk_common.skc_state != TCP_ESTABLISHED)
		return NULL;
	return hot;
}

/* Count a send that returned ret, off the fast path. sk is a BTF pointer (tp_btf, fexit). */
static __noinline int ss_send_slow(struct sock *sk, int ret, __u64 ident)
{
	__u16 family = sk->__sk_common.skc_family, protocol = sk->sk_protocol;
	__u8 state = sk->__sk_common.skc_state;

	ss_count_miss(sk, ss_cookie(sk), ss_unconnected_udp(family, protocol, state), state, ret, SS_TX,
		      bpf_get_current_pid_tgid(), ss_hot_kind(family, protocol), ident);
	return 0;
}

static __always_inline int ss_on_send(struct sock *sk, int ret)
{
	struct ss_hot *hot;
	__u64 ident;

	if (ret <= 0 || !sk || !ss_is_counted(sk->__sk_common.skc_family))
		return 0;
	hot = ss_hot_hit(sk, sk->__sk_common.skc_cookie.counter, &ident);
	if (!hot)
		return ss_send_slow(sk, ret, ident);
	hot->val.tx_bytes += ret;
	hot->val.tx_calls += 1;
	return 0;
}

/* Count a receive that returned ret, off the fast path (a MSG_PEEK, a key not in its slot). */
static __noinline int ss_recv_slow(struct sock *sk, int ret, int flags, __u64 ident)
{
	__u16 family = sk->__sk_common.skc_family, protocol = sk->sk_protocol;
	int orig = ret; /* what the call returned (the TCP claim may differ) */
	__u64 pid_tgid;

	if (flags & MSG_PEEK) {
		ss_stat_add(SS_STAT_PEEK_SKIPPED, 1);
		return 0;
	}
	__u8 state = sk->__sk_common.skc_state;
	__u64 cookie = ss_cookie(sk);
	__u16 peer_port;

	pid_tgid = bpf_get_current_pid_tgid();
	if (ss_cfg.tcp_rx_by_seq && protocol == IPPROTO_TCP && family != AF_PACKET)
		ret = ss_tcp_rx(sk, cookie, ret, pid_tgid >> 32, 0);

	peer_port = ss_count_miss(sk, cookie, ss_unconnected_udp(family, protocol, state), state, ret, SS_RX, pid_tgid,
				  ss_hot_kind(family, protocol), ident);
	if (ss_cfg.dns && family != AF_PACKET && ss_is_dns(protocol, peer_port, sk->__sk_common.skc_dport))
		ss_dns_capture(sk, cookie, pid_tgid >> 32, orig, protocol);
	return 0;
}

/* cast: the caller is a tracepoint program (see ss_tcp_sock). */
static __always_inline int ss_on_recv(struct sock *sk, int ret, int flags, int cast)
{
	struct ss_hot *hot;
	__u64 cookie, ident;
	__u32 kind;
	int bytes;

	if (ret <= 0 || !sk || !ss_is_counted(sk->__sk_common.skc_family))
		return 0;
	cookie = sk->__sk_common.skc_cookie.counter;
	hot = ss_hot_hit(sk, cookie, &ident);
	if (!hot || (flags & MSG_PEEK))
		return ss_recv_slow(sk, ret, flags, ident);
	kind = hot->kind;
	bytes = ret;
	if (kind & SS_HOT_CLAIM)
		bytes = ss_tcp_rx(sk, cookie, ret, hot->tgid, cast);
	hot->val.rx_bytes += bytes;
	hot->val.rx_calls += 1;
	/* Connected: the socket's own peer is the datagram's (ss_is_dns). */
	if ((kind & SS_HOT_DNS) && sk->__sk_common.skc_dport == bpf_htons(53))
		ss_dns_capture(sk, cookie, hot->tgid, ret, kind & SS_HOT_UDP ? IPPROTO_UDP : IPPROTO_TCP);
	return 0;
}

/* Group "tracepoint": the socket layer's own length tracepoints (kernel >= 6.3). */

SEC("tp_btf/sock_send_length")
int BPF_PROG(ss_tp_send, struct sock *sk, int ret, int flags)
{
	return ss_on_send(sk, ret);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(ss_tp_recv, struct sock *sk, int ret, int flags)
{
	return ss_on_recv(sk, ret, flags, 1);
}

/* Every new task, before it can run: the blocks its stack covers get a new generation, so a slot
 * that named a dead thread whose stack this one took no longer matches (ss_ident). Every counting
 * group attaches it first (loader.py). */
SEC("tp_btf/task_newtask")
int BPF_PROG(ss_tp_newtask, struct task_struct *task)
{
	__u64 block = (__u64)BPF_CORE_READ(task, stack) >> SS_STACK_SHIFT;

	for (int i = 0; i < SS_STACK_BLOCKS; i++)
		__sync_fetch_and_add(&ss_stackgen[(block + i) & (SS_STACKGEN - 1)], 1);
	return 0;
}

/* The kprobe group's TCP receives (see ss_rxseq). */
SEC("tp_btf/tcp_rcv_space_adjust")
int BPF_PROG(ss_tp_rcvspace, struct sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 cookie;
	long bytes;

	if (!tp)
		return 0;
	cookie = ss_cookie(sk);
	/* First sight: the bytes of the read under way are not known here, so not counted. */
	bytes = ss_claim_read(sk, tp, cookie, pid_tgid >> 32);
	if (bytes > 0)
		ss_count(sk, cookie, 0, sk->__sk_common.skc_state, bytes, SS_RX, pid_tgid,
			 ss_hot_kind(AF_INET, IPPROTO_TCP));
	return 0;
}

/* The end of a TCP socket: what was read since the last claim (by splice(), say); its slot
 * of ss_claims is given back. A socket never given a cookie was never claimed for. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(ss_tp_destroy, struct sock *sk)
{
	__u64 cookie = sk->__sk_common.skc_cookie.counter;
	struct ss_rxclaim *c;
	struct ss_rxseq *st;

	if (!cookie)
		return 0;
	st = bpf_sk_storage_get(&ss_rxseq, sk, 0, 0);
	c = ss_claim_find(cookie, st);
	if (c)
		ss_claim_rest(sk, cookie, c);
	ss_claim_end(cookie, st);
	return 0;
}

/* Run by user space before a read: what was read without a receive call since. It walks the
 * TCP sockets of the network namespace it is run from (see bpf/splice.py), and prints the
 * bytes it claimed (a __u32 per socket that had some): user space runs it every interval
 * while it finds some, less often while it finds none. */
SEC("iter/tcp")
int ss_iter_rxseq(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct ss_rxclaim *c;
	struct tcp_sock *tp;
	struct ss_rxseq *st;
	__u64 cookie;
	__u32 bytes;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0; /* a request or time-wait socket: nothing left to read */
	cookie = tp->inet_conn.icsk_inet.sk.__sk_common.skc_cookie.counter;
	if (!cookie)
		return 0; /* never claimed for */
	st = bpf_sk_storage_get(&ss_rxseq, tp, 0, 0);
	c = ss_claim_find(cookie, st);
	if (!c)
		return 0;
	bytes = ss_claim_rest((struct sock *)tp, cookie, c);
	if (bytes)
		bpf_seq_write(ctx->meta->seq, &bytes, sizeof(bytes));
	return 0;
}

/* Group "fentry": fexit where sock_sendmsg/sock_recvmsg dispatch to a family (kernels
 * with BTF but no length tracepoints). These are the functions the length tracepoints sit
 * beside, one call each per send or receive: TCP, UDP (v4-mapped included: udpv6_sendmsg
 * calls udp_sendmsg, but both run under one inet6_sendmsg), ping, raw and packet sockets,
 * io_uring and mmsg. Before 6.5 sendfile()/splice() to a socket goes through sendpage.
 * The return value is an int: declared as such, a negative one (-EAGAIN) stays negative. */

SEC("fexit/inet_sendmsg")
int BPF_PROG(ss_fx_inet_sendmsg, struct socket *sock, struct msghdr *msg, size_t size, int ret)
{
	return ss_on_send(sock->sk, ret);
}

SEC("fexit/inet6_sendmsg")
int BPF_PROG(ss_fx_inet6_sendmsg, struct socket *sock, struct msghdr *msg, size_t size, int ret)
{
	return ss_on_send(sock->sk, ret);
}

SEC("fexit/packet_sendmsg")
int BPF_PROG(ss_fx_packet_sendmsg, struct socket *sock, struct msghdr *msg, size_t size, int ret)
{
	return ss_on_send(sock->sk, ret);
}

SEC("fexit/inet_sendpage")
int BPF_PROG(ss_fx_inet_sendpage, struct socket *sock, struct page *page, int offset, size_t size, int flags,
	     long ret)
{
	return ss_on_send(sock->sk, ret);
}

SEC("fexit/inet_recvmsg")
int BPF_PROG(ss_fx_inet_recvmsg, struct socket *sock, struct msghdr *msg, size_t size, int flags, int ret)
{
	return ss_on_recv(sock->sk, ret, flags, 0);
}

SEC("fexit/inet6_recvmsg")
int BPF_PROG(ss_fx_inet6_recvmsg, struct socket *sock, struct msghdr *msg, size_t size, int flags, int ret)
{
	return ss_on_recv(sock->sk, ret, flags, 0);
}

SEC("fexit/packet_recvmsg")
int BPF_PROG(ss_fx_packet_recvmsg, struct socket *sock, struct msghdr *msg, size_t size, int flags, int ret)
{
	return ss_on_recv(sock->sk, ret, flags, 0);
}

/* Group "kprobe": the same functions; entry stashes the socket and flags, return counts. */

static __always_inline int ss_kp_enter(struct socket *sock, __u64 flags)
{
	struct ss_call *c = bpf_task_storage_get(&ss_calls, bpf_get_current_task_btf(), 0,
						 BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!c) { /* out of memory, or the storage busy on this CPU: the call goes uncounted */
		ss_stat_add(SS_STAT_CALLS_UNSTASHED, 1);
		return 0;
	}
	c->sk = (__u64)BPF_CORE_READ(sock, sk);
	c->flags = flags;
	return 0;
}

/* A kprobe return reads its socket with bpf_probe_read_kernel, a helper call per read. dport,
 * family and state lie within 8 bytes of each other in sock_common (skc_portpair, skc_family,
 * skc_state), so one read takes all three; the offsets are CO-RE's, and a kernel laid out
 * otherwise gets one read each. Nonzero: the socket could not be read. */
static __always_inline int ss_kp_sock_common(struct sock *sk, __u16 *dport, __u16 *family, __u8 *state)
{
	__u32 base = bpf_core_field_offset(sk->__sk_common.skc_dport);
	__u32 fam = bpf_core_field_offset(sk->__sk_common.skc_family) - base;
	__u32 st = bpf_core_field_offset(sk->__sk_common.skc_state) - base;
	__u64 raw = 0;

	if (fam > 6 || st > 7) {
		*dport = BPF_CORE_READ(sk, __sk_common.skc_dport);
		*family = BPF_CORE_READ(sk, __sk_common.skc_family);
		*state = BPF_CORE_READ(sk, __sk_common.skc_state);
		return 0;
	}
	if (bpf_probe_read_kernel(&raw, sizeof(raw), (void *)sk + base))
		return -1;
	*dport = raw; /* little-endian: the first two bytes, as a __be16 load of them */
	*family = raw >> (fam * 8);
	*state = raw >> (st * 8);
	return 0;
}

static __always_inline int ss_kp_exit(int ret, int dir)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct ss_call *c = bpf_task_storage_get(&ss_calls, task, 0, 0);
	struct ss_hot *hot;
	struct sock *sk;
	__u64 cookie, id, flags, ident;
	__u16 family, protocol, peer_port, dport;
	__u32 tgid, kind;
	__u8 state;

	if (!c || !c->sk)
		return 0;
	sk = (struct sock *)c->sk;
	flags = c->flags;
	c->sk = 0; /* taken: a return whose entry did not run (attached mid-call) finds none */
	if (ret <= 0 || ss_kp_sock_common(sk, &dport, &family, &state) || !ss_is_counted(family))
		return 0;
	cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (!cookie)
		cookie = (__u64)sk | SS_COOKIE_FROM_PTR;
	if (dir == SS_RX && (flags & MSG_PEEK)) {
		ss_stat_add(SS_STAT_PEEK_SKIPPED, 1);
		return 0;
	}
	tgid = task->tgid;
	id = (__u64)tgid << 32 | (__u32)task->pid; /* bpf_get_current_pid_tgid(), without the call */

	/* The other groups' fast path: a slot that names this thread needs no more of the socket
	 * (the slot's kind says its protocol), bar a UDP socket no longer connected (ss_hot_hit). */
	hot = ss_hot_of(cookie);
	ident = hot ? ss_ident(hot) : 0;
	if (hot && hot->cookie == cookie && hot->ident == ident &&
	    !((hot->kind & SS_HOT_UDP) && state != TCP_ESTABLISHED)) {
		kind = hot->kind;
		if (dir == SS_TX || !(kind & SS_HOT_CLAIM)) /* a claimed read: counted at tcp_rcv_space_adjust */
			ss_add(&hot->val, ret, dir);
		if (dir == SS_RX && (kind & SS_HOT_DNS) && dport == bpf_htons(53))
			ss_dns_capture(sk, cookie, tgid, ret, kind & SS_HOT_UDP ? IPPROTO_UDP : IPPROTO_TCP);
		return 0;
	}

	protocol = BPF_CORE_READ(sk, sk_protocol);
	if (dir == SS_RX && ss_cfg.tcp_rx_by_seq && protocol == IPPROTO_TCP && family != AF_PACKET) {
		/* Counted at tcp_rcv_space_adjust; only a DNS answer is taken here. */
		if (ss_cfg.dns && ss_is_dns(protocol, 0, dport))
			ss_dns_capture(sk, cookie, tgid, ret, protocol);
		return 0;
	}
	peer_port = ss_count_miss(sk, cookie, ss_unconnected_udp(family, protocol, state), state, ret, dir, id,
				  ss_hot_kind(family, protocol), ident);
	if (dir == SS_RX && ss_cfg.dns && family != AF_PACKET && ss_is_dns(protocol, peer_port, dport))
		ss_dns_capture(sk, cookie, tgid, ret, protocol);
	return 0;
}

/* The return value is read as an int: -EAGAIN must stay negative. */
#define SS_KPROBE(fn, dir, flags_expr)                                       \
	SEC("kprobe/" #fn)                                                   \
	int BPF_KPROBE(ss_kp_##fn, struct socket *sock)                      \
	{                                                                    \
		return ss_kp_enter(sock, flags_expr);                        \
	}                                                                    \
	SEC("kretprobe/" #fn)                                                \
	int BPF_KRETPROBE(ss_krp_##fn, long ret)                             \
	{                                                                    \
		return ss_kp_exit((int)ret, dir);                            \
	}

/* recvmsg(sock, msg, size, flags): flags is the fourth argument. */
SS_KPROBE(inet_sendmsg, SS_TX, 0)
SS_KPROBE(inet6_sendmsg, SS_TX, 0)
SS_KPROBE(packet_sendmsg, SS_TX, 0)
SS_KPROBE(inet_sendpage, SS_TX, 0)
SS_KPROBE(inet_recvmsg, SS_RX, PT_REGS_PARM4(ctx))
SS_KPROBE(inet6_recvmsg, SS_RX, PT_REGS_PARM4(ctx))
SS_KPROBE(packet_recvmsg, SS_RX, PT_REGS_PARM4(ctx))

/* Group "state": TCP facts captured when the connection opens, state kept current. */

static __always_inline void ss_emit(const struct ss_sock_info *si, __u8 type, __u8 oldstate, __u32 tgid)
{
	struct ss_event *e = bpf_ringbuf_reserve(&ss_events, sizeof(*e), 0);

	if (!e) {
		ss_stat_add(SS_STAT_EVENTS_LOST, 1);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->cookie = si->cookie;
	e->open_ns = si->open_ns;
	__builtin_memcpy(e->laddr, si->laddr, sizeof(e->laddr));
	__builtin_memcpy(e->raddr, si->raddr, sizeof(e->raddr));
	e->netns = si->netns;
	e->owner_tgid = si->owner_tgid;
	e->family = si->family;
	e->lport = si->lport;
	e->rport = si->rport;
	e->type = type;
	e->initiator = si->initiator;
	e->oldstate = oldstate;
	e->tgid = tgid;
	e->protocol = IPPROTO_TCP;
	bpf_ringbuf_submit(e, 0);
}

/* Live: the end of a TCP connection, with what the application wrote and read in all, from
 * the counters TCP keeps, less the snapshot taken at ESTABLISHED (ss_rxseq_start):
 *   written = acked since + queued unacked now - queued unacked then - our FIN
 *   read    = received since - unread now + unread then - the peer's FIN if consumed
 * (bytes_acked/bytes_received are 64-bit; a consumed FIN advanced copied_seq by one: see
 * ss_claim). Taken when it reaches CLOSE, while the counters hold: a disconnect (an abort,
 * SO_LINGER 0) resets them right after. Announced then, unless data is still queued to be read
 * (the peer's reply after our half-close, say): then when the socket is freed (ss_tp_end). */
static __always_inline int ss_fin_in(const struct sock *sk)
{
	return !!(sk->__sk_common.skc_flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE)));
}

static __always_inline void ss_end_emit(struct sock *sk, struct ss_rxseq *st, __u64 tx, __u64 rx)
{
	struct ss_event *e = bpf_ringbuf_reserve(&ss_events, sizeof(*e), 0);
	struct ss_rxclaim *c;

	if (!e) {
		ss_stat_add(SS_STAT_EVENTS_LOST, 1);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->cookie = ss_cookie(sk);
	e->type = SS_EV_TCP_END;
	e->protocol = IPPROTO_TCP;
	e->initiator = st->initiator;
	c = ss_claim_find(e->cookie, st);
	e->tgid = c && c->tgid ? c->tgid : st->owner;
	e->owner_tgid = st->owner;
	e->flags = SS_EVF_TOTALS;
	e->tx_bytes = tx;
	e->rx_bytes = rx;
	/* Ports and addresses may read 0 once closed: user space has them from the open. */
	bpf_ringbuf_submit(e, 0);
}

static __always_inline void ss_end_at_close(struct sock *sk, struct ss_rxseq *st)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	__u32 unread, data_unread;
	int fin_in;
	__u64 tx, rx;

	if (!tp)
		return;
	unread = tp->rcv_nxt - tp->copied_seq;
	fin_in = ss_fin_in(sk);
	data_unread = fin_in && unread ? unread - 1 : unread; /* a FIN not yet read is no byte */
	tx = tp->bytes_acked - st->acked0 + (__u32)(tp->write_seq - tp->snd_una) - st->unacked0 - st->fin_sent;
	rx = tp->bytes_received - st->received0 - unread + st->unread0 - (fin_in && !unread);
	if (data_unread == 0) {
		st->started = 0; /* ended: nothing at the free */
		ss_end_emit(sk, st, tx, rx);
		return;
	}
	st->closed = 1;
	st->tx_close = tx;
	st->rx_close = rx;
	st->write_close = tp->write_seq;
	st->copied_close = tp->copied_seq;
}

/* The socket is freed (tcp:tcp_destroy_sock): its owner closed it, nothing more can be read. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(ss_tp_end, struct sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	struct ss_rxseq *st;
	__u32 read;

	if (!ss_cfg.live || !tp)
		return 0;
	st = bpf_sk_storage_get(&ss_rxseq, sk, 0, 0);
	if (!st || !st->started || !st->closed)
		return 0; /* not established while sockscope watched, or announced at CLOSE */
	st->started = 0;
	if (tp->write_seq != st->write_close) {
		/* A disconnect moved write_seq on (and set copied_seq past what was queued, unread):
		 * nothing was read after CLOSE that sockscope can tell. */
		ss_end_emit(sk, st, st->tx_close, st->rx_close);
		return 0;
	}
	read = tp->copied_seq - st->copied_close;
	if (read && ss_fin_in(sk) && tp->copied_seq == tp->rcv_nxt)
		read--; /* the EOF was read after CLOSE */
	ss_end_emit(sk, st, st->tx_close, st->rx_close + read);
	return 0;
}

/* Live: a process starts listening (we are in its listen() call). */
static __always_inline void ss_listen(const struct sock *sk)
{
	struct ss_listen_key lk = {};
	struct ss_event *e;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	lk.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	lk.port = sk->__sk_common.skc_num;
	if (!lk.port)
		return; /* listen() before bind(): the port is chosen after this state change */
	bpf_map_update_elem(&ss_listeners, &lk, &tgid, BPF_ANY);
	ss_note_proc(tgid);
	e = bpf_ringbuf_reserve(&ss_events, sizeof(*e), 0);
	if (!e) {
		ss_stat_add(SS_STAT_EVENTS_LOST, 1);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	ss_event_addrs(e, (struct sock *)sk);
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->cookie = bpf_get_socket_cookie((void *)sk);
	e->tgid = tgid;
	e->protocol = IPPROTO_TCP;
	e->type = SS_EV_TCP_LISTEN;
	bpf_ringbuf_submit(e, 0);
}

/* Who an ESTABLISHED connection is for: its connect() caller, else (accepted) whoever listens
 * on its port in its namespace. The snapshot for the end's totals is taken here too. */
static __always_inline __u32 ss_established(struct sock *sk, const struct ss_sock_info *si)
{
	struct ss_rxseq *st = ss_rxseq_start(sk);
	struct ss_listen_key lk = {};
	__u32 tgid = si->owner_tgid, *owner;

	if (!tgid && si->initiator != SS_INIT_LOCAL) {
		lk.netns = si->netns;
		lk.port = si->lport;
		owner = bpf_map_lookup_elem(&ss_listeners, &lk);
		if (owner)
			tgid = *owner;
	}
	if (st) {
		st->owner = tgid;
		st->initiator = si->initiator;
	}
	return tgid;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(ss_tp_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct ss_sock_info *old, si = {};
	struct ss_rxseq *st;
	__u64 cookie;

	if (sk->sk_protocol != IPPROTO_TCP || !ss_is_inet(sk->__sk_common.skc_family))
		return 0;
	if (newstate == TCP_LISTEN) {
		if (ss_cfg.live)
			ss_listen(sk);
		return 0;
	}
	if (ss_cfg.live && (newstate == TCP_FIN_WAIT1 || newstate == TCP_LAST_ACK || newstate == TCP_CLOSE)) {
		st = bpf_sk_storage_get(&ss_rxseq, (struct sock *)sk, 0, 0);
		if (st && st->started) {
			if (newstate == TCP_CLOSE)
				ss_end_at_close((struct sock *)sk, st);
			else /* entered by queueing our FIN (tcp_close_state, then tcp_send_fin) */
				st->fin_sent = 1;
		}
	}
	cookie = bpf_get_socket_cookie((void *)sk);
	old = bpf_map_lookup_elem(&ss_socks, &cookie);
	if (old) {
		old->state = newstate;
		/* Addresses and ports are final once established; after close they read 0. */
		if (newstate == TCP_ESTABLISHED) {
			ss_fill_sock(&si, (struct sock *)sk, cookie);
			__builtin_memcpy(old->laddr, si.laddr, sizeof(si.laddr));
			__builtin_memcpy(old->raddr, si.raddr, sizeof(si.raddr));
			old->lport = si.lport;
			old->rport = si.rport;
			ss_emit(old, SS_EV_TCP_OPEN, oldstate, ss_established((struct sock *)sk, old));
		} else if (newstate == TCP_CLOSE) {
			ss_emit(old, SS_EV_TCP_CLOSE, oldstate, 0);
		}
		return 0;
	}
	if (newstate == TCP_CLOSE)
		return 0;
	ss_fill_sock(&si, (struct sock *)sk, cookie);
	si.state = newstate;
	si.open_ns = bpf_ktime_get_boot_ns();
	if (newstate == TCP_SYN_SENT) {
		/* connect() runs in the caller's context: that process opened it. */
		si.initiator = SS_INIT_LOCAL;
		si.owner_tgid = bpf_get_current_pid_tgid() >> 32;
		/* It may never call send (a splice() reader): name it now. */
		ss_note_proc(si.owner_tgid);
	} else if (oldstate == TCP_SYN_RECV || newstate == TCP_SYN_RECV) {
		si.initiator = SS_INIT_REMOTE;
	}
	if (bpf_map_update_elem(&ss_socks, &cookie, &si, BPF_NOEXIST) == -SS_E2BIG)
		ss_stat_add(SS_STAT_SOCK_INFO_FULL, 1);
	if (newstate == TCP_ESTABLISHED)
		ss_emit(&si, SS_EV_TCP_OPEN, oldstate, ss_established((struct sock *)sk, &si));
	return 0;
}

/* Group "peers": the address of each unconnected UDP datagram (cgroup v2 root). */

static __always_inline void ss_park(struct bpf_sock_addr *ctx, int v6, int dir)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ss_peer p = {};

	p.cookie = bpf_get_socket_cookie(ctx);
	p.dir = dir;
	p.port = bpf_ntohs((__u16)ctx->user_port);
	if (v6) {
		__u32 a[4];

		a[0] = ctx->user_ip6[0];
		a[1] = ctx->user_ip6[1];
		a[2] = ctx->user_ip6[2];
		a[3] = ctx->user_ip6[3];
		ss_addr_v6(p.addr, a);
	} else {
		ss_addr_v4(p.addr, ctx->user_ip4);
	}
	bpf_map_update_elem(&ss_peers, &id, &p, BPF_ANY);
}

SEC("cgroup/sendmsg4")
int ss_sendmsg4(struct bpf_sock_addr *ctx)
{
	ss_park(ctx, 0, SS_TX);
	return 1;
}

SEC("cgroup/sendmsg6")
int ss_sendmsg6(struct bpf_sock_addr *ctx)
{
	ss_park(ctx, 1, SS_TX);
	return 1;
}

SEC("cgroup/recvmsg4")
int ss_recvmsg4(struct bpf_sock_addr *ctx)
{
	ss_park(ctx, 0, SS_RX);
	return 1;
}

SEC("cgroup/recvmsg6")
int ss_recvmsg6(struct bpf_sock_addr *ctx)
{
	ss_park(ctx, 1, SS_RX);
	return 1;
}
