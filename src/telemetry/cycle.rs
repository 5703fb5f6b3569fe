//! Collection cycles and the collectors' losses.

use std::fmt::Display;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollectorLabel {
    /// The collector's `name()`.
    pub collector: &'static str,
}

pub struct CycleTelemetry {
    pub cycles: Counter,
    pub duration_seconds: Gauge<f64, AtomicU64>,
    pub last_timestamp_seconds: Gauge<f64, AtomicU64>,
    pub metrics_produced: Counter,
    pub collector_errors: Family<CollectorLabel, Counter>,
    pub container_errors: Counter,
    pub containers: Gauge,
}

impl CycleTelemetry {
    pub(super) fn register(r: &mut Registry) -> Self {
        let t = CycleTelemetry {
            cycles: Counter::default(),
            duration_seconds: Gauge::default(),
            last_timestamp_seconds: Gauge::default(),
            metrics_produced: Counter::default(),
            collector_errors: Family::default(),
            container_errors: Counter::default(),
            containers: Gauge::default(),
        };
        r.register("cycles", "Collection cycles completed", t.cycles.clone());
        r.register(
            "cycle_duration_seconds",
            "Wall time of the last collection cycle",
            t.duration_seconds.clone(),
        );
        r.register(
            "last_cycle_timestamp_seconds",
            "Unix time the last collection cycle completed",
            t.last_timestamp_seconds.clone(),
        );
        r.register(
            "metrics_produced",
            "Metrics produced by collection cycles",
            t.metrics_produced.clone(),
        );
        r.register(
            "collector_errors",
            "Collector failures (that collector's part of a cycle was lost)",
            t.collector_errors.clone(),
        );
        r.register(
            "container_errors",
            "Containers whose metrics were lost for a cycle (file vanished, malformed)",
            t.container_errors.clone(),
        );
        r.register(
            "containers",
            "Containers (and services) seen in the last cycle",
            t.containers.clone(),
        );
        t
    }

    /// A cycle ended after `seconds`, at `unix_seconds`, having produced
    /// `metrics`.
    pub fn completed(&self, metrics: u64, seconds: f64, unix_seconds: f64) {
        self.cycles.inc();
        self.metrics_produced.inc_by(metrics);
        self.duration_seconds.set(seconds);
        self.last_timestamp_seconds.set(unix_seconds);
    }

    /// A collector's part of this cycle was lost.
    pub fn collector_failed(&self, collector: &'static str, error: &dyn Display) {
        self.collector_errors
            .get_or_create(&CollectorLabel { collector })
            .inc();
        crate::warn_limited!(
            format!("collector:{collector}"),
            collector,
            error = %error,
            "collector failed this cycle"
        );
    }

    /// One container's metrics were lost for this cycle.
    pub fn container_failed(&self, container: &dyn Display, error: &dyn Display) {
        self.container_errors.inc();
        crate::warn_limited!(
            "cgroup-container",
            container = %container,
            error = %error,
            "container metrics lost for this cycle"
        );
    }
}
