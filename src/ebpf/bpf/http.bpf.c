// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0)
//
// HTTP/1.x through tracepoints (this kernel has no kprobes and refuses
// fentry; tracepoints are the stable interface anyway), in one of two sets
// the loader picks (src/ebpf/loader.rs, --ebpf-attach):
//
// - the socket path (`*_btf`, kernel 6.3+): tp_btf/sock_send_length and
//   sock_recv_length fire inside sock_sendmsg/sock_recvmsg only, after the
//   data moved; the syscall's arguments come from the task's saved
//   registers. A TCP connection ends at inet_sock_set_state to TCP_CLOSE.
//   No syscall tracepoint is enabled, so a process that does no socket I/O
//   pays nothing (one enabled syscall tracepoint would put every syscall of
//   every process on the kernel's slow path).
// - the syscall path (`*_tp`, the fallback): enter and exit of every read
//   and write syscall, and close/accept/connect for connection lifetime.
//
// The kernel side only finds chunks of socket data that start like an HTTP
// request ("GET /x HTTP/1.1") or response ("HTTP/1.1 200") and hands their
// first bytes to userspace through a ring buffer, with the time, the process
// and the socket (its inode number) they belong to. Connections are sockets,
// not (pid, fd): an inetd-style or forking server (busybox httpd) reads the
// request on fd 0 and writes the response on fd 1 of a child, both the
// accepted socket. Userspace (src/ebpf/) parses them, pairs
// requests with responses per connection (keep-alive, pipelining in order)
// and aggregates. Keeping the parsing out of the kernel keeps this program
// small for the verifier and cheap on the hot path: socket I/O that carries
// no HTTP costs one 8-byte read (on the syscall path, reads also one
// task-storage write, and a close the walk from the fd to its inode).
//
// Timestamps: a read is stamped when it returns (the data has arrived), a
// write when it is entered (the data leaves; on the socket path, when it
// has been handed to the socket, a moment later). So a server's latency runs from
// the request's arrival to the response's first write, a client's from the
// request's write to the response's first read.
//
// Build: src/ebpf/bpf/build.sh (clang -target bpf, CO-RE against vmlinux.h
// generated from /sys/kernel/btf/vmlinux). The object is committed beside
// this file; CI rebuilds it and fails when it is stale.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define HTTP_MAX_BUF 256

// Profiling builds only (benches/ebpf_profile.sh: -DPROFILE_CUT=n) stop the
// socket path at step n to price each step; 0, the shipped object, never.
#ifndef PROFILE_CUT
#define PROFILE_CUT 0
#endif
#define CUT(n)                          \
	do {                            \
		if (PROFILE_CUT == (n)) \
			return 0;       \
	} while (0)
#define S_IFMT 00170000
#define S_IFSOCK 0140000

// event kinds (userspace: src/ebpf/event.rs)
#define EV_READ 1
#define EV_WRITE 2
#define EV_CLOSE 3
#define EV_PROC 4 // a process began to listen or connect: find its TLS libraries
#define EV_EXIT 5 // a process known to map a TLS library exited
#define EV_H2_READ 6  // HTTP/2 frames read: a list of items, not bytes (see h2_walk)
#define EV_H2_WRITE 7 // HTTP/2 frames written

// event flags
#define F_TLS 1 // plaintext seen through a TLS library's uprobes

// where the syscall's data is
#define SRC_BUF 0 // a plain buffer (read, write, recvfrom, sendto)
#define SRC_IOV 1 // an iovec array (readv, writev)
#define SRC_MSG 2 // a user_msghdr (recvmsg, sendmsg)

// stats slots (per CPU, summed by userspace)
#define STAT_LOST 1 // slot 0 unused: userspace counts what it reads
#define STAT_TLS_NO_SOCK 2 // TLS plaintext whose socket was never seen
#define STAT_H2_LOST 3 // an HTTP/2 direction whose frame boundaries were lost
#define STAT_MAX 4

// Set by the loader: the agent's own tgid, never traced (its API requests
// would otherwise be traced too).
const volatile __u32 self_tgid = 0;

// Set by the loader: how many sockets may hold state of their own on the
// socket path (the kernel charges it to the agent's memory, ~0.7 KB a
// socket); past it, a connection's messages go one record each.
const volatile __u64 max_sk_conns = 16384;

struct pending {
	__u64 ptr; // reads: the syscall's buffer/iovec/msghdr; writes: the data
	__u64 cap; // writes: bytes at ptr
	__u64 ts;
	__u32 fd;
	__u8 src;
	__u8 write;
	__u8 active;
	__u8 h2; // writes: 0xff HTTP/1.x, else HTTP/2 (3: its preface)
};

struct http_event {
	__u64 ts;
	__u32 tgid;
	__u32 fd;
	__u32 bytes; // what the syscall moved
	__u16 len;   // bytes valid in buf
	__u8 kind;
	__u8 flags; // F_*
	// on a connection's first event only (else 0): the process's cgroups,
	// so userspace can place it even when it has exited before its
	// /proc/<pid>/cgroup is read (a short-lived client)
	__u64 cgroup_v2; // cgroup2 id (inode of its directory)
	__u64 cgroup_cpu; // v1 cpu controller cgroup's kernfs id (inode)
	__u64 sock;	  // the socket's inode number: the connection
	__u64 start;	  // the process's start (boot-time ns): tgid reuse
	__u8 buf[HTTP_MAX_BUF];
};

// userspace decodes these offsets (src/ebpf/event.rs `LAYOUT`; a test
// there reads them back from this object's BTF)
#define AT(field, off) \
	_Static_assert(__builtin_offsetof(struct http_event, field) == off, #field)
AT(ts, 0);
AT(tgid, 8);
AT(fd, 12);
AT(bytes, 16);
AT(len, 20);
AT(kind, 22);
AT(flags, 23);
AT(cgroup_v2, 24);
AT(cgroup_cpu, 32);
AT(sock, 40);
AT(start, 48);
AT(buf, 56);
#undef AT
_Static_assert(sizeof(struct http_event) == 56 + HTTP_MAX_BUF, "layout");
// a typed global so the object's BTF describes the record (locals are not
// in BTF): the layout test reads it there; 8 bytes of .rodata, never read
const struct http_event *const http_event_layout __attribute__((unused)) = 0;

// the syscall in flight on a thread: entered reads (and writes that look
// like HTTP), completed at exit. Task storage: a pointer off the task, no
// hashing, so the entry of every read on the node stays cheap
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct pending);
} inflight SEC(".maps");

// sockets that carried HTTP, by inode number: only their last close is
// reported
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} conns SEC(".maps");

// The socket path keeps per-socket state in storage of the socket's own (a
// pointer off the struct sock, freed with it: no hashing on every message,
// as the syscall path's LRU map costs): the socket's inode number, so the
// end of the TCP connection finds it (an orphaned sock, closed by its last
// fd, has no inode to read any more), and a request held back. A request
// is not sent to userspace on its own: it waits here for the connection's
// next HTTP message (its response, as a rule) and both go in one record,
// so an exchange costs one ring-buffer record instead of two; userspace
// reads a paired record as its two events in order. A connection's close
// takes a held request along.
struct sk_conn {
	__u64 sock;
	__u32 held; // 1 when `req` is a request waiting for the next message
	__u16 tls;  // 1: a TLS connection, its bytes are ciphertext (TLS path)
	__u16 h2;   // an HTTP/2 connection in cleartext (h2c), walked (h2_walk): 1
		    // from its preface, 2 first seen mid-stream
	struct http_event req;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sk_conn);
} sk_conns SEC(".maps");

// How many sockets hold that state now (created on a TCP socket's first
// HTTP message, deleted at its TCP_CLOSE).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sk_live SEC(".maps");

