//! Delivery: two bounded lanes between their producers and the sink, one
//! per kind, each drained by its own sender task with retries (SPEC §7).
//!
//! - [`Delivery::submit_metrics`] is called from the cycle,
//!   [`Delivery::try_submit_spans`] from the OTLP receiver. Both go through
//!   one path: split into batches of `batch_size`, encode with the sink's
//!   encoding (gzip included), append to the kind's lane. Never awaits; the
//!   only lock taken is the lane's, for a few pointer moves.
//! - A lane ([`lane`]) is a queue ([`queue::BatchQueue`]: in memory
//!   [`queue::MemoryQueue`], on disk [`disk::DiskQueue`]) with its own
//!   byte bound, sender task and backoff: an endpoint that keeps failing
//!   delays its own kind only. The bounds come from [`Lanes`]: without
//!   OTLP the metrics lane has all of `--queue-max-bytes`; with it each
//!   lane has half (and half of the disk cap).
//! - Metrics: when a new batch does not fit, the oldest metric batches are
//!   dropped and counted (`batches_dropped{reason="queue_full"}`), with a
//!   rate-limited warning. Spans are never dropped to make room:
//!   [`Delivery::try_submit_spans`] takes a whole request or refuses it
//!   ([`SpanQueueFull`]) so the receiver can tell its client to retry, and
//!   a span batch out for an attempt still counts against the bound, so
//!   putting it back always fits. [`Delivery::span_room`] is that room.
//! - Each sender sends one batch at a time, oldest first. A transient
//!   failure (408, 429, 5xx, transport error, timeout) puts the batch back
//!   at the front of its lane and waits: `Retry-After` when the server gave
//!   one (capped at 60 s), else exponential backoff with full jitter
//!   ([`backoff::Backoff`], 500 ms doubling to 30 s; the retry number counts
//!   the lane's consecutive transient failures, reset by any answer that is
//!   not transient). A permanent failure (other 4xx) drops the batch,
//!   counted (`reason="permanent"`) and logged.
//! - [`Delivery::flush`] waits until everything submitted (both lanes)
//!   before the call is delivered or dropped; [`Delivery::shutdown`] stops
//!   taking new batches, keeps sending on both lanes (waits cut to at most
//!   1 s) for the grace period, then stops the senders; what is left stays
//!   in the disk buffer for the next start or, in memory, is dropped and
//!   counted (`reason="shutdown"`).
//! - Metrics whose value is NaN or infinite are dropped at submission and
//!   counted (`reason="non_finite"`): JSON has no such numbers.

pub mod backoff;
pub mod disk;
mod lane;
pub mod lanes;
pub mod queue;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use self::lanes::Lanes;

use self::backoff::Backoff;
use self::lane::{Lane, Sender, Tally};
use crate::config;
use crate::sink::render::MetricOut;
use crate::sink::{AnySink, EncodedBatch, PayloadKind, SinkError, wire};
use crate::telemetry::Telemetry;
use crate::warn_limited;

#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Max metrics (or spans) per batch (0 is treated as 1).
    pub batch_size: usize,
    /// Bound of the queue in encoded bytes (see [`Lanes`] for how the
    /// lanes share it).
    pub queue_max_bytes: u64,
    /// Bound of one send attempt, connection to last byte.
    pub request_timeout: Duration,
    pub compression: config::Compression,
}

/// Batches resolved during a [`Delivery::flush`] or [`Delivery::shutdown`]
/// call (both lanes), and what was still undelivered when it returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Batches delivered while the call ran.
    pub delivered_batches: u64,
    /// Batches dropped (permanent failure, queue full) while the call ran.
    pub dropped_batches: u64,
    /// `flush`: batches queued or in flight at return. `shutdown`: batches
    /// still undelivered when the grace period ended (kept in the disk
    /// buffer when there is one, else discarded and counted in telemetry as
    /// dropped with reason `shutdown`).
    pub pending_batches: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining,
    Stopping,
}

