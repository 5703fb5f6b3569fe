//! Loading the committed BPF object with aya, attaching it, and reading its
//! ring buffer.
//!
//! Two ways to see the data ([`Attach`]), chosen at load time: the socket
//! tracepoints `sock_send_length`/`sock_recv_length` (kernel 6.3+: only
//! socket I/O runs a program; a TCP connection ends at `inet_sock_set_state`
//! to TCP_CLOSE) or, where the kernel has none, the syscall tracepoints of
//! every read and write (and `close`, `accept`, `connect`). The socket path
//! enables no syscall tracepoint at all: one would put every syscall of
//! every process on the kernel's slow path.
//!
//! A reader thread drains the ring on its own clock ([`POLL`]) or when the
//! kernel wakes it (a new connection, or a ring filling up), so the ring
//! never holds more than a moment's worth; the cycle drains what is left
//! before it reads the interval's numbers. One mutex guards the ring and the
//! aggregation: the thread takes it once per wake-up, not per event.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, TracePoint};

use super::event::{Control, control};
use super::tls::TlsProbes;
use aya::{Btf, Ebpf, EbpfLoader};

use super::btf_extract;
use super::pipeline::Pipeline;
use super::track::{Dropped, Limits};
use crate::collect::cgroup::mountinfo::read_layout;
use crate::collect::{CollectError, Collector};
use crate::model::Sample;
use crate::telemetry::Telemetry;
use crate::telemetry::ebpf::HttpDrop;

/// The compiled program (built by `bpf/build.sh` from `bpf/http.bpf.c`).
pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!("bpf/http.bpf.o");

/// The object to load: the committed one, or with the `bench-bpf-object`
/// feature the file `CASED_EBPF_OBJECT` names (kernel-side variants
/// measured on one build of the agent).
fn object() -> std::borrow::Cow<'static, [u8]> {
    #[cfg(feature = "bench-bpf-object")]
    if let Some(path) = std::env::var_os("CASED_EBPF_OBJECT") {
        match std::fs::read(&path) {
            Ok(bytes) => {
                tracing::info!(
                    "eBPF object from CASED_EBPF_OBJECT: {}",
                    Path::new(&path).display()
                );
                return std::borrow::Cow::Owned(bytes);
            }
            Err(e) => tracing::warn!("CASED_EBPF_OBJECT {}: {e}", Path::new(&path).display()),
        }
    }
    std::borrow::Cow::Borrowed(OBJECT)
}

/// How often the reader thread drains the ring when nothing wakes it.
const POLL: Duration = Duration::from_millis(100);

const STAT_LOST: u32 = 1;
const STAT_TLS_NO_SOCK: u32 = 2;
const STAT_H2_LOST: u32 = 3;

/// The kernel's BTF.
const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Why eBPF tracing is not running.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("loading the BPF object: {0}")]
    Load(String),
    #[error("the kernel refused program {program}: {reason}")]
    Program { program: String, reason: String },
    #[error("--ebpf-attach=sock: this kernel has no {0} tracepoint (Linux 6.3+)")]
    NoSockTracepoints(&'static str),
    #[error("attaching {program} to tracepoint {tracepoint}: {reason}")]
    Attach {
        program: String,
        tracepoint: String,
        reason: String,
    },
    #[error("BPF map {0} missing or unusable: {1}")]
    Map(&'static str, String),
    #[error("cannot start the ring buffer reader: {0}")]
    Thread(std::io::Error),
}

/// An error with its sources (aya's top-level messages are terse; the
/// verifier log is in the chain).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `/proc` of the host (to find a process's cgroup).
    pub proc_path: PathBuf,
    /// The host's cgroup root (its mounts place processes that are gone).
    pub cgroup_path: PathBuf,
    /// Distinct paths per container before `/{other}`.
    pub max_paths: usize,
    /// Where the data is seen (`--ebpf-attach`).
    pub attach: Attach,
    /// Sockets that may keep state of their own in the kernel on the socket
    /// path (a held request; ~0.7 KB each, charged to the agent's memory);
    /// past it, messages go one record each ([`DEFAULT_MAX_SOCK_STATE`]).
    pub max_sock_state: u64,
    /// TLS through uprobes on OpenSSL (`--ebpf-tls`): libraries found in
    /// processes' maps ([`super::tls`]).
    pub tls: bool,
    /// Drain the ring on a thread of its own (the agent); when false only
    /// [`Collector::collect`] drains it (tests: every process they traced
    /// is gone by then, so the kernel's cgroup ids must place it).
    pub reader_thread: bool,
}

