//! The disk buffer (SPEC §7 `--buffer-path DIR`): a [`BatchQueue`] whose
//! batches live in an append-only log of checksummed records, so an API
//! outage longer than memory allows and a restart of the agent (`kill -9`,
//! a node reboot) lose nothing up to `--buffer-max-bytes`. One per delivery
//! lane, in `DIR/metrics/` and `DIR/spans/` ([`super::lanes`]).
//!
//! Layout of a lane's directory:
//! - `seg-NNNNNNNNNNNNNNNNNNNN.log`: segments, appended in order. A record is
//!   `MAGIC (4) | len u32 LE | crc32 u32 LE` followed by `len` payload bytes
//!   (`kind u8 | encoding u8 | items u64 LE | body`); the CRC covers the
//!   payload. The body is the exact request body (gzipped when it was sent
//!   gzipped).
//! - `cursor`: `segment u64 LE | offset u64 LE | crc32 u32 LE`, the position
//!   of the oldest record not yet delivered or dropped. It is rewritten in
//!   place (one 20-byte `pwrite`; a rename per acknowledgement costs ~2 ms
//!   on ext4) on every acknowledgement; a torn cursor fails its CRC and the
//!   whole log is replayed (duplicates, no loss). Segments wholly before it
//!   are deleted.
//! - `lock`: held with an exclusive `flock` while an agent uses the buffer.
//!
//! Recovery ([`DiskQueue::open`]) scans from the cursor to the end of the
//! last segment with [`scan_records`]: a record whose header or CRC is wrong
//! (a torn tail after a crash, bytes overwritten) is skipped up to the next
//! valid record, counted (`buffer_corrupt_records`, `buffer_corrupt_bytes`)
//! and logged; the agent never refuses to start because of the buffer's
//! content. New records always go to a fresh segment after a start, so a
//! torn tail is never appended to.
//!
//! Durability: a record is written with one `write` per batch (so a
//! `kill -9` loses nothing that was submitted), and the segment is
//! `fdatasync`ed once per collection cycle ([`BatchQueue::sync`]), so a
//! power loss or kernel crash loses at most the last cycle. The cursor is not
//! fsynced: after a power loss it may lag, which re-sends already delivered
//! batches (at-least-once), never loses one.
//!
//! Bounds: the live records (including the one being sent) take at most
//! the cap on disk; beyond it the oldest batches are dropped and counted
//! (the new one instead, when only the batch in flight is left) (`batches_dropped{reason="queue_full"}`), except
//! with [`DiskOptions::never_evict`] (spans): then nothing is dropped and
//! the submitter keeps the bound by asking [`BatchQueue::room`] first
//! (which counts the batch in flight, whole records, and in memory fallback
//! the fallback's bound). Delivered
//! records before the cursor in the oldest segment stay until that segment is
//! done, so disk use is at most cap + one segment (a sixteenth of the cap,
//! 64 KiB to 16 MiB). In memory the queue keeps an index entry per batch
//! (56 bytes), never the bodies: a body is read back when it is sent.
//!
//! Failures: a directory that cannot be created, locked or written at start
//! is an error of [`DiskQueue::open`] (the agent then queues in memory). A
//! write that fails later (disk full: ENOSPC, EIO) is logged as an error,
//! counted (`buffer_errors{op="write"}`), and the queue falls back to memory
//! (bounded by `--queue-max-bytes`, gauge `buffer_memory_fallback` = 1) until
//! that memory queue has drained and 30 s have passed; then it tries the
//! disk again. What is already on disk keeps being delivered first.

mod index;
mod record;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use self::index::{Entry, Index};
pub use self::record::{
    HEADER_LEN, MAGIC, MAX_PAYLOAD, RecordError, RecordView, Scanned, decode_cursor,
    decode_payload, encode_record, parse_record, resync_budget, scan_records,
    scan_records_counting,
};
use self::record::{PAYLOAD_PREFIX, encode_cursor};
use super::queue::{BatchQueue, MemoryQueue, QueuedBatch};
use crate::sink::EncodedBatch;
use crate::telemetry::{Telemetry, Undelivered};

/// After a write failure, how long before the disk is tried again (and only
/// once the memory fallback is empty).
const RETRY_DISK_AFTER: Duration = Duration::from_secs(30);