struct Shared {
    /// Indexed by [`lane_index`].
    lanes: [Lane; 2],
    /// Bumped whenever a batch is queued or resolved, or a sender stops.
    progress: watch::Sender<()>,
    phase: watch::Sender<Phase>,
    sink: AnySink,
    opts: DeliveryOptions,
    telemetry: Arc<Telemetry>,
}

fn lane_index(kind: PayloadKind) -> usize {
    match kind {
        PayloadKind::Metrics => 0,
        PayloadKind::Spans => 1,
    }
}

impl Shared {
    fn lane(&self, kind: PayloadKind) -> &Lane {
        &self.lanes[lane_index(kind)]
    }

    /// Per lane: the last submission number so far and its tally.
    fn marks(&self) -> [(u64, Tally); 2] {
        self.lanes.each_ref().map(|l| {
            let st = l.lock();
            (st.last_seq(), st.tally())
        })
    }

    /// What both lanes resolved since `marks`.
    fn report(&self, marks: &[(u64, Tally); 2]) -> FlushReport {
        let mut r = FlushReport::default();
        for (lane, (_, t0)) in self.lanes.iter().zip(marks) {
            let t = lane.lock().tally();
            r.delivered_batches += t.delivered - t0.delivered;
            r.dropped_batches += t.dropped - t0.dropped;
            r.pending_batches += t.left_at_stop - t0.left_at_stop + t.pending;
        }
        r
    }

    fn set_phase(&self, to: Phase) {
        self.phase.send_if_modified(|p| {
            let change = *p != to && (*p == Phase::Running || to == Phase::Stopping);
            if change {
                *p = to;
            }
            change
        });
        for l in &self.lanes {
            l.wake.notify_one();
        }
    }
}

/// Spans refused: their lane is full (or delivery is shutting down).
/// Nothing of the submission was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("span queue full")]
pub struct SpanQueueFull;

/// Why a submission was not taken.
enum Refused {
    ShuttingDown {
        batches: u64,
    },
    /// All or nothing (spans): an encoding failed, or no room.
    Encode,
    Full,
}

/// Handle to the delivery lanes and their sender tasks. Cheap to clone.
#[derive(Clone)]
pub struct Delivery {
    shared: Arc<Shared>,
}

impl Delivery {
    /// Start in memory with the default backoff (500 ms base, 30 s cap,
    /// `Retry-After` up to 60 s): metrics get the whole bound, spans none
    /// (see [`Delivery::start_lanes`] to forward spans).
    pub fn start(
        sink: AnySink,
        opts: DeliveryOptions,
        telemetry: Arc<Telemetry>,
    ) -> (Delivery, tokio::task::JoinHandle<()>) {
        Self::start_with(sink, opts, Backoff::default(), telemetry)
    }

    /// [`Delivery::start`] with a given backoff policy.
    pub fn start_with(
        sink: AnySink,
        opts: DeliveryOptions,
        backoff: Backoff,
        telemetry: Arc<Telemetry>,
    ) -> (Delivery, tokio::task::JoinHandle<()>) {
        let lanes = Lanes::memory(opts.queue_max_bytes, false);
        Self::start_lanes(sink, opts, backoff, lanes, telemetry)
    }

    /// Start one sender task per lane on the current tokio runtime; the
    /// handle returned ends when both have stopped.
    pub fn start_lanes(
        sink: AnySink,
        opts: DeliveryOptions,
        backoff: Backoff,
        lanes: Lanes,
        telemetry: Arc<Telemetry>,
    ) -> (Delivery, tokio::task::JoinHandle<()>) {
        let cap = lanes.capacity_bytes();
        telemetry
            .delivery
            .queue_capacity_bytes
            .set(cap.min(i64::MAX as u64) as i64);
        let shared = Arc::new(Shared {
            lanes: [
                Lane::new(PayloadKind::Metrics, lanes.metrics, backoff),
                Lane::new(PayloadKind::Spans, lanes.spans, backoff),
            ],
            progress: watch::channel(()).0,
            phase: watch::channel(Phase::Running).0,
            sink,
            opts,
            telemetry,
        });
        for l in &shared.lanes {
            l.show(&mut l.lock(), &shared.telemetry);
        }
        let tasks = [PayloadKind::Metrics, PayloadKind::Spans]
            .map(|k| tokio::spawn(Sender::new(shared.clone(), k).run()));
        let task = tokio::spawn(async move {
            for t in tasks {
                let _ = t.await;
            }
        });
        (Delivery { shared }, task)
    }

