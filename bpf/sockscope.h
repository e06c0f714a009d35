/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Records shared by the kernel programs (sockscope.bpf.c) and user space.
 * Defined here once; src/sockscope/bpf/abi.py mirrors them and
 * tests/unit/test_abi.py checks the mirror against the compiled object's BTF.
 * Fixed-width types only, explicit padding, so both sides agree on the layout.
 */
#ifndef SOCKSCOPE_H
#define SOCKSCOPE_H

#define SS_COMM_LEN 16
#define SS_EXE_LEN 64
#define SS_ARGS_LEN 256

enum ss_dir {
	SS_TX = 0,
	SS_RX = 1,
};

/* Hot-path key: one entry per (socket, process[, peer]) per interval. */
struct ss_flow_key {
	__u64 cookie;    /* socket cookie: unique per socket for the whole boot */
	__u32 tgid;      /* process that made the call */
	__u16 rport;     /* peer of an unconnected socket (host order); 0 if connected */
	__u16 pad;
	__u8 raddr[16];  /* peer of an unconnected socket, IPv6 or v4-mapped; 0 if connected */
};

/* Per-CPU counters for one flow key. */
struct ss_flow_val {
	__u64 tx_bytes;
	__u64 rx_bytes;
	__u64 tx_calls;
	__u64 rx_calls;
};

/* Per-CPU cache of the connected keys a CPU saw last, direct-mapped by socket: calls on
 * a few sockets at once (a ping-pong, a proxy reading one socket and writing another)
 * add here (an array slot) instead of hashing every call. A key that takes a slot
 * flushes what the previous one gathered into the flow map; user space drains both
 * each interval. 64 slots: a thread on 4 connections has 8 socket ends (8 keys in 8
 * slots collided almost always). */
#define SS_HOT_SLOTS 64

/* What a hit in a slot must still do, decided when its key takes the slot (from the socket's
 * protocol, which never changes, and the settings, which are fixed at load): the fast path
 * tests bits of a field it loads anyway instead of reading settings and the protocol. */
enum ss_hot_flag {
	SS_HOT_UDP = 1,   /* counts only while connected (else a datagram may name its peer) */
	SS_HOT_CLAIM = 2, /* TCP receives: claim copied_seq (ss_rxseq) */
	SS_HOT_DNS = 4,   /* TCP or UDP, DNS capture on: a receive from peer port 53 is captured */
};

/* A thread, told without a helper call: the 16 KiB block of its kernel stack (where the
 * program's own stack frame lies), with that block's generation (ss_stackgen, moved on each
 * new task whose stack covers it) in the top bits. SS_IDENT_NONE: a slot whose thread could
 * not be told so (its frame was not on its task's stack): it never matches. */
#define SS_STACK_SHIFT 14
#define SS_IDENT_GEN_SHIFT 50 /* kernel addresses >> 14 fit in 50 bits */
#define SS_IDENT_NONE 1ULL

/* One slot: a connected key's socket and the thread that last counted into it (ident; tgid
 * is its process, the key), and their counts; one cache line. */
struct ss_hot {
	__u64 cookie;
	__u64 ident;   /* see SS_STACK_SHIFT */
	__u32 tgid;
	__u32 kind;    /* enum ss_hot_flag bits */
	__u64 scratch; /* where a program turns its frame's address into a number */
	struct ss_flow_val val;
};

enum ss_initiator {
	SS_INIT_UNKNOWN = 0,
	SS_INIT_LOCAL = 1,  /* we sent the SYN (connect) */
	SS_INIT_REMOTE = 2, /* the peer did (accept) */
};

/* Facts about a socket, recorded once when first seen and on TCP state changes. */
struct ss_sock_info {
	__u64 cookie;
	__u64 open_ns;      /* CLOCK_BOOTTIME when sockscope first saw it open */
	__u8 laddr[16];     /* IPv6, or v4-mapped for IPv4 */
	__u8 raddr[16];
	__u32 netns;        /* network namespace inode */
	__u32 owner_tgid;   /* process that first moved bytes on it (0 if unknown) */
	__u16 family;       /* AF_INET / AF_INET6 */
	__u16 protocol;     /* IPPROTO_* */
	__u16 type;         /* SOCK_STREAM / SOCK_DGRAM / SOCK_RAW */
	__u16 lport;        /* host order */
	__u16 rport;        /* host order */
	__u8 state;         /* TCP state (UDP: TCP_ESTABLISHED when connected) */
	__u8 initiator;     /* enum ss_initiator */
	__u32 ifindex;      /* AF_PACKET: the interface it is bound to (0: all) */
};

/* Facts about a process, captured in the kernel so short-lived ones keep a name. */
struct ss_proc_info {
	__u64 start_ns;     /* group leader's start time, CLOCK_BOOTTIME (matches /proc/PID/stat) */
	__u64 cgroup_id;
	__u32 tgid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 args_len;     /* bytes valid in args (NUL-separated argv) */
	__u32 netns;        /* network namespace inode of the process */
	char comm[SS_COMM_LEN];  /* group leader's comm: io_uring workers carry their own */
	char pcomm[SS_COMM_LEN]; /* parent's comm, for traffic done by helpers */
	char exe[SS_EXE_LEN];    /* basename of the executable */
	char args[SS_ARGS_LEN];  /* start of the command line */
};

