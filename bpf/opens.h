/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Records shared by the file-open programs (opens.bpf.c) and user space (sockscope.opens).
 * Defined here once; src/sockscope/opens/abi.py mirrors them and tests/unit/test_opens_abi.py
 * checks the mirror against the compiled object's BTF.
 */
#ifndef SOCKSCOPE_OPENS_H
#define SOCKSCOPE_OPENS_H

#define SS_OPEN_COMM_LEN 16
#define SS_OPEN_NAME_MAX 256   /* one path component, with its NUL (NAME_MAX is 255) */
#define SS_OPEN_GIVEN_MAX 1024 /* the path as the program gave it (longer: cut, flagged) */
#define SS_OPEN_DEPTH 48       /* path components walked up from a file or directory */
#define SS_OPEN_DATA 8192      /* given path, then the components: what a record can hold */

enum ss_open_call {
	SS_OPEN_OPEN = 0,
	SS_OPEN_OPENAT = 1,
	SS_OPEN_OPENAT2 = 2,
	SS_OPEN_CREAT = 3,
	SS_OPEN_URING = 4, /* io_uring's IORING_OP_OPENAT / OPENAT2 */
};

/* Where the absolute path comes from. */
enum ss_open_base {
	SS_BASE_NONE = 0,  /* nothing walked: the given path is absolute (a failed open), or unknown */
	SS_BASE_FILE = 1,  /* the opened file itself (a successful open): the components are its path */
	SS_BASE_DIRFD = 2, /* the directory of dirfd (a failed relative open): components + given */
	SS_BASE_CWD = 3,   /* the current directory (a failed relative open at AT_FDCWD) */
};

enum ss_open_flags {
	SS_OPENF_GIVEN_CUT = 1, /* the given path was longer than SS_OPEN_GIVEN_MAX */
	SS_OPENF_DEEP = 2,      /* more than SS_OPEN_DEPTH components, or more than fit: the top is missing */
	SS_OPENF_NAME_CUT = 4,  /* a component longer than SS_OPEN_NAME_MAX */
};

/* One open, through the ring buffer (variable length: header + data_len bytes of data).
 * data: the given path (given_len bytes, no NUL), then `depth` components, each NUL-terminated,
 * the leaf first (user space reverses and joins them). */
struct ss_open_event {
	__u64 ts_ns;       /* CLOCK_BOOTTIME, at the call's return */
	__u64 cgroup_id;
	__u64 flags;       /* the open flags (openat2's how.flags is 64-bit) */
	__u32 tgid;
	__u32 tid;
	__u32 uid;
	__u32 mode;
	__s32 ret;         /* the fd, or -errno */
	__s32 dirfd;       /* AT_FDCWD is -100 */
	__u16 given_len;
	__u16 data_len;    /* bytes of data in this record */
	__u8 depth;        /* components after the given path */
	__u8 call;         /* enum ss_open_call */
	__u8 base;         /* enum ss_open_base */
	__u8 cut;          /* enum ss_open_flags */
	char comm[SS_OPEN_COMM_LEN];
	char data[SS_OPEN_DATA];
};

/* Indexes into the per-CPU stats array. */
enum ss_open_stat {
	SS_OPEN_STAT_LOST = 0,     /* ring buffer full: opens not reported */
	SS_OPEN_STAT_FILTERED = 1, /* left out by the kernel-side filters (pid, uid, comm, failed only) */
	SS_OPEN_STAT_NOENTRY = 2,  /* a return without its entry (the program was attached mid-call) */
	SS_OPEN_STAT_MAX = 3,
};

struct ss_open_stats {
	__u64 v[SS_OPEN_STAT_MAX];
};

/* Kernel-side pre-filters, written into .rodata before load (0: no filter). */
struct ss_open_config {
	__u32 tgid;
	__u32 uid;
	__u32 failed_only;
	__u32 filter_uid;    /* uid 0 is a value: this says the uid filter is on */
	char comm[SS_OPEN_COMM_LEN]; /* exact comm; empty: none */
	__u32 uring_cqe;     /* io_uring_complete passes the CQE (6.3+), else user_data and res */
	__u32 pad;
};

#endif /* SOCKSCOPE_OPENS_H */