// The socket path's event being built while a request is held in the
// socket's storage, per CPU: one slot per program (send, receive), so one
// interrupting another on the CPU cannot clobber it. Too large for the BPF
// stack.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct http_event);
} scratch SEC(".maps");

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

// --- TLS state (the uprobes on OpenSSL's SSL_read/SSL_write and kin) ----
//
// A TLS library call in flight on a thread: its arguments at entry, and the
// socket the call's own socket I/O went through (the read or write syscall
// that OpenSSL issues inside SSL_read/SSL_write on the same thread names
// the fd: no struct offsets of the library needed).
struct tls_call {
	__u64 ssl;  // the SSL* (a pointer in the process)
	__u64 buf;  // the plaintext
	__u64 out;  // SSL_*_ex: where the library puts the byte count, else 0
	__u64 ts;   // entry
	__u64 sock; // the socket, when the call's socket I/O was seen
	__u32 fd;
	__u8 active;
	__u8 write;
	__u8 seen; // the call did socket I/O: fd (and on the socket path sock)
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tls_call);
} tls_calls SEC(".maps");

// The socket of an SSL*, from its last call that did socket I/O: a call
// served from the library's buffer does none.
struct tls_key {
	__u64 ssl;
	__u32 tgid;
	__u32 pad;
};

struct tls_sock {
	__u64 sock;
	__u32 fd;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tls_key);
	__type(value, struct tls_sock);
} tls_socks SEC(".maps");

// Processes userspace found mapping a TLS library (tgid -> 1): their exit
// is reported, so the library's probes go when its last user does.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} tls_pids SEC(".maps");

// Processes reported as starting to listen or connect, by tgid: when (ns),
// so one that connects all the time is reported once a second at most.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u64);
} procs_told SEC(".maps");


// --- HTTP/2 state (h2 over TLS, and h2c on the socket path) -------------
//
// A connection is HTTP/2 once its preface is seen; from then on each read
// and write of it is walked frame by frame (h2_walk) and userspace gets
// the frame headers of HEADERS, CONTINUATION, RST_STREAM and of DATA that
// ends a stream, and the payload bytes of HEADERS and CONTINUATION (the
// HPACK blocks; userspace decodes them), not the DATA. A frame may span
// reads: where the walk stopped is kept per connection and direction.
struct h2_dir {
	__u64 a1;  // a frame header split across buffers: its first 5 bytes...
	__u32 a2;  // ...and the last 4, as they arrive
	__u32 rem; // payload bytes of the current frame still to come
	__u8 copy; // they are copied (HEADERS, CONTINUATION), else skipped
	__u8 have; // bytes of the split frame header held in a1/a2
	__u8 lost; // the walk lost the frame boundaries: nothing more is sent
	__u8 pad[5];
};

struct h2_conn {
	struct h2_dir d[2]; // [0] read, [1] write
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); // the socket's inode number
	__type(value, struct h2_conn);
} h2_conns SEC(".maps");

// An HTTP/2 record being built, per CPU and direction: the event's fields,
// then H2_BUF bytes of items (twice that room, so a masked offset plus a
// masked length stays inside for the verifier).
#define H2_BUF 1024
#define H2_HEAD 56 // offsetof(struct http_event, buf)
// Where a walk is (in the map, not on the stack: the verifier then takes its
// counters as any value, and the walk's steps converge).
struct h2_walk {
	__u64 iov;   // the buffer (vec 0) or its iovec array (vec 1, iovs entries)
	__u64 iovs;
	__u64 total; // bytes of it not walked yet
	__u64 skip;  // bytes still to skip (the preface)
	__u64 vec;
	__u64 data; // this segment of the buffer (user address) and its length
	__u32 len;
	__u32 off;  // walked so far
	__u32 pos;  // item bytes in the record being built
	__u64 wake; // the record's ring-buffer wakeup (a connection's first)
	struct h2_dir d;
};

struct h2_out {
	struct h2_walk w;
	__u8 raw[H2_HEAD + 2 * H2_BUF];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct h2_out);
} h2_out SEC(".maps");

// The syscall path: processes that have had an HTTP/2 connection in
// cleartext (tgid -> 1). Only their reads and writes that are not HTTP/1
// cost the walk from the fd to its socket and a look in h2_conns; every
// other process's cost one look here.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} h2_procs SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &slot);
	if (v)
		*v += 1;
}

// 1 = request line start, 2 = status line start, 3 = HTTP/2 preface, 0 =
// none of them
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
	// HTTP/2's connection preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	if (h[0] == 'P' && h[1] == 'R' && h[2] == 'I' && h[3] == ' ' && h[4] == '*' && h[5] == ' ' &&
	    h[6] == 'H' && h[7] == 'T')
		return 3;
	return 0;
}

// Whether the 9 bytes at h can be the header of an HTTP/2 frame: a frame
// type of RFC 9113 with its flags, its stream rule (0 or not), its fixed
// length, and at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE);
// CONTINUATION and unknown types never start a chunk here. Its length in
// *len.
static __always_inline int h2_frame_ok(const __u8 *h, __u32 *len)
{
	if (h[0] != 0 || (h[5] & 0x80))
		return 0;
	__u32 n = ((__u32)h[1] << 8) | h[2];
	__u8 type = h[3], flags = h[4];
	int s0 = !(h[5] | h[6] | h[7] | h[8]);
	*len = n;
	if (n > 16384)
		return 0;
	switch (type) {
	case 0: // DATA
		return !s0 && !(flags & ~0x09);
	case 1: // HEADERS
		return !s0 && !(flags & ~0x2d);
	case 3: // RST_STREAM
		return !s0 && !flags && n == 4;
	case 4: // SETTINGS
		return s0 && (flags == 0 ? n % 6 == 0 : flags == 1 && n == 0);
	case 6: // PING
		return s0 && !(flags & ~1) && n == 8;
	case 7: // GOAWAY
		return s0 && !flags && n >= 8;
	case 8: // WINDOW_UPDATE
		return !flags && n == 4;
	}
	return 0;
}

// Whether the cap bytes at data are whole HTTP/2 frames: the start of a
// chunk of a connection whose preface was not seen (opened before the
// agent). Strict, to keep other binary protocols out: the chunk is one
// frame, or its first two frames both pass h2_frame_ok and fit.
static __always_inline int h2_midstream(__u64 data, __u64 cap)
{
	__u8 h[9];
	__u32 n = 0, m = 0;
	if (cap < 9 || bpf_probe_read_user(h, sizeof(h), (void *)data) || !h2_frame_ok(h, &n))
		return 0;
	__u64 end = 9 + (__u64)n;
	if (end == cap)
		return 1;
	if (end + 9 > cap || bpf_probe_read_user(h, sizeof(h), (void *)(data + end)) ||
	    !h2_frame_ok(h, &m))
		return 0;
	return end + 9 + m <= cap;
}

// Whether the 8 bytes at data (of cap valid ones) start an HTTP message:
// classify's answer, or 4 for whole HTTP/2 frames (h2_midstream).
static __always_inline int looks_http(__u64 data, __u64 cap)
{
	__u8 head[8] = {};
	if (!data || cap < 8 || bpf_probe_read_user(head, sizeof(head), (void *)data))
		return 0;
	int what = classify(head);
	if (what || head[0] != 0)
		return what;
	return h2_midstream(data, cap) ? 4 : 0;
}

static __always_inline int h2_proc(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	return bpf_map_lookup_elem(&h2_procs, &tgid) != 0;
}

static __always_inline void h2_proc_add(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u8 one = 1;
	bpf_map_update_elem(&h2_procs, &tgid, &one, BPF_ANY);
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

// The file at fd of the current task (0 when none): CO-RE reads through
// task->files->fdt.
static __always_inline struct file *file_at(__u32 fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return 0;
	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]))
		return 0;
	return f;
}

