//! Node metrics from `/proc` (SPEC §4, node table).
//!
//! Each file is read and parsed on its own: one that is missing or malformed
//! costs only its own metrics for that cycle (logged at a limited rate), and
//! [`Collector::collect`] fails only when no file at all could be read.
//! PSI files (`/proc/pressure/*`) are optional: a kernel without PSI (or
//! booted with `psi=0`, where reading them fails with `EOPNOTSUPP`) simply
//! has no `node.pressure.*` metrics.
//!
//! Rates and percents come from deltas between two cycles (the rate module's
//! [`Counter`]), so the first cycle has no CPU percents and no `*_per_sec`.
//!
//! CPU percents are shares of all CPU time in the interval, where all time is
//! user + nice + system + idle + iowait + irq + softirq + steal (guest time is
//! already inside user and nice). `user_percent` is the `user` column only:
//! it **excludes nice** (as the original agent did) and includes guest time.
//! nice, irq and softirq have no metric of their own but count in the total
//! and so in `usage_percent` = 100 − idle − iowait. A column that went down
//! (iowait may, per proc(5)) counts as 0 for that interval.
//!
//! Network counters are the node's network namespace, read through pid 1
//! (`<proc>/1/net/dev`): `<proc>/net` is `self/net`, the namespace of the
//! reader, which for a deployed agent is its own pod's. When pid 1 cannot be
//! read (a non-dumpable init under a sandbox) pid 2 (`kthreadd`, always in
//! the initial namespace) stands in; a proc tree with neither (a fixture
//! copy) is read at `net/dev`. They sum the physical interfaces
//! ([`net_dev::is_virtual`] decides); disk rates sum whole disks
//! ([`diskstats::is_whole_disk`]). Both rates are computed per interface or
//! disk and then summed, so a device that appears (or resets) does not turn
//! its whole history into one cycle's rate.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use super::procfs::{ParseError, diskstats, loadavg, meminfo, net_dev, pressure, stat};
use super::{CollectError, Collector};
use crate::host::HostPaths;
use crate::model::{Sample, unit};
use crate::rate::{Counter, StateMap};
use crate::warn_limited;

/// The metric names of SPEC §4's node table.
pub mod names {
    pub const CPU_USER: &str = "node.cpu.user_percent";
    pub const CPU_SYSTEM: &str = "node.cpu.system_percent";
    pub const CPU_IDLE: &str = "node.cpu.idle_percent";
    pub const CPU_IOWAIT: &str = "node.cpu.iowait_percent";
    pub const CPU_STEAL: &str = "node.cpu.steal_percent";
    pub const CPU_USAGE: &str = "node.cpu.usage_percent";

    pub const MEM_TOTAL: &str = "node.memory.total";
    pub const MEM_FREE: &str = "node.memory.free";
    pub const MEM_AVAILABLE: &str = "node.memory.available";
    pub const MEM_BUFFERS: &str = "node.memory.buffers";
    pub const MEM_CACHED: &str = "node.memory.cached";
    pub const MEM_SWAP_TOTAL: &str = "node.memory.swap_total";
    pub const MEM_SWAP_FREE: &str = "node.memory.swap_free";
    pub const MEM_USED: &str = "node.memory.used";
    pub const MEM_USED_PERCENT: &str = "node.memory.used_percent";

    pub const NET_RX_BYTES: &str = "node.network.rx_bytes";
    pub const NET_TX_BYTES: &str = "node.network.tx_bytes";
    pub const NET_RX_PACKETS: &str = "node.network.rx_packets";
    pub const NET_TX_PACKETS: &str = "node.network.tx_packets";
    pub const NET_RX_ERRORS: &str = "node.network.rx_errors";
    pub const NET_TX_ERRORS: &str = "node.network.tx_errors";
    pub const NET_RX_BYTES_PER_SEC: &str = "node.network.rx_bytes_per_sec";
    pub const NET_TX_BYTES_PER_SEC: &str = "node.network.tx_bytes_per_sec";

    pub const DISK_READ_BYTES_PER_SEC: &str = "node.disk.read_bytes_per_sec";
    pub const DISK_WRITE_BYTES_PER_SEC: &str = "node.disk.write_bytes_per_sec";

