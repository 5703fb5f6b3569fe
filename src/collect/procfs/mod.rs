//! Pure parsers of `/proc` files: text in, typed values out, no I/O.

pub mod diskstats;
pub mod loadavg;
pub mod meminfo;
pub mod net_dev;
pub mod pressure;
pub mod stat;

/// A parse failure: which file format, and what was wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}: {msg}")]
pub struct ParseError {
    pub file: &'static str,
    pub msg: String,
}

impl ParseError {
    pub fn new(file: &'static str, msg: impl Into<String>) -> Self {
        ParseError {
            file,
            msg: msg.into(),
        }
    }
}