// The inode number of socket file f, 0 when f is no socket (plain
// read/write also serve files and pipes). It names the connection: every
// fd dup'ed from it, in any process, shares it; the kernel hands socket
// inode numbers out from a counter, so they are not reused soon.
static __always_inline __u64 sock_id(struct file *f)
{
	if (!f)
		return 0;
	struct inode *ino = BPF_CORE_READ(f, f_inode);
	if (!ino)
		return 0;
	umode_t mode = BPF_CORE_READ(ino, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return 0;
	return BPF_CORE_READ(ino, i_ino);
}

// before 6.13, struct file counted its references in f_count
struct file___f_count {
	atomic_long_t f_count;
} __attribute__((preserve_access_index));

// Whether f has other references than the fd being closed (another fd,
// another process's fd table, an fd of this one): then the close does not
// end the connection.
static __always_inline int shared_file(struct file *f)
{
	if (bpf_core_field_exists(struct file___f_count, f_count)) {
		struct file___f_count *o = (void *)f;
		return BPF_CORE_READ(o, f_count.counter) > 1;
	}
	// 6.13+: file_ref_t holds the count minus one
	return (__s64)BPF_CORE_READ(f, f_ref.refcnt.counter) > 0;
}

// The process's start (CLOCK_BOOTTIME ns, /proc/<pid>/stat's starttime):
// with the tgid, it names the process even when the pid is reused.
static __always_inline __u64 proc_start(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	return BPF_CORE_READ(task, group_leader, start_boottime);
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

// n = min(n, max) for a constant max, in n's own register: the verifier
// then knows the bound of the register a helper takes (clang would
// otherwise test one copy and pass another)
#define BOUND(n, max)                                                  \
	asm volatile("if %[v] <= %[m] goto +1\n\t"                      \
		     "%[v] = %[m]"                                      \
		     : [v] "+r"(n)                                      \
		     : [m] "i"(max))

// min(n, HTTP_MAX_BUF) in one register, written so clang cannot fold it
// into a copy the verifier has no bound for
static __always_inline __u64 bound_buf(__u64 n)
{
	asm volatile("if %[n] <= %[max] goto +1\n\t"
		     "%[n] = %[max]"
		     : [n] "+r"(n)
		     : [max] "i"(HTTP_MAX_BUF));
	return n;
}

// Ring-buffer flags: wake the reader on a new connection (so it finds the
// process while it still exists, even a short-lived client) or when the
// ring fills up; otherwise it drains on its own clock, so a busy keep-alive
// server costs no wakeup per request.
static __always_inline __u64 wake_flags(int wake)
{
	return wake || bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > 512 * 1024 ? BPF_RB_FORCE_WAKEUP
										 : BPF_RB_NO_WAKEUP;
}

// Every field of e but the data and its length; the process's cgroups
// when `cgroups` (a connection's first event), else 0.
static __always_inline void fill(struct http_event *e, __u64 ts, __u32 tgid, __u32 fd, __u64 sock,
				 __u8 kind, __u64 bytes, __u64 start, int cgroups)
{
	e->ts = ts;
	e->tgid = tgid;
	e->fd = fd;
	e->bytes = bytes > 0xffffffff ? 0xffffffff : bytes;
	e->kind = kind;
	e->flags = 0;
	e->sock = sock;
	e->start = start;
	e->cgroup_v2 = 0;
	e->cgroup_cpu = 0;
	if (cgroups) {
		e->cgroup_v2 = bpf_get_current_cgroup_id();
		e->cgroup_cpu = cpu_cgroup_id();
	}
}

// min(n, HTTP_MAX_BUF - 1), as bound_buf
static __always_inline __u64 bound_buf_less_one(__u64 n)
{
	asm volatile("if %[n] <= %[max] goto +1\n\t"
		     "%[n] = %[max]"
		     : [n] "+r"(n)
		     : [max] "i"(HTTP_MAX_BUF - 1));
	return n;
}

// A record of the data at `data` (cap bytes); with prefix >= 0, that byte
// first and then the data (a message whose first byte came in a read of
// its own: the TLS path of Go's HTTP server).
static __always_inline void emit_from(__u64 ts, __u32 tgid, __u32 fd, __u64 sock, __u8 kind,
				      __u64 data, __u64 cap, __u64 bytes, int wake, __u64 start,
				      __u8 flags, int prefix)
{
	struct http_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(STAT_LOST);
		return;
	}
	__u64 len = cap;
	fill(e, ts, tgid, fd, sock, kind, bytes, start, wake);
	e->flags = flags;
	if (prefix >= 0) {
		e->buf[0] = prefix;
		len = bound_buf_less_one(len);
		if (!data || bpf_probe_read_user(e->buf + 1, len, (void *)data))
			len = 0;
		e->len = len + 1;
		bpf_ringbuf_submit(e, wake_flags(wake));
		return;
	}
	// 6.1's verifier loses len's bound through the spills above ("R2 min
	// value is negative"): bound it again in the register the helper takes
	len = bound_buf(len);
	if (!data || bpf_probe_read_user(e->buf, len, (void *)data))
		len = 0;
	e->len = len;
	bpf_ringbuf_submit(e, wake_flags(wake));
}

static __always_inline void emit(__u64 ts, __u32 tgid, __u32 fd, __u64 sock, __u8 kind, __u64 data,
				 __u64 cap, __u64 bytes, int wake, __u64 start, __u8 flags)
{
	emit_from(ts, tgid, fd, sock, kind, data, cap, bytes, wake, start, flags, -1);
}

// A socket that closes for good or is reused: report it when it carried
// HTTP.
static __always_inline void forget_conn(__u32 tgid, __u32 fd, __u64 sock)
{
	if (!sock || !bpf_map_lookup_elem(&conns, &sock))
		return;
	bpf_map_delete_elem(&conns, &sock);
	bpf_map_delete_elem(&h2_conns, &sock);
	emit(bpf_ktime_get_ns(), tgid, fd, sock, EV_CLOSE, 0, 0, 0, 0, 0, 0);
}

#define MSG_PEEK 2

// The TLS library call in flight on this thread (its socket I/O carries
// ciphertext), 0 when none.
static __always_inline struct tls_call *tls_call_now(struct task_struct *task)
{
	struct tls_call *t = bpf_task_storage_get(&tls_calls, task, 0, 0);
	return t && t->active ? t : 0;
}

// The syscall path: a read or write inside a TLS call names its fd (the
// socket is found at the call's return); nothing else to do with it.
static __always_inline int tls_syscall(__u32 fd)
{
	struct tls_call *t = tls_call_now(bpf_get_current_task_btf());
	if (!t)
		return 0;
	t->fd = fd;
	t->seen = 1;
	return 1;
}

// Reads: nothing to look at until the data is there. A peek leaves the
// data to be read again: not counted twice.
static __always_inline int enter_read(__u32 fd, __u64 ptr, __u8 src, __u64 flags)
{
	if (flags & MSG_PEEK)
		return 0;
	if ((__u32)(bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	if (tls_syscall(fd))
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
	if (tls_syscall(fd))
		return 0;
	__u64 cap = count_arg;
	__u64 data = first_bytes(ptr, src, &cap);
	int what = looks_http(data, cap);
	// (a connection opened before the agent is recognised on the socket
	// and TLS paths only)
	if (what == 4)
		what = 0;
	// HTTP/2: its preface, or any write of a process with an h2 connection
	// (the exit finds out whether this one is)
	int h2 = what == 3 || (what == 0 && h2_proc());
	if (what == 0 && !h2)
		return 0;
	struct pending *p = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0,
						 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!p)
		return 0;
	p->ptr = h2 ? ptr : data;
	p->cap = cap;
	p->ts = bpf_ktime_get_ns();
	p->fd = fd;
	p->src = h2 ? src : SRC_BUF;
	p->write = 1;
	p->active = 1;
	p->h2 = h2 ? what : 0xff;
	return 0;
}

// A chunk of HTTP at `data` on socket `sock` (fd `fd` of the current
// process, started at `start`), on the syscall path: mark the connection
// seen, hand the chunk to userspace.
static __always_inline int report_from(__u32 fd, __u64 sock, __u64 data, __u64 cap, long ret,
				       __u64 ts, __u8 write, __u64 start, __u8 flags, int prefix)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	int fresh = !bpf_map_lookup_elem(&conns, &sock);
	if (fresh) {
		__u8 one = 1;
		bpf_map_update_elem(&conns, &sock, &one, BPF_ANY);
	}
	emit_from(ts, tgid, fd, sock, write ? EV_WRITE : EV_READ, data, cap, ret, fresh, start, flags,
		  prefix);
	return 0;
}

static __always_inline int report(__u32 fd, __u64 sock, __u64 data, __u64 cap, long ret, __u64 ts,
				  __u8 write, __u64 start, __u8 flags)
{
	return report_from(fd, sock, data, cap, ret, ts, write, start, flags, -1);
}


// Whether socket `sock` is new to the syscall path's table (which reports
// its last close): it is added. A connection's first record carries the
// process's cgroups.
static __always_inline int conn_fresh(__u64 sock)
{
	if (bpf_map_lookup_elem(&conns, &sock))
		return 0;
	__u8 one = 1;
	bpf_map_update_elem(&conns, &sock, &one, BPF_ANY);
	return 1;
}

// h2_walk's `preface` for looks_http's answer
static __always_inline int h2_start(int what)
{
	return what == 3 ? 1 : what == 4 ? 2 : 0;
}

// --- HTTP/2: walking the frames of a read or write ----------------------
//
// A record (EV_H2_READ/EV_H2_WRITE) holds the event's fields and then
// items, in order (userspace: src/ebpf/h2/wire.rs):
//   T_PREFACE                the connection's preface went this way
//   T_MIDSTREAM              a connection whose preface was not seen begins
//                            here, at a frame boundary (h2_midstream)
//   T_FRAME + 9 bytes        a frame header, as sent
//   T_BYTES + u16 n + n      payload bytes of the current HEADERS or
//                            CONTINUATION frame (a frame may take several)
//   T_LOST                   the frame boundaries were lost (too many frames
//                            in one buffer, or a record the ring had no
//                            room for): nothing more comes this way
#define T_FRAME 1
#define T_BYTES 2
#define T_LOST 3
#define T_PREFACE 4
#define T_MIDSTREAM 5
#define H2_STEPS 512 // frames (or frame pieces) walked in one buffer, at most
#define H2_IOVS 256  // iovec entries walked, at most (gRPC's C core writes
		     // a header block in pieces, one iovec each)
#define H2_DATA 0
#define H2_HEADERS 1
#define H2_RST_STREAM 3
#define H2_CONTINUATION 9
#define H2_END_STREAM 1


// Send the record built so far; 0 when the ring had no room (the
// direction is then lost: a frame userspace never sees breaks its HPACK).
static __always_inline int h2_flush(struct h2_out *o)
{
	struct h2_walk *w = &o->w;
	if (!w->pos)
		return 1;
	((struct http_event *)o->raw)->len = w->pos;
	__u64 size = H2_HEAD + (w->pos & (2 * H2_BUF - 1));
	long err = bpf_ringbuf_output(&events, o->raw, size, wake_flags(w->wake));
	w->pos = 0;
	w->wake = 0;
	if (err) {
		count(STAT_LOST);
		w->d.lost = 1;
		return 0;
	}
	return 1;
}

// Room for n more item bytes (flushing the record when it is full).
static __always_inline int h2_room(struct h2_out *o, __u32 n)
{
	return o->w.pos + n <= H2_BUF || h2_flush(o);
}

// One step of the walk (arg: the h2_out slot): a piece of the current
// frame's payload, or the next frame header. 1 ends the walk of this
// segment.
static long h2_step(__u32 i, void *arg)
{
	struct h2_out *o = bpf_map_lookup_elem(&h2_out, arg);
	if (!o)
		return 1;
	struct h2_walk *w = &o->w;
	if (w->off >= w->len || w->d.lost)
		return 1;
	__u8 *buf = o->raw + H2_HEAD;
	__u32 avail = w->len - w->off;
	if (w->d.rem) {
		__u32 n = w->d.rem < avail ? w->d.rem : avail;
		if (w->d.copy) {
			if (!h2_room(o, 4))
				return 1;
			__u32 room = H2_BUF - w->pos - 3;
			if (n > room)
				n = room;
			__u32 p = w->pos & (H2_BUF - 1);
			buf[p] = T_BYTES;
			buf[(p + 1) & (2 * H2_BUF - 1)] = n;
			buf[(p + 2) & (2 * H2_BUF - 1)] = n >> 8;
			__u64 m = n;
			BOUND(m, H2_BUF - 1);
			if (bpf_probe_read_user(buf + ((p + 3) & (H2_BUF - 1)), m,
						(void *)(w->data + w->off))) {
				w->d.lost = 1;
				return 1;
			}
			w->pos += 3 + n;
		}
		w->off += n;
		w->d.rem -= n;
		return 0;
	}
	// a frame header: 9 bytes, maybe split across buffers (then kept in
	// a1/a2 a byte at a time until whole)
	__u8 t[9] = {};
	if (w->d.have > 8) {
		w->d.lost = 1;
		return 1;
	}
	__u64 k = 9 - w->d.have;
	if (k > avail)
		k = avail;
	BOUND(k, 9);
	if (bpf_probe_read_user(t, k, (void *)(w->data + w->off))) {
		w->d.lost = 1;
		return 1;
	}
	// the header as a 72-bit number, a byte at a time: a1 keeps its first
	// 5 bytes (the low 40 bits, once whole), a2 the last 4
	__u64 a1 = w->d.a1;
	__u32 a2 = w->d.a2;
#pragma unroll
	for (int j = 0; j < 9; j++) {
		if (j >= k)
			break;
		a1 = (a1 << 8) | (a2 >> 24);
		a2 = (a2 << 8) | t[j];
	}
	w->off += k;
	w->d.have += k;
	if (w->d.have < 9) {
		w->d.a1 = a1;
		w->d.a2 = a2;
		return 1;
	}
	w->d.a1 = 0;
	w->d.a2 = 0;
	w->d.have = 0;
	__u32 len = (a1 >> 16) & 0xffffff;
	__u8 type = a1 >> 8, flags = a1;
	w->d.rem = len;
	w->d.copy = type == H2_HEADERS || type == H2_CONTINUATION;
	if (!w->d.copy && type != H2_RST_STREAM && !(type == H2_DATA && (flags & H2_END_STREAM)))
		return 0;
	if (!h2_room(o, 10))
		return 1;
	__u32 p = w->pos & (H2_BUF - 1);
	buf[p] = T_FRAME;
	buf[(p + 1) & (2 * H2_BUF - 1)] = a1 >> 32;
	buf[(p + 2) & (2 * H2_BUF - 1)] = a1 >> 24;
	buf[(p + 3) & (2 * H2_BUF - 1)] = a1 >> 16;
	buf[(p + 4) & (2 * H2_BUF - 1)] = a1 >> 8;
	buf[(p + 5) & (2 * H2_BUF - 1)] = a1;
	buf[(p + 6) & (2 * H2_BUF - 1)] = a2 >> 24;
	buf[(p + 7) & (2 * H2_BUF - 1)] = a2 >> 16;
	buf[(p + 8) & (2 * H2_BUF - 1)] = a2 >> 8;
	buf[(p + 9) & (2 * H2_BUF - 1)] = a2;
	w->pos += 10;
	return 0;
}

// One segment of the buffer (arg: the h2_out slot): the buffer, or its
// iovec number i; its frames walked. 1 ends the walk.
static long h2_seg(__u32 i, void *arg)
{
	struct h2_out *o = bpf_map_lookup_elem(&h2_out, arg);
	if (!o)
		return 1;
	struct h2_walk *w = &o->w;
	if (!w->total || w->d.lost)
		return 1;
	__u64 base = w->iov, n = w->total;
	if (w->vec) {
		struct iovec v;
		if (i >= w->iovs ||
		    bpf_probe_read_user(&v, sizeof(v), (void *)(w->iov + i * sizeof(v))))
			return 1;
		base = (__u64)v.iov_base;
		if (v.iov_len < n)
			n = v.iov_len;
	} else if (i) {
		return 1;
	}
	w->total -= n;
	__u64 s = w->skip < n ? w->skip : n;
	w->skip -= s;
	w->data = base + s;
	w->len = n - s;
	w->off = 0;
	bpf_loop(H2_STEPS, h2_step, arg, 0);
	if (w->off < w->len)
		w->d.lost = 1;
	return 0;
}

// Walk `total` bytes an HTTP/2 connection (socket `sock`) moved, in the
// buffer at ptr (SRC_BUF, SRC_IOV or SRC_MSG), in direction `write`, and
// hand userspace its items. `preface`: 1 when the buffer starts with the
// connection's preface (24 bytes, skipped), which makes it HTTP/2; 2 when
// it is whole frames of a connection not known yet (h2_midstream).
static __always_inline void h2_walk(__u64 sock, __u32 fd, __u64 start, int write, __u64 ptr,
				    __u8 src, __u64 total, __u64 ts, __u8 flags, int fresh,
				    int preface)
{
	// bpf_loop is Linux 5.17+: before, no HTTP/2 (the load's relocation
	// makes this a constant, and the verifier drops what follows)
	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_loop))
		return;
	// preface: 1 the connection's preface, 2 whole frames of a connection
	// whose preface was not seen (a known one just goes on)
	if (preface) {
		struct h2_conn z = {};
		if (bpf_map_update_elem(&h2_conns, &sock, &z, preface == 1 ? BPF_ANY : BPF_NOEXIST))
			preface = 0;
	}
	struct h2_conn *hc = bpf_map_lookup_elem(&h2_conns, &sock);
	if (!hc)
		return;
	struct h2_dir *dp = write ? &hc->d[1] : &hc->d[0];
	if (dp->lost)
		return;
	__u32 slot = write ? 1 : 0;
	struct h2_out *o = bpf_map_lookup_elem(&h2_out, &slot);
	if (!o)
		return;
	struct http_event *e = (struct http_event *)o->raw;
	fill(e, ts, bpf_get_current_pid_tgid() >> 32, fd, sock, write ? EV_H2_WRITE : EV_H2_READ,
	     total, start, fresh);
	e->flags = flags;
	struct h2_walk *w = &o->w;
	w->wake = fresh;
	w->d = *dp;
	w->pos = 0;
	if (preface) {
		o->raw[H2_HEAD] = preface == 1 ? T_PREFACE : T_MIDSTREAM;
		w->pos = 1;
	}
	w->iov = ptr;
	w->iovs = 1;
	w->vec = src != SRC_BUF;
	if (src == SRC_MSG) {
		struct user_msghdr m;
		if (bpf_probe_read_user(&m, sizeof(m), (void *)ptr))
			return;
		w->iov = (__u64)m.msg_iov;
		w->iovs = m.msg_iovlen;
	}
	w->total = total;
	w->skip = preface == 1 ? 24 : 0;
	bpf_loop(H2_IOVS, h2_seg, &slot, 0);
	if (w->total)
		w->d.lost = 1;
	if (w->d.lost) {
		count(STAT_H2_LOST);
		// say so, in the record or one of its own
		if (w->pos + 1 > H2_BUF)
			h2_flush(o);
		o->raw[H2_HEAD + (w->pos & (H2_BUF - 1))] = T_LOST;
		w->pos += 1;
	}
	h2_flush(o);
	*dp = w->d;
}