    pub const LOAD_1: &str = "node.load.1";
    pub const LOAD_5: &str = "node.load.5";
    pub const LOAD_15: &str = "node.load.15";

    pub const PRESSURE_CPU: &str = "node.pressure.cpu";
    pub const PRESSURE_MEMORY: &str = "node.pressure.memory";
    pub const PRESSURE_IO: &str = "node.pressure.io";
}

/// Why one node file gave no metrics this cycle.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{path}: file missing")]
    Missing { path: PathBuf },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
}

/// Whether an optional file was there (its text is then in the buffer).
enum FileRead {
    Present,
    Absent,
}

/// Index of the `/proc/stat` columns with a metric of their own in the CPU
/// counters (user nice system idle iowait irq softirq steal).
const USER: usize = 0;
const SYSTEM: usize = 2;
const IDLE: usize = 3;
const IOWAIT: usize = 4;
const STEAL: usize = 7;

pub struct NodeCollector {
    host: HostPaths,
    /// Reused for every file read.
    buf: String,
    cpu: [Counter; 8],
    /// Per physical interface: rx bytes, tx bytes.
    net: StateMap<String, [Counter; 2]>,
    /// Per whole disk: sectors read, sectors written.
    disk: StateMap<String, [Counter; 2]>,
}

impl NodeCollector {
    pub fn new(host: HostPaths) -> Self {
        NodeCollector {
            host,
            buf: String::with_capacity(8192),
            cpu: Default::default(),
            net: StateMap::default(),
            disk: StateMap::default(),
        }
    }

