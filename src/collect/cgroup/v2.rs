//! Parsers of the cgroup v2 files a container's metrics come from (pure).
//!
//! ```text
//! cpu.stat             usage_usec 3795681254 / ... / nr_periods 809036 / nr_throttled 76 / throttled_usec 363166
//! cpu.max              10000 100000     ("max 100000" = unlimited)
//! memory.current       48648192
//! memory.max           max
//! memory.stat          anon 44892160 / file 1044480 / ... / inactive_file 159744 / ...
//! memory.swap.current  0
//! memory.events        low 0 / high 0 / max 0 / oom 0 / oom_kill 0
//! io.stat              252:0 rbytes=11 wbytes=630538240 rios=22 wios=57111 dbytes=0 dios=0
//! ```

use super::parse::{ParseError, kv_lines, num, required};
pub use super::v1::{IoBytes, StackedMajors};

/// CFS bandwidth counters; absent from `cpu.stat` when the `cpu`
/// controller is not enabled for the cgroup (only `usage_usec` and friends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Throttling {
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_usec: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuStat {
    pub usage_usec: u64,
    pub throttling: Option<Throttling>,
}

pub fn cpu_stat(text: &str) -> Result<CpuStat, ParseError> {
    const F: &str = "cpu.stat";
    let (mut u, mut p, mut t, mut tt) = (None, None, None, None);
    for (k, v) in kv_lines(text) {
        match k {
            "usage_usec" => u = Some(num(F, k, v)?),
            "nr_periods" => p = Some(num(F, k, v)?),
            "nr_throttled" => t = Some(num(F, k, v)?),
            "throttled_usec" => tt = Some(num(F, k, v)?),
            _ => {}
        }
    }
    let throttling = match (p, t, tt) {
        (None, None, None) => None,
        (p, t, tt) => Some(Throttling {
            nr_periods: required(F, "nr_periods", p)?,
            nr_throttled: required(F, "nr_throttled", t)?,
            throttled_usec: required(F, "throttled_usec", tt)?,
        }),
    };
    Ok(CpuStat {
        usage_usec: required(F, "usage_usec", u)?,
        throttling,
    })
}

/// `cpu.max`: `$MAX $PERIOD`, `max` meaning no quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    pub quota_usec: Option<u64>,
    pub period_usec: u64,
}

pub fn cpu_max(text: &str) -> Result<CpuMax, ParseError> {
    const F: &str = "cpu.max";
    let t = text.trim();
    let (q, p) = t
        .split_once(' ')
        .ok_or_else(|| ParseError::new(F, format!("expected two fields: {t:?}")))?;
    let period_usec = num(F, "period", p)?;
    if period_usec == 0 {
        return Err(ParseError::new(F, "period is 0"));
    }
    let quota_usec = if q == "max" {
        None
    } else {
        Some(num(F, "max", q)?)
    };
    Ok(CpuMax {
        quota_usec,
        period_usec,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemStat {
    pub anon: u64,
    pub file: u64,
    pub inactive_file: u64,
}

pub fn memory_stat(text: &str) -> Result<MemStat, ParseError> {
    const F: &str = "memory.stat";
    let (mut a, mut f, mut i) = (None, None, None);
    for (k, v) in kv_lines(text) {
        match k {
            "anon" => a = Some(num(F, k, v)?),
            "file" => f = Some(num(F, k, v)?),
            "inactive_file" => i = Some(num(F, k, v)?),
            _ => {}
        }
    }
    Ok(MemStat {
        anon: required(F, "anon", a)?,
        file: required(F, "file", f)?,
        inactive_file: required(F, "inactive_file", i)?,
    })
}

/// `memory.events`: the `oom_kill` count (`None` on kernels without it).
pub fn oom_kills(text: &str) -> Result<Option<u64>, ParseError> {
    for (k, v) in kv_lines(text) {
        if k == "oom_kill" {
            return num("memory.events", k, v).map(Some);
        }
    }
    Ok(None)
}

/// `io.stat`: `rbytes` and `wbytes` summed over devices.
pub fn io_stat(text: &str) -> Result<IoBytes, ParseError> {
    io_stat_disks(text, &StackedMajors::default())
}

/// [`io_stat`] without the lines of stacked devices.
pub fn io_stat_disks(text: &str, stacked: &StackedMajors) -> Result<IoBytes, ParseError> {
    const F: &str = "io.stat";
    let mut io = IoBytes::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        match fields.next() {
            None => continue, // empty line
            Some(dev) if stacked.skips(dev) => continue,
            Some(_) => {}
        }
        for kv in fields {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(ParseError::new(F, format!("bad field {kv:?}")));
            };
            match k {
                "rbytes" => io.read = io.read.wrapping_add(num(F, k, v)?),
                "wbytes" => io.write = io.write.wrapping_add(num(F, k, v)?),
                _ => {}
            }
        }
    }
    Ok(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat_without_cpu_controller() {
        let s = cpu_stat("usage_usec 10\nuser_usec 6\nsystem_usec 4\n").unwrap();
        assert_eq!(s.usage_usec, 10);
        assert_eq!(s.throttling, None);
        assert!(cpu_stat("usage_usec 10\nnr_periods 3\n").is_err());
        assert!(cpu_stat("user_usec 6\n").is_err());
    }

    #[test]
    fn cpu_max_forms() {
        assert_eq!(
            cpu_max("max 100000\n").unwrap(),
            CpuMax {
                quota_usec: None,
                period_usec: 100000
            }
        );
        assert!(cpu_max("max").is_err());
        assert!(cpu_max("5 0").is_err());
    }

    #[test]
    fn io_stat_bad_field() {
        assert!(io_stat("8:0 rbytes=1 wbytes\n").is_err());
        assert_eq!(io_stat("").unwrap(), IoBytes::default());
    }

    /// io.stat of a 6.1 VM's container after 16 MiB written with O_DIRECT
    /// through dm-linear (253:0) on vda (254:0): the kernel counts it on
    /// both; the disk alone is what was written.
    #[test]
    fn io_stat_skips_stacked_devices() {
        let text = "254:0 rbytes=0 wbytes=16777216 rios=0 wios=16 dbytes=0 dios=0\n253:0 rbytes=0 wbytes=16777216 rios=0 wios=16 dbytes=0 dios=0\n";
        let stacked =
            StackedMajors::from_proc_devices("Block devices:\n253 device-mapper\n254 virtblk\n");
        assert_eq!(io_stat_disks(text, &stacked).unwrap().write, 16 << 20);
        assert_eq!(io_stat(text).unwrap().write, 32 << 20);
    }
}