static __always_inline int do_exit(long ret)
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
	int h2 = -1; // -1: HTTP/1.x; else HTTP/2, 3 with the preface
	if (p.write) {
		// found and classified at entry
		data = p.ptr;
		if (p.cap < cap)
			cap = p.cap;
		if (p.h2 != 0xff)
			h2 = p.h2;
	} else {
		data = first_bytes(p.ptr, p.src, &cap);
		int what = looks_http(data, cap);
		if (what == 4)
			what = 0;
		if (what == 3 || (what == 0 && h2_proc()))
			h2 = what;
		else if (what == 0)
			return 0;
	}
	__u64 sock = sock_id(file_at(p.fd));
	if (!sock)
		return 0;
	__u64 ts = p.write ? p.ts : bpf_ktime_get_ns();
	if (h2 >= 0) {
		if (h2 == 3)
			h2_proc_add();
		h2_walk(sock, p.fd, proc_start(), p.write, p.ptr, p.src, ret, ts, 0,
			h2 == 3 && conn_fresh(sock), h2 == 3);
		return 0;
	}
	return report(p.fd, sock, data, cap, ret, ts, p.write, proc_start(), 0);
}

// --- The socket-only path (kernels with sock_send_length/sock_recv_length,
// 6.3+; the loader picks it when the kernel's BTF has them) -------------
//
// Those tracepoints fire inside sock_sendmsg/sock_recvmsg once the data has
// moved, with its length: a read or write of a file or pipe runs nothing.
// The syscall's own arguments are in the task's saved registers (x86-64:
// orig_ax the syscall number, di/si/dx its first three arguments).

