//! The disk buffer: its bytes, what it recovered or skipped, its I/O
//! failures and whether it fell back to memory.

use std::fmt::Display;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::label::label_values;

label_values! {
    /// The disk buffer operation that failed.
    pub enum Op {
        Open => "open",
        Write => "write",
        Sync => "sync",
        Read => "read",
        Cursor => "cursor",
        Delete => "delete",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: Op,
}

/// Registered under the `buffer_` prefix.
pub struct BufferTelemetry {
    pub disk_bytes: Gauge,
    pub memory_fallback: Gauge,
    pub recovered_batches: Counter,
    pub corrupt_records: Counter,
    pub corrupt_bytes: Counter,
    pub errors: Family<OpLabel, Counter>,
    /// Delivery lanes (one disk queue each) in memory fallback:
    /// `memory_fallback` shows whether any is.
    fallback_lanes: AtomicI64,
}

impl BufferTelemetry {
    pub(super) fn register(r: &mut Registry) -> Self {
        let t = BufferTelemetry {
            disk_bytes: Gauge::default(),
            memory_fallback: Gauge::default(),
            recovered_batches: Counter::default(),
            corrupt_records: Counter::default(),
            corrupt_bytes: Counter::default(),
            errors: Family::default(),
            fallback_lanes: AtomicI64::new(0),
        };
        r.register(
            "disk_bytes",
            "Bytes of undelivered batches in the disk buffer",
            t.disk_bytes.clone(),
        );
        r.register(
            "memory_fallback",
            "1 while the disk buffer is unusable and batches queue in memory only",
            t.memory_fallback.clone(),
        );
        r.register(
            "recovered_batches",
            "Batches found in the disk buffer at start (delivered first)",
            t.recovered_batches.clone(),
        );
        r.register(
            "corrupt_records",
            "Torn or corrupt regions of the disk buffer skipped",
            t.corrupt_records.clone(),
        );
        r.register(
            "corrupt_bytes",
            "Bytes of the disk buffer skipped as torn or corrupt",
            t.corrupt_bytes.clone(),
        );
        r.register(
            "errors",
            "Disk buffer I/O failures, by operation (open, write, sync, read, cursor, delete)",
            t.errors.clone(),
        );
        t
    }

    fn error(&self, op: Op) {
        self.errors.get_or_create(&OpLabel { op }).inc();
    }

    fn fallback(&self, on: bool) {
        let d = if on { 1 } else { -1 };
        let n = self.fallback_lanes.fetch_add(d, Ordering::Relaxed) + d;
        self.memory_fallback.set(i64::from(n > 0));
    }

    /// A lane's buffer cannot be opened: it queues in memory for good.
    pub fn open_failed(&self, dir: &Path, error: &dyn Display) {
        self.error(Op::Open);
        self.fallback(true);
        tracing::error!(
            dir = %dir.display(),
            error = %error,
            "disk buffer unusable (--buffer-path): queueing in memory only, nothing survives a restart"
        );
    }

    /// A write failed: the queue falls back to memory (bounded by
    /// `memory_bound_bytes`) until the disk works again.
    pub fn write_failed(&self, dir: &Path, error: &std::io::Error, memory_bound_bytes: u64) {
        self.error(Op::Write);
        self.fallback(true);
        let disk_full = error.raw_os_error() == Some(28); // ENOSPC
        tracing::error!(
            dir = %dir.display(),
            error = %error,
            disk_full,
            memory_bound_bytes,
            "disk buffer write failed: queueing in memory only until the disk works again"
        );
    }

    /// A queue in fallback is back on disk (or gone).
    pub fn fallback_left(&self) {
        self.fallback(false);
    }

    pub fn recovered(&self, batches: u64) {
        self.recovered_batches.inc_by(batches);
    }

    /// A torn or corrupt region skipped.
    pub fn corrupt_region(&self, path: &Path, offset: u64, bytes: u64) {
        self.corrupt_records.inc();
        self.corrupt_bytes.inc_by(bytes);
        crate::warn_limited!(
            "buffer.corrupt",
            path = %path.display(),
            offset,
            bytes,
            "disk buffer: skipped a torn or corrupt region"
        );
    }

    /// The cursor was not saved: a restart re-sends some batches.
    pub fn cursor_failed(&self, dir: &Path, error: &dyn Display) {
        self.error(Op::Cursor);
        crate::warn_limited!("buffer.cursor", error = %error, dir = %dir.display(), "disk buffer: cannot save the cursor");
    }

    pub fn delete_failed(&self, path: &Path, error: &dyn Display) {
        self.error(Op::Delete);
        crate::warn_limited!("buffer.delete", error = %error, path = %path.display(), "disk buffer: cannot delete a delivered segment");
    }

    pub fn segment_open_failed(&self, path: &Path, error: &dyn Display) {
        self.error(Op::Read);
        crate::warn_limited!("buffer.read", error = %error, path = %path.display(), "disk buffer: cannot open a segment");
    }

    pub fn record_read_failed(&self, path: &Path, error: &dyn Display) {
        self.error(Op::Read);
        crate::warn_limited!("buffer.read", error = %error, path = %path.display(), "disk buffer: cannot read a record");
    }

    /// fdatasync failed: the data may not survive a power loss.
    pub fn sync_failed(&self, dir: &Path, error: &dyn Display) {
        self.error(Op::Sync);
        crate::warn_limited!("buffer.sync", error = %error, dir = %dir.display(), "disk buffer: fdatasync failed");
    }
}