    /// Read `<proc>/<rel>` into the buffer. A missing file is `Absent`.
    fn read(&mut self, rel: &str) -> Result<FileRead, NodeError> {
        let path = self.host.proc_file(rel);
        self.buf.clear();
        let res = std::fs::File::open(&path).and_then(|mut f| f.read_to_string(&mut self.buf));
        match res {
            Ok(_) => Ok(FileRead::Present),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileRead::Absent),
            Err(source) => Err(NodeError::Read { path, source }),
        }
    }

    /// Read a file every Linux has: missing is an error.
    fn read_required(&mut self, rel: &str) -> Result<(), NodeError> {
        match self.read(rel)? {
            FileRead::Present => Ok(()),
            FileRead::Absent => Err(NodeError::Missing {
                path: self.host.proc_file(rel),
            }),
        }
    }

    fn parse_err(&self, rel: &str, source: ParseError) -> NodeError {
        NodeError::Parse {
            path: self.host.proc_file(rel),
            source,
        }
    }

    fn cpu(&mut self, now: Instant, out: &mut Vec<Sample>) -> Result<(), NodeError> {
        self.read_required("stat")?;
        let t = stat::parse_cpu(&self.buf).map_err(|e| self.parse_err("stat", e))?;
        let cols = [
            t.user, t.nice, t.system, t.idle, t.iowait, t.irq, t.softirq, t.steal,
        ];
        let mut d = [0u64; 8];
        let mut idle_moved = false;
        for (i, (c, v)) in self.cpu.iter_mut().zip(cols).enumerate() {
            if let Some(delta) = c.update(v, now) {
                d[i] = delta.delta;
                idle_moved |= i == IDLE;
            }
        }
        let total: u64 = d.iter().fold(0u64, |a, b| a.saturating_add(*b));
        // no previous read (first cycle), no time passed, or idle went down
        if !idle_moved || total == 0 {
            return Ok(());
        }
        let pct = |i: usize| d[i] as f64 * 100.0 / total as f64;
        let (idle, iowait) = (pct(IDLE), pct(IOWAIT));
        out.push(Sample::node(names::CPU_USER, pct(USER), unit::PERCENT));
        out.push(Sample::node(names::CPU_SYSTEM, pct(SYSTEM), unit::PERCENT));
        out.push(Sample::node(names::CPU_IDLE, idle, unit::PERCENT));
        out.push(Sample::node(names::CPU_IOWAIT, iowait, unit::PERCENT));
        out.push(Sample::node(names::CPU_STEAL, pct(STEAL), unit::PERCENT));
        out.push(Sample::node(
            names::CPU_USAGE,
            (100.0 - idle - iowait).clamp(0.0, 100.0),
            unit::PERCENT,
        ));
        Ok(())
    }

    fn memory(&mut self, out: &mut Vec<Sample>) -> Result<(), NodeError> {
        self.read_required("meminfo")?;
        let m = meminfo::parse(&self.buf).map_err(|e| self.parse_err("meminfo", e))?;
        let b = |name, v: u64| Sample::node(name, v as f64, unit::BYTES);
        out.push(b(names::MEM_TOTAL, m.total));
        out.push(b(names::MEM_FREE, m.free));
        out.push(b(names::MEM_BUFFERS, m.buffers));
        out.push(b(names::MEM_CACHED, m.cached));
        out.push(b(names::MEM_SWAP_TOTAL, m.swap_total));
        out.push(b(names::MEM_SWAP_FREE, m.swap_free));
        match m.available {
            Some(avail) => {
                let used = m.total.saturating_sub(avail);
                out.push(b(names::MEM_AVAILABLE, avail));
                out.push(b(names::MEM_USED, used));
                if m.total > 0 {
                    out.push(Sample::node(
                        names::MEM_USED_PERCENT,
                        used as f64 * 100.0 / m.total as f64,
                        unit::PERCENT,
                    ));
                }
            }
            None => {
                warn_limited!(
                    "node:meminfo:available",
                    path = %self.host.proc_file("meminfo").display(),
                    "no MemAvailable (kernel before 3.14): node.memory.available, .used and .used_percent are not sent"
                );
            }
        }
        Ok(())
    }

    /// Read the node's `net/dev` (see the module comment): pid 1's, else
    /// pid 2's, else the tree's own when it has no pid directories.
    fn read_node_net_dev(&mut self) -> Result<&'static str, NodeError> {
        let mut first_err = None;
        for rel in ["1/net/dev", "2/net/dev"] {
            match self.read(rel) {
                Ok(FileRead::Present) => return Ok(rel),
                Ok(FileRead::Absent) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => self.read_required("net/dev").map(|()| "net/dev"),
        }
    }

    fn network(&mut self, now: Instant, out: &mut Vec<Sample>) -> Result<(), NodeError> {
        let rel = self.read_node_net_dev()?;
        // validates the whole file before any rate state is touched
        let sum = net_dev::sum_physical(&self.buf).map_err(|e| self.parse_err(rel, e))?;
        let bytes = |name, v: u64| Sample::node(name, v as f64, unit::BYTES);
        let count = |name, v: u64| Sample::node(name, v as f64, unit::COUNT);
        out.push(bytes(names::NET_RX_BYTES, sum.rx_bytes));
        out.push(bytes(names::NET_TX_BYTES, sum.tx_bytes));
        out.push(count(names::NET_RX_PACKETS, sum.rx_packets));
        out.push(count(names::NET_TX_PACKETS, sum.tx_packets));
        out.push(count(names::NET_RX_ERRORS, sum.rx_errors));
        out.push(count(names::NET_TX_ERRORS, sum.tx_errors));

        // a direction is sent when at least one interface has a rate for it
        let (mut rx, mut tx) = (None::<f64>, None::<f64>);
        let state = &mut self.net;
        state.begin();
        let parsed = net_dev::parse(&self.buf, |name, c| {
            if net_dev::is_virtual(name) {
                return;
            }
            let [crx, ctx] = state.touch_with(name);
            if let Some(r) = crx.rate(c.rx_bytes, now) {
                *rx.get_or_insert(0.0) += r;
            }
            if let Some(r) = ctx.rate(c.tx_bytes, now) {
                *tx.get_or_insert(0.0) += r;
            }
        });
        debug_assert!(parsed.is_ok(), "validated above");
        state.sweep();
        let bps = unit::BYTES_PER_SEC;
        if let Some(rx) = rx {
            out.push(Sample::node(names::NET_RX_BYTES_PER_SEC, rx, bps));
        }
        if let Some(tx) = tx {
            out.push(Sample::node(names::NET_TX_BYTES_PER_SEC, tx, bps));
        }
        Ok(())
    }

    fn disk(&mut self, now: Instant, out: &mut Vec<Sample>) -> Result<(), NodeError> {
        self.read_required("diskstats")?;
        // validates the whole file before any rate state is touched
        diskstats::sum_whole_disks(&self.buf).map_err(|e| self.parse_err("diskstats", e))?;
        let (mut read, mut write) = (None::<f64>, None::<f64>);
        let state = &mut self.disk;
        state.begin();
        let parsed = diskstats::parse(&self.buf, |d| {
            if !diskstats::is_whole_disk(d.name) {
                return;
            }
            let [cr, cw] = state.touch_with(d.name);
            let sector = diskstats::SECTOR_BYTES as f64;
            if let Some(r) = cr.rate(d.sectors_read, now) {
                *read.get_or_insert(0.0) += r * sector;
            }
            if let Some(r) = cw.rate(d.sectors_written, now) {
                *write.get_or_insert(0.0) += r * sector;
            }
        });
        debug_assert!(parsed.is_ok(), "validated above");
        state.sweep();
        let bps = unit::BYTES_PER_SEC;
        if let Some(read) = read {
            out.push(Sample::node(names::DISK_READ_BYTES_PER_SEC, read, bps));
        }
        if let Some(write) = write {
            out.push(Sample::node(names::DISK_WRITE_BYTES_PER_SEC, write, bps));
        }
        Ok(())
    }

    fn load(&mut self, out: &mut Vec<Sample>) -> Result<(), NodeError> {
        self.read_required("loadavg")?;
        let l = loadavg::parse(&self.buf).map_err(|e| self.parse_err("loadavg", e))?;
        out.push(Sample::node(names::LOAD_1, l.one, unit::COUNT));
        out.push(Sample::node(names::LOAD_5, l.five, unit::COUNT));
        out.push(Sample::node(names::LOAD_15, l.fifteen, unit::COUNT));
        Ok(())
    }

    /// One PSI file; `Absent` when the kernel has no PSI.
    fn pressure(
        &mut self,
        rel: &str,
        name: &'static str,
        out: &mut Vec<Sample>,
    ) -> Result<FileRead, NodeError> {
        match self.read(rel) {
            Ok(FileRead::Present) => {}
            Ok(FileRead::Absent) => return Ok(FileRead::Absent),
            // psi=0: the files exist but cannot be read
            Err(NodeError::Read { source, .. })
                if source.raw_os_error() == Some(95 /* EOPNOTSUPP */) =>
            {
                return Ok(FileRead::Absent);
            }
            Err(e) => return Err(e),
        }
        let p = pressure::parse(&self.buf).map_err(|e| self.parse_err(rel, e))?;
        out.push(Sample::node(name, p.some.avg10, unit::PERCENT));
        Ok(FileRead::Present)
    }
}

