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
use crate::telemetry::{Kind, Telemetry};

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
    /// Submission number and body bytes of the batch being sent.
    in_flight: Option<(u64, u64)>,
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
        match (self.in_flight.map(|f| f.0), self.queue.oldest_seq()) {
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
            pending: self.undelivered().1,
            ..self.tally
        }
    }

    /// Bytes and batches not yet delivered: queued, or being sent.
    fn undelivered(&self) -> (u64, u64) {
        let (bytes, batches) = self.in_flight.map_or((0, 0), |(_, bytes)| (bytes, 1));
        (
            self.queue.bytes() + bytes,
            self.queue.batches() as u64 + batches,
        )
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
    kind: Kind,
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
            kind: kind.label(),
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
        evicted(self.kind, st, ev, t);
    }

    /// Bring the shared gauges up to date with this lane's queue. The
    /// batch in flight counts: it is not delivered yet, and leaving it out
    /// would make the depth flicker by one at every attempt of an outage.
    pub fn show(&self, st: &mut LaneState, t: &Telemetry) {
        let (bytes, batches) = st.undelivered();
        let now = (bytes as i64, batches as i64);
        t.delivery.queue_bytes.inc_by(now.0 - st.shown.0);
        t.delivery.queue_batches.inc_by(now.1 - st.shown.1);
        st.shown = now;
    }
}

/// Count batches the queue evicted to make room.
fn evicted(kind: Kind, st: &mut LaneState, evicted: Vec<QueuedBatch>, t: &Telemetry) {
    if evicted.is_empty() {
        return;
    }
    // a lane's queue holds only its kind
    let items = evicted.iter().map(|b| b.batch.items).sum();
    let batches = evicted.len() as u64;
    st.tally.dropped += batches;
    t.delivery
        .evicted(kind, batches, items, st.queue.capacity_bytes());
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
                st.in_flight = b.as_ref().map(|b| (b.seq, b.batch.size()));
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
        let kind = self.kind.label();
        let mut st = lane.lock();
        st.in_flight = None;
        let wait = match result {
            Ok(()) => {
                self.failures = 0;
                st.queue.complete(&qb);
                st.tally.delivered += 1;
                t.delivery.sent(kind, qb.batch.items);
                None
            }
            Err(SendError::Permanent { reason, .. }) => {
                self.failures = 0;
                st.queue.complete(&qb);
                st.tally.dropped += 1;
                t.delivery
                    .refused(kind, sh.sink.name(), qb.batch.items, &reason);
                None
            }
            Err(SendError::Transient {
                reason,
                retry_after,
            }) => {
                let draining = *self.phase.borrow() != Phase::Running;
                let delay = retry_wait(
                    &lane.backoff,
                    retry_after,
                    self.failures,
                    draining,
                    &mut self.rng,
                );
                self.failures = self.failures.saturating_add(1);
                t.delivery
                    .retrying(kind, sh.sink.name(), delay, self.failures, &reason);
                // while it waits it is queued like any other: when metrics
                // overflow it is the first to go (spans never overflow)
                let ev = st.queue.requeue_front(qb);
                evicted(kind, &mut st, ev, t);
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
            // a lane's queue holds only its kind
            let items = left.iter().map(|b| b.batch.items).sum();
            t.delivery
                .grace_over(self.kind.label(), left.len() as u64, items);
        }
        st.tally.left_at_stop += left.len() as u64;
        st.stopped = true;
        lane.show(&mut st, t);
        drop(st);
        sh.progress.send_replace(());
    }
}

