//! `/proc/loadavg`: load averages over 1, 5 and 15 minutes.
//!
//! ```text
//! 2.22 1.56 0.74 5/101 21480
//! ```

use super::ParseError;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

pub fn parse(text: &str) -> Result<LoadAvg, ParseError> {
    let mut it = text.split_ascii_whitespace();
    let mut next = |what: &str| -> Result<f64, ParseError> {
        let field = it
            .next()
            .ok_or_else(|| ParseError::new("loadavg", format!("{what} missing")))?;
        field
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| ParseError::new("loadavg", format!("{what}: bad number {field:?}")))
    };
    Ok(LoadAvg {
        one: next("1m")?,
        five: next("5m")?,
        fifteen: next("15m")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    #[test]
    fn fixtures() {
        let l = parse(&fixture("captured-linux-6.18-hybrid/proc/loadavg")).unwrap();
        assert_eq!(
            l,
            LoadAvg {
                one: 2.22,
                five: 1.56,
                fifteen: 0.74
            }
        );
        let l = parse(&fixture("proc/procfs/fixtures/proc/loadavg")).unwrap();
        assert_eq!((l.one, l.five, l.fifteen), (0.02, 0.04, 0.05));
    }

    #[test]
    fn bad() {
        assert!(parse("1.0 2.0\n").is_err());
        assert!(parse("1.0 x 3.0\n").is_err());
        assert!(parse("1.0 NaN 3.0\n").is_err());
        assert!(parse("").is_err());
    }
}
