//! Where batches go: the Cased API or stdout. Wire structs live here only.
//! TEMPORARY STUB until the delivery branch lands.

pub mod wire;

pub enum AnySink {
    Stdout,
}

#[derive(Debug, thiserror::Error)]
#[error("sink: {0}")]
pub struct SinkError(String);

pub fn build(_cfg: &crate::config::Config) -> Result<AnySink, SinkError> {
    Ok(AnySink::Stdout)
}