#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47

// Where syscall nr keeps its data, for the direction asked; -1 when it is
// not one of the traced ones (io_uring, sendfile, splice, sendmmsg, a
// kernel-internal send in the task's context).
static __always_inline int src_of(long nr, int write)
{
	if (write) {
		if (nr == NR_WRITE || nr == NR_SENDTO)
			return SRC_BUF;
		if (nr == NR_WRITEV)
			return SRC_IOV;
		if (nr == NR_SENDMSG)
			return SRC_MSG;
		return -1;
	}
	if (nr == NR_READ || nr == NR_RECVFROM)
		return SRC_BUF;
	if (nr == NR_READV)
		return SRC_IOV;
	if (nr == NR_RECVMSG)
		return SRC_MSG;
	return -1;
}

// The socket's inode number when fd of task is the file of sk (so the
// syscall's arguments are the ones this data moved through; a kernel
// socket has no file), else 0. BTF pointers: plain loads, no helper calls,
// but for the fd table's slot.
static __always_inline __u64 sock_of_fd(struct task_struct *task, struct sock *sk, __u32 fd)
{
	struct socket *so = sk->sk_socket;
	if (!so)
		return 0;
	struct file *want = so->file;
	if (!want)
		return 0;
	struct fdtable *fdt = task->files->fdt;
	if (fd >= fdt->max_fds)
		return 0;
	struct file *got = 0;
	if (bpf_probe_read_kernel(&got, sizeof(got), &fdt->fd[fd]) || got != want)
		return 0;
	return want->f_inode->i_ino;
}

// One record of e.
static __always_inline void send_one(struct http_event *e, int wake)
{
	struct http_event *r = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!r) {
		count(STAT_LOST);
		return;
	}
	__builtin_memcpy(r, e, sizeof(*e));
	bpf_ringbuf_submit(r, wake_flags(wake));
}

