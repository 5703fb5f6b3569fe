//! Delivery: a bounded queue between the collection cycle and the sink,
//! and the one task that drains it with retries (SPEC §7).
//!
//! - [`Delivery::submit_metrics`] is called from the cycle. It splits the
//!   metrics into batches of `batch_size`, encodes them with the sink's
//!   encoding (gzip included), and appends the bytes to the queue. It never
//!   awaits; the only lock it takes is held for a few pointer moves.
//! - The queue ([`queue::BatchQueue`], in memory: [`queue::MemoryQueue`]) is
//!   bounded by `queue_max_bytes` of encoded bytes, exactly: when a new batch
//!   does not fit, the oldest batches are dropped and counted
//!   (`batches_dropped{reason="queue_full"}`) with a rate-limited warning.
//! - The sender task sends one batch at a time, oldest first. A transient
//!   failure (408, 429, 5xx, transport error, timeout) puts the batch back at
//!   the front of the queue and waits: `Retry-After` when the server gave
//!   one (capped at 60 s), else exponential backoff with full jitter
//!   ([`backoff::Backoff`], 500 ms doubling to 30 s; the retry number counts
//!   consecutive transient failures of the sink, reset by any answer that is
//!   not transient). While it waits the batch is in the queue like any other,
//!   so when the queue overflows it is the first to go: the newest data wins.
//!   A permanent failure (other 4xx) drops the batch, counted
//!   (`reason="permanent"`) and logged with the status and the first 200
//!   bytes of the body. The batch being sent is outside the queue for the
//!   length of one request, so memory is at most the bound plus one batch.
//! - [`Delivery::flush`] waits until everything submitted before the call is
//!   delivered or dropped; [`Delivery::shutdown`] stops taking new batches,
//!   keeps sending (waits between attempts, backoff or `Retry-After`, cut
//!   to at most 1 s) for the grace period,
//!   then stops the task; what is left stays in the disk buffer
//!   ([`disk::DiskQueue`], `--buffer-path`) for the next start, or, in
//!   memory-only mode, is dropped and counted (`reason="shutdown"`).
//! - Metrics whose value is NaN or infinite are dropped at submission and
//!   counted (`reason="non_finite"`): JSON has no such numbers.
//! - Spans (from the OTLP receiver) go through the same queue and sender,
//!   as batches of `batch_size` posted to `/api/v1/telemetry/spans`, but
//!   are never dropped to make room: [`Delivery::try_submit_spans`] takes a
//!   whole request's spans or refuses them all ([`SpanQueueFull`]) so the
//!   receiver can tell the sender to retry. [`Delivery::start_with_spans`]
//!   gives them their own part of the bound ([`queue::SplitQueue`]).

pub mod backoff;
pub mod disk;
pub mod queue;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::SeedableRng;
use tokio::sync::{Notify, watch};

use self::backoff::Backoff;
use self::queue::{BatchQueue, MemoryQueue, QueuedBatch, SplitQueue};
use crate::config;
use crate::sink::{AnySink, PayloadKind, SendError, wire};
use crate::telemetry::{KindLabel, Telemetry};
use crate::warn_limited;

/// Backoff waits while shutting down are cut to this.
const DRAIN_MAX_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Max metrics per batch (0 is treated as 1).
    pub batch_size: usize,
    /// Bound of the queue in encoded bytes.
    pub queue_max_bytes: u64,
    /// Bound of one send attempt, connection to last byte.
    pub request_timeout: Duration,
    pub compression: config::Compression,
}

/// Batches resolved during a [`Delivery::flush`] or [`Delivery::shutdown`]
/// call, and what was still undelivered when it returned.
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

struct State {
    queue: Box<dyn BatchQueue>,
    /// Submission number of the batch being sent.
    in_flight: Option<u64>,
    /// Next submission number (the first is 1).
    next_seq: u64,
    delivered: u64,
    dropped: u64,
    /// Batches discarded when the task stopped.
    left_at_stop: u64,
}

impl State {
    /// Smallest submission number not yet delivered or dropped.
    fn oldest_unresolved(&self) -> u64 {
        match (self.in_flight, self.queue.oldest_seq()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => self.next_seq,
        }
    }

