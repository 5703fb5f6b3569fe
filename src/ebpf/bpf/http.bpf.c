// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0)
//
// HTTP/1.x through syscall tracepoints (this kernel has no kprobes, and
// tracepoints are the stable interface anyway).
//
// The kernel side only finds chunks of socket data that start like an HTTP
// request ("GET /x HTTP/1.1") or response ("HTTP/1.1 200") and hands their
// first bytes to userspace through a ring buffer, with the time and the
// (tgid, fd) they belong to. Userspace (src/ebpf/) parses them, pairs
// requests with responses per connection (keep-alive, pipelining in order)
// and aggregates. Keeping the parsing out of the kernel keeps this program
// small for the verifier and cheap on the hot path: a syscall that carries
// no HTTP costs one 8-byte read and, for reads, one hash update/delete.
//
// Timestamps: a read is stamped when it returns (the data has arrived), a
// write when it is entered (the data leaves). So a server's latency runs from
// the request's arrival to the response's first write, a client's from the
// request's write to the response's first read.
//
// Build: src/ebpf/bpf/build.sh (clang -target bpf, CO-RE against vmlinux.h
// generated from /sys/kernel/btf/vmlinux). The object is committed beside
// this file; CI rebuilds it and fails when it is stale.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define HTTP_MAX_BUF 256
#define S_IFMT 00170000
#define S_IFSOCK 0140000

// event kinds (userspace: src/ebpf/event.rs)
#define EV_READ 1
#define EV_WRITE 2
#define EV_CLOSE 3

// where the syscall's data is
#define SRC_BUF 0 // a plain buffer (read, write, recvfrom, sendto)
#define SRC_IOV 1 // an iovec array (readv, writev)
#define SRC_MSG 2 // a user_msghdr (recvmsg, sendmsg)

// stats slots (per CPU, summed by userspace)
#define STAT_LOST 1 // slot 0 unused: userspace counts what it reads
#define STAT_MAX 2

// Set by the loader: the agent's own tgid, never traced (its API requests
// would otherwise be traced too).
const volatile __u32 self_tgid = 0;

struct pending {
	__u64 ptr; // reads: the syscall's buffer/iovec/msghdr; writes: the data
	__u64 cap; // writes: bytes at ptr
	__u64 ts;
	__u32 fd;
	__u8 src;
	__u8 write;
	__u8 active;
	__u8 pad;
};

struct http_event {
	__u64 ts;
	__u32 tgid;
	__u32 fd;
	__u32 bytes; // what the syscall moved
	__u16 len;   // bytes valid in buf
	__u8 kind;
	__u8 pad;
	// on a connection's first event only (else 0): the process's cgroups,
	// so userspace can place it even when it has exited before its
	// /proc/<pid>/cgroup is read (a short-lived client)
	__u64 cgroup_v2; // cgroup2 id (inode of its directory)
	__u64 cgroup_cpu; // v1 cpu controller cgroup's kernfs id (inode)
	__u8 buf[HTTP_MAX_BUF];
};

// the syscall in flight on a thread: entered reads (and writes that look
// like HTTP), completed at exit. Task storage: a pointer off the task, no
// hashing, so the entry of every read on the node stays cheap
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct pending);
} inflight SEC(".maps");

// connections that carried HTTP, by tgid << 32 | fd: only their close is
// reported
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &slot);
	if (v)
		*v += 1;
}

// 1 = request line start, 2 = status line start, 0 = neither
static __always_inline int classify(const __u8 *h)
{
	if (h[0] == 'H' && h[1] == 'T' && h[2] == 'T' && h[3] == 'P' && h[4] == '/' &&
	    h[5] == '1' && h[6] == '.')
		return 2;
	if (h[0] == 'G' && h[1] == 'E' && h[2] == 'T' && h[3] == ' ')
		return 1;
	if (h[0] == 'P' && h[1] == 'O' && h[2] == 'S' && h[3] == 'T' && h[4] == ' ')
		return 1;
	if (h[0] == 'P' && h[1] == 'U' && h[2] == 'T' && h[3] == ' ')
		return 1;
	if (h[0] == 'H' && h[1] == 'E' && h[2] == 'A' && h[3] == 'D' && h[4] == ' ')
		return 1;
	if (h[0] == 'P' && h[1] == 'A' && h[2] == 'T' && h[3] == 'C' && h[4] == 'H' && h[5] == ' ')
		return 1;
	if (h[0] == 'D' && h[1] == 'E' && h[2] == 'L' && h[3] == 'E' && h[4] == 'T' && h[5] == 'E' &&
	    h[6] == ' ')
		return 1;
	if (h[0] == 'O' && h[1] == 'P' && h[2] == 'T' && h[3] == 'I' && h[4] == 'O' && h[5] == 'N' &&
	    h[6] == 'S')
		return 1;
	return 0;
}

