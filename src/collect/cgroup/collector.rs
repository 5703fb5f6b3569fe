//! [`CgroupCollector`]: SPEC §4 container metrics from the cgroup tree, v1
//! or v2, and through each container's pod the pod network
//! ([`super::pod_net`]).
//!
//! Which hierarchy: cgroup v2 when the unified mount has the `cpu` or
//! `memory` controller (a hybrid host's empty or `hugetlb`-only unified
//! mount does not count); otherwise the v1 controllers (`cpuacct`/`cpu`,
//! `memory`, `blkio`); otherwise v2 without controllers (CPU usage only).
//! Containers are discovered in one hierarchy (v1: `cpuacct`, else `cpu`,
//! `memory`, `blkio`) and read at the same relative path in every
//! controller.
//!
//! Memory limits: v1 writes a huge number for "no limit" (see
//! [`v1::UNLIMITED_AT`]); besides that, a limit at or above the host's
//! `MemTotal` is reported as no limit (it cannot bind, and a percentage of
//! it would mislead), on v1 and v2 alike.
//!
//! Cost: every file is kept open and re-read with `pread` (see [`super::files`]);
//! limits (`cpu.cfs_quota_us`/`cpu.max`, `memory.limit_in_bytes`/`memory.max`)
//! are re-read every [`LIMIT_REFRESH_CYCLES`] cycles, the rest every cycle;
//! a pod's network is read once per cycle through one of its processes, and
//! host-network pods are recognised once and then skipped.
//!
//! A container whose file is malformed or unreadable loses its metrics for
//! that cycle (counted in `container_errors`, logged at a limited rate); a
//! container that vanished is dropped with its rate state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::collect::procfs::meminfo;
use crate::collect::{CollectError, Collector};
use crate::host::HostPaths;
use crate::model::{About, Sample, unit};
use crate::rate::{Counter, StateMap};
use crate::telemetry::Telemetry;
use crate::warn_limited;

use super::discover::{Discovery, Found};
use super::files::{CgFile, FdBudget, raise_nofile_limit};
use super::mountinfo::{CgroupLayout, read_layout};
use super::parse::ParseError;
use super::pod_net::PodNetwork;
use super::v1::{IoBytes, StackedMajors};
use super::{v1, v2};

/// Metric names (SPEC §4, containers table).
pub mod names {
    pub const CPU_USAGE: &str = "container.cpu.usage_percent";
    pub const CPU_THROTTLE: &str = "container.cpu.throttle_percent";
    pub const CPU_THROTTLED_TIME: &str = "container.cpu.throttled_time";
    pub const CPU_LIMIT: &str = "container.cpu.limit_cores";
    pub const MEM_USAGE: &str = "container.memory.usage";
    pub const MEM_LIMIT: &str = "container.memory.limit";
    pub const MEM_USAGE_PCT: &str = "container.memory.usage_percent";
    pub const MEM_RSS: &str = "container.memory.rss";
    pub const MEM_CACHE: &str = "container.memory.cache";
    pub const MEM_SWAP: &str = "container.memory.swap";
    pub const MEM_WORKING_SET: &str = "container.memory.working_set";
    pub const MEM_OOM_KILLS: &str = "container.memory.oom_kills";
    pub const DISK_READ: &str = "container.disk.read_bytes_per_sec";
    pub const DISK_WRITE: &str = "container.disk.write_bytes_per_sec";
    pub const NET_RX: &str = "container.network.rx_bytes_per_sec";
    pub const NET_TX: &str = "container.network.tx_bytes_per_sec";
}

/// What a container's cgroup files hold, in common units (v1 or v2).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// CPU time used, ns.
    pub cpu_usage_ns: Option<u64>,
    /// (periods, throttled periods, throttled time in ns).
    pub throttling: Option<(u64, u64, u64)>,
    pub cpu_limit_cores: Option<f64>,
    pub mem_usage: Option<u64>,
    pub mem_limit: Option<u64>,
    pub rss: Option<u64>,
    pub cache: Option<u64>,
    pub swap: Option<u64>,
    pub inactive_file: Option<u64>,
    pub oom_kills: Option<u64>,
    pub io: Option<IoBytes>,
}