// One record of the held request and then e (a paired record).
static __always_inline void send_pair(struct sk_conn *c, struct http_event *e, int wake)
{
	c->held = 0;
	struct http_event *r = bpf_ringbuf_reserve(&events, 2 * sizeof(*e), 0);
	if (!r) {
		count(STAT_LOST);
		count(STAT_LOST);
		return;
	}
	__builtin_memcpy(r, &c->req, sizeof(*e));
	__builtin_memcpy(r + 1, e, sizeof(*e));
	bpf_ringbuf_submit(r, wake_flags(wake || c->req.cgroup_v2));
}

#define TCP_CLOSE_STATE 7 // TCP_CLOSE
#define IPPROTO_TCP_NR 6

// State of its own for socket sk (inode number sock), within the cap: only
// TCP sockets, whose TCP_CLOSE deletes it again (a Unix socket's would
// live as long as the socket and never be counted down); 0 past the cap.
static __always_inline struct sk_conn *sk_conn_new(struct sock *sk, __u64 sock)
{
	if (sk->sk_protocol != IPPROTO_TCP_NR || sk->__sk_common.skc_state == TCP_CLOSE_STATE)
		return 0;
	__u32 zero = 0;
	__u64 *live = bpf_map_lookup_elem(&sk_live, &zero);
	if (!live || *live >= max_sk_conns)
		return 0;
	struct sk_conn *c = bpf_sk_storage_get(&sk_conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!c)
		return 0;
	__sync_fetch_and_add(live, 1);
	c->sock = sock;
	c->held = 0;
	c->tls = 0;
	c->h2 = 0;
	return c;
}

// Past the cap, or a socket that is not TCP: the message alone, as the
// syscall path sends it, with the process's cgroups every time (its first
// message is not known).
static __always_inline int on_sock_alone(struct task_struct *task, __u32 tgid, __u32 fd,
					 __u64 sock, __u64 data, __u64 cap, int ret, int write)
{
	__u32 slot = write;
	struct http_event *e = bpf_map_lookup_elem(&scratch, &slot);
	if (!e)
		return 0;
	__u64 len = bound_buf(cap);
	if (bpf_probe_read_user(e->buf, len, (void *)data))
		return 0;
	e->len = len;
	fill(e, bpf_ktime_get_ns(), tgid, fd, sock, write ? EV_WRITE : EV_READ, ret,
	     task->group_leader->start_boottime, 1);
	send_one(e, 0);
	return 0;
}

// The socket path: socket I/O inside a TLS call. The socket's state marks
// it TLS (its bytes are never looked at again, and its TCP_CLOSE ends the
// connection in userspace); the call learns its socket.
static __always_inline int tls_sock(struct tls_call *t, struct task_struct *task, struct sock *sk,
				    struct sk_conn *c, __u32 fd)
{
	__u64 sock = c ? c->sock : sock_of_fd(task, sk, fd);
	if (!sock)
		return 0;
	if (!c) {
		c = sk_conn_new(sk, sock);
		if (c)
			c->tls = 1;
	}
	t->fd = fd;
	t->sock = sock;
	t->seen = 1;
	return 0;
}

static __always_inline int on_sock(struct sock *sk, int ret, int flags, int write)
{
	CUT(9);
	if (ret <= 0 || (!write && (flags & MSG_PEEK)))
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == self_tgid)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	int src = src_of(regs->orig_ax, write);
	if (src < 0)
		return 0;
	CUT(1);
	struct sk_conn *c = bpf_sk_storage_get(&sk_conns, sk, 0, 0);
	// ciphertext: the TLS path reads the plaintext; this only names the
	// socket of a TLS call in flight (a 5-byte record header too)
	if (!c || c->tls) {
		struct tls_call *t = tls_call_now(task);
		if (t)
			return tls_sock(t, task, sk, c, regs->di);
		if (c)
			return 0;
	}
	if (c && c->h2) {
		// one first seen mid-stream may yet show its preface (a server
		// writes its SETTINGS before it reads the client's): it starts then
		int preface = 0;
		if (c->h2 == 2) {
			__u64 n = ret;
			if (looks_http(first_bytes(regs->si, src, &n), n) == 3) {
				c->h2 = 1;
				preface = 1;
			}
		}
		h2_walk(c->sock, regs->di, task->group_leader->start_boottime, write, regs->si, src,
			ret, bpf_ktime_get_ns(), 0, 0, preface);
		return 0;
	}
	__u64 cap = ret;
	__u64 data = first_bytes(regs->si, src, &cap);
	if (!data || cap < 8)
		return 0;
	// a socket that never carried HTTP: an 8-byte look first, the only cost
	// to other protocols; one that did: its bytes are copied at once
	int look = c ? 0 : looks_http(data, cap);
	if (!c && !look)
		return 0;
	CUT(2);
	__u32 fd = regs->di;
	__u64 sock = sock_of_fd(task, sk, fd);
	if (!sock)
		return 0;
	int fresh = !c;
	if (fresh) {
		c = sk_conn_new(sk, sock);
		if (!c)
			return look >= 3 ? 0 : on_sock_alone(task, tgid, fd, sock, data, cap, ret, write);
	}
	if (look == 4) {
		// HTTP/2 of a connection opened before the agent (or whose server
		// speaks first)
		c->h2 = 2;
		h2_walk(sock, fd, task->group_leader->start_boottime, write, regs->si, src, ret,
			bpf_ktime_get_ns(), 0, fresh, 2);
		return 0;
	}
	CUT(3);
	// built where it may stay: in the storage's slot when no request is
	// held there (a request then stays without a copy), else per CPU
	struct http_event *e = &c->req;
	int held = c->held;
	if (held) {
		__u32 slot = write;
		e = bpf_map_lookup_elem(&scratch, &slot);
		if (!e)
			return 0;
	}
	__u64 len = bound_buf(cap);
	if (bpf_probe_read_user(e->buf, len, (void *)data))
		return 0;
	int what = classify(e->buf);
	if (!what)
		return 0;
	if (what == 3) {
		c->h2 = 1;
		h2_walk(sock, fd, task->group_leader->start_boottime, write, regs->si, src, ret,
			bpf_ktime_get_ns(), 0, fresh, 1);
		return 0;
	}
	CUT(4);
	e->len = len;
	fill(e, bpf_ktime_get_ns(), tgid, fd, sock, write ? EV_WRITE : EV_READ, ret,
	     task->group_leader->start_boottime, fresh);
	CUT(5);
	// a request waits for what answers it, unless one already waits
	// (pipelining: both go now, in order)
	if (!held) {
		if (what == 1)
			c->held = 1;
		else
			send_one(e, fresh);
		return 0;
	}
	send_pair(c, e, fresh);
	return 0;
}

// `<tracepoint>_btf` goes on tp_btf/<tracepoint> (the loader attaches by
// that name)
SEC("tp_btf/sock_send_length")
int sock_send_length_btf(__u64 *ctx)
{
	return on_sock((struct sock *)ctx[0], (int)ctx[1], (int)ctx[2], 1);
}

SEC("tp_btf/sock_recv_length")
int sock_recv_length_btf(__u64 *ctx)
{
	return on_sock((struct sock *)ctx[0], (int)ctx[1], (int)ctx[2], 0);
}

