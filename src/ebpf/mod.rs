//! eBPF HTTP tracing (`--enable-ebpf`, SPEC §4 "HTTP through eBPF").
//!
//! - `bpf/http.bpf.c`: the kernel side, on syscall tracepoints; it hands
//!   chunks of socket data that start like HTTP to userspace through a ring
//!   buffer (the compiled object `bpf/http.bpf.o` is committed).
//! - [`loader`]: loads and attaches it with aya; a kernel that refuses it
//!   (no BTF, no permission, a verifier error) is reported with the reason
//!   and the agent runs on without it.
//! - [`event`] decodes records, [`http`] parses request and status lines and
//!   normalizes paths, [`track`] pairs requests with responses per
//!   connection, [`owner`] finds the process's container, [`aggregate`]
//!   keeps per-interval numbers per container, direction, method and path.
//! - [`pipeline`] chains those for each record; [`HttpCollector`] drains it all once per cycle into samples.
//! - [`h2`] decodes HTTP/2 (and gRPC) from the kernel's frame walk: one
//!   HPACK decoder per connection and direction, streams paired by id.
//! - [`tls`] finds OpenSSL in processes' maps and keeps the uprobes that
//!   read TLS plaintext on each such file while a process maps it.

pub mod aggregate;
mod btf_extract;
#[cfg(test)]
mod btf_layout;
pub mod event;
pub mod h2;
pub mod http;
pub mod loader;
pub mod owner;
pub mod pipeline;
pub mod tls;
pub mod track;

pub use loader::{Attach, DEFAULT_MAX_SOCK_STATE, EbpfError, HttpCollector, HttpOptions};