const CURSOR: &str = "cursor";
const LOCK: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("disk buffer {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("disk buffer {path}: another process holds its lock")]
    Locked { path: PathBuf },
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> BufferError + 'a {
    move |source| BufferError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

fn segment_name(id: u64) -> String {
    format!("seg-{id:020}.log")
}

fn segment_id(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// The cursor saved in `path`: `None` when there is none yet or it is
/// damaged (then every segment is replayed).
fn read_cursor(path: &Path) -> Result<Option<(u64, u64)>, BufferError> {
    match fs::read(path) {
        Ok(b) => {
            let c = decode_cursor(&b);
            if c.is_none() {
                tracing::warn!(path = %path.display(), "disk buffer cursor is damaged: replaying every segment (duplicates possible)");
            }
            Ok(c)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, "cannot read the cursor")(e)),
    }
}

struct Writer {
    id: u64,
    file: File,
    len: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct DiskOptions {
    /// `--buffer-max-bytes`: bound of the live records on disk.
    pub max_bytes: u64,
    /// `--queue-max-bytes` (the lane's part of it): bound of the memory
    /// fallback.
    pub memory_fallback_bytes: u64,
    /// Spans: nothing is ever evicted (the submitter checks
    /// [`BatchQueue::room`] first and refuses what does not fit), not even
    /// at a start with a smaller cap.
    pub never_evict: bool,
}

/// What [`DiskQueue::open`] found on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    pub batches: u64,
    pub items: u64,
    pub bytes: u64,
    /// Regions skipped as torn or corrupt, and their bytes.
    pub corrupt_regions: u64,
    pub corrupt_bytes: u64,
    /// Batches dropped at open because they exceed the cap (smaller cap).
    pub over_cap_batches: u64,
}

/// The disk-backed [`BatchQueue`]. See the module docs.
pub struct DiskQueue {
    dir: PathBuf,
    cap: u64,
    seg_max: u64,
    index: Index,
    in_flight: Option<Entry>,
    writer: Option<Writer>,
    /// Segment ids on disk, ascending.
    segments: VecDeque<u64>,
    next_seg: u64,
    cursor: (u64, u64),
    /// Open once; rewritten in place (20 bytes at offset 0, checksummed: a
    /// torn write reads as damaged and the whole log is replayed).
    cursor_file: Option<File>,
    /// Appended since the last fdatasync.
    dirty: bool,
    reader: Option<(u64, File)>,
    mem: MemoryQueue,
    /// Bound of the memory fallback (`mem` itself is unbounded when
    /// `never_evict`: the bound is kept by [`BatchQueue::room`]).
    mem_cap: u64,
    never_evict: bool,
    /// What this queue adds to the shared `buffer_disk_bytes` gauge (one
    /// queue per lane: each reports its share).
    shown_disk_bytes: i64,
    /// `Some(when)` while writes go to memory after a failure.
    fallback_since: Option<Instant>,
    first_seq: u64,
    recovery: Recovery,
    telemetry: Arc<Telemetry>,
    _lock: File,
}

impl std::fmt::Debug for DiskQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskQueue")
            .field("dir", &self.dir)
            .field("batches", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl DiskQueue {
    /// Open (create) the buffer in `dir`, lock it, recover what is on disk
    /// (oldest first; it is delivered before anything new), and prepare a
    /// fresh segment for appends. Errors when the directory is unusable.
    pub fn open(
        dir: &Path,
        opts: DiskOptions,
        telemetry: Arc<Telemetry>,
    ) -> Result<DiskQueue, BufferError> {
        fs::create_dir_all(dir).map_err(io_err(dir, "cannot create the directory"))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path, "cannot open the lock file"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(BufferError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(io_err(&lock_path, "cannot lock")(e));
            }
        }
        let cap = opts.max_bytes.max(1);
        let mut q = DiskQueue {
            dir: dir.to_path_buf(),
            cap,
            seg_max: (cap / 16).clamp(64 << 10, 16 << 20),
            index: Index::default(),
            in_flight: None,
            writer: None,
            segments: VecDeque::new(),
            next_seg: 1,
            cursor: (0, 0),
            cursor_file: None,
            dirty: false,
            reader: None,
            mem: MemoryQueue::new(if opts.never_evict {
                u64::MAX
            } else {
                opts.memory_fallback_bytes
            }),
            mem_cap: opts.memory_fallback_bytes,
            never_evict: opts.never_evict,
            shown_disk_bytes: 0,
            fallback_since: None,
            first_seq: 1,
            recovery: Recovery::default(),
            telemetry,
            _lock: lock,
        };
        q.recover()?;
        // appends go to a fresh segment: never after a possibly torn tail
        q.open_writer()?;
        q.update_gauge();
        Ok(q)
    }

    /// What the start found on disk.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Live bytes on disk (records not delivered or dropped, in flight
    /// included).
    pub fn disk_bytes(&self) -> u64 {
        self.index.disk_bytes() + self.in_flight.map_or(0, |e| e.rec_len)
    }

    /// True while appends go to memory after a disk failure.
    pub fn in_memory_fallback(&self) -> bool {
        self.fallback_since.is_some()
    }

    fn recover(&mut self) -> Result<(), BufferError> {
        let dir = self.dir.clone();
        let mut ids: Vec<u64> = fs::read_dir(&dir)
            .map_err(io_err(&dir, "cannot list the directory"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(segment_id))
            .collect();
        ids.sort_unstable();
        let cursor = read_cursor(&dir.join(CURSOR))?;
        self.next_seg = ids.last().map_or(1, |l| l + 1);
        for id in ids {
            let path = dir.join(segment_name(id));
            let start = match cursor {
                Some((cs, _)) if id < cs => {
                    // wholly delivered; its deletion was interrupted
                    let _ = fs::remove_file(&path);
                    continue;
                }
                Some((cs, off)) if id == cs => off,
                _ => 0,
            };
            self.recover_segment(id, &path, start)?;
        }
        // a smaller cap than the last run: the oldest go (never spans)
        while self.index.disk_bytes() > self.cap && !self.never_evict {
            let Some(e) = self.index.pop_front() else {
                break;
            };
            self.recovery.over_cap_batches += 1;
            self.telemetry
                .delivery
                .dropped(e.kind.label(), Undelivered::QueueFull, 1, e.items);
        }
        if self.recovery.batches > 0 {
            self.telemetry.buffer.recovered(self.recovery.batches);
        }
        self.advance_cursor();
        Ok(())
    }

    /// Index the records of segment `id` from `start` (the cursor's offset
    /// in its segment, else 0); sequence numbers continue from
    /// `first_seq`.
    fn recover_segment(&mut self, id: u64, path: &Path, start: u64) -> Result<(), BufferError> {
        let data = fs::read(path).map_err(io_err(path, "cannot read a segment"))?;
        self.segments.push_back(id);
        let Some(tail) = data.get(start as usize..) else {
            // a cursor past the end: the segment was cut short
            self.note_corrupt(path, start, 0);
            return Ok(());
        };
        for s in scan_records(tail) {
            match s {
                Scanned::Record { offset, len, view } => {
                    let e = Entry {
                        seq: self.first_seq,
                        seg: id,
                        off: start + offset as u64,
                        rec_len: len as u64,
                        body_len: view.body.len() as u64,
                        items: view.items,
                        kind: view.kind,
                    };
                    self.first_seq += 1;
                    self.recovery.batches += 1;
                    self.recovery.items += e.items;
                    self.recovery.bytes += e.body_len;
                    self.index.push_back(e);
                }
                Scanned::Corrupt { offset, len } => {
                    self.note_corrupt(path, start + offset as u64, len as u64);
                }
            }
        }
        Ok(())
    }

    /// Hand every queued batch to `put`, oldest first, without
    /// acknowledging any: until [`DiskQueue::acknowledge_all`] the cursor
    /// stays, so a crash in between replays them (duplicates, no loss).
    /// Unreadable records are skipped and counted. Used to move a buffer
    /// of the single-queue layout into the lanes.
    pub fn drain_with(&mut self, mut put: impl FnMut(QueuedBatch)) {
        while let Some(e) = self.index.pop_front() {
            match self.read(&e) {
                Some(batch) => put(QueuedBatch { seq: e.seq, batch }),
                None => self.telemetry.delivery.dropped(
                    e.kind.label(),
                    Undelivered::Corrupt,
                    1,
                    e.items,
                ),
            }
        }
        self.update_gauge();
    }

    /// Everything handed out by [`DiskQueue::drain_with`] is safe
    /// elsewhere: move the cursor past it and delete its segments.
    pub fn acknowledge_all(&mut self) {
        self.advance_cursor();
        self.update_gauge();
    }

    fn note_corrupt(&mut self, path: &Path, offset: u64, len: u64) {
        self.recovery.corrupt_regions += 1;
        self.recovery.corrupt_bytes += len;
        self.telemetry.buffer.corrupt_region(path, offset, len);
    }

    fn open_writer(&mut self) -> Result<(), BufferError> {
        let id = self.next_seg;
        let path = self.dir.join(segment_name(id));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path, "cannot create a segment"))?;
        // the new name must survive a power loss too
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.next_seg += 1;
        self.segments.push_back(id);
        self.writer = Some(Writer { id, file, len: 0 });
        Ok(())
    }

    /// Oldest live record's position: the in-flight one, else the oldest
    /// queued, else the end of the log.
    fn live_start(&self) -> (u64, u64) {
        if let Some(e) = self.in_flight.or(self.index.front().copied()) {
            return (e.seg, e.off);
        }
        match &self.writer {
            Some(w) => (w.id, w.len),
            None => (self.next_seg, 0),
        }
    }

    /// Persist the cursor when it moved and delete the segments before it.
    /// The segments go even when the cursor cannot be saved (a full disk):
    /// they hold only resolved batches, and a stale cursor costs duplicates,
    /// never data.
    fn advance_cursor(&mut self) {
        let c = self.live_start();
        if c == self.cursor {
            return;
        }
        let written = match &self.cursor_file {
            Some(f) => f.write_all_at(&encode_cursor(c.0, c.1), 0),
            None => OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.dir.join(CURSOR))
                .and_then(|f| {
                    f.write_all_at(&encode_cursor(c.0, c.1), 0)?;
                    self.cursor_file = Some(f);
                    Ok(())
                }),
        };
        match written {
            Ok(()) => self.cursor = c,
            Err(e) => {
                // the old cursor stays: a restart re-sends some batches
                self.telemetry.buffer.cursor_failed(&self.dir, &e);
            }
        }
        while let Some(&id) = self.segments.front() {
            if id >= c.0 || self.writer.as_ref().is_some_and(|w| w.id == id) {
                break;
            }
            self.segments.pop_front();
            if self.reader.as_ref().is_some_and(|(r, _)| *r == id) {
                self.reader = None;
            }
            let path = self.dir.join(segment_name(id));
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                self.telemetry.buffer.delete_failed(&path, &e);
            }
        }
    }

    fn update_gauge(&mut self) {
        let now = self.disk_bytes().min(i64::MAX as u64) as i64;
        self.telemetry
            .buffer
            .disk_bytes
            .inc_by(now - self.shown_disk_bytes);
        self.shown_disk_bytes = now;
    }

    /// Whether the next push leaves the memory fallback.
    fn leaves_fallback(&self) -> bool {
        self.fallback_since
            .is_some_and(|since| self.mem.batches() == 0 && since.elapsed() >= RETRY_DISK_AFTER)
    }

    /// Read the record of `e` back; `None` (counted) when it is no longer
    /// valid.
    fn read(&mut self, e: &Entry) -> Option<EncodedBatch> {
        let path = self.dir.join(segment_name(e.seg));
        if self.reader.as_ref().is_none_or(|(id, _)| *id != e.seg) {
            match File::open(&path) {
                Ok(f) => self.reader = Some((e.seg, f)),
                Err(err) => {
                    self.telemetry.buffer.segment_open_failed(&path, &err);
                    self.note_corrupt(&path, e.off, e.rec_len);
                    return None;
                }
            }
        }
        let (_, f) = self.reader.as_ref()?;
        let mut buf = vec![0u8; e.rec_len as usize];
        if let Err(err) = f.read_exact_at(&mut buf, e.off) {
            self.telemetry.buffer.record_read_failed(&path, &err);
            self.note_corrupt(&path, e.off, e.rec_len);
            return None;
        }
        match parse_record(&buf) {
            Some((v, len)) if len == buf.len() => {
                let body = Bytes::copy_from_slice(v.body);
                Some(EncodedBatch {
                    kind: v.kind,
                    items: v.items,
                    encoding: v.encoding,
                    body,
                })
            }
            _ => {
                self.note_corrupt(&path, e.off, e.rec_len);
                None
            }
        }
    }

    /// Append one record; on failure the segment is cut back and closed.
    fn append(&mut self, rec: &[u8]) -> Result<(u64, u64), io::Error> {
        let rotate = self
            .writer
            .as_ref()
            .is_none_or(|w| w.len > 0 && w.len + rec.len() as u64 > self.seg_max);
        if rotate {
            if let Some(w) = self.writer.take()
                && self.dirty
            {
                w.file.sync_data()?;
                self.dirty = false;
            }
            self.open_writer().map_err(|e| match e {
                BufferError::Io { source, .. } => source,
                BufferError::Locked { .. } => io::Error::other("locked"),
            })?;
        }
        let w = self.writer.as_mut().expect("a writer was just opened");
        match w.file.write_all(rec) {
            Ok(()) => {
                let off = w.len;
                w.len += rec.len() as u64;
                self.dirty = true;
                Ok((w.id, off))
            }
            Err(e) => {
                // cut a partial record off; if even that fails, the reader
                // skips it as a torn region after a restart
                let _ = w.file.set_len(w.len);
                self.writer = None;
                Err(e)
            }
        }
    }

    fn enter_fallback(&mut self, e: &io::Error) {
        self.telemetry
            .buffer
            .write_failed(&self.dir, e, self.mem_cap);
        self.fallback_since = Some(Instant::now());
    }

    /// Back to disk once the memory fallback has drained and a while passed.
    fn maybe_leave_fallback(&mut self) {
        if !self.leaves_fallback() {
            return;
        }
        self.fallback_since = None;
        self.telemetry.buffer.fallback_left();
        tracing::info!(dir = %self.dir.display(), "disk buffer: trying the disk again");
    }
}

