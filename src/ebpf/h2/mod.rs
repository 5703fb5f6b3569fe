//! HTTP/2 and gRPC from the kernel's frame walk (`h2_walk` in
//! `bpf/http.bpf.c`): [`wire`] reads its records' items, [`conn`] decodes a
//! connection's header blocks and pairs its streams.

pub mod conn;
pub mod wire;

pub use conn::{H2Conn, Sink};
