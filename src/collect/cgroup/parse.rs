//! Shared pieces of the cgroup file parsers: single-number files, `key value`
//! lines, and the typed error. Pure: text in, numbers out, nothing allocated
//! unless something is wrong.

pub use crate::collect::procfs::ParseError;

/// A file holding one unsigned number (`cpuacct.usage`, `memory.current`).
pub fn single_u64(file: &'static str, text: &str) -> Result<u64, ParseError> {
    let t = text.trim();
    t.parse()
        .map_err(|_| ParseError::new(file, format!("not a number: {t:?}")))
}

/// A file holding a number or `max` (`memory.max`): `None` for `max`.
pub fn max_or_u64(file: &'static str, text: &str) -> Result<Option<u64>, ParseError> {
    let t = text.trim();
    if t == "max" {
        return Ok(None);
    }
    single_u64(file, t).map(Some)
}

/// Number in a `key value` line.
pub fn num(file: &'static str, key: &str, value: &str) -> Result<u64, ParseError> {
    value
        .trim()
        .parse()
        .map_err(|_| ParseError::new(file, format!("{key}: not a number: {value:?}")))
}

/// `key value` lines (flat-keyed files: `cpu.stat`, `memory.stat`,
/// `memory.events`, `memory.oom_control`). Lines without a space are skipped.
pub fn kv_lines(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|l| l.split_once(' '))
}

/// A key a file must have.
pub fn required(file: &'static str, key: &str, v: Option<u64>) -> Result<u64, ParseError> {
    v.ok_or_else(|| ParseError::new(file, format!("missing key {key}")))
}
