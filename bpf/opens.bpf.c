// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sockscope opens: every file open, forwarded to user space through a ring buffer, where the
 * path is matched (so the wanted files change without reloading anything).
 *
 * Hooks: the syscall tracepoints of open, openat, openat2 and creat (entry: the arguments,
 * kept per thread; return: the result and the record). The absolute path is walked in the
 * kernel, in the caller's context, while the call's own file descriptors still stand: for a
 * successful open the opened file's own path (exact whatever dirfd, "..", symlinks or the
 * current directory were); for a failed relative open the directory of dirfd (or the current
 * directory) that user space joins with the given path. So a process gone at once still has
 * its path, and `openat(dirfd, "rel")` is never resolved against the wrong directory.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "opens.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SS_AT_FDCWD -100
#define SS_O_CREAT 0100
#define SS_O_WRONLY 01
#define SS_O_TRUNC 01000

const volatile struct ss_open_config ss_open_cfg = {};

/* The arguments of a call in flight, from its entry to its return (one per thread). */
struct ss_open_args {
	__u64 filename; /* user pointer */
	__u64 flags;
	__u32 mode;
	__s32 dirfd;
	__u8 call;
	__u8 pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct ss_open_args);
} ss_open_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} ss_opens SEC(".maps");

/* A record is built here (too large for the stack), then copied out at its own length. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ss_open_event);
} ss_open_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ss_open_stats);
} ss_open_stats SEC(".maps");

static __always_inline void ss_open_stat(__u32 idx)
{
	__u32 zero = 0;
	struct ss_open_stats *s = bpf_map_lookup_elem(&ss_open_stats, &zero);

	if (s && idx < SS_OPEN_STAT_MAX)
		s->v[idx] += 1;
}

/* The process's name: its group leader's (a thread's own may be "pool-1-thread-1", "iou-wrk-…"). */
static __always_inline void ss_leader_comm(char *comm)
{
	struct task_struct *task = bpf_get_current_task_btf();

	bpf_probe_read_kernel_str(comm, SS_OPEN_COMM_LEN, BPF_CORE_READ(task, group_leader, comm));
}

/* The kernel-side filters that can be decided at entry (pid, uid, comm). */
static __always_inline int ss_open_wanted(__u64 pid_tgid)
{
	if (ss_open_cfg.tgid && (pid_tgid >> 32) != ss_open_cfg.tgid)
		return 0;
	if (ss_open_cfg.filter_uid && (__u32)bpf_get_current_uid_gid() != ss_open_cfg.uid)
		return 0;
	if (ss_open_cfg.comm[0]) {
		char comm[SS_OPEN_COMM_LEN] = {};
		int i;

		ss_leader_comm(comm);
		for (i = 0; i < SS_OPEN_COMM_LEN; i++) {
			if (comm[i] != ss_open_cfg.comm[i])
				return 0;
			if (!comm[i])
				break;
		}
	}
	return 1;
}

static __always_inline int ss_open_enter(__u8 call, __s32 dirfd, const char *filename, __u64 flags, __u32 mode)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ss_open_args a = {};

	if (!ss_open_wanted(id)) {
		ss_open_stat(SS_OPEN_STAT_FILTERED);
		return 0;
	}
	a.filename = (__u64)filename;
	a.flags = flags;
	a.mode = mode;
	a.dirfd = dirfd;
	a.call = call;
	bpf_map_update_elem(&ss_open_calls, &id, &a, BPF_ANY);
	return 0;
}

/* The file at descriptor fd of the current task, or NULL. */
static __always_inline struct file *ss_fd_file(struct task_struct *task, int fd)
{
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = NULL;

	if (!fdt || fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), fds + fd))
		return NULL;
	return f;
}

/* Walking a path up: one step per bpf_loop() call, so the verifier checks the step once
 * whatever the depth. Components are written leaf first, NUL-terminated, at data_len on; across
 * mounts up to the root of the caller's mount namespace. The record is the CPU's scratch entry,
 * looked up again in the step, and the offset lives in it (a map value, not a register): a
 * step's state is then the same every time round, which keeps the verifier's work small. */
struct ss_walk_ctx {
	__u64 d;        /* struct dentry * */
	__u64 mnt;      /* struct mount * */
	__u64 mnt_root; /* struct dentry *: the root of mnt */
	__u64 root_d;   /* the caller's root (chroot, a container's): where its paths start */
	__u64 root_mnt; /* struct vfsmount * */
	__u64 done;
};