// The end of a TCP connection on the socket path: the connection is over
// once it reaches TCP_CLOSE (after the last close and the FIN exchange, a
// reset, or a failed connect), however many fds held it. A socket connected
// anew gets there first too. (Syscall tracepoints on close would put every
// process's syscalls on the slow path.)
SEC("tp_btf/inet_sock_set_state")
int inet_sock_set_state_btf(__u64 *ctx)
{
	if ((int)ctx[2] != TCP_CLOSE_STATE)
		return 0;
	struct sock *sk = (struct sock *)ctx[0];
	struct sk_conn *c = bpf_sk_storage_get(&sk_conns, sk, 0, 0);
	if (!c)
		return 0;
	if (c->h2 || c->tls)
		bpf_map_delete_elem(&h2_conns, &c->sock);
	// on the stack, not in the scratch slots: this runs in softirq too,
	// and may interrupt a program using them
	struct http_event e;
	__builtin_memset(&e, 0, sizeof(e));
	fill(&e, bpf_ktime_get_ns(), bpf_get_current_pid_tgid() >> 32, 0, c->sock, EV_CLOSE, 0, 0, 0);
	if (c->held)
		send_pair(c, &e, 0);
	else
		send_one(&e, 0);
	if (!bpf_sk_storage_delete(&sk_conns, sk)) {
		__u32 zero = 0;
		__u64 *live = bpf_map_lookup_elem(&sk_live, &zero);
		if (live && *live > 0)
			__sync_fetch_and_add(live, -1);
	}
	return 0;
}

// --- The syscall path (fallback) ---------------------------------------

#define ARG(i) (ctx->args[i])