/// Why one container's metrics were lost for a cycle.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
}

/// Read one file and parse it; `Ok(None)` when the file (or its
/// controller) is not there.
fn parse_if_open<T>(
    f: &mut Option<CgFile>,
    buf: &mut Vec<u8>,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<Option<T>, ContainerError> {
    match f {
        Some(f) => parse_file(f, buf, parse),
        None => Ok(None),
    }
}

#[derive(Debug)]
struct V1Files {
    limits: Limits,
    cpuacct_usage: Option<CgFile>,
    cpu_stat: Option<CgFile>,
    quota: Option<CgFile>,
    period: Option<CgFile>,
    mem_usage: Option<CgFile>,
    mem_limit: Option<CgFile>,
    mem_stat: Option<CgFile>,
    oom: Option<CgFile>,
    blkio: Option<CgFile>,
    procs: Option<CgFile>,
}

#[derive(Debug)]
struct V2Files {
    limits: Limits,
    cpu_stat: CgFile,
    cpu_max: CgFile,
    mem_current: CgFile,
    mem_max: CgFile,
    mem_stat: CgFile,
    swap: CgFile,
    events: CgFile,
    io: CgFile,
    procs: CgFile,
}

#[derive(Debug)]
enum Files {
    V1(Box<V1Files>),
    V2(Box<V2Files>),
}

/// The controller mounts the collector reads.
#[derive(Debug, Clone)]
enum Mode {
    V1(V1Mounts),
    V2 { root: PathBuf },
    Off,
}

/// The v1 controllers' mounts (any may be missing).
#[derive(Debug, Clone)]
struct V1Mounts {
    cpu: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    memory: Option<PathBuf>,
    blkio: Option<PathBuf>,
}

impl V1Mounts {
    /// Where containers are discovered.
    fn primary(&self) -> Option<&Path> {
        (self.cpuacct.as_deref())
            .or(self.cpu.as_deref())
            .or(self.memory.as_deref())
            .or(self.blkio.as_deref())
    }
}

fn join(root: &Path, rel: &str, file: &str) -> PathBuf {
    let mut p = root.join(rel.trim_start_matches('/'));
    p.push(file);
    p
}

impl Mode {
    fn choose(layout: &CgroupLayout) -> Mode {
        if let Some(u) = &layout.unified {
            let ctl = std::fs::read_to_string(u.join("cgroup.controllers")).unwrap_or_default();
            if ctl
                .split_ascii_whitespace()
                .any(|c| c == "cpu" || c == "memory")
            {
                return Mode::V2 { root: u.clone() };
            }
        }
        if layout.cpu.is_some()
            || layout.cpuacct.is_some()
            || layout.memory.is_some()
            || layout.blkio.is_some()
        {
            return Mode::V1(V1Mounts {
                cpu: layout.cpu.clone(),
                cpuacct: layout.cpuacct.clone(),
                memory: layout.memory.clone(),
                blkio: layout.blkio.clone(),
            });
        }
        match &layout.unified {
            Some(u) => Mode::V2 { root: u.clone() },
            None => Mode::Off,
        }
    }

    /// The hierarchy containers are discovered in.
    fn primary(&self) -> Option<&Path> {
        match self {
            Mode::V1(m) => m.primary(),
            Mode::V2 { root } => Some(root),
            Mode::Off => None,
        }
    }

    fn files(&self, rel: &str, budget: &Arc<FdBudget>, phase: u32) -> Files {
        let dir = |root: &Option<PathBuf>| -> Option<Arc<Path>> {
            root.as_deref()
                .map(|r| Arc::from(join(r, rel, "").as_path()))
        };
        let f = |dir: &Option<Arc<Path>>, name: &'static str| {
            dir.as_ref()
                .map(|d| CgFile::new(d.clone(), name, budget.clone()))
        };
        match self {
            Mode::V1(m) => {
                let (cpu, cpuacct, memory, blkio) =
                    (dir(&m.cpu), dir(&m.cpuacct), dir(&m.memory), dir(&m.blkio));
                // a container's cgroup.procs: memory's, else cpuacct's or cpu's
                let procs = memory.clone().or(cpuacct.clone()).or(cpu.clone());
                Files::V1(Box::new(V1Files {
                    limits: Limits::new(phase),
                    cpuacct_usage: f(&cpuacct, "cpuacct.usage"),
                    cpu_stat: f(&cpu, "cpu.stat"),
                    quota: f(&cpu, "cpu.cfs_quota_us"),
                    period: f(&cpu, "cpu.cfs_period_us"),
                    mem_usage: f(&memory, "memory.usage_in_bytes"),
                    mem_limit: f(&memory, "memory.limit_in_bytes"),
                    mem_stat: f(&memory, "memory.stat"),
                    oom: f(&memory, "memory.oom_control"),
                    blkio: f(&blkio, "blkio.throttle.io_service_bytes"),
                    // where V1Mounts::procs looks: memory, cpuacct, cpu;
                    // reopened when read again within two seconds
                    procs: procs.map(|d| CgFile::v1_pid_list(d, "cgroup.procs", budget.clone())),
                }))
            }
            Mode::V2 { root } => {
                let d: Arc<Path> = Arc::from(join(root, rel, "").as_path());
                let g = |name: &'static str| CgFile::new(d.clone(), name, budget.clone());
                Files::V2(Box::new(V2Files {
                    limits: Limits::new(phase),
                    cpu_stat: g("cpu.stat"),
                    cpu_max: g("cpu.max"),
                    mem_current: g("memory.current"),
                    mem_max: g("memory.max"),
                    mem_stat: g("memory.stat"),
                    swap: g("memory.swap.current"),
                    events: g("memory.events"),
                    io: g("io.stat"),
                    procs: g("cgroup.procs"),
                }))
            }
            Mode::Off => unreachable!("no containers are discovered without a hierarchy"),
        }
    }
}

