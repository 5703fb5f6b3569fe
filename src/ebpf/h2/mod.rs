//! HTTP/2 and gRPC from the kernel's frame walk (`h2_walk` in
//! `bpf/http.bpf.c`): [`wire`] reads its records' items, [`conn`] decodes a
//! connection's header blocks ([`hpack`]) and pairs its streams.

pub mod conn;
pub mod hpack;
pub mod wire;

pub use conn::{H2Conn, Sink};

/// A buffer's capacity kept between uses, at most (bytes).
const KEEP: usize = 1024;

/// Empties a buffer kept between uses, giving back its memory when a large
/// header block or string grew it: of up to 1,024 connections' buffers,
/// each keeps little while idle.
fn empty(v: &mut Vec<u8>) {
    v.clear();
    if v.capacity() > KEEP {
        *v = Vec::new();
    }
}
