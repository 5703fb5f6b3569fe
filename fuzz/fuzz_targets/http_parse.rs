//! The eBPF HTTP part's userspace parsers: request and status lines (with
//! pipelined messages), path normalization, and request/response pairing
//! over a stream of ring-buffer records cut from the input.
#![no_main]
use cased_agent::ebpf::event::{self, Kind};
use cased_agent::ebpf::http::{MAX_PATH, normalize_path, requests, statuses};
use cased_agent::ebpf::track::{Limits, Tracker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for r in requests(data, 16) {
        let p = normalize_path(r.target);
        assert!(p.starts_with('/') || p == "*", "{p:?}");
        assert!(p.len() <= MAX_PATH + '…'.len_utf8(), "{}", p.len());
    }
    for code in statuses(data, 16) {
        assert!((100..=599).contains(&code));
    }
    // the input as records: each 0xff byte ends one; the record's first
    // byte picks kind and fd, the rest is its data
    let mut t = Tracker::new(Limits {
        max_conns: 4,
        max_h2_conns: 4,
        idle_ns: 1_000,
    });
    let mut n = 0u64;
    for (i, chunk) in data.split(|&b| b == 0xff).enumerate() {
        let Some((&h, body)) = chunk.split_first() else {
            continue;
        };
        let kind = match h % 3 {
            0 => Kind::Read,
            1 => Kind::Write,
            _ => Kind::Close,
        };
        let rec = event::encode(i as u64 * 100, 1, u32::from(h >> 2) % 8, kind, 0, body);
        let e = event::decode(&rec).expect("own record decodes");
        t.handle(&e, &mut |x| {
            n += 1;
            assert!(x.latency_ns <= i as u64 * 100);
        });
        // and the raw bytes as a record
        let _ = event::decode(chunk);
    }
    assert!(t.conns() <= 4);
});