    /// Queue metrics in batches of `batch_size`. Never blocks on the sink
    /// or awaits. Non-finite values are dropped and counted first (the
    /// only place they are). When the metrics lane would exceed its bound
    /// its oldest batches are dropped and counted; after
    /// [`Delivery::shutdown`] began, the metrics are dropped and counted
    /// with reason `shutdown`. Returns how many metrics had a finite value.
    /// The API's owned [`wire::Metric`]s are taken too (tests, tools).
    pub fn submit_metrics<M: Into<MetricOut>>(&self, metrics: Vec<M>) -> usize {
        let mut metrics: Vec<MetricOut> = metrics.into_iter().map(Into::into).collect();
        let sh = &self.shared;
        let before = metrics.len();
        metrics.retain(|m| m.value.is_finite());
        let non_finite = (before - metrics.len()) as u64;
        if non_finite > 0 {
            sh.telemetry.delivery.non_finite(non_finite);
        }
        let encode = |s: &AnySink, c: &[MetricOut], z| s.encode_metrics(c, z);
        if let Err(Refused::ShuttingDown { batches }) =
            self.enqueue(PayloadKind::Metrics, &metrics, encode)
        {
            sh.telemetry
                .delivery
                .after_shutdown(batches, metrics.len() as u64);
        }
        // the spans received since the last cycle become durable with it
        sh.lane(PayloadKind::Spans).lock().queue.sync();
        metrics.len()
    }

    /// Queue a request's spans in batches of `batch_size`, or refuse them
    /// all when they do not fit in the span lane without evicting anything
    /// (or delivery is shutting down). Never blocks.
    pub fn try_submit_spans(&self, spans: Vec<wire::StoredSpan>) -> Result<(), SpanQueueFull> {
        let encode = |s: &AnySink, c: &[wire::StoredSpan], z| s.encode_spans(c, z);
        self.enqueue(PayloadKind::Spans, &spans, encode)
            .map_err(|_| SpanQueueFull)
    }

    /// [`Delivery::try_submit_spans`] for spans already encoded as JSON
    /// objects (the OTLP fast path): the same batches, the same bytes.
    pub fn try_submit_span_json(&self, spans: &[&[u8]]) -> Result<(), SpanQueueFull> {
        let encode = |s: &AnySink, c: &[&[u8]], z| s.encode_span_json(c, z);
        self.enqueue(PayloadKind::Spans, spans, encode)
            .map_err(|_| SpanQueueFull)
    }

