//! The delivery queue: encoded batches, oldest first, bounded in bytes.
//!
//! [`BatchQueue`] is the seam: [`MemoryQueue`] is the in-memory queue; a
//! disk-backed queue (SPEC §7 `--buffer-path`) implements the same trait.
//! The sender takes the oldest batch out for an attempt
//! ([`BatchQueue::pop_front`]), puts it back at the front when the attempt
//! fails transiently ([`BatchQueue::requeue_front`]), and tells the queue
//! when it is finished with it ([`BatchQueue::complete`]: delivered or
//! dropped), which is where a durable queue would forget it.

use std::collections::VecDeque;

use crate::sink::{EncodedBatch, PayloadKind};

/// A batch with its submission number (strictly increasing).
#[derive(Debug, Clone)]
pub struct QueuedBatch {
    pub seq: u64,
    pub batch: EncodedBatch,
}

pub trait BatchQueue: Send {
    /// Append; evict the oldest batches until the new one fits. A batch
    /// larger than the whole bound is refused (returned as evicted).
    /// Returns what was evicted.
    fn push_back(&mut self, b: QueuedBatch) -> Vec<QueuedBatch>;
    /// Take the oldest batch for an attempt.
    fn pop_front(&mut self) -> Option<QueuedBatch>;
    /// Put back a batch whose attempt failed transiently. It is older than
    /// anything queued, so when it no longer fits it is the one evicted.
    fn requeue_front(&mut self, b: QueuedBatch) -> Vec<QueuedBatch>;
    /// The sender is done with a popped batch (delivered or dropped).
    fn complete(&mut self, _b: &QueuedBatch) {}
    /// Submission number of the oldest queued batch.
    fn oldest_seq(&self) -> Option<u64>;
    /// Sum of the queued batches' encoded sizes.
    fn bytes(&self) -> u64;
    fn batches(&self) -> usize;
    fn capacity_bytes(&self) -> u64;
    /// Remove everything that cannot be kept (shutdown): all of it in
    /// memory; a durable queue keeps what is safely stored and returns the
    /// rest. What `batches()` still counts afterwards is kept.
    fn drain_all(&mut self) -> Vec<QueuedBatch>;
    /// Bytes of `kind` that can be pushed now without evicting anything.
    /// Default: the free room of the whole queue (a later push of another
    /// kind may still evict them; [`SplitQueue`] guarantees it does not).
    fn room_for(&self, _kind: PayloadKind) -> u64 {
        self.capacity_bytes().saturating_sub(self.bytes())
    }
    /// Submission number for the first new batch: batches recovered from a
    /// previous run hold the numbers below it.
    fn first_seq(&self) -> u64 {
        1
    }
    /// Make what was pushed so far durable (called once per submission).
    fn sync(&mut self) {}
}

/// In memory; `bytes() <= capacity_bytes()` always holds.
#[derive(Debug)]
pub struct MemoryQueue {
    items: VecDeque<QueuedBatch>,
    bytes: u64,
    cap: u64,
}

impl MemoryQueue {
    pub fn new(capacity_bytes: u64) -> MemoryQueue {
        MemoryQueue {
            items: VecDeque::new(),
            bytes: 0,
            cap: capacity_bytes,
        }
    }

    fn make_room(&mut self, need: u64) -> Vec<QueuedBatch> {
        let mut evicted = Vec::new();
        while self.bytes + need > self.cap {
            match self.items.pop_front() {
                Some(old) => {
                    self.bytes -= old.batch.size();
                    evicted.push(old);
                }
                None => break,
            }
        }
        evicted
    }
}

impl BatchQueue for MemoryQueue {
    fn push_back(&mut self, b: QueuedBatch) -> Vec<QueuedBatch> {
        let size = b.batch.size();
        if size > self.cap {
            return vec![b];
        }
        let evicted = self.make_room(size);
        self.bytes += size;
        self.items.push_back(b);
        evicted
    }

    fn pop_front(&mut self) -> Option<QueuedBatch> {
        let b = self.items.pop_front()?;
        self.bytes -= b.batch.size();
        Some(b)
    }

    fn requeue_front(&mut self, b: QueuedBatch) -> Vec<QueuedBatch> {
        let size = b.batch.size();
        if self.bytes + size > self.cap {
            return vec![b];
        }
        self.bytes += size;
        self.items.push_front(b);
        Vec::new()
    }

