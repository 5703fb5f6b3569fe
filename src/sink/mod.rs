//! Where batches go: the Cased API or stdout. Wire structs live here only.

pub mod wire;