impl Collector for NodeCollector {
    fn name(&self) -> &'static str {
        "node"
    }

    fn collect(&mut self, now: Instant, out: &mut Vec<Sample>) -> Result<(), CollectError> {
        let mut read = 0usize;
        let mut first_err: Option<NodeError> = None;
        let mut note = |what: &str, r: Result<FileRead, NodeError>| match r {
            Ok(FileRead::Present) => read += 1,
            Ok(FileRead::Absent) => {}
            Err(e) => {
                warn_limited!(format!("node:{what}"), error = %e, "node metrics lost for this cycle");
                first_err.get_or_insert(e);
            }
        };
        let got = |r: Result<(), NodeError>| r.map(|()| FileRead::Present);
        note("stat", got(self.cpu(now, out)));
        note("meminfo", got(self.memory(out)));
        note("net/dev", got(self.network(now, out)));
        note("diskstats", got(self.disk(now, out)));
        note("loadavg", got(self.load(out)));
        note(
            "pressure/cpu",
            self.pressure("pressure/cpu", names::PRESSURE_CPU, out),
        );
        note(
            "pressure/memory",
            self.pressure("pressure/memory", names::PRESSURE_MEMORY, out),
        );
        note(
            "pressure/io",
            self.pressure("pressure/io", names::PRESSURE_IO, out),
        );
        match first_err {
            Some(e) if read == 0 => Err(format!("no node file could be read: {e}").into()),
            _ => Ok(()),
        }
    }
}