    /// The one submission path: chunk, encode, lock the lane, push. Metrics
    /// lose a chunk that cannot be encoded (counted) and evict to make
    /// room; spans are all or nothing.
    fn enqueue<T>(
        &self,
        kind: PayloadKind,
        items: &[T],
        encode: impl Fn(&AnySink, &[T], config::Compression) -> Result<EncodedBatch, SinkError>,
    ) -> Result<(), Refused> {
        let sh = &self.shared;
        if items.is_empty() {
            return Ok(());
        }
        let size = sh.opts.batch_size.max(1);
        if *sh.phase.borrow() != Phase::Running {
            let batches = items.len().div_ceil(size) as u64;
            return Err(Refused::ShuttingDown { batches });
        }
        let all_or_nothing = kind == PayloadKind::Spans;
        let mut encoded = Vec::with_capacity(items.len().div_ceil(size));
        for chunk in items.chunks(size) {
            match encode(&sh.sink, chunk, sh.opts.compression) {
                Ok(b) => encoded.push(b),
                Err(e) if all_or_nothing => {
                    // refused, not dropped: the client hears about it
                    warn_limited!("delivery.encode_spans", error = %e, "cannot encode spans: refused");
                    return Err(Refused::Encode);
                }
                Err(e) => {
                    let n = chunk.len() as u64;
                    sh.telemetry.delivery.encode_failed(kind.label(), n, &e);
                }
            }
        }
        let lane = sh.lane(kind);
        {
            let mut st = lane.lock();
            if all_or_nothing {
                // the whole request, checked once: pushing spans never evicts
                let need: u64 = encoded.iter().map(|b| st.queue.cost(b)).sum();
                if st.queue.room() < need {
                    return Err(Refused::Full);
                }
            }
            for batch in encoded {
                lane.push(&mut st, batch, &sh.telemetry);
            }
            if kind == PayloadKind::Metrics {
                // once per cycle chunk: the buffer's durability point
                st.queue.sync();
            }
            lane.show(&mut st, &sh.telemetry);
        }
        lane.wake.notify_one();
        sh.progress.send_replace(());
        Ok(())
    }

    /// Bytes of encoded spans that fit in the span lane now, without
    /// evicting anything: its bound minus what is queued or in flight (in
    /// memory fallback, the fallback's). Lets the receiver refuse before
    /// decoding. Never more than the lane's bound; 0 when the agent
    /// forwards no spans.
    pub fn span_room(&self) -> u64 {
        self.shared.lane(PayloadKind::Spans).lock().queue.room()
    }

    /// Wait until everything submitted so far (both lanes) is delivered or
    /// dropped, at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> FlushReport {
        let sh = &self.shared;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = sh.progress.subscribe();
        let marks = sh.marks();
        loop {
            rx.borrow_and_update();
            let done = sh
                .lanes
                .iter()
                .zip(&marks)
                .all(|(l, (target, _))| l.lock().resolved_through(*target));
            if done {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        sh.report(&marks)
    }

    /// Stop accepting, try to deliver what is queued within `grace`, then
    /// stop the senders; report what was left (discarded: memory only).
    pub async fn shutdown(&self, grace: Duration) -> FlushReport {
        let sh = &self.shared;
        let marks = sh.marks();
        sh.set_phase(Phase::Draining);
        self.flush(grace).await;
        sh.set_phase(Phase::Stopping);
        // the senders only have to notice and count; bound the wait in
        // case they were aborted
        let mut rx = sh.progress.subscribe();
        let stopped = async {
            loop {
                rx.borrow_and_update();
                if sh.lanes.iter().all(|l| l.lock().stopped()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), stopped).await;
        sh.report(&marks)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::lane::{DRAIN_MAX_WAIT, retry_wait};
    use super::*;

    #[test]
    fn retry_wait_prefers_retry_after_and_caps_it() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(1);
        let s = Duration::from_secs;
        assert_eq!(retry_wait(&b, Some(s(7)), 0, false, &mut rng), s(7));
        assert_eq!(retry_wait(&b, Some(s(7200)), 0, false, &mut rng), s(60));
        assert_eq!(
            retry_wait(&b, Some(s(7)), 0, true, &mut rng),
            DRAIN_MAX_WAIT
        );
        // a zero (or past-date) Retry-After falls back to the backoff
        for n in 0..12 {
            let d = retry_wait(&b, Some(Duration::ZERO), n, false, &mut rng);
            assert!(d <= b.ceiling(n));
            let d = retry_wait(&b, None, n, true, &mut rng);
            assert!(d <= DRAIN_MAX_WAIT.min(b.ceiling(n)));
        }
        // after many failures the waits reach well past the first ones
        let late: Vec<Duration> = (0..50)
            .map(|_| retry_wait(&b, None, 20, false, &mut rng))
            .collect();
        assert!(late.iter().any(|d| *d > s(10)));
        assert!(late.iter().all(|d| *d <= s(30)));
    }
}
