//! The memory bound of an OTLP request (issue 11): whatever the body, what
//! decoding, converting and encoding it allocate at their peak never exceeds
//! the cost the allocation-free scan charged for it before anything was
//! decoded (the protobuf fast path's too). A body the scan refuses is never
//! decoded, so it costs nothing.
#![no_main]
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cased_agent::otlp::{convert, decode, fast, scan};
use cased_agent::sink::span_json;
use cased_agent::sink::wire::SpansBatch;
use libfuzzer_sys::fuzz_target;

const CLUSTER: &str = "fuzz-cluster";

struct Meter;

#[global_allocator]
static METER: Meter = Meter;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn add(n: i64) {
    let _ = LIVE.try_with(|l| {
        let v = l.get() + n;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as i64);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as i64));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as i64 - layout.size() as i64);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Peak live bytes above the start while `f` runs on this thread.
fn peak_of(f: impl FnOnce()) -> u64 {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    f();
    (PEAK.with(Cell::get) - start).max(0) as u64
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let (enc, shape) = if mode & 1 == 0 {
        (decode::Encoding::Protobuf, scan::scan_protobuf(body))
    } else {
        (decode::Encoding::Json, scan::scan_json(body))
    };
    let Ok(shape) = shape else {
        return;
    };
    let cost = shape.cost(CLUSTER.len());
    let peak = peak_of(|| {
        let Ok(req) = decode::decode(body, enc) else {
            return;
        };
        let c = convert::convert(req, CLUSTER);
        let mut out = Vec::with_capacity(64 + c.spans.len() * 640);
        let batch = SpansBatch {
            spans: std::borrow::Cow::Borrowed(&c.spans),
        };
        serde_json::to_writer(&mut out, &batch).expect("spans encode");
    });
    assert!(peak <= cost, "peak {peak} over the bound {cost} ({shape:?})");
    if enc == decode::Encoding::Protobuf {
        // the fast path (span JSON, then the queue's batches) within it too
        let fast = peak_of(|| {
            let Ok(e) = fast::encode(body, CLUSTER, None, shape.spans) else {
                return;
            };
            let slices = e.spans.slices();
            let batches: Vec<Vec<u8>> = slices.chunks(100).map(span_json::api_body).collect();
            drop(batches);
        });
        assert!(fast <= cost, "fast path peak {fast} over the bound {cost} ({shape:?})");
    }
});