static long ss_walk_step(__u64 index, void *data)
{
	struct ss_walk_ctx *w = data;
	struct dentry *d = (struct dentry *)w->d, *parent;
	struct mount *mnt = (struct mount *)w->mnt;
	struct ss_open_event *e;
	__u32 zero = 0;
	__u64 o;
	long n;

	e = bpf_map_lookup_elem(&ss_open_scratch, &zero);
	if (!e)
		return 1;
	if (w->d == w->root_d && (__u64)&mnt->mnt == w->root_mnt) {
		w->done = 1; /* the caller's own root, as d_path() stops */
		return 1;
	}
	parent = BPF_CORE_READ(d, d_parent);
	if (w->d == w->mnt_root || d == parent) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

		if (up == mnt || !up) {
			w->done = 1; /* the root */
			return 1;
		}
		w->d = (__u64)BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = (__u64)up;
		w->mnt_root = (__u64)BPF_CORE_READ(up, mnt.mnt_root);
		return 0;
	}
	o = e->data_len;
	if (o >= SS_OPEN_DATA - SS_OPEN_NAME_MAX) { /* so data_len stays below SS_OPEN_DATA */
		e->cut |= SS_OPENF_DEEP;
		w->done = 1;
		return 1;
	}
	n = bpf_probe_read_kernel_str(e->data + o, SS_OPEN_NAME_MAX, BPF_CORE_READ(d, d_name.name));
	if (n <= 0) {
		w->done = 1;
		return 1;
	}
	if (n == SS_OPEN_NAME_MAX)
		e->cut |= SS_OPENF_NAME_CUT;
	e->data_len = o + n;
	e->depth++;
	w->d = (__u64)parent;
	return 0;
}

/* The path, then the record out: e's header and its given path (given_len bytes) are set. The
 * walk is of the opened file, else of the directory a relative name was taken from. */
static __always_inline void ss_open_finish(struct ss_open_event *e, struct task_struct *task, long ret)
{
	struct file *f = NULL;
	struct dentry *d = NULL;
	struct mount *m = NULL;
	__u64 len, off = e->given_len & (SS_OPEN_GIVEN_MAX - 1);

	e->depth = 0;
	e->base = SS_BASE_NONE;
	if (ret >= 0) {
		f = ss_fd_file(task, (int)ret);
		e->base = f ? SS_BASE_FILE : SS_BASE_NONE;
	} else if (e->data[0] != '/' && e->dirfd != SS_AT_FDCWD) {
		f = ss_fd_file(task, e->dirfd);
		e->base = f ? SS_BASE_DIRFD : SS_BASE_NONE;
	} else if (e->data[0] != '/') {
		struct fs_struct *fs = BPF_CORE_READ(task, fs);

		e->base = SS_BASE_CWD;
		d = BPF_CORE_READ(fs, pwd.dentry);
		m = container_of(BPF_CORE_READ(fs, pwd.mnt), struct mount, mnt);
	}
	if (f) {
		d = BPF_CORE_READ(f, f_path.dentry);
		m = container_of(BPF_CORE_READ(f, f_path.mnt), struct mount, mnt);
	}
	e->data_len = off;
	if (d) {
		struct ss_walk_ctx w = {};

		struct fs_struct *fs = BPF_CORE_READ(task, fs);

		w.d = (__u64)d;
		w.mnt = (__u64)m;
		w.mnt_root = (__u64)BPF_CORE_READ(m, mnt.mnt_root);
		w.root_d = (__u64)BPF_CORE_READ(fs, root.dentry);
		w.root_mnt = (__u64)BPF_CORE_READ(fs, root.mnt);
		bpf_loop(SS_OPEN_DEPTH, ss_walk_step, &w, 0);
		if (!w.done)
			e->cut |= SS_OPENF_DEEP;
		off = e->data_len;
	}
	off &= SS_OPEN_DATA - 1; /* below SS_OPEN_DATA already (see ss_walk_step): for the verifier */
	e->data_len = off;
	len = offsetof(struct ss_open_event, data) + off;
	if (bpf_ringbuf_output(&ss_opens, e, len, 0))
		ss_open_stat(SS_OPEN_STAT_LOST);
}