impl BatchQueue for DiskQueue {
    fn push_back(&mut self, b: QueuedBatch) -> Vec<QueuedBatch> {
        self.first_seq = self.first_seq.max(b.seq + 1);
        self.maybe_leave_fallback();
        if self.fallback_since.is_some() {
            return self.mem.push_back(b);
        }
        if b.batch.body.len() + PAYLOAD_PREFIX > MAX_PAYLOAD {
            return vec![b];
        }
        let rec = encode_record(&b.batch);
        let rec_len = rec.len() as u64;
        if rec_len > self.cap && !self.never_evict {
            return vec![b];
        }
        // the batch in flight counts: the cap bounds every live record
        let mut evicted = Vec::new();
        while self.disk_bytes() + rec_len > self.cap && !self.never_evict {
            match self.index.pop_front() {
                Some(e) => evicted.push(e.without_body()),
                None => break,
            }
        }
        if !evicted.is_empty() {
            self.advance_cursor();
        }
        if self.disk_bytes() + rec_len > self.cap && !self.never_evict {
            // only the batch in flight is left and the two do not fit
            self.update_gauge();
            evicted.push(b);
            return evicted;
        }
        match self.append(&rec) {
            Ok((seg, off)) => {
                let e = Entry {
                    seq: b.seq,
                    seg,
                    off,
                    rec_len,
                    body_len: b.batch.size(),
                    items: b.batch.items,
                    kind: b.batch.kind,
                };
                self.index.push_back(e);
            }
            Err(e) => {
                self.enter_fallback(&e);
                evicted.extend(self.mem.push_back(b));
            }
        }
        self.update_gauge();
        evicted
    }

