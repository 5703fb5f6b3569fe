//! One delivery lane: the queue of one kind (metrics or spans), its sender
//! task and its backoff. Lanes share nothing but the sink and the phase, so
//! an endpoint that keeps failing delays only its own kind.
//!
//! The sender is a loop over small steps: [`Sender::take`] the oldest batch
//! (or wait for one), [`Sender::attempt`] it, [`Sender::settle`] the answer
//! (count it; put it back or let it go), [`Sender::pause`] after a transient
//! failure, and [`Sender::stop`] at the end of shutdown.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{Notify, watch};

use super::backoff::Backoff;
use super::queue::{BatchQueue, QueuedBatch};
use super::{Phase, Shared};
use crate::sink::{EncodedBatch, PayloadKind, SendError};
use crate::telemetry::{KindLabel, Telemetry};
use crate::warn_limited;

/// Backoff waits while shutting down are cut to this.
pub(super) const DRAIN_MAX_WAIT: Duration = Duration::from_secs(1);

/// What a lane resolved since it started.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tally {
    pub delivered: u64,
    pub dropped: u64,
    /// Batches left undelivered when the sender stopped.
    pub left_at_stop: u64,
    /// Queued or in flight now.
    pub pending: u64,
}

pub(super) struct LaneState {
    pub queue: Box<dyn BatchQueue>,
    /// Submission number of the batch being sent.
    in_flight: Option<u64>,
    /// Next submission number of this lane.
    next_seq: u64,
    tally: Tally,
    /// The sender has stopped.
    stopped: bool,
    /// What this lane adds to the shared queue gauges (bytes, batches).
    shown: (i64, i64),
}

impl LaneState {
    /// Smallest submission number not yet delivered or dropped.
    fn oldest_unresolved(&self) -> u64 {
        match (self.in_flight, self.queue.oldest_seq()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => self.next_seq,
        }
    }

    /// Last submission number handed out so far.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Everything up to `seq` is resolved (or the sender is gone).
    pub fn resolved_through(&self, seq: u64) -> bool {
        self.stopped || self.oldest_unresolved() > seq
    }