/* A read string's length as given_len: n counts its NUL; a full buffer may have been cut. */
static __always_inline void ss_open_given(struct ss_open_event *e, long n)
{
	if (n <= 0)
		n = 1; /* unreadable: an empty given path */
	if (n == SS_OPEN_GIVEN_MAX)
		e->cut |= SS_OPENF_GIVEN_CUT;
	e->given_len = (n - 1) & (SS_OPEN_GIVEN_MAX - 1); /* the NUL: overwritten by the first component */
}

static __always_inline int ss_open_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ss_open_args *a = bpf_map_lookup_elem(&ss_open_calls, &id);
	struct ss_open_event *e;
	__u32 zero = 0;

	if (!a) {
		ss_open_stat(SS_OPEN_STAT_NOENTRY);
		return 0;
	}
	if (ss_open_cfg.failed_only && ret >= 0) {
		bpf_map_delete_elem(&ss_open_calls, &id);
		ss_open_stat(SS_OPEN_STAT_FILTERED);
		return 0;
	}
	e = bpf_map_lookup_elem(&ss_open_scratch, &zero);
	if (!e) {
		bpf_map_delete_elem(&ss_open_calls, &id);
		return 0;
	}
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->flags = a->flags;
	e->tgid = id >> 32;
	e->tid = (__u32)id;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->mode = a->mode;
	e->ret = (__s32)ret;
	e->dirfd = a->dirfd;
	e->call = a->call;
	e->cut = 0;
	ss_leader_comm(e->comm);
	ss_open_given(e, bpf_probe_read_user_str(e->data, SS_OPEN_GIVEN_MAX, (const char *)a->filename));
	bpf_map_delete_elem(&ss_open_calls, &id);
	ss_open_finish(e, bpf_get_current_task_btf(), ret);
	return 0;
}

/* io_uring's IORING_OP_OPENAT / OPENAT2: no system call of their own. At submission (in the
 * submitter's context, after the request's preparation copied the name into the kernel) the
 * request is noted, name included: by its completion the name is freed. At completion (in the
 * submitter or one of its io-wq workers, which share its file table) the record is made. */
struct ss_uring_open {
	__u64 flags;
	__u64 cgroup_id;
	__u32 tgid;
	__u32 tid;
	__u32 uid;
	__u32 mode;
	__s32 dirfd;
	__u32 file_slot; /* a fixed-file slot (io_uring's own table): the result is no descriptor */
	char comm[SS_OPEN_COMM_LEN];
	char given[SS_OPEN_GIVEN_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64); /* the request (struct io_kiocb *) */
	__type(value, struct ss_uring_open);
} ss_uring_opens SEC(".maps");

/* Built here: a value too large for the stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ss_uring_open);
} ss_uring_scratch SEC(".maps");

static __always_inline int ss_uring_note(struct io_kiocb *req)
{
	__u64 id = bpf_get_current_pid_tgid(), key = (__u64)req;
	struct io_open *open;
	struct ss_uring_open *u;
	__u8 op = BPF_CORE_READ(req, opcode);
	__u32 zero = 0;

	if (op != IORING_OP_OPENAT && op != IORING_OP_OPENAT2)
		return 0;
	if (!ss_open_wanted(id)) {
		ss_open_stat(SS_OPEN_STAT_FILTERED);
		return 0;
	}
	u = bpf_map_lookup_elem(&ss_uring_scratch, &zero);
	if (!u)
		return 0;
	open = (struct io_open *)&req->cmd;
	u->flags = BPF_CORE_READ(open, how.flags);
	u->mode = BPF_CORE_READ(open, how.mode);
	u->dirfd = BPF_CORE_READ(open, dfd);
	u->tgid = id >> 32;
	u->tid = (__u32)id;
	u->uid = (__u32)bpf_get_current_uid_gid();
	u->cgroup_id = bpf_get_current_cgroup_id();
	u->file_slot = BPF_CORE_READ(open, file_slot);
	ss_leader_comm(u->comm);
	if (bpf_probe_read_kernel_str(u->given, sizeof(u->given), BPF_CORE_READ(open, filename, name)) <= 0)
		u->given[0] = 0;
	bpf_map_update_elem(&ss_uring_opens, &key, u, BPF_ANY);
	return 0;
}

/* The submission tracepoint is io_uring_submit_req(req) since 6.3 (or so), io_uring_submit_sqe
 * (req, force_nonblock) before: user space loads the one this kernel has. */
SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(ss_uring_submit, struct io_kiocb *req)
{
	return ss_uring_note(req);
}