    fn pop_front(&mut self) -> Option<QueuedBatch> {
        while let Some(e) = self.index.pop_front() {
            match self.read(&e) {
                Some(batch) => {
                    self.in_flight = Some(e);
                    self.update_gauge();
                    return Some(QueuedBatch { seq: e.seq, batch });
                }
                None => {
                    // unreadable: skipped and counted (note_corrupt)
                    self.telemetry.delivery.dropped(
                        e.kind.label(),
                        Undelivered::Corrupt,
                        1,
                        e.items,
                    );
                    self.advance_cursor();
                }
            }
        }
        self.update_gauge();
        self.mem.pop_front()
    }

    fn requeue_front(&mut self, b: QueuedBatch) -> Vec<QueuedBatch> {
        match self.in_flight {
            Some(e) if e.seq == b.seq => {
                self.in_flight = None;
                if self.index.disk_bytes() + e.rec_len > self.cap && !self.never_evict {
                    self.advance_cursor();
                    self.update_gauge();
                    return vec![b];
                }
                self.index.push_front(e);
                Vec::new()
            }
            _ => self.mem.requeue_front(b),
        }
    }

    fn complete(&mut self, b: &QueuedBatch) {
        if self.in_flight.is_some_and(|e| e.seq == b.seq) {
            self.in_flight = None;
            self.advance_cursor();
            self.update_gauge();
        } else {
            self.mem.complete(b);
        }
    }

