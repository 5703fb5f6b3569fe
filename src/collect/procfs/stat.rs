//! `/proc/stat`: the aggregate `cpu` line (time spent in each state since
//! boot, in clock ticks, summed over all CPUs).
//!
//! ```text
//! cpu  58127 0 9507 68606 534 0 73 22 0 0
//! cpu0 28532 0 4264 35584 58 0 17 10 0 0
//! ```
//!
//! Columns: user nice system idle iowait irq softirq steal guest guest_nice.
//! `guest` and `guest_nice` are already counted in `user` and `nice`, so a
//! total must not add them again ([`CpuTimes::total`]). Kernels before
//! 2.6.33 have fewer columns: user..idle are required, a later column that
//! is absent is 0 (that kernel did not account it).

use super::ParseError;

/// Ticks per CPU state, summed over all CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
    pub guest: u64,
    pub guest_nice: u64,
}

impl CpuTimes {
    /// All the time there was: every state but the guest ones (which are
    /// inside user and nice).
    pub fn total(&self) -> u64 {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
        ]
        .iter()
        .fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// The aggregate `cpu` line of `/proc/stat`.
pub fn parse_cpu(text: &str) -> Result<CpuTimes, ParseError> {
    let line = text
        .lines()
        .find(|l| l.split_ascii_whitespace().next() == Some("cpu"))
        .ok_or_else(|| ParseError::new("stat", "no aggregate cpu line"))?;
    let mut v = [0u64; 10];
    let mut n = 0;
    for (i, field) in line.split_ascii_whitespace().skip(1).take(10).enumerate() {
        v[i] = field
            .parse()
            .map_err(|_| ParseError::new("stat", format!("cpu line: bad number {field:?}")))?;
        n = i + 1;
    }
    if n < 4 {
        return Err(ParseError::new(
            "stat",
            format!("cpu line: {n} columns, need at least user nice system idle"),
        ));
    }
    let [
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
        guest,
        guest_nice,
    ] = v;
    Ok(CpuTimes {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
        guest,
        guest_nice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    #[test]
    fn captured_hybrid() {
        let c = parse_cpu(&fixture("captured-linux-6.18-hybrid/proc/stat")).unwrap();
        assert_eq!(
            c,
            CpuTimes {
                user: 58127,
                nice: 0,
                system: 9507,
                idle: 68606,
                iowait: 534,
                irq: 0,
                softirq: 73,
                steal: 22,
                guest: 0,
                guest_nice: 0,
            }
        );
        assert_eq!(c.total(), 58127 + 9507 + 68606 + 534 + 73 + 22);
    }

    #[test]
    fn node_exporter_guest_not_in_total() {
        let c = parse_cpu(&fixture("proc/node_exporter/proc/stat")).unwrap();
        assert_eq!(c.user, 301854);
        assert_eq!(c.nice, 612);
        assert_eq!(c.system, 111922);
        assert_eq!(c.idle, 8979004);
        assert_eq!(c.iowait, 3552);
        assert_eq!(c.irq, 2);
        assert_eq!(c.softirq, 3944);
        assert_eq!(c.steal, 0);
        assert_eq!(c.guest, 44);
        assert_eq!(c.guest_nice, 36);
        assert_eq!(c.total(), 301854 + 612 + 111922 + 8979004 + 3552 + 2 + 3944);
    }

    #[test]
    fn procfs_fixture() {
        let c = parse_cpu(&fixture("proc/procfs/fixtures/proc/stat")).unwrap();
        assert_eq!((c.user, c.idle, c.guest), (301854, 8979004, 0));
    }

    #[test]
    fn old_kernels_and_bad_input() {
        // 2.4-style: four columns only
        let c = parse_cpu("cpu  10 20 30 40\ncpu0 10 20 30 40\n").unwrap();
        assert_eq!(
            (c.user, c.nice, c.system, c.idle, c.iowait),
            (10, 20, 30, 40, 0)
        );
        assert!(parse_cpu("cpu  10 20 30\n").is_err());
        assert!(parse_cpu("cpu  10 x 30 40\n").is_err());
        // per-CPU lines alone are not the aggregate
        assert!(parse_cpu("cpu0 1 2 3 4\n").is_err());
        assert!(parse_cpu("").is_err());
    }
}