/// Limits change rarely (a resize): they are read on first sight and then
/// every [`LIMIT_REFRESH_CYCLES`] cycles (each container at its own phase,
/// so the reads spread over cycles), saving 2–3 reads per container and
/// cycle. A changed limit shows within that many cycles.
pub const LIMIT_REFRESH_CYCLES: u32 = 5;

#[derive(Debug)]
struct Limits {
    /// (CPU cores, memory bytes) as last read.
    last: Option<(Option<f64>, Option<u64>)>,
    /// Cycles until the next read.
    countdown: u32,
}

impl Limits {
    fn new(phase: u32) -> Self {
        Limits {
            last: None,
            countdown: phase % LIMIT_REFRESH_CYCLES,
        }
    }

    /// Whether the limits are to be read this cycle (counts the cycle).
    fn due(&mut self) -> bool {
        if self.last.is_none() {
            return true;
        }
        if self.countdown == 0 {
            self.countdown = LIMIT_REFRESH_CYCLES - 1;
            return true;
        }
        self.countdown -= 1;
        false
    }

    fn set(&mut self, cores: Option<f64>, mem: Option<u64>) {
        self.last = Some((cores, mem));
    }

    fn get(&self) -> (Option<f64>, Option<u64>) {
        self.last.unwrap_or((None, None))
    }
}

impl Files {
    /// The container's `cgroup.procs`.
    fn procs(&mut self) -> Option<&mut CgFile> {
        match self {
            Files::V1(f) => f.procs.as_mut(),
            Files::V2(f) => Some(&mut f.procs),
        }
    }

    fn read_stats(
        &mut self,
        buf: &mut Vec<u8>,
        stacked: &StackedMajors,
    ) -> Result<Stats, ContainerError> {
        match self {
            Files::V1(f) => read_v1(f, buf, stacked),
            Files::V2(f) => read_v2(f, buf, stacked),
        }
    }
}