// One syscall's pair of programs, `enter_<name>_tp` on sys_enter_<name> and
// `exit_<name>_tp` on sys_exit_<name> (the loader attaches by that name).
#define TRACE(name, on_enter)                                                  \
	SEC("tracepoint/syscalls/sys_enter_" #name)                            \
	int enter_##name##_tp(struct trace_event_raw_sys_enter *ctx)           \
	{                                                                      \
		return on_enter;                                               \
	}                                                                      \
	SEC("tracepoint/syscalls/sys_exit_" #name)                             \
	int exit_##name##_tp(struct trace_event_raw_sys_exit *ctx)             \
	{                                                                      \
		return do_exit(ctx->ret);                                      \
	}
#define TRACE_READ(name, src, flags) TRACE(name, enter_read(ARG(0), ARG(1), src, flags))
#define TRACE_WRITE(name, src, count) TRACE(name, enter_write(ARG(0), ARG(1), src, count))

TRACE_READ(read, SRC_BUF, 0)
TRACE_READ(recvfrom, SRC_BUF, ARG(3))
TRACE_READ(readv, SRC_IOV, 0)
TRACE_READ(recvmsg, SRC_MSG, ARG(2))
TRACE_WRITE(write, SRC_BUF, ARG(2))
TRACE_WRITE(sendto, SRC_BUF, ARG(2))
// iovec and msghdr: the first iovec's length bounds what is looked at
TRACE_WRITE(writev, SRC_IOV, ~0ULL)
TRACE_WRITE(sendmsg, SRC_MSG, ~0ULL)

// The last close of a socket ends its connection; closing one of several
// fds that hold it (fd 0 of a child that also writes on fd 1, the parent's
// copy after fork) does not.
SEC("tracepoint/syscalls/sys_enter_close")
int enter_close_tp(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == self_tgid)
		return 0;
	__u32 fd = ARG(0);
	struct file *f = file_at(fd);
	__u64 sock = sock_id(f);
	if (!sock || shared_file(f))
		return 0;
	forget_conn(tgid, fd, sock);
	return 0;
}

// A socket that becomes a new connection (accepted, or connected again):
// whatever was known under its id is stale.
static __always_inline int new_conn(long fd)
{
	if (fd < 0)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == self_tgid)
		return 0;
	forget_conn(tgid, fd, sock_id(file_at(fd)));
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int exit_accept4_tp(struct trace_event_raw_sys_exit *ctx)
{
	return new_conn(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int exit_accept_tp(struct trace_event_raw_sys_exit *ctx)
{
	return new_conn(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int enter_connect_tp(struct trace_event_raw_sys_enter *ctx)
{
	return new_conn(ARG(0));
}

// --- TLS: uprobes on OpenSSL (and its ABI relatives) ---------------------
//
// Userspace attaches these to every libssl (and binary with OpenSSL's
// symbols) that a process maps, once per file (src/ebpf/tls.rs): entry
// probes keep the call's arguments, return probes read the plaintext,
// which then goes the syscall path's way (report: classification in
// userspace, pairing and attribution per socket) with F_TLS set. Program
// `<name>_up` is attached by the loader to the symbol it lists.

static __always_inline int tls_enter(struct pt_regs *ctx, int write, int ex)
{
	if ((__u32)(bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	struct tls_call *t = bpf_task_storage_get(&tls_calls, bpf_get_current_task_btf(), 0,
						  BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!t)
		return 0;
	t->ssl = PT_REGS_PARM1(ctx);
	t->buf = PT_REGS_PARM2(ctx);
	t->out = ex ? PT_REGS_PARM4(ctx) : 0;
	t->ts = bpf_ktime_get_ns();
	t->sock = 0;
	t->fd = 0;
	t->seen = 0;
	t->write = write;
	t->active = 1;
	return 0;
}

// The socket of call t (of SSL* key): the one its socket I/O went through,
// remembered for the SSL*, or the one remembered from an earlier call.
static __always_inline int tls_socket(struct tls_call *t, struct tls_key *key)
{
	struct tls_sock *v = bpf_map_lookup_elem(&tls_socks, key);
	if (t->seen) {
		if (!t->sock)
			t->sock = sock_id(file_at(t->fd));
		if (!t->sock)
			return 0;
		if (!v || v->sock != t->sock || v->fd != t->fd) {
			struct tls_sock n = { .sock = t->sock, .fd = t->fd };
			bpf_map_update_elem(&tls_socks, key, &n, BPF_ANY);
		}
		return 1;
	}
	if (!v)
		return 0;
	t->sock = v->sock;
	t->fd = v->fd;
	return 1;
}

static __always_inline int tls_exit(struct pt_regs *ctx)
{
	struct tls_call *tp = bpf_task_storage_get(&tls_calls, bpf_get_current_task_btf(), 0, 0);
	if (!tp || !tp->active)
		return 0;
	struct tls_call t = *tp;
	tp->active = 0;
	// an int: -1 (SSL_ERROR_WANT_READ and kin) is 0xffffffff in rax, with
	// the buffer holding what an earlier call left there
	long ret = (int)PT_REGS_RC(ctx);
	__u64 n = 0;
	if (t.out) {
		// SSL_*_ex: 1 on success, the count behind the pointer
		if (ret != 1 || bpf_probe_read_user(&n, sizeof(n), (void *)t.out))
			return 0;
	} else {
		if (ret <= 0)
			return 0;
		n = ret;
	}
	int what = looks_http(t.buf, n);
	struct tls_key key = { .ssl = t.ssl, .tgid = bpf_get_current_pid_tgid() >> 32 };
	if (!tls_socket(&t, &key)) {
		if (what)
			count(STAT_TLS_NO_SOCK);
		return 0;
	}
	__u64 ts = t.write ? t.ts : bpf_ktime_get_ns();
	if (what == 1 || what == 2)
		return report(t.fd, t.sock, t.buf, n, n, ts, t.write, proc_start(), F_TLS);
	// HTTP/2 (ALPN h2) from its preface on; anything else goes nowhere
	h2_walk(t.sock, t.fd, proc_start(), t.write, t.buf, SRC_BUF, n, ts, F_TLS,
		what >= 3 && conn_fresh(t.sock), h2_start(what));
	return 0;
}

// int SSL_write(SSL *, const void *, int); int SSL_read(SSL *, void *, int)
SEC("uprobe")
int SSL_write_up(struct pt_regs *ctx)
{
	return tls_enter(ctx, 1, 0);
}

SEC("uprobe")
int SSL_read_up(struct pt_regs *ctx)
{
	return tls_enter(ctx, 0, 0);
}

// int SSL_write_ex(SSL *, const void *, size_t, size_t *written), and
// SSL_read_ex alike
SEC("uprobe")
int SSL_write_ex_up(struct pt_regs *ctx)
{
	return tls_enter(ctx, 1, 1);
}

SEC("uprobe")
int SSL_read_ex_up(struct pt_regs *ctx)
{
	return tls_enter(ctx, 0, 1);
}

// every function's return probe: the call's kind is in its state
SEC("uretprobe")
int SSL_ret_up(struct pt_regs *ctx)
{
	return tls_exit(ctx);
}

// --- TLS: Go's crypto/tls ------------------------------------------------
//
// `crypto/tls.(*Conn).Write` and `Read` of Go binaries (Go 1.18+, register
// ABI: receiver in ax, the []byte in bx/cx, results n in ax). Go moves
// goroutine stacks and threads under a call, so no uretprobe: userspace
// probes each return instruction of Read (`go_tls_ret_up`), and a call is
// keyed by its goroutine (g, kept in r14 by Go's ABI), not by thread. The socket comes from the connection: Conn.conn (a net.Conn
// interface, its data word at +8) -> *net.TCPConn (its *netFD at +0) ->
// netFD.pfd.Sysfd (+16, after poll.FD's 16-byte fdMutex), unchanged since
// Go 1.12; the file at that fd must be a socket, else nothing is reported.

struct go_key {
	__u64 g;
	__u32 tgid;
	__u32 pad;
};

struct go_call {
	__u64 conn; // the *tls.Conn
	__u64 buf;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_key);
	__type(value, struct go_call);
} go_calls SEC(".maps");

// Go's HTTP server reads a keep-alive connection's next byte on its own
// while a handler runs (its background read): a one-byte read is kept
// here, by (connection, process), and goes first in the next read's record.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct go_key);
	__type(value, __u8);
} go_first_byte SEC(".maps");

// The socket of *tls.Conn `conn` (see above): its inode number, with its
// fd in *fd; 0 when the chain does not lead to a socket.
static __always_inline __u64 go_conn_sock(__u64 conn, __s64 *fd)
{
	__u64 data = 0, nfd = 0;
	if (bpf_probe_read_user(&data, sizeof(data), (void *)(conn + 8)) || !data ||
	    bpf_probe_read_user(&nfd, sizeof(nfd), (void *)data) || !nfd ||
	    bpf_probe_read_user(fd, sizeof(*fd), (void *)(nfd + 16)) || *fd < 0 || *fd > 0x7fffffff)
		return 0;
	return sock_id(file_at(*fd));
}

// Write: the data is there at entry, and it is reported there (a goroutine
// may be descheduled before it returns, after the response has come back).
SEC("uprobe")
int go_tls_write_up(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == self_tgid)
		return 0;
	__u64 buf = ctx->bx;
	long n = ctx->cx;
	if (n <= 0)
		return 0;
	int what = looks_http(buf, n);
	__s64 fd = -1;
	__u64 sock = go_conn_sock(ctx->ax, &fd);
	if (!sock) {
		if (what)
			count(STAT_TLS_NO_SOCK);
		return 0;
	}
	if (what == 1 || what == 2)
		return report(fd, sock, buf, n, n, bpf_ktime_get_ns(), 1, proc_start(), F_TLS);
	h2_walk(sock, fd, proc_start(), 1, buf, SRC_BUF, n, bpf_ktime_get_ns(), F_TLS,
		what >= 3 && conn_fresh(sock), h2_start(what));
	return 0;
}

// Read: the call is kept by goroutine until one of its return instructions.
SEC("uprobe")
int go_tls_read_up(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == self_tgid)
		return 0;
	struct go_key k = { .g = ctx->r14, .tgid = tgid };
	struct go_call c = { .conn = ctx->ax, .buf = ctx->bx };
	bpf_map_update_elem(&go_calls, &k, &c, BPF_ANY);
	return 0;
}

// at every return instruction of Read
SEC("uprobe")
int go_tls_ret_up(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_key k = { .g = ctx->r14, .tgid = tgid };
	struct go_call *cp = bpf_map_lookup_elem(&go_calls, &k);
	if (!cp)
		return 0;
	struct go_call c = *cp;
	bpf_map_delete_elem(&go_calls, &k);
	long n = ctx->ax;
	if (n <= 0)
		return 0;
	// the conn's byte read on its own, if any: it starts this read's data
	// (HTTP/1 only: an HTTP/2 connection's reads are all walked)
	struct go_key ck = { .g = c.conn, .tgid = tgid };
	int prefix = -1;
	__u8 one = 0;
	__s64 fd = -1;
	__u64 sock = 0;
	if (n == 1) {
		sock = go_conn_sock(c.conn, &fd);
		if (sock && bpf_map_lookup_elem(&h2_conns, &sock)) {
			h2_walk(sock, fd, proc_start(), 0, c.buf, SRC_BUF, n, bpf_ktime_get_ns(), F_TLS,
				0, 0);
			return 0;
		}
		if (!bpf_probe_read_user(&one, 1, (void *)c.buf))
			bpf_map_update_elem(&go_first_byte, &ck, &one, BPF_ANY);
		return 0;
	}
	int what = 0;
	__u8 *kept = bpf_map_lookup_elem(&go_first_byte, &ck);
	if (kept) {
		prefix = *kept;
		bpf_map_delete_elem(&go_first_byte, &ck);
		__u8 head[8] = {};
		head[0] = prefix;
		if (n < 7 || bpf_probe_read_user(head + 1, 7, (void *)c.buf))
			return 0;
		what = classify(head);
		if (what != 1 && what != 2)
			return 0;
	} else {
		what = looks_http(c.buf, n);
	}
	sock = go_conn_sock(c.conn, &fd);
	if (!sock) {
		if (what)
			count(STAT_TLS_NO_SOCK);
		return 0;
	}
	if (what != 1 && what != 2) {
		h2_walk(sock, fd, proc_start(), 0, c.buf, SRC_BUF, n, bpf_ktime_get_ns(), F_TLS,
			what >= 3 && conn_fresh(sock), h2_start(what));
		return 0;
	}
	return report_from(fd, sock, c.buf, n, n + (prefix >= 0), bpf_ktime_get_ns(), 0, proc_start(),
			   F_TLS, prefix);
}

// --- Finding TLS libraries: processes that start to listen or connect,
// and known users that exit (classic tracepoints, both paths) ------------

#define TCP_SYN_SENT_STATE 2
#define TCP_LISTEN_STATE 10

// A process that starts listening or connecting over TCP is about to talk:
// userspace reads its maps for TLS libraries (once a second at most). A
// library is mapped by then: linked at start, or loaded before the socket.
SEC("tracepoint/sock/inet_sock_set_state")
int inet_sock_set_state_proc(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->newstate != TCP_LISTEN_STATE && ctx->newstate != TCP_SYN_SENT_STATE)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == self_tgid || !tgid)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 *told = bpf_map_lookup_elem(&procs_told, &tgid);
	if (told && now - *told < 1000000000ULL)
		return 0;
	bpf_map_update_elem(&procs_told, &tgid, &now, BPF_ANY);
	emit(now, tgid, 0, 0, EV_PROC, 0, 0, 0, 1, proc_start(), 0);
	return 0;
}

// A process userspace found mapping a TLS library exits (its last thread).
SEC("tracepoint/sched/sched_process_exit")
int sched_process_exit_proc(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if ((__u32)id != tgid)
		return 0;
	bpf_map_delete_elem(&procs_told, &tgid);
	if (bpf_map_delete_elem(&tls_pids, &tgid))
		return 0;
	emit(bpf_ktime_get_ns(), tgid, 0, 0, EV_EXIT, 0, 0, 0, 1, proc_start(), 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