    fn oldest_seq(&self) -> Option<u64> {
        self.items.front().map(|b| b.seq)
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn batches(&self) -> usize {
        self.items.len()
    }

    fn capacity_bytes(&self) -> u64 {
        self.cap
    }

    fn drain_all(&mut self) -> Vec<QueuedBatch> {
        self.bytes = 0;
        self.items.drain(..).collect()
    }
}

/// Metrics and spans in one submission order, each kind with its own
/// bound. Metrics behave as in [`MemoryQueue`] (the oldest metrics are
/// evicted to make room, never spans). Spans are never evicted nor refused
/// here: whoever submits spans asks [`BatchQueue::room_for`] first, for a
/// whole request at once, and refuses what does not fit (the OTLP receiver
/// answers 503 / `RESOURCE_EXHAUSTED`). A span batch taken out for an
/// attempt still counts against the span bound until
/// [`BatchQueue::complete`], so putting it back after a transient failure
/// always fits. When no span is outstanding, any request fits: one request
/// larger than the whole span bound goes through alone rather than being
/// refused forever, so span memory is at most the bound or one request.
#[derive(Debug)]
pub struct SplitQueue {
    metrics: MemoryQueue,
    /// Unbounded itself: the bound is `span_cap`, checked by `room_for`.
    spans: MemoryQueue,
    span_cap: u64,
    /// Span bytes queued or in flight.
    span_outstanding: u64,
}

impl SplitQueue {
    pub fn new(metrics_bytes: u64, span_bytes: u64) -> SplitQueue {
        SplitQueue {
            metrics: MemoryQueue::new(metrics_bytes),
            spans: MemoryQueue::new(u64::MAX),
            span_cap: span_bytes,
            span_outstanding: 0,
        }
    }

    fn of(&mut self, kind: PayloadKind) -> &mut MemoryQueue {
        match kind {
            PayloadKind::Metrics => &mut self.metrics,
            PayloadKind::Spans => &mut self.spans,
        }
    }
}

impl BatchQueue for SplitQueue {
    fn push_back(&mut self, b: QueuedBatch) -> Vec<QueuedBatch> {
        if b.batch.kind == PayloadKind::Spans {
            // the caller checked room_for for the whole request
            self.span_outstanding += b.batch.size();
        }
        self.of(b.batch.kind).push_back(b)
    }

    fn pop_front(&mut self) -> Option<QueuedBatch> {
        match (self.metrics.oldest_seq(), self.spans.oldest_seq()) {
            (Some(m), Some(s)) if s < m => self.spans.pop_front(),
            (Some(_), _) => self.metrics.pop_front(),
            (None, _) => self.spans.pop_front(),
        }
    }

    fn requeue_front(&mut self, b: QueuedBatch) -> Vec<QueuedBatch> {
        let kind = b.batch.kind;
        let evicted = self.of(kind).requeue_front(b);
        if kind == PayloadKind::Spans {
            // cannot happen (its bytes were still counted): keep the
            // accounting right anyway
            for e in &evicted {
                self.span_outstanding = self.span_outstanding.saturating_sub(e.batch.size());
            }
        }
        evicted
    }

    fn complete(&mut self, b: &QueuedBatch) {
        if b.batch.kind == PayloadKind::Spans {
            self.span_outstanding = self.span_outstanding.saturating_sub(b.batch.size());
        }
    }