/// Sockets with kernel-side state at most, by default: about 11 MiB of
/// kernel memory at the cap, a quarter of the connections userspace tracks
/// (the others are traced all the same, a record per message).
pub const DEFAULT_MAX_SOCK_STATE: u64 = 16384;

/// Which hooks see the data (`--ebpf-attach`, `CASED_EBPF_ATTACH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attach {
    /// `sock` when the kernel has the socket tracepoints, else `syscalls`.
    #[default]
    Auto,
    /// `tp_btf/sock_send_length` and `sock_recv_length` (Linux 6.3+):
    /// programs run for socket I/O only.
    Sock,
    /// The `syscalls` tracepoints of every read and write (the fallback).
    Syscalls,
}

/// The tracepoints the socket path needs (tracefs `events/sock/<name>`).
const SOCK_TRACEPOINTS: [&str; 3] = [
    "sock_send_length",
    "sock_recv_length",
    "inet_sock_set_state",
];

impl Attach {
    /// `auto`, `sock` or `syscalls`.
    pub fn parse(s: &str) -> Option<Attach> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(Attach::Auto),
            "sock" => Some(Attach::Sock),
            "syscalls" => Some(Attach::Syscalls),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Attach::Auto => "auto",
            Attach::Sock => "sock",
            Attach::Syscalls => "syscalls",
        }
    }

    /// The mode to load, given whether the kernel has the socket
    /// tracepoints (`missing`: the first one it lacks).
    fn resolve(self, missing: Option<&'static str>) -> Result<Attach, EbpfError> {
        match (self, missing) {
            (Attach::Syscalls, _) | (Attach::Auto, Some(_)) => Ok(Attach::Syscalls),
            (Attach::Sock, Some(tp)) => Err(EbpfError::NoSockTracepoints(tp)),
            (_, None) => Ok(Attach::Sock),
        }
    }

    /// Whether program `name` of the object is attached at start in this
    /// (resolved) mode: `*_btf` on the socket path, `*_tp` on the syscall
    /// one; with TLS, `*_proc` on both (the uprobes `*_up` are attached
    /// per library file, [`TlsProbes`]).
    fn runs(self, name: &str, tls: bool) -> bool {
        if name.ends_with("_proc") {
            return tls;
        }
        match self {
            Attach::Sock => name.ends_with("_btf"),
            _ => name.ends_with("_tp"),
        }
    }
}

/// The first socket tracepoint this kernel lacks (tracefs lists every
/// tracepoint it has; with BTF, each has its `btf_trace_<name>` type).
fn missing_sock_tracepoint() -> Option<&'static str> {
    let roots = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    SOCK_TRACEPOINTS.into_iter().find(|tp| {
        !roots
            .iter()
            .any(|r| Path::new(r).join("events/sock").join(tp).is_dir())
    })
}

struct Inner {
    // kept alive: dropping it detaches the programs
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    stats: PerCpuArray<MapData, u64>,
    pipeline: Pipeline,
    tls: Option<TlsProbes>,
    /// Process records read and not acted on yet.
    controls: Vec<Control>,
}

impl Inner {
    /// Read everything the ring holds now; then look for TLS libraries in
    /// the processes it named.
    fn pump(&mut self) {
        while let Some(item) = self.ring.next() {
            match control(&item) {
                Some(c) => self.controls.push(c),
                None => self.pipeline.event(&item),
            }
        }
        let Some(tls) = self.tls.as_mut() else {
            self.controls.clear();
            return;
        };
        for c in self.controls.drain(..) {
            match c {
                Control::Talks(pid) => tls.talks(&mut self.ebpf, pid),
                Control::Exited(pid) => tls.exited(pid),
            }
        }
        tls.tick(&mut self.ebpf);
    }