enum ss_event_type {
	SS_EV_TCP_OPEN = 1,   /* reached ESTABLISHED */
	SS_EV_TCP_CLOSE = 2,  /* reached CLOSE */
	/* Live events (ss_cfg.live: a consumer hands them on as they happen) */
	SS_EV_TCP_LISTEN = 3, /* listen(): in the caller's context */
	SS_EV_TCP_END = 4,    /* the socket is freed (its owner closed it, and TCP is done): final totals */
	SS_EV_UDP_START = 5,  /* first datagram of a (socket, process, peer) flow, or the first after idle */
};

enum ss_event_flags {
	SS_EVF_TOTALS = 1, /* TCP_END: tx_bytes/rx_bytes are the connection's totals (it opened while watched) */
	SS_EVF_RX = 2,     /* UDP_START: the first datagram was received (else sent) */
};

/* A rare event, through the ring buffer: a TCP connection opened or closed, a listener, the
 * end of a TCP socket with its totals, the start of a UDP flow. */
struct ss_event {
	__u64 ts_ns;        /* CLOCK_BOOTTIME */
	__u64 cookie;
	__u64 open_ns;      /* when sockscope saw it open (CLOCK_BOOTTIME), 0 if before it started */
	__u64 tx_bytes;     /* TCP_END: written by the application (from write_seq); UDP_START: the datagram */
	__u64 rx_bytes;     /* TCP_END: read by the application (from copied_seq) */
	__u8 laddr[16];
	__u8 raddr[16];
	__u32 netns;
	__u32 owner_tgid;   /* the process that connect()ed, 0 if unknown (accept side) */
	__u32 tgid;         /* the process the event is about: connect()/listen() caller, the listener's
			     * owner for an accepted connection, the last reader at the end; 0 unknown */
	__u16 family;
	__u16 lport;
	__u16 rport;
	__u8 type;          /* enum ss_event_type */
	__u8 initiator;     /* enum ss_initiator */
	__u8 oldstate;
	__u8 protocol;      /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 flags;         /* enum ss_event_flags */
	__u8 pad[1];
};

/* Indexes into the per-CPU stats array. */
enum ss_stat {
	SS_STAT_DROPPED_EVENTS = 0, /* flow map full: events not counted */
	SS_STAT_DROPPED_BYTES = 1,  /* bytes of those events */
	SS_STAT_SOCK_INFO_FULL = 2, /* socket facts could not be stored */
	SS_STAT_PROC_INFO_FULL = 3, /* process facts could not be stored */
	SS_STAT_PEEK_SKIPPED = 4,   /* MSG_PEEK receives not counted (they would count twice) */
	SS_STAT_EVENTS_LOST = 5,    /* ring buffer full: open/close events lost */
	SS_STAT_DNS_LOST = 6,       /* DNS ring buffer full: answers not captured */
	SS_STAT_DNS_UNREAD = 7,     /* answers received by a call whose buffer is not known (recvmmsg,
				     * io_uring) or could not be read */
	SS_STAT_CALLS_UNSTASHED = 8, /* kprobe group: a call's entry found no slot for its socket
				      * (task storage refused): the call is not counted */
	SS_STAT_MAX = 9,
};

struct ss_stats {
	__u64 v[SS_STAT_MAX];
};

/* Settings written into .rodata by the loader before load. */
struct ss_config {
	__u32 capture_args;   /* copy argv into ss_proc_info */
	__u32 tcp_rx_by_seq;  /* TCP receives counted as advances of copied_seq (sees splice());
			       * else by the receive calls' return values (cheaper, blind to splice) */
	__u32 dns;            /* capture what sockets talking to port 53 receive (ss_dns) */
	__u32 live;           /* emit the live events (listen, end, UDP start) besides open/close */
	__u32 claim_mask;     /* slots of ss_claims - 1 (a power of two; user space sizes the map) */
};

/* DNS answers as the receiving process read them: what a receive call on a UDP or TCP socket
 * whose peer is port 53 returned, copied from the process's own buffer (user space parses
 * it; over TCP it is a piece of the stream, with its 2-byte length prefixes). */
#define SS_DNS_MAX 2048

struct ss_dns_event {
	__u64 ts_ns;        /* CLOCK_BOOTTIME */
	__u64 cookie;
	__u32 tgid;         /* the process that read it */
	__u32 netns;        /* the socket's network namespace inode */
	__u32 len;          /* bytes the call returned */
	__u16 captured;     /* bytes in data: min(len, SS_DNS_MAX) */
	__u8 protocol;      /* IPPROTO_UDP / IPPROTO_TCP */
	__u8 pad;
	__u8 data[SS_DNS_MAX];
};

#endif /* SOCKSCOPE_H */
