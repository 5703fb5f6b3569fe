//! The disk queue's in-memory index: where each live batch's record is,
//! oldest first, and the byte sums the cap and the gauges read. The sums
//! change only with the entries, so they cannot drift from them.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::delivery::queue::QueuedBatch;
use crate::sink::{ContentEncoding, EncodedBatch, PayloadKind};

/// Where one live batch is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub seq: u64,
    pub seg: u64,
    pub off: u64,
    /// Header + payload.
    pub rec_len: u64,
    pub body_len: u64,
    pub items: u64,
    pub kind: PayloadKind,
}

impl Entry {
    /// Stand-in for a batch dropped without reading it back (the delivery
    /// counters need only kind and items): an empty body.
    pub fn without_body(&self) -> QueuedBatch {
        QueuedBatch {
            seq: self.seq,
            batch: EncodedBatch {
                kind: self.kind,
                items: self.items,
                encoding: ContentEncoding::Identity,
                body: Bytes::new(),
            },
        }
    }
}

/// The queued entries (not the one in flight) and their sums.
#[derive(Debug, Default)]
pub(super) struct Index {
    entries: VecDeque<Entry>,
    /// Sum of `rec_len`.
    disk_bytes: u64,
    /// Sum of `body_len`.
    body_bytes: u64,
}

impl Index {
    pub fn push_back(&mut self, e: Entry) {
        self.add(&e);
        self.entries.push_back(e);
    }

    pub fn push_front(&mut self, e: Entry) {
        self.add(&e);
        self.entries.push_front(e);
    }

    pub fn pop_front(&mut self) -> Option<Entry> {
        let e = self.entries.pop_front()?;
        self.disk_bytes -= e.rec_len;
        self.body_bytes -= e.body_len;
        Some(e)
    }

    pub fn front(&self) -> Option<&Entry> {
        self.entries.front()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Records on disk, headers included.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Request bodies only.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    fn add(&mut self, e: &Entry) {
        self.disk_bytes += e.rec_len;
        self.body_bytes += e.body_len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, rec_len: u64, body_len: u64) -> Entry {
        Entry {
            seq,
            seg: 1,
            off: 0,
            rec_len,
            body_len,
            items: seq * 10,
            kind: PayloadKind::Metrics,
        }
    }

    #[test]
    fn the_sums_follow_every_change() {
        let mut ix = Index::default();
        ix.push_back(entry(2, 100, 78));
        ix.push_back(entry(3, 50, 28));
        ix.push_front(entry(1, 7, 1));
        assert_eq!((ix.len(), ix.disk_bytes(), ix.body_bytes()), (3, 157, 107));
        assert_eq!(ix.front().map(|e| e.seq), Some(1));
        assert_eq!(ix.pop_front().map(|e| e.seq), Some(1));
        assert_eq!((ix.disk_bytes(), ix.body_bytes()), (150, 106));
        assert_eq!(ix.pop_front().map(|e| e.seq), Some(2));
        assert_eq!(ix.pop_front().map(|e| e.seq), Some(3));
        assert_eq!(ix.pop_front(), None);
        assert_eq!((ix.len(), ix.disk_bytes(), ix.body_bytes()), (0, 0, 0));
    }

    #[test]
    fn a_stand_in_keeps_kind_and_items_only() {
        let b = entry(4, 90, 68).without_body();
        assert_eq!((b.seq, b.batch.items, b.batch.body.len()), (4, 40, 0));
        assert_eq!(b.batch.kind, PayloadKind::Metrics);
    }
}
