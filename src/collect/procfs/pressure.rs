//! `/proc/pressure/{cpu,memory,io}`: pressure stall information (PSI,
//! Linux 4.20+).
//!
//! ```text
//! some avg10=12.31 avg60=8.69 avg300=5.87 total=35341662
//! full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! ```
//!
//! `avg*` are the percent of wall time some (or all) tasks were stalled;
//! `total` is stalled microseconds. The `full` line of `cpu` appeared in
//! 5.13, so `full` is optional; `some` is required.

use super::ParseError;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pressure {
    pub some: PsiLine,
    pub full: Option<PsiLine>,
}

pub fn parse(text: &str) -> Result<Pressure, ParseError> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let Some((kind, rest)) = line.trim().split_once(' ') else {
            continue;
        };
        let slot = match kind {
            "some" => &mut some,
            "full" => &mut full,
            _ => continue,
        };
        *slot = Some(parse_line(kind, rest)?);
    }
    Ok(Pressure {
        some: some.ok_or_else(|| ParseError::new("pressure", "no some line"))?,
        full,
    })
}

fn parse_line(kind: &str, rest: &str) -> Result<PsiLine, ParseError> {
    let (mut a10, mut a60, mut a300, mut total) = (None, None, None, None);
    for kv in rest.split_ascii_whitespace() {
        let bad = || ParseError::new("pressure", format!("{kind}: bad field {kv:?}"));
        let (k, v) = kv.split_once('=').ok_or_else(bad)?;
        let avg = || {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(bad)
        };
        match k {
            "avg10" => a10 = Some(avg()?),
            "avg60" => a60 = Some(avg()?),
            "avg300" => a300 = Some(avg()?),
            "total" => total = Some(v.parse::<u64>().map_err(|_| bad())?),
            _ => {}
        }
    }
    let need = |v: Option<f64>, k: &str| {
        v.ok_or_else(|| ParseError::new("pressure", format!("{kind}: {k} missing")))
    };
    Ok(PsiLine {
        avg10: need(a10, "avg10")?,
        avg60: need(a60, "avg60")?,
        avg300: need(a300, "avg300")?,
        total_us: total
            .ok_or_else(|| ParseError::new("pressure", format!("{kind}: total missing")))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    #[test]
    fn captured_hybrid() {
        let base = "captured-linux-6.18-hybrid/proc/pressure";
        let cpu = parse(&fixture(&format!("{base}/cpu"))).unwrap();
        assert_eq!(
            cpu.some,
            PsiLine {
                avg10: 12.31,
                avg60: 8.69,
                avg300: 5.87,
                total_us: 35341662
            }
        );
        assert_eq!(cpu.full.unwrap().total_us, 0);
        let io = parse(&fixture(&format!("{base}/io"))).unwrap();
        assert_eq!(io.some.avg10, 0.16);
        assert_eq!(io.full.unwrap().avg10, 0.12);
        assert_eq!(io.full.unwrap().total_us, 4250381);
        let mem = parse(&fixture(&format!("{base}/memory"))).unwrap();
        assert_eq!(mem.some.avg10, 0.0);
    }

    #[test]
    fn older_kernel_cpu_without_full() {
        let cpu = parse(&fixture("proc/procfs/fixtures/proc/pressure/cpu")).unwrap();
        assert_eq!(cpu.full, None);
        assert_eq!(cpu.some.avg10, 0.10);
        assert_eq!(cpu.some.avg300, 3.85);
        assert_eq!(cpu.some.total_us, 15);
        let io = parse(&fixture("proc/node_exporter/proc/pressure/io")).unwrap();
        assert_eq!(io.some.avg10, 0.18);
        assert_eq!(io.some.total_us, 159886802);
        assert_eq!(io.full.unwrap().total_us, 159229614);
    }

    #[test]
    fn bad() {
        assert!(parse("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").is_err());
        assert!(parse("some avg10=0.00 avg60=0.00 total=0\n").is_err());
        assert!(parse("some avg10=x avg60=0.00 avg300=0.00 total=0\n").is_err());
        assert!(parse("some avg10 avg60=0.00 avg300=0.00 total=0\n").is_err());
        assert!(parse("").is_err());
    }
}