    /// A whole record on disk (in memory only the body, which is less).
    fn cost(&self, b: &EncodedBatch) -> u64 {
        (HEADER_LEN + PAYLOAD_PREFIX) as u64 + b.size()
    }

    /// Where the next push goes: the memory fallback's room while in it,
    /// else the disk's (a write that fails midway puts the rest of a
    /// submission in memory, past the fallback bound by at most that much:
    /// nothing accepted is evicted for it).
    fn room(&self) -> u64 {
        if self.fallback_since.is_some() && !self.leaves_fallback() {
            return self.mem_cap.saturating_sub(self.mem.used());
        }
        self.cap.saturating_sub(self.disk_bytes())
    }

    fn oldest_seq(&self) -> Option<u64> {
        self.index
            .front()
            .map(|e| e.seq)
            .or_else(|| self.mem.oldest_seq())
    }

    fn bytes(&self) -> u64 {
        self.index.body_bytes() + self.mem.bytes()
    }

    fn batches(&self) -> usize {
        self.index.len() + self.mem.batches()
    }

    fn capacity_bytes(&self) -> u64 {
        self.cap
    }

    /// Only the memory fallback is drained: what is on disk stays there for
    /// the next start.
    fn drain_all(&mut self) -> Vec<QueuedBatch> {
        self.sync();
        self.advance_cursor();
        self.mem.drain_all()
    }

    fn first_seq(&self) -> u64 {
        self.first_seq
    }

    fn durable(&self) -> bool {
        self.fallback_since.is_none() && self.mem.batches() == 0
    }

    fn sync(&mut self) {
        if !self.dirty {
            return;
        }
        let Some(w) = &self.writer else {
            return;
        };
        if let Err(e) = w.file.sync_data() {
            // the data may not survive a power loss: the next write tells
            // whether the disk still works
            self.telemetry.buffer.sync_failed(&self.dir, &e);
        }
        self.dirty = false;
    }
}