    fn pending(&self) -> u64 {
        self.queue.batches() as u64 + u64::from(self.in_flight.is_some())
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the sender when a batch is queued.
    wake: Notify,
    /// Bumped whenever a batch is resolved (flush waits on it).
    progress: watch::Sender<()>,
    phase: watch::Sender<Phase>,
    /// Set by the task when it has stopped.
    done: watch::Sender<bool>,
    sink: AnySink,
    opts: DeliveryOptions,
    backoff: Backoff,
    telemetry: Arc<Telemetry>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_gauges(&self, st: &State) {
        let t = &self.telemetry;
        t.queue_bytes.set(st.queue.bytes() as i64);
        t.queue_batches.set(st.queue.batches() as i64);
    }

    /// Count batches the queue evicted to make room.
    fn evicted(&self, st: &mut State, evicted: Vec<QueuedBatch>) {
        if evicted.is_empty() {
            return;
        }
        let mut items = 0;
        for b in &evicted {
            self.telemetry
                .drop_items(b.batch.kind.as_str(), "queue_full", 1, b.batch.items);
            items += b.batch.items;
        }
        st.dropped += evicted.len() as u64;
        warn_limited!(
            "delivery.queue_full",
            batches = evicted.len(),
            items,
            bound_bytes = st.queue.capacity_bytes(),
            "delivery queue full: dropped the oldest batches"
        );
    }
}

/// Spans refused: their part of the queue is full (or delivery is shutting
/// down). Nothing of the submission was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("span queue full")]
pub struct SpanQueueFull;

/// Handle to the delivery queue and its sender task. Cheap to clone.
#[derive(Clone)]
pub struct Delivery {
    shared: Arc<Shared>,
}

impl Delivery {
    /// Start the sender task on the current tokio runtime, with the default
    /// backoff (500 ms base, 30 s cap, `Retry-After` up to 60 s).
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
        let queue = MemoryQueue::new(opts.queue_max_bytes);
        Self::start_with_queue(sink, opts, backoff, Box::new(queue), telemetry)
    }

    /// [`Delivery::start`] for an agent that also forwards spans: the queue
    /// bound is split evenly, metrics in one half (oldest dropped when
    /// full), spans in the other (refused when full, never dropped to make
    /// room). The total stays `queue_max_bytes`.
    pub fn start_with_spans(
        sink: AnySink,
        opts: DeliveryOptions,
        telemetry: Arc<Telemetry>,
    ) -> (Delivery, tokio::task::JoinHandle<()>) {
        let metrics = opts.queue_max_bytes / 2;
        let queue = SplitQueue::new(metrics, opts.queue_max_bytes - metrics);
        Self::start_with_queue(sink, opts, Backoff::default(), Box::new(queue), telemetry)
    }

