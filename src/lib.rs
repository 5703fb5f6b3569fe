//! cased-agent: a Kubernetes node agent. See README.md for the architecture.

pub mod agent;
pub mod collect;
pub mod config;
pub mod delivery;
pub mod ebpf;
pub mod enrich;
pub mod exposition;
pub mod host;
pub mod k8s;
pub mod logging;
pub mod model;
pub mod otlp;
pub mod rate;
pub mod server;
pub mod sink;
pub mod sketch;
pub mod telemetry;
#[cfg(test)]
mod testutil;
