//! Loading the committed BPF object with aya, attaching it to the syscall
//! tracepoints, and reading its ring buffer.
//!
//! A reader thread drains the ring on its own clock ([`POLL`]) or when the
//! kernel wakes it (a new connection, or a ring filling up), so the ring
//! never holds more than a moment's worth; the cycle drains what is left
//! before it reads the interval's numbers. One mutex guards the ring and the
//! aggregation: the thread takes it once per wake-up, not per event.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};

use super::pipeline::Pipeline;
use super::track::{Dropped, Limits};
use crate::collect::cgroup::mountinfo::read_layout;
use crate::collect::{CollectError, Collector};
use crate::model::Sample;
use crate::telemetry::Telemetry;

/// The compiled program (built by `bpf/build.sh` from `bpf/http.bpf.c`).
static OBJECT: &[u8] = aya::include_bytes_aligned!("bpf/http.bpf.o");

/// How often the reader thread drains the ring when nothing wakes it.
const POLL: Duration = Duration::from_millis(100);

const STAT_LOST: u32 = 1;

/// Why eBPF tracing is not running.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("loading the BPF object: {0}")]
    Load(String),
    #[error("the kernel refused program {program}: {reason}")]
    Program { program: String, reason: String },
    #[error("attaching {program} to tracepoint syscalls/{tracepoint}: {reason}")]
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
fn chain(e: &dyn std::error::Error) -> String {
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
    /// Drain the ring on a thread of its own (the agent); when false only
    /// [`Collector::collect`] drains it (tests: every process they traced
    /// is gone by then, so the kernel's cgroup ids must place it).
    pub reader_thread: bool,
}

struct Inner {
    // kept alive: dropping it detaches the programs
    _ebpf: Ebpf,
    ring: RingBuf<MapData>,
    stats: PerCpuArray<MapData, u64>,
    pipeline: Pipeline,
}

impl Inner {
    /// Read everything the ring holds now.
    fn pump(&mut self) {
        while let Some(item) = self.ring.next() {
            self.pipeline.event(&item);
        }
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
    seen: Seen,
}

/// Counters already handed to telemetry (it takes increments).
#[derive(Default)]
struct Seen {
    events: u64,
    lost: u64,
    requests: u64,
    dropped: Dropped,
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
        let mut ebpf = EbpfLoader::new()
            // task storage (the syscalls in flight) is created by the kernel
            // as usual; aya only has no userspace type for it, none needed
            .allow_unsupported_maps()
            .override_global("self_tgid", &std::process::id(), true)
            .load(OBJECT)
            .map_err(|e| EbpfError::Load(chain(&e)))?;
        let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
        for name in &names {
            let prog: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| EbpfError::Load(format!("program {name} vanished")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| EbpfError::Program {
                    program: name.clone(),
                    reason: chain(&e),
                })?;
            prog.load().map_err(|e| EbpfError::Program {
                program: name.clone(),
                reason: chain(&e),
            })?;
            // program `enter_read_tp` goes on syscalls/sys_enter_read
            let tp = format!("sys_{}", name.strip_suffix("_tp").unwrap_or(name));
            prog.attach("syscalls", &tp)
                .map_err(|e| EbpfError::Attach {
                    program: name.clone(),
                    tracepoint: tp.clone(),
                    reason: chain(&e),
                })?;
        }
        let ring = ebpf
            .take_map("events")
            .ok_or_else(|| EbpfError::Map("events", "missing".into()))
            .and_then(|m| RingBuf::try_from(m).map_err(|e| EbpfError::Map("events", chain(&e))))?;
        let stats = ebpf
            .take_map("stats")
            .ok_or_else(|| EbpfError::Map("stats", "missing".into()))
            .and_then(|m| {
                PerCpuArray::try_from(m).map_err(|e| EbpfError::Map("stats", chain(&e)))
            })?;
        let ring_fd = ring.as_raw_fd();
        // loading parsed the kernel's BTF (megabytes, freed now): give that
        // memory back rather than carry it as RSS for the agent's lifetime
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
        let layout = read_layout(&opts.proc_path.join("self/mountinfo"), &opts.cgroup_path);
        let inner = Arc::new(Mutex::new(Inner {
            _ebpf: ebpf,
            ring,
            stats,
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
        telemetry.ebpf_up.set(1);
        tracing::info!(
            programs = names.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "eBPF HTTP tracing attached to syscall tracepoints"
        );
        Ok(HttpCollector {
            inner,
            stop,
            telemetry,
            seen: Seen::default(),
        })
    }
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
        drop(g);
        for s in &summaries {
            s.samples(out);
        }
        let t = &self.telemetry;
        let s = &mut self.seen;
        t.ebpf_events.inc_by(events.saturating_sub(s.events));
        t.ebpf_events_lost.inc_by(lost.saturating_sub(s.lost));
        t.http_requests.inc_by(requests.saturating_sub(s.requests));
        for (reason, now, before) in [
            ("unanswered", dropped.unanswered, s.dropped.unanswered),
            ("unmatched", dropped.unmatched, s.dropped.unmatched),
            (
                "pending_limit",
                dropped.pending_limit,
                s.dropped.pending_limit,
            ),
            ("conn_limit", dropped.conn_limit, s.dropped.conn_limit),
        ] {
            if now > before {
                t.http_dropped(reason, now - before);
            }
        }
        t.ebpf_connections.set(conns as i64);
        if lost > s.lost {
            crate::warn_limited!(
                "ebpf_lost",
                lost = lost - s.lost,
                "eBPF ring buffer full: HTTP events lost (counted in cased_agent_ebpf_events_lost_total)"
            );
        }
        *s = Seen {
            events,
            lost,
            requests,
            dropped,
        };
        Ok(())
    }
}
