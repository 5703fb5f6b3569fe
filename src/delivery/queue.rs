//! The delivery queue: encoded batches, oldest first, bounded in bytes.
//!
//! [`BatchQueue`] is the seam: [`MemoryQueue`] is the in-memory queue; a
//! disk-backed queue (SPEC §7 `--buffer-path`) implements the same trait.
//! The sender takes the oldest batch out for an attempt
//! ([`BatchQueue::pop_front`]), puts it back at the front when the attempt
//! fails transiently ([`BatchQueue::requeue_front`]), and tells the queue
//! when it is finished with it ([`BatchQueue::complete`]: delivered or
//! dropped), which is where a durable queue forgets it. A batch out for an
//! attempt still counts in [`BatchQueue::room`], so a lane that never evicts
//! (spans) can always put it back.

use std::collections::VecDeque;

use crate::sink::EncodedBatch;

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
    /// What `b` costs against the bound ([`BatchQueue::room`]): its body in
    /// memory, its whole record on disk.
    fn cost(&self, b: &EncodedBatch) -> u64 {
        b.size()
    }
    /// Cost that can be pushed now without evicting anything, the batch
    /// out for an attempt counted as if it were queued; never more than
    /// the bound.
    fn room(&self) -> u64;
    /// Submission number for the first new batch: batches recovered from a
    /// previous run (or pushed before delivery started) hold the numbers
    /// below it.
    fn first_seq(&self) -> u64 {
        1
    }
    /// Whether what is pushed survives a restart (a disk queue not in
    /// memory fallback).
    fn durable(&self) -> bool {
        false
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
    /// Bytes popped and neither completed nor put back.
    in_flight: u64,
    /// One past the highest submission number pushed.
    next_seq: u64,
}

impl MemoryQueue {
    pub fn new(capacity_bytes: u64) -> MemoryQueue {
        MemoryQueue {
            items: VecDeque::new(),
            bytes: 0,
            cap: capacity_bytes,
            in_flight: 0,
            next_seq: 1,
        }
    }

    /// Bytes queued or out for an attempt.
    pub fn used(&self) -> u64 {
        self.bytes + self.in_flight
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
        self.next_seq = self.next_seq.max(b.seq + 1);
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
        self.in_flight += b.batch.size();
        Some(b)
    }

    fn requeue_front(&mut self, b: QueuedBatch) -> Vec<QueuedBatch> {
        let size = b.batch.size();
        self.in_flight = self.in_flight.saturating_sub(size);
        if self.bytes + size > self.cap {
            return vec![b];
        }
        self.bytes += size;
        self.items.push_front(b);
        Vec::new()
    }

    fn complete(&mut self, b: &QueuedBatch) {
        self.in_flight = self.in_flight.saturating_sub(b.batch.size());
    }

    fn oldest_seq(&self) -> Option<u64> {
        self.items.front().map(|b| b.seq)
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn room(&self) -> u64 {
        self.cap.saturating_sub(self.used())
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

    fn first_seq(&self) -> u64 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::sink::ContentEncoding;

    fn qb(seq: u64, size: usize) -> QueuedBatch {
        QueuedBatch {
            seq,
            batch: EncodedBatch {
                kind: crate::sink::PayloadKind::Metrics,
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
    fn room_counts_the_batch_in_flight() {
        let mut q = MemoryQueue::new(100);
        assert_eq!(q.room(), 100);
        q.push_back(qb(1, 30));
        q.push_back(qb(2, 20));
        assert_eq!(q.room(), 50);
        // out for an attempt: still counted, so putting it back always fits
        let b1 = q.pop_front().unwrap();
        assert_eq!(q.room(), 50);
        assert!(q.push_back(qb(3, 50)).is_empty());
        assert_eq!(q.room(), 0);
        assert!(q.requeue_front(b1).is_empty());
        assert_eq!(q.room(), 0);
        let b1 = q.pop_front().unwrap();
        q.complete(&b1);
        assert_eq!(q.room(), 30);
        assert_eq!(seqs(&q.drain_all()), vec![2, 3]);
        assert_eq!(q.room(), 100);
    }
}