fn read_v1(
    f: &mut V1Files,
    buf: &mut Vec<u8>,
    stacked: &StackedMajors,
) -> Result<Stats, ContainerError> {
    let mut s = Stats {
        cpu_usage_ns: parse_if_open(&mut f.cpuacct_usage, buf, v1::cpuacct_usage)?,
        ..Stats::default()
    };
    if let Some(c) = parse_if_open(&mut f.cpu_stat, buf, v1::cpu_stat)? {
        s.throttling = Some((c.nr_periods, c.nr_throttled, c.throttled_ns));
    }
    if f.limits.due() {
        // the period only matters when there is a quota
        let mut cores = None;
        if let Some(q) = parse_if_open(&mut f.quota, buf, v1::cfs_quota)?.flatten()
            && let Some(p) = parse_if_open(&mut f.period, buf, v1::cfs_period)?
        {
            cores = Some(q as f64 / p as f64);
        }
        let mem = parse_if_open(&mut f.mem_limit, buf, v1::memory_limit)?.flatten();
        f.limits.set(cores, mem);
    }
    (s.cpu_limit_cores, s.mem_limit) = f.limits.get();
    s.mem_usage = parse_if_open(&mut f.mem_usage, buf, v1::memory_usage)?;
    if let Some(m) = parse_if_open(&mut f.mem_stat, buf, v1::memory_stat)? {
        s.rss = Some(m.rss);
        s.cache = Some(m.cache);
        s.swap = m.swap;
        s.inactive_file = Some(m.inactive_file);
    }
    s.oom_kills = parse_if_open(&mut f.oom, buf, v1::oom_kills)?.flatten();
    s.io = parse_if_open(&mut f.blkio, buf, |t| {
        v1::io_service_bytes_disks(t, stacked)
    })?;
    Ok(s)
}

fn read_v2(
    f: &mut V2Files,
    buf: &mut Vec<u8>,
    stacked: &StackedMajors,
) -> Result<Stats, ContainerError> {
    let mut s = Stats::default();
    if let Some(c) = parse_file(&mut f.cpu_stat, buf, v2::cpu_stat)? {
        s.cpu_usage_ns = Some(c.usage_usec.saturating_mul(1000));
        s.throttling = c.throttling.map(|t| {
            (
                t.nr_periods,
                t.nr_throttled,
                t.throttled_usec.saturating_mul(1000),
            )
        });
    }
    if f.limits.due() {
        let cores = parse_file(&mut f.cpu_max, buf, v2::cpu_max)?
            .and_then(|m| m.quota_usec.map(|q| q as f64 / m.period_usec as f64));
        let mem = parse_file(&mut f.mem_max, buf, |t| {
            super::parse::max_or_u64("memory.max", t)
        })?
        .flatten();
        f.limits.set(cores, mem);
    }
    (s.cpu_limit_cores, s.mem_limit) = f.limits.get();
    s.mem_usage = parse_file(&mut f.mem_current, buf, |t| {
        super::parse::single_u64("memory.current", t)
    })?;
    if let Some(m) = parse_file(&mut f.mem_stat, buf, v2::memory_stat)? {
        s.rss = Some(m.anon);
        s.cache = Some(m.file);
        s.inactive_file = Some(m.inactive_file);
    }
    s.swap = parse_file(&mut f.swap, buf, |t| {
        super::parse::single_u64("memory.swap.current", t)
    })?;
    s.oom_kills = parse_file(&mut f.events, buf, v2::oom_kills)?.flatten();
    s.io = parse_file(&mut f.io, buf, |t| v2::io_stat_disks(t, stacked))?;
    Ok(s)
}