    /// Start over any [`BatchQueue`] (the disk buffer plugs in here).
    pub fn start_with_queue(
        sink: AnySink,
        opts: DeliveryOptions,
        backoff: Backoff,
        queue: Box<dyn BatchQueue>,
        telemetry: Arc<Telemetry>,
    ) -> (Delivery, tokio::task::JoinHandle<()>) {
        telemetry
            .queue_capacity_bytes
            .set(queue.capacity_bytes().min(i64::MAX as u64) as i64);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_seq: queue.first_seq(),
                queue,
                in_flight: None,
                delivered: 0,
                dropped: 0,
                left_at_stop: 0,
            }),
            wake: Notify::new(),
            progress: watch::channel(()).0,
            phase: watch::channel(Phase::Running).0,
            done: watch::channel(false).0,
            sink,
            opts,
            backoff,
            telemetry,
        });
        shared.set_gauges(&shared.lock());
        let task = tokio::spawn(run(shared.clone()));
        (Delivery { shared }, task)
    }

    /// Split into batches of `batch_size`, encode with the sink's encoding,
    /// enqueue. Never blocks on the sink or awaits. When the queue would
    /// exceed its byte bound the oldest queued batches are dropped and
    /// counted. After [`Delivery::shutdown`] began, batches are dropped and
    /// counted with reason `shutdown`.
    pub fn submit_metrics(&self, mut metrics: Vec<wire::Metric>) {
        let sh = &self.shared;
        let before = metrics.len();
        metrics.retain(|m| m.value.is_finite());
        let non_finite = (before - metrics.len()) as u64;
        if non_finite > 0 {
            sh.telemetry
                .drop_items("metrics", "non_finite", 0, non_finite);
            warn_limited!(
                "delivery.non_finite",
                metrics = non_finite,
                "dropped metrics whose value is NaN or infinite"
            );
        }
        if metrics.is_empty() {
            return;
        }
        let size = sh.opts.batch_size.max(1);
        if *sh.phase.borrow() != Phase::Running {
            let batches = metrics.len().div_ceil(size) as u64;
            sh.telemetry
                .drop_items("metrics", "shutdown", batches, metrics.len() as u64);
            warn_limited!(
                "delivery.after_shutdown",
                metrics = metrics.len(),
                "delivery is shutting down: dropped metrics submitted after it began"
            );
            return;
        }
        let mut encoded = Vec::with_capacity(metrics.len().div_ceil(size));
        for chunk in metrics.chunks(size) {
            match sh.sink.encode_metrics(chunk, sh.opts.compression) {
                Ok(b) => encoded.push(b),
                Err(e) => {
                    sh.telemetry
                        .drop_items("metrics", "permanent", 1, chunk.len() as u64);
                    warn_limited!("delivery.encode", error = %e, "cannot encode a batch: dropped");
                }
            }
        }
        {
            let mut st = sh.lock();
            for batch in encoded {
                let seq = st.next_seq;
                st.next_seq += 1;
                let ev = st.queue.push_back(QueuedBatch { seq, batch });
                sh.evicted(&mut st, ev);
            }
            st.queue.sync();
            sh.set_gauges(&st);
        }
        sh.wake.notify_one();
        sh.progress.send_replace(());
    }

    /// Queue a request's spans in batches of `batch_size`, or refuse them
    /// all when they do not fit in the span part of the queue without
    /// evicting anything (or delivery is shutting down). Never blocks.
    pub fn try_submit_spans(&self, spans: Vec<wire::StoredSpan>) -> Result<(), SpanQueueFull> {
        let sh = &self.shared;
        if spans.is_empty() {
            return Ok(());
        }
        if *sh.phase.borrow() != Phase::Running {
            return Err(SpanQueueFull);
        }
        let size = sh.opts.batch_size.max(1);
        let mut encoded = Vec::with_capacity(spans.len().div_ceil(size));
        for chunk in spans.chunks(size) {
            match sh.sink.encode_spans(chunk, sh.opts.compression) {
                Ok(b) => encoded.push(b),
                Err(e) => {
                    // refused, not dropped: the sender hears about it
                    warn_limited!("delivery.encode_spans", error = %e, "cannot encode spans: refused");
                    return Err(SpanQueueFull);
                }
            }
        }
        let total: u64 = encoded.iter().map(|b| b.size()).sum();
        {
            let mut st = sh.lock();
            // the whole request, checked once: pushing spans never evicts
            if st.queue.room_for(PayloadKind::Spans) < total {
                return Err(SpanQueueFull);
            }
            for batch in encoded {
                let seq = st.next_seq;
                st.next_seq += 1;
                let ev = st.queue.push_back(QueuedBatch { seq, batch });
                sh.evicted(&mut st, ev);
            }
            sh.set_gauges(&st);
        }
        sh.wake.notify_one();
        sh.progress.send_replace(());
        Ok(())
    }

    /// Bytes of encoded spans that fit in the queue now (`u64::MAX` when no
    /// span is queued): lets the receiver refuse before decoding.
    pub fn span_room(&self) -> u64 {
        self.shared.lock().queue.room_for(PayloadKind::Spans)
    }

    /// Wait until everything submitted so far is delivered or dropped, at
    /// most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> FlushReport {
        let sh = &self.shared;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = sh.progress.subscribe();
        let mut done_rx = sh.done.subscribe();
        let (target, d0, x0) = {
            let st = sh.lock();
            (st.next_seq - 1, st.delivered, st.dropped)
        };
        loop {
            rx.borrow_and_update();
            let stopped = *done_rx.borrow_and_update();
            {
                let st = sh.lock();
                if st.oldest_unresolved() > target || stopped {
                    return FlushReport {
                        delivered_batches: st.delivered - d0,
                        dropped_batches: st.dropped - x0,
                        pending_batches: st.pending(),
                    };
                }
            }
            let waited = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    r = rx.changed() => r.is_ok(),
                    r = done_rx.changed() => r.is_ok(),
                }
            })
            .await;
            if !matches!(waited, Ok(true)) {
                let st = sh.lock();
                return FlushReport {
                    delivered_batches: st.delivered - d0,
                    dropped_batches: st.dropped - x0,
                    pending_batches: st.pending(),
                };
            }
        }
    }

    /// Stop accepting, try to deliver what is queued within `grace`, then
    /// stop the task; report what was left (discarded: memory only).
    pub async fn shutdown(&self, grace: Duration) -> FlushReport {
        let sh = &self.shared;
        let (d0, x0, l0) = {
            let st = sh.lock();
            (st.delivered, st.dropped, st.left_at_stop)
        };
        sh.phase.send_if_modified(|p| {
            let change = *p == Phase::Running;
            if change {
                *p = Phase::Draining;
            }
            change
        });
        sh.wake.notify_one();
        self.flush(grace).await;
        sh.phase.send_replace(Phase::Stopping);
        let mut done = sh.done.subscribe();
        // the task only has to notice and count; bound the wait in case it
        // was aborted
        let _ = tokio::time::timeout(Duration::from_secs(2), done.wait_for(|d| *d)).await;
        let st = sh.lock();
        FlushReport {
            delivered_batches: st.delivered - d0,
            dropped_batches: st.dropped - x0,
            pending_batches: st.left_at_stop - l0 + st.pending(),
        }
    }
}

