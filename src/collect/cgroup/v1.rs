//! Parsers of the cgroup v1 files a container's metrics come from (pure).
//!
//! ```text
//! cpuacct.usage                   1806142812              (ns)
//! cpu.stat                        nr_periods 39 / nr_throttled 33 / throttled_time 1076084165 (ns)
//! cpu.cfs_quota_us                50000  (-1 = unlimited)
//! cpu.cfs_period_us               100000
//! memory.usage_in_bytes           528384
//! memory.limit_in_bytes           67108864  (9223372036854771712 = unlimited)
//! memory.stat                     cache 0 / rss 0 / swap 0 / ... / total_inactive_file 0
//! memory.oom_control              oom_kill_disable 0 / under_oom 0 / oom_kill 1
//! blkio.throttle.io_service_bytes 8:0 Read 0 / 8:0 Write 4603904 / ... / Total 3521628895744
//! ```

use super::parse::{ParseError, kv_lines, num, required, single_u64};

/// `cpu.stat` of the v1 `cpu` controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuStat {
    pub nr_periods: u64,
    pub nr_throttled: u64,
    /// Total time throttled, nanoseconds.
    pub throttled_ns: u64,
}

/// `cpuacct.usage`: CPU time used, nanoseconds.
pub fn cpuacct_usage(text: &str) -> Result<u64, ParseError> {
    single_u64("cpuacct.usage", text)
}

pub fn cpu_stat(text: &str) -> Result<CpuStat, ParseError> {
    const F: &str = "cpu.stat";
    let (mut p, mut t, mut tt) = (None, None, None);
    for (k, v) in kv_lines(text) {
        match k {
            "nr_periods" => p = Some(num(F, k, v)?),
            "nr_throttled" => t = Some(num(F, k, v)?),
            "throttled_time" => tt = Some(num(F, k, v)?),
            _ => {}
        }
    }
    Ok(CpuStat {
        nr_periods: required(F, "nr_periods", p)?,
        nr_throttled: required(F, "nr_throttled", t)?,
        throttled_ns: required(F, "throttled_time", tt)?,
    })
}

/// `cpu.cfs_quota_us`: the quota in µs per period, `None` when unlimited
/// (`-1`, or any negative value).
pub fn cfs_quota(text: &str) -> Result<Option<u64>, ParseError> {
    let t = text.trim();
    let v: i64 = t
        .parse()
        .map_err(|_| ParseError::new("cpu.cfs_quota_us", format!("not a number: {t:?}")))?;
    Ok(u64::try_from(v).ok())
}

/// `cpu.cfs_period_us`, µs (never 0: the kernel refuses periods < 1 ms).
pub fn cfs_period(text: &str) -> Result<u64, ParseError> {
    let v = single_u64("cpu.cfs_period_us", text)?;
    if v == 0 {
        return Err(ParseError::new("cpu.cfs_period_us", "period is 0"));
    }
    Ok(v)
}

/// `memory.usage_in_bytes`.
pub fn memory_usage(text: &str) -> Result<u64, ParseError> {
    single_u64("memory.usage_in_bytes", text)
}

/// Any v1 memory limit at or above this is "no limit". The kernel writes
/// `PAGE_COUNTER_MAX * PAGE_SIZE` for unlimited (9223372036854771712 with
/// 4 KiB pages, a little different with 16/64 KiB pages), always ≥ 2^62;
/// no machine has 4 EiB of memory, so nothing real is lost. (The collector
/// additionally treats a limit ≥ the host's MemTotal as unlimited.)
pub const UNLIMITED_AT: u64 = 1 << 62;

/// `memory.limit_in_bytes`: `None` when unlimited (see [`UNLIMITED_AT`]).
pub fn memory_limit(text: &str) -> Result<Option<u64>, ParseError> {
    let v = single_u64("memory.limit_in_bytes", text)?;
    Ok((v < UNLIMITED_AT).then_some(v))
}

/// The parts of v1 `memory.stat` the agent reports. The hierarchical
/// `total_*` values are preferred (a container cgroup may have children);
/// the local values are the fallback when a kernel lacks `total_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemStat {
    pub rss: u64,
    pub cache: u64,
    /// Present only with swap accounting (`swapaccount=1`).
    pub swap: Option<u64>,
    pub inactive_file: u64,
}

pub fn memory_stat(text: &str) -> Result<MemStat, ParseError> {
    const F: &str = "memory.stat";
    // [local, total] for rss, cache, swap, inactive_file
    let mut v = [[None::<u64>; 2]; 4];
    for (k, val) in kv_lines(text) {
        let (key, slot) = match k.strip_prefix("total_") {
            Some(rest) => (rest, 1),
            None => (k, 0),
        };
        let i = match key {
            "rss" => 0,
            "cache" => 1,
            "swap" => 2,
            "inactive_file" => 3,
            _ => continue,
        };
        v[i][slot] = Some(num(F, k, val)?);
    }
    let pick = |i: usize| v[i][1].or(v[i][0]);
    Ok(MemStat {
        rss: required(F, "rss", pick(0))?,
        cache: required(F, "cache", pick(1))?,
        swap: pick(2),
        inactive_file: required(F, "inactive_file", pick(3))?,
    })
}