impl Drop for DiskQueue {
    fn drop(&mut self) {
        self.sync();
        // the shared gauges lose this queue's share
        self.telemetry
            .buffer
            .disk_bytes
            .dec_by(self.shown_disk_bytes);
        if self.fallback_since.is_some() {
            self.telemetry.buffer.fallback_left();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{ContentEncoding, PayloadKind};

    pub(super) fn batch(i: u64, size: usize) -> EncodedBatch {
        let mut body = format!("{{\"batch\":{i}}}").into_bytes();
        body.resize(size.max(body.len()), b' ');
        EncodedBatch {
            kind: if i % 5 == 4 {
                PayloadKind::Spans
            } else {
                PayloadKind::Metrics
            },
            items: i + 1,
            encoding: if i.is_multiple_of(2) {
                ContentEncoding::Identity
            } else {
                ContentEncoding::Gzip
            },
            body: Bytes::from(body),
        }
    }

    fn qb(seq: u64, size: usize) -> QueuedBatch {
        QueuedBatch {
            seq,
            batch: batch(seq, size),
        }
    }

    fn opts(max: u64) -> DiskOptions {
        DiskOptions {
            max_bytes: max,
            memory_fallback_bytes: 1 << 20,
            never_evict: false,
        }
    }

    fn open(dir: &Path, max: u64) -> (DiskQueue, Arc<Telemetry>) {
        let t = Arc::new(Telemetry::new());
        (DiskQueue::open(dir, opts(max), t.clone()).unwrap(), t)
    }

    /// Pop everything, acknowledging each: (seq, body) in order.
    fn take_all(q: &mut DiskQueue) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while let Some(b) = q.pop_front() {
            q.complete(&b);
            out.push((b.seq, String::from_utf8(b.batch.body.to_vec()).unwrap()));
        }
        out
    }

    fn bodies(v: &[(u64, String)]) -> Vec<String> {
        v.iter().map(|(_, b)| b.trim_end().to_string()).collect()
    }

    fn segs(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("seg-"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn survives_reopen_oldest_first_and_acked_never_come_back() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut q, _) = open(d.path(), 1 << 20);
            for s in 1..=5 {
                assert!(q.push_back(qb(s, 100)).is_empty());
            }
            q.sync();
            // deliver two, the third is in flight when the process dies
            let b1 = q.pop_front().unwrap();
            q.complete(&b1);
            let b2 = q.pop_front().unwrap();
            q.complete(&b2);
            let _in_flight = q.pop_front().unwrap();
            // Drop only fsyncs: the state on disk is what kill -9 leaves
            drop(q);
        }
        let (mut q, t) = open(d.path(), 1 << 20);
        let r = q.recovery();
        assert_eq!((r.batches, r.items, r.corrupt_regions), (3, 4 + 5 + 6, 0));
        assert_eq!(q.first_seq(), 4);
        assert!(
            t.encode()
                .contains("cased_agent_buffer_recovered_batches_total 3")
        );
        // new data after the old
        assert!(q.push_back(qb(9, 100)).is_empty());
        let got = take_all(&mut q);
        assert_eq!(
            bodies(&got),
            vec![
                "{\"batch\":3}",
                "{\"batch\":4}",
                "{\"batch\":5}",
                "{\"batch\":9}"
            ]
        );
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 9]
        );
        assert_eq!(q.disk_bytes(), 0);
        drop(q);
        let (q, _) = open(d.path(), 1 << 20);
        assert_eq!(q.recovery().batches, 0);
        assert_eq!(q.batches(), 0);
    }

    #[test]
    fn delivered_segments_are_deleted() {
        let d = tempfile::tempdir().unwrap();
        // cap 1 MiB: segments of 64 KiB; 1 KiB batches, ~63 per segment
        let (mut q, _) = open(d.path(), 1 << 20);
        for s in 1..=300 {
            assert!(q.push_back(qb(s, 1000)).is_empty());
        }
        assert_eq!(segs(d.path()).len(), 5);
        for _ in 0..200 {
            let b = q.pop_front().unwrap();
            q.complete(&b);
        }
        // only the segments holding batches 201..=300 remain
        let left = segs(d.path());
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(take_all(&mut q).len(), 100);
        assert_eq!(segs(d.path()).len(), 1);
    }

    #[test]
    fn the_cap_drops_the_oldest_and_says_which() {
        let d = tempfile::tempdir().unwrap();
        let rec = (HEADER_LEN + PAYLOAD_PREFIX + 1000) as u64;
        let (mut q, _) = open(d.path(), rec * 10);
        for s in 1..=10 {
            assert!(q.push_back(qb(s, 1000)).is_empty());
        }
        let ev = q.push_back(qb(11, 1000));
        assert_eq!(ev.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!(ev[0].batch.items, 2);
        let ev = q.push_back(qb(12, 2500));
        assert_eq!(ev.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert!(q.disk_bytes() <= rec * 10);
        // larger than the cap: refused alone
        let ev = q.push_back(qb(13, 20_000));
        assert_eq!(ev.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![13]);
        let got = take_all(&mut q);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            vec![5, 6, 7, 8, 9, 10, 11, 12]
        );
        // a restart with a smaller cap drops the oldest of what is on disk
        for s in 20..30 {
            q.push_back(qb(s, 1000));
        }
        drop(q);
        let (mut q, t) = open(d.path(), rec * 4);
        assert_eq!(q.recovery().over_cap_batches, 6);
        assert_eq!(
            take_all(&mut q).iter().map(|g| g.0).collect::<Vec<_>>(),
            vec![7, 8, 9, 10]
        );
        assert!(t.encode().contains(
            "cased_agent_batches_dropped_total{kind=\"metrics\",reason=\"queue_full\"} 5"
        ));
    }

    /// The batch being sent is on disk too: the cap holds with it counted
    /// (CI once saw 85 bytes over the cap with one in flight).
    #[test]
    fn the_cap_counts_the_batch_in_flight() {
        let d = tempfile::tempdir().unwrap();
        let rec = (HEADER_LEN + PAYLOAD_PREFIX + 1000) as u64;
        let (mut q, _) = open(d.path(), rec * 4);
        for s in 1..=4 {
            assert!(q.push_back(qb(s, 1000)).is_empty());
        }
        let sending = q.pop_front().unwrap();
        assert_eq!(sending.seq, 1);
        let ev = q.push_back(qb(5, 1000));
        assert_eq!(ev.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![2]);
        assert_eq!(q.disk_bytes(), rec * 4);
        // only the one in flight left to evict: the new batch is refused
        let ev = q.push_back(qb(6, 3500));
        assert_eq!(
            ev.iter().map(|b| b.seq).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
        assert_eq!(q.disk_bytes(), rec);
        // a failed send goes back in front and still fits
        assert!(q.requeue_front(sending).is_empty());
        assert_eq!(
            take_all(&mut q).iter().map(|g| g.0).collect::<Vec<_>>(),
            vec![1]
        );
    }

    #[test]
    fn requeue_keeps_the_order_and_the_record() {
        let d = tempfile::tempdir().unwrap();
        let (mut q, _) = open(d.path(), 1 << 20);
        q.push_back(qb(1, 10));
        q.push_back(qb(2, 10));
        let b = q.pop_front().unwrap();
        assert_eq!(q.oldest_seq(), Some(2));
        assert!(q.requeue_front(b).is_empty());
        assert_eq!(q.oldest_seq(), Some(1));
        let b = q.pop_front().unwrap();
        drop(q); // in flight at exit: still on disk
        let _ = b;
        let (mut q, _) = open(d.path(), 1 << 20);
        assert_eq!(take_all(&mut q).len(), 2);
    }

    #[test]
    fn a_second_agent_cannot_take_the_same_buffer() {
        let d = tempfile::tempdir().unwrap();
        let (_q, _) = open(d.path(), 1 << 20);
        let t = Arc::new(Telemetry::new());
        let e = DiskQueue::open(d.path(), opts(1 << 20), t).unwrap_err();
        assert!(matches!(e, BufferError::Locked { .. }), "{e}");
    }

    #[test]
    fn corruption_on_disk_is_skipped_and_counted() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut q, _) = open(d.path(), 1 << 20);
            for s in 1..=6 {
                q.push_back(qb(s, 200));
            }
        }
        let seg = d.path().join(&segs(d.path())[0]);
        let mut data = fs::read(&seg).unwrap();
        let l = data.len() / 6;
        data[2 * l + 30..2 * l + 60].fill(0xee); // record 3
        data.truncate(data.len() - 7); // record 6 torn
        fs::write(&seg, &data).unwrap();
        let (mut q, t) = open(d.path(), 1 << 20);
        let r = q.recovery();
        assert_eq!((r.batches, r.corrupt_regions), (4, 2));
        assert_eq!(r.corrupt_bytes, (l + l - 7) as u64);
        let got = take_all(&mut q);
        assert_eq!(
            bodies(&got),
            vec![
                "{\"batch\":1}",
                "{\"batch\":2}",
                "{\"batch\":4}",
                "{\"batch\":5}"
            ]
        );
        let m = t.encode();
        assert!(
            m.contains("cased_agent_buffer_corrupt_records_total 2"),
            "{m}"
        );
    }

    #[test]
    fn a_record_damaged_after_start_is_skipped_when_read() {
        let d = tempfile::tempdir().unwrap();
        let (mut q, t) = open(d.path(), 1 << 20);
        q.push_back(qb(1, 100));
        q.push_back(qb(2, 100));
        q.sync();
        let seg = d.path().join(&segs(d.path())[0]);
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(b"XXXX", 40).unwrap();
        let got = take_all(&mut q);
        assert_eq!(bodies(&got), vec!["{\"batch\":2}"]);
        let m = t.encode();
        assert!(
            m.contains("cased_agent_batches_dropped_total{kind=\"metrics\",reason=\"corrupt\"} 1"),
            "{m}"
        );
    }

    /// The cost of the durability policy (run by hand:
    /// `cargo test --release --lib measure_append_and_sync -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn measure_append_and_sync() {
        let d =
            tempfile::tempdir_in(std::env::var("BUFFER_BENCH_DIR").unwrap_or("/var/tmp".into()))
                .unwrap();
        let (mut q, _) = open(d.path(), 1 << 30);
        let n = 2000;
        let t = Instant::now();
        for s in 1..=n {
            q.push_back(qb(s, 16 << 10));
        }
        let append = t.elapsed();
        let t = Instant::now();
        for s in n + 1..=n + 200 {
            q.push_back(qb(s, 16 << 10));
            q.sync();
        }
        let synced = t.elapsed();
        let t = Instant::now();
        let got = take_all(&mut q);
        let read = t.elapsed();
        println!(
            "append 16 KiB: {:?}/batch; append+fdatasync: {:?}/batch; read+ack: {:?}/batch ({} batches)",
            append / n as u32,
            synced / 200,
            read / got.len() as u32,
            got.len()
        );
    }

    /// Random pushes, deliveries, transient failures and restarts (with or
    /// without a batch in flight) against a model: the queue always holds
    /// exactly the model's batches, in order, across restarts.
    #[test]
    fn random_operations_and_restarts_match_a_model() {
        use rand::{Rng, SeedableRng};
        let d = tempfile::tempdir().unwrap();
        let rec = (HEADER_LEN + PAYLOAD_PREFIX) as u64;
        let cap = 40 * (rec + 300);
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        // model: (body id, size) oldest first; the disk's seqs are renumbered
        // at each restart, so bodies identify batches
        let mut model: VecDeque<(u64, usize)> = VecDeque::new();
        let mut next_id = 0u64;
        let mut next_seq = 1u64;
        let (mut q, _) = open(d.path(), cap);
        let body = |id: u64| format!("{{\"batch\":{id}}}");
        for _ in 0..3000 {
            match rng.random_range(0..10) {
                0..=4 => {
                    let size = rng.random_range(20..600);
                    let b = QueuedBatch {
                        seq: next_seq,
                        batch: batch(next_id, size),
                    };
                    next_seq += 1;
                    let ev = q.push_back(b);
                    model.push_back((next_id, size));
                    next_id += 1;
                    // the model evicts the same way: oldest first, by bytes
                    let mut used: u64 = model.iter().map(|(_, s)| rec + *s as u64).sum();
                    let mut gone = Vec::new();
                    while used > cap {
                        let (id, s) = model.pop_front().unwrap();
                        used -= rec + s as u64;
                        gone.push(id);
                    }
                    let ev_items: Vec<u64> = ev.iter().map(|b| b.batch.items - 1).collect();
                    assert_eq!(ev_items, gone);
                }
                5..=6 => {
                    if let Some(b) = q.pop_front() {
                        let (id, _) = model.pop_front().unwrap();
                        assert_eq!(String::from_utf8_lossy(&b.batch.body).trim_end(), body(id));
                        q.complete(&b);
                    }
                }
                7 => {
                    if let Some(b) = q.pop_front() {
                        assert!(q.requeue_front(b).is_empty());
                    }
                }
                8 => {
                    // a restart, maybe with a batch in flight (it stays)
                    let in_flight = q.pop_front();
                    drop(in_flight);
                    drop(q);
                    let (q2, _) = open(d.path(), cap);
                    q = q2;
                    assert_eq!(q.recovery().batches as usize, model.len());
                    assert_eq!(q.recovery().corrupt_regions, 0);
                    next_seq = q.first_seq();
                }
                _ => q.sync(),
            }
            assert_eq!(q.batches(), model.len());
        }
        let got = take_all(&mut q);
        let want: Vec<String> = model.iter().map(|(id, _)| body(*id)).collect();
        assert_eq!(bodies(&got), want);
        // everything resolved: one (fresh) segment left
        assert_eq!(segs(d.path()).len(), 1);
    }

    #[test]
    fn drain_keeps_disk_and_returns_memory_only() {
        let d = tempfile::tempdir().unwrap();
        let (mut q, _) = open(d.path(), 1 << 20);
        q.push_back(qb(1, 10));
        let b = q.pop_front().unwrap();
        assert!(q.requeue_front(b).is_empty());
        assert!(q.drain_all().is_empty());
        assert_eq!(q.batches(), 1);
    }
}
