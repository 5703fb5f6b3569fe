//! Delivery: batches sent, retried and dropped, and the queue's gauges.
//!
//! Which drops mean "not delivered" (what `--once` exits non-zero on) is
//! the caller's choice of event: [`DeliveryTelemetry::dropped`] is for
//! batches that were meant to arrive, [`DeliveryTelemetry::non_finite`]
//! for values the sink could never take.

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::label::label_values;

label_values! {
    /// What a batch holds.
    pub enum Kind {
        Metrics => "metrics",
        Spans => "spans",
    }
}

label_values! {
    /// Why items were dropped.
    pub enum DropReason {
        /// The sink refused them for good (4xx), or they cannot be encoded.
        Permanent => "permanent",
        /// The queue's oldest, dropped to make room.
        QueueFull => "queue_full",
        /// The grace period was over, with nothing to keep them in.
        Shutdown => "shutdown",
        /// A NaN or infinite value.
        NonFinite => "non_finite",
        /// A disk buffer record unreadable when it was due.
        Corrupt => "corrupt",
    }
}

/// The reasons a batch meant for the sink did not arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undelivered {
    Permanent,
    QueueFull,
    Shutdown,
    Corrupt,
}

impl From<Undelivered> for DropReason {
    fn from(u: Undelivered) -> Self {
        match u {
            Undelivered::Permanent => DropReason::Permanent,
            Undelivered::QueueFull => DropReason::QueueFull,
            Undelivered::Shutdown => DropReason::Shutdown,
            Undelivered::Corrupt => DropReason::Corrupt,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: Kind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabel {
    pub kind: Kind,
    pub reason: DropReason,
}

pub struct DeliveryTelemetry {
    pub batches_sent: Family<KindLabel, Counter>,
    pub items_sent: Family<KindLabel, Counter>,
    pub batches_retried: Family<KindLabel, Counter>,
    pub batches_dropped: Family<DropLabel, Counter>,
    pub items_dropped: Family<DropLabel, Counter>,
    pub queue_bytes: Gauge,
    pub queue_batches: Gauge,
    pub queue_capacity_bytes: Gauge,
    undelivered_batches: AtomicU64,
}

impl DeliveryTelemetry {
    pub(super) fn register(r: &mut Registry) -> Self {
        let t = DeliveryTelemetry {
            batches_sent: Family::default(),
            items_sent: Family::default(),
            batches_retried: Family::default(),
            batches_dropped: Family::default(),
            items_dropped: Family::default(),
            queue_bytes: Gauge::default(),
            queue_batches: Gauge::default(),
            queue_capacity_bytes: Gauge::default(),
            undelivered_batches: AtomicU64::new(0),
        };
        r.register("batches_sent", "Batches delivered", t.batches_sent.clone());
        r.register(
            "items_sent",
            "Metrics or spans delivered",
            t.items_sent.clone(),
        );
        r.register(
            "batches_retried",
            "Delivery attempts that failed transiently and were retried",
            t.batches_retried.clone(),
        );
        r.register(
            "batches_dropped",
            "Batches dropped, by reason",
            t.batches_dropped.clone(),
        );
        r.register(
            "items_dropped",
            "Metrics or spans dropped, by reason",
            t.items_dropped.clone(),
        );
        r.register(
            "queue_bytes",
            "Bytes not yet delivered: queued or being sent",
            t.queue_bytes.clone(),
        );
        r.register(
            "queue_batches",
            "Batches not yet delivered: queued or being sent",
            t.queue_batches.clone(),
        );
        r.register(
            "queue_capacity_bytes",
            "Bound of the delivery queue in bytes",
            t.queue_capacity_bytes.clone(),
        );
        t
    }

    fn count_drop(&self, kind: Kind, reason: DropReason, batches: u64, items: u64) {
        let l = DropLabel { kind, reason };
        if batches > 0 {
            self.batches_dropped.get_or_create(&l).inc_by(batches);
        }
        self.items_dropped.get_or_create(&l).inc_by(items);
    }

    /// Batches meant for the sink that will not reach it.
    pub fn dropped(&self, kind: Kind, why: Undelivered, batches: u64, items: u64) {
        self.count_drop(kind, why.into(), batches, items);
        self.undelivered_batches
            .fetch_add(batches, Ordering::Relaxed);
    }

    /// Batches dropped for any reason but a non-finite value, since start
    /// (`--once` exits non-zero when this is not zero).
    pub fn undelivered_batches(&self) -> u64 {
        self.undelivered_batches.load(Ordering::Relaxed)
    }

    /// Metrics left out before batching for a NaN or infinite value: not
    /// an undelivered batch.
    pub fn non_finite(&self, metrics: u64) {
        self.count_drop(Kind::Metrics, DropReason::NonFinite, 0, metrics);
        crate::warn_limited!(
            "delivery.non_finite",
            metrics,
            "dropped metrics whose value is NaN or infinite"
        );
    }

    /// Metrics submitted after shutdown began.
    pub fn after_shutdown(&self, batches: u64, metrics: u64) {
        self.dropped(Kind::Metrics, Undelivered::Shutdown, batches, metrics);
        crate::warn_limited!(
            "delivery.after_shutdown",
            metrics,
            "delivery is shutting down: dropped metrics submitted after it began"
        );
    }

    /// The shutdown grace period ended with these still queued, and no
    /// disk to keep them on. (Once per lane: not rate-limited.)
    pub fn grace_over(&self, kind: Kind, batches: u64, items: u64) {
        self.dropped(kind, Undelivered::Shutdown, batches, items);
        tracing::warn!(
            kind = kind.as_str(),
            batches,
            items,
            "shutdown grace period over: undelivered batches dropped"
        );
    }

    /// A chunk that could not be encoded, dropped.
    pub fn encode_failed(&self, kind: Kind, items: u64, error: &dyn Display) {
        self.dropped(kind, Undelivered::Permanent, 1, items);
        crate::warn_limited!("delivery.encode", error = %error, "cannot encode a batch: dropped");
    }

    /// The queue's oldest batches, dropped to make room.
    pub fn evicted(&self, kind: Kind, batches: u64, items: u64, bound_bytes: u64) {
        self.dropped(kind, Undelivered::QueueFull, batches, items);
        crate::warn_limited!(
            "delivery.queue_full",
            batches,
            items,
            bound_bytes,
            "delivery queue full: dropped the oldest batches"
        );
    }

    /// A batch delivered.
    pub fn sent(&self, kind: Kind, items: u64) {
        let l = KindLabel { kind };
        self.batches_sent.get_or_create(&l).inc();
        self.items_sent.get_or_create(&l).inc_by(items);
    }

    /// A batch the sink refused for good, dropped.
    pub fn refused(&self, kind: Kind, sink: &str, items: u64, reason: &dyn Display) {
        self.dropped(kind, Undelivered::Permanent, 1, items);
        let kind = kind.as_str();
        crate::warn_limited!(
            "delivery.permanent",
            sink,
            kind,
            items,
            "batch refused, dropped (not retried): {reason}"
        );
    }

    /// A transient failure: the batch is tried again after `delay`.
    pub fn retrying(
        &self,
        kind: Kind,
        sink: &str,
        delay: Duration,
        failures: u32,
        reason: &dyn Display,
    ) {
        self.batches_retried
            .get_or_create(&KindLabel { kind })
            .inc();
        let key = match kind {
            Kind::Metrics => "delivery.transient.metrics",
            Kind::Spans => "delivery.transient.spans",
        };
        let kind = kind.as_str();
        crate::warn_limited!(
            key,
            sink,
            kind,
            retry_in_ms = delay.as_millis() as u64,
            consecutive_failures = failures,
            "batch not delivered, will retry: {reason}"
        );
    }
}