    pub fn tally(&self) -> Tally {
        Tally {
            pending: self.queue.batches() as u64 + u64::from(self.in_flight.is_some()),
            ..self.tally
        }
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

pub(super) struct Lane {
    state: Mutex<LaneState>,
    /// Wakes the sender when a batch is queued or the phase changes.
    pub wake: Notify,
    backoff: Backoff,
    /// The `kind` label, built once.
    label: KindLabel,
}

impl Lane {
    pub fn new(kind: PayloadKind, queue: Box<dyn BatchQueue>, backoff: Backoff) -> Lane {
        Lane {
            state: Mutex::new(LaneState {
                next_seq: queue.first_seq(),
                queue,
                in_flight: None,
                tally: Tally::default(),
                stopped: false,
                shown: (0, 0),
            }),
            wake: Notify::new(),
            backoff,
            label: KindLabel {
                kind: kind.as_str().to_string(),
            },
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append one encoded batch (evicting the oldest when the queue must:
    /// counted here).
    pub fn push(&self, st: &mut LaneState, batch: EncodedBatch, t: &Telemetry) {
        let seq = st.next_seq;
        st.next_seq += 1;
        let ev = st.queue.push_back(QueuedBatch { seq, batch });
        evicted(st, ev, t);
    }

    /// Bring the shared gauges up to date with this lane's queue.
    pub fn show(&self, st: &mut LaneState, t: &Telemetry) {
        let now = (st.queue.bytes() as i64, st.queue.batches() as i64);
        t.queue_bytes.inc_by(now.0 - st.shown.0);
        t.queue_batches.inc_by(now.1 - st.shown.1);
        st.shown = now;
    }
}

/// Count batches the queue evicted to make room.
fn evicted(st: &mut LaneState, evicted: Vec<QueuedBatch>, t: &Telemetry) {
    if evicted.is_empty() {
        return;
    }
    let mut items = 0;
    for b in &evicted {
        t.drop_items(b.batch.kind.as_str(), "queue_full", 1, b.batch.items);
        items += b.batch.items;
    }
    st.tally.dropped += evicted.len() as u64;
    warn_limited!(
        "delivery.queue_full",
        batches = evicted.len(),
        items,
        bound_bytes = st.queue.capacity_bytes(),
        "delivery queue full: dropped the oldest batches"
    );
}

/// How long to wait after a transient failure: the server's `Retry-After`
/// (capped) when it gave a positive one, else the jittered backoff for
/// retry number `failures`; at most [`DRAIN_MAX_WAIT`] while shutting down.
pub(super) fn retry_wait<R: rand::Rng + ?Sized>(
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

/// The sender task of one lane.
pub(super) struct Sender {
    sh: Arc<Shared>,
    kind: PayloadKind,
    phase: watch::Receiver<Phase>,
    rng: StdRng,
    /// Consecutive transient failures: the retry number of the backoff
    /// (reset by any answer that is not transient).
    failures: u32,
}

impl Sender {
    pub fn new(sh: Arc<Shared>, kind: PayloadKind) -> Sender {
        Sender {
            phase: sh.phase.subscribe(),
            sh,
            kind,
            rng: StdRng::from_os_rng(),
            failures: 0,
        }
    }

    fn lane(&self) -> &Lane {
        self.sh.lane(self.kind)
    }

    pub async fn run(mut self) {
        while let Some(qb) = self.take().await {
            let Some(result) = self.attempt(&qb).await else {
                self.stop(Some(qb));
                return;
            };
            if let Some(wait) = self.settle(qb, result) {
                self.pause(wait).await;
            }
        }
        self.stop(None);
    }

    /// The oldest batch, taken out for an attempt; waits while the lane is
    /// empty. `None` once shutdown says stop.
    pub async fn take(&mut self) -> Option<QueuedBatch> {
        loop {
            if *self.phase.borrow_and_update() == Phase::Stopping {
                return None;
            }
            let next = {
                let lane = self.lane();
                let mut st = lane.lock();
                let b = st.queue.pop_front();
                st.in_flight = b.as_ref().map(|b| b.seq);
                lane.show(&mut st, &self.sh.telemetry);
                b
            };
            if next.is_some() {
                return next;
            }
            tokio::select! {
                _ = self.sh.lane(self.kind).wake.notified() => {}
                _ = self.phase.changed() => {}
            }
        }
    }

    /// One send; `None` when shutdown said stop meanwhile (the attempt is
    /// abandoned).
    pub async fn attempt(&mut self, qb: &QueuedBatch) -> Option<Result<(), SendError>> {
        let sh = &self.sh;
        tokio::select! {
            biased;
            _ = self.phase.wait_for(|p| *p == Phase::Stopping) => None,
            r = sh.sink.send(&qb.batch, sh.opts.request_timeout) => Some(r),
        }
    }

    /// Count the answer and resolve the batch: delivered or dropped for
    /// good, or back at the front of the queue. Returns how long to wait
    /// before the next attempt (after a transient failure).
    pub fn settle(&mut self, qb: QueuedBatch, result: Result<(), SendError>) -> Option<Duration> {
        let sh = self.sh.clone();
        let (t, lane) = (&sh.telemetry, sh.lane(self.kind));
        let kind = self.kind.as_str();
        let mut st = lane.lock();
        st.in_flight = None;
        let wait = match result {
            Ok(()) => {
                self.failures = 0;
                st.queue.complete(&qb);
                st.tally.delivered += 1;
                t.batches_sent.get_or_create(&lane.label).inc();
                t.items_sent
                    .get_or_create(&lane.label)
                    .inc_by(qb.batch.items);
                None
            }
            Err(SendError::Permanent { reason, .. }) => {
                self.failures = 0;
                st.queue.complete(&qb);
                st.tally.dropped += 1;
                t.drop_items(kind, "permanent", 1, qb.batch.items);
                warn_limited!(
                    "delivery.permanent",
                    sink = sh.sink.name(),
                    kind,
                    items = qb.batch.items,
                    "batch refused, dropped (not retried): {reason}"
                );
                None
            }
            Err(SendError::Transient {
                reason,
                retry_after,
            }) => {
                t.batches_retried.get_or_create(&lane.label).inc();
                let draining = *self.phase.borrow() != Phase::Running;
                let delay = retry_wait(
                    &lane.backoff,
                    retry_after,
                    self.failures,
                    draining,
                    &mut self.rng,
                );
                self.failures = self.failures.saturating_add(1);
                warn_limited!(
                    format!("delivery.transient.{kind}"),
                    sink = sh.sink.name(),
                    kind,
                    retry_in_ms = delay.as_millis() as u64,
                    consecutive_failures = self.failures,
                    "batch not delivered, will retry: {reason}"
                );
                // while it waits it is queued like any other: when metrics
                // overflow it is the first to go (spans never overflow)
                let ev = st.queue.requeue_front(qb);
                evicted(&mut st, ev, t);
                Some(delay)
            }
        };
        lane.show(&mut st, t);
        drop(st);
        sh.progress.send_replace(());
        wait
    }

    /// Wait before the next attempt; a change of phase (shutdown began)
    /// cuts the wait short.
    pub async fn pause(&mut self, delay: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.phase.changed() => {}
        }
    }

    /// Shutdown is over: a durable queue keeps what it can (the batch in
    /// flight goes back first), the rest is dropped and counted.
    pub fn stop(&mut self, leftover: Option<QueuedBatch>) {
        let sh = self.sh.clone();
        let (t, lane) = (&sh.telemetry, sh.lane(self.kind));
        let mut st = lane.lock();
        st.in_flight = None;
        let mut left = Vec::new();
        if let Some(b) = leftover {
            left.extend(st.queue.requeue_front(b));
        }
        left.extend(st.queue.drain_all());
        let kept = st.queue.batches();
        if kept > 0 {
            tracing::info!(
                kind = self.kind.as_str(),
                batches = kept,
                bytes = st.queue.bytes(),
                "shutdown: undelivered batches kept in the disk buffer for the next start"
            );
        }
        if !left.is_empty() {
            let mut items = 0;
            for b in &left {
                t.drop_items(b.batch.kind.as_str(), "shutdown", 1, b.batch.items);
                items += b.batch.items;
            }
            tracing::warn!(
                kind = self.kind.as_str(),
                batches = left.len(),
                items,
                "shutdown grace period over: undelivered batches dropped"
            );
        }
        st.tally.left_at_stop += left.len() as u64;
        st.stopped = true;
        lane.show(&mut st, t);
        drop(st);
        sh.progress.send_replace(());
    }
}
