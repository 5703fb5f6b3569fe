//! The queues of the two lanes, and how they share the bounds.
//!
//! In memory (`--queue-max-bytes`): without OTLP the metrics lane has all
//! of it and the span lane none; with OTLP each has half. With
//! `--buffer-path DIR` each lane has its own disk queue, `DIR/metrics/`
//! and `DIR/spans/`, with the disk cap (`--buffer-max-bytes`) split the
//! same way and the lane's memory part as its memory fallback. The span
//! queue never evicts (see [`DiskOptions::never_evict`]).
//!
//! A buffer of the single-queue layout (segments directly in `DIR`, as
//! written before the lanes) is moved into the lanes at start, each record
//! to the lane of its kind, oldest first; the old segments are deleted only
//! once the lanes hold the records durably, so a crash midway costs
//! duplicates, never data.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::{DiskOptions, DiskQueue};
use super::queue::{BatchQueue, MemoryQueue, QueuedBatch};
use crate::sink::PayloadKind;
use crate::telemetry::{Telemetry, Undelivered};

/// One queue per kind.
pub struct Lanes {
    pub metrics: Box<dyn BatchQueue>,
    pub spans: Box<dyn BatchQueue>,
}

/// Where the lanes keep their batches.
#[derive(Debug, Clone)]
pub struct LaneConfig {
    /// `--queue-max-bytes`.
    pub queue_max_bytes: u64,
    /// `--buffer-path` and `--buffer-max-bytes`.
    pub buffer: Option<(PathBuf, u64)>,
    /// Spans are forwarded (OTLP on): the bounds are split.
    pub spans: bool,
}

/// `(metrics, spans)` parts of `total`.
pub fn split(total: u64, spans: bool) -> (u64, u64) {
    if spans {
        let m = total / 2;
        (m, total - m)
    } else {
        (total, 0)
    }
}

impl Lanes {
    /// Both lanes in memory, `total` split by [`split`].
    pub fn memory(total: u64, spans: bool) -> Lanes {
        let (m, s) = split(total, spans);
        Lanes {
            metrics: Box::new(MemoryQueue::new(m)),
            spans: Box::new(MemoryQueue::new(s)),
        }
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.metrics
            .capacity_bytes()
            .saturating_add(self.spans.capacity_bytes())
    }

    /// The lanes as configured: a disk queue per lane with a buffer (a
    /// lane whose directory is unusable queues in memory, with an error
    /// logged and counted), in memory otherwise.
    pub fn open(cfg: &LaneConfig, telemetry: &Arc<Telemetry>) -> Lanes {
        let Some((dir, disk_max)) = &cfg.buffer else {
            return Lanes::memory(cfg.queue_max_bytes, cfg.spans);
        };
        let (mem_m, mem_s) = split(cfg.queue_max_bytes, cfg.spans);
        if let Err(e) = fs::create_dir_all(dir) {
            // one error for the whole buffer
            telemetry.buffer.open_failed(dir, &e);
            return Lanes::memory(cfg.queue_max_bytes, cfg.spans);
        }
        let (disk_m, disk_s) = split(*disk_max, cfg.spans);
        let opts = |max_bytes, memory_fallback_bytes, never_evict| DiskOptions {
            max_bytes,
            memory_fallback_bytes,
            never_evict,
        };
        let mut lanes = Lanes {
            metrics: open_lane(
                dir,
                PayloadKind::Metrics,
                opts(disk_m, mem_m, false),
                telemetry,
            ),
            // without OTLP the span lane still drains what an earlier run
            // left; it takes nothing new (no room)
            spans: open_lane(
                dir,
                PayloadKind::Spans,
                opts(disk_s, mem_s, true),
                telemetry,
            ),
        };
        migrate_single_queue(dir, &mut lanes, telemetry);
        lanes
    }

    fn of(&mut self, kind: PayloadKind) -> &mut Box<dyn BatchQueue> {
        match kind {
            PayloadKind::Metrics => &mut self.metrics,
            PayloadKind::Spans => &mut self.spans,
        }
    }
}

/// The disk queue of one lane in `dir/<kind>`, or memory when unusable.
fn open_lane(
    dir: &Path,
    kind: PayloadKind,
    opts: DiskOptions,
    telemetry: &Arc<Telemetry>,
) -> Box<dyn BatchQueue> {
    let path = dir.join(kind.as_str());
    match DiskQueue::open(&path, opts, telemetry.clone()) {
        Ok(q) => {
            let r = q.recovery();
            tracing::info!(
                dir = %path.display(),
                max_bytes = opts.max_bytes,
                recovered_batches = r.batches,
                recovered_items = r.items,
                corrupt_regions = r.corrupt_regions,
                corrupt_bytes = r.corrupt_bytes,
                "disk buffer open"
            );
            Box::new(q)
        }
        Err(e) => {
            telemetry.buffer.open_failed(&path, &e);
            Box::new(MemoryQueue::new(opts.memory_fallback_bytes))
        }
    }
}

fn has_single_queue_segments(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|rd| {
        rd.filter_map(|e| e.ok()).any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("seg-"))
        })
    })
}

/// Move a buffer of the single-queue layout (segments in `dir` itself)
/// into the lanes; delete it once they hold it durably.
fn migrate_single_queue(dir: &Path, lanes: &mut Lanes, telemetry: &Arc<Telemetry>) {
    if !has_single_queue_segments(dir) {
        return;
    }
    let opts = DiskOptions {
        max_bytes: u64::MAX / 4,
        memory_fallback_bytes: 0,
        // everything on disk comes over, whatever the caps are now
        never_evict: true,
    };
    let mut old = match DiskQueue::open(dir, opts, telemetry.clone()) {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(error = %e, "disk buffer: cannot read the buffer of the single-queue layout; left as it is");
            return;
        }
    };
    let mut moved = [0u64; 2];
    let mut next = [lanes.metrics.first_seq(), lanes.spans.first_seq()];
    old.drain_with(|qb| {
        let kind = qb.batch.kind;
        let i = usize::from(kind == PayloadKind::Spans);
        let b = QueuedBatch {
            seq: next[i],
            batch: qb.batch,
        };
        next[i] += 1;
        moved[i] += 1;
        for e in lanes.of(kind).push_back(b) {
            telemetry
                .delivery
                .dropped(kind.label(), Undelivered::QueueFull, 1, e.batch.items);
        }
    });
    lanes.metrics.sync();
    lanes.spans.sync();
    let safe = lanes.metrics.durable() && lanes.spans.durable();
    tracing::info!(
        dir = %dir.display(),
        metrics_batches = moved[0],
        span_batches = moved[1],
        deleted = safe,
        "disk buffer: moved the single-queue layout into the lanes"
    );
    if !safe {
        // kept: the next start moves it again (duplicates, no loss)
        return;
    }
    old.acknowledge_all();
    drop(old);
    for name in ["cursor", "lock"] {
        let _ = fs::remove_file(dir.join(name));
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.filter_map(|e| e.ok()) {
            if e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("seg-"))
            {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}