/// [`parse_if_open`] for a file that is always there in principle.
fn parse_file<T>(
    f: &mut CgFile,
    buf: &mut Vec<u8>,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<Option<T>, ContainerError> {
    match f.read(buf) {
        Ok(None) => Ok(None),
        Ok(Some(text)) => parse(text)
            .map(Some)
            .map_err(|source| ContainerError::Parse {
                path: f.path(),
                source,
            }),
        Err(source) => Err(ContainerError::Io {
            path: f.path(),
            source,
        }),
    }
}

/// Per-container state across cycles: open files and counters.
#[derive(Debug, Default)]
struct ContainerState {
    files: Option<Files>,
    cycle: u64,
    cpu: Counter,
    periods: Counter,
    throttled: Counter,
    throttled_ns: Counter,
    oom: Counter,
    disk_read: Counter,
    disk_write: Counter,
}

/// The container collector (see the module doc).
pub struct CgroupCollector {
    host: HostPaths,
    telemetry: Arc<Telemetry>,
    mode: Mode,
    discovery: Option<Discovery>,
    found: Vec<Arc<Found>>,
    states: StateMap<String, ContainerState>,
    pods: PodNetwork,
    budget: Arc<FdBudget>,
    buf: Vec<u8>,
    /// The host's `MemTotal`: a limit at or above it is no limit.
    mem_total: Option<u64>,
    cycle: u64,
    /// Containers whose files were set up (spreads limit reads).
    opened: u32,
    /// device-mapper and md majors, whose I/O the disks beneath count.
    stacked: StackedMajors,
}

impl CgroupCollector {
    /// The layout comes from `{proc}/self/mountinfo`, rebased onto
    /// `host.cgroup` (directories probed when it lists no cgroup mount). Raises the soft `RLIMIT_NOFILE` to the hard limit.
    pub fn new(host: HostPaths, telemetry: Arc<Telemetry>) -> Self {
        let layout = read_layout(&host.proc_file("self/mountinfo"), host.cgroup_root());
        Self::with_layout(layout, host, telemetry)
    }

    /// With an explicit layout (tests and benchmarks point the controller
    /// mounts at a subtree of their own).
    pub fn with_layout(layout: CgroupLayout, host: HostPaths, telemetry: Arc<Telemetry>) -> Self {
        let budget = FdBudget::from_nofile(raise_nofile_limit());
        Self::with_budget(layout, host, telemetry, budget)
    }

    /// With an explicit descriptor budget (`FdBudget::new(0)`: open and
    /// close every file on every read).
    pub fn with_budget(
        layout: CgroupLayout,
        host: HostPaths,
        telemetry: Arc<Telemetry>,
        budget: Arc<FdBudget>,
    ) -> Self {
        let mode = Mode::choose(&layout);
        let discovery = mode.primary().map(|p| Discovery::new(p, budget.clone()));
        let mem_total = std::fs::read_to_string(host.proc_file("meminfo"))
            .ok()
            .and_then(|t| meminfo::parse(&t).ok())
            .map(|m| m.total);
        let stacked = stacked_majors(&host.proc);
        let pods = PodNetwork::new(&host.proc);
        CgroupCollector {
            host,
            telemetry,
            mode,
            discovery,
            found: Vec::new(),
            states: StateMap::default(),
            pods,
            budget,
            buf: vec![0; 8192],
            mem_total,
            cycle: 0,
            opened: 0,
            stacked,
        }
    }

    /// `"v1"`, `"v2"` or `"off"`: which hierarchy is read.
    pub fn version(&self) -> &'static str {
        match self.mode {
            Mode::V1(_) => "v1",
            Mode::V2 { .. } => "v2",
            Mode::Off => "off",
        }
    }

    /// Descriptors kept open across cycles.
    pub fn open_files(&self) -> usize {
        self.budget.open()
    }

    /// Directory listings done by discovery so far.
    pub fn listings(&self) -> u64 {
        self.discovery.as_ref().map_or(0, |d| d.listings)
    }

    fn collect_containers(&mut self, now: Instant, out: &mut Vec<Sample>) -> usize {
        let mut vanished = false;
        let mut n = 0;
        for i in 0..self.found.len() {
            let found = self.found[i].clone();
            match self.collect_container(&found, now, out) {
                // a container that lost this cycle's metrics is still there
                Outcome::Done | Outcome::Skipped => n += 1,
                Outcome::Vanished => {
                    vanished = true;
                    if let Some(d) = &mut self.discovery {
                        d.mark_parent_dirty(&found.rel);
                    }
                }
            }
        }
        n += if vanished { self.rescan(now, out) } else { 0 };
        n
    }

    /// Something vanished: list the dirty directories again, read what is
    /// new (a container that replaced it shows in this same cycle).
    fn rescan(&mut self, now: Instant, out: &mut Vec<Sample>) -> usize {
        let Some(d) = &mut self.discovery else {
            return 0;
        };
        if let Err(e) = d.scan(&mut self.found) {
            warn_limited!("cgroup-scan", error = %e, "cgroup discovery failed");
            return 0;
        }
        let mut n = 0;
        for i in 0..self.found.len() {
            let found = self.found[i].clone();
            let seen = self
                .states
                .get(&found.rel.to_string())
                .is_some_and(|s| s.cycle == self.cycle);
            if !seen && !matches!(self.collect_container(&found, now, out), Outcome::Vanished) {
                n += 1;
            }
        }
        n
    }

    fn collect_container(&mut self, found: &Found, now: Instant, out: &mut Vec<Sample>) -> Outcome {
        let st = self.states.touch_with(&*found.rel);
        st.cycle = self.cycle;
        let files = st.files.get_or_insert_with(|| {
            self.opened = self.opened.wrapping_add(1);
            self.mode.files(&found.rel, &self.budget, self.opened)
        });
        let stats = match files.read_stats(&mut self.buf, &self.stacked) {
            Ok(s) => s,
            Err(e) => {
                self.telemetry
                    .cycle
                    .container_failed(&found.identity.name, &e);
                return Outcome::Skipped;
            }
        };
        if stats.cpu_usage_ns.is_none() && stats.mem_usage.is_none() {
            let gone = self
                .mode
                .primary()
                .is_none_or(|p| !join(p, &found.rel, "").exists());
            if gone {
                *st = ContainerState::default();
                return Outcome::Vanished;
            }
        }
        let about = About::Container(found.identity.clone());
        emit(&stats, st, now, self.mem_total, &about, out);
        if let Some(uid) = &found.identity.pod_uid {
            // kept open like the stats files (on v1 with a caveat, see
            // CgFile::v1_pid_list): a pod without a process is looked at again
            // every few cycles, and an open by path costs several times a
            // pread (the path walk, and std's statx)
            let mut procs = st.files.as_mut().and_then(Files::procs);
            let buf = &mut self.buf;
            let first_pid = || first_pid(procs.as_deref_mut()?, buf);
            self.pods.collect(self.cycle, uid, first_pid, now, out);
        }
        Outcome::Done
    }
}

