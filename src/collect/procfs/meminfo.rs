//! `/proc/meminfo`, in bytes.
//!
//! ```text
//! MemTotal:       24684084 kB
//! MemFree:        21604496 kB
//! MemAvailable:   23873456 kB
//! ```
//!
//! Values with a `kB` unit are KiB and are turned into bytes. `MemTotal`,
//! `MemFree`, `Buffers`, `Cached`, `SwapTotal` and `SwapFree` are required (a
//! file without them is truncated or not meminfo: an error). `MemAvailable`
//! exists since Linux 3.14 (and in RHEL 7's 3.10); when it is absent it is
//! `None`, and the collector then emits no `available`, `used` or
//! `used_percent` rather than an estimate dressed up as the kernel's number.

use super::ParseError;

/// The memory figures the node metrics need, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    pub available: Option<u64>,
    pub buffers: u64,
    pub cached: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

pub fn parse(text: &str) -> Result<MemInfo, ParseError> {
    let mut total = None;
    let mut free = None;
    let mut available = None;
    let mut buffers = None;
    let mut cached = None;
    let mut swap_total = None;
    let mut swap_free = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemFree" => &mut free,
            "MemAvailable" => &mut available,
            "Buffers" => &mut buffers,
            "Cached" => &mut cached,
            "SwapTotal" => &mut swap_total,
            "SwapFree" => &mut swap_free,
            _ => continue,
        };
        *slot = Some(value(key, rest)?);
    }
    let need = |v: Option<u64>, key: &str| {
        v.ok_or_else(|| ParseError::new("meminfo", format!("{key} missing")))
    };
    Ok(MemInfo {
        total: need(total, "MemTotal")?,
        free: need(free, "MemFree")?,
        available,
        buffers: need(buffers, "Buffers")?,
        cached: need(cached, "Cached")?,
        swap_total: need(swap_total, "SwapTotal")?,
        swap_free: need(swap_free, "SwapFree")?,
    })
}

/// `   24684084 kB` → bytes.
fn value(key: &str, rest: &str) -> Result<u64, ParseError> {
    let bad = || ParseError::new("meminfo", format!("{key}: bad value {:?}", rest.trim()));
    let mut it = rest.split_ascii_whitespace();
    let n: u64 = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    match it.next() {
        None => Ok(n),
        Some("kB") => n.checked_mul(1024).ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    #[test]
    fn captured_hybrid() {
        let m = parse(&fixture("captured-linux-6.18-hybrid/proc/meminfo")).unwrap();
        assert_eq!(
            m,
            MemInfo {
                total: 24684084 * 1024,
                free: 21604496 * 1024,
                available: Some(23873456 * 1024),
                buffers: 14096 * 1024,
                cached: 2407012 * 1024,
                swap_total: 0,
                swap_free: 0,
            }
        );
    }

    #[test]
    fn coroot_fixture() {
        let m = parse(&fixture("proc/coroot-node-agent/proc/meminfo")).unwrap();
        assert_eq!(m.total, 65871236 * 1024);
        assert_eq!(m.free, 7540732 * 1024);
        assert_eq!(m.available, Some(23826720 * 1024));
        assert_eq!(m.buffers, 54332 * 1024);
        assert_eq!(m.cached, 15878036 * 1024);
    }

    #[test]
    fn old_kernel_without_mem_available() {
        let text = fixture("proc/procfs/fixtures/proc/meminfo");
        assert!(!text.contains("MemAvailable"));
        let m = parse(&text).unwrap();
        assert_eq!(m.available, None);
        assert_eq!(m.total, 15666184 * 1024);
        assert_eq!(m.free, 440324 * 1024);
        assert_eq!(m.buffers, 1020128 * 1024);
        assert_eq!(m.cached, 12007640 * 1024);
    }

    #[test]
    fn truncated_or_malformed() {
        let text = fixture("captured-linux-6.18-hybrid/proc/meminfo");
        // cut in the middle of the MemFree line
        let cut = &text[..text.find("MemFree").unwrap() + 5];
        let e = parse(cut).unwrap_err();
        assert!(e.msg.contains("MemFree"), "{e}");
        assert!(parse("MemTotal: 12x kB\n").is_err());
        assert!(parse("MemTotal: 12 MB\n").is_err());
        assert!(parse("MemTotal: 18446744073709551615 kB\n").is_err());
        assert!(parse("").is_err());
    }
}
