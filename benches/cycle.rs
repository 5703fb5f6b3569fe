//! One full container collection cycle (discovery + every file of every
//! container + samples), over
//! (a) 1,000 real v1 cgroups made on this machine, kubelet-shaped, in every
//!     v1 controller (root only; skipped with a note otherwise), with
//!     descriptors kept open (the default) and with open/read/close per file
//!     (`FdBudget::new(0)`, the "before");
//! (b) a 1,000-container v2 fixture tree in a temp dir.
//!
//! Besides criterion's wall times, each group prints the CPU time
//! (utime + stime of the process, `getrusage`) per cycle and per container
//! over 50 cycles. Run: `cargo bench --bench cycle`.

#[path = "../tests/it/cgroup_support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cased_agent::collect::Collector;
use cased_agent::collect::cgroup::CgroupCollector;
use cased_agent::collect::cgroup::files::FdBudget;
use cased_agent::collect::cgroup::mountinfo::CgroupLayout;
use cased_agent::host::HostPaths;
use cased_agent::telemetry::Telemetry;
use criterion::Criterion;

use support::{RealTree, V2Tree, container_id, pod_uid};

const N: u32 = 1000;

fn cpu_time() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn collector(
    layout: CgroupLayout,
    host: HostPaths,
    budget: Option<Arc<FdBudget>>,
) -> CgroupCollector {
    let t = Arc::new(Telemetry::new());
    match budget {
        Some(b) => CgroupCollector::with_budget(layout, host, t, b),
        None => CgroupCollector::with_layout(layout, host, t),
    }
}

/// `VmRSS` of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Warm up (first sight opens the files), print CPU per cycle and the
/// memory the collector's state takes, then let criterion time it.
fn run(c: &mut Criterion, name: &str, col: &mut CgroupCollector, containers: usize) {
    let rss0 = rss_kib();
    let mut out = Vec::with_capacity(containers * 16);
    col.collect(Instant::now(), &mut out).unwrap();
    out.clear();
    col.collect(Instant::now(), &mut out).unwrap();
    let rss1 = rss_kib();
    println!(
        "{name}: RSS grew {:.1} MiB over the first two cycles (collector state + {} samples)",
        rss1.saturating_sub(rss0) as f64 / 1024.0,
        out.len()
    );
    let cycles = 50;
    let t0 = cpu_time();
    for _ in 0..cycles {
        out.clear();
        col.collect(Instant::now(), &mut out).unwrap();
    }
    let per_cycle = (cpu_time() - t0) / cycles;
    println!(
        "{name}: {containers} containers, {} samples/cycle, {} kept-open fds: CPU {:.2} ms/cycle = {:.1} µs/container",
        out.len(),
        col.open_files(),
        per_cycle.as_secs_f64() * 1e3,
        per_cycle.as_secs_f64() * 1e6 / containers as f64
    );
    c.bench_function(name, |b| {
        b.iter(|| {
            out.clear();
            col.collect(Instant::now(), &mut out).unwrap();
        })
    });
}

fn real_v1(c: &mut Criterion) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("real_v1: skipped (needs root to create cgroups)");
        return;
    }
    let Some(mut tree) = RealTree::new("bench") else {
        println!("real_v1: skipped (no v1 cpu/cpuacct/memory/blkio/pids mounts)");
        return;
    };
    let salt = std::process::id();
    for i in 0..N {
        let pod = i / 2;
        let qos = ["guaranteed", "burstable", "besteffort"][(pod % 3) as usize];
        let rel = tree.add_container(qos, &pod_uid(pod, salt), &container_id(i, salt));
        if i % 4 == 0 {
            tree.write("cpu", &rel, "cpu.cfs_quota_us", "50000");
        }
    }
    let host = HostPaths::new("/proc", "/sys/fs/cgroup");
    let mut kept = collector(tree.layout(), host.clone(), None);
    run(c, "cycle/real_v1_1000/kept_fds", &mut kept, N as usize);
    drop(kept);
    let mut per_read = collector(tree.layout(), host, Some(FdBudget::new(0)));
    run(
        c,
        "cycle/real_v1_1000/open_close",
        &mut per_read,
        N as usize,
    );
}

fn fixture_v2(c: &mut Criterion) {
    let tree = V2Tree::new(N);
    let host = HostPaths::new(tree.dir.path().join("no-proc"), tree.dir.path());
    let mut col = collector(tree.layout(), host, None);
    run(c, "cycle/fixture_v2_1000/kept_fds", &mut col, N as usize);
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    real_v1(&mut c);
    fixture_v2(&mut c);
    c.final_summary();
}
