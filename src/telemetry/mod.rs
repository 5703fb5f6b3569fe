//! The agent's own counters and gauges, served on `/metrics` (SPEC §6).
//!
//! One [`Telemetry`] is built at start and shared (`Arc`) with every part
//! that counts something. Each subsystem's families live in its own file
//! here and register into a sub-registry of the shared one, in the order
//! they are exposed; names are prefixed `cased_agent_`. A subsystem
//! records what happened through typed events (`telemetry.otlp.request(…)`,
//! `telemetry.buffer.sync_failed(…)`) that count and, where something went
//! wrong, warn rate-limited in the same call.
//!
//! This module depends on no other part of the agent: subsystems convert
//! their own types into the label enums defined here.

mod label;

pub mod buffer;
pub mod cycle;
pub mod delivery;
pub mod ebpf;
pub mod k8s;
pub mod otlp;

use prometheus_client::registry::Registry;

pub use self::buffer::BufferTelemetry;
pub use self::cycle::CycleTelemetry;
pub use self::delivery::{DeliveryTelemetry, DropLabel, DropReason, Kind, KindLabel, Undelivered};
pub use self::ebpf::EbpfTelemetry;
pub use self::k8s::{K8sTelemetry, Watch};
pub use self::otlp::{Enrichment, OtlpTelemetry, Outcome, Transport};

pub struct Telemetry {
    registry: Registry,
    /// Collection cycles and what the collectors lost.
    pub cycle: CycleTelemetry,
    /// Batches sent, retried and dropped; the queue's gauges.
    pub delivery: DeliveryTelemetry,
    /// The OTLP receiver: span and metric requests, points, series.
    pub otlp: OtlpTelemetry,
    /// The disk buffer.
    pub buffer: BufferTelemetry,
    /// API server watches, owner lookups, the events Lease.
    pub k8s: K8sTelemetry,
    /// The eBPF HTTP tracer.
    pub ebpf: EbpfTelemetry,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// A sub-registry that adds neither prefix nor labels: the subsystem's
/// families keep the names they always had.
fn unprefixed(registry: &mut Registry) -> &mut Registry {
    registry.sub_registry_with_labels(std::iter::empty())
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cased_agent");
        // sub-registries are encoded in the order they are made
        let cycle = CycleTelemetry::register(unprefixed(&mut registry));
        let delivery = DeliveryTelemetry::register(unprefixed(&mut registry));
        let otlp = OtlpTelemetry::register(unprefixed(&mut registry));
        let buffer = BufferTelemetry::register(registry.sub_registry_with_prefix("buffer"));
        let k8s = K8sTelemetry::register(registry.sub_registry_with_prefix("k8s"));
        let ebpf = EbpfTelemetry::register(unprefixed(&mut registry));
        Telemetry {
            registry,
            cycle,
            delivery,
            otlp,
            buffer,
            k8s,
            ebpf,
        }
    }

    /// Prometheus text exposition of everything registered.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod golden;