/// One process of a container, from its `cgroup.procs`.
fn first_pid(procs: &mut CgFile, buf: &mut Vec<u8>) -> Option<u32> {
    let text = procs.read(buf).ok()??;
    text.lines().find_map(|l| l.trim().parse().ok())
}

/// Majors of stacked block devices (`<proc>/devices`); none when unreadable.
fn stacked_majors(proc: &Path) -> StackedMajors {
    std::fs::read_to_string(proc.join("devices"))
        .map(|t| StackedMajors::from_proc_devices(&t))
        .unwrap_or_default()
}

enum Outcome {
    Done,
    Skipped,
    Vanished,
}

/// Where one container's samples go, all about the same subject.
struct SampleOut<'a> {
    about: &'a About,
    out: &'a mut Vec<Sample>,
}

impl SampleOut<'_> {
    fn push(&mut self, name: &'static str, value: f64, unit: &'static str) {
        (self.out).push(Sample::new(name, value, unit, self.about.clone()));
    }
}

/// Turn one container's stats into samples, updating its counters.
fn emit(
    s: &Stats,
    st: &mut ContainerState,
    now: Instant,
    mem_total: Option<u64>,
    about: &About,
    out: &mut Vec<Sample>,
) {
    let mut to = SampleOut { about, out };
    emit_cpu(s, st, now, &mut to);
    emit_memory(s, st, now, mem_total, &mut to);
    let mut push = |name, value, unit| to.push(name, value, unit);
    if let Some(io) = s.io {
        if let Some(r) = st.disk_read.rate(io.read, now) {
            push(names::DISK_READ, r, unit::BYTES_PER_SEC);
        }
        if let Some(w) = st.disk_write.rate(io.write, now) {
            push(names::DISK_WRITE, w, unit::BYTES_PER_SEC);
        }
    }
}