    fn stat(&self, slot: u32) -> u64 {
        self.stats
            .get(&slot, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}

/// The running tracer; a [`Collector`] of the `http.*` metrics.
pub struct HttpCollector {
    inner: Arc<Mutex<Inner>>,
    stop: Arc<AtomicBool>,
    telemetry: Arc<Telemetry>,
    attach: Attach,
    seen: Seen,
}

/// Counters already handed to telemetry (it takes increments).
#[derive(Default)]
struct Seen {
    events: u64,
    lost: u64,
    requests: u64,
    dropped: Dropped,
    tls: Tls,
}

/// The TLS path's counters.
#[derive(Default, Clone, Copy)]
struct Tls {
    events: u64,
    no_socket: u64,
    /// HTTP/2 directions the kernel lost (`STAT_H2_LOST`).
    h2_lost: u64,
    attach_errors: u64,
    libraries: usize,
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HttpCollector {
    /// Load, attach and start reading. On error nothing stays attached.
    pub fn start(opts: &HttpOptions, telemetry: Arc<Telemetry>) -> Result<Self, EbpfError> {
        let started = Instant::now();
        let mode = opts.attach.resolve(missing_sock_tracepoint())?;
        // the kernel's types the object needs, not all of them (btf_extract)
        let tracepoints: &[&str] = match mode {
            Attach::Sock => &SOCK_TRACEPOINTS,
            _ => &[],
        };
        let kernel = btf_extract::read(Path::new(VMLINUX), btf_extract::CORE_ROOTS, tracepoints)
            .map_err(|e| EbpfError::Load(chain(&e)))?;
        let mut ebpf = loader_without_btf()
            .btf(Some(&kernel.relocations))
            // task storage (the syscalls in flight) is created by the kernel
            // as usual; aya only has no userspace type for it, none needed
            .allow_unsupported_maps()
            .override_global("self_tgid", &std::process::id(), true)
            .override_global("max_sk_conns", &opts.max_sock_state, true)
            .load(&object())
            .map_err(|e| EbpfError::Load(chain(&e)))?;
        drop(kernel.relocations);
        let programs = attach_all(&mut ebpf, &kernel.tracepoints, mode, opts.tls)?;
        let tls = opts
            .tls
            .then(|| start_tls(&mut ebpf, &opts.proc_path))
            .flatten();
        let (ring, stats) = take_maps(&mut ebpf)?;
        let ring_fd = ring.as_raw_fd();
        // loading read the kernel's BTF (megabytes, freed now): give that
        // memory back rather than carry it as RSS for the agent's lifetime
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
        let layout = read_layout(&opts.proc_path.join("self/mountinfo"), &opts.cgroup_path);
        let inner = Arc::new(Mutex::new(Inner {
            ebpf,
            ring,
            stats,
            tls,
            controls: Vec::new(),
            pipeline: Pipeline::new(
                opts.proc_path.clone(),
                layout.unified,
                layout.cpu,
                opts.max_paths,
                Limits::default(),
            ),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        if opts.reader_thread {
            let inner = inner.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("ebpf-ring".into())
                .spawn(move || reader(&inner, ring_fd, &stop))
                .map_err(EbpfError::Thread)?;
        }
        telemetry.ebpf.up.set(1);
        tracing::info!(
            programs,
            took_ms = started.elapsed().as_millis() as u64,
            "eBPF HTTP tracing attached: {} ({})",
            mode.name(),
            match mode {
                Attach::Sock => "tp_btf sock_send_length, sock_recv_length, inet_sock_set_state",
                _ => "syscall tracepoints of every read, write and close",
            }
        );
        Ok(HttpCollector {
            inner,
            stop,
            telemetry,
            attach: mode,
            seen: Seen::default(),
        })
    }

    /// The mode loaded (never [`Attach::Auto`]).
    pub fn attach(&self) -> Attach {
        self.attach
    }

    /// Ring-buffer records and the events in them, read since start, but
    /// for the TLS path's (a record of the socket path may hold two: a
    /// request and what followed it on its connection).
    pub fn records_and_events(&self) -> (u64, u64) {
        let g = lock(&self.inner);
        // without the TLS path's, one record per event always
        let tls = g.pipeline.tls_events;
        (g.pipeline.records - tls, g.pipeline.events - tls)
    }

    /// The TLS library files probed now, each with the path it was found
    /// at (empty without TLS).
    pub fn tls_files(&self) -> Vec<(super::tls::FileId, String)> {
        lock(&self.inner)
            .tls
            .as_ref()
            .map_or_else(Vec::new, |t| t.files())
    }
}

/// The ring buffer and the per-CPU stats, owned apart from the object.
fn take_maps(ebpf: &mut Ebpf) -> Result<(RingBuf<MapData>, PerCpuArray<MapData, u64>), EbpfError> {
    let ring = ebpf
        .take_map("events")
        .ok_or_else(|| EbpfError::Map("events", "missing".into()))
        .and_then(|m| RingBuf::try_from(m).map_err(|e| EbpfError::Map("events", chain(&e))))?;
    let stats = ebpf
        .take_map("stats")
        .ok_or_else(|| EbpfError::Map("stats", "missing".into()))
        .and_then(|m| PerCpuArray::try_from(m).map_err(|e| EbpfError::Map("stats", chain(&e))))?;
    Ok((ring, stats))
}

/// The TLS uprobes loaded and every process looked at once; `None` (logged)
/// when the kernel refuses them: plaintext HTTP is traced all the same.
fn start_tls(ebpf: &mut Ebpf, proc_path: &Path) -> Option<TlsProbes> {
    match TlsProbes::new(ebpf, proc_path.to_path_buf()) {
        Ok(mut t) => {
            t.tick(ebpf);
            tracing::info!(
                libraries = t.libraries(),
                "eBPF TLS: uprobes on OpenSSL's SSL_read/SSL_write(_ex)"
            );
            Some(t)
        }
        Err(e) => {
            tracing::warn!("eBPF TLS tracing unavailable, plaintext HTTP only: {e}");
            None
        }
    }
}

/// An `EbpfLoader` that has not parsed the kernel's BTF: aya 0.14's
/// `EbpfLoader::new` parses all of `/sys/kernel/btf/vmlinux` (~16 MB of heap)
/// only for `.btf()` to replace it. Built on a thread of its own whose
/// root is `/sys/kernel/btf` (CLONE_FS: the root of that thread only), it
/// finds no such file. Without CAP_SYS_CHROOT it is built as usual.
fn loader_without_btf() -> EbpfLoader<'static> {
    let built = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain syscalls on this thread's own (unshared) fs state.
            let own_root = unsafe {
                libc::unshare(libc::CLONE_FS) == 0 && libc::chroot(c"/sys/kernel/btf".as_ptr()) == 0
            };
            own_root.then(EbpfLoader::new)
        })
        .join()
    });
    built.ok().flatten().unwrap_or_else(|| {
        tracing::debug!("eBPF loader: no thread root of its own, aya parses the kernel's BTF");
        EbpfLoader::new()
    })
}

/// Load and attach the object's programs of `mode`; how many. `tracepoints`:
/// the kernel's id of each `btf_trace_<tracepoint>` (the socket path).
fn attach_all(
    ebpf: &mut Ebpf,
    tracepoints: &[(String, u32)],
    mode: Attach,
    tls: bool,
) -> Result<usize, EbpfError> {
    // BTF holding just those typedefs at those ids, all tp_btf reads of it
    let btf = match tracepoints {
        [] => None,
        ids => Some(
            btf_extract::parse(Path::new(VMLINUX), &btf_extract::tracepoint_blob(ids))
                .map_err(|e| EbpfError::Load(chain(&e)))?,
        ),
    };
    let names: Vec<String> = ebpf
        .programs()
        .map(|(n, _)| n.to_string())
        .filter(|n| mode.runs(n, tls))
        .collect();
    for name in &names {
        let prog = ebpf
            .program_mut(name)
            .ok_or_else(|| EbpfError::Load(format!("program {name} vanished")))?;
        let refused = |e: aya::programs::ProgramError| EbpfError::Program {
            program: name.clone(),
            reason: chain(&e),
        };
        let failed = |tracepoint: String| {
            move |e: aya::programs::ProgramError| EbpfError::Attach {
                program: name.clone(),
                tracepoint,
                reason: chain(&e),
            }
        };
        if let Some(tp) = name.strip_suffix("_btf") {
            // program `sock_send_length_btf` goes on tp_btf/sock_send_length
            let prog: &mut BtfTracePoint = prog.try_into().map_err(refused)?;
            let btf: &Btf = btf
                .as_ref()
                .ok_or_else(|| EbpfError::Load(format!("no BTF id for tp_btf/{tp}")))?;
            prog.load(tp, btf).map_err(refused)?;
            prog.attach().map_err(failed(format!("tp_btf/{tp}")))?;
        } else if let Some(tp) = name.strip_suffix("_proc") {
            // `inet_sock_set_state_proc` goes on sock/inet_sock_set_state
            let category = if tp.starts_with("sched_") {
                "sched"
            } else {
                "sock"
            };
            let prog: &mut TracePoint = prog.try_into().map_err(refused)?;
            prog.load().map_err(refused)?;
            prog.attach(category, tp)
                .map_err(failed(format!("{category}/{tp}")))?;
        } else {
            // program `enter_read_tp` goes on syscalls/sys_enter_read
            let prog: &mut TracePoint = prog.try_into().map_err(refused)?;
            prog.load().map_err(refused)?;
            let tp = format!("sys_{}", name.strip_suffix("_tp").unwrap_or(name));
            prog.attach("syscalls", &tp)
                .map_err(failed(format!("syscalls/{tp}")))?;
        }
    }
    Ok(names.len())
}

/// The reader thread: sleep in poll(2) on the ring (the kernel wakes it on
/// a new connection or when the ring fills), drain, repeat.
fn reader(inner: &Mutex<Inner>, fd: i32, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the fd lives as long as `inner`.
        unsafe { libc::poll(&mut p, 1, POLL.as_millis() as i32) };
        lock(inner).pump();
    }
}

