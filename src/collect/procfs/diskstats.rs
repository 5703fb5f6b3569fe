//! `/proc/diskstats`: I/O counters per block device.
//!
//! ```text
//!  254       0 vda 68613 8655 4834074 41473 13810 42250 7249416 31293 0 8964 74027 10848 49 4018928 1222 1215 37
//!  254       1 vda1 ...
//! ```
//!
//! `major minor name` then: reads, reads merged, sectors read, ms reading,
//! writes, writes merged, sectors written, … (later kernels add discard and
//! flush columns). A sector here is always 512 bytes, whatever the device's
//! real sector size.
//!
//! The node total counts **whole physical disks only**, so nothing is counted
//! twice ([`is_whole_disk`]):
//! - partitions are skipped (their I/O is in their disk's line): `sda1`,
//!   `hda1`, `vda1`, `xvda1`, `dasda1` (a `sd`/`hd`/`vd`/`xvd`/`dasd` name
//!   ending in digits),
//!   and `nvme0n1p1`, `mmcblk0p1`, `nbd0p1`, `rbd0p1` (`p<digits>` after a
//!   digit), and eMMC hardware partitions `mmcblk0boot0`, `mmcblk0rpmb`;
//! - per-controller paths of a multipath NVMe namespace (`nvme0c0n1`), whose
//!   I/O is the namespace's (`nvme0n1`);
//! - memory- and file-backed devices: `loop*`, `ram*`, `zram*`;
//! - devices stacked on other disks, whose I/O their disks count again:
//!   `dm-*` (LVM, dm-crypt, multipath), `md*` (software RAID), `drbd*`,
//!   `bcache*`, `zd*` (ZFS volumes);
//! - floppies, `fd*`.
//!
//! This is node_exporter's default exclusion (`^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$`)
//! widened to the stacked devices, which node_exporter counts on top of
//! their disks, and to `p<n>` partitions of every disk kind.

use super::ParseError;

/// Bytes per diskstats sector, always.
pub const SECTOR_BYTES: u64 = 512;

/// One device line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskStat<'a> {
    pub name: &'a str,
    pub reads: u64,
    pub sectors_read: u64,
    pub writes: u64,
    pub sectors_written: u64,
}

/// Call `f` for every device line. A line with fewer than 7 counters, or a
/// counter that is not a number, is an error; blank lines are skipped.
pub fn parse<'a>(text: &'a str, mut f: impl FnMut(&DiskStat<'a>)) -> Result<(), ParseError> {
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(_major), Some(_minor), Some(name)) = (it.next(), it.next(), it.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(ParseError::new("diskstats", format!("short line {line:?}")));
        };
        let mut v = [0u64; 7];
        let mut n = 0;
        for (i, field) in it.take(7).enumerate() {
            v[i] = field.parse().map_err(|_| {
                ParseError::new("diskstats", format!("{name}: bad number {field:?}"))
            })?;
            n = i + 1;
        }
        if n < 7 {
            return Err(ParseError::new(
                "diskstats",
                format!("{name}: {n} counters, need 7"),
            ));
        }
        f(&DiskStat {
            name,
            reads: v[0],
            sectors_read: v[2],
            writes: v[4],
            sectors_written: v[6],
        });
    }
    Ok(())
}

/// Whether `name` is a whole physical disk whose I/O the node total counts
/// (see the module doc for the rule).
pub fn is_whole_disk(name: &str) -> bool {
    const STACKED_OR_VIRTUAL: &[&str] = &[
        "loop", "ram", "zram", "dm-", "md", "drbd", "bcache", "zd", "fd",
    ];
    for p in STACKED_OR_VIRTUAL {
        if let Some(rest) = name.strip_prefix(p)
            && (rest.starts_with(|c: char| c.is_ascii_digit()) || rest.starts_with('_'))
        {
            return false;
        }
    }
    // sda1, hdb2, vda1, xvdf3, dasda1: letters after the prefix, then digits
    for p in ["xvd", "sd", "hd", "vd", "dasd"] {
        if let Some(rest) = name.strip_prefix(p) {
            let letters = rest.trim_start_matches(|c: char| c.is_ascii_lowercase());
            if letters.len() < rest.len()
                && !letters.is_empty()
                && letters.bytes().all(|b| b.is_ascii_digit())
            {
                return false;
            }
        }
    }
    // nvme0n1p1, mmcblk0p1, nbd0p1: `p<digits>` right after a digit
    if let Some((head, num)) = name.rsplit_once('p')
        && !num.is_empty()
        && num.bytes().all(|b| b.is_ascii_digit())
        && head.ends_with(|c: char| c.is_ascii_digit())
    {
        return false;
    }
    // the per-controller paths of a multipath NVMe namespace (nvme0c0n1):
    // their I/O is the namespace's (nvme0n1)
    if let Some(rest) = name.strip_prefix("nvme")
        && let Some((ctrl, ns)) = rest.split_once('c')
        && ctrl.bytes().all(|b| b.is_ascii_digit())
        && ns.split_once('n').is_some_and(|(a, b)| {
            a.bytes().all(|x| x.is_ascii_digit()) && b.bytes().all(|x| x.is_ascii_digit())
        })
    {
        return false;
    }
    // eMMC boot and RPMB areas
    if name.starts_with("mmcblk") && (name.contains("boot") || name.ends_with("rpmb")) {
        return false;
    }
    true
}