SEC("tp_btf/io_uring_submit_sqe")
int BPF_PROG(ss_uring_submit_sqe, struct io_kiocb *req)
{
	return ss_uring_note(req);
}

/* io_uring_complete's arguments changed: (ctx, req, cqe) in newer kernels, (ctx, req, user_data,
 * res, cflags, extra1, extra2) before. User space reads which from the kernel's BTF into
 * ss_open_cfg.uring_cqe, a constant at load: the other branch is never verified. */
SEC("tp_btf/io_uring_complete")
int ss_uring_complete(unsigned long long *ctx)
{
	void *req = (void *)ctx[1];
	__u64 key = (__u64)req;
	struct ss_uring_open *u = bpf_map_lookup_elem(&ss_uring_opens, &key);
	struct ss_open_event *e;
	__u32 zero = 0;
	long ret;
	__u8 op;

	if (!u)
		return 0;
	/* The request may have been recycled for another opcode if its open never completed (a
	 * full CQ ring, IOSQE_CQE_SKIP_SUCCESS): then the entry is stale. */
	op = BPF_CORE_READ((struct io_kiocb *)req, opcode);
	if (op != IORING_OP_OPENAT && op != IORING_OP_OPENAT2) {
		bpf_map_delete_elem(&ss_uring_opens, &key);
		return 0;
	}
	if (ss_open_cfg.uring_cqe)
		ret = BPF_CORE_READ((struct io_uring_cqe *)ctx[2], res);
	else
		ret = (int)ctx[3];
	if (ss_open_cfg.failed_only && ret >= 0) {
		bpf_map_delete_elem(&ss_uring_opens, &key);
		ss_open_stat(SS_OPEN_STAT_FILTERED);
		return 0;
	}
	e = bpf_map_lookup_elem(&ss_open_scratch, &zero);
	if (!e) {
		bpf_map_delete_elem(&ss_uring_opens, &key);
		return 0;
	}
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = u->cgroup_id;
	e->flags = u->flags;
	e->tgid = u->tgid;
	e->tid = u->tid;
	e->uid = u->uid;
	e->mode = u->mode;
	e->ret = (__s32)ret;
	e->dirfd = u->dirfd;
	e->call = SS_OPEN_URING;
	e->cut = 0;
	__builtin_memcpy(e->comm, u->comm, sizeof(e->comm));
	ss_open_given(e, bpf_probe_read_kernel_str(e->data, SS_OPEN_GIVEN_MAX, u->given));
	bpf_map_delete_elem(&ss_uring_opens, &key);
	/* A fixed-file slot returns the slot (or 0), no descriptor: the path is the given name's,
	 * joined with dirfd's directory, as for a failed open. */
	ss_open_finish(e, bpf_get_current_task_btf(), u->file_slot ? -1 : ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_open")
int ss_enter_open(struct trace_event_raw_sys_enter *ctx)
{
	return ss_open_enter(SS_OPEN_OPEN, SS_AT_FDCWD, (const char *)ctx->args[0], ctx->args[1], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_creat")
int ss_enter_creat(struct trace_event_raw_sys_enter *ctx)
{
	return ss_open_enter(SS_OPEN_CREAT, SS_AT_FDCWD, (const char *)ctx->args[0],
			     SS_O_CREAT | SS_O_WRONLY | SS_O_TRUNC, ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int ss_enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	return ss_open_enter(SS_OPEN_OPENAT, (__s32)ctx->args[0], (const char *)ctx->args[1], ctx->args[2],
			     ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int ss_enter_openat2(struct trace_event_raw_sys_enter *ctx)
{
	struct open_how how = {};

	bpf_probe_read_user(&how, sizeof(how), (const void *)ctx->args[2]);
	return ss_open_enter(SS_OPEN_OPENAT2, (__s32)ctx->args[0], (const char *)ctx->args[1], how.flags, how.mode);
}

SEC("tracepoint/syscalls/sys_exit_open")
int ss_exit_open(struct trace_event_raw_sys_exit *ctx)
{
	return ss_open_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_creat")
int ss_exit_creat(struct trace_event_raw_sys_exit *ctx)
{
	return ss_open_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int ss_exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	return ss_open_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int ss_exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return ss_open_exit(ctx->ret);
}

/* Puts struct ss_open_event in the object's BTF for tests/unit/test_opens_abi.py. */
struct ss_open_event *ss_open_event_btf __attribute__((unused));