/// Usage, throttling and the limit.
fn emit_cpu(s: &Stats, st: &mut ContainerState, now: Instant, to: &mut SampleOut<'_>) {
    let mut push = |name, value, unit| to.push(name, value, unit);
    if let Some(u) = s.cpu_usage_ns
        && let Some(d) = st.cpu.update(u, now)
    {
        push(
            names::CPU_USAGE,
            d.delta as f64 / d.elapsed.as_nanos() as f64 * 100.0,
            unit::PERCENT,
        );
    }
    if let Some((periods, throttled, t_ns)) = s.throttling {
        let dp = st.periods.update(periods, now);
        let dt = st.throttled.update(throttled, now);
        if let (Some(dp), Some(dt)) = (dp, dt)
            && dp.delta > 0
        {
            push(
                names::CPU_THROTTLE,
                dt.delta as f64 / dp.delta as f64 * 100.0,
                unit::PERCENT,
            );
        }
        if let Some(d) = st.throttled_ns.update(t_ns, now) {
            push(
                names::CPU_THROTTLED_TIME,
                d.per_sec() / 1e6,
                unit::MS_PER_SEC,
            );
        }
    }
    if let Some(c) = s.cpu_limit_cores {
        push(names::CPU_LIMIT, c, unit::CORES);
    }
}

/// Usage, limit (a limit at or above `mem_total` is none), the parts of
/// the usage, OOM kills.
fn emit_memory(
    s: &Stats,
    st: &mut ContainerState,
    now: Instant,
    mem_total: Option<u64>,
    to: &mut SampleOut<'_>,
) {
    let mut push = |name, value, unit| to.push(name, value, unit);
    if let Some(u) = s.mem_usage {
        push(names::MEM_USAGE, u as f64, unit::BYTES);
        let limit = s
            .mem_limit
            .filter(|&l| l > 0 && mem_total.is_none_or(|t| l < t));
        if let Some(l) = limit {
            push(names::MEM_LIMIT, l as f64, unit::BYTES);
            push(
                names::MEM_USAGE_PCT,
                u as f64 / l as f64 * 100.0,
                unit::PERCENT,
            );
        }
        if let Some(i) = s.inactive_file {
            push(
                names::MEM_WORKING_SET,
                u.saturating_sub(i) as f64,
                unit::BYTES,
            );
        }
    }
    for (name, v) in [
        (names::MEM_RSS, s.rss),
        (names::MEM_CACHE, s.cache),
        (names::MEM_SWAP, s.swap),
    ] {
        if let Some(v) = v.filter(|&v| v > 0) {
            push(name, v as f64, unit::BYTES);
        }
    }
    if let Some(k) = s.oom_kills
        && let Some(d) = st.oom.update(k, now)
    {
        push(names::MEM_OOM_KILLS, d.delta as f64, unit::COUNT);
    }
}

impl Collector for CgroupCollector {
    fn name(&self) -> &'static str {
        "cgroup"
    }

    fn collect(&mut self, now: Instant, out: &mut Vec<Sample>) -> Result<(), CollectError> {
        let Some(d) = &mut self.discovery else {
            self.telemetry.cycle.containers.set(0);
            return Ok(());
        };
        self.cycle += 1;
        // once a cycle, not at start only: dm-mod or md may load after the
        // agent (a CSI volume, LVM set up late) and register their majors
        self.stacked = stacked_majors(&self.host.proc);
        d.scan(&mut self.found)?;
        self.states.begin();
        self.pods.begin_cycle();
        let n = self.collect_containers(now, out);
        self.states.sweep();
        self.pods.end_cycle();
        self.telemetry.cycle.containers.set(n as i64);
        Ok(())
    }
}