/// The lane steps on tokio's paused clock: no sleeps, no I/O (the scripted
/// sink answers at once).
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::time::Instant;

    use super::super::{Delivery, DeliveryOptions, FlushReport, Lanes};
    use super::*;
    use crate::config::Compression;
    use crate::sink::AnySink;
    use crate::sink::render::MetricOut;
    use crate::sink::scripted::{Answer, ScriptedSink};
    use crate::sink::wire::{Metric, StoredSpan};

    const M: PayloadKind = PayloadKind::Metrics;
    const S: PayloadKind = PayloadKind::Spans;

    fn metrics(n: usize) -> Vec<MetricOut> {
        (0..n)
            .map(|i| Metric {
                timestamp: 1,
                metric_name: format!("m{i}"),
                value: 1.0,
                unit: "count".into(),
                tags: BTreeMap::new(),
                cluster_id: "c".into(),
                node_name: "n".into(),
                namespace: String::new(),
                pod_name: String::new(),
                container_name: String::new(),
                pod_uid: String::new(),
            })
            .map(MetricOut::from)
            .collect()
    }

    fn spans(n: usize) -> Vec<StoredSpan> {
        (0..n)
            .map(|i| StoredSpan {
                trace_id: "0".repeat(32),
                span_id: format!("{i:016x}"),
                parent_span_id: String::new(),
                service_name: "svc".into(),
                span_name: "op".into(),
                span_kind: 2,
                timestamp: 1,
                duration_ns: 1,
                status_code: 0,
                status_message: String::new(),
                attributes: Default::default(),
                events: "[]".into(),
                http_method: String::new(),
                http_status_code: 0,
                http_url: String::new(),
                cluster_id: "c".into(),
            })
            .collect()
    }

    fn start(sink: &ScriptedSink, lanes: Lanes) -> (Delivery, Arc<Telemetry>) {
        let t = Arc::new(Telemetry::new());
        let opts = DeliveryOptions {
            batch_size: 10,
            queue_max_bytes: 1 << 20,
            request_timeout: Duration::from_secs(5),
            compression: Compression::None,
        };
        let sink = AnySink::Scripted(sink.clone());
        let (d, _task) = Delivery::start_lanes(sink, opts, Backoff::default(), lanes, t.clone());
        (d, t)
    }

    fn counter(
        f: &prometheus_client::metrics::family::Family<
            crate::telemetry::KindLabel,
            prometheus_client::metrics::counter::Counter,
        >,
        k: PayloadKind,
    ) -> u64 {
        f.get_or_create(&crate::telemetry::KindLabel { kind: k.label() })
            .get()
    }

    /// Spans refused for ever (transient) while metrics work: every cycle's
    /// metrics go out within the cycle; the span lane backs off on its own.
    #[tokio::test(start_paused = true)]
    async fn a_failing_lane_does_not_delay_the_other() {
        let sink = ScriptedSink::default();
        sink.always(S, Answer::Transient(None));
        let (d, t) = start(&sink, Lanes::memory(1 << 20, true));
        let t0 = Instant::now();
        d.try_submit_spans(spans(25)).unwrap();
        for _ in 0..20 {
            d.submit_metrics(metrics(5));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let m = sink.attempts_of(M);
        assert_eq!(m.len(), 20);
        for (i, at) in m.iter().enumerate() {
            // sent in the second it was submitted in
            assert_eq!((*at - t0).as_secs(), i as u64, "cycle {i}");
        }
        assert_eq!(counter(&t.delivery.batches_sent, M), 20);
        assert_eq!(counter(&t.delivery.batches_retried, M), 0);
        // the span lane retried its oldest batch, with growing waits
        let s = sink.attempts_of(S);
        assert!(s.len() >= 4, "{}", s.len());
        assert_eq!(counter(&t.delivery.batches_retried, S), s.len() as u64);
        assert_eq!(counter(&t.delivery.batches_sent, S), 0);
        let b = Backoff::default();
        for (n, w) in s.windows(2).enumerate() {
            assert!(w[1] - w[0] <= b.ceiling(n as u32), "wait {n}");
        }
        // the 3 span batches all still queued (the failed one waits at
        // the front); no metrics left
        assert_eq!(t.delivery.queue_batches.get(), 3);
        assert_eq!(
            d.flush(Duration::from_millis(10)).await,
            FlushReport {
                delivered_batches: 0,
                dropped_batches: 0,
                pending_batches: 3,
            }
        );
    }

    /// The queue gauges count the batch being sent: through an outage the
    /// depth reads the same during an attempt as between attempts.
    #[tokio::test(start_paused = true)]
    async fn the_gauges_count_the_batch_in_flight() {
        let sink = ScriptedSink::default();
        let slow = Answer::Slow(Duration::from_secs(3), Box::new(Answer::Transient(None)));
        sink.always(M, slow);
        let (d, t) = start(&sink, Lanes::memory(1 << 20, false));
        d.submit_metrics(metrics(30));
        let (bytes, batches) = (t.delivery.queue_bytes.get(), t.delivery.queue_batches.get());
        assert_eq!(batches, 3);
        assert!(bytes > 0);
        // sample every 100 ms through several attempts and waits
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(t.delivery.queue_batches.get(), 3);
            assert_eq!(t.delivery.queue_bytes.get(), bytes);
        }
        assert!(sink.attempts_of(M).len() >= 3);
        // delivered: nothing left to show
        sink.always(M, Answer::Ok);
        let r = d.flush(Duration::from_secs(60)).await;
        assert_eq!(r.pending_batches, 0);
        assert_eq!(t.delivery.queue_batches.get(), 0);
        assert_eq!(t.delivery.queue_bytes.get(), 0);
    }

    /// A wait after a transient failure lasts what `Retry-After` said;
    /// shutdown cuts it to at most [`DRAIN_MAX_WAIT`].
    #[tokio::test(start_paused = true)]
    async fn the_pause_lasts_retry_after_and_shutdown_cuts_it() {
        let sink = ScriptedSink::default();
        sink.always(M, Answer::Transient(Some(Duration::from_secs(20))));
        let (d, t) = start(&sink, Lanes::memory(1 << 20, false));
        let t0 = Instant::now();
        d.submit_metrics(metrics(5));
        tokio::time::sleep(Duration::from_secs(19)).await;
        assert_eq!(sink.attempts_of(M).len(), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let a = sink.attempts_of(M);
        assert_eq!(a.len(), 2);
        assert_eq!(a[1] - a[0], Duration::from_secs(20));
        // shutdown with 3 s of grace: waits of at most 1 s, then it stops
        let s0 = Instant::now();
        let r = d.shutdown(Duration::from_secs(3)).await;
        let a = sink.attempts_of(M);
        assert!(a.len() >= 4, "{}", a.len());
        for w in a[2..].windows(2) {
            assert!(w[1] - w[0] <= DRAIN_MAX_WAIT);
        }
        assert!(a[2] - s0 <= DRAIN_MAX_WAIT);
        assert_eq!(r.pending_batches, 1);
        assert!(Instant::now() - s0 < Duration::from_secs(4));
        assert!(Instant::now() - t0 < Duration::from_secs(26));
        let l = crate::telemetry::DropLabel {
            kind: crate::telemetry::Kind::Metrics,
            reason: crate::telemetry::DropReason::Shutdown,
        };
        assert_eq!(t.delivery.batches_dropped.get_or_create(&l).get(), 1);
    }

    /// The span room is the lane's bound when nothing is queued, counts the
    /// batch in flight, and a request that does not fit is refused whole.
    #[tokio::test(start_paused = true)]
    async fn span_room_is_the_true_room() {
        let sink = ScriptedSink::default();
        sink.always(S, Answer::Transient(None));
        let (d, t) = start(&sink, Lanes::memory(20_000, true));
        assert_eq!(d.span_room(), 10_000);
        d.try_submit_spans(spans(10)).unwrap();
        let one = 10_000 - d.span_room();
        assert!(one > 1000, "{one}");
        // sent and failing: in flight or back in the queue, still counted
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!sink.attempts_of(S).is_empty());
        assert_eq!(d.span_room(), 10_000 - one);
        let fit = (d.span_room() / one) as usize;
        for _ in 0..fit {
            d.try_submit_spans(spans(10)).unwrap();
        }
        let room = d.span_room();
        assert!(room < one);
        // all or nothing: refused whole, nothing queued
        let before = t.delivery.queue_batches.get();
        assert!(d.try_submit_spans(spans(10)).is_err());
        assert_eq!(t.delivery.queue_batches.get(), before);
        assert_eq!(d.span_room(), room);
        // metrics never take span room, nor the reverse
        d.submit_metrics(metrics(100));
        assert_eq!(d.span_room(), room);
        // no span lane without OTLP
        let (d, _) = start(&ScriptedSink::default(), Lanes::memory(20_000, false));
        assert_eq!(d.span_room(), 0);
        assert!(d.try_submit_spans(spans(1)).is_err());
    }

    /// A permanent refusal drops the batch once; the lane goes on.
    #[tokio::test(start_paused = true)]
    async fn a_permanent_refusal_drops_one_batch() {
        let sink = ScriptedSink::default();
        sink.script(S, [Answer::Permanent]);
        let (d, t) = start(&sink, Lanes::memory(1 << 20, true));
        d.try_submit_spans(spans(20)).unwrap();
        d.submit_metrics(metrics(15));
        let r = d.flush(Duration::from_secs(5)).await;
        assert_eq!(
            r,
            FlushReport {
                delivered_batches: 3,
                dropped_batches: 1,
                pending_batches: 0,
            }
        );
        assert_eq!(counter(&t.delivery.batches_sent, S), 1);
        assert_eq!(counter(&t.delivery.items_sent, S), 10);
        assert_eq!(sink.attempts_of(S).len(), 2);
        assert_eq!(d.span_room(), 1 << 19);
    }
}