    fn oldest_seq(&self) -> Option<u64> {
        match (self.metrics.oldest_seq(), self.spans.oldest_seq()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn bytes(&self) -> u64 {
        self.metrics.bytes() + self.spans.bytes()
    }

    fn batches(&self) -> usize {
        self.metrics.batches() + self.spans.batches()
    }

    fn capacity_bytes(&self) -> u64 {
        self.metrics.capacity_bytes().saturating_add(self.span_cap)
    }

    fn drain_all(&mut self) -> Vec<QueuedBatch> {
        let spans = self.spans.drain_all();
        for b in &spans {
            self.span_outstanding = self.span_outstanding.saturating_sub(b.batch.size());
        }
        let mut all = self.metrics.drain_all();
        all.extend(spans);
        all.sort_by_key(|b| b.seq);
        all
    }

    fn room_for(&self, kind: PayloadKind) -> u64 {
        match kind {
            PayloadKind::Metrics => self.metrics.room_for(kind),
            PayloadKind::Spans if self.span_outstanding == 0 => u64::MAX,
            PayloadKind::Spans => self.span_cap.saturating_sub(self.span_outstanding),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::sink::ContentEncoding;

    fn qb(seq: u64, size: usize) -> QueuedBatch {
        qk(seq, size, PayloadKind::Metrics)
    }

    fn qk(seq: u64, size: usize, kind: PayloadKind) -> QueuedBatch {
        QueuedBatch {
            seq,
            batch: EncodedBatch {
                kind,
                items: 1,
                encoding: ContentEncoding::Identity,
                body: Bytes::from(vec![b'x'; size]),
            },
        }
    }

    fn seqs(v: &[QueuedBatch]) -> Vec<u64> {
        v.iter().map(|b| b.seq).collect()
    }

    #[test]
    fn evicts_oldest_to_fit_exactly() {
        let mut q = MemoryQueue::new(100);
        assert!(q.push_back(qb(1, 40)).is_empty());
        assert!(q.push_back(qb(2, 40)).is_empty());
        assert!(q.push_back(qb(3, 20)).is_empty());
        assert_eq!(q.bytes(), 100);
        // 30 more: the oldest (40) goes, 90 left
        assert_eq!(seqs(&q.push_back(qb(4, 30))), vec![1]);
        assert_eq!(q.bytes(), 90);
        // 71 more: 2 and 3 go (90-40-20 = 30, +71 = 101 > 100 → 4 goes too)
        assert_eq!(seqs(&q.push_back(qb(5, 71))), vec![2, 3, 4]);
        assert_eq!(q.bytes(), 71);
        assert_eq!(q.oldest_seq(), Some(5));
        // larger than the bound: refused, nothing else lost
        assert_eq!(seqs(&q.push_back(qb(6, 101))), vec![6]);
        assert_eq!(q.batches(), 1);
    }

    #[test]
    fn requeue_goes_first_or_is_the_one_dropped() {
        let mut q = MemoryQueue::new(100);
        q.push_back(qb(1, 50));
        q.push_back(qb(2, 30));
        let b1 = q.pop_front().unwrap();
        assert_eq!(q.bytes(), 30);
        assert!(q.requeue_front(b1).is_empty());
        assert_eq!(q.oldest_seq(), Some(1));
        let b1 = q.pop_front().unwrap();
        q.push_back(qb(3, 40)); // 70 queued now
        assert_eq!(seqs(&q.requeue_front(b1)), vec![1]);
        assert_eq!(q.bytes(), 70);
        assert_eq!(seqs(&q.drain_all()), vec![2, 3]);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn split_queue_never_evicts_spans() {
        use PayloadKind::{Metrics as M, Spans as S};
        let mut q = SplitQueue::new(100, 100);
        // empty: anything fits, even more than the bound
        assert_eq!(q.room_for(S), u64::MAX);
        assert!(q.push_back(qk(1, 60, S)).is_empty());
        assert!(q.push_back(qk(2, 80, M)).is_empty());
        assert_eq!(q.room_for(S), 40);
        // metrics evict metrics only
        assert_eq!(seqs(&q.push_back(qk(3, 50, M))), vec![2]);
        assert!(q.push_back(qk(5, 40, S)).is_empty());
        assert_eq!(q.room_for(S), 0);
        assert_eq!(q.bytes(), 150);
        assert_eq!(q.capacity_bytes(), 200);
        // more metrics still evict metrics, never spans
        assert_eq!(seqs(&q.push_back(qk(6, 100, M))), vec![3]);
        // global order across kinds
        assert_eq!(q.oldest_seq(), Some(1));
        let b1 = q.pop_front().unwrap();
        assert_eq!(b1.seq, 1);
        // in flight: still counted against the span bound
        assert_eq!(q.room_for(S), 0);
        // a transient failure puts it back first
        assert!(q.requeue_front(b1).is_empty());
        let b1 = q.pop_front().unwrap();
        q.complete(&b1);
        assert_eq!(q.room_for(S), 60);
        assert_eq!(q.pop_front().unwrap().seq, 5);
        assert_eq!(q.pop_front().unwrap().seq, 6);
        assert!(q.pop_front().is_none());
    }

    #[test]
    fn split_queue_takes_one_oversized_request_alone() {
        use PayloadKind::Spans as S;
        let mut q = SplitQueue::new(100, 100);
        for seq in 1..=3 {
            assert!(q.push_back(qk(seq, 70, S)).is_empty());
        }
        assert_eq!(q.room_for(S), 0);
        for seq in 1..=3 {
            let b = q.pop_front().unwrap();
            assert_eq!(b.seq, seq);
            q.complete(&b);
        }
        assert_eq!(q.room_for(S), u64::MAX);
    }

    #[test]
    fn split_queue_drains_in_order() {
        use PayloadKind::{Metrics as M, Spans as S};
        let mut q = SplitQueue::new(100, 100);
        q.push_back(qk(1, 10, M));
        q.push_back(qk(2, 10, S));
        q.push_back(qk(3, 10, M));
        assert_eq!(seqs(&q.drain_all()), vec![1, 2, 3]);
        assert_eq!(q.room_for(S), u64::MAX);
        assert_eq!(q.bytes(), 0);
    }
}