// The user address of the first bytes and how many there are at most.
static __always_inline __u64 first_bytes(__u64 ptr, __u8 src, __u64 *cap)
{
	if (src == SRC_MSG) {
		struct user_msghdr m;
		if (bpf_probe_read_user(&m, sizeof(m), (void *)ptr))
			return 0;
		if (m.msg_iovlen < 1)
			return 0;
		ptr = (__u64)m.msg_iov;
		src = SRC_IOV;
	}
	if (src == SRC_IOV) {
		struct iovec v;
		if (bpf_probe_read_user(&v, sizeof(v), (void *)ptr))
			return 0;
		if (v.iov_len < *cap)
			*cap = v.iov_len;
		return (__u64)v.iov_base;
	}
	return ptr;
}

// Whether fd of the current task is a socket (plain read/write also serve
// files and pipes). CO-RE reads through task->files->fdt.
static __always_inline int is_socket(__u32 fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return 0;
	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return 0;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	return (mode & S_IFMT) == S_IFSOCK;
}

// The kernfs id of the current task's cgroup in the v1 cpu hierarchy (the
// v2 one when cpu is not a v1 controller here): CO-RE through
// task->cgroups->subsys[cpu_cgrp_id]->cgroup->kn->id.
static __always_inline __u64 cpu_cgroup_id(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	int idx = bpf_core_enum_value(enum cgroup_subsys_id, cpu_cgrp_id);
	if (idx < 0 || idx >= 12)
		return 0;
	struct cgroup_subsys_state *css = 0;
	struct css_set *cs = BPF_CORE_READ(task, cgroups);
	if (!cs || bpf_probe_read_kernel(&css, sizeof(css), &cs->subsys[idx]) || !css)
		return 0;
	return BPF_CORE_READ(css, cgroup, kn, id);
}

static __always_inline void emit(__u64 ts, __u32 tgid, __u32 fd, __u8 kind, __u64 data, __u64 cap,
				 __u64 bytes, int wake)
{
	struct http_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(STAT_LOST);
		return;
	}
	__u32 len = cap > HTTP_MAX_BUF ? HTTP_MAX_BUF : cap;
	e->ts = ts;
	e->tgid = tgid;
	e->fd = fd;
	e->bytes = bytes > 0xffffffff ? 0xffffffff : bytes;
	e->kind = kind;
	e->pad = 0;
	e->cgroup_v2 = 0;
	e->cgroup_cpu = 0;
	if (wake) {
		e->cgroup_v2 = bpf_get_current_cgroup_id();
		e->cgroup_cpu = cpu_cgroup_id();
	}
	if (!data || bpf_probe_read_user(e->buf, len, (void *)data))
		len = 0;
	e->len = len;
	// wake the reader on a new connection (so it finds the process while
	// it still exists, even a short-lived client) or when the ring fills
	// up; otherwise it drains on its own clock, so a busy keep-alive
	// server costs no wakeup per request
	__u64 flags = wake || bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > 512 * 1024
			      ? BPF_RB_FORCE_WAKEUP
			      : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

// An fd that closes or is reused: report it when it carried HTTP.
static __always_inline void forget_conn(__u32 tgid, __u32 fd)
{
	__u64 key = ((__u64)tgid << 32) | fd;
	if (!bpf_map_lookup_elem(&conns, &key))
		return;
	bpf_map_delete_elem(&conns, &key);
	emit(bpf_ktime_get_ns(), tgid, fd, EV_CLOSE, 0, 0, 0, 0);
}

#define MSG_PEEK 2