/// Bytes read and written, summed over whole disks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskTotals {
    pub read_bytes: u64,
    pub write_bytes: u64,
}

pub fn sum_whole_disks(text: &str) -> Result<DiskTotals, ParseError> {
    let mut t = DiskTotals::default();
    parse(text, |d| {
        if is_whole_disk(d.name) {
            t.read_bytes = t
                .read_bytes
                .wrapping_add(d.sectors_read.wrapping_mul(SECTOR_BYTES));
            t.write_bytes = t
                .write_bytes
                .wrapping_add(d.sectors_written.wrapping_mul(SECTOR_BYTES));
        }
    })?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    fn whole(text: &str) -> Vec<String> {
        let mut v = vec![];
        parse(text, |d| {
            if is_whole_disk(d.name) {
                v.push(d.name.to_string())
            }
        })
        .unwrap();
        v
    }

    #[test]
    fn captured_hybrid() {
        let text = fixture("captured-linux-6.18-hybrid/proc/diskstats");
        let mut vda = None;
        parse(&text, |d| {
            if d.name == "vda" {
                vda = Some(*d);
            }
        })
        .unwrap();
        let vda = vda.unwrap();
        assert_eq!(vda.reads, 68613);
        assert_eq!(vda.sectors_read, 4834074);
        assert_eq!(vda.writes, 13810);
        assert_eq!(vda.sectors_written, 7249416);
        assert_eq!(whole(&text), ["vda"]);
        assert_eq!(
            sum_whole_disks(&text).unwrap(),
            DiskTotals {
                read_bytes: 4834074 * 512,
                write_bytes: 7249416 * 512
            }
        );
    }

    #[test]
    fn coroot_fixture_rule() {
        let text = fixture("proc/coroot-node-agent/diskstats.HEAD");
        assert_eq!(
            whole(&text),
            [
                "nvme0n1", "nvme1n1", "sr0", "sda", "sdb", "vda", "xvda", "rbd0", "rbd1",
                "mmcblk2", "mmcblk1"
            ]
        );
        let t = sum_whole_disks(&text).unwrap();
        let read: u64 = [703503u64, 19996, 0, 0, 0, 30, 0, 8642, 4474, 41091023, 7784]
            .iter()
            .sum();
        let written: u64 = [
            742747626u64,
            540514653,
            0,
            0,
            0,
            70,
            0,
            107408,
            97928,
            129513803,
            0,
        ]
        .iter()
        .sum();
        assert_eq!(t.read_bytes, read * 512);
        assert_eq!(t.write_bytes, written * 512);
    }

    #[test]
    fn procfs_fixture_rule() {
        let text = fixture("proc/procfs/fixtures/proc/diskstats");
        assert_eq!(
            whole(&text),
            ["sda", "mmcblk0", "vda", "sr0", "nvme0n1", "sdb", "sdc"]
        );
        // dm-0 sits on sda4: counting both would double sda's reads
        let t = sum_whole_disks(&text).unwrap();
        let read: u64 = [1003346126u64, 1560, 32670882, 0, 4643973, 9657779, 579164]
            .iter()
            .sum();
        assert_eq!(t.read_bytes, read * 512);
    }

    #[test]
    fn names() {
        for n in [
            "sda", "sdaa", "hda", "vda", "xvdf", "nvme0n1", "nvme10n2", "mmcblk0", "rbd0", "nbd3",
            "sr0", "dasda", "pmem0",
        ] {
            assert!(is_whole_disk(n), "{n}");
        }
        for n in [
            "sda1",
            "sdaa12",
            "hda3",
            "vda1",
            "xvdf3",
            "nvme0n1p1",
            "nvme10n2p15",
            "mmcblk0p1",
            "nbd3p1",
            "dasda1",
            "rbd0p2",
            "mmcblk0boot0",
            "mmcblk0rpmb",
            "loop0",
            "ram15",
            "zram0",
            "dm-0",
            "md0",
            "md127",
            "md_d0",
            "drbd1",
            "bcache0",
            "zd16",
            "fd0",
        ] {
            assert!(!is_whole_disk(n), "{n}");
        }
    }

    #[test]
    fn bad() {
        assert!(parse(" 8 0 sda 1 2 3\n", |_| {}).is_err());
        assert!(parse(" 8 0 sda 1 2 x 4 5 6 7 8 9 10 11\n", |_| {}).is_err());
        assert!(parse(" 8 0\n", |_| {}).is_err());
        assert!(parse("\n\n", |_| {}).is_ok());
    }
}