/// `memory.oom_control`: the `oom_kill` count, `None` on kernels before
/// 4.13 that do not have the line.
pub fn oom_kills(text: &str) -> Result<Option<u64>, ParseError> {
    for (k, v) in kv_lines(text) {
        if k == "oom_kill" {
            return num("memory.oom_control", k, v).map(Some);
        }
    }
    Ok(None)
}

/// Bytes read and written, summed over devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoBytes {
    pub read: u64,
    pub write: u64,
}

/// Block majors of stacking drivers (device-mapper, md): a write through
/// one is counted in the cgroup's blkio and io.stat on the stacked device
/// and again on every disk beneath it (seen on 6.1, v1 and v2), so their
/// lines are left out of a container's disk bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackedMajors(Vec<u32>);

impl StackedMajors {
    /// From `/proc/devices`: the `Block devices:` lines named
    /// `device-mapper`, `md` or `mdp`.
    pub fn from_proc_devices(text: &str) -> Self {
        let block = text.split_once("Block devices:").map_or("", |(_, b)| b);
        StackedMajors(
            block
                .lines()
                .filter_map(|l| l.trim().split_once(' '))
                .filter(|(_, name)| matches!(name.trim(), "device-mapper" | "md" | "mdp"))
                .filter_map(|(major, _)| major.parse().ok())
                .collect(),
        )
    }

    /// Whether a `MAJOR:MINOR` device is a stacked one.
    pub fn skips(&self, dev: &str) -> bool {
        let major = dev.split(':').next().and_then(|m| m.parse::<u32>().ok());
        major.is_some_and(|m| self.0.contains(&m))
    }
}

/// `blkio.throttle.io_service_bytes` (or `blkio.io_service_bytes`): `Read`
/// and `Write` summed over every device; `Sync`/`Async`/`Discard`/`Total`
/// lines and the final `Total N` are skipped.
pub fn io_service_bytes(text: &str) -> Result<IoBytes, ParseError> {
    io_service_bytes_disks(text, &StackedMajors::default())
}

/// [`io_service_bytes`] without the lines of stacked devices.
pub fn io_service_bytes_disks(text: &str, stacked: &StackedMajors) -> Result<IoBytes, ParseError> {
    const F: &str = "blkio.throttle.io_service_bytes";
    let mut io = IoBytes::default();
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(dev), Some(op), Some(v)) = (it.next(), it.next(), it.next()) else {
            continue; // "Total N" or an empty line
        };
        if stacked.skips(dev) {
            continue;
        }
        match op {
            "Read" => io.read = io.read.wrapping_add(num(F, op, v)?),
            "Write" => io.write = io.write.wrapping_add(num(F, op, v)?),
            _ => {}
        }
    }
    Ok(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_unlimited_and_bad() {
        assert_eq!(cfs_quota("-1\n"), Ok(None));
        assert_eq!(cfs_quota("20000\n"), Ok(Some(20000)));
        assert!(cfs_quota("abc").is_err());
        assert!(cfs_period("0").is_err());
    }

    #[test]
    fn limit_unlimited_threshold() {
        assert_eq!(memory_limit("9223372036854771712\n"), Ok(None));
        assert_eq!(memory_limit("9223372036854710272\n"), Ok(None)); // 64 KiB pages
        assert_eq!(memory_limit("67108864\n"), Ok(Some(67108864)));
    }

    #[test]
    fn missing_key_is_error() {
        assert!(cpu_stat("nr_periods 1\nnr_throttled 0\n").is_err());
        assert!(memory_stat("cache 1\nrss 2\n").is_err());
        assert!(cpu_stat("nr_periods 1\nnr_throttled x\nthrottled_time 0").is_err());
    }

    #[test]
    fn local_values_when_no_totals() {
        let m = memory_stat("cache 5\nrss 7\ninactive_file 3\n").unwrap();
        assert_eq!((m.rss, m.cache, m.swap, m.inactive_file), (7, 5, None, 3));
    }

    #[test]
    fn truncated_blkio_is_error() {
        assert!(io_service_bytes("8:0 Read 12\n8:0 Write 1x").is_err());
    }

    /// `/proc/devices` and blkio of a 6.1 VM after 16 MiB written through a
    /// dm-linear device on vda (tests/it/vm.rs): counted on both.
    #[test]
    fn io_service_bytes_skips_stacked_devices() {
        let devices = "Character devices:\n  1 mem\n 10 misc\n\nBlock devices:\n  9 md\n253 device-mapper\n254 virtblk\n259 blkext\n";
        let stacked = StackedMajors::from_proc_devices(devices);
        assert_eq!(stacked, StackedMajors(vec![9, 253]));
        let blkio = "253:0 Read 0\n253:0 Write 16777216\n253:0 Sync 16777216\n253:0 Async 0\n253:0 Discard 0\n253:0 Total 16777216\n254:0 Read 4096\n254:0 Write 16777216\n254:0 Sync 16777216\n254:0 Async 0\n254:0 Discard 0\n254:0 Total 16781312\nTotal 33558528\n";
        let io = io_service_bytes_disks(blkio, &stacked).unwrap();
        assert_eq!((io.read, io.write), (4096, 16 << 20));
        assert_eq!(io_service_bytes(blkio).unwrap().write, 32 << 20);
        assert!(!StackedMajors::from_proc_devices("Block devices:\n254 virtblk\n").skips("254:0"));
    }
}