// Reads: nothing to look at until the data is there. A peek leaves the
// data to be read again: not counted twice.
static __always_inline int enter_read(__u32 fd, __u64 ptr, __u8 src, __u64 flags)
{
	if (flags & MSG_PEEK)
		return 0;
	if ((__u32)(bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	struct pending *p = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0,
						 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!p)
		return 0;
	p->ptr = ptr;
	p->fd = fd;
	p->src = src;
	p->write = 0;
	p->active = 1;
	return 0;
}

// Writes: the data is there now; only an HTTP-looking one is kept until
// the exit says how it went.
static __always_inline int enter_write(__u32 fd, __u64 ptr, __u8 src, __u64 count_arg)
{
	if ((__u32)(bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	__u64 cap = count_arg;
	__u64 data = first_bytes(ptr, src, &cap);
	__u8 head[8] = {};
	if (!data || cap < 8 || bpf_probe_read_user(head, sizeof(head), (void *)data))
		return 0;
	if (!classify(head))
		return 0;
	struct pending *p = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0,
						 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!p)
		return 0;
	p->ptr = data;
	p->cap = cap;
	p->ts = bpf_ktime_get_ns();
	p->fd = fd;
	p->src = SRC_BUF;
	p->write = 1;
	p->active = 1;
	return 0;
}

static __always_inline int do_exit(long ret, int plain)
{
	struct pending *pp = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0, 0);
	if (!pp || !pp->active)
		return 0;
	struct pending p = *pp;
	pp->active = 0;
	if (ret <= 0)
		return 0;
	__u64 cap = ret;
	__u64 data;
	if (p.write) {
		// found and classified at entry
		data = p.ptr;
		if (p.cap < cap)
			cap = p.cap;
	} else {
		data = first_bytes(p.ptr, p.src, &cap);
		__u8 head[8] = {};
		if (!data || cap < 8 || bpf_probe_read_user(head, sizeof(head), (void *)data))
			return 0;
		if (!classify(head))
			return 0;
	}
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 key = ((__u64)tgid << 32) | p.fd;
	// a known connection was checked to be a socket when it became known
	int fresh = !bpf_map_lookup_elem(&conns, &key);
	if (fresh) {
		if (plain && !is_socket(p.fd))
			return 0;
		__u8 one = 1;
		bpf_map_update_elem(&conns, &key, &one, BPF_ANY);
	}
	__u64 ts = p.write ? p.ts : bpf_ktime_get_ns();
	emit(ts, tgid, p.fd, p.write ? EV_WRITE : EV_READ, data, cap, ret, fresh);
	return 0;
}

#define ARG(i) (ctx->args[i])

// One syscall's pair of programs, `enter_<name>_tp` on sys_enter_<name> and
// `exit_<name>_tp` on sys_exit_<name> (the loader attaches by that name).
// `plain`: read/write family, which also serve files and pipes.
#define TRACE(name, on_enter, plain)                                           \
	SEC("tracepoint/syscalls/sys_enter_" #name)                            \
	int enter_##name##_tp(struct trace_event_raw_sys_enter *ctx)           \
	{                                                                      \
		return on_enter;                                               \
	}                                                                      \
	SEC("tracepoint/syscalls/sys_exit_" #name)                             \
	int exit_##name##_tp(struct trace_event_raw_sys_exit *ctx)             \
	{                                                                      \
		return do_exit(ctx->ret, plain);                               \
	}
#define TRACE_READ(name, src, flags, plain) TRACE(name, enter_read(ARG(0), ARG(1), src, flags), plain)
#define TRACE_WRITE(name, src, count, plain)                                   \
	TRACE(name, enter_write(ARG(0), ARG(1), src, count), plain)

TRACE_READ(read, SRC_BUF, 0, 1)
TRACE_READ(recvfrom, SRC_BUF, ARG(3), 0)
TRACE_READ(readv, SRC_IOV, 0, 1)
TRACE_READ(recvmsg, SRC_MSG, ARG(2), 0)
TRACE_WRITE(write, SRC_BUF, ARG(2), 1)
TRACE_WRITE(sendto, SRC_BUF, ARG(2), 0)
// iovec and msghdr: the first iovec's length bounds what is looked at
TRACE_WRITE(writev, SRC_IOV, ~0ULL, 1)
TRACE_WRITE(sendmsg, SRC_MSG, ~0ULL, 0)

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close_tp(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (tgid == self_tgid)
		return 0;
	forget_conn(tgid, ARG(0));
	return 0;
}

// A new connection on an fd number that an unclosed (e.g. exited-without-
// close) connection used: its state is stale.
static __always_inline int new_fd(long ret)
{
	if (ret < 0)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (tgid == self_tgid)
		return 0;
	forget_conn(tgid, ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int exit_accept4_tp(struct trace_event_raw_sys_exit *ctx)
{
	return new_fd(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int exit_accept_tp(struct trace_event_raw_sys_exit *ctx)
{
	return new_fd(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int enter_connect_tp(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (tgid == self_tgid)
		return 0;
	forget_conn(tgid, ARG(0));
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