impl Drop for HttpCollector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Collector for HttpCollector {
    fn name(&self) -> &'static str {
        "http"
    }

    fn collect(&mut self, _now: Instant, out: &mut Vec<Sample>) -> Result<(), CollectError> {
        let mut g = lock(&self.inner);
        g.pump();
        let summaries = g.pipeline.finish_interval(monotonic_ns());
        let (events, lost, requests, dropped, conns) = (
            g.pipeline.events,
            g.stat(STAT_LOST),
            g.pipeline.requests,
            g.pipeline.dropped(),
            g.pipeline.connections(),
        );
        let tls = Tls {
            events: g.pipeline.tls_events,
            no_socket: g.stat(STAT_TLS_NO_SOCK),
            h2_lost: g.stat(STAT_H2_LOST),
            attach_errors: g.tls.as_ref().map_or(0, |t| t.attach_errors),
            libraries: g.tls.as_ref().map_or(0, |t| t.libraries()),
        };
        drop(g);
        for s in &summaries {
            s.samples(out);
        }
        let t = &self.telemetry.ebpf;
        let s = &mut self.seen;
        t.events.inc_by(events.saturating_sub(s.events));
        t.events_lost(lost.saturating_sub(s.lost));
        t.http_requests.inc_by(requests.saturating_sub(s.requests));
        for (reason, now, before) in [
            (
                HttpDrop::Unanswered,
                dropped.unanswered,
                s.dropped.unanswered,
            ),
            (HttpDrop::Unmatched, dropped.unmatched, s.dropped.unmatched),
            (
                HttpDrop::PendingLimit,
                dropped.pending_limit,
                s.dropped.pending_limit,
            ),
            (
                HttpDrop::ConnLimit,
                dropped.conn_limit,
                s.dropped.conn_limit,
            ),
            (HttpDrop::TlsNoSocket, tls.no_socket, s.tls.no_socket),
            (
                HttpDrop::H2Unknown,
                dropped.h2_unknown,
                s.dropped.h2_unknown,
            ),
            (HttpDrop::H2Lost, tls.h2_lost, s.tls.h2_lost),
        ] {
            if now > before {
                t.http_dropped(reason, now - before);
            }
        }
        t.connections.set(conns as i64);
        t.tls_events.inc_by(tls.events.saturating_sub(s.tls.events));
        t.tls_attach_errors
            .inc_by(tls.attach_errors.saturating_sub(s.tls.attach_errors));
        t.tls_libraries.set(tls.libraries as i64);
        *s = Seen {
            events,
            lost,
            requests,
            dropped,
            tls,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_resolve_and_pick_their_programs() {
        assert_eq!(Attach::parse(" Sock "), Some(Attach::Sock));
        assert_eq!(Attach::parse("syscalls"), Some(Attach::Syscalls));
        assert_eq!(Attach::parse("auto"), Some(Attach::Auto));
        assert_eq!(Attach::parse("kprobe"), None);
        let missing = Some("sock_send_length");
        assert_eq!(Attach::Auto.resolve(None).unwrap(), Attach::Sock);
        assert_eq!(Attach::Auto.resolve(missing).unwrap(), Attach::Syscalls);
        assert_eq!(Attach::Syscalls.resolve(None).unwrap(), Attach::Syscalls);
        assert_eq!(Attach::Sock.resolve(None).unwrap(), Attach::Sock);
        let e = Attach::Sock.resolve(missing).unwrap_err().to_string();
        assert!(e.contains("no sock_send_length tracepoint"), "{e}");
        // the socket path runs no syscall tracepoint, not even close
        for p in ["enter_close_tp", "exit_read_tp", "enter_write_tp"] {
            assert!(
                !Attach::Sock.runs(p, true) && Attach::Syscalls.runs(p, true),
                "{p}"
            );
        }
        for p in ["sock_send_length_btf", "inet_sock_set_state_btf"] {
            assert!(
                Attach::Sock.runs(p, true) && !Attach::Syscalls.runs(p, true),
                "{p}"
            );
        }
        // the TLS path's process tracepoints run in both modes, with TLS;
        // its uprobes are attached per library, never at start
        for mode in [Attach::Sock, Attach::Syscalls] {
            assert!(mode.runs("inet_sock_set_state_proc", true));
            assert!(!mode.runs("inet_sock_set_state_proc", false));
            assert!(!mode.runs("SSL_read_up", true));
        }
    }
}