/// How long to wait after a transient failure: the server's `Retry-After`
/// (capped) when it gave a positive one, else the jittered backoff for
/// retry number `failures`; at most [`DRAIN_MAX_WAIT`] while shutting down.
fn retry_wait<R: rand::Rng + ?Sized>(
    backoff: &Backoff,
    retry_after: Option<Duration>,
    failures: u32,
    draining: bool,
    rng: &mut R,
) -> Duration {
    let d = match retry_after {
        Some(d) if !d.is_zero() => backoff.honour_retry_after(d),
        _ => backoff.delay(failures, rng),
    };
    if draining { d.min(DRAIN_MAX_WAIT) } else { d }
}

/// The sender task.
async fn run(sh: Arc<Shared>) {
    let mut phase = sh.phase.subscribe();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    // consecutive transient failures: the retry number of the backoff
    let mut failures: u32 = 0;
    let mut leftover: Option<QueuedBatch> = None;
    loop {
        if *phase.borrow_and_update() == Phase::Stopping {
            break;
        }
        let next = {
            let mut st = sh.lock();
            let b = st.queue.pop_front();
            st.in_flight = b.as_ref().map(|b| b.seq);
            sh.set_gauges(&st);
            b
        };
        let Some(qb) = next else {
            tokio::select! {
                _ = sh.wake.notified() => {}
                _ = phase.changed() => {}
            }
            continue;
        };
        let result = tokio::select! {
            biased;
            _ = phase.wait_for(|p| *p == Phase::Stopping) => None,
            r = sh.sink.send(&qb.batch, sh.opts.request_timeout) => Some(r),
        };
        let Some(result) = result else {
            leftover = Some(qb);
            break;
        };
        let kind = qb.batch.kind.as_str();
        let label = KindLabel {
            kind: kind.to_string(),
        };
        let mut wait = None;
        {
            let mut st = sh.lock();
            st.in_flight = None;
            match result {
                Ok(()) => {
                    failures = 0;
                    st.queue.complete(&qb);
                    st.delivered += 1;
                    sh.telemetry.batches_sent.get_or_create(&label).inc();
                    sh.telemetry
                        .items_sent
                        .get_or_create(&label)
                        .inc_by(qb.batch.items);
                }
                Err(SendError::Permanent { reason, .. }) => {
                    failures = 0;
                    st.queue.complete(&qb);
                    st.dropped += 1;
                    sh.telemetry
                        .drop_items(kind, "permanent", 1, qb.batch.items);
                    warn_limited!(
                        "delivery.permanent",
                        sink = sh.sink.name(),
                        kind,
                        items = qb.batch.items,
                        "batch refused, dropped (not retried): {reason}"
                    );
                }
                Err(SendError::Transient {
                    reason,
                    retry_after,
                }) => {
                    sh.telemetry.batches_retried.get_or_create(&label).inc();
                    let draining = *phase.borrow() != Phase::Running;
                    let delay = retry_wait(&sh.backoff, retry_after, failures, draining, &mut rng);
                    failures = failures.saturating_add(1);
                    warn_limited!(
                        "delivery.transient",
                        sink = sh.sink.name(),
                        kind,
                        retry_in_ms = delay.as_millis() as u64,
                        consecutive_failures = failures,
                        "batch not delivered, will retry: {reason}"
                    );
                    let ev = st.queue.requeue_front(qb);
                    sh.evicted(&mut st, ev);
                    wait = Some(delay);
                }
            }
            sh.set_gauges(&st);
        }
        sh.progress.send_replace(());
        if let Some(delay) = wait {
            // a change of phase (shutdown began) cuts the wait short
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = phase.changed() => {}
            }
        }
    }
    // stopping: a durable queue keeps what it can (the batch in flight
    // goes back first), the rest is dropped
    let mut st = sh.lock();
    st.in_flight = None;
    let mut left = Vec::new();
    if let Some(b) = leftover {
        left.extend(st.queue.requeue_front(b));
    }
    left.extend(st.queue.drain_all());
    let kept = st.queue.batches();
    if kept > 0 {
        tracing::info!(
            batches = kept,
            bytes = st.queue.bytes(),
            "shutdown: undelivered batches kept in the disk buffer for the next start"
        );
    }
    if !left.is_empty() {
        let mut items = 0;
        for b in &left {
            sh.telemetry
                .drop_items(b.batch.kind.as_str(), "shutdown", 1, b.batch.items);
            items += b.batch.items;
        }
        tracing::warn!(
            batches = left.len(),
            items,
            "shutdown grace period over: undelivered batches dropped"
        );
    }
    st.left_at_stop += left.len() as u64;
    sh.set_gauges(&st);
    drop(st);
    sh.done.send_replace(true);
    sh.progress.send_replace(());
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

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
